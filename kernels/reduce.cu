// Sums and means over rows or over the last axis of x = [rows, cols].
//   reduce_rows:              out[j] = (sum_r x[r, j]) / d,  d = rows for a mean, 1 for a sum
//   reduce_rows_backward:     dx[r, j] = dy[j] * s           (s = 1/d, computed on the host)
//   reduce_features:          out[r] = (sum_j x[r, j]) / d,  d = cols for a mean, 1 for a sum
//   reduce_features_backward: dx[r, j] = dy[r] * s
// Launch shapes: reduce_rows uses blocks of (32, 8) threads, 32 columns per block, each of
// the 8 thread rows summing rows ty, ty+8, ... in order, then the 8 partials are added in
// order; reduce_features uses one block of REDUCE_THREADS per row. Backward kernels: one
// thread per element, grid-stride. Fixed summation order, no atomics.
#include "block_reduce.cuh"

extern "C" __global__ void reduce_rows(const float* __restrict__ x, float* __restrict__ out,
                                       int rows, int cols, int mean) {
    __shared__ float part[8][33];
    const int j = blockIdx.x * 32 + threadIdx.x;
    float acc = 0.0f;
    if (j < cols) {
        for (long long r = threadIdx.y; r < rows; r += 8) acc += x[r * cols + j];
    }
    part[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && j < cols) {
        float s = 0.0f;
#pragma unroll
        for (int q = 0; q < 8; ++q) s += part[q][threadIdx.x];
        out[j] = mean ? s / (float)rows : s;
    }
}

extern "C" __global__ void reduce_rows_backward(const float* __restrict__ dy,
                                                float* __restrict__ dx, int n, int cols,
                                                float s) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        dx[i] = dy[i % cols] * s;
    }
}

extern "C" __global__ void reduce_features(const float* __restrict__ x, float* __restrict__ out,
                                           int rows, int cols, int mean) {
    __shared__ float scratch[REDUCE_THREADS];
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const float* row = x + r * cols;
        float acc = 0.0f;
        for (int j = threadIdx.x; j < cols; j += REDUCE_THREADS) acc += row[j];
        const float s = block_sum(acc, scratch);
        if (threadIdx.x == 0) out[r] = mean ? s / (float)cols : s;
    }
}

extern "C" __global__ void reduce_features_backward(const float* __restrict__ dy,
                                                    float* __restrict__ dx, int n, int cols,
                                                    float s) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        dx[i] = dy[i / cols] * s;
    }
}
