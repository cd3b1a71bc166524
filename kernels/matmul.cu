// Linear layer: out (N,OC) = inp (N,IC) @ weight^T + bias, weight stored (OC,IC) row-major.
// Reference: src/reference/matmul.rs; launcher: src/ops/matmul.rs.
//
// All three products are one tiled SGEMM, C (M,Nc) [+]= A (M,K) @ B (K,Nc) (+ bias):
// 64x64 tiles of C per block of 256 threads, K in steps of 16 through shared memory,
// 4x4 outputs per thread in registers. Each output is summed by one thread over k in
// ascending order, so results are bit-identical on reruns (no split-K, no atomics).
// Any M, Nc, K: out-of-range tile elements load as 0 and are never stored.
#include "cudaenc.cuh"

#define MM_BM 64      // rows of C per block
#define MM_BN 64      // columns of C per block
#define MM_BK 16      // k per shared-memory step
#define MM_THREADS 256  // 16 x 16 threads, each 4 x 4 outputs
#define MM_PAD 1      // shared row padding (fewer bank conflicts on the transposing stores)

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

// out (N,OC) = inp (N,IC) @ weight^T + bias (bias may be null).
// Grid ceil(N/64) * ceil(OC/64) blocks (column tiles fastest), block 256.
extern "C" __global__ void matmul_forward(float* __restrict__ out, const float* __restrict__ inp,
                                          const float* __restrict__ weight, const float* __restrict__ bias,
                                          int N, int IC, int OC) {
    __shared__ float As[MM_BK][MM_BM + MM_PAD];
    __shared__ float Bs[MM_BK][MM_BN + MM_PAD];
    const int tiles_n = (OC + MM_BN - 1) / MM_BN;
    const int tile_m = blockIdx.x / tiles_n, tile_n = blockIdx.x % tiles_n;
    // A = inp (N,IC) k-contiguous; B(k,n) = weight[n*IC + k] k-contiguous
    gemm_tile<true, true>(out, inp, weight, bias, N, OC, IC, IC, IC, OC, 0, tile_m, tile_n, As, Bs);
}
CUDAENC_REGISTER(matmul_forward)

// dinp (N,IC) =, dweight (OC,IC) +=, dbias (OC) += (dbias may be null)  <-  dout (N,OC), inp, weight.
// One launch, three kinds of blocks (block-uniform by blockIdx.x), in this order so the
// long-running ones (dweight reduces over N) start first:
//   [0, Tw)          dweight tiles: dout^T (OC,N) @ inp (N,IC), K = N, accumulate
//   [Tw, Tw+Tb)      dbias: 32 columns per block, fixed-order column sums (Tb = 0 if null)
//   [Tw+Tb, ..+Td)   dinp tiles: dout (N,OC) @ weight (OC,IC), K = OC, overwrite
// Tw = ceil(OC/64)*ceil(IC/64), Tb = ceil(OC/32), Td = ceil(N/64)*ceil(IC/64); block 256.
extern "C" __global__ void matmul_backward(float* __restrict__ dinp, float* __restrict__ dweight,
                                           float* __restrict__ dbias, const float* __restrict__ dout,
                                           const float* __restrict__ inp, const float* __restrict__ weight,
                                           int N, int IC, int OC) {
    __shared__ float As[MM_BK][MM_BM + MM_PAD];
    __shared__ float Bs[MM_BK][MM_BN + MM_PAD];
    const int tiles_ic = (IC + MM_BN - 1) / MM_BN;
    const int n_dw = ((OC + MM_BM - 1) / MM_BM) * tiles_ic;
    const int n_db = dbias ? (OC + 31) / 32 : 0;
    int b = blockIdx.x;
    if (b < n_dw) {
        // A(m,k) = dout[k*OC + m] (m-contiguous); B(k,n) = inp[k*IC + n] (n-contiguous)
        gemm_tile<false, false>(dweight, dout, inp, nullptr, OC, IC, N, OC, IC, IC, 1, b / tiles_ic,
                                b % tiles_ic, As, Bs);
        return;
    }
    b -= n_dw;
    if (b < n_db) {
        // dbias: warp g sums rows g, g+8, ... of 32 columns in order, then warp 0 adds the
        // 8 partials in order (fixed order for a fixed block size: deterministic)
        const int lane = threadIdx.x % 32, g = threadIdx.x / 32, G = MM_THREADS / 32;
        const int col = b * 32 + lane;
        float s = 0.0f;
        if (col < OC)
            for (int r = g; r < N; r += G) s += dout[(size_t)r * OC + col];
        float(*part)[32] = reinterpret_cast<float(*)[32]>(&As[0][0]);  // 8 x 32 floats fit in As
        part[g][lane] = s;
        __syncthreads();
        if (g == 0 && col < OC) {
            float t = 0.0f;
            for (int k = 0; k < G; k++) t += part[k][lane];
            dbias[col] += t;
        }
        return;
    }
    b -= n_db;
    // A = dout (N,OC) k-contiguous; B(k,n) = weight[k*IC + n] (n-contiguous)
    gemm_tile<true, false>(dinp, dout, weight, nullptr, N, IC, OC, OC, IC, IC, 0, b / tiles_ic, b % tiles_ic,
                           As, Bs);
}
CUDAENC_REGISTER(matmul_backward)
