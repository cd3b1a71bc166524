// Classification losses from logits, numerically stable; reference: src/reference/loss.rs,
// launchers: src/ops/loss.rs. One thread per review (K is 1 or 2 in the model), grid
// ceil(B / blockDim.x), any 1-D block. The mean over B is summed by the launcher on the
// host, in review order (deterministic; the reference's forward returns it the same way).
#include "cudaenc.cuh"

// losses (B), probs (B,K) <- logits (B,K), labels (B) in 0..K.
// loss = logsumexp(z) - z[y], written as (m - z[y]) + log1p(s) with m = max z (first
// argmax a) and s = sum_{j != a} exp(z[j] - m): no cancellation against a large lse, so a
// confident review's tiny loss keeps its relative precision and huge logits stay finite.
// probs = exp(z - m) / (1 + s): the argmax class gets exactly 1 / (1 + s), so 1 - p (the
// backward's cancellation) is as accurate as f32 allows; two equal logits give exactly 0.5.
// A label >= K (the reference panics) gives a NaN loss, so it cannot pass unnoticed.
extern "C" __global__ void softmax_ce_forward(float* __restrict__ losses, float* __restrict__ probs,
                                              const float* __restrict__ logits,
                                              const unsigned char* __restrict__ labels, int B, int K) {
    const int b = blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= B) return;
    const float* z = logits + (size_t)b * K;
    int a = 0;
    for (int j = 1; j < K; j++)
        if (z[j] > z[a]) a = j;
    const float m = z[a];
    float s = 0.0f;
    for (int j = 0; j < K; j++)
        if (j != a) s += expf(z[j] - m);
    const float inv = 1.0f / (1.0f + s);
    float* p = probs + (size_t)b * K;
    for (int j = 0; j < K; j++) p[j] = (j == a ? 1.0f : expf(z[j] - m)) * inv;
    const int y = labels[b];
    losses[b] = y < K ? (m - z[y]) + log1pf(s) : NAN;
}
CUDAENC_REGISTER(softmax_ce_forward)

// dlogits (B,K) = (probs - onehot(labels)) / B: gradient of the mean loss (overwrites).
extern "C" __global__ void softmax_ce_backward(float* __restrict__ dlogits, const float* __restrict__ probs,
                                               const unsigned char* __restrict__ labels, int B, int K) {
    const int b = blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= B) return;
    const float inv_b = 1.0f / (float)max(B, 1);
    const int y = labels[b];
    for (int j = 0; j < K; j++) {
        const size_t at = (size_t)b * K + j;
        dlogits[at] = (probs[at] - (j == y ? 1.0f : 0.0f)) * inv_b;
    }
}
CUDAENC_REGISTER(softmax_ce_backward)

// losses (B), probs (B) = sigmoid(z) <- logits (B), labels (B) in {0,1}.
// loss = max(z,0) - z y + log1p(exp(-|z|)); exp(-|z|) is in (0,1]: never overflows.
extern "C" __global__ void sigmoid_bce_forward(float* __restrict__ losses, float* __restrict__ probs,
                                               const float* __restrict__ logits,
                                               const unsigned char* __restrict__ labels, int B) {
    const int b = blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= B) return;
    const float z = logits[b], y = (float)labels[b];
    const float e = expf(-fabsf(z));
    losses[b] = fmaxf(z, 0.0f) - z * y + log1pf(e);
    probs[b] = z >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
}
CUDAENC_REGISTER(sigmoid_bce_forward)

// dlogits (B) = (probs - labels) / B: gradient of the mean loss (overwrites).
extern "C" __global__ void sigmoid_bce_backward(float* __restrict__ dlogits, const float* __restrict__ probs,
                                                const unsigned char* __restrict__ labels, int B) {
    const int b = blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= B) return;
    const float inv_b = 1.0f / (float)max(B, 1);
    dlogits[b] = (probs[b] - (float)labels[b]) * inv_b;
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
