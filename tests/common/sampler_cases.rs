//! The parity cases of the fused GPU samplers, shared by `tests/wgpu_samplers.rs` and
//! `tests/cuda_samplers.rs`, which run them on their backend: each case is a random score
//! network, n random observations, a grid, a prior and a sampler configuration; the GPU
//! draws must match the CPU sampler's (`samplers::sample` with a `LearnedScore` and the
//! `GpuPrior` as the CPU prior score) for the same seed, whole trajectories, elementwise,
//! because both draw the same Philox stream.
//!
//! The priors other than N(0, I) come with a standardization that is not the identity
//! (shift ≠ 0, scale ≠ 1), so the chain rule through it is tested, and with scales
//! near the prior's own spread in u (as a trained model's are): the prior term of the
//! composed score then moves θ by O(1) like the network's, not explosively. They enter
//! only for n > 1 (their weight (1 − n)(S − k)/S is 0 at n = 1), so their cases use n = 3.
//!
//! The GAUSS cases compose n = 3 observations with fixed, made-up weights
//! ([`gauss_weights`]: correlated per-observation and prior covariances, a prior mean off
//! 0), so they test the samplers' arithmetic of the composition, not how good the weights
//! are.
//!
//! The base cases put a made-up Gaussian base under the network ([`gaussian_base`]), so
//! ε̂ = ε̂_net + ε_base as in a model trained with `--gaussian-base`.
#![allow(dead_code)]

use amortize::estimators::gaussian_base::GaussianBase;
use amortize::estimators::score::{NoiseSchedule, ScoreNet, ScoreNetConfig};
use amortize::estimators::Standardization;
use amortize::priors::Prior;
use amortize::rng::{streams, PhiloxStream};
use amortize::samplers::gauss::{GaussPrior, GaussWeights};
use amortize::samplers::gpu::GpuPrior;
use amortize::samplers::{
    sample_target, Algorithm, Conditioning, Corrector, SamplerConfig, ScoreComposition, ScorePlan,
    StandardizedPrior, Target,
};
use amortize::{Device, ParamStore, Result};

use crate::common::max_rel_err;

/// Draws per comparison: three full WGSL workgroups of 32 and a partial one of 4 (one full
/// CUDA block of 64 and a partial one of 36), so the last lane group holds 4 samples (the
/// corrector's group mean must skip the missing ones).
pub const NUM: usize = 100;

/// Which prior a case samples with.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PriorCase {
    /// N(0, I) in the sampler's space.
    StandardNormal,
    /// A Gaussian with full covariance (correlation 0.3).
    Gaussian,
    /// A uniform box (scaled logit bijection).
    Box,
    /// Independent log-normals (log bijection).
    LogNormal,
}

/// The prior and standardization of `case` in `d` dimensions (module docs).
pub fn gpu_prior(case: PriorCase, d: usize) -> GpuPrior {
    let at = |v: &[f64]| v[..d].to_vec();
    let standardized = |prior: Prior, mean: Vec<f64>, std: Vec<f64>| {
        GpuPrior::Standardized(StandardizedPrior {
            prior,
            standardization: Standardization {
                exchangeable_blocks: 1,
                mean: mean.iter().map(|&v| v as f32).collect(),
                std: std.iter().map(|&v| v as f32).collect(),
            },
        })
    };
    match case {
        PriorCase::StandardNormal => GpuPrior::StandardNormal,
        PriorCase::Gaussian => {
            let mean = at(&[0.5, -1.0, 2.0, 0.0, 1.0]);
            let var = at(&[1.0, 4.0, 0.25, 2.0, 1.0]);
            let cov: Vec<f64> = (0..d * d)
                .map(|k| {
                    let (i, j) = (k / d, k % d);
                    let c = (var[i] * var[j]).sqrt();
                    if i == j {
                        c
                    } else {
                        0.3 * c
                    }
                })
                .collect();
            standardized(
                Prior::gaussian(&mean, &cov).unwrap(),
                mean.iter().map(|m| m + 0.1).collect(),
                var.iter().map(|v| 1.05 * v.sqrt()).collect(),
            )
        }
        PriorCase::Box => standardized(
            Prior::uniform(
                &at(&[-1.0, 0.0, 2.0, -3.0, 10.0]),
                &at(&[1.0, 5.0, 2.5, 3.0, 20.0]),
            )
            .unwrap(),
            at(&[0.1, -0.1, 0.05, 0.0, 0.2]),
            at(&[1.8, 1.7, 1.9, 1.8, 1.75]),
        ),
        PriorCase::LogNormal => {
            let mu = at(&[0.5, -0.3, 1.0, 0.2, -0.8]);
            let sigma = at(&[0.5, 1.0, 0.3, 0.8, 1.2]);
            standardized(
                Prior::log_normal(&mu, &sigma).unwrap(),
                mu.iter().zip(&sigma).map(|(m, s)| m + 0.1 * s).collect(),
                sigma.iter().map(|s| 0.9 * s).collect(),
            )
        }
    }
}

