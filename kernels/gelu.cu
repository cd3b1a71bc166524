// GELU, tanh form: out = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
// Reference: src/reference/gelu.rs; launcher: src/ops/gelu.rs. Elementwise, grid-stride.
//
// Same function as the reference, evaluated without f32 cancellation: for x below about
// -4, tanh(u) rounds to -1 and 1 + tanhf(u) to 0, losing the (tiny, but relative-error
// visible) tail of out and dinp. With e = exp(-2|u|) in (0, 1]:
//   1 + tanh(u) = 2 / (1 + e) for u >= 0,  2 e / (1 + e) for u < 0,
//   sech^2(u)   = 1 - tanh(u)^2 = 4 e / (1 + e)^2,
// each accurate to a few ulp for every u.
#include "cudaenc.cuh"

#define GELU_SCALE 0.7978845608028654f  // sqrt(2 / pi)
#define GELU_C 0.044715f

// 1 + tanh(u), and sech^2(u) in *sech2.
__device__ __forceinline__ float gelu_one_plus_tanh(float u, float* sech2) {
    const float e = expf(-2.0f * fabsf(u));
    const float r = 1.0f / (1.0f + e);
    *sech2 = 4.0f * e * r * r;
    return u >= 0.0f ? 2.0f * r : 2.0f * e * r;
}

// out (N) <- inp (N).
extern "C" __global__ void gelu_forward(float* __restrict__ out, const float* __restrict__ inp, int N) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (size_t)N; i += (size_t)gridDim.x * blockDim.x) {
        const float x = inp[i];
        float sech2;
        out[i] = 0.5f * x * gelu_one_plus_tanh(GELU_SCALE * (x + GELU_C * x * x * x), &sech2);
    }
}
CUDAENC_REGISTER(gelu_forward)

// dinp (N) = <- dout (N), inp (N).
extern "C" __global__ void gelu_backward(float* __restrict__ dinp, const float* __restrict__ dout,
                                         const float* __restrict__ inp, int N) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (size_t)N; i += (size_t)gridDim.x * blockDim.x) {
        const float x = inp[i];
        float sech2;
        const float opt = gelu_one_plus_tanh(GELU_SCALE * (x + GELU_C * x * x * x), &sech2);
        const float local = 0.5f * opt + 0.5f * x * sech2 * GELU_SCALE * (1.0f + 3.0f * GELU_C * x * x);
        dinp[i] = local * dout[i];
    }
}
CUDAENC_REGISTER(gelu_backward)
