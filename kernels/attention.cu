// Bidirectional multi-head self-attention with a key padding mask, fused (flash-attention
// style, fp32): reference src/reference/attention.rs, launcher src/ops/attention.rs.
//
// qkv (B,T,3C): q, k, v are the column blocks [0,C), [C,2C), [2C,3C); head h uses columns
// h*HS .. (h+1)*HS of each. For review b with L = min(lens[b], T) and query i < L:
// s_ij = q_i . k_j / sqrt(HS) over the valid keys j < L, p = softmax_j(s_ij),
// out_i = sum_j p_ij v_j, and the log-sum-exp lse_i = log sum_j exp(s_ij) is saved
// (B,NH,T) for the backward, which recomputes p_ij = exp(s_ij - lse_i). No (T,T) matrix
// exists anywhere. Rows of padded queries (i >= L) are exactly 0 in out and dqkv, their
// lse is 0; keys j >= L are masked out; L = 0 gives zeros.
//
// Layout of the work: one warp per query (forward, dq) or per key (dk/dv), 8 warps a
// block, blocks over (tile, head, batch) = (blockIdx.x, blockIdx.y, blockIdx.z). The
// other side (keys and values, or queries and output gradients) is staged through shared
// memory in chunks of 32 rows, one per lane (row stride HS rounded up to odd: no bank
// conflicts when lanes walk rows). The forward keeps a running max m and sum l per query
// and rescales its accumulator when m grows (online softmax).
// Every sum runs in a fixed order: results are bit-identical from run to run, and the
// backward uses no atomics (dk/dv are summed over queries by the warp that owns the key,
// dq over keys by the warp that owns the query).
#include "cudaenc.cuh"

#define ATT_WARPS 8      // warps per block = queries (or keys) per block
#define ATT_CHUNK 32     // rows staged per chunk = one per lane
#define ATT_MAX_HS 128   // head size limit: per-lane accumulators cover HS <= 32 * ATT_R
#define ATT_R (ATT_MAX_HS / 32)

__device__ __forceinline__ int att_stride(int HS) { return HS | 1; }  // odd row stride

// Stage rows [j0, j0 + ATT_CHUNK) of an HS-wide column block `base` (row stride `ld`) of
// review b into dst[ATT_CHUNK][att_stride(HS)]; rows >= L become 0. Whole block calls it.
__device__ __forceinline__ void att_stage(float* dst, const float* base, int j0, int L, int HS, int ld) {
    const int S = att_stride(HS);
    for (int idx = threadIdx.x; idx < ATT_CHUNK * HS; idx += blockDim.x) {
        const int jj = idx / HS, d = idx - jj * HS, j = j0 + jj;
        dst[jj * S + d] = j < L ? base[(size_t)j * ld + d] : 0.0f;
    }
}

// Stage this block's ATT_WARPS rows (from row0) of `base` into dst[ATT_WARPS][HS]; rows
// >= L become 0. Whole block calls it.
__device__ __forceinline__ void att_stage_own(float* dst, const float* base, int row0, int L, int HS, int ld) {
    for (int idx = threadIdx.x; idx < ATT_WARPS * HS; idx += blockDim.x) {
        const int r = idx / HS, d = idx - r * HS, row = row0 + r;
        dst[idx] = row < L ? base[(size_t)row * ld + d] : 0.0f;
    }
}

// a . b over HS elements, one lane alone (rows in shared memory).
__device__ __forceinline__ float att_dot(const float* a, const float* b, int HS) {
    float s = 0.0f;
    for (int d = 0; d < HS; d++) s += a[d] * b[d];
    return s;
}