/// One comparison.
#[derive(Clone, Debug)]
pub struct Case {
    /// Printed with its error.
    pub name: &'static str,
    /// Observations composed.
    pub n: usize,
    /// Levels S of the sampling grid.
    pub levels: usize,
    /// dim θ of the network.
    pub dim_theta: usize,
    /// Width of the network.
    pub width: usize,
    /// The prior.
    pub prior: PriorCase,
    /// GAUSS composition with [`gauss_weights`] (else Geffner et al.'s).
    pub gauss: bool,
    /// A Gaussian base under the network ([`gaussian_base`]).
    pub base: bool,
    /// Algorithm, corrector, seed.
    pub config: SamplerConfig,
}

/// The corrector of the corrector cases: 2 steps at each of the last 4 levels.
pub const CORRECTOR: Corrector = Corrector {
    steps: 2,
    levels: 4,
    snr: 0.16,
};

/// The cases' configuration (`tile` 32: the CPU draws do not depend on it).
pub fn config(algorithm: Algorithm, corrector: Corrector) -> SamplerConfig {
    SamplerConfig {
        algorithm,
        corrector,
        seed: 0x5EED_0000_0000_0017,
        tile: 32,
        denoise_last: true,
    }
}

/// The cases every backend runs (a table: rustfmt would give each row eight lines). dim θ
/// 3 is not a multiple of 4 (the noise blocks have ragged ends); width 16 is one column per
/// WGSL invocation and one per CUDA thread column; dim θ 5 with width 48 gives two columns
/// per invocation and thread, the second ragged, and ragged CUDA weight slabs; dim θ 10 with
/// width 128 is gaussian10's network at its benchmark size (four CUDA columns per thread).
#[rustfmt::skip]
pub fn cases() -> Vec<Case> {
    let diffusion = |c| config(Algorithm::Diffusion, c);
    let langevin = |c| config(Algorithm::Langevin { steps_per_level: 3 }, c);
    let case = |name, n, levels, (dim_theta, width), prior, config| Case {
        name, n, levels, dim_theta, width, prior, gauss: false, base: false, config,
    };
    let gauss = |c: Case| Case { gauss: true, ..c };
    let base = |c: Case| Case { base: true, ..c };
    let noisy_last = |c: Case| Case { config: SamplerConfig { denoise_last: false, ..c.config }, ..c };
    let (small, wide) = ((3, 16), (5, 48));
    let bench = (10, 128);
    use PriorCase::*;
    vec![
        case("diffusion n=1", 1, 20, small, StandardNormal, diffusion(Corrector::NONE)),
        case("diffusion n=3", 3, 20, small, StandardNormal, diffusion(Corrector::NONE)),
        noisy_last(case("diffusion n=3 noisy last step", 3, 20, small, StandardNormal, diffusion(Corrector::NONE))),
        case("diffusion n=1 corrector", 1, 20, small, StandardNormal, diffusion(CORRECTOR)),
        case("diffusion n=3 corrector", 3, 20, small, StandardNormal, diffusion(CORRECTOR)),
        case("diffusion n=3 width 48", 3, 20, wide, StandardNormal, diffusion(CORRECTOR)),
        case("diffusion n=8 width 128", 8, 20, bench, StandardNormal, diffusion(Corrector::NONE)),
        case("diffusion n=3 gaussian", 3, 20, wide, Gaussian, diffusion(Corrector::NONE)),
        case("diffusion n=3 box", 3, 20, small, Box, diffusion(CORRECTOR)),
        case("diffusion n=3 log-normal", 3, 20, small, LogNormal, diffusion(CORRECTOR)),
        case("langevin n=1", 1, 6, small, StandardNormal, langevin(Corrector::NONE)),
        case("langevin n=3 corrector", 3, 6, small, StandardNormal, langevin(CORRECTOR)),
        case("langevin n=3 box", 3, 6, small, Box, langevin(CORRECTOR)),
        case("langevin n=3 log-normal", 3, 6, small, LogNormal, langevin(Corrector::NONE)),
        gauss(case("diffusion n=3 gauss", 3, 20, small, StandardNormal, diffusion(Corrector::NONE))),
        gauss(case("diffusion n=3 gauss width 48", 3, 20, wide, StandardNormal, diffusion(CORRECTOR))),
        gauss(case("langevin n=3 gauss", 3, 6, small, StandardNormal, langevin(CORRECTOR))),
        base(case("diffusion n=3 base", 3, 20, wide, Gaussian, diffusion(CORRECTOR))),
        base(gauss(case("diffusion n=3 gauss base", 3, 20, small, StandardNormal, diffusion(Corrector::NONE)))),
        base(case("langevin n=3 base", 3, 6, small, Box, langevin(CORRECTOR))),
    ]
}

