// cudaenc.cuh -- the one header every kernels/*.cu includes.
//
// Under nvcc: real CUDA; CUDAENC_REGISTER expands to nothing.
// On the host (the emulator, built by build.rs with the cc crate): the shim in
// emu/shim.h provides threadIdx & co., __syncthreads, the warp *_sync intrinsics,
// atomics and math; CUDAENC_REGISTER records the kernel for launch by name.
// Conventions: docs/kernels.md and ../shared/docs/host-emulator.md.
#pragma once

#ifdef __CUDACC__
  #define CUDAENC_REGISTER(name)
  // T* name over the launch's dynamic shared memory (16-byte aligned).
  #define CUDAENC_DYNAMIC_SHARED(T, name)                                   \
      extern __shared__ __align__(16) unsigned char cudaenc_dyn_smem_[];    \
      T* name = reinterpret_cast<T*>(cudaenc_dyn_smem_)
#else
  #include "emu/shim.h"
#endif

#define CUDAENC_FULL_MASK 0xffffffffu

// ---- helpers shared by kernel authors -------------------------------------

// Sum over the 32 lanes of a full warp; every lane gets the result.
// All 32 lanes must be live (blockDim.x a multiple of 32, or pad with zeros).
__device__ __forceinline__ float warp_reduce_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(CUDAENC_FULL_MASK, v, o);
    return v;
}

// Max over the 32 lanes of a full warp; every lane gets the result.
__device__ __forceinline__ float warp_reduce_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(CUDAENC_FULL_MASK, v, o));
    return v;
}

// Sum over the whole block; every thread gets the result. Requirements: blockDim.x a
// multiple of 32 (<= 1024), blockDim.y == blockDim.z == 1, called by every thread in
// block-uniform control flow. `scratch` is __shared__ float[32] owned by the caller;
// the helper ends with a barrier, so the scratch may be reused right after.
__device__ __forceinline__ float block_reduce_sum(float v, float* scratch) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const int nwarps = blockDim.x / 32;
    v = warp_reduce_sum(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float t = lane < nwarps ? scratch[lane] : 0.0f;
    t = warp_reduce_sum(t);
    __syncthreads();
    return t;
}

// Counter-based dropout uniform in [0,1) with 24 bits; bit-identical to
// rng::dropout_uniform in src/rng.rs (SplitMix64 finalizer of seed + (idx+1)*golden).
__device__ __forceinline__ float dropout_uniform(unsigned long long seed, unsigned long long idx) {
    unsigned long long z = seed + (idx + 1ull) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)(unsigned int)(z >> 40) * (1.0f / 16777216.0f);
}
