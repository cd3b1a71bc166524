// Kernels that test the toolchain and the emulator itself (tests/emulator.rs).
// The ones named test_broken_* are wrong on purpose: the emulator must return an
// error for them, never hang. Never launch them on a real GPU.
#include "cudaenc.cuh"

// out[i] = dropout_uniform(seeds[i], idxs[i]); checked against rng::dropout_uniform.
extern "C" __global__ void test_dropout_uniform(float* out, const unsigned long long* seeds,
                                                const unsigned long long* idxs, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = dropout_uniform(seeds[i], idxs[i]);
}
CUDAENC_REGISTER(test_dropout_uniform)

// out[b] = sum of inp[b*n .. (b+1)*n), for ANY block size (partial last warp):
// shuffles with a mask of the live lanes, then shared memory across warps.
extern "C" __global__ void test_block_sum(float* out, const float* inp, int n) {
    __shared__ float warp_sums[32];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int nwarps = (blockDim.x + 31) / 32;
    const int live = min(32, (int)blockDim.x - warp * 32);
    const unsigned mask = live == 32 ? 0xffffffffu : ((1u << live) - 1u);
    float v = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) v += inp[(size_t)blockIdx.x * n + i];
    for (int o = 16; o > 0; o >>= 1) {
        const float t = __shfl_down_sync(mask, v, o);
        if (lane + o < live) v += t;
    }
    if (lane == 0) warp_sums[warp] = v;
    __syncthreads();
    if (threadIdx.x == 0) {
        float t = 0.0f;
        for (int w = 0; w < nwarps; w++) t += warp_sums[w];
        out[blockIdx.x] = t;
    }
}
CUDAENC_REGISTER(test_block_sum)

// warp helpers: out[3*b + 0..3] = block_reduce_sum, warp_reduce_max of warp 0, ballot count
extern "C" __global__ void test_warp_helpers(float* out, const float* inp) {
    __shared__ float scratch[32];
    const float x = inp[blockIdx.x * blockDim.x + threadIdx.x];
    const float s = block_reduce_sum(x, scratch);
    const float m = warp_reduce_max(x);
    const unsigned b = __ballot_sync(0xffffffffu, x > 0.0f);
    __syncwarp();  // both spellings compile on both devices: no mask, and a mask
    __syncwarp(0xffffffffu);
    if (threadIdx.x == 0) {
        out[3 * blockIdx.x + 0] = s;
        out[3 * blockIdx.x + 1] = m;
        out[3 * blockIdx.x + 2] = (float)__popc(b);
    }
}
CUDAENC_REGISTER(test_warp_helpers)

// out[i] = the dynamic shared memory as found (NaN poison on the emulator), then
// out[n + i] = a value written and read back through it.
extern "C" __global__ void test_dynamic_shared(float* out, int n) {
    CUDAENC_DYNAMIC_SHARED(float, buf);
    for (int i = threadIdx.x; i < n; i += blockDim.x) out[i] = buf[i];
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += blockDim.x) buf[i] = (float)i;
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += blockDim.x) out[n + i] = buf[n - 1 - i];
}
CUDAENC_REGISTER(test_dynamic_shared)

// counts[0] += 1 per thread with integer atomics; sum[0] += 1.0f with float atomics.
extern "C" __global__ void test_atomics(int* counts, float* sum, int* maxv) {
    atomicAdd(counts, 1);
    atomicAdd(sum, 1.0f);
    atomicMax(maxv, (int)(blockIdx.x * blockDim.x + threadIdx.x));
}
CUDAENC_REGISTER(test_atomics)

// BROKEN: threads of one block reach __syncthreads() at two different places.
extern "C" __global__ void test_broken_divergent_barrier(float* out) {
    if (threadIdx.x < 16) {
        __syncthreads();
        out[threadIdx.x] = 1.0f;
    } else {
        __syncthreads();
        out[threadIdx.x] = 2.0f;
    }
}
CUDAENC_REGISTER(test_broken_divergent_barrier)

// BROKEN: lane 5 exits, the others shuffle with a full mask that still names it.
extern "C" __global__ void test_broken_shuffle_dead_lane(float* out) {
    if (threadIdx.x == 5) return;
    const float v = __shfl_xor_sync(0xffffffffu, (float)threadIdx.x, 1);
    out[threadIdx.x] = v;
}
CUDAENC_REGISTER(test_broken_shuffle_dead_lane)

