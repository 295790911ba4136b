// Layer norm over the last axis of x = [rows, cols]:
//   mu_r = mean_j x_rj,  var_r = mean_j (x_rj - mu_r)^2 (population, as PyTorch),
//   rstd_r = 1 / sqrt(var_r + eps),  y_rj = (x_rj - mu_r) rstd_r gamma_j + beta_j.
// Backward, with xhat = (x - mu) rstd and g = dy gamma:
//   dx_rj    = rstd_r (g_rj - mean_j g_rj - xhat_rj mean_j (g_rj xhat_rj))
//   dgamma_j = sum_r dy_rj xhat_rj,   dbeta_j = sum_r dy_rj
// layer_norm and layer_norm_backward_dx: one block of REDUCE_THREADS per row (two-pass
// mean then variance, deterministic block reductions). layer_norm_backward_params: blocks
// of (32, 8) threads over 32 columns, rows summed in a fixed order as in reduce_rows.
#include "block_reduce.cuh"

extern "C" __global__ void layer_norm(const float* __restrict__ x,
                                      const float* __restrict__ gamma,
                                      const float* __restrict__ beta, float* __restrict__ y,
                                      float* __restrict__ mean, float* __restrict__ rstd,
                                      int rows, int cols, float eps) {
    __shared__ float scratch[REDUCE_THREADS];
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const float* xr = x + r * cols;
        float s = 0.0f;
        for (int j = threadIdx.x; j < cols; j += REDUCE_THREADS) s += xr[j];
        const float mu = block_sum(s, scratch) / (float)cols;
        float q = 0.0f;
        for (int j = threadIdx.x; j < cols; j += REDUCE_THREADS) {
            const float d = xr[j] - mu;
            q += d * d;
        }
        const float var = block_sum(q, scratch) / (float)cols;
        const float rs = 1.0f / sqrtf(var + eps);
        if (threadIdx.x == 0) {
            mean[r] = mu;
            rstd[r] = rs;
        }
        for (int j = threadIdx.x; j < cols; j += REDUCE_THREADS)
            y[r * cols + j] = (xr[j] - mu) * rs * gamma[j] + beta[j];
    }
}

extern "C" __global__ void layer_norm_backward_dx(const float* __restrict__ x,
                                                  const float* __restrict__ gamma,
                                                  const float* __restrict__ mean,
                                                  const float* __restrict__ rstd,
                                                  const float* __restrict__ dy,
                                                  float* __restrict__ dx, int rows, int cols) {
    __shared__ float scratch[REDUCE_THREADS];
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const float* xr = x + r * cols;
        const float* gr = dy + r * cols;
        const float mu = mean[r];
        const float rs = rstd[r];
        float sg = 0.0f, sgx = 0.0f;
        for (int j = threadIdx.x; j < cols; j += REDUCE_THREADS) {
            const float g = gr[j] * gamma[j];
            sg += g;
            sgx += g * ((xr[j] - mu) * rs);
        }
        const float mean_g = block_sum(sg, scratch) / (float)cols;
        const float mean_gx = block_sum(sgx, scratch) / (float)cols;
        for (int j = threadIdx.x; j < cols; j += REDUCE_THREADS) {
            const float g = gr[j] * gamma[j];
            const float xhat = (xr[j] - mu) * rs;
            dx[r * cols + j] = rs * (g - mean_g - xhat * mean_gx);
        }
    }
}

extern "C" __global__ void layer_norm_backward_params(const float* __restrict__ x,
                                                      const float* __restrict__ mean,
                                                      const float* __restrict__ rstd,
                                                      const float* __restrict__ dy,
                                                      float* __restrict__ dgamma,
                                                      float* __restrict__ dbeta, int rows,
                                                      int cols) {
    __shared__ float part_g[8][33];
    __shared__ float part_b[8][33];
    const int j = blockIdx.x * 32 + threadIdx.x;
    float ag = 0.0f, ab = 0.0f;
    if (j < cols) {
        for (long long r = threadIdx.y; r < rows; r += 8) {
            const float g = dy[r * cols + j];
            ag += g * ((x[r * cols + j] - mean[r]) * rstd[r]);
            ab += g;
        }
    }
    part_g[threadIdx.y][threadIdx.x] = ag;
    part_b[threadIdx.y][threadIdx.x] = ab;
    __syncthreads();
    if (threadIdx.y == 0 && j < cols) {
        float sg = 0.0f, sb = 0.0f;
#pragma unroll
        for (int q = 0; q < 8; ++q) {
            sg += part_g[q][threadIdx.x];
            sb += part_b[q][threadIdx.x];
        }
        dgamma[j] = sg;
        dbeta[j] = sb;
    }
}
