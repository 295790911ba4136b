// Matrix product, f32, batched: for each b < batch,
//   C[b, i, j] = sum_{p < k} A'[b, i, p] B'[b, p, j]       (i < m, j < n)
// with the layouts of MatLayout (src/backend/mod.rs), all row-major:
//   matmul_nn: A'[i, p] = A[i, p] (A is [m, k]),  B'[p, j] = B[p, j] (B is [k, n])
//   matmul_nt: A'[i, p] = A[i, p],                B'[p, j] = B[j, p] (B is [n, k])
//   matmul_tn: A'[i, p] = A[p, i] (A is [k, m]),  B'[p, j] = B[p, j]
// Batch strides are m*k, k*n and m*n.
//
// Shared-memory tiling with register blocking: a block of 16 x 16 = 256 threads computes
// a BM x BN = 64 x 64 tile of C; it walks k in slabs of BK = 16, staging the A and B slabs
// in shared memory (loads coalesced along whichever axis is contiguous in memory for the
// layout, zero-padded at the edges), and each thread accumulates a 4 x 4 register block at
// rows ty + 16 a and columns tx + 16 b (a, b < 4), which keeps shared-memory reads
// conflict-free. Each C element is one thread's fused multiply-add chain over p = 0..k-1
// in order: deterministic, and k = 0 writes zeros. grid = (ceil(m/64), ceil(n/64),
// min(batch, 65535)); blockIdx.z strides over batches beyond that.
#define BM 64
#define BN 64
#define BK 16
#define TPB 256

// LAYOUT: 0 = NN, 1 = NT, 2 = TN.
template <int LAYOUT>
__device__ __forceinline__ void matmul_tile(const float* __restrict__ a,
                                            const float* __restrict__ b,
                                            float* __restrict__ c, int m, int k, int n) {
    __shared__ float As[BK][BM + 1];
    __shared__ float Bs[BK][BN + 1];
    const int tid = threadIdx.x;
    const int tx = tid % 16;
    const int ty = tid / 16;
    const int row0 = blockIdx.x * BM;
    const int col0 = blockIdx.y * BN;
    float acc[4][4];
#pragma unroll
    for (int u = 0; u < 4; ++u)
#pragma unroll
        for (int v = 0; v < 4; ++v) acc[u][v] = 0.0f;

    for (int p0 = 0; p0 < k; p0 += BK) {
        // A slab: BM x BK = 1024 elements, 4 per thread.
#pragma unroll
        for (int q = 0; q < (BM * BK) / TPB; ++q) {
            const int e = tid + q * TPB;
            int i, p;
            if (LAYOUT == 2) {  // A is [k, m]: contiguous along i
                p = e / BM;
                i = e % BM;
            } else {  // A is [m, k]: contiguous along p
                i = e / BK;
                p = e % BK;
            }
            const int gi = row0 + i, gp = p0 + p;
            float val = 0.0f;
            if (gi < m && gp < k)
                val = LAYOUT == 2 ? a[(long long)gp * m + gi] : a[(long long)gi * k + gp];
            As[p][i] = val;
        }
        // B slab: BK x BN = 1024 elements, 4 per thread.
#pragma unroll
        for (int q = 0; q < (BK * BN) / TPB; ++q) {
            const int e = tid + q * TPB;
            int p, j;
            if (LAYOUT == 1) {  // B is [n, k]: contiguous along p
                j = e / BK;
                p = e % BK;
            } else {  // B is [k, n]: contiguous along j
                p = e / BN;
                j = e % BN;
            }
            const int gj = col0 + j, gp = p0 + p;
            float val = 0.0f;
            if (gj < n && gp < k)
                val = LAYOUT == 1 ? b[(long long)gj * k + gp] : b[(long long)gp * n + gj];
            Bs[p][j] = val;
        }
        __syncthreads();
#pragma unroll
        for (int p = 0; p < BK; ++p) {
            float ar[4], br[4];
#pragma unroll
            for (int u = 0; u < 4; ++u) ar[u] = As[p][ty + 16 * u];
#pragma unroll
            for (int v = 0; v < 4; ++v) br[v] = Bs[p][tx + 16 * v];
#pragma unroll
            for (int u = 0; u < 4; ++u)
#pragma unroll
                for (int v = 0; v < 4; ++v) acc[u][v] = fmaf(ar[u], br[v], acc[u][v]);
        }
        __syncthreads();
    }
#pragma unroll
    for (int u = 0; u < 4; ++u) {
        const int gi = row0 + ty + 16 * u;
        if (gi >= m) continue;
#pragma unroll
        for (int v = 0; v < 4; ++v) {
            const int gj = col0 + tx + 16 * v;
            if (gj < n) c[(long long)gi * n + gj] = acc[u][v];
        }
    }
}

#define MATMUL_KERNEL(NAME, LAYOUT)                                                        \
    extern "C" __global__ void __launch_bounds__(TPB)                                      \
        NAME(const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ c, \
             int batch, int m, int k, int n) {                                             \
        for (int z = blockIdx.z; z < batch; z += gridDim.z) {                              \
            matmul_tile<LAYOUT>(a + (long long)z * m * k, b + (long long)z * k * n,        \
                                c + (long long)z * m * n, m, k, n);                        \
        }                                                                                  \
    }

MATMUL_KERNEL(matmul_nn, 0)
MATMUL_KERNEL(matmul_nt, 1)
MATMUL_KERNEL(matmul_tn, 2)
