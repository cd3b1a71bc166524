// cudaenc.cuh -- the one header every kernels/*.cu includes.
//
// Under nvcc: real CUDA; CUDAENC_REGISTER expands to nothing.
// On the host (the emulator, built by build.rs with the cc crate): the shim in
// emu/shim.h provides threadIdx & co., __syncthreads, the warp *_sync intrinsics,
// atomics and math; CUDAENC_REGISTER records the kernel for launch by name.
// Conventions: docs/kernels.md and ../shared/docs/host-emulator.md.
#pragma once

#ifdef __CUDACC__
  #define CUDAENC_REGISTER(name)
  // T* name over the launch's dynamic shared memory (16-byte aligned).
  #define CUDAENC_DYNAMIC_SHARED(T, name)                                   \
      extern __shared__ __align__(16) unsigned char cudaenc_dyn_smem_[];    \
      T* name = reinterpret_cast<T*>(cudaenc_dyn_smem_)
#else
  #include "emu/shim.h"
#endif

#define CUDAENC_FULL_MASK 0xffffffffu

// ---- helpers shared by kernel authors -------------------------------------

// Sum over the 32 lanes of a full warp; every lane gets the result.
// All 32 lanes must be live (blockDim.x a multiple of 32, or pad with zeros).
__device__ __forceinline__ float warp_reduce_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(CUDAENC_FULL_MASK, v, o);
    return v;
}

// Max over the 32 lanes of a full warp; every lane gets the result.
__device__ __forceinline__ float warp_reduce_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(CUDAENC_FULL_MASK, v, o));
    return v;
}

// Sum over the whole block; every thread gets the result. Requirements: blockDim.x a
// multiple of 32 (<= 1024), blockDim.y == blockDim.z == 1, called by every thread in
// block-uniform control flow. `scratch` is __shared__ float[32] owned by the caller;
// the helper ends with a barrier, so the scratch may be reused right after.
__device__ __forceinline__ float block_reduce_sum(float v, float* scratch) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int nwarps = blockDim.x / 32;
    v = warp_reduce_sum(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float t = lane < nwarps ? scratch[lane] : 0.0f;
    t = warp_reduce_sum(t);
    __syncthreads();
    return t;
}

// Counter-based dropout uniform in [0,1) with 24 bits; bit-identical to
// rng::dropout_uniform in src/rng.rs (SplitMix64 finalizer of seed + (idx+1)*golden).
__device__ __forceinline__ float dropout_uniform(unsigned long long seed, unsigned long long idx) {
    unsigned long long z = seed + (idx + 1ull) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)(unsigned int)(z >> 40) * (1.0f / 16777216.0f);
}

// ---- tensor cores (sm_80+): the one place with inline PTX -----------------
// Each wrapper is PTX under __CUDA_ARCH__ and, for the emulator, a host twin that does
// what the PTX ISA documents (tests/mma.rs checks both against a plain product).
//
// Rounding of the inputs, done by the kernel before the mma (the mma itself takes the
// operands' bit patterns as they are):
//   round_tf32(x): x to TF32 (8-bit exponent, 10 mantissa bits), nearest, ties away from
//                  zero, as cvt.rna.tf32.f32; the result is a float whose low 13 bits are 0.
//   round_bf16(x): x to bf16 (8-bit exponent, 7 mantissa bits), nearest, ties to even, as
//                  cvt.rn.bf16x2.f32; the result is a float whose low 16 bits are 0.
//   pack_bf16x2(lo, hi): two bf16-valued floats (from round_bf16) as one .b32 register,
//                  lo in bits 0-15 (the lower-indexed element of an mma fragment pair).
// NaN stays NaN; values beyond the largest finite one round to infinity.
__device__ __forceinline__ float round_tf32(float x) {
#if defined(__CUDA_ARCH__)
    unsigned u;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(u) : "f"(x));
    return __uint_as_float(u);
#else
    unsigned u = __float_as_uint(x);
    if ((u & 0x7f800000u) == 0x7f800000u) return x;  // inf, NaN: as they are
    u += 0x1000u;                                   // half of the 13 dropped bits: ties away
    return __uint_as_float(u & 0xffffe000u);
#endif
}

__device__ __forceinline__ float round_bf16(float x) {
#if defined(__CUDA_ARCH__)
    unsigned u;
    asm("cvt.rn.bf16x2.f32 %0, %1, %1;" : "=r"(u) : "f"(x));
    return __uint_as_float(u & 0xffff0000u);
#else
    unsigned u = __float_as_uint(x);
    if ((u & 0x7f800000u) == 0x7f800000u) return (u & 0x007fffffu) ? __uint_as_float(u | 0x00400000u) : x;
    u += 0x7fffu + ((u >> 16) & 1u);                // nearest, ties to even
    return __uint_as_float(u & 0xffff0000u);
#endif
}

__device__ __forceinline__ unsigned pack_bf16x2(float lo, float hi) {
    return (__float_as_uint(lo) >> 16) | (__float_as_uint(hi) & 0xffff0000u);
}

