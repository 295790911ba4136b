// Deterministic block-wide reductions shared by the row kernels (reduce, softmax,
// logsumexp, layer_norm, mse). Every launch that uses them has blockDim.x ==
// REDUCE_THREADS (256, a power of two). Each thread first folds its own strided elements
// in index order, then the block combines the 256 partials by a fixed binary tree in
// shared memory: the summation order depends only on the sizes, never on timing, and no
// float atomics touch a result.
//
// Prepended as text to the kernel files that include it (see src/backend/cuda.rs,
// `kernel_source`).
#pragma once

#define REDUCE_THREADS 256

/// Sum of `v` over the block; every thread receives the result. `scratch` holds
/// REDUCE_THREADS floats of shared memory.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    const unsigned int t = threadIdx.x;
    scratch[t] = v;
    __syncthreads();
#pragma unroll
    for (unsigned int s = REDUCE_THREADS / 2; s > 0; s >>= 1) {
        if (t < s) scratch[t] += scratch[t + s];
        __syncthreads();
    }
    const float r = scratch[0];
    __syncthreads();
    return r;
}

/// Maximum of `v` over the block; every thread receives the result.
__device__ __forceinline__ float block_max(float v, float* scratch) {
    const unsigned int t = threadIdx.x;
    scratch[t] = v;
    __syncthreads();
#pragma unroll
    for (unsigned int s = REDUCE_THREADS / 2; s > 0; s >>= 1) {
        if (t < s) scratch[t] = fmaxf(scratch[t], scratch[t + s]);
        __syncthreads();
    }
    const float r = scratch[0];
    __syncthreads();
    return r;
}

/// -infinity without math.h (NVRTC compiles without the host headers).
#define NEG_INF_F (__int_as_float(0xff800000))
