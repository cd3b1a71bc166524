// Linear layer: out (N,OC) = inp (N,IC) @ weight^T + bias, weight stored (OC,IC) row-major.
// Reference: src/reference/matmul.rs; launcher: src/ops/matmul.rs.
//
// All three products are one tiled SGEMM, C (M,Nc) [+]= A (M,K) @ B (K,Nc) (+ bias):
// 64x64 tiles of C per block of 256 threads, K in steps of 16 through shared memory,
// 4x4 outputs per thread in registers. Each output is summed by one thread over k in
// ascending order. Any M, Nc, K: out-of-range tile elements load as 0 and are never stored.
//
// Deterministic split-K for the weight gradients (dweight = dout^T @ inp and dbias reduce
// over the N = B*T token rows, ~16 K in training, with only ceil(OC/64)*ceil(IC/64) tiles,
// e.g. 36 for 384x384: far fewer blocks than SMs). The launcher splits N into S chunks of
// `chunk_len` consecutive rows (S from the shapes alone, never from the device or timing;
// see matmul_backward_chunks in src/ops/matmul.rs):
//   S == 1: one block per tile sums all N rows and adds (+=) into dweight / dbias directly.
//   S > 1:  matmul_backward writes each chunk's partial tile (=) into its own slab of a
//           scratch buffer, scratch[s * (OC*IC + OC) + e] (dweight elements e < OC*IC,
//           then dbias at OC*IC + o); matmul_backward_reduce, the next launch on the same
//           stream, adds each element's S partials in chunk order s = 0, 1, ..., S-1 and
//           then (+=) into dweight / dbias.
// Every output element is therefore a fixed sequence of f32 operations for given shapes:
// bit-identical reruns, no atomics, no inter-block communication inside a launch.
//
// Precisions (template parameter PREC; kernels matmul_forward / matmul_backward for fp32,
// matmul_{forward,backward}_{tf32,bf16} for the tensor cores): the same 64x64 tiles, the
// same blocks and split-K, the same staging through shared memory, but the staged values
// are rounded (round_tf32 / round_bf16 of cudaenc.cuh) and each warp of the 8 computes a
// 32x16 part of the tile with mma.sync (m16n8k8 tf32: 2 x 2 mmas per 8 values of k;
// m16n8k16 bf16: 2 x 2 per 16) into f32 accumulators. The dbias column sums and the
// split-K reduction stay f32 in every precision. fp32 is bit-identical to before.
#include "cudaenc.cuh"

#define PREC_FP32 0
#define PREC_TF32 1
#define PREC_BF16 2

#define MM_BM 64      // rows of C per block
#define MM_BN 64      // columns of C per block
#define MM_BK 16      // k per shared-memory step
#define MM_THREADS 256  // 16 x 16 threads, each 4 x 4 outputs
#define MM_PAD 1      // shared row padding (fewer bank conflicts on the transposing stores)
#define TC_PAD 8      // tensor cores: lanes (g, t) read [k0 + t][m0 + g]: 32 different banks
#define MM_PAD_FOR(P) ((P) == PREC_FP32 ? MM_PAD : TC_PAD)

