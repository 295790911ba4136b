// Matrix product on TF32 tensor cores, batched: the op of matmul.cu (same entries, same
// arguments, same layouts and batch strides) with its inputs rounded to TF32. Opt-in:
// the backend launches it only under MatmulPrecision::Tf32 (src/backend/cuda.rs).
//   C[b, i, j] = sum_{p < k} tf32(A'[b, i, p]) tf32(B'[b, p, j])       (i < m, j < n)
//
// Precision. tf32(x) keeps 10 of f32's 23 mantissa bits, rounding to nearest with ties
// away from zero (cvt.rna.tf32.f32, what <mma.h>'s wmma::__float_to_tf32 does), so
// |tf32(x) - x| <= 2^-11 |x|. The tensor cores form each product of two TF32 numbers
// exactly and add it to an f32 accumulator (truncating: at worst 2^-23 relative per
// addition). Hence, with A'_i row i of A' and B'_j column j of B',
//   |C_ij - sum_p A'_ip B'_pj| <= (2^-10 + k 2^-23) sum_p |A'_ip B'_pj|
//                              <= (2^-10 + k 2^-23) |A'_i| |B'_j|      (Cauchy-Schwarz),
// about 1e-3 of the row norms' product, where matmul.cu's bound is k 2^-24 of it.
// tests/cuda_parity.rs checks |C_ij - C_cpu_ij| <= 2e-3 |A'_i| |B'_j|: the bound above plus
// the CPU reference's own f32 rounding (k 2^-24) stays below 2e-3 for k <= 4096.
//
// Launch: 256 threads = 8 warps compute a BM x BN = 64 x 64 tile of C, each warp a 32 x 16
// piece as two 16 x 16 WMMA accumulators (shape m16n16k8). k is walked in slabs of BK = 32:
// `stage` copies the A and B slabs to shared memory (coalesced along whichever axis is
// contiguous for the layout, zero-padded at the edges, so any m, k, n works), rounding each
// element to TF32 once, and the tensor cores consume them 8 deep. Each warp writes its
// accumulators through a 16 x 16 shared scratch tile with guarded stores. The order of the
// sums depends only on the sizes: deterministic on a given GPU, and k = 0 writes zeros.
// grid = (ceil(m/64), ceil(n/64), min(batch, 65535)), as matmul.cu; blockIdx.z strides
// over batches beyond that.
//
// WMMA through inline PTX (wmma.load / wmma.mma / wmma.store): NVRTC has no <mma.h>.
// TF32 tensor cores need compute capability 8.0; the backend refuses older devices.
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ < 800
#error "matmul_tf32.cu needs compute_80 or newer (TF32 tensor cores)"
#endif

#define BM 64
#define BN 64
#define BK 32
#define TPB 256
// Row strides of the shared tiles: multiples of 4 floats, as WMMA needs, padded by 4 so
// that consecutive rows start in different banks.
#define LDA (BK + 4)
#define LDB (BN + 4)

__device__ __forceinline__ float to_tf32(float x) {
    unsigned r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
    return __uint_as_float(r);
}

// The WMMA operands below are shared-memory addresses (32-bit, .shared state space) of
// row-major blocks with a row stride in floats.

// A 16 x 8 block of A' as a warp's fragment (4 TF32 values per lane).
__device__ __forceinline__ void load_a(unsigned (&a)[4], unsigned addr, int lda) {
    asm volatile("wmma.load.a.sync.aligned.row.m16n16k8.shared.tf32 {%0, %1, %2, %3}, [%4], %5;"
                 : "=r"(a[0]), "=r"(a[1]), "=r"(a[2]), "=r"(a[3])
                 : "r"(addr), "r"(lda)
                 : "memory");
}

// An 8 x 16 block of B' as a warp's fragment.
__device__ __forceinline__ void load_b(unsigned (&b)[4], unsigned addr, int ldb) {
    asm volatile("wmma.load.b.sync.aligned.row.m16n16k8.shared.tf32 {%0, %1, %2, %3}, [%4], %5;"
                 : "=r"(b[0]), "=r"(b[1]), "=r"(b[2]), "=r"(b[3])
                 : "r"(addr), "r"(ldb)
                 : "memory");
}

// acc += a b for one 16 x 16 f32 accumulator (8 values per lane).
__device__ __forceinline__ void mma(float (&acc)[8], const unsigned (&a)[4],
                                    const unsigned (&b)[4]) {
    asm volatile(
        "wmma.mma.sync.aligned.row.row.m16n16k8.f32.tf32.tf32.f32 "
        "{%0, %1, %2, %3, %4, %5, %6, %7}, {%8, %9, %10, %11}, {%12, %13, %14, %15}, "
        "{%0, %1, %2, %3, %4, %5, %6, %7};"
        : "+f"(acc[0]), "+f"(acc[1]), "+f"(acc[2]), "+f"(acc[3]), "+f"(acc[4]), "+f"(acc[5]),
          "+f"(acc[6]), "+f"(acc[7])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(b[2]),
          "r"(b[3]));
}