// out (B,T,C), lse (B,NH,T) <- qkv (B,T,3C), lens (B).
// Grid (ceil(T/8), NH, B), block 256, dynamic shared (8*HS + 2*32*stride + 8*32) floats.
extern "C" __global__ void attention_forward(float* __restrict__ out, float* __restrict__ lse,
                                             const float* __restrict__ qkv, const unsigned* __restrict__ lens,
                                             int B, int T, int C, int NH) {
    CUDAENC_DYNAMIC_SHARED(float, smem);
    const int HS = C / NH, S = att_stride(HS), C3 = 3 * C;
    const int b = blockIdx.z, h = blockIdx.y;
    const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int i = blockIdx.x * ATT_WARPS + w;  // this warp's query
    const int L = min((int)lens[b], T);        // block-uniform
    float* sq = smem;                          // [8][HS]  this block's queries
    float* sk = sq + ATT_WARPS * HS;           // [32][S]  key chunk
    float* sv = sk + ATT_CHUNK * S;            // [32][S]  value chunk
    float* sp = sv + ATT_CHUNK * S;            // [8][32]  p of warp w's query over the chunk
    const float scale = 1.0f / sqrtf((float)HS);
    const float* qkv_b = qkv + (size_t)b * T * C3;
    const bool live = i < L;                   // warp-uniform

    att_stage_own(sq, qkv_b + h * HS, blockIdx.x * ATT_WARPS, L, HS, C3);
    float m = -INFINITY, l = 0.0f;             // running max and sum of exp(s - m)
    float acc[ATT_R];                          // sum_j exp(s_ij - m) v_j, lane owns d = lane + 32 r
    for (int r = 0; r < ATT_R; r++) acc[r] = 0.0f;
    for (int j0 = 0; j0 < L; j0 += ATT_CHUNK) {
        att_stage(sk, qkv_b + C + h * HS, j0, L, HS, C3);
        att_stage(sv, qkv_b + 2 * C + h * HS, j0, L, HS, C3);
        __syncthreads();
        if (live) {
            const int n = min(ATT_CHUNK, L - j0);  // lane jj takes key j0 + jj
            const float s = lane < n ? att_dot(sq + w * HS, sk + lane * S, HS) * scale : -INFINITY;
            const float m_new = fmaxf(m, warp_reduce_max(s));  // finite: the chunk has a valid key
            const float corr = expf(m - m_new);                // 0 on the first chunk
            const float p = lane < n ? expf(s - m_new) : 0.0f;
            l = l * corr + warp_reduce_sum(p);
            m = m_new;
            sp[w * ATT_CHUNK + lane] = p;
            __syncwarp(CUDAENC_FULL_MASK);  // all 32 lanes: the branch is warp-uniform
            for (int r = 0; r < ATT_R; r++) {
                const int d = lane + 32 * r;
                if (d < HS) {
                    float a = acc[r] * corr;
                    for (int jj = 0; jj < n; jj++) a += sp[w * ATT_CHUNK + jj] * sv[jj * S + d];
                    acc[r] = a;
                }
            }
        }
        __syncthreads();  // the chunk is read; the next one may overwrite it
    }
    if (i < T) {
        const float inv = live ? 1.0f / l : 0.0f;  // l >= 1 (the max term is exp(0))
        float* o = out + ((size_t)b * T + i) * C + h * HS;
        for (int r = 0; r < ATT_R; r++) {
            const int d = lane + 32 * r;
            if (d < HS) o[d] = acc[r] * inv;  // 0 for padded queries
        }
        if (lane == 0) lse[((size_t)b * NH + h) * T + i] = live ? m + logf(l) : 0.0f;
    }
}
CUDAENC_REGISTER(attention_forward)

// Backward, three launches in this order (src/ops/attention.rs):
//   1. attention_backward_delta: D_i = dout_i . out_i (= sum_j p_ij dp_ij) for each valid
//      query, parked in dqkv at the first dq element of (b, i, h);
//   2. attention_backward_dkv: one pass over query chunks per key j (one warp), in query
//      order: dv_j = sum_i p_ij dout_i, dk_j = sum_i ds_ij q_i, with dp_ij = dout_i . v_j,
//      ds_ij = p_ij (dp_ij - D_i) scale; reads D from the dq slots, writes only the k and
//      v blocks of dqkv;
//   3. attention_backward_dq: one pass over key chunks per query i (one warp):
//      dq_i = sum_j ds_ij k_j; reads its own D_i, then overwrites the whole dq block of
//      its row.
// p_ij = exp(s_ij - lse_i) is recomputed in 2 and 3. dqkv is overwritten everywhere
// (padded rows get 0), as in the reference.

// Grid (ceil(T/8), NH, B), block 256, no shared memory.
// mode 0: dout as it is (the f32 backward); 1 / 2: dout rounded to tf32 / bf16 as the
// tensor-core backward stages it, so D is taken over the same dout as its dP.
extern "C" __global__ void attention_backward_delta(float* __restrict__ dqkv, const float* __restrict__ dout,
                                                    const float* __restrict__ out, const unsigned* __restrict__ lens,
                                                    int B, int T, int C, int NH, int mode) {
    const int HS = C / NH, C3 = 3 * C;
    const int b = blockIdx.z, h = blockIdx.y;
    const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int i = blockIdx.x * ATT_WARPS + w;
    const int L = min((int)lens[b], T);
    if (i >= L) return;  // warp-uniform; no barriers in this kernel
    const float* g = dout + ((size_t)b * T + i) * C + h * HS;
    const float* o = out + ((size_t)b * T + i) * C + h * HS;
    float part = 0.0f;
    for (int d = lane; d < HS; d += 32) {
        const float gd = mode == 1 ? round_tf32(g[d]) : mode == 2 ? round_bf16(g[d]) : g[d];
        part += gd * o[d];
    }
    const float D = warp_reduce_sum(part);
    if (lane == 0) dqkv[((size_t)b * T + i) * C3 + h * HS] = D;
}
CUDAENC_REGISTER(attention_backward_delta)

