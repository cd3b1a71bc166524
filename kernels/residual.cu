// Residual add: out = inp1 + inp2; backward adds dout into both (residual-stream rule).
// Reference: src/reference/residual.rs; launcher: src/ops/residual.rs. Grid-stride.
#include "cudaenc.cuh"

// out (N) <- inp1 (N), inp2 (N).
extern "C" __global__ void residual_forward(float* __restrict__ out, const float* __restrict__ inp1,
                                            const float* __restrict__ inp2, int N) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (size_t)N; i += (size_t)gridDim.x * blockDim.x)
        out[i] = inp1[i] + inp2[i];
}
CUDAENC_REGISTER(residual_forward)

// dinp1 (N) +=, dinp2 (N) += <- dout (N).
extern "C" __global__ void residual_backward(float* __restrict__ dinp1, float* __restrict__ dinp2,
                                             const float* __restrict__ dout, int N) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (size_t)N; i += (size_t)gridDim.x * blockDim.x) {
        const float d = dout[i];
        dinp1[i] += d;
        dinp2[i] += d;
    }
}
CUDAENC_REGISTER(residual_backward)