/// Cases at the widest column count (eight per CUDA thread, the last ragged), which only
/// the CUDA suite runs: lavapipe takes four minutes to compile the WGSL sampler for them.
pub fn widest_cases() -> Vec<Case> {
    vec![Case {
        name: "diffusion n=2 gauss width 200",
        n: 2,
        levels: 10,
        dim_theta: 7,
        width: 200,
        prior: PriorCase::StandardNormal,
        gauss: true,
        base: false,
        config: config(Algorithm::Diffusion, CORRECTOR),
    }]
}

/// A case's network, conditioning, grid and prior.
pub struct Setup {
    /// The random network's plan.
    pub plan: ScorePlan,
    /// Its conditioning for the case's observations and grid.
    pub cond: Conditioning,
    /// γ_0 = 1 > … > γ_S = 0.
    pub gammas: Vec<f64>,
    /// The prior.
    pub prior: GpuPrior,
    /// GAUSS's weights for a GAUSS case.
    pub gauss: Option<GaussWeights>,
}

impl Setup {
    /// What the samplers draw from.
    pub fn target(&self) -> Target<'_> {
        Target {
            plan: &self.plan,
            cond: &self.cond,
            gammas: &self.gammas,
            prior: &self.prior,
            composition: match &self.gauss {
                Some(w) => ScoreComposition::Gauss(w),
                None => ScoreComposition::Geffner,
            },
        }
    }
}

/// Made-up GAUSS weights for `n` observations of dim θ `d` on the grid `gammas`
/// (module docs): observation j's covariance has variances 0.2 + 0.1·(i + j) and
/// correlation 0.2 between neighbours, the prior's N(0.3, 1.5·I + 0.2 off the diagonal).
pub fn gauss_weights(d: usize, n: usize, gammas: &[f64]) -> GaussWeights {
    let banded = |diag: &dyn Fn(usize) -> f64, off: f64| -> Vec<f64> {
        (0..d * d)
            .map(|e| {
                let (i, k) = (e / d, e % d);
                match i.abs_diff(k) {
                    0 => diag(i),
                    1 => off * (diag(i) * diag(k)).sqrt(),
                    _ => 0.0,
                }
            })
            .collect()
    };
    let covs: Vec<Vec<f64>> = (0..n)
        .map(|j| banded(&|i| 0.2 + 0.1 * (i + j) as f64, 0.2))
        .collect();
    let prior_cov = banded(&|_| 1.5, 0.2 / 1.5);
    let prior = GaussPrior::Gaussian {
        mean: &vec![0.3; d],
        cov: &prior_cov,
    };
    GaussWeights::new(d, gammas, &covs, prior).unwrap()
}