// The tensor-core wrappers of cudaenc.cuh alone (tests/mma.rs): C (M,N) = A (M,K) @ B (K,N),
// row-major, inputs rounded by round_tf32 / round_bf16. One warp per block; block b computes
// the 16x8 tile (b / ceil(N/8), b % ceil(N/8)) of C with one mma per 8 (tf32) or 16 (bf16)
// values of k, each lane loading its own fragment elements from global memory at the PTX
// ISA's positions (g = lane/4, t = lane%4; see cudaenc.cuh); out-of-range elements are 0.
extern "C" __global__ void test_mma_tf32(float* C, const float* A, const float* B, int M, int N, int K) {
    const int lane = threadIdx.x, g = lane >> 2, t = lane & 3;
    const int tiles_n = (N + 7) / 8, m0 = blockIdx.x / tiles_n * 16, n0 = blockIdx.x % tiles_n * 8;
    auto a_at = [&](int m, int k) { return __float_as_uint(m < M && k < K ? round_tf32(A[(size_t)m * K + k]) : 0.0f); };
    auto b_at = [&](int k, int n) { return __float_as_uint(k < K && n < N ? round_tf32(B[(size_t)k * N + n]) : 0.0f); };
    float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int k0 = 0; k0 < K; k0 += 8) {
        const unsigned a[4] = {a_at(m0 + g, k0 + t), a_at(m0 + g + 8, k0 + t), a_at(m0 + g, k0 + t + 4),
                               a_at(m0 + g + 8, k0 + t + 4)};
        const unsigned b[2] = {b_at(k0 + t, n0 + g), b_at(k0 + t + 4, n0 + g)};
        mma_m16n8k8_tf32(d, a, b);
    }
    for (int i = 0; i < 4; i++) {
        const int m = m0 + g + 8 * (i >> 1), n = n0 + 2 * t + (i & 1);
        if (m < M && n < N) C[(size_t)m * N + n] = d[i];
    }
}
CUDAENC_REGISTER(test_mma_tf32)

extern "C" __global__ void test_mma_bf16(float* C, const float* A, const float* B, int M, int N, int K) {
    const int lane = threadIdx.x, g = lane >> 2, t = lane & 3;
    const int tiles_n = (N + 7) / 8, m0 = blockIdx.x / tiles_n * 16, n0 = blockIdx.x % tiles_n * 8;
    auto a_at = [&](int m, int k) { return m < M && k < K ? round_bf16(A[(size_t)m * K + k]) : 0.0f; };
    auto b_at = [&](int k, int n) { return k < K && n < N ? round_bf16(B[(size_t)k * N + n]) : 0.0f; };
    float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int k0 = 0; k0 < K; k0 += 16) {
        unsigned a[4], b[2];
        for (int r = 0; r < 4; r++) {  // rows g + 8*(r%2), columns 2t + 8*(r/2) and one more
            const int m = m0 + g + 8 * (r % 2), k = k0 + 2 * t + 8 * (r / 2);
            a[r] = pack_bf16x2(a_at(m, k), a_at(m, k + 1));
        }
        for (int r = 0; r < 2; r++) {  // rows 2t + 8r and one more, column g
            const int k = k0 + 2 * t + 8 * r;
            b[r] = pack_bf16x2(b_at(k, n0 + g), b_at(k + 1, n0 + g));
        }
        mma_m16n8k16_bf16(d, a, b);
    }
    for (int i = 0; i < 4; i++) {
        const int m = m0 + g + 8 * (i >> 1), n = n0 + 2 * t + (i & 1);
        if (m < M && n < N) C[(size_t)m * N + n] = d[i];
    }
}
CUDAENC_REGISTER(test_mma_bf16)

// out[i] = round_tf32(x[i]) and out[n + i] = round_bf16(x[i]): the rounding helpers against
// the Rust ones (tests/mma.rs), including ties, subnormals, overflow, infinities and NaN.
extern "C" __global__ void test_round_tf32_bf16(float* out, const float* x, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        out[i] = round_tf32(x[i]);
        out[n + i] = round_bf16(x[i]);
    }
}
CUDAENC_REGISTER(test_round_tf32_bf16)
