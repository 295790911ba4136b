// Softmax family over the last axis of [rows, cols], one block of REDUCE_THREADS per row
// (grid-stride over rows), deterministic block reductions (block_reduce.cuh):
//   softmax:              m = max_j x_j,  y_j = exp(x_j - m) / sum_j' exp(x_j' - m)
//   softmax_backward:     dx_j = y_j (dy_j - sum_j' dy_j' y_j')
//   log_softmax:          y_j = x_j - lse,  lse = m + ln sum_j exp(x_j - m)  (-inf if m = -inf)
//   log_softmax_backward: dx_j = dy_j - exp(y_j) sum_j' dy_j'
#include "block_reduce.cuh"

extern "C" __global__ void softmax(const float* __restrict__ x, float* __restrict__ y, int rows,
                                   int cols) {
    __shared__ float scratch[REDUCE_THREADS];
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const float* xr = x + r * cols;
        float* yr = y + r * cols;
        float m = NEG_INF_F;
        for (int j = threadIdx.x; j < cols; j += REDUCE_THREADS) m = fmaxf(m, xr[j]);
        m = block_max(m, scratch);
        float s = 0.0f;
        for (int j = threadIdx.x; j < cols; j += REDUCE_THREADS) s += expf(xr[j] - m);
        s = block_sum(s, scratch);
        for (int j = threadIdx.x; j < cols; j += REDUCE_THREADS) yr[j] = expf(xr[j] - m) / s;
    }
}

extern "C" __global__ void softmax_backward(const float* __restrict__ y,
                                            const float* __restrict__ dy,
                                            float* __restrict__ dx, int rows, int cols) {
    __shared__ float scratch[REDUCE_THREADS];
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const float* yr = y + r * cols;
        const float* gr = dy + r * cols;
        float dot = 0.0f;
        for (int j = threadIdx.x; j < cols; j += REDUCE_THREADS) dot += yr[j] * gr[j];
        dot = block_sum(dot, scratch);
        for (int j = threadIdx.x; j < cols; j += REDUCE_THREADS)
            dx[r * cols + j] = yr[j] * (gr[j] - dot);
    }
}

extern "C" __global__ void log_softmax(const float* __restrict__ x, float* __restrict__ y,
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
        const float lse = m == NEG_INF_F ? NEG_INF_F : m + logf(s);
        for (int j = threadIdx.x; j < cols; j += REDUCE_THREADS) y[r * cols + j] = xr[j] - lse;
    }
}

extern "C" __global__ void log_softmax_backward(const float* __restrict__ y,
                                                const float* __restrict__ dy,
                                                float* __restrict__ dx, int rows, int cols) {
    __shared__ float scratch[REDUCE_THREADS];
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const float* yr = y + r * cols;
        const float* gr = dy + r * cols;
        float total = 0.0f;
        for (int j = threadIdx.x; j < cols; j += REDUCE_THREADS) total += gr[j];
        total = block_sum(total, scratch);
        for (int j = threadIdx.x; j < cols; j += REDUCE_THREADS)
            dx[r * cols + j] = gr[j] - expf(yr[j]) * total;
    }
}
