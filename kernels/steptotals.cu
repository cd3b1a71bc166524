// Training statistics summed on the device, read back once per N steps (no host
// synchronization inside a step). Reference: src/reference/steptotals.rs; launcher:
// src/ops/steptotals.rs; slot layout: train::engine::StepTotals.
#include "cudaenc.cuh"

// totals (7 doubles) += this step's statistics, in the order the host path computes them:
//   [0] steps, [1] reviews (B), [2] sum of mean_loss * B, with mean_loss the f32 sum of
//   losses in review order divided by B (as ops::loss does), [3] reviews classified
//   correctly (positive iff p(positive) > 0.5: probs[b] for K = 1, probs[b*2+1] for K = 2),
//   [4] the first step whose mean loss or gradient norm is not finite (0: none so far),
//   [5] that step's mean loss, [6] its norm.
// The step number is read from device memory (step[0], written with the batch), so a
// captured CUDA graph of the step replays with the next step's number.
// One thread does it all (B is a batch: tens of reviews); launch one block of 32.
extern "C" __global__ void step_totals_add(double* __restrict__ totals, const float* __restrict__ losses,
                                           const float* __restrict__ probs, const unsigned char* __restrict__ labels,
                                           const float* __restrict__ norm, int B, int K,
                                           const unsigned long long* __restrict__ step) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    float sum = 0.0f;
    int correct = 0;
    for (int b = 0; b < B; b++) {
        sum += losses[b];
        const float p = K == 1 ? probs[b] : probs[b * K + 1];
        correct += (p > 0.5f ? 1 : 0) == (int)labels[b];
    }
    const float mean = B > 0 ? sum / (float)B : 0.0f;
    totals[0] += 1.0;
    totals[1] += (double)B;
    totals[2] += (double)mean * (double)B;
    totals[3] += (double)correct;
    if (totals[4] == 0.0 && !(isfinite(mean) && isfinite(norm[0]))) {
        totals[4] = (double)step[0];
        totals[5] = (double)mean;
        totals[6] = (double)norm[0];
    }
}
CUDAENC_REGISTER(step_totals_add)
