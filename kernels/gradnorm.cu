// Global L2 norm of the gradient buffer, as a deterministic two-pass reduction.
// Reference: src/reference/gradnorm.rs; launcher: src/ops/gradnorm.rs.
// The grid size depends only on N, and every sum runs in a fixed order, so the result is
// bit-identical across reruns. No atomics.
#include "cudaenc.cuh"

// Pass 1: partials (gridDim.x) <- sum of squares of the block's grid-strided elements.
// Block size a multiple of 32.
extern "C" __global__ void global_norm_partial(float* __restrict__ partials, const float* __restrict__ g, int N) {
    __shared__ float scratch[32];
    float s = 0.0f;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < N; i += (long long)gridDim.x * blockDim.x) {
        const float x = g[i];
        s += x * x;
    }
    s = block_reduce_sum(s, scratch);
    if (threadIdx.x == 0) partials[blockIdx.x] = s;
}
CUDAENC_REGISTER(global_norm_partial)

// Pass 2 (one block): out[0] = sqrt(sum of partials[0..G)). Thread k sums partials
// k, k + blockDim.x, ... in order, then the block tree-reduces (fixed order).
extern "C" __global__ void global_norm_final(float* __restrict__ out, const float* __restrict__ partials, int G) {
    __shared__ float scratch[32];
    float s = 0.0f;
    for (int i = threadIdx.x; i < G; i += blockDim.x) s += partials[i];
    s = block_reduce_sum(s, scratch);
    if (threadIdx.x == 0) out[0] = sqrtf(s);
}
CUDAENC_REGISTER(global_norm_final)