// One 64x64 tile (tile_m, tile_n) of C. A(m,k) is A[m*lda + k] when A_KCONTIG, else
// A[k*lda + m]; B(k,n) is B[n*ldb + k] when B_KCONTIG, else B[k*ldb + n]. The layout
// flags choose which index the threads walk when loading, so global reads coalesce.
// C(m,n) = C[m*ldc + n]; accumulate: C += product, else C = product; bias (Nc) or null.
// Called by all threads of the block (contains __syncthreads): block-uniform arguments.
template <bool A_KCONTIG, bool B_KCONTIG>
__device__ __forceinline__ void gemm_tile(float* __restrict__ C, const float* __restrict__ A,
                                          const float* __restrict__ B, const float* __restrict__ bias,
                                          int M, int Nc, int K, int lda, int ldb, int ldc, int accumulate,
                                          int tile_m, int tile_n, float (*As)[MM_BM + MM_PAD],
                                          float (*Bs)[MM_BN + MM_PAD]) {
    const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    const int m0 = tile_m * MM_BM, n0 = tile_n * MM_BN;
    float acc[4][4];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) acc[i][j] = 0.0f;

    for (int k0 = 0; k0 < K; k0 += MM_BK) {
        // stage A (BM x BK) and B (BK x BN) into shared, k-major; 4 elements per thread each
        for (int r = 0; r < (MM_BM * MM_BK) / MM_THREADS; r++) {
            const int e = tid + r * MM_THREADS;
            int mm, kk;
            if (A_KCONTIG) { mm = e / MM_BK; kk = e % MM_BK; }
            else           { kk = e / MM_BM; mm = e % MM_BM; }
            const int m = m0 + mm, k = k0 + kk;
            float v = 0.0f;
            if (m < M && k < K) v = A_KCONTIG ? A[(size_t)m * lda + k] : A[(size_t)k * lda + m];
            As[kk][mm] = v;
        }
        for (int r = 0; r < (MM_BN * MM_BK) / MM_THREADS; r++) {
            const int e = tid + r * MM_THREADS;
            int nn, kk;
            if (B_KCONTIG) { nn = e / MM_BK; kk = e % MM_BK; }
            else           { kk = e / MM_BN; nn = e % MM_BN; }
            const int n = n0 + nn, k = k0 + kk;
            float v = 0.0f;
            if (n < Nc && k < K) v = B_KCONTIG ? B[(size_t)n * ldb + k] : B[(size_t)k * ldb + n];
            Bs[kk][nn] = v;
        }
        __syncthreads();
        for (int kk = 0; kk < MM_BK; kk++) {
            float a[4], b[4];
            for (int i = 0; i < 4; i++) a[i] = As[kk][ty + 16 * i];
            for (int j = 0; j < 4; j++) b[j] = Bs[kk][tx + 16 * j];
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < 4; j++) acc[i][j] += a[i] * b[j];  // nvcc contracts to an FMA
        }
        __syncthreads();  // the next step overwrites As/Bs
    }

    // thread (tx, ty) owns rows ty + 16i and columns tx + 16j: stores coalesce along j
    for (int i = 0; i < 4; i++) {
        const int m = m0 + ty + 16 * i;
        if (m >= M) continue;
        for (int j = 0; j < 4; j++) {
            const int n = n0 + tx + 16 * j;
            if (n >= Nc) continue;
            float v = acc[i][j];
            if (bias) v += bias[n];
            float* c = C + (size_t)m * ldc + n;
            *c = accumulate ? *c + v : v;
        }
    }
}

