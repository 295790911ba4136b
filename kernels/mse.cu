// Mean squared error and its backward:
//   mse:          out = (sum_i (p_i - t_i)^2) / n            (a rank-0 tensor)
//   mse_backward: dp_i = (2 dy / n) (p_i - t_i), dy the rank-0 upstream gradient
// The forward is two deterministic passes: mse_partial runs a grid whose size the host
// derives from n alone (never from the device), each block folds a grid-strided set of
// elements and writes one partial; mse_finish (one block) adds the partials in a fixed
// tree and divides. Both use REDUCE_THREADS threads per block. No atomics.
#include "block_reduce.cuh"

extern "C" __global__ void mse_partial(const float* __restrict__ p, const float* __restrict__ t,
                                       float* __restrict__ partials, int n) {
    __shared__ float scratch[REDUCE_THREADS];
    float acc = 0.0f;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        const float d = p[i] - t[i];
        acc += d * d;
    }
    const float s = block_sum(acc, scratch);
    if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

extern "C" __global__ void mse_finish(const float* __restrict__ partials,
                                      float* __restrict__ out, int count, int n) {
    __shared__ float scratch[REDUCE_THREADS];
    float acc = 0.0f;
    for (int i = threadIdx.x; i < count; i += REDUCE_THREADS) acc += partials[i];
    const float s = block_sum(acc, scratch);
    if (threadIdx.x == 0) out[0] = s / (float)n;
}

extern "C" __global__ void mse_backward(const float* __restrict__ p, const float* __restrict__ t,
                                        const float* __restrict__ dy, float* __restrict__ dp,
                                        int n) {
    const float s = 2.0f * dy[0] / (float)n;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        dp[i] = s * (p[i] - t[i]);
    }
}
