//! Philox4x32-10, the one random number generator of amortize (DESIGN.md, contract 3).
//!
//! Philox is counter based: the output is a pure function of a 128-bit counter and a
//! 64-bit key, so any thread on any backend can draw its own numbers without shared
//! state. amortize uses
//!
//! * key = the 64-bit seed, split as `(seed low word, seed high word)`;
//! * counter = `(stream, step, lane, block)`. `stream` separates purposes
//!   ([`streams`]), `step` is the training step or sampler step, `lane` the sample or
//!   row, and `block` counts further groups of four words within one `(stream, step,
//!   lane)`. The contract writes the counter as `(stream, step, lane, 0)`: block 0 is
//!   that counter, and blocks 1, 2, ... are where a draw needs more than four words.
//!
//! Everything below is written with 32-bit integer arithmetic and one 32×32→64
//! multiply, so the CUDA (`kernels/philox.cuh`) and WGSL (`shaders/philox.wgsl`) copies
//! are line-by-line translations; WGSL has no 64-bit multiply and builds the high word
//! from 16-bit halves exactly as [`mulhi_16bit_halves`] does.
//!
//! Uniforms: `u = ((x >> 9) + 0.5) · 2⁻²³`, in the open interval (0, 1), so `ln u` is
//! always finite. Normals: Box–Muller on consecutive pairs of words,
//! `z₀ = r cos(2π u₂)`, `z₁ = r sin(2π u₂)` with `r = √(−2 ln u₁)`.

/// The first Philox multiplier.
pub const PHILOX_M0: u32 = 0xD251_1F53;
/// The second Philox multiplier.
pub const PHILOX_M1: u32 = 0xCD9E_8D57;
/// The first Weyl key increment (golden ratio).
pub const PHILOX_W0: u32 = 0x9E37_79B9;
/// The second Weyl key increment (√3 − 1).
pub const PHILOX_W1: u32 = 0xBB67_AE85;
/// Rounds of the 4x32-10 variant.
pub const PHILOX_ROUNDS: usize = 10;

/// The `stream` word of the counter: one value per purpose, so that e.g. parameter
/// initialisation and minibatch shuffling never share random numbers.
pub mod streams {
    /// Parameter initialisation.
    pub const INIT: u32 = 0;
    /// Minibatch shuffling and the validation split.
    pub const SHUFFLE: u32 = 1;
    /// Simulated data and noise added during training.
    pub const DATA: u32 = 2;
    /// Sampler noise (Langevin steps, initial states).
    pub const SAMPLER: u32 = 3;
    /// MCMC: initial states, slice levels and proposals.
    pub const MCMC: u32 = 4;
    /// Test inputs.
    pub const TEST: u32 = 15;
}

/// `(hi, lo)` words of the 64-bit product `a · b`.
#[inline(always)]
pub fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let p = a as u64 * b as u64;
    ((p >> 32) as u32, p as u32)
}

/// High word of `a · b` using only 32-bit arithmetic on 16-bit halves: the form the WGSL
/// shader uses. Equal to `mulhilo(a, b).0` for all inputs.
#[inline(always)]
pub fn mulhi_16bit_halves(a: u32, b: u32) -> u32 {
    let (a_lo, a_hi) = (a & 0xFFFF, a >> 16);
    let (b_lo, b_hi) = (b & 0xFFFF, b >> 16);
    let lo_lo = a_lo * b_lo;
    let hi_lo = a_hi * b_lo;
    let lo_hi = a_lo * b_hi;
    let hi_hi = a_hi * b_hi;
    // Carry out of the middle column: at most 3 · 0xFFFF, so no 32-bit overflow.
    let middle = (lo_lo >> 16) + (hi_lo & 0xFFFF) + (lo_hi & 0xFFFF);
    hi_hi + (hi_lo >> 16) + (lo_hi >> 16) + (middle >> 16)
}

