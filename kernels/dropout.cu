// Dropout: element idx is kept iff dropout_uniform(seed, idx) >= p, kept values scaled by
// 1 / (1 - p); p <= 0 is the identity. The mask depends only on (seed, idx), so it equals
// the reference's bit for bit. Reference: src/reference/dropout.rs; launcher:
// src/ops/dropout.rs. Backward applies the same mask and scale to dout.
#include "cudaenc.cuh"

// out (N) <- inp (N). Also dropout_backward's body: dinp (N) = <- dout (N).
__device__ __forceinline__ void dropout_apply(float* __restrict__ out, const float* __restrict__ inp,
                                              unsigned long long seed, float p, float scale, int N) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (size_t)N; i += (size_t)gridDim.x * blockDim.x) {
        const bool keep = p <= 0.0f || dropout_uniform(seed, i) >= p;
        out[i] = keep ? (p <= 0.0f ? inp[i] : inp[i] * scale) : 0.0f;
    }
}

// out (N) <- inp (N); scale = 1 / (1 - p), computed by the launcher in f64 like the reference.
// The seed is read from device memory (seed[0], one per dropout site and step), so a
// captured step replays with the next step's seed (see docs/design.md, CUDA graphs).
extern "C" __global__ void dropout_forward(float* __restrict__ out, const float* __restrict__ inp,
                                           const unsigned long long* __restrict__ seed, float p, float scale, int N) {
    dropout_apply(out, inp, p > 0.0f ? seed[0] : 0ull, p, scale, N);
}
CUDAENC_REGISTER(dropout_forward)

// dinp (N) = <- dout (N): the forward's mask and scale.
extern "C" __global__ void dropout_backward(float* __restrict__ dinp, const float* __restrict__ dout,
                                            const unsigned long long* __restrict__ seed, float p, float scale, int N) {
    dropout_apply(dinp, dout, p > 0.0f ? seed[0] : 0ull, p, scale, N);
}
CUDAENC_REGISTER(dropout_backward)
