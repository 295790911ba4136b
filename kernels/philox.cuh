// Philox4x32-10 and the normal draws of amortize: a line-by-line copy of src/rng.rs
// (DESIGN.md, contract 3). Every backend must produce the same uint32 stream bit for bit.
//
//   key     = (seed low word, seed high word)
//   counter = (stream, step, lane, block)
//   round r (10 rounds; the key is bumped by the Weyl constants before rounds 1..9):
//     (hi0, lo0) = M0 * c0,  (hi1, lo1) = M1 * c2           (32x32 -> 64-bit products)
//     c = (hi1 ^ c1 ^ k0,  lo1,  hi0 ^ c3 ^ k1,  lo0)
//   uniform_open01(x) = ((x >> 9) + 0.5) * 2^-23            in the open interval (0, 1)
//   box_muller(x0, x1): r = sqrt(-2 ln u1), a = 2*pi*u2, (r cos a, r sin a)
//
// The uint32 words and the uniforms are exact in every backend. The normals go through
// logf/sqrtf/cosf/sinf, whose last bit may differ between CUDA's libdevice and the host
// libm: they agree to a few ulp (the parity test checks them at 1e-5).
//
// This header has no #include of its own: NVRTC compiles it as text prepended to the
// kernel file that names it (see src/backend/cuda.rs, `kernel_source`).
#pragma once

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

/// Philox4x32-10 of one counter under one key.
__device__ __forceinline__ uint4 philox4x32_10(uint4 c, uint2 k) {
#pragma unroll
    for (int round = 0; round < 10; ++round) {
        if (round > 0) {
            k.x += PHILOX_W0;
            k.y += PHILOX_W1;
        }
        const unsigned int hi0 = __umulhi(PHILOX_M0, c.x);
        const unsigned int lo0 = PHILOX_M0 * c.x;
        const unsigned int hi1 = __umulhi(PHILOX_M1, c.z);
        const unsigned int lo1 = PHILOX_M1 * c.z;
        c = make_uint4(hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0);
    }
    return c;
}

/// The key for a 64-bit seed given as two words.
__device__ __forceinline__ uint2 philox_key(unsigned int seed_lo, unsigned int seed_hi) {
    return make_uint2(seed_lo, seed_hi);
}

/// A word mapped to the open interval (0, 1): the top 23 bits, centred in their bin.
/// Both operations are exact in f32, so this matches the CPU bit for bit.
__device__ __forceinline__ float uniform_open01(unsigned int x) {
    return (__uint2float_rn(x >> 9) + 0.5f) * (1.0f / 8388608.0f);
}

/// Two standard normals from two words by Box-Muller.
__device__ __forceinline__ float2 box_muller(unsigned int x0, unsigned int x1) {
    const float u1 = uniform_open01(x0);
    const float u2 = uniform_open01(x1);
    const float r = sqrtf(-2.0f * logf(u1));
    const float angle = 6.28318530717958647692f * u2;
    return make_float2(r * cosf(angle), r * sinf(angle));
}
