// Layer norm over the last dimension (eps 1e-5), and residual_layernorm_forward (the
// dropout + residual add before it fused in); reference: src/reference/layernorm.rs,
// launcher: src/ops/layernorm.rs. Launch with a 1-D block whose size is a multiple of 32.
//
// Backward dweight/dbias reduce over all N rows with only ceil(C/32) column blocks (12 at
// C = 384): a deterministic split over rows. The launcher splits N into S chunks of
// `chunk_len` consecutive rows (S from the shapes alone; layernorm_backward_chunks in
// src/ops/layernorm.rs). S == 1: each column block sums all rows and adds (+=) into
// dweight/dbias. S > 1: each (column block, chunk) writes its partial sums (=) into
// scratch[s*2C + c] (dweight) and scratch[s*2C + C + c] (dbias); layernorm_backward_reduce,
// the next launch on the same stream, adds the S partials in chunk order and then (+=)
// into dweight/dbias. Fixed operation order for given shapes: bit-identical reruns.
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

// The residual add of a dropped-out branch fused with the layer norm that reads the sum,
// one pass over memory instead of three launches (dropout_forward, residual_forward,
// layernorm_forward):
//   res (N,C) = x + dropout(branch), element row*C + i kept as dropout_forward keeps
//               element row*C + i of the flat (N,C) tensor (same seed, mask and scale, so
//               dropout_backward stays its backward; p <= 0: no dropout)
//   ln (N,C), mean (N), rstd (N) = layernorm_forward(res, weight, bias)
// Each thread keeps the res values it computed in the launch's dynamic shared memory
// (C floats) and only ever reads back its own: x and branch are read once, res and ln
// written once. The sums run in layernorm_forward's order and every element's arithmetic
// is the unfused kernels', so the outputs equal the three launches' bit for bit.
// Grid N blocks, one per row; 1-D block, a multiple of 32; dynamic shared memory 4*C bytes.
extern "C" __global__ void residual_layernorm_forward(float* __restrict__ res, float* __restrict__ ln,
                                                      float* __restrict__ mean, float* __restrict__ rstd,
                                                      const float* __restrict__ x, const float* __restrict__ branch,
                                                      const float* __restrict__ weight, const float* __restrict__ bias,
                                                      const unsigned long long* __restrict__ seed_at, float p,
                                                      float scale, int N, int C) {
    __shared__ float scratch[32];
    CUDAENC_DYNAMIC_SHARED(float, row_res);
    const int row = blockIdx.x;
    if (row >= N) return;  // block-uniform
    const unsigned long long seed = p > 0.0f ? seed_at[0] : 0ull;
    const size_t base = (size_t)row * C;
    float s = 0.0f;
    for (int i = threadIdx.x; i < C; i += blockDim.x) {
        const float b = branch[base + i];
        const bool keep = p <= 0.0f || dropout_uniform(seed, base + i) >= p;
        // __fmul_rn: no fused multiply-add with the add below, as in the unfused kernels
        const float r = x[base + i] + (keep ? (p <= 0.0f ? b : __fmul_rn(b, scale)) : 0.0f);
        row_res[i] = r;
        res[base + i] = r;
        s += r;
    }
    const float m = block_reduce_sum(s, scratch) / C;
    float v = 0.0f;
    for (int i = threadIdx.x; i < C; i += blockDim.x) {
        const float d = row_res[i] - m;
        v += d * d;
    }
    const float r = rsqrtf(block_reduce_sum(v, scratch) / C + LAYERNORM_EPS);
    float* o = ln + base;
    for (int i = threadIdx.x; i < C; i += blockDim.x) o[i] = (row_res[i] - m) * r * weight[i] + bias[i];
    if (threadIdx.x == 0) {
        mean[row] = m;
        rstd[row] = r;
    }
}
CUDAENC_REGISTER(residual_layernorm_forward)

