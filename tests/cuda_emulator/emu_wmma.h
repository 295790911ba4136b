// The tensor-core helpers of kernels/matmul_tf32.cu (inline PTX there) as C++, for the CUDA
// emulator: the test harness drops the file's functions that hold inline PTX and includes
// this header in their place, inside the file's own namespace. The signatures are the
// file's; the semantics are PTX's for the shapes it uses:
//   to_tf32    cvt.rna.tf32.f32: keep 10 mantissa bits, round to nearest, ties away;
//   load_a     wmma.load.a  m16n16k8 row: a 16 x 8 block of TF32 values at a shared address;
//   load_b     wmma.load.b  m16n16k8 row: an 8 x 16 block;
//   mma        wmma.mma     acc += A B, f32 accumulation;
//   store_c    wmma.store.d m16n16k8 row: the 16 x 16 accumulator to a shared address.
// A fragment's layout across lanes is unspecified in PTX; here lane l holds elements
// 4l..4l+3 of A or B and 8l..8l+7 of the accumulator, row-major. A kernel that uses the
// fragments only through these calls (as matmul_tf32.cu does) cannot tell. The products
// are f32 multiply-adds in k order: within matmul_tf32.cu's stated tolerance of the
// tensor cores' (exact products, f32 sums).

inline float to_tf32(float x) {
    unsigned u = __float_as_uint(x);
    if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0x1000u) & 0xffffe000u;  // finite
    return __uint_as_float(u);
}

inline void load_a(unsigned (&a)[4], unsigned addr, int lda) {
    const float* p = static_cast<const float*>(emu::shared_pointer(addr));
    for (int j = 0; j < 4; ++j) {
        const int e = 4 * static_cast<int>(emu::warp_lane()) + j;
        a[j] = __float_as_uint(p[(e / 8) * lda + e % 8]);
    }
}

inline void load_b(unsigned (&b)[4], unsigned addr, int ldb) {
    const float* p = static_cast<const float*>(emu::shared_pointer(addr));
    for (int j = 0; j < 4; ++j) {
        const int e = 4 * static_cast<int>(emu::warp_lane()) + j;
        b[j] = __float_as_uint(p[(e / 16) * ldb + e % 16]);
    }
}

inline void mma(float (&acc)[8], const unsigned (&a)[4], const unsigned (&b)[4]) {
    // The warp's fragments meet in a per-warp exchange, as the tensor core gathers them.
    static thread_local float a_tile[32][16 * 8], b_tile[32][8 * 16];
    const unsigned warp = emu::warp_index(), lane = emu::warp_lane();
    for (int j = 0; j < 4; ++j) {
        a_tile[warp][4 * lane + j] = __uint_as_float(a[j]);
        b_tile[warp][4 * lane + j] = __uint_as_float(b[j]);
    }
    __syncwarp();
    for (int j = 0; j < 8; ++j) {
        const int e = 8 * static_cast<int>(lane) + j, r = e / 16, c = e % 16;
        float s = acc[j];
        for (int k = 0; k < 8; ++k) s = fmaf(a_tile[warp][r * 8 + k], b_tile[warp][k * 16 + c], s);
        acc[j] = s;
    }
    // Every lane has read the exchange before the next call overwrites it.
    __syncwarp();
}

inline void store_c(unsigned addr, const float (&acc)[8], int ldc) {
    float* p = static_cast<float*>(emu::shared_pointer(addr));
    for (int j = 0; j < 8; ++j) {
        const int e = 8 * static_cast<int>(emu::warp_lane()) + j;
        p[(e / 16) * ldc + e % 16] = acc[j];
    }
}
