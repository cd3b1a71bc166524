// Host shim: lets kernels/*.cu compile as plain C++17 for the host emulator.
// Threads of a block are fibers run by kernels/emu/runtime.cpp; see
// ../shared/docs/host-emulator.md. Included by cudaenc.cuh when not under nvcc.
#pragma once
#include <math.h>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ static thread_local
#define __constant__
// __restrict__ is already a GCC/Clang keyword.

struct uint3 { unsigned int x, y, z; };
struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
};
struct __align__(8) float2 { float x, y; };
struct __align__(16) float4 { float x, y, z, w; };
struct __align__(8) int2 { int x, y; };
struct __align__(16) int4 { int x, y, z, w; };
struct __align__(16) uint4 { unsigned int x, y, z, w; };
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline int2 make_int2(int x, int y) { return {x, y}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }

// Built-in indices: per OS thread; the scheduler sets them whenever it resumes a fiber.
extern __thread uint3 threadIdx;
extern __thread uint3 blockIdx;
extern __thread uint3 blockDim;
extern __thread uint3 gridDim;
static constexpr int warpSize = 32;

namespace cudaenc_emu {
enum WarpOp { OP_SHFL, OP_SHFL_UP, OP_SHFL_DOWN, OP_SHFL_XOR, OP_BALLOT, OP_ANY, OP_ALL, OP_SYNCWARP,
              OP_COLLECTIVE };
void syncthreads(const char* file, int line);
unsigned long long warp_op(int op, unsigned mask, unsigned long long v, int arg, int width,
                           const char* file, int line);
// A warp-wide operation on the lanes' registers (the host twin of mma.sync): every lane
// of the full warp passes a pointer to its own operands; once all 32 lanes have arrived
// (the same exchange point __shfl_sync uses), `fn` runs once with the 32 pointers, in
// lane order, and may read and write every lane's operands; then the lanes resume.
// All 32 lanes must call it with the same `fn` (else: a warp-divergence error).
typedef void (*WarpCollectiveFn)(void* const lanes[32]);
void warp_collective(void* lane_data, WarpCollectiveFn fn, const char* file, int line);
void* dynamic_shared();

template <class T> inline T shfl(int op, const char* f, int l, unsigned mask, T v, int arg, int width) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffle of a type > 8 bytes");
    unsigned long long b = 0;
    std::memcpy(&b, &v, sizeof(T));
    b = warp_op(op, mask, b, arg, width, f, l);
    T r;
    std::memcpy(&r, &b, sizeof(T));
    return r;
}
template <class T> inline T shfl_sync(const char* f, int l, unsigned m, T v, int src, int w = 32) { return shfl(OP_SHFL, f, l, m, v, src, w); }
template <class T> inline T shfl_up_sync(const char* f, int l, unsigned m, T v, unsigned d, int w = 32) { return shfl(OP_SHFL_UP, f, l, m, v, (int)d, w); }
template <class T> inline T shfl_down_sync(const char* f, int l, unsigned m, T v, unsigned d, int w = 32) { return shfl(OP_SHFL_DOWN, f, l, m, v, (int)d, w); }
template <class T> inline T shfl_xor_sync(const char* f, int l, unsigned m, T v, int x, int w = 32) { return shfl(OP_SHFL_XOR, f, l, m, v, x, w); }
inline unsigned ballot_sync(const char* f, int l, unsigned m, int p) { return (unsigned)warp_op(OP_BALLOT, m, p != 0, 0, 32, f, l); }
inline int any_sync(const char* f, int l, unsigned m, int p) { return (int)warp_op(OP_ANY, m, p != 0, 0, 32, f, l); }
inline int all_sync(const char* f, int l, unsigned m, int p) { return (int)warp_op(OP_ALL, m, p != 0, 0, 32, f, l); }
inline void syncwarp(const char* f, int l, unsigned m = 0xffffffffu) { warp_op(OP_SYNCWARP, m, 0, 0, 32, f, l); }
// `__syncwarp()` and `__syncwarp(mask)` both, in strict C++17 (no `, ##__VA_ARGS__`):
// the macro builds this call site, then calls it with or without the mask.
struct SyncwarpAt {
    const char* f;
    int l;
    void operator()(unsigned m = 0xffffffffu) const { syncwarp(f, l, m); }
};

// ---- registration: name, parameter sizes and kinds, a typed trampoline ----
typedef void (*Trampoline)(void (*fn)(), void** args);
void register_kernel(const char* name, void (*fn)(), Trampoline t, int nargs,
                     const unsigned* sizes, const char* kinds);