/// A made-up Gaussian base for dim θ `d` and dim x 2: A and b of unit-normal entries,
/// variances 0.1 … 0.1 + 0.3·(d − 1), so that the base's ε moves θ by O(1) at every level.
pub fn gaussian_base(d: usize) -> GaussianBase {
    let mut rng = PhiloxStream::new(13, streams::TEST, 0);
    let mut weight = vec![0.0f32; d * 2];
    let mut bias = vec![0.0f32; d];
    rng.fill_normal(0.0, 1.0, &mut weight);
    rng.fill_normal(0.0, 1.0, &mut bias);
    GaussianBase {
        weight,
        bias,
        variance: (0..d).map(|i| 0.1 + 0.3 * i as f32).collect(),
    }
}

/// The setup of `case`: a random network (seeded), `case.n` random observations.
pub fn setup(case: &Case) -> Setup {
    let config = ScoreNetConfig::new(case.dim_theta, 2, case.width);
    let mut store = ParamStore::new();
    let mut rng = PhiloxStream::new(11, streams::INIT, 0);
    let net = ScoreNet::new(&mut store, config, &mut rng).unwrap();
    let schedule = NoiseSchedule { levels: 400 };
    let mut plan = ScorePlan::new(&net, &store).unwrap();
    if case.base {
        plan = plan
            .with_base(gaussian_base(case.dim_theta), schedule)
            .unwrap();
    }
    let mut x = vec![0.0f32; case.n * config.dim_x];
    PhiloxStream::new(12, streams::TEST, 0).fill_normal(0.0, 1.0, &mut x);
    let (t, gammas) = schedule.grid(case.levels);
    let cond = plan.condition(&x, &t).unwrap();
    let prior = gpu_prior(case.prior, case.dim_theta);
    let gauss = case
        .gauss
        .then(|| gauss_weights(case.dim_theta, case.n, &gammas));
    Setup {
        plan,
        cond,
        gammas,
        prior,
        gauss,
    }
}

/// The CPU sampler's [`NUM`] draws for `s` with the network `plan`.
pub fn cpu_draws(s: &Setup, plan: &ScorePlan, config: &SamplerConfig) -> Vec<f32> {
    let target = Target { plan, ..s.target() };
    sample_target(Device::Cpu, &target, NUM, config, &|_| {}).unwrap()
}

/// Asserts every GPU draw is written (not the NaN the output starts as) and within `tol`
/// of the CPU's relative to max(1, |cpu|); returns the largest error.
pub fn check(what: &str, gpu: &[f32], cpu: &[f32], tol: f32) -> f32 {
    assert_eq!(gpu.len(), cpu.len(), "{what}: lengths differ");
    for (i, (&g, &c)) in gpu.iter().zip(cpu).enumerate() {
        assert!(c.is_finite(), "{what}: CPU draw {i} is {c}");
        assert!(
            g.is_finite(),
            "{what}: GPU draw {i} is {g} (unwritten?), CPU {c}"
        );
    }
    let err = max_rel_err(gpu, cpu);
    eprintln!("{what}: max relative error {err:.3e} (tolerance {tol:.0e})");
    assert!(err <= tol, "{what}: max relative error {err} > {tol}");
    err
}