/// Philox4x32-10 of one counter under one key.
#[inline]
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for round in 0..PHILOX_ROUNDS {
        if round > 0 {
            k[0] = k[0].wrapping_add(PHILOX_W0);
            k[1] = k[1].wrapping_add(PHILOX_W1);
        }
        let (hi0, lo0) = mulhilo(PHILOX_M0, c[0]);
        let (hi1, lo1) = mulhilo(PHILOX_M1, c[2]);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// The key for a 64-bit seed.
#[inline]
pub fn key_from_seed(seed: u64) -> [u32; 2] {
    [seed as u32, (seed >> 32) as u32]
}

/// A word mapped to the open interval (0, 1): the top 23 bits, centred in their bin.
#[inline(always)]
pub fn uniform_open01(x: u32) -> f32 {
    ((x >> 9) as f32 + 0.5) * (1.0 / 8_388_608.0)
}

/// Two standard normals from two words by Box–Muller.
#[inline]
pub fn box_muller(x0: u32, x1: u32) -> (f32, f32) {
    let u1 = uniform_open01(x0);
    let u2 = uniform_open01(x1);
    let r = (-2.0 * u1.ln()).sqrt();
    let angle = std::f32::consts::TAU * u2;
    (r * angle.cos(), r * angle.sin())
}

/// A sequential reader of the words of one `(seed, stream, step, lane)`: block `k` is
/// the counter `(stream, step, lane, k)`, four words each, read in order. (Past 2³²
/// blocks it carries into the step word, so [`PhiloxStream::new`] streams never repeat.)
///
/// Samplers draw the noise of sample `lane` at chain step `step` from
/// `PhiloxStream::at_step(seed, streams::SAMPLER, step, lane)`: normals `4b..4b+4` come
/// from block `b`, Box–Muller on words (0, 1) then (2, 3), exactly as a GPU thread does.
#[derive(Clone, Debug)]
pub struct PhiloxStream {
    key: [u32; 2],
    stream: u32,
    step: u32,
    lane: u32,
    next_block: u64,
    buffer: [u32; 4],
    used: usize,
    spare_normal: Option<f32>,
}

impl PhiloxStream {
    /// The words of `(stream, step 0, lane)` under `seed`, from block 0.
    pub fn new(seed: u64, stream: u32, lane: u32) -> Self {
        Self::at_step(seed, stream, 0, lane)
    }

    /// The words of `(stream, step, lane)` under `seed`, from block 0.
    pub fn at_step(seed: u64, stream: u32, step: u32, lane: u32) -> Self {
        Self {
            key: key_from_seed(seed),
            stream,
            step,
            lane,
            next_block: 0,
            buffer: [0; 4],
            used: 4,
            spare_normal: None,
        }
    }

    /// The four words of block `block`, without moving the reader.
    pub fn block(&self, block: u64) -> [u32; 4] {
        let step = self.step.wrapping_add((block >> 32) as u32);
        philox4x32_10([self.stream, step, self.lane, block as u32], self.key)
    }

    /// The next 32-bit word.
    pub fn next_u32(&mut self) -> u32 {
        if self.used == 4 {
            self.buffer = self.block(self.next_block);
            self.next_block += 1;
            self.used = 0;
        }
        let x = self.buffer[self.used];
        self.used += 1;
        x
    }

    /// A uniform draw in the open interval (0, 1).
    pub fn uniform(&mut self) -> f32 {
        uniform_open01(self.next_u32())
    }

    /// A uniform draw in `[lo, hi]` (open at both ends up to rounding).
    pub fn uniform_range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.uniform()
    }

    /// A standard normal draw; the two halves of each Box–Muller pair are used in turn.
    pub fn normal(&mut self) -> f32 {
        if let Some(z) = self.spare_normal.take() {
            return z;
        }
        let (z0, z1) = box_muller(self.next_u32(), self.next_u32());
        self.spare_normal = Some(z1);
        z0
    }

    /// A uniform integer in `0..n` by Lemire's multiply-and-reject, so no value is
    /// favoured. Panics if `n == 0`.
    pub fn below(&mut self, n: u32) -> u32 {
        assert!(n > 0, "PhiloxStream::below(0) has no valid result");
        let threshold = n.wrapping_neg() % n;
        loop {
            let (hi, lo) = mulhilo(self.next_u32(), n);
            if lo >= threshold {
                return hi;
            }
        }
    }

    /// Fisher–Yates shuffle of `items`.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u32 + 1) as usize;
            items.swap(i, j);
        }
    }

    /// Fills `out` with uniform draws in `(lo, hi)`.
    pub fn fill_uniform(&mut self, lo: f32, hi: f32, out: &mut [f32]) {
        for v in out {
            *v = self.uniform_range(lo, hi);
        }
    }

    /// Fills `out` with normal draws of the given mean and standard deviation.
    pub fn fill_normal(&mut self, mean: f32, std: f32, out: &mut [f32]) {
        for v in out {
            *v = mean + std * self.normal();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known-answer vectors of Random123 (kat_vectors, philox4x32_10).
    #[test]
    fn random123_known_answers() {
        let cases: [([u32; 4], [u32; 2], [u32; 4]); 3] = [
            (
                [0, 0, 0, 0],
                [0, 0],
                [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8],
            ),
            (
                [u32::MAX; 4],
                [u32::MAX; 2],
                [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd],
            ),
            (
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0],
                [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1],
            ),
        ];
        for (counter, key, expected) in cases {
            assert_eq!(
                philox4x32_10(counter, key),
                expected,
                "counter {counter:x?}"
            );
        }
    }

    #[test]
    fn mulhi_from_16bit_halves_matches_64bit_product() {
        let mut s = PhiloxStream::new(7, streams::TEST, 0);
        let edges = [0, 1, 0xFFFF, 0x10000, 0xFFFF_FFFF, PHILOX_M0, PHILOX_M1];
        for &a in &edges {
            for &b in &edges {
                assert_eq!(mulhi_16bit_halves(a, b), mulhilo(a, b).0, "{a:x}·{b:x}");
            }
        }
        for _ in 0..100_000 {
            let (a, b) = (s.next_u32(), s.next_u32());
            assert_eq!(mulhi_16bit_halves(a, b), mulhilo(a, b).0, "{a:x}·{b:x}");
        }
    }

    #[test]
    fn stream_blocks_follow_the_counter_contract() {
        let seed = 0x0123_4567_89ab_cdef;
        let mut s = PhiloxStream::at_step(seed, streams::SAMPLER, 7, 9);
        let first: Vec<u32> = (0..8).map(|_| s.next_u32()).collect();
        let key = [0x89ab_cdef, 0x0123_4567];
        assert_eq!(first[..4], philox4x32_10([streams::SAMPLER, 7, 9, 0], key));
        assert_eq!(first[4..], philox4x32_10([streams::SAMPLER, 7, 9, 1], key));
        assert_eq!(
            s.block(1 << 32),
            philox4x32_10([streams::SAMPLER, 8, 9, 0], key)
        );
        // Normals 0..4 of a step come from block 0: words (0, 1) then (2, 3).
        let mut z = [0.0f32; 4];
        PhiloxStream::at_step(seed, streams::SAMPLER, 7, 9).fill_normal(0.0, 1.0, &mut z);
        let (z0, z1) = box_muller(first[0], first[1]);
        let (z2, z3) = box_muller(first[2], first[3]);
        assert_eq!(z, [z0, z1, z2, z3]);
    }

    #[test]
    fn uniforms_stay_inside_the_open_interval() {
        for x in [0, 1, 511, 512, u32::MAX - 511, u32::MAX] {
            let u = uniform_open01(x);
            assert!(u > 0.0 && u < 1.0, "{x:#x} -> {u}");
        }
    }

    /// Φ by the Abramowitz–Stegun 7.1.26 erf (absolute error < 1.5e-7), far below the
    /// KS critical value used here.
    fn normal_cdf(z: f64) -> f64 {
        let x = z.abs() / std::f64::consts::SQRT_2;
        let t = 1.0 / (1.0 + 0.327_591_1 * x);
        let poly = t
            * (0.254_829_592
                + t * (-0.284_496_736
                    + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
        let erf = 1.0 - poly * (-x * x).exp();
        0.5 * (1.0 + erf.copysign(z))
    }

    #[test]
    fn normals_have_the_right_mean_variance_and_distribution() {
        const N: usize = 100_000;
        let mut z = vec![0.0f32; N];
        PhiloxStream::new(2024, streams::TEST, 3).fill_normal(0.0, 1.0, &mut z);
        let mean = z.iter().map(|&v| v as f64).sum::<f64>() / N as f64;
        let var = z.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / (N - 1) as f64;
        // Standard errors: 1/√N ≈ 0.0032 for the mean, √(2/N) ≈ 0.0045 for the variance;
        // 5 standard errors keeps a correct generator failing with probability < 1e-6.
        assert!(mean.abs() < 5.0 / (N as f64).sqrt(), "mean {mean}");
        assert!(
            (var - 1.0).abs() < 5.0 * (2.0 / N as f64).sqrt(),
            "variance {var}"
        );

        let mut sorted: Vec<f64> = z.iter().map(|&v| v as f64).collect();
        sorted.sort_by(f64::total_cmp);
        let ks = sorted
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let f = normal_cdf(v);
                (f - i as f64 / N as f64).max((i + 1) as f64 / N as f64 - f)
            })
            .fold(0.0, f64::max);
        // Critical value of the KS statistic at level 0.001 is 1.95/√N.
        assert!(ks < 1.95 / (N as f64).sqrt(), "KS statistic {ks}");
    }

    #[test]
    fn below_is_uniform_over_its_range() {
        const N: u32 = 7;
        const DRAWS: usize = 70_000;
        let mut s = PhiloxStream::new(11, streams::TEST, 0);
        let mut counts = [0usize; N as usize];
        for _ in 0..DRAWS {
            counts[s.below(N) as usize] += 1;
        }
        let expected = DRAWS as f64 / N as f64;
        let chi2: f64 = counts
            .iter()
            .map(|&c| (c as f64 - expected).powi(2) / expected)
            .sum();
        // 6 degrees of freedom: P(χ² > 22.46) = 0.001.
        assert!(chi2 < 22.46, "chi-square {chi2}, counts {counts:?}");
    }

    #[test]
    fn shuffle_is_a_permutation_and_depends_on_the_lane() {
        let mut a: Vec<u32> = (0..1000).collect();
        let mut b = a.clone();
        PhiloxStream::new(5, streams::SHUFFLE, 0).shuffle(&mut a);
        PhiloxStream::new(5, streams::SHUFFLE, 1).shuffle(&mut b);
        assert_ne!(a, b);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
        assert_ne!(a, (0..1000).collect::<Vec<_>>());
    }
}
