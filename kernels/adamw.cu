// AdamW (decoupled weight decay, PyTorch semantics) with the clip factor folded into the
// read of g. Reference: src/reference/adamw.rs; launcher: src/ops/adamw.rs.
#include "cudaenc.cuh"

// params, m, v (N) updated in place <- grads (N). bc1 = 1 - beta1^t, bc2 = 1 - beta2^t
// (computed by the host in f64 and rounded to f32, as the reference does). weight_decay
// is 0 for tensors without decay. One thread per element (grid-stride loop).
extern "C" __global__ void adamw_update(float* __restrict__ params, float* __restrict__ m, float* __restrict__ v,
                                        const float* __restrict__ grads, float lr, float beta1, float beta2,
                                        float bc1, float bc2, float eps, float weight_decay, float grad_scale,
                                        int N) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < N; i += gridDim.x * blockDim.x) {
        const float g = grads[i] * grad_scale;
        const float mi = beta1 * m[i] + (1.0f - beta1) * g;
        const float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        const float mhat = mi / bc1;
        const float vhat = vi / bc2;
        const float p = params[i];
        params[i] = p - lr * (weight_decay * p + mhat / (sqrtf(vhat) + eps));
    }
}
CUDAENC_REGISTER(adamw_update)