template <class T> constexpr char kind_of() {
    return std::is_pointer<T>::value ? 'p' : std::is_floating_point<T>::value ? 'f' : 'i';
}
template <class... A, std::size_t... I>
inline void call(void (*f)(A...), void** args, std::index_sequence<I...>) {
    f(*static_cast<std::remove_cv_t<A>*>(args[I])...);
}
template <class... A> void trampoline(void (*fn)(), void** args) {
    call(reinterpret_cast<void (*)(A...)>(fn), args, std::index_sequence_for<A...>{});
}
template <class... A> struct Registrar {
    Registrar(const char* name, void (*f)(A...)) {
        static const unsigned sizes[] = {(unsigned)sizeof(A)..., 0u};
        static const char kinds[] = {kind_of<A>()..., '\0'};
        register_kernel(name, reinterpret_cast<void (*)()>(f), &trampoline<A...>, (int)sizeof...(A), sizes, kinds);
    }
};
}  // namespace cudaenc_emu

#define CUDAENC_REGISTER(name) \
    static ::cudaenc_emu::Registrar cudaenc_registrar_##name(#name, &name);
#define CUDAENC_DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(::cudaenc_emu::dynamic_shared())

#define __syncthreads() ::cudaenc_emu::syncthreads(__FILE__, __LINE__)
#define __syncwarp(...) ::cudaenc_emu::SyncwarpAt{__FILE__, __LINE__}(__VA_ARGS__)
#define __shfl_sync(...) ::cudaenc_emu::shfl_sync(__FILE__, __LINE__, __VA_ARGS__)
#define __shfl_up_sync(...) ::cudaenc_emu::shfl_up_sync(__FILE__, __LINE__, __VA_ARGS__)
#define __shfl_down_sync(...) ::cudaenc_emu::shfl_down_sync(__FILE__, __LINE__, __VA_ARGS__)
#define __shfl_xor_sync(...) ::cudaenc_emu::shfl_xor_sync(__FILE__, __LINE__, __VA_ARGS__)
#define __ballot_sync(...) ::cudaenc_emu::ballot_sync(__FILE__, __LINE__, __VA_ARGS__)
#define __any_sync(...) ::cudaenc_emu::any_sync(__FILE__, __LINE__, __VA_ARGS__)
#define __all_sync(...) ::cudaenc_emu::all_sync(__FILE__, __LINE__, __VA_ARGS__)

// ---- atomics: real atomics, blocks run in parallel ----
inline float atomicAdd(float* a, float v) {
    unsigned int* p = reinterpret_cast<unsigned int*>(a);
    unsigned int old = __atomic_load_n(p, __ATOMIC_RELAXED), nw;
    float f;
    do {
        std::memcpy(&f, &old, 4);
        f += v;
        std::memcpy(&nw, &f, 4);
    } while (!__atomic_compare_exchange_n(p, &old, nw, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    std::memcpy(&f, &old, 4);
    return f;
}
inline double atomicAdd(double* a, double v) {
    unsigned long long* p = reinterpret_cast<unsigned long long*>(a);
    unsigned long long old = __atomic_load_n(p, __ATOMIC_RELAXED), nw;
    double f;
    do {
        std::memcpy(&f, &old, 8);
        f += v;
        std::memcpy(&nw, &f, 8);
    } while (!__atomic_compare_exchange_n(p, &old, nw, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    std::memcpy(&f, &old, 8);
    return f;
}
inline int atomicAdd(int* a, int v) { return __atomic_fetch_add(a, v, __ATOMIC_RELAXED); }
inline unsigned atomicAdd(unsigned* a, unsigned v) { return __atomic_fetch_add(a, v, __ATOMIC_RELAXED); }
inline unsigned long long atomicAdd(unsigned long long* a, unsigned long long v) { return __atomic_fetch_add(a, v, __ATOMIC_RELAXED); }
inline int atomicMax(int* a, int v) {
    int old = __atomic_load_n(a, __ATOMIC_RELAXED);
    while (old < v && !__atomic_compare_exchange_n(a, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {}
    return old;
}
inline int atomicMin(int* a, int v) {
    int old = __atomic_load_n(a, __ATOMIC_RELAXED);
    while (old > v && !__atomic_compare_exchange_n(a, &old, v, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {}
    return old;
}
inline int atomicCAS(int* a, int cmp, int v) { __atomic_compare_exchange_n(a, &cmp, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED); return cmp; }
inline unsigned atomicCAS(unsigned* a, unsigned cmp, unsigned v) { __atomic_compare_exchange_n(a, &cmp, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED); return cmp; }
inline int atomicExch(int* a, int v) { return __atomic_exchange_n(a, v, __ATOMIC_RELAXED); }
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

// ---- math: accurate libm on the host (a few ulp from the GPU's fast paths) ----
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __tanhf(float x) { return tanhf(x); }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
inline int __float_as_int(float x) { int i; std::memcpy(&i, &x, 4); return i; }
inline unsigned __float_as_uint(float x) { unsigned i; std::memcpy(&i, &x, 4); return i; }
inline float __int_as_float(int i) { float x; std::memcpy(&x, &i, 4); return x; }
inline float __uint_as_float(unsigned i) { float x; std::memcpy(&x, &i, 4); return x; }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
template <class T> inline T __ldg(const T* p) { return *p; }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }
