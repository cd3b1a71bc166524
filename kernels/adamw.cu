// AdamW (decoupled weight decay, PyTorch semantics) with the clip factor folded into the
// read of g. Reference: src/reference/adamw.rs; launcher: src/ops/adamw.rs.
#include "cudaenc.cuh"

#define ADAMW_MAX_TENSORS 64  // entries of the per-tensor table of adamw_update_tensors

// One element, in place. Both kernels below use it: their results are bit-identical.
__device__ __forceinline__ void adamw_element(float* __restrict__ params, float* __restrict__ m, float* __restrict__ v,
                                              const float* __restrict__ grads, int i, float lr, float beta1,
                                              float beta2, float bc1, float bc2, float eps, float weight_decay,
                                              float grad_scale) {
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

// params, m, v (N) updated in place <- grads (N). bc1 = 1 - beta1^t, bc2 = 1 - beta2^t
// (computed by the host in f64 and rounded to f32, as the reference does). weight_decay
// is 0 for tensors without decay. One thread per element (grid-stride loop).
extern "C" __global__ void adamw_update(float* __restrict__ params, float* __restrict__ m, float* __restrict__ v,
                                        const float* __restrict__ grads, float lr, float beta1, float beta2,
                                        float bc1, float bc2, float eps, float weight_decay, float grad_scale,
                                        int N) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < N; i += gridDim.x * blockDim.x)
        adamw_element(params, m, v, grads, i, lr, beta1, beta2, bc1, bc2, eps, weight_decay, grad_scale);
}
CUDAENC_REGISTER(adamw_update)

// The clip factor of gradient norm `norm` for max_norm (off if <= 0): the same f32
// arithmetic as reference::gradnorm::clip_scale, so the same value.
__device__ __forceinline__ float adamw_clip_scale(float norm, float max_norm) {
    if (max_norm <= 0.0f || !isfinite(norm)) return 1.0f;
    return fminf(max_norm / (norm + 1e-6f), 1.0f);
}

// The whole parameter buffer in one launch: tensor k covers elements [ends[k-1], ends[k])
// (ends ascending, from 0; the last tensor also takes anything past its end) and decays
// with weight_decay if decay[k] != 0, else not. n_tensors in [1, ADAMW_MAX_TENSORS]. The
// clip factor comes from the global gradient norm in device memory (norm[0], as
// global_norm leaves it; max_norm <= 0: no clipping); a non-finite norm skips the whole
// update (parameters and moments untouched: the step is reported, not applied). The
// step's schedule is device memory too: sched = {lr, bc1, bc2} (the host writes it with
// the batch), so a captured CUDA graph of the step replays with the next step's. The
// table is staged in shared memory; each thread walks it with a cursor, since its
// grid-stride indices only grow. Otherwise exactly adamw_update per tensor.
extern "C" __global__ void adamw_update_tensors(float* __restrict__ params, float* __restrict__ m,
                                                float* __restrict__ v, const float* __restrict__ grads,
                                                const unsigned* __restrict__ ends, const unsigned* __restrict__ decay,
                                                int n_tensors, const float* __restrict__ norm, float max_norm,
                                                const float* __restrict__ sched, float beta1, float beta2, float eps,
                                                float weight_decay, int N) {
    __shared__ unsigned s_end[ADAMW_MAX_TENSORS];
    __shared__ float s_wd[ADAMW_MAX_TENSORS];
    const float g_norm = norm[0];
    if (!isfinite(g_norm)) return;  // block-uniform: before the barrier
    const float grad_scale = adamw_clip_scale(g_norm, max_norm);
    const float lr = sched[0], bc1 = sched[1], bc2 = sched[2];
    for (int k = threadIdx.x; k < n_tensors; k += blockDim.x) {
        s_end[k] = ends[k];
        s_wd[k] = decay[k] ? weight_decay : 0.0f;
    }
    __syncthreads();
    int k = 0;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < N; i += gridDim.x * blockDim.x) {
        while (k < n_tensors - 1 && (unsigned)i >= s_end[k]) k++;
        adamw_element(params, m, v, grads, i, lr, beta1, beta2, bc1, bc2, eps, s_wd[k], grad_scale);
    }
}
CUDAENC_REGISTER(adamw_update_tensors)