// The tensor-core twin of gemm_tile (PREC_TF32 or PREC_BF16): same arguments, layouts and
// staging (values rounded as they are staged), 8 warps in 2 (rows) x 4 (columns), warp w
// owning rows 32*(w/4) .. +32 and columns 16*(w%4) .. +16 of the tile, as 2 x 2 mma tiles of
// 16x8. Fragments come from shared memory at the PTX ISA's positions (cudaenc.cuh), with
// g = lane/4, t = lane%4. Each output: its f32 accumulator over the k steps in ascending
// order, one mma per step (bit-identical reruns on one device).
template <int PREC, bool A_KCONTIG, bool B_KCONTIG>
__device__ __forceinline__ void gemm_tile_tc(float* __restrict__ C, const float* __restrict__ A,
                                             const float* __restrict__ B, const float* __restrict__ bias,
                                             int M, int Nc, int K, int lda, int ldb, int ldc, int accumulate,
                                             int tile_m, int tile_n, float (*As)[MM_BM + TC_PAD],
                                             float (*Bs)[MM_BN + TC_PAD]) {
    const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
    const int g = lane >> 2, t = lane & 3;
    const int wm = (warp / 4) * 32, wn = (warp % 4) * 16;
    const int m0 = tile_m * MM_BM, n0 = tile_n * MM_BN;
    float acc[2][2][4];
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++)
            for (int r = 0; r < 4; r++) acc[i][j][r] = 0.0f;

    for (int k0 = 0; k0 < K; k0 += MM_BK) {
        for (int r = 0; r < (MM_BM * MM_BK) / MM_THREADS; r++) {
            const int e = tid + r * MM_THREADS;
            int mm, kk;
            if (A_KCONTIG) { mm = e / MM_BK; kk = e % MM_BK; }
            else           { kk = e / MM_BM; mm = e % MM_BM; }
            const int m = m0 + mm, k = k0 + kk;
            float v = 0.0f;
            if (m < M && k < K) v = A_KCONTIG ? A[(size_t)m * lda + k] : A[(size_t)k * lda + m];
            As[kk][mm] = PREC == PREC_TF32 ? round_tf32(v) : round_bf16(v);
        }
        for (int r = 0; r < (MM_BN * MM_BK) / MM_THREADS; r++) {
            const int e = tid + r * MM_THREADS;
            int nn, kk;
            if (B_KCONTIG) { nn = e / MM_BK; kk = e % MM_BK; }
            else           { kk = e / MM_BN; nn = e % MM_BN; }
            const int n = n0 + nn, k = k0 + kk;
            float v = 0.0f;
            if (n < Nc && k < K) v = B_KCONTIG ? B[(size_t)n * ldb + k] : B[(size_t)k * ldb + n];
            Bs[kk][nn] = PREC == PREC_TF32 ? round_tf32(v) : round_bf16(v);
        }
        __syncthreads();
        if (PREC == PREC_TF32) {
            for (int ks = 0; ks < MM_BK; ks += 8) {
                unsigned a[2][4], b[2][2];
                for (int i = 0; i < 2; i++) {  // A (16x8): a0 (g,t) a1 (g+8,t) a2 (g,t+4) a3 (g+8,t+4)
                    const int m = wm + 16 * i + g;
                    a[i][0] = __float_as_uint(As[ks + t][m]);
                    a[i][1] = __float_as_uint(As[ks + t][m + 8]);
                    a[i][2] = __float_as_uint(As[ks + t + 4][m]);
                    a[i][3] = __float_as_uint(As[ks + t + 4][m + 8]);
                }
                for (int j = 0; j < 2; j++) {  // B (8x8): b0 (k=t, n=g) b1 (k=t+4, n=g)
                    const int n = wn + 8 * j + g;
                    b[j][0] = __float_as_uint(Bs[ks + t][n]);
                    b[j][1] = __float_as_uint(Bs[ks + t + 4][n]);
                }
                for (int i = 0; i < 2; i++)
                    for (int j = 0; j < 2; j++) mma_m16n8k8_tf32(acc[i][j], a[i], b[j]);
            }
        } else {
            unsigned a[2][4], b[2][2];
            for (int i = 0; i < 2; i++)  // A (16x16): reg r = row g + 8(r%2), columns 2t + 8(r/2), +1
                for (int r = 0; r < 4; r++) {
                    const int m = wm + 16 * i + g + 8 * (r % 2), k = 2 * t + 8 * (r / 2);
                    a[i][r] = pack_bf16x2(As[k][m], As[k + 1][m]);
                }
            for (int j = 0; j < 2; j++)  // B (16x8): reg r = rows 2t + 8r, +1, column g
                for (int r = 0; r < 2; r++) {
                    const int n = wn + 8 * j + g, k = 2 * t + 8 * r;
                    b[j][r] = pack_bf16x2(Bs[k][n], Bs[k + 1][n]);
                }
            for (int i = 0; i < 2; i++)
                for (int j = 0; j < 2; j++) mma_m16n8k16_bf16(acc[i][j], a[i], b[j]);
        }
        __syncthreads();  // the next step overwrites As/Bs
    }

    // accumulator r of mma tile (i, j): row g + 8*(r/2), column 2t + r%2 of that 16x8 tile
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++)
            for (int r = 0; r < 4; r++) {
                const int m = m0 + wm + 16 * i + g + 8 * (r / 2), n = n0 + wn + 8 * j + 2 * t + (r % 2);
                if (m >= M || n >= Nc) continue;
                float v = acc[i][j][r];
                if (bias) v += bias[n];
                float* c = C + (size_t)m * ldc + n;
                *c = accumulate ? *c + v : v;
            }
}

// gemm_tile in precision PREC (shared arrays padded by MM_PAD_FOR(PREC)).
template <int PREC, bool A_KCONTIG, bool B_KCONTIG>
__device__ __forceinline__ void gemm_tile_prec(float* __restrict__ C, const float* __restrict__ A,
                                               const float* __restrict__ B, const float* __restrict__ bias,
                                               int M, int Nc, int K, int lda, int ldb, int ldc, int accumulate,
                                               int tile_m, int tile_n, float (*As)[MM_BM + MM_PAD_FOR(PREC)],
                                               float (*Bs)[MM_BN + MM_PAD_FOR(PREC)]) {
    if constexpr (PREC == PREC_FP32)
        gemm_tile<A_KCONTIG, B_KCONTIG>(C, A, B, bias, M, Nc, K, lda, ldb, ldc, accumulate, tile_m, tile_n, As, Bs);
    else
        gemm_tile_tc<PREC, A_KCONTIG, B_KCONTIG>(C, A, B, bias, M, Nc, K, lda, ldb, ldc, accumulate, tile_m,
                                                 tile_n, As, Bs);
}

