// Classification losses from logits, numerically stable; reference: src/reference/loss.rs,
// launchers: src/ops/loss.rs. One thread per review (K is 1 or 2 in the model), grid
// ceil(B / blockDim.x), any 1-D block. The mean over B is summed by the launcher on the
// host, in review order (deterministic; the reference's forward returns it the same way).
#include "cudaenc.cuh"

// losses (B), probs (B,K) <- logits (B,K), labels (B) in 0..K; label smoothing eps in [0,1).
// The target is q = (1 - eps) onehot(y) + eps / K, loss = sum_j q_j (lse - z[j])
//   = (1 - eps) (lse - z[y]) + eps (lse - mean_j z[j]),
// with lse - z[j] written as (m - z[j]) + log1p(s), m = max z (first argmax a) and
// s = sum_{j != a} exp(z[j] - m): no cancellation against a large lse, so a confident
// review's tiny loss keeps its relative precision and huge logits stay finite. eps = 0
// gives exactly the unsmoothed loss.
// probs = exp(z - m) / (1 + s): the argmax class gets exactly 1 / (1 + s), so 1 - p (the
// backward's cancellation) is as accurate as f32 allows; two equal logits give exactly 0.5.
// A label >= K (the reference panics) gives a NaN loss, so it cannot pass unnoticed.
extern "C" __global__ void softmax_ce_forward(float* __restrict__ losses, float* __restrict__ probs,
                                              const float* __restrict__ logits,
                                              const unsigned char* __restrict__ labels, int B, int K,
                                              float eps) {
    const int b = blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= B) return;
    const float* z = logits + (size_t)b * K;
    int a = 0;
    for (int j = 1; j < K; j++)
        if (z[j] > z[a]) a = j;
    const float m = z[a];
    float s = 0.0f, zsum = 0.0f;
    for (int j = 0; j < K; j++) {
        if (j != a) s += expf(z[j] - m);
        zsum += z[j];
    }
    const float inv = 1.0f / (1.0f + s);
    float* p = probs + (size_t)b * K;
    for (int j = 0; j < K; j++) p[j] = (j == a ? 1.0f : expf(z[j] - m)) * inv;
    const int y = labels[b];
    const float l1p = log1pf(s);
    const float nll = (m - z[y]) + l1p;
    losses[b] = y < K ? (eps == 0.0f ? nll : (1.0f - eps) * nll + eps * ((m - zsum / (float)K) + l1p)) : NAN;
}
CUDAENC_REGISTER(softmax_ce_forward)

// dlogits (B,K) = (probs - q) / B, q = (1 - eps) onehot(labels) + eps / K: gradient of the
// mean loss (overwrites).
extern "C" __global__ void softmax_ce_backward(float* __restrict__ dlogits, const float* __restrict__ probs,
                                               const unsigned char* __restrict__ labels, int B, int K,
                                               float eps) {
    const int b = blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= B) return;
    const float inv_b = 1.0f / (float)max(B, 1);
    const float off = eps / (float)K, on = 1.0f - eps + off;
    const int y = labels[b];
    for (int j = 0; j < K; j++) {
        const size_t at = (size_t)b * K + j;
        dlogits[at] = (probs[at] - (j == y ? on : off)) * inv_b;
    }
}
CUDAENC_REGISTER(softmax_ce_backward)

// losses (B), probs (B) = sigmoid(z) <- logits (B), labels (B) in {0,1}; target smoothing
// eps in [0,1): the target is t = (1 - eps) y + eps / 2.
// loss = max(z,0) - z t + log1p(exp(-|z|)); exp(-|z|) is in (0,1]: never overflows.
extern "C" __global__ void sigmoid_bce_forward(float* __restrict__ losses, float* __restrict__ probs,
                                               const float* __restrict__ logits,
                                               const unsigned char* __restrict__ labels, int B, float eps) {
    const int b = blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= B) return;
    const float z = logits[b], t = (1.0f - eps) * (float)labels[b] + 0.5f * eps;
    const float e = expf(-fabsf(z));
    losses[b] = fmaxf(z, 0.0f) - z * t + log1pf(e);
    probs[b] = z >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
}
CUDAENC_REGISTER(sigmoid_bce_forward)

// dlogits (B) = (probs - t) / B, t = (1 - eps) labels + eps / 2: gradient of the mean
// loss (overwrites).
extern "C" __global__ void sigmoid_bce_backward(float* __restrict__ dlogits, const float* __restrict__ probs,
                                                const unsigned char* __restrict__ labels, int B, float eps) {
    const int b = blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= B) return;
    const float inv_b = 1.0f / (float)max(B, 1);
    dlogits[b] = (probs[b] - ((1.0f - eps) * (float)labels[b] + 0.5f * eps)) * inv_b;
}
CUDAENC_REGISTER(sigmoid_bce_backward)

// count (1) = number of reviews whose predicted class equals its label (overwrites).
// Prediction, as reference::engine::predicted_label on the positive-class probability:
// K = 1 (BCE): probs[b] > 0.5; K = 2 (CE): probs[b,1] > 0.5; K > 2: argmax (first of equals).
// One block of 256 threads; integer sums, so the count does not depend on the order.
extern "C" __global__ void accuracy_count(unsigned* __restrict__ count, const float* __restrict__ probs,
                                          const unsigned char* __restrict__ labels, int B, int K) {
    __shared__ unsigned partial[32];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
    unsigned n = 0;
    for (int b = threadIdx.x; b < B; b += blockDim.x) {
        const float* p = probs + (size_t)b * K;
        int pred;
        if (K == 1) {
            pred = p[0] > 0.5f;
        } else if (K == 2) {
            pred = p[1] > 0.5f;
        } else {
            pred = 0;
            for (int j = 1; j < K; j++)
                if (p[j] > p[pred]) pred = j;
        }
        n += pred == (int)labels[b];
    }
    for (int o = 16; o > 0; o >>= 1) n += __shfl_xor_sync(CUDAENC_FULL_MASK, n, o);
    if (lane == 0) partial[warp] = n;
    __syncthreads();
    if (threadIdx.x == 0) {
        unsigned total = 0;
        for (int w = 0; w < nwarps; w++) total += partial[w];
        count[0] = total;
    }
}
CUDAENC_REGISTER(accuracy_count)
