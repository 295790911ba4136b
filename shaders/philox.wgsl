// Philox4x32-10 (Salmon et al. 2011), the one RNG of amortize (DESIGN.md contract 3),
// line for line the same as src/rng.rs:
//   key = (seed low word, seed high word); counter = (stream, step, lane, block): block b
//   of the words of (stream, step, lane) is the counter (stream, step + b div 2³², lane,
//   b mod 2³²), as `PhiloxStream::block`;
//   10 rounds of  (c0, c1, c2, c3) ← (hi(M1·c2) ⊕ c1 ⊕ k0, lo(M1·c2), hi(M0·c0) ⊕ c3 ⊕ k1, lo(M0·c0))
//   with the key bumped by (W0, W1) before every round but the first.
// WGSL has no 64-bit multiply: the high word is built from 16-bit halves exactly as
// `mulhi_16bit_halves` does; the low word is the wrapping 32-bit product.
// uniform_open01(x) = ((x >> 9) + 0.5) · 2⁻²³ ∈ (0, 1);
// box_muller(x0, x1) = r·(cos 2πu₂, sin 2πu₂), r = √(−2 ln u₁), u = uniform_open01(x).
//
// Functions only, no bindings or entry points: WGSL has no include, so the Rust side
// compiles this file in front of philox_fill.wgsl (the test kernels) and of
// score_sampler.wgsl (the fused samplers), as kernels/philox.cuh is included in CUDA.

const PHILOX_M0: u32 = 0xD2511F53u;
const PHILOX_M1: u32 = 0xCD9E8D57u;
const PHILOX_W0: u32 = 0x9E3779B9u;
const PHILOX_W1: u32 = 0xBB67AE85u;
const TAU: f32 = 6.28318530717958647692;

fn mulhi_16bit_halves(a: u32, b: u32) -> u32 {
    let a_lo = a & 0xFFFFu;
    let a_hi = a >> 16u;
    let b_lo = b & 0xFFFFu;
    let b_hi = b >> 16u;
    let lo_lo = a_lo * b_lo;
    let hi_lo = a_hi * b_lo;
    let lo_hi = a_lo * b_hi;
    let hi_hi = a_hi * b_hi;
    let middle = (lo_lo >> 16u) + (hi_lo & 0xFFFFu) + (lo_hi & 0xFFFFu);
    return hi_hi + (hi_lo >> 16u) + (lo_hi >> 16u) + (middle >> 16u);
}

fn philox4x32_10(counter: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
    var c = counter;
    var k = key;
    for (var round = 0u; round < 10u; round++) {
        if (round > 0u) {
            k = k + vec2<u32>(PHILOX_W0, PHILOX_W1);
        }
        let hi0 = mulhi_16bit_halves(PHILOX_M0, c.x);
        let lo0 = PHILOX_M0 * c.x;
        let hi1 = mulhi_16bit_halves(PHILOX_M1, c.z);
        let lo1 = PHILOX_M1 * c.z;
        c = vec4<u32>(hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0);
    }
    return c;
}

fn uniform_open01(x: u32) -> f32 {
    return (f32(x >> 9u) + 0.5) * (1.0 / 8388608.0);
}

fn box_muller(x0: u32, x1: u32) -> vec2<f32> {
    let u1 = uniform_open01(x0);
    let u2 = uniform_open01(x1);
    let r = sqrt(-2.0 * log(u1));
    let angle = TAU * u2;
    return vec2<f32>(r * cos(angle), r * sin(angle));
}
