// Bidirectional multi-head self-attention with a key padding mask; reference:
// src/reference/attention.rs, launcher: src/ops/attention.rs.
//
// qkv (B,T,3C): q, k, v are the column blocks [0,C), [C,2C), [2C,3C); head h uses columns
// h*HS .. (h+1)*HS of each. For review b with L = min(lens[b], T) and query i < L:
// p = softmax_{j<L}(q_i . k_j / sqrt(HS)) (max-subtracted), out_i = sum_j p_j v_j, and the
// probabilities are saved in att (B,NH,T,T) for the backward. Rows of padded queries
// (i >= L), their att rows, and att columns j >= L are exactly 0; L = 0 gives zeros.
//
// Layout of the work: one warp per query (forward, delta, dq) or per key (dk/dv), 8 warps
// a block, blocks over (tile, head, batch) = (blockIdx.x, blockIdx.y, blockIdx.z).
// Keys, values, queries and output gradients are staged through shared memory in chunks of
// 32 rows (row stride HS rounded up to odd: no bank conflicts when lanes walk rows).
// Every sum runs in a fixed order: results are bit-identical from run to run, and the
// backward uses no atomics (dk/dv are summed over queries by the warp that owns the key).
#include "cudaenc.cuh"

#define ATT_WARPS 8      // warps per block = queries (or keys) per block
#define ATT_CHUNK 32     // rows staged per chunk = one per lane
#define ATT_MAX_HS 128   // head size limit: per-lane accumulators cover HS <= 32 * ATT_R
#define ATT_R (ATT_MAX_HS / 32)

__device__ __forceinline__ int att_stride(int HS) { return HS | 1; }  // odd row stride

// Stage rows [j0, j0 + ATT_CHUNK) of one (HS)-wide column block of qkv for review b into
// dst[ATT_CHUNK][att_stride(HS)]; rows >= L become 0. Called by the whole block.
__device__ __forceinline__ void att_stage(float* dst, const float* base, int j0, int L, int HS, int C3) {
    const int S = att_stride(HS);
    for (int idx = threadIdx.x; idx < ATT_CHUNK * HS; idx += blockDim.x) {
        const int jj = idx / HS, d = idx - jj * HS, j = j0 + jj;
        dst[jj * S + d] = j < L ? base[(size_t)j * C3 + d] : 0.0f;
    }
}