// dinp (N,C) +=, dweight (C) +=, dbias (C) += <- dout, inp, weight, mean, rstd.
// Grid ceil(C/32)*S + N blocks (S = chunks). Blocks [0, ceil(C/32)*S): 32 columns x one
// chunk of rows each (block b: column block b % ceil(C/32), chunk b / ceil(C/32)); warp g
// sums the chunk's rows row0+g, row0+g+G, ... in order, then lane threads add the G
// partials in order: deterministic, no float atomics. They come first because they run
// longest. Blocks [ceil(C/32)*S, ..): one row of dinp each.
// chunks == 1: += into dweight/dbias (scratch unused, may be null); chunks > 1: partials
// (=) into scratch (chunks x 2C floats), layernorm_backward_reduce must follow.
// The body of layernorm_backward and residual_layernorm_backward: with dbranch null, the
// former; otherwise each dinp row block also writes dbranch = dropout'(the new dinp).
__device__ __forceinline__ void layernorm_backward_body(float* __restrict__ dinp, float* __restrict__ dbranch,
                                                        float* __restrict__ dweight, float* __restrict__ dbias,
                                                        float* __restrict__ scratch, const float* __restrict__ dout,
                                                        const float* __restrict__ inp, const float* __restrict__ weight,
                                                        const float* __restrict__ mean, const float* __restrict__ rstd,
                                                        const unsigned long long* __restrict__ seed_at, float p,
                                                        float scale, int N, int C, int chunks, int chunk_len) {
    __shared__ float scratch_s[32];
    __shared__ float part_w[32][32], part_b[32][32];
    const int lane = threadIdx.x % 32, g = threadIdx.x / 32, G = blockDim.x / 32;
    const int col_blocks = (C + 31) / 32;
    const int n_cols = col_blocks * chunks;
    if ((int)blockIdx.x >= n_cols) {  // block-uniform branch: row of dinp
        const int row = (int)blockIdx.x - n_cols;
        const float* x = inp + (size_t)row * C;
        const float* d = dout + (size_t)row * C;
        const float m = mean[row], s = rstd[row];
        const unsigned long long seed = dbranch && p > 0.0f ? seed_at[0] : 0ull;
        float a = 0.0f, b = 0.0f;
        for (int i = threadIdx.x; i < C; i += blockDim.x) {
            const float norm = (x[i] - m) * s;
            const float dnorm = d[i] * weight[i];
            a += dnorm;
            b += dnorm * norm;
        }
        a = block_reduce_sum(a, scratch_s) / C;
        b = block_reduce_sum(b, scratch_s) / C;
        float* di = dinp + (size_t)row * C;
        const size_t base = (size_t)row * C;
        for (int i = threadIdx.x; i < C; i += blockDim.x) {
            const float norm = (x[i] - m) * s;
            const float dnorm = d[i] * weight[i];
            const float g = di[i] + (dnorm - a - norm * b) * s;
            di[i] = g;
            if (dbranch) {  // dropout_backward of the new residual gradient, element base + i
                const bool keep = p <= 0.0f || dropout_uniform(seed, base + i) >= p;
                dbranch[base + i] = keep ? (p <= 0.0f ? g : g * scale) : 0.0f;
            }
        }
        return;
    }
    // columns of dweight / dbias over one chunk of rows
    const int chunk = (int)blockIdx.x / col_blocks;
    const int col = ((int)blockIdx.x % col_blocks) * 32 + lane;
    const int row0 = chunk * chunk_len;
    const int row1 = min(N, row0 + chunk_len);
    float sw = 0.0f, sb = 0.0f;
    if (col < C) {
        for (int r = row0 + g; r < row1; r += G) {
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
        if (chunks == 1) {
            dweight[col] += tw;
            dbias[col] += tb;
        } else {
            scratch[(size_t)chunk * 2 * C + col] = tw;
            scratch[(size_t)chunk * 2 * C + C + col] = tb;
        }
    }
}

extern "C" __global__ void layernorm_backward(float* __restrict__ dinp, float* __restrict__ dweight,
                                              float* __restrict__ dbias, float* __restrict__ scratch,
                                              const float* __restrict__ dout,
                                              const float* __restrict__ inp, const float* __restrict__ weight,
                                              const float* __restrict__ mean, const float* __restrict__ rstd,
                                              int N, int C, int chunks, int chunk_len) {
    layernorm_backward_body(dinp, nullptr, dweight, dbias, scratch, dout, inp, weight, mean, rstd, nullptr, 0.0f, 1.0f,
                            N, C, chunks, chunk_len);
}
CUDAENC_REGISTER(layernorm_backward)

// The backward of residual_layernorm_forward's dropout fused into layernorm_backward:
// layernorm_backward (dres (N,C) +=, dweight +=, dbias +=), and each row block then writes
// dbranch (N,C) = dropout_backward(the new dres), element row*C + i with
// dropout_backward's mask and scale (seed[0], p, scale). Grid, blocks, scratch and
// layernorm_backward_reduce exactly as layernorm_backward. dres is read and written once
// per element instead of written here and read again by dropout_backward.
extern "C" __global__ void residual_layernorm_backward(float* __restrict__ dres, float* __restrict__ dbranch,
                                                       float* __restrict__ dweight, float* __restrict__ dbias,
                                                       float* __restrict__ scratch, const float* __restrict__ dout,
                                                       const float* __restrict__ inp, const float* __restrict__ weight,
                                                       const float* __restrict__ mean, const float* __restrict__ rstd,
                                                       const unsigned long long* __restrict__ seed, float p,
                                                       float scale, int N, int C, int chunks, int chunk_len) {
    layernorm_backward_body(dres, dbranch, dweight, dbias, scratch, dout, inp, weight, mean, rstd, seed, p, scale,
                            N, C, chunks, chunk_len);
}
CUDAENC_REGISTER(residual_layernorm_backward)

// Second pass of the row-split dweight/dbias (chunks > 1): for e < 2C,
// (e < C ? dweight[e] : dbias[e-C]) += sum over s = 0..chunks-1, in that order, of
// scratch[s*2C + e]. Grid ceil(2C/256) x block 256.
extern "C" __global__ void layernorm_backward_reduce(float* __restrict__ dweight, float* __restrict__ dbias,
                                                     const float* __restrict__ scratch, int C, int chunks) {
    const int e = blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= 2 * C) return;
    float t = 0.0f;
    for (int s = 0; s < chunks; s++) t += scratch[(size_t)s * 2 * C + e];
    if (e < C) dweight[e] += t;
    else dbias[e - C] += t;
}
CUDAENC_REGISTER(layernorm_backward_reduce)