// Grid (ceil(T/8), NH, B), block 256,
// dynamic shared (2*32*stride + 2*32 + 2*8*HS + 2*8*32) floats.
extern "C" __global__ void attention_backward_dkv(float* __restrict__ dqkv, const float* __restrict__ dout,
                                                  const float* __restrict__ qkv, const float* __restrict__ lse,
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
    float* sL = sD + ATT_CHUNK;                // [32]     lse of the chunk's queries
    float* sk = sL + ATT_CHUNK;                // [8][HS]  this block's keys
    float* sv = sk + ATT_WARPS * HS;           // [8][HS]  this block's values
    float* sp = sv + ATT_WARPS * HS;           // [8][32]  p_ij of warp w's key
    float* sds = sp + ATT_WARPS * ATT_CHUNK;   // [8][32]  ds_ij of warp w's key
    const float scale = 1.0f / sqrtf((float)HS);
    const float* qkv_b = qkv + (size_t)b * T * C3;
    const float* lse_bh = lse + ((size_t)b * NH + h) * T;
    const bool live = j < L;

    att_stage_own(sk, qkv_b + C + h * HS, blockIdx.x * ATT_WARPS, L, HS, C3);
    att_stage_own(sv, qkv_b + 2 * C + h * HS, blockIdx.x * ATT_WARPS, L, HS, C3);
    float dk[ATT_R], dv[ATT_R];
    for (int r = 0; r < ATT_R; r++) dk[r] = dv[r] = 0.0f;
    for (int i0 = 0; i0 < L; i0 += ATT_CHUNK) {
        att_stage(sq, qkv_b + h * HS, i0, L, HS, C3);
        att_stage(sg, dout + (size_t)b * T * C + h * HS, i0, L, HS, C);
        if (threadIdx.x < ATT_CHUNK) {
            const int qi = i0 + threadIdx.x;
            sD[threadIdx.x] = qi < L ? dqkv[((size_t)b * T + qi) * C3 + h * HS] : 0.0f;
            sL[threadIdx.x] = qi < L ? lse_bh[qi] : 0.0f;
        }
        __syncthreads();
        const int n = min(ATT_CHUNK, L - i0);
        if (live) {
            // lane ii: query i0 + ii
            float p = 0.0f, ds = 0.0f;
            if (lane < n) {
                const float s = att_dot(sq + lane * S, sk + w * HS, HS) * scale;
                p = expf(s - sL[lane]);
                const float dp = att_dot(sg + lane * S, sv + w * HS, HS);
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

// Grid (ceil(T/8), NH, B), block 256, dynamic shared (2*32*stride + 2*8*HS + 8*32) floats.
extern "C" __global__ void attention_backward_dq(float* __restrict__ dqkv, const float* __restrict__ dout,
                                                 const float* __restrict__ qkv, const float* __restrict__ lse,
                                                 const unsigned* __restrict__ lens, int B, int T, int C, int NH) {
    CUDAENC_DYNAMIC_SHARED(float, smem);
    const int HS = C / NH, S = att_stride(HS), C3 = 3 * C;
    const int b = blockIdx.z, h = blockIdx.y;
    const int w = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int i = blockIdx.x * ATT_WARPS + w;  // this warp's query
    const int L = min((int)lens[b], T);
    float* sk = smem;                          // [32][S]  key chunk
    float* sv = sk + ATT_CHUNK * S;            // [32][S]  value chunk
    float* sq = sv + ATT_CHUNK * S;            // [8][HS]  this block's queries
    float* sg = sq + ATT_WARPS * HS;           // [8][HS]  this block's dout rows
    float* sds = sg + ATT_WARPS * HS;          // [8][32]  ds_ij of warp w's query
    const float scale = 1.0f / sqrtf((float)HS);
    const float* qkv_b = qkv + (size_t)b * T * C3;
    const bool live = i < L;
    // D_i, parked here by attention_backward_delta; read before this warp overwrites it
    const float D = live ? dqkv[((size_t)b * T + i) * C3 + h * HS] : 0.0f;
    const float lse_i = live ? lse[((size_t)b * NH + h) * T + i] : 0.0f;

    att_stage_own(sq, qkv_b + h * HS, blockIdx.x * ATT_WARPS, L, HS, C3);
    att_stage_own(sg, dout + (size_t)b * T * C + h * HS, blockIdx.x * ATT_WARPS, L, HS, C);
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
                const float s = att_dot(sq + w * HS, sk + lane * S, HS) * scale;
                const float p = expf(s - lse_i);
                const float dp = att_dot(sg + w * HS, sv + lane * S, HS);
                ds = p * (dp - D) * scale;
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

// ---- tensor cores: the forward for --precision tf32 | bf16 ---------------------------
// The same attention as attention_forward, with S = Q K^T and O = P V on the tensor cores
// (mma.sync m16n8k8 tf32 or m16n8k16 bf16, f32 accumulators), flash-attention style:
// one warp owns 16 queries, 4 warps a block (64 queries), keys and values staged in
// chunks of 32 rows. q, k, v are rounded to the precision as they are staged (zero past
// the head size, which is padded to the mma's k, and past L); p is rounded as it becomes
// the A operand of P V, while the row sums l are taken over the unrounded p in f32 (as
// flash attention does). Online softmax per query row: running max m and sum l, the
// accumulator rescaled by exp(m_old - m_new). Row max and sum over the 4 lanes that share
// a row go through two xor shuffles: commutative, so every lane holds the same bits.
// Fixed orders throughout: bit-identical reruns. P goes to the A fragment layout through
// a per-warp shared tile (the C and A layouts differ for tf32).
// Grid (ceil(T/64), NH, B), block 128, dynamic shared (64*SP + 2*32*SP + 4*16*33) floats
// with SP = HP + 1, HP = HS rounded up to 8 (tf32) or 16 (bf16).
#define ATT_TC_WARPS 4
#define ATT_TC_KC 32   // keys per staged chunk
#define ATT_TC_PS 33   // row stride of the per-warp P tile

template <bool BF16>
__device__ __forceinline__ float att_tc_round(float x) {
    return BF16 ? round_bf16(x) : round_tf32(x);
}

// A fragment (16 rows x the mma's k, from column k0) of a row-major tile `a` (stride ld),
// rows 0..15 of the warp's tile; operands already rounded.
template <bool BF16>
__device__ __forceinline__ void att_tc_a(unsigned a[4], const float* t, int ld, int k0, int g, int t4) {
    if (BF16) {
        for (int r = 0; r < 4; r++) {
            const int row = g + 8 * (r % 2), col = k0 + 2 * t4 + 8 * (r / 2);
            a[r] = pack_bf16x2(t[row * ld + col], t[row * ld + col + 1]);
        }
    } else {
        a[0] = __float_as_uint(t[g * ld + k0 + t4]);
        a[1] = __float_as_uint(t[(g + 8) * ld + k0 + t4]);
        a[2] = __float_as_uint(t[g * ld + k0 + t4 + 4]);
        a[3] = __float_as_uint(t[(g + 8) * ld + k0 + t4 + 4]);
    }
}

// B fragment (the mma's k x 8): element (k, n) = t[(k0 + k) * kstride + (n0 + n) * nstride].
template <bool BF16>
__device__ __forceinline__ void att_tc_b(unsigned b[2], const float* t, int kstride, int nstride, int k0, int n0, int g, int t4) {
    const float* col = t + (n0 + g) * nstride;
    if (BF16) {
        for (int r = 0; r < 2; r++) {
            const int k = k0 + 2 * t4 + 8 * r;
            b[r] = pack_bf16x2(col[k * kstride], col[(k + 1) * kstride]);
        }
    } else {
        b[0] = __float_as_uint(col[(k0 + t4) * kstride]);
        b[1] = __float_as_uint(col[(k0 + t4 + 4) * kstride]);
    }
}

template <bool BF16>
__device__ __forceinline__ void att_tc_mma(float d[4], const unsigned a[4], const unsigned b[2]) {
    if (BF16) mma_m16n8k16_bf16(d, a, b);
    else mma_m16n8k8_tf32(d, a, b);
}

template <bool BF16>
__device__ __forceinline__ void attention_forward_tc(float* __restrict__ out, float* __restrict__ lse,
                                                     const float* __restrict__ qkv, const unsigned* __restrict__ lens,
                                                     int B, int T, int C, int NH) {
    CUDAENC_DYNAMIC_SHARED(float, smem);
    constexpr int KS = BF16 ? 16 : 8;  // the mma's k
    const int HS = C / NH, HP = (HS + KS - 1) / KS * KS, SP = HP + 1, C3 = 3 * C;
    const int b = blockIdx.z, h = blockIdx.y;
    const int w = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, t4 = lane & 3;
    const int q0 = blockIdx.x * (ATT_TC_WARPS * 16);  // the block's first query
    const int L = min((int)lens[b], T);               // block-uniform
    float* sq = smem;                                  // [64][SP] the block's queries
    float* sk = sq + ATT_TC_WARPS * 16 * SP;           // [32][SP] key chunk
    float* sv = sk + ATT_TC_KC * SP;                   // [32][SP] value chunk
    float* sp = sv + ATT_TC_KC * SP;                   // [4][16][ATT_TC_PS] each warp's p
    const float scale = 1.0f / sqrtf((float)HS);
    const float* qkv_b = qkv + (size_t)b * T * C3;
    for (int idx = threadIdx.x; idx < ATT_TC_WARPS * 16 * HP; idx += blockDim.x) {
        const int r = idx / HP, d = idx - r * HP, i = q0 + r;
        sq[r * SP + d] = i < L && d < HS ? att_tc_round<BF16>(qkv_b[(size_t)i * C3 + h * HS + d]) : 0.0f;
    }
    const float* qw = sq + w * 16 * SP;
    float* pw = sp + w * 16 * ATT_TC_PS;
    const int NT = HP / 8;                              // 8-column tiles of the output
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};  // rows g and g + 8
    float acc[ATT_MAX_HS / 8][4];
#pragma unroll
    for (int dt = 0; dt < ATT_MAX_HS / 8; dt++)
        for (int e = 0; e < 4; e++) acc[dt][e] = 0.0f;
    for (int j0 = 0; j0 < L; j0 += ATT_TC_KC) {
        for (int idx = threadIdx.x; idx < ATT_TC_KC * HP; idx += blockDim.x) {
            const int jj = idx / HP, d = idx - jj * HP, j = j0 + jj;
            const bool in = j < L && d < HS;
            sk[jj * SP + d] = in ? att_tc_round<BF16>(qkv_b[(size_t)j * C3 + C + h * HS + d]) : 0.0f;
            sv[jj * SP + d] = in ? att_tc_round<BF16>(qkv_b[(size_t)j * C3 + 2 * C + h * HS + d]) : 0.0f;
        }
        __syncthreads();  // (also: the queries are staged)
        // S (16 x 32) = Q K^T: four 8-key tiles; lane holds rows g, g+8, keys 2t4, 2t4+1
        float s[4][4];
#pragma unroll
        for (int nt = 0; nt < 4; nt++) {
            for (int e = 0; e < 4; e++) s[nt][e] = 0.0f;
            for (int k0 = 0; k0 < HP; k0 += KS) {
                unsigned a[4], bb[2];
                att_tc_a<BF16>(a, qw, SP, k0, g, t4);
                att_tc_b<BF16>(bb, sk, 1, SP, k0, nt * 8, g, t4);  // (k = d, n = key) = sk[key][d]
                att_tc_mma<BF16>(s[nt], a, bb);
            }
        }
        float rmax[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int nt = 0; nt < 4; nt++)
            for (int e = 0; e < 4; e++) {
                const int j = j0 + nt * 8 + 2 * t4 + (e & 1);
                const float v = j < L ? s[nt][e] * scale : -INFINITY;
                s[nt][e] = v;
                rmax[e >> 1] = fmaxf(rmax[e >> 1], v);
            }
        float corr[2], rsum[2] = {0.0f, 0.0f};
        for (int r = 0; r < 2; r++) {
            rmax[r] = fmaxf(rmax[r], __shfl_xor_sync(CUDAENC_FULL_MASK, rmax[r], 1));
            rmax[r] = fmaxf(rmax[r], __shfl_xor_sync(CUDAENC_FULL_MASK, rmax[r], 2));
            const float m_new = fmaxf(m[r], rmax[r]);  // finite: key j0 is valid
            corr[r] = expf(m[r] - m_new);                // 0 on the first chunk
            m[r] = m_new;
        }
#pragma unroll
        for (int nt = 0; nt < 4; nt++)
            for (int e = 0; e < 4; e++) {
                s[nt][e] = expf(s[nt][e] - m[e >> 1]);  // p; 0 for masked keys
                rsum[e >> 1] += s[nt][e];
            }
        for (int r = 0; r < 2; r++) {
            rsum[r] += __shfl_xor_sync(CUDAENC_FULL_MASK, rsum[r], 1);
            rsum[r] += __shfl_xor_sync(CUDAENC_FULL_MASK, rsum[r], 2);
            l[r] = l[r] * corr[r] + rsum[r];
        }
        // the p tile, after the shuffles: only the __syncwarp below orders it before the reads
#pragma unroll
        for (int nt = 0; nt < 4; nt++)
            for (int e = 0; e < 4; e++)
                pw[(g + 8 * (e >> 1)) * ATT_TC_PS + nt * 8 + 2 * t4 + (e & 1)] = att_tc_round<BF16>(s[nt][e]);
#pragma unroll
        for (int dt = 0; dt < ATT_MAX_HS / 8; dt++)
            if (dt < NT)
                for (int e = 0; e < 4; e++) acc[dt][e] *= corr[e >> 1];
        __syncwarp(CUDAENC_FULL_MASK);  // the warp's p tile is written
        // O (16 x HP) += P (16 x 32) V (32 x HP)
        for (int k0 = 0; k0 < ATT_TC_KC; k0 += KS) {
            unsigned a[4];
            att_tc_a<BF16>(a, pw, ATT_TC_PS, k0, g, t4);
#pragma unroll
            for (int dt = 0; dt < ATT_MAX_HS / 8; dt++)
                if (dt < NT) {
                    unsigned bb[2];
                    att_tc_b<BF16>(bb, sv, SP, 1, k0, dt * 8, g, t4);  // (k = key, n = d) = sv[key][d]
                    att_tc_mma<BF16>(acc[dt], a, bb);
                }
        }
        __syncthreads();  // the chunk and the p tiles are read; the next chunk overwrites them
    }
    for (int r = 0; r < 2; r++) {
        const int i = q0 + w * 16 + g + 8 * r;
        if (i >= T) continue;
        const bool live = i < L;
        const float inv = live ? 1.0f / l[r] : 0.0f;  // l >= 1 (the max term is exp(0))
        float* o = out + ((size_t)b * T + i) * C + h * HS;
#pragma unroll
        for (int dt = 0; dt < ATT_MAX_HS / 8; dt++)
            for (int e = 0; e < 2; e++) {
                const int d = dt * 8 + 2 * t4 + e;
                if (dt < NT && d < HS) o[d] = acc[dt][2 * r + e] * inv;  // 0 for padded queries
            }
        if (t4 == 0) lse[((size_t)b * NH + h) * T + i] = live ? m[r] + logf(l[r]) : 0.0f;
    }
}

// out (B,T,C), lse (B,NH,T) <- qkv (B,T,3C), lens (B): TF32 inputs (see above).
extern "C" __global__ void attention_forward_tf32(float* __restrict__ out, float* __restrict__ lse,
                                                  const float* __restrict__ qkv, const unsigned* __restrict__ lens,
                                                  int B, int T, int C, int NH) {
    attention_forward_tc<false>(out, lse, qkv, lens, B, T, C, NH);
}
CUDAENC_REGISTER(attention_forward_tf32)

// out (B,T,C), lse (B,NH,T) <- qkv (B,T,3C), lens (B): bf16 inputs (see above).
extern "C" __global__ void attention_forward_bf16(float* __restrict__ out, float* __restrict__ lse,
                                                  const float* __restrict__ qkv, const unsigned* __restrict__ lens,
                                                  int B, int T, int C, int NH) {
    attention_forward_tc<true>(out, lse, qkv, lens, B, T, C, NH);
}
CUDAENC_REGISTER(attention_forward_bf16)

// ---- tensor cores: the backward ------------------------------------------------------
// The backward of attention_forward_tc on the tensor cores, after attention_backward_delta
// (D_i = dout_i . out_i in f32, parked in the dq slot of row i): two kernels like the f32
// ones, one pass each in a fixed order, no atomics.
//   attention_backward_dkv_tc: a warp owns 16 keys; over chunks of 32 queries:
//     S^T = K Q^T, P^T = exp(S^T scale - lse), dV += P^T dO, dP^T = V dO^T,
//     dS^T = P^T (dP^T - D) scale, dK += dS^T Q;
//   attention_backward_dq_tc: a warp owns 16 queries; over chunks of 32 keys:
//     S = Q K^T, P = exp(S scale - lse), dP = dO V^T, dS = P (dP - D) scale, dQ += dS K.
// q, k, v and dout are rounded to the precision as staged, P^T and dS (the A operands
// built in the kernel) as they go through the per-warp shared tile; everything else f32.
// Grid (ceil(T/64), NH, B), block 128.

// Rows [row0, row0 + rows) of an HS-wide column block `base` (row stride ld), rounded, into
// dst[rows][SP] with columns HS..HP-1 zero and rows >= L zero. Whole block calls it.
template <bool BF16>
__device__ __forceinline__ void att_tc_stage(float* dst, const float* base, int row0, int rows, int L, int HS, int HP,
                                             int SP, int ld) {
    for (int idx = threadIdx.x; idx < rows * HP; idx += blockDim.x) {
        const int r = idx / HP, d = idx - r * HP, row = row0 + r;
        dst[r * SP + d] = row < L && d < HS ? att_tc_round<BF16>(base[(size_t)row * ld + d]) : 0.0f;
    }
}

// acc[nt] (16 x 32 as four 8-column tiles) = A rows (the warp's 16 x HP tile `a`, stride
// SP) times B^T where B is the 32 x HP tile `bt` (stride SP): (A B^T)[r][c] = a_r . bt_c.
template <bool BF16>
__device__ __forceinline__ void att_tc_abt(float acc[4][4], const float* a, const float* bt, int HP, int SP, int g, int t4) {
    constexpr int KS = BF16 ? 16 : 8;
#pragma unroll
    for (int nt = 0; nt < 4; nt++) {
        for (int e = 0; e < 4; e++) acc[nt][e] = 0.0f;
        for (int k0 = 0; k0 < HP; k0 += KS) {
            unsigned fa[4], fb[2];
            att_tc_a<BF16>(fa, a, SP, k0, g, t4);
            att_tc_b<BF16>(fb, bt, 1, SP, k0, nt * 8, g, t4);
            att_tc_mma<BF16>(acc[nt], fa, fb);
        }
    }
}

// out[dt] (16 x HP as 8-column tiles) += the warp's 16 x 32 tile `p` (stride ATT_TC_PS)
// times the 32 x HP tile `m` (stride SP).
template <bool BF16>
__device__ __forceinline__ void att_tc_pm(float out[ATT_MAX_HS / 8][4], const float* p, const float* m, int NT, int SP, int g, int t4) {
    constexpr int KS = BF16 ? 16 : 8;
    for (int k0 = 0; k0 < ATT_TC_KC; k0 += KS) {
        unsigned fa[4];
        att_tc_a<BF16>(fa, p, ATT_TC_PS, k0, g, t4);
#pragma unroll
        for (int dt = 0; dt < ATT_MAX_HS / 8; dt++)
            if (dt < NT) {
                unsigned fb[2];
                att_tc_b<BF16>(fb, m, SP, 1, k0, dt * 8, g, t4);
                att_tc_mma<BF16>(out[dt], fa, fb);
            }
    }
}

template <bool BF16>
__device__ __forceinline__ void attention_backward_dq_tc(float* __restrict__ dqkv, const float* __restrict__ dout,
                                                         const float* __restrict__ qkv, const float* __restrict__ lse,
                                                         const unsigned* __restrict__ lens, int B, int T, int C, int NH) {
    CUDAENC_DYNAMIC_SHARED(float, smem);
    constexpr int KS = BF16 ? 16 : 8;
    const int HS = C / NH, HP = (HS + KS - 1) / KS * KS, SP = HP + 1, C3 = 3 * C, NT = HP / 8;
    const int b = blockIdx.z, h = blockIdx.y;
    const int w = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, t4 = lane & 3;
    const int q0 = blockIdx.x * (ATT_TC_WARPS * 16);
    const int L = min((int)lens[b], T);
    float* sq = smem;                                  // [64][SP] the block's queries
    float* sg = sq + ATT_TC_WARPS * 16 * SP;           // [64][SP] their dout
    float* sk = sg + ATT_TC_WARPS * 16 * SP;           // [32][SP] key chunk
    float* sv = sk + ATT_TC_KC * SP;                   // [32][SP] value chunk
    float* st = sv + ATT_TC_KC * SP;                   // [4][16][ATT_TC_PS] each warp's dS
    const float scale = 1.0f / sqrtf((float)HS);
    const float* qkv_b = qkv + (size_t)b * T * C3;
    att_tc_stage<BF16>(sq, qkv_b + h * HS, q0, ATT_TC_WARPS * 16, L, HS, HP, SP, C3);
    att_tc_stage<BF16>(sg, dout + (size_t)b * T * C + h * HS, q0, ATT_TC_WARPS * 16, L, HS, HP, SP, C);
    const float* qw = sq + w * 16 * SP;
    const float* gw = sg + w * 16 * SP;
    float* tw = st + w * 16 * ATT_TC_PS;
    float lrow[2], drow[2];  // lse and D of rows g, g + 8 (read before dq overwrites D)
    for (int r = 0; r < 2; r++) {
        const int i = q0 + w * 16 + g + 8 * r;
        lrow[r] = i < L ? lse[((size_t)b * NH + h) * T + i] : 0.0f;
        drow[r] = i < L ? dqkv[((size_t)b * T + i) * C3 + h * HS] : 0.0f;
    }
    float dq[ATT_MAX_HS / 8][4];
#pragma unroll
    for (int dt = 0; dt < ATT_MAX_HS / 8; dt++)
        for (int e = 0; e < 4; e++) dq[dt][e] = 0.0f;
    for (int j0 = 0; j0 < L; j0 += ATT_TC_KC) {
        att_tc_stage<BF16>(sk, qkv_b + C + h * HS, j0, ATT_TC_KC, L, HS, HP, SP, C3);
        att_tc_stage<BF16>(sv, qkv_b + 2 * C + h * HS, j0, ATT_TC_KC, L, HS, HP, SP, C3);
        __syncthreads();  // (also: the queries and dout are staged)
        float s[4][4], dp[4][4];
        att_tc_abt<BF16>(s, qw, sk, HP, SP, g, t4);   // S = Q K^T
        att_tc_abt<BF16>(dp, gw, sv, HP, SP, g, t4);  // dP = dO V^T
#pragma unroll
        for (int nt = 0; nt < 4; nt++)
            for (int e = 0; e < 4; e++) {
                const int j = j0 + nt * 8 + 2 * t4 + (e & 1), r = e >> 1;
                const float p = j < L ? expf(s[nt][e] * scale - lrow[r]) : 0.0f;
                tw[(g + 8 * r) * ATT_TC_PS + nt * 8 + 2 * t4 + (e & 1)] = att_tc_round<BF16>(p * (dp[nt][e] - drow[r]) * scale);
            }
        __syncwarp(CUDAENC_FULL_MASK);  // the warp's dS tile is written
        att_tc_pm<BF16>(dq, tw, sk, NT, SP, g, t4);  // dQ += dS K
        __syncthreads();  // the chunk and the tiles are read; the next chunk overwrites them
    }
    for (int r = 0; r < 2; r++) {
        const int i = q0 + w * 16 + g + 8 * r;
        if (i >= T) continue;
        float* o = dqkv + ((size_t)b * T + i) * C3 + h * HS;
#pragma unroll
        for (int dt = 0; dt < ATT_MAX_HS / 8; dt++)
            for (int e = 0; e < 2; e++) {
                const int d = dt * 8 + 2 * t4 + e;
                if (dt < NT && d < HS) o[d] = i < L ? dq[dt][2 * r + e] : 0.0f;
            }
    }
}

template <bool BF16>
__device__ __forceinline__ void attention_backward_dkv_tc(float* __restrict__ dqkv, const float* __restrict__ dout,
                                                          const float* __restrict__ qkv, const float* __restrict__ lse,
                                                          const unsigned* __restrict__ lens, int B, int T, int C, int NH) {
    CUDAENC_DYNAMIC_SHARED(float, smem);
    constexpr int KS = BF16 ? 16 : 8;
    const int HS = C / NH, HP = (HS + KS - 1) / KS * KS, SP = HP + 1, C3 = 3 * C, NT = HP / 8;
    const int b = blockIdx.z, h = blockIdx.y;
    const int w = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, t4 = lane & 3;
    const int k0row = blockIdx.x * (ATT_TC_WARPS * 16);  // the block's first key
    const int L = min((int)lens[b], T);
    float* sk = smem;                                  // [64][SP] the block's keys
    float* sv = sk + ATT_TC_WARPS * 16 * SP;           // [64][SP] their values
    float* sq = sv + ATT_TC_WARPS * 16 * SP;           // [32][SP] query chunk
    float* sg = sq + ATT_TC_KC * SP;                   // [32][SP] its dout
    float* sL = sg + ATT_TC_KC * SP;                   // [32] lse of the chunk's queries
    float* sD = sL + ATT_TC_KC;                        // [32] D of the chunk's queries
    float* sp = sD + ATT_TC_KC;                        // [4][16][ATT_TC_PS] each warp's P^T
    float* sds = sp + ATT_TC_WARPS * 16 * ATT_TC_PS;   // [4][16][ATT_TC_PS] each warp's dS^T
    const float scale = 1.0f / sqrtf((float)HS);
    const float* qkv_b = qkv + (size_t)b * T * C3;
    att_tc_stage<BF16>(sk, qkv_b + C + h * HS, k0row, ATT_TC_WARPS * 16, L, HS, HP, SP, C3);
    att_tc_stage<BF16>(sv, qkv_b + 2 * C + h * HS, k0row, ATT_TC_WARPS * 16, L, HS, HP, SP, C3);
    const float* kw = sk + w * 16 * SP;
    const float* vw = sv + w * 16 * SP;
    float* pw = sp + w * 16 * ATT_TC_PS;
    float* dsw = sds + w * 16 * ATT_TC_PS;
    float dk[ATT_MAX_HS / 8][4], dv[ATT_MAX_HS / 8][4];
#pragma unroll
    for (int dt = 0; dt < ATT_MAX_HS / 8; dt++)
#pragma unroll
        for (int e = 0; e < 4; e++) dk[dt][e] = dv[dt][e] = 0.0f;
    // keys past L of a live block: their rows stay 0 (written as 0 below); a block wholly
    // past L still walks the queries (uniform control flow), and writes zeros
    for (int i0 = 0; i0 < L; i0 += ATT_TC_KC) {
        att_tc_stage<BF16>(sq, qkv_b + h * HS, i0, ATT_TC_KC, L, HS, HP, SP, C3);
        att_tc_stage<BF16>(sg, dout + (size_t)b * T * C + h * HS, i0, ATT_TC_KC, L, HS, HP, SP, C);
        for (int ii = threadIdx.x; ii < ATT_TC_KC; ii += blockDim.x) {
            const int i = i0 + ii;
            sL[ii] = i < L ? lse[((size_t)b * NH + h) * T + i] : 0.0f;
            sD[ii] = i < L ? dqkv[((size_t)b * T + i) * C3 + h * HS] : 0.0f;
        }
        __syncthreads();  // (also: the keys and values are staged)
        float s[4][4], dp[4][4];
        att_tc_abt<BF16>(s, kw, sq, HP, SP, g, t4);   // S^T = K Q^T
        att_tc_abt<BF16>(dp, vw, sg, HP, SP, g, t4);  // dP^T = V dO^T
#pragma unroll
        for (int nt = 0; nt < 4; nt++)
            for (int e = 0; e < 4; e++) {
                const int ii = nt * 8 + 2 * t4 + (e & 1), i = i0 + ii;
                const float p = i < L ? expf(s[nt][e] * scale - sL[ii]) : 0.0f;
                const int at = (g + 8 * (e >> 1)) * ATT_TC_PS + ii;
                pw[at] = att_tc_round<BF16>(p);
                dsw[at] = att_tc_round<BF16>(p * (dp[nt][e] - sD[ii]) * scale);
            }
        __syncwarp(CUDAENC_FULL_MASK);  // the warp's P^T and dS^T tiles are written
        att_tc_pm<BF16>(dv, pw, sg, NT, SP, g, t4);   // dV += P^T dO
        att_tc_pm<BF16>(dk, dsw, sq, NT, SP, g, t4);  // dK += dS^T Q
        __syncthreads();  // the chunk and the tiles are read; the next chunk overwrites them
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int j = k0row + w * 16 + g + 8 * r;
        if (j >= T) continue;
        float* o = dqkv + ((size_t)b * T + j) * C3 + h * HS;
#pragma unroll
        for (int dt = 0; dt < ATT_MAX_HS / 8; dt++)
            for (int e = 0; e < 2; e++) {
                const int d = dt * 8 + 2 * t4 + e;
                if (dt < NT && d < HS) {
                    o[C + d] = j < L ? dk[dt][2 * r + e] : 0.0f;
                    o[2 * C + d] = j < L ? dv[dt][2 * r + e] : 0.0f;
                }
            }
    }
}

// dqkv's k and v blocks <- dout, qkv, lse, lens, and D in the dq slots (attention_backward_delta).
extern "C" __global__ void attention_backward_dkv_tf32(float* __restrict__ dqkv, const float* __restrict__ dout,
                                                       const float* __restrict__ qkv, const float* __restrict__ lse,
                                                       const unsigned* __restrict__ lens, int B, int T, int C, int NH) {
    attention_backward_dkv_tc<false>(dqkv, dout, qkv, lse, lens, B, T, C, NH);
}
CUDAENC_REGISTER(attention_backward_dkv_tf32)
extern "C" __global__ void attention_backward_dkv_bf16(float* __restrict__ dqkv, const float* __restrict__ dout,
                                                       const float* __restrict__ qkv, const float* __restrict__ lse,
                                                       const unsigned* __restrict__ lens, int B, int T, int C, int NH) {
    attention_backward_dkv_tc<true>(dqkv, dout, qkv, lse, lens, B, T, C, NH);
}
CUDAENC_REGISTER(attention_backward_dkv_bf16)

// dqkv's q block <- dout, qkv, lse, lens, D (read from the dq slots, then overwritten);
// after attention_backward_dkv_*.
extern "C" __global__ void attention_backward_dq_tf32(float* __restrict__ dqkv, const float* __restrict__ dout,
                                                      const float* __restrict__ qkv, const float* __restrict__ lse,
                                                      const unsigned* __restrict__ lens, int B, int T, int C, int NH) {
    attention_backward_dq_tc<false>(dqkv, dout, qkv, lse, lens, B, T, C, NH);
}
CUDAENC_REGISTER(attention_backward_dq_tf32)
extern "C" __global__ void attention_backward_dq_bf16(float* __restrict__ dqkv, const float* __restrict__ dout,
                                                      const float* __restrict__ qkv, const float* __restrict__ lse,
                                                      const unsigned* __restrict__ lens, int B, int T, int C, int NH) {
    attention_backward_dq_tc<true>(dqkv, dout, qkv, lse, lens, B, T, C, NH);
}
CUDAENC_REGISTER(attention_backward_dq_bf16)
