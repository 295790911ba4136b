// logsumexp over the last axis of [rows, cols] and its backward:
//   logsumexp:          out_r = m_r + ln sum_j exp(x_rj - m_r), m_r = max_j x_rj
//                       (-inf for a row whose max is -inf)
//   logsumexp_backward: dx_rj = dy_r exp(x_rj - lse_r)
// Forward: one block of REDUCE_THREADS per row, deterministic block reductions.
// Backward: one thread per element, grid-stride.
#include "block_reduce.cuh"

extern "C" __global__ void logsumexp(const float* __restrict__ x, float* __restrict__ out,
                                     int rows, int cols) {
    __shared__ float scratch[REDUCE_THREADS];
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const float* xr = x + r * cols;
        float m = NEG_INF_F;
        for (int j = threadIdx.x; j < cols; j += REDUCE_THREADS) m = fmaxf(m, xr[j]);
        m = block_max(m, scratch);
        float s = 0.0f;
        for (int j = threadIdx.x; j < cols; j += REDUCE_THREADS) s += expf(xr[j] - m);
        s = block_sum(s, scratch);
        if (threadIdx.x == 0) out[r] = m == NEG_INF_F ? NEG_INF_F : m + logf(s);
    }
}

extern "C" __global__ void logsumexp_backward(const float* __restrict__ x,
                                              const float* __restrict__ lse,
                                              const float* __restrict__ dy,
                                              float* __restrict__ dx, int n, int cols) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        const long long r = i / cols;
        dx[i] = dy[r] * expf(x[i] - lse[r]);
    }
}