// out (B,T,C), att (B,NH,T,T) <- qkv (B,T,3C), lens (B).
// Grid (ceil(T/8), NH, B), block 256, dynamic shared (8*HS + 32*stride + 8*T) floats.
extern "C" __global__ void attention_forward(float* __restrict__ out, float* __restrict__ att,
                                             const float* __restrict__ qkv, const unsigned* __restrict__ lens,
                                             int B, int T, int C, int NH) {
    CUDAENC_DYNAMIC_SHARED(float, smem);
    const int HS = C / NH, S = att_stride(HS), C3 = 3 * C;
    const int b = blockIdx.z, h = blockIdx.y;
    const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int i = blockIdx.x * ATT_WARPS + w;  // this warp's query
    const int L = min((int)lens[b], T);        // block-uniform
    float* sq = smem;                          // [8][HS]   this block's queries
    float* sk = sq + ATT_WARPS * HS;           // [32][S]   key chunk, then value chunk
    float* ss = sk + ATT_CHUNK * S;            // [8][T]    scores, then probabilities
    const float scale = 1.0f / sqrtf((float)HS);
    const float* qkv_b = qkv + (size_t)b * T * C3;
    const bool live = i < L;                   // warp-uniform

    for (int idx = threadIdx.x; idx < ATT_WARPS * HS; idx += blockDim.x) {
        const int r = idx / HS, d = idx - r * HS, qi = blockIdx.x * ATT_WARPS + r;
        sq[idx] = qi < L ? qkv_b[(size_t)qi * C3 + h * HS + d] : 0.0f;
    }
    // scores s_ij = q_i . k_j * scale, lane jj of warp w takes key j0 + jj
    for (int j0 = 0; j0 < L; j0 += ATT_CHUNK) {
        att_stage(sk, qkv_b + C + h * HS, j0, L, HS, C3);
        __syncthreads();
        const int j = j0 + lane;
        if (live && j < L) {
            const float* q = sq + w * HS;
            const float* k = sk + lane * S;
            float s = 0.0f;
            for (int d = 0; d < HS; d++) s += q[d] * k[d];
            ss[w * T + j] = s * scale;
        }
        __syncthreads();
    }
    // softmax over the valid keys; probabilities to ss and att (zeros elsewhere)
    if (i < T) {
        float* arow = att + (((size_t)b * NH + h) * T + i) * T;
        if (live) {
            float* srow = ss + w * T;
            float m = -INFINITY;
            for (int j = lane; j < L; j += 32) m = fmaxf(m, srow[j]);
            m = warp_reduce_max(m);
            float sum = 0.0f;
            for (int j = lane; j < L; j += 32) {
                const float e = expf(srow[j] - m);
                srow[j] = e;
                sum += e;
            }
            const float inv = 1.0f / warp_reduce_sum(sum);  // >= 1 term equal to 1: no 0/0
            for (int j = lane; j < L; j += 32) {
                const float p = srow[j] * inv;
                srow[j] = p;
                arow[j] = p;
            }
            for (int j = L + lane; j < T; j += 32) arow[j] = 0.0f;
        } else {
            for (int j = lane; j < T; j += 32) arow[j] = 0.0f;
        }
    }
    // out_i = sum_j p_ij v_j, lane owns columns d = lane + 32 r
    float acc[ATT_R];
    for (int r = 0; r < ATT_R; r++) acc[r] = 0.0f;
    for (int j0 = 0; j0 < L; j0 += ATT_CHUNK) {
        __syncthreads();  // the previous chunk (or the key chunk) is no longer read
        att_stage(sk, qkv_b + 2 * C + h * HS, j0, L, HS, C3);
        __syncthreads();
        if (live) {
            const int n = min(ATT_CHUNK, L - j0);
            const float* p = ss + w * T + j0;
            for (int r = 0; r < ATT_R; r++) {
                const int d = lane + 32 * r;
                if (d < HS) {
                    float a = acc[r];
                    for (int jj = 0; jj < n; jj++) a += p[jj] * sk[jj * S + d];
                    acc[r] = a;
                }
            }
        }
    }
    if (i < T) {
        float* o = out + ((size_t)b * T + i) * C + h * HS;
        for (int r = 0; r < ATT_R; r++) {
            const int d = lane + 32 * r;
            if (d < HS) o[d] = acc[r];  // 0 for padded queries
        }
    }
}
CUDAENC_REGISTER(attention_forward)

// Backward, three launches in this order (src/ops/attention.rs):
//   1. attention_backward_delta: D_i = sum_j p_ij dp_ij = dout_i . (sum_j p_ij v_j) for each
//      valid query, parked in dqkv at the first dq element of (b, i, h);
//   2. attention_backward_dkv: per key j (one warp), in query order:
//      dv_j = sum_i p_ij dout_i, dk_j = sum_i ds_ij q_i, ds_ij = p_ij (dp_ij - D_i) scale;
//      reads D from the dq slots, writes only the k and v blocks of dqkv;
//   3. attention_backward_dq: per query i (one warp): dq_i = sum_j ds_ij k_j; reads its own
//      D_i, then overwrites the whole dq block of its row.
// dqkv is overwritten everywhere (padded rows get 0), as in the reference.

// Grid (ceil(T/8), NH, B), block 256, no shared memory.
extern "C" __global__ void attention_backward_delta(float* __restrict__ dqkv, const float* __restrict__ dout,
                                                    const float* __restrict__ qkv, const float* __restrict__ att,
                                                    const unsigned* __restrict__ lens, int B, int T, int C, int NH) {
    const int HS = C / NH, C3 = 3 * C;
    const int b = blockIdx.z, h = blockIdx.y;
    const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int i = blockIdx.x * ATT_WARPS + w;
    const int L = min((int)lens[b], T);
    if (i >= L) return;  // warp-uniform; no barriers in this kernel
    const float* prow = att + (((size_t)b * NH + h) * T + i) * T;
    const float* v = qkv + (size_t)b * T * C3 + 2 * C + h * HS;
    const float* g = dout + ((size_t)b * T + i) * C + h * HS;
    float part = 0.0f;
    for (int r = 0; r < ATT_R; r++) {
        const int d = lane + 32 * r;
        if (d < HS) {
            float u = 0.0f;
            for (int j = 0; j < L; j++) u += prow[j] * v[(size_t)j * C3 + d];
            part += g[d] * u;
        }
    }
    const float D = warp_reduce_sum(part);
    if (lane == 0) dqkv[((size_t)b * T + i) * C3 + h * HS] = D;
}
CUDAENC_REGISTER(attention_backward_delta)