// Writes one 16 x 16 accumulator as a row-major block.
__device__ __forceinline__ void store_c(unsigned addr, const float (&acc)[8], int ldc) {
    asm volatile(
        "wmma.store.d.sync.aligned.row.m16n16k8.shared.f32 "
        "[%0], {%1, %2, %3, %4, %5, %6, %7, %8}, %9;" ::"r"(addr),
        "f"(acc[0]), "f"(acc[1]), "f"(acc[2]), "f"(acc[3]), "f"(acc[4]), "f"(acc[5]),
        "f"(acc[6]), "f"(acc[7]), "r"(ldc)
        : "memory");
}

__device__ __forceinline__ unsigned shared_addr(const float* p) {
    return (unsigned)__cvta_generic_to_shared(p);
}

// Stores tf32(src[r0 + r, c0 + c]) at dst[r * dst_row + c * dst_col] for r < TR, c < TC,
// where src is a row-major [rows, cols] matrix; zeros outside it. Threads run along c, the
// contiguous axis of src, so each warp reads 32 consecutive floats.
template <int TR, int TC>
__device__ __forceinline__ void stage(float* dst, int dst_row, int dst_col,
                                      const float* __restrict__ src, int rows, int cols,
                                      int r0, int c0) {
    const int c = threadIdx.x % TC;
    const int r = threadIdx.x / TC;
    const bool in_col = c0 + c < cols;
    const float* from = src + (long long)(r0 + r) * cols + c0 + c;
#pragma unroll
    for (int q = 0; q < (TR * TC) / TPB; ++q) {
        const int rq = r + q * (TPB / TC);
        float val = 0.0f;
        if (in_col && r0 + rq < rows) val = from[(long long)q * (TPB / TC) * cols];
        dst[rq * dst_row + c * dst_col] = to_tf32(val);
    }
}

// LAYOUT: 0 = NN, 1 = NT, 2 = TN.
template <int LAYOUT>
__device__ __forceinline__ void matmul_tf32_tile(const float* __restrict__ a,
                                                 const float* __restrict__ b,
                                                 float* __restrict__ c, int m, int k, int n) {
    // 32-byte alignment: every fragment pointer below is a multiple of 8 floats from these.
    __shared__ __align__(32) float As[BM][LDA];
    __shared__ __align__(32) float Bs[BK][LDB];
    __shared__ __align__(32) float Cs[TPB / 32][16 * 16];
    const int tid = threadIdx.x;
    const int warp = tid / 32, lane = tid % 32;
    const int wm = (warp / 4) * 32, wn = (warp % 4) * 16;  // this warp's 32 x 16 of the tile
    const int row0 = blockIdx.x * BM;
    const int col0 = blockIdx.y * BN;
    float acc[2][8];
#pragma unroll
    for (int u = 0; u < 2; ++u)
#pragma unroll
        for (int r = 0; r < 8; ++r) acc[u][r] = 0.0f;

    for (int p0 = 0; p0 < k; p0 += BK) {
        if (LAYOUT == 2)  // A is [k, m]
            stage<BK, BM>(&As[0][0], 1, LDA, a, k, m, p0, row0);
        else  // A is [m, k]
            stage<BM, BK>(&As[0][0], LDA, 1, a, m, k, row0, p0);
        if (LAYOUT == 1)  // B is [n, k]
            stage<BN, BK>(&Bs[0][0], 1, LDB, b, n, k, col0, p0);
        else  // B is [k, n]
            stage<BK, BN>(&Bs[0][0], LDB, 1, b, k, n, p0, col0);
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < BK; kk += 8) {
            unsigned af[2][4], bf[4];
            load_b(bf, shared_addr(&Bs[kk][wn]), LDB);
#pragma unroll
            for (int u = 0; u < 2; ++u) {
                load_a(af[u], shared_addr(&As[wm + 16 * u][kk]), LDA);
                mma(acc[u], af[u], bf);
            }
        }
        __syncthreads();
    }
    const float* scratch = Cs[warp];
#pragma unroll
    for (int u = 0; u < 2; ++u) {
        store_c(shared_addr(scratch), acc[u], 16);
        __syncwarp();
#pragma unroll
        for (int t = 0; t < 8; ++t) {
            const int e = lane + 32 * t;
            const int gi = row0 + wm + 16 * u + e / 16;
            const int gj = col0 + wn + e % 16;
            if (gi < m && gj < n) c[(long long)gi * n + gj] = scratch[e];
        }
        __syncwarp();
    }
}

#define MATMUL_TF32_KERNEL(NAME, LAYOUT)                                                   \
    extern "C" __global__ void __launch_bounds__(TPB)                                      \
        NAME(const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ c, \
             int batch, int m, int k, int n) {                                             \
        for (int z = blockIdx.z; z < batch; z += gridDim.z) {                              \
            matmul_tf32_tile<LAYOUT>(a + (long long)z * m * k, b + (long long)z * k * n,   \
                                     c + (long long)z * m * n, m, k, n);                   \
        }                                                                                  \
    }

MATMUL_TF32_KERNEL(matmul_tf32_nn, 0)
MATMUL_TF32_KERNEL(matmul_tf32_nt, 1)
MATMUL_TF32_KERNEL(matmul_tf32_tn, 2)
