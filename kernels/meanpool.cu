// Masked mean pooling over the valid tokens; reference: src/reference/meanpool.rs,
// launcher: src/ops/meanpool.rs.
#include "cudaenc.cuh"

// out (B,C) <- inp (B,T,C), lens (B): out[b] = mean over t < min(lens[b], T) of inp[b,t];
// len 0 gives 0. Grid (ceil(C/blockDim.x), B); thread per column, tokens summed in order
// (coalesced across the row, deterministic) with Kahan compensation: the mean of T ~ 512
// terms of random sign is ~1/sqrt(T) their size, so a plain f32 running sum loses ~1e-5.
extern "C" __global__ void meanpool_forward(float* __restrict__ out, const float* __restrict__ inp,
                                            const unsigned* __restrict__ lens, int B, int T, int C) {
    const int b = blockIdx.y, c = blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= B || c >= C) return;
    const int L = min((int)lens[b], T);
    const float* x = inp + (size_t)b * T * C + c;
    float s = 0.0f, comp = 0.0f;
    for (int t = 0; t < L; t++) {
        const float y = x[(size_t)t * C] - comp;
        const float u = s + y;
        comp = (u - s) - y;
        s = u;
    }
    out[(size_t)b * C + c] = L > 0 ? s * (1.0f / (float)L) : 0.0f;
}
CUDAENC_REGISTER(meanpool_forward)

// dinp (B,T,C) = dout[b] / len for t < len, exactly 0 for padded rows (overwrites).
// Grid (ceil(C/blockDim.x), T, B).
extern "C" __global__ void meanpool_backward(float* __restrict__ dinp, const float* __restrict__ dout,
                                             const unsigned* __restrict__ lens, int B, int T, int C) {
    const int b = blockIdx.z, t = blockIdx.y, c = blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= B || t >= T || c >= C) return;
    const int L = min((int)lens[b], T);
    const float inv = L > 0 ? 1.0f / (float)L : 0.0f;
    dinp[((size_t)b * T + t) * C + c] = t < L ? dout[(size_t)b * C + c] * inv : 0.0f;
}
CUDAENC_REGISTER(meanpool_backward)
