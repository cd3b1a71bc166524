// Device-to-device copy: the memory-bandwidth reference the microbenchmarks
// (src/bench.rs) report every kernel against, and the L2 flush between timed repeats.
#include "cudaenc.cuh"

// dst (N4 float4) <- src (N4 float4). Buffers from Gpu::zeros are 256-byte aligned.
extern "C" __global__ void bench_copy(float4* __restrict__ dst, const float4* __restrict__ src, int N4) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (size_t)N4; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = src[i];
}
CUDAENC_REGISTER(bench_copy)