// out (N,OC) = inp (N,IC) @ weight^T + bias (bias may be null).
// Grid ceil(N/64) * ceil(OC/64) blocks (column tiles fastest), block 256.
template <int PREC>
__device__ __forceinline__ void matmul_forward_impl(float* __restrict__ out, const float* __restrict__ inp,
                                                    const float* __restrict__ weight,
                                                    const float* __restrict__ bias, int N, int IC, int OC) {
    __shared__ float As[MM_BK][MM_BM + MM_PAD_FOR(PREC)];
    __shared__ float Bs[MM_BK][MM_BN + MM_PAD_FOR(PREC)];
    const int tiles_n = (OC + MM_BN - 1) / MM_BN;
    const int tile_m = blockIdx.x / tiles_n, tile_n = blockIdx.x % tiles_n;
    // A = inp (N,IC) k-contiguous; B(k,n) = weight[n*IC + k] k-contiguous
    gemm_tile_prec<PREC, true, true>(out, inp, weight, bias, N, OC, IC, IC, IC, OC, 0, tile_m, tile_n, As, Bs);
}
#define MATMUL_FORWARD(name, PREC)                                                                      \
    extern "C" __global__ void name(float* __restrict__ out, const float* __restrict__ inp,             \
                                    const float* __restrict__ weight, const float* __restrict__ bias,   \
                                    int N, int IC, int OC) {                                            \
        matmul_forward_impl<PREC>(out, inp, weight, bias, N, IC, OC);                                   \
    }                                                                                                   \
    CUDAENC_REGISTER(name)
MATMUL_FORWARD(matmul_forward, PREC_FP32)
MATMUL_FORWARD(matmul_forward_tf32, PREC_TF32)
MATMUL_FORWARD(matmul_forward_bf16, PREC_BF16)

