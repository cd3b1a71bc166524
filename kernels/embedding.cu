// Token embedding: gather rows of wte by id (forward), deterministic scatter-add into
// dwte (backward). Reference: src/reference/embedding.rs; launcher: src/ops/embedding.rs.
#include "cudaenc.cuh"

// out (N,C) <- ids (N), wte (V,C). One thread per element of out; consecutive threads
// read consecutive columns of one row (coalesced). Ids >= V are rejected by the host;
// the kernel writes 0 for them rather than read out of bounds.
extern "C" __global__ void embedding_forward(float* __restrict__ out, const unsigned int* __restrict__ ids,
                                             const float* __restrict__ wte, int N, int C, int V) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)N * C) return;
    const int n = (int)(i / C), c = (int)(i % C);
    const unsigned int id = ids[n];
    out[i] = id < (unsigned int)V ? wte[(size_t)id * C + c] : 0.0f;
}
CUDAENC_REGISTER(embedding_forward)

// out (N,C) = dropout(wte[ids]): embedding_forward and dropout_forward in one pass (the
// gathered rows are not written and read back). Element i = n*C + c is kept iff
// dropout_uniform(seed[0], i) >= p and scaled by `scale`, exactly as dropout_forward
// treats element i of the flat (N,C) tensor, so dropout_backward (or the layer norm
// backward that fuses it) stays the backward; p <= 0: the plain gather. The seed is
// device memory (read only when p > 0), as in dropout_forward. Grid-stride over N*C.
extern "C" __global__ void embedding_dropout_forward(float* __restrict__ out, const unsigned int* __restrict__ ids,
                                                     const float* __restrict__ wte,
                                                     const unsigned long long* __restrict__ seed, float p,
                                                     float scale, int N, int C, int V) {
    const unsigned long long s = p > 0.0f ? seed[0] : 0ull;
    const size_t total = (size_t)N * C;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        const size_t n = i / C, c = i % C;
        const unsigned int id = ids[n];
        const float x = id < (unsigned int)V ? wte[(size_t)id * C + c] : 0.0f;
        const bool keep = p <= 0.0f || dropout_uniform(s, i) >= p;
        out[i] = keep ? (p <= 0.0f ? x : x * scale) : 0.0f;
    }
}
CUDAENC_REGISTER(embedding_dropout_forward)

// dwte (V,C) += <- dout (N,C), ids (N), pos (M): the M valid (unpadded) positions
// stably sorted by id, starts (U): index into pos where each of the U distinct ids' run
// begins (increasing). U and M are read from device memory (um = {U, M}, written with
// the batch), and the grid does not depend on them: a fixed grid whose blocks take the
// distinct ids u = blockIdx.x, blockIdx.x + gridDim.x, ... (one id per block at a time),
// so a captured CUDA graph of the step replays correctly for the next batch's ids.
// Threads stride over C. Each column adds its run's rows to dwte in the order of `pos`
// (increasing position), exactly as the reference does: dwte[id] = ((dwte[id] + d[p0]) +
// d[p1]) + ... Padded positions are not in `pos` (their gradient is zero). No atomics:
// every row of dwte is owned by one block, so reruns are bit-identical.
extern "C" __global__ void embedding_backward(float* __restrict__ dwte, const float* __restrict__ dout,
                                              const unsigned int* __restrict__ ids,
                                              const unsigned int* __restrict__ pos,
                                              const unsigned int* __restrict__ starts,
                                              const unsigned int* __restrict__ um, int C) {
    const int U = (int)um[0], M = (int)um[1];
    for (int u = blockIdx.x; u < U; u += gridDim.x) {  // block-uniform
        const int begin = (int)starts[u];
        const int end = u + 1 < U ? (int)starts[u + 1] : M;
        const unsigned int id = ids[pos[begin]];
        float* row = dwte + (size_t)id * C;
        for (int c = threadIdx.x; c < C; c += blockDim.x) {
            float acc = row[c];
            for (int k = begin; k < end; k++) acc += dout[(size_t)pos[k] * C + c];
            row[c] = acc;
        }
    }
}
CUDAENC_REGISTER(embedding_backward)