#if !defined(__CUDACC__)
namespace cudaenc_emu {
// One lane's operands of an mma: A and B fragments (.b32 registers), the accumulators
// D (= C on entry, D = A*B + C on return).
struct MmaLane {
    const unsigned* a;
    const unsigned* b;
    float* d;
};
// The host twin of mma.sync.aligned.{m16n8k8 tf32 | m16n8k16 bf16}.row.col.f32 for the
// 32 lanes of a warp, fragment layouts as in the PTX ISA ("Matrix Fragments for
// mma.m16n8k8" .tf32 and "mma.m16n8k16 with floating point type" .bf16), with
// groupID g = lane >> 2 and threadID_in_group t = lane % 4:
//   tf32 A (16x8):  a0 (g, t), a1 (g+8, t), a2 (g, t+4), a3 (g+8, t+4)
//   tf32 B (8x8):   b0 (k=t, n=g), b1 (k=t+4, n=g)
//   bf16 A (16x16): register r holds (row g + 8*(r%2), cols c, c+1), c = 2t + 8*(r/2),
//                   the lower column in bits 0-15
//   bf16 B (16x8):  register r holds (rows k, k+1, column g), k = 2t + 8r, lower k low
//   C/D (16x8 f32): d0 (g, 2t), d1 (g, 2t+1), d2 (g+8, 2t), d3 (g+8, 2t+1)
// TF32 operands use their top 19 bits (sign, exponent, 10 mantissa bits), as the
// hardware does; bf16 is the top half of a float. Every product is exact in double; each
// D element is C plus the K products summed in double in k order, rounded once to f32
// (the hardware's internal order and rounding differ in the last bits; tests allow it).
template <bool BF16> void mma_warp(void* const lanes[32]) {
    constexpr int K = BF16 ? 16 : 8;
    float A[16][K], B[K][8], D[16][8];
    for (int l = 0; l < 32; l++) {
        const MmaLane& p = *static_cast<const MmaLane*>(lanes[l]);
        const int g = l >> 2, t = l & 3;
        if (BF16) {
            for (int r = 0; r < 4; r++) {
                const int row = g + 8 * (r % 2), col = 2 * t + 8 * (r / 2);
                A[row][col] = __uint_as_float(p.a[r] << 16);
                A[row][col + 1] = __uint_as_float(p.a[r] & 0xffff0000u);
            }
            for (int r = 0; r < 2; r++) {
                const int k = 2 * t + 8 * r;
                B[k][g] = __uint_as_float(p.b[r] << 16);
                B[k + 1][g] = __uint_as_float(p.b[r] & 0xffff0000u);
            }
        } else {
            A[g][t] = __uint_as_float(p.a[0] & 0xffffe000u);
            A[g + 8][t] = __uint_as_float(p.a[1] & 0xffffe000u);
            A[g][t + 4] = __uint_as_float(p.a[2] & 0xffffe000u);
            A[g + 8][t + 4] = __uint_as_float(p.a[3] & 0xffffe000u);
            B[t][g] = __uint_as_float(p.b[0] & 0xffffe000u);
            B[t + 4][g] = __uint_as_float(p.b[1] & 0xffffe000u);
        }
        D[g][2 * t] = p.d[0];
        D[g][2 * t + 1] = p.d[1];
        D[g + 8][2 * t] = p.d[2];
        D[g + 8][2 * t + 1] = p.d[3];
    }
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 8; j++) {
            double s = D[i][j];
            for (int k = 0; k < K; k++) s += (double)A[i][k] * (double)B[k][j];
            D[i][j] = (float)s;
        }
    for (int l = 0; l < 32; l++) {
        const MmaLane& p = *static_cast<const MmaLane*>(lanes[l]);
        const int g = l >> 2, t = l & 3;
        p.d[0] = D[g][2 * t];
        p.d[1] = D[g][2 * t + 1];
        p.d[2] = D[g + 8][2 * t];
        p.d[3] = D[g + 8][2 * t + 1];
    }
}
}  // namespace cudaenc_emu
#endif

// d += A (16x8) * B (8x8), TF32 inputs (bit patterns from round_tf32), f32 accumulators;
// called by all 32 lanes of a warp together (warp-uniform control flow), fragments as above.
__device__ __forceinline__ void mma_m16n8k8_tf32(float d[4], const unsigned a[4], const unsigned b[2]) {
#if defined(__CUDA_ARCH__)
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#elif !defined(__CUDACC__)
    cudaenc_emu::MmaLane lane{a, b, d};
    cudaenc_emu::warp_collective(&lane, &cudaenc_emu::mma_warp<false>, __FILE__, __LINE__);
#endif
}

// d += A (16x16) * B (16x8), bf16 inputs (pairs from pack_bf16x2), f32 accumulators;
// called by all 32 lanes of a warp together, fragments as above.
__device__ __forceinline__ void mma_m16n8k16_bf16(float d[4], const unsigned a[4], const unsigned b[2]) {
#if defined(__CUDA_ARCH__)
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#elif !defined(__CUDACC__)
    cudaenc_emu::MmaLane lane{a, b, d};
    cudaenc_emu::warp_collective(&lane, &cudaenc_emu::mma_warp<true>, __FILE__, __LINE__);
#endif
}