// dinp (N,IC) =, dweight (OC,IC) +=, dbias (OC) += (dbias may be null)  <-  dout (N,OC), inp, weight.
// One launch, three kinds of blocks (block-uniform by blockIdx.x), in this order so the
// long-running ones (dweight reduces over a chunk of N) start first:
//   [0, Tw*S)        dweight tiles x chunks: dout^T (OC,rows) @ inp (rows,IC), K = rows of
//                    the chunk; block b is tile b % Tw of chunk b / Tw
//   [.., +Tb*S)      dbias: 32 columns x one chunk per block, fixed-order column sums
//                    (Tb = 0 if dbias is null)
//   [.., +Td)        dinp tiles: dout (N,OC) @ weight (OC,IC), K = OC, overwrite
// Tw = ceil(OC/64)*ceil(IC/64), Tb = ceil(OC/32), Td = ceil(N/64)*ceil(IC/64); block 256.
// Chunk s covers rows [s*chunk_len, min((s+1)*chunk_len, N)) (possibly empty).
// S = chunks == 1: dweight/dbias += directly and scratch is unused (may be null).
// S > 1: partials (=) to scratch (S slabs of OC*IC + OC floats); matmul_backward_reduce
// must follow to add them into dweight/dbias.
template <int PREC>
__device__ __forceinline__ void matmul_backward_impl(float* __restrict__ dinp, float* __restrict__ dweight,
                                                     float* __restrict__ dbias, float* __restrict__ scratch,
                                                     const float* __restrict__ dout, const float* __restrict__ inp,
                                                     const float* __restrict__ weight, int N, int IC, int OC,
                                                     int chunks, int chunk_len) {
    __shared__ float As[MM_BK][MM_BM + MM_PAD_FOR(PREC)];
    __shared__ float Bs[MM_BK][MM_BN + MM_PAD_FOR(PREC)];
    const int tiles_ic = (IC + MM_BN - 1) / MM_BN;
    const int tiles_w = ((OC + MM_BM - 1) / MM_BM) * tiles_ic;
    const int n_dw = tiles_w * chunks;
    const int n_db = dbias ? ((OC + 31) / 32) * chunks : 0;
    const size_t slab = (size_t)OC * IC + OC;  // scratch floats per chunk
    int b = blockIdx.x;
    if (b < n_dw) {
        const int chunk = b / tiles_w, tile = b % tiles_w;
        const int row0 = chunk * chunk_len;
        const int rows = max(0, min(chunk_len, N - row0));
        // A(m,k) = dout[(row0+k)*OC + m] (m-contiguous); B(k,n) = inp[(row0+k)*IC + n] (n-contiguous)
        const float* A = dout + (size_t)row0 * OC;
        const float* B = inp + (size_t)row0 * IC;
        if (chunks == 1)  // += into dweight
            gemm_tile_prec<PREC, false, false>(dweight, A, B, nullptr, OC, IC, rows, OC, IC, IC, 1,
                                               tile / tiles_ic, tile % tiles_ic, As, Bs);
        else  // = this chunk's partial into its scratch slab
            gemm_tile_prec<PREC, false, false>(scratch + (size_t)chunk * slab, A, B, nullptr, OC, IC, rows, OC,
                                               IC, IC, 0, tile / tiles_ic, tile % tiles_ic, As, Bs);
        return;
    }
    b -= n_dw;
    if (b < n_db) {
        // dbias: warp g sums rows row0+g, row0+g+8, ... of the chunk for 32 columns in order,
        // then warp 0 adds the 8 partials in order (fixed order for a fixed block size)
        const int tiles_b = (OC + 31) / 32;
        const int chunk = b / tiles_b;
        const int lane = threadIdx.x % 32, g = threadIdx.x / 32, G = MM_THREADS / 32;
        const int col = (b % tiles_b) * 32 + lane;
        const int row0 = chunk * chunk_len;
        const int row1 = min(N, row0 + chunk_len);
        float s = 0.0f;
        if (col < OC)
            for (int r = row0 + g; r < row1; r += G) s += dout[(size_t)r * OC + col];
        float(*part)[32] = reinterpret_cast<float(*)[32]>(&As[0][0]);  // 8 x 32 floats fit in As
        part[g][lane] = s;
        __syncthreads();
        if (g == 0 && col < OC) {
            float t = 0.0f;
            for (int k = 0; k < G; k++) t += part[k][lane];
            if (chunks == 1) dbias[col] += t;
            else scratch[(size_t)chunk * slab + (size_t)OC * IC + col] = t;
        }
        return;
    }
    b -= n_db;
    // A = dout (N,OC) k-contiguous; B(k,n) = weight[k*IC + n] (n-contiguous)
    gemm_tile_prec<PREC, true, false>(dinp, dout, weight, nullptr, N, IC, OC, OC, IC, IC, 0, b / tiles_ic,
                                      b % tiles_ic, As, Bs);
}
#define MATMUL_BACKWARD(name, PREC)                                                                      \
    extern "C" __global__ void name(float* __restrict__ dinp, float* __restrict__ dweight,               \
                                    float* __restrict__ dbias, float* __restrict__ scratch,              \
                                    const float* __restrict__ dout, const float* __restrict__ inp,       \
                                    const float* __restrict__ weight, int N, int IC, int OC, int chunks, \
                                    int chunk_len) {                                                     \
        matmul_backward_impl<PREC>(dinp, dweight, dbias, scratch, dout, inp, weight, N, IC, OC, chunks,   \
                                   chunk_len);                                                           \
    }                                                                                                    \
    CUDAENC_REGISTER(name)
MATMUL_BACKWARD(matmul_backward, PREC_FP32)
MATMUL_BACKWARD(matmul_backward_tf32, PREC_TF32)
MATMUL_BACKWARD(matmul_backward_bf16, PREC_BF16)

// Second pass of the split-K weight gradients (chunks > 1): for e < OC*IC,
// dweight[e] += sum over s = 0..chunks-1 (in that order) of scratch[s*(OC*IC+OC) + e];
// for e = OC*IC + o, the same into dbias[o] (skipped when dbias is null).
// Grid ceil((OC*IC + OC) / 256) x block 256, one element per thread: reads coalesce
// within each slab.
extern "C" __global__ void matmul_backward_reduce(float* __restrict__ dweight, float* __restrict__ dbias,
                                                  const float* __restrict__ scratch, int IC, int OC,
                                                  int chunks) {
    const size_t nw = (size_t)OC * IC, slab = nw + OC;
    const size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= slab || (e >= nw && !dbias)) return;
    float t = 0.0f;
    for (int s = 0; s < chunks; s++) t += scratch[(size_t)s * slab + e];
    if (e < nw) dweight[e] += t;
    else dbias[e - nw] += t;
}
CUDAENC_REGISTER(matmul_backward_reduce)
