// Layer norm over the last dimension (eps 1e-5); reference: src/reference/layernorm.rs,
// launcher: src/ops/layernorm.rs. Launch with a 1-D block whose size is a multiple of 32.
#include "cudaenc.cuh"

#define LAYERNORM_EPS 1e-5f

// out (N,C), mean (N), rstd (N) <- inp (N,C), weight (C), bias (C).
// Grid N blocks, one block per row; any C (threads stride over the row).
extern "C" __global__ void layernorm_forward(float* __restrict__ out, float* __restrict__ mean,
                                             float* __restrict__ rstd, const float* __restrict__ inp,
                                             const float* __restrict__ weight,
                                             const float* __restrict__ bias, int N, int C) {
    __shared__ float scratch[32];
    const int row = blockIdx.x;
    if (row >= N) return;  // block-uniform
    const float* x = inp + (size_t)row * C;
    float s = 0.0f;
    for (int i = threadIdx.x; i < C; i += blockDim.x) s += x[i];
    const float m = block_reduce_sum(s, scratch) / C;
    float v = 0.0f;
    for (int i = threadIdx.x; i < C; i += blockDim.x) {
        const float d = x[i] - m;
        v += d * d;
    }
    const float r = rsqrtf(block_reduce_sum(v, scratch) / C + LAYERNORM_EPS);
    float* o = out + (size_t)row * C;
    for (int i = threadIdx.x; i < C; i += blockDim.x) o[i] = (x[i] - m) * r * weight[i] + bias[i];
    if (threadIdx.x == 0) {
        mean[row] = m;
        rstd[row] = r;
    }
}
CUDAENC_REGISTER(layernorm_forward)

// dinp (N,C) +=, dweight (C) +=, dbias (C) += <- dout, inp, weight, mean, rstd.
// Grid N + ceil(C/32) blocks. Blocks [0,N): one row of dinp each. Blocks [N, ..): 32
// columns of dweight/dbias each; warp g sums rows g, g+G, ... in order, then lane
// threads add the G partials in order: deterministic, no float atomics.
extern "C" __global__ void layernorm_backward(float* __restrict__ dinp, float* __restrict__ dweight,
                                              float* __restrict__ dbias, const float* __restrict__ dout,
                                              const float* __restrict__ inp, const float* __restrict__ weight,
                                              const float* __restrict__ mean, const float* __restrict__ rstd,
                                              int N, int C) {
    __shared__ float scratch[32];
    __shared__ float part_w[32][32], part_b[32][32];
    const int lane = threadIdx.x % 32, g = threadIdx.x / 32, G = blockDim.x / 32;
    if ((int)blockIdx.x < N) {  // block-uniform branch: row of dinp
        const int row = blockIdx.x;
        const float* x = inp + (size_t)row * C;
        const float* d = dout + (size_t)row * C;
        const float m = mean[row], s = rstd[row];
        float a = 0.0f, b = 0.0f;
        for (int i = threadIdx.x; i < C; i += blockDim.x) {
            const float norm = (x[i] - m) * s;
            const float dnorm = d[i] * weight[i];
            a += dnorm;
            b += dnorm * norm;
        }
        a = block_reduce_sum(a, scratch) / C;
        b = block_reduce_sum(b, scratch) / C;
        float* di = dinp + (size_t)row * C;
        for (int i = threadIdx.x; i < C; i += blockDim.x) {
            const float norm = (x[i] - m) * s;
            const float dnorm = d[i] * weight[i];
            di[i] += (dnorm - a - norm * b) * s;
        }
        return;
    }
    // columns of dweight / dbias
    const int col = ((int)blockIdx.x - N) * 32 + lane;
    float sw = 0.0f, sb = 0.0f;
    if (col < C) {
        for (int r = g; r < N; r += G) {
            const size_t at = (size_t)r * C + col;
            sb += dout[at];
            sw += dout[at] * (inp[at] - mean[r]) * rstd[r];
        }
    }
    part_w[g][lane] = sw;
    part_b[g][lane] = sb;
    __syncthreads();
    if (g == 0 && col < C) {
        float tw = 0.0f, tb = 0.0f;
        for (int k = 0; k < G; k++) {
            tw += part_w[k][lane];
            tb += part_b[k][lane];
        }
        dweight[col] += tw;
        dbias[col] += tb;
    }
}
CUDAENC_REGISTER(layernorm_backward)