/// Runs the cases that pass `filter` on a backend (`gpu` draws [`NUM`] samples) and checks
/// each against the CPU within `tol`. For a prior other than N(0, I), and for GAUSS, it
/// first checks that the test can tell: the CPU draws with N(0, I), or with Geffner et
/// al.'s composition, instead differ by more than 10·`tol`.
pub fn compare(
    tol: f32,
    filter: impl Fn(&Case) -> bool,
    gpu: impl Fn(&Target, &SamplerConfig) -> Result<Vec<f32>>,
) {
    compare_cases(&cases(), tol, filter, gpu)
}

/// [`compare`] over `cases`.
pub fn compare_cases(
    cases: &[Case],
    tol: f32,
    filter: impl Fn(&Case) -> bool,
    gpu: impl Fn(&Target, &SamplerConfig) -> Result<Vec<f32>>,
) {
    for case in cases.iter().filter(|c| filter(c)) {
        let s = setup(case);
        let want = cpu_draws(&s, &s.plan, &case.config);
        if case.prior != PriorCase::StandardNormal {
            let other = Setup {
                prior: GpuPrior::StandardNormal,
                ..setup(case)
            };
            let moved = max_rel_err(&cpu_draws(&other, &s.plan, &case.config), &want);
            assert!(
                moved > 10.0 * tol,
                "{}: the prior moves the draws by only {moved}",
                case.name
            );
        }
        if case.gauss {
            let other = Setup {
                gauss: None,
                ..setup(case)
            };
            let moved = max_rel_err(&cpu_draws(&other, &s.plan, &case.config), &want);
            assert!(
                moved > 10.0 * tol,
                "{}: GAUSS moves the draws by only {moved}",
                case.name
            );
        }
        if case.base {
            let without = setup(&Case {
                base: false,
                ..case.clone()
            });
            let target = Target {
                cond: &without.cond,
                ..s.target()
            };
            let other = sample_target(Device::Cpu, &target, NUM, &case.config, &|_| {}).unwrap();
            let moved = max_rel_err(&other, &want);
            assert!(
                moved > 10.0 * tol,
                "{}: the Gaussian base moves the draws by only {moved}",
                case.name
            );
        }
        let got = gpu(&s.target(), &case.config).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        check(case.name, &got, &want, tol);
    }
}

/// The plan with every weight and bias multiplied by (1 + 2⁻²²·u), u ~ U(−1, 1).
pub fn jittered(plan: &ScorePlan) -> ScorePlan {
    let mut p = plan.clone();
    let mut rng = PhiloxStream::new(99, streams::TEST, 3);
    let mut jitter = |v: &mut Vec<f32>| {
        for x in v.iter_mut() {
            *x *= 1.0 + rng.uniform_range(-1.0, 1.0) * 2f32.powi(-22);
        }
    };
    let layers = std::iter::once(&mut p.theta_input)
        .chain(p.theta_blocks.iter_mut())
        .chain(std::iter::once(&mut p.theta_to_head))
        .chain(p.head_blocks.iter_mut())
        .chain(std::iter::once(&mut p.head_output));
    for layer in layers {
        jitter(&mut layer.weight);
        jitter(&mut layer.bias);
    }
    p
}

/// Asserts that relative weight noise of 2⁻²² (≈ 4 ulp, more than reordering a dot
/// product changes) moves the CPU draws of every case by less than `tol`/10: the chains
/// amplify f32 rounding too little for a GPU within `tol` to hide a real difference.
pub fn assert_rounding_noise_moves_draws_far_less_than(tol: f32) {
    for case in cases().into_iter().chain(widest_cases()) {
        let s = setup(&case);
        let exact = cpu_draws(&s, &s.plan, &case.config);
        let moved = cpu_draws(&s, &jittered(&s.plan), &case.config);
        let err = max_rel_err(&moved, &exact);
        eprintln!(
            "{}: weights jittered by 2^-22 move the draws by {err:.3e}",
            case.name
        );
        assert!(
            err < tol / 10.0,
            "{}: rounding-size noise moves the draws by {err}, too close to {tol}",
            case.name
        );
    }
}