// Grid (ceil(T/8), NH, B), block 256, dynamic shared (2*32*stride + 32 + 8*HS + 2*8*32) floats.
extern "C" __global__ void attention_backward_dkv(float* __restrict__ dqkv, const float* __restrict__ dout,
                                                  const float* __restrict__ qkv, const float* __restrict__ att,
                                                  const unsigned* __restrict__ lens, int B, int T, int C, int NH) {
    CUDAENC_DYNAMIC_SHARED(float, smem);
    const int HS = C / NH, S = att_stride(HS), C3 = 3 * C;
    const int b = blockIdx.z, h = blockIdx.y;
    const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int j = blockIdx.x * ATT_WARPS + w;  // this warp's key
    const int L = min((int)lens[b], T);
    float* sq = smem;                          // [32][S]  query chunk
    float* sg = sq + ATT_CHUNK * S;            // [32][S]  dout chunk
    float* sD = sg + ATT_CHUNK * S;            // [32]     D of the chunk's queries
    float* sv = sD + ATT_CHUNK;                // [8][HS]  this block's values
    float* sp = sv + ATT_WARPS * HS;           // [8][32]  p_ij of warp w's key
    float* sds = sp + ATT_WARPS * ATT_CHUNK;   // [8][32]  ds_ij of warp w's key
    const float scale = 1.0f / sqrtf((float)HS);
    const float* qkv_b = qkv + (size_t)b * T * C3;
    const float* att_bh = att + ((size_t)b * NH + h) * T * T;
    const bool live = j < L;

    for (int idx = threadIdx.x; idx < ATT_WARPS * HS; idx += blockDim.x) {
        const int r = idx / HS, d = idx - r * HS, kj = blockIdx.x * ATT_WARPS + r;
        sv[idx] = kj < L ? qkv_b[(size_t)kj * C3 + 2 * C + h * HS + d] : 0.0f;
    }
    float dk[ATT_R], dv[ATT_R];
    for (int r = 0; r < ATT_R; r++) dk[r] = dv[r] = 0.0f;
    for (int i0 = 0; i0 < L; i0 += ATT_CHUNK) {
        att_stage(sq, qkv_b + h * HS, i0, L, HS, C3);
        for (int idx = threadIdx.x; idx < ATT_CHUNK * HS; idx += blockDim.x) {
            const int ii = idx / HS, d = idx - ii * HS, qi = i0 + ii;
            sg[ii * S + d] = qi < L ? dout[((size_t)b * T + qi) * C + h * HS + d] : 0.0f;
        }
        if (threadIdx.x < ATT_CHUNK) {
            const int qi = i0 + threadIdx.x;
            sD[threadIdx.x] = qi < L ? dqkv[((size_t)b * T + qi) * C3 + h * HS] : 0.0f;
        }
        __syncthreads();
        const int n = min(ATT_CHUNK, L - i0);
        if (live) {
            // lane ii: query i0 + ii
            float p = 0.0f, ds = 0.0f;
            if (lane < n) {
                p = att_bh[(size_t)(i0 + lane) * T + j];
                const float* g = sg + lane * S;
                const float* v = sv + w * HS;
                float dp = 0.0f;
                for (int d = 0; d < HS; d++) dp += g[d] * v[d];
                ds = p * (dp - sD[lane]) * scale;
            }
            sp[w * ATT_CHUNK + lane] = p;
            sds[w * ATT_CHUNK + lane] = ds;
            __syncwarp(CUDAENC_FULL_MASK);  // all 32 lanes: the branch is warp-uniform
            // lane owns columns d = lane + 32 r; queries in order
            for (int r = 0; r < ATT_R; r++) {
                const int d = lane + 32 * r;
                if (d < HS) {
                    float a = dk[r], c = dv[r];
                    for (int ii = 0; ii < n; ii++) {
                        a += sds[w * ATT_CHUNK + ii] * sq[ii * S + d];
                        c += sp[w * ATT_CHUNK + ii] * sg[ii * S + d];
                    }
                    dk[r] = a;
                    dv[r] = c;
                }
            }
        }
        __syncthreads();  // the chunk is read; the next one may overwrite it
    }
    if (j < T) {
        float* row = dqkv + ((size_t)b * T + j) * C3 + h * HS;
        for (int r = 0; r < ATT_R; r++) {
            const int d = lane + 32 * r;
            if (d < HS) {
                row[C + d] = dk[r];  // 0 for padded keys
                row[2 * C + d] = dv[r];
            }
        }
    }
}
CUDAENC_REGISTER(attention_backward_dkv)

// Grid (ceil(T/8), NH, B), block 256, dynamic shared (2*32*stride + 8*HS + 8*32) floats.
extern "C" __global__ void attention_backward_dq(float* __restrict__ dqkv, const float* __restrict__ dout,
                                                 const float* __restrict__ qkv, const float* __restrict__ att,
                                                 const unsigned* __restrict__ lens, int B, int T, int C, int NH) {
    CUDAENC_DYNAMIC_SHARED(float, smem);
    const int HS = C / NH, S = att_stride(HS), C3 = 3 * C;
    const int b = blockIdx.z, h = blockIdx.y;
    const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int i = blockIdx.x * ATT_WARPS + w;  // this warp's query
    const int L = min((int)lens[b], T);
    float* sk = smem;                          // [32][S]  key chunk
    float* sv = sk + ATT_CHUNK * S;            // [32][S]  value chunk
    float* sg = sv + ATT_CHUNK * S;            // [8][HS]  this block's dout rows
    float* sds = sg + ATT_WARPS * HS;          // [8][32]  ds_ij of warp w's query
    const float scale = 1.0f / sqrtf((float)HS);
    const float* qkv_b = qkv + (size_t)b * T * C3;
    const bool live = i < L;
    // D_i, parked here by attention_backward_delta; read before this warp overwrites it
    const float D = live ? dqkv[((size_t)b * T + i) * C3 + h * HS] : 0.0f;
    const float* prow = att + (((size_t)b * NH + h) * T + (live ? i : 0)) * T;

    for (int idx = threadIdx.x; idx < ATT_WARPS * HS; idx += blockDim.x) {
        const int r = idx / HS, d = idx - r * HS, qi = blockIdx.x * ATT_WARPS + r;
        sg[idx] = qi < L ? dout[((size_t)b * T + qi) * C + h * HS + d] : 0.0f;
    }
    float dq[ATT_R];
    for (int r = 0; r < ATT_R; r++) dq[r] = 0.0f;
    for (int j0 = 0; j0 < L; j0 += ATT_CHUNK) {
        att_stage(sk, qkv_b + C + h * HS, j0, L, HS, C3);
        att_stage(sv, qkv_b + 2 * C + h * HS, j0, L, HS, C3);
        __syncthreads();
        const int n = min(ATT_CHUNK, L - j0);
        if (live) {
            float ds = 0.0f;
            if (lane < n) {  // lane jj: key j0 + jj
                const float* g = sg + w * HS;
                const float* v = sv + lane * S;
                float dp = 0.0f;
                for (int d = 0; d < HS; d++) dp += g[d] * v[d];
                ds = prow[j0 + lane] * (dp - D) * scale;
            }
            sds[w * ATT_CHUNK + lane] = ds;
            __syncwarp(CUDAENC_FULL_MASK);  // all 32 lanes: the branch is warp-uniform
            for (int r = 0; r < ATT_R; r++) {
                const int d = lane + 32 * r;
                if (d < HS) {
                    float a = dq[r];
                    for (int jj = 0; jj < n; jj++) a += sds[w * ATT_CHUNK + jj] * sk[jj * S + d];
                    dq[r] = a;
                }
            }
        }
        __syncthreads();
    }
    if (i < T) {
        float* row = dqkv + ((size_t)b * T + i) * C3 + h * HS;
        for (int r = 0; r < ATT_R; r++) {
            const int d = lane + 32 * r;
            if (d < HS) row[d] = dq[r];  // 0 for padded queries
        }
    }
}
CUDAENC_REGISTER(attention_backward_dq)
