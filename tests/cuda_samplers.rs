//! The fused CUDA samplers (`kernels/sample_diffusion.cu`, `kernels/sample_langevin.cu`)
//! against the CPU samplers (`samplers::sample` with a `LearnedScore`) for the same seed:
//! whole trajectories compare, elementwise, because both draw the same Philox stream.
//!
//! Tolerance: |gpu − cpu| ≤ [`TOL`]·max(1, |cpu|) per element. The kernels use the CPU's
//! constants bit for bit and its operation order everywhere except inside the dense
//! layers' dot products (sequential FMA on the GPU, matrixmultiply's blocked sgemm on the
//! CPU), so the draws differ by f32 rounding of ε̂ (a few 1e-7 relative per layer)
//! carried along the chain, where the map θ ↦ θ' amplifies it (by up to ∏ 1/√α_k over
//! the levels in Algorithm 2 with a random, non-contracting network). The CPU-only test
//! `cpu_draws_move_far_less_than_the_tolerance_under_rounding_size_weight_noise` measures
//! that amplification: relative weight noise of 2⁻²² (≈ 4 ulp, more than the reordering
//! changes) moves the CPU draws by well under TOL / 10 on these chains.
//!
//! Without a CUDA device (or driver, or NVRTC) the GPU tests print why and pass, unless
//! `AMORTIZE_REQUIRE_CUDA=1` makes that a failure.

mod common;

use amortize::backend::cuda::CudaBackend;
use amortize::estimators::score::{NoiseSchedule, ScoreNet, ScoreNetConfig};
use amortize::rng::{streams, PhiloxStream};
use amortize::samplers::cuda::{sample_cuda, GpuPrior};
use amortize::samplers::{
    sample, Algorithm, Conditioning, Corrector, LearnedScore, PriorScore, SamplerConfig, ScorePlan,
};
use amortize::ParamStore;
use common::max_rel_err;

/// Elementwise tolerance relative to max(1, |cpu|) (module docs).
const TOL: f32 = 2e-3;

/// Draws per comparison: one full tile of 64 and a partial one of 36, so the last lane
/// group holds 4 samples (the corrector's group mean must skip the missing ones).
const NUM: usize = 100;

/// Prior N(0, I): ∇log p(θ) = −θ, what `GpuPrior::StandardNormal` computes.
struct StandardNormalPrior;

impl PriorScore for StandardNormalPrior {
    fn prior_score(&self, theta: &[f32], out: &mut [f32]) {
        for (o, t) in out.iter_mut().zip(theta) {
            *o = -t;
        }
    }
}

/// Whether cuda:0 can run the samplers; `false` (after printing why) when it cannot and
/// the environment does not require it.
fn gpu(test: &str) -> bool {
    let why = match CudaBackend::shared(0) {
        Ok(_) if amortize::devices::nvrtc_present() => return true,
        Ok(_) => "no NVRTC library (libnvrtc.so) to compile the kernels".to_string(),
        Err(e) => e.to_string(),
    };
    if std::env::var("AMORTIZE_REQUIRE_CUDA").as_deref() == Ok("1") {
        panic!("{test}: AMORTIZE_REQUIRE_CUDA=1 but CUDA is unusable: {why}");
    }
    eprintln!("skipping {test}: {why} (set AMORTIZE_REQUIRE_CUDA=1 to fail instead)");
    false
}

/// A random score network (dim θ 5, dim x 3, width 48: neither a multiple of 4 nor of
/// 32, so the noise blocks and the weight slabs have ragged ends), its plan, and the
/// conditioning for `n` random observations on an `levels`-level grid.
struct Setup {
    plan: ScorePlan,
    cond: Conditioning,
    gammas: Vec<f64>,
}

fn setup(n: usize, levels: usize) -> Setup {
    let config = ScoreNetConfig::new(5, 3, 48);
    let mut store = ParamStore::new();
    let mut rng = PhiloxStream::new(11, streams::INIT, 0);
    let net = ScoreNet::new(&mut store, config, &mut rng).unwrap();
    let plan = ScorePlan::new(&net, &store).unwrap();
    let mut x = vec![0.0f32; n * config.dim_x];
    PhiloxStream::new(12, streams::TEST, 0).fill_normal(0.0, 1.0, &mut x);
    let (t, gammas) = NoiseSchedule { levels: 400 }.grid(levels);
    let cond = plan.condition(&x, &t).unwrap();
    Setup { plan, cond, gammas }
}

fn cpu_draws(s: &Setup, plan: &ScorePlan, config: &SamplerConfig) -> Vec<f32> {
    let score = LearnedScore {
        plan,
        conditioning: s.cond.clone(),
        gammas: s.gammas.clone(),
    };
    sample(
        &score,
        &StandardNormalPrior,
        &s.gammas,
        NUM,
        config,
        &|_| {},
    )
    .unwrap()
}

fn config(algorithm: Algorithm, corrector: Corrector) -> SamplerConfig {
    SamplerConfig {
        algorithm,
        corrector,
        seed: 0x5EED_0000_0000_0017,
        tile: 32,
    }
}

const CORRECTOR: Corrector = Corrector {
    steps: 2,
    levels: 4,
    snr: 0.16,
};

/// The cases the GPU tests run: (name, n, levels, config).
fn cases() -> Vec<(&'static str, usize, usize, SamplerConfig)> {
    vec![
        (
            "diffusion n=1",
            1,
            40,
            config(Algorithm::Diffusion, Corrector::NONE),
        ),
        (
            "diffusion n=3",
            3,
            40,
            config(Algorithm::Diffusion, Corrector::NONE),
        ),
        (
            "diffusion n=1 corrector",
            1,
            40,
            config(Algorithm::Diffusion, CORRECTOR),
        ),
        (
            "diffusion n=3 corrector",
            3,
            40,
            config(Algorithm::Diffusion, CORRECTOR),
        ),
        (
            "langevin n=1",
            1,
            8,
            config(Algorithm::Langevin { steps_per_level: 3 }, Corrector::NONE),
        ),
        (
            "langevin n=3 corrector",
            3,
            8,
            config(Algorithm::Langevin { steps_per_level: 3 }, CORRECTOR),
        ),
    ]
}

/// Asserts every GPU draw is written (not the NaN the output starts as) and within TOL.
fn check(what: &str, gpu: &[f32], cpu: &[f32]) {
    assert_eq!(gpu.len(), cpu.len(), "{what}: lengths differ");
    for (i, (&g, &c)) in gpu.iter().zip(cpu).enumerate() {
        assert!(c.is_finite(), "{what}: CPU draw {i} is {c}");
        assert!(
            g.is_finite(),
            "{what}: GPU draw {i} is {g} (unwritten?), CPU {c}"
        );
    }
    let err = max_rel_err(gpu, cpu);
    eprintln!("{what}: max relative error {err:.3e} (tolerance {TOL:.0e})");
    assert!(err <= TOL, "{what}: max relative error {err} > {TOL}");
}

fn compare(algorithm_name: &str, filter: impl Fn(&SamplerConfig) -> bool) {
    for (name, n, levels, config) in cases().into_iter().filter(|c| filter(&c.3)) {
        let s = setup(n, levels);
        let want = cpu_draws(&s, &s.plan, &config);
        let got = sample_cuda(
            0,
            &s.plan,
            &s.cond,
            &s.gammas,
            &GpuPrior::StandardNormal,
            NUM,
            &config,
        )
        .unwrap_or_else(|e| panic!("{algorithm_name} {name}: {e}"));
        check(name, &got, &want);
    }
}

#[test]
fn fused_diffusion_matches_the_cpu_sampler() {
    if !gpu("fused_diffusion_matches_the_cpu_sampler") {
        return;
    }
    compare("diffusion", |c| c.algorithm == Algorithm::Diffusion);
}

#[test]
fn fused_langevin_matches_the_cpu_sampler() {
    if !gpu("fused_langevin_matches_the_cpu_sampler") {
        return;
    }
    compare("langevin", |c| c.algorithm != Algorithm::Diffusion);
}

#[test]
fn draws_do_not_depend_on_the_cpu_tile() {
    // The GPU's tile (64) differs from the config's; the CPU draws must not care, or the
    // comparison above would be meaningless.
    let s = setup(3, 12);
    let mut c = config(Algorithm::Diffusion, CORRECTOR);
    let a = cpu_draws(&s, &s.plan, &c);
    c.tile = 64;
    let b = cpu_draws(&s, &s.plan, &c);
    assert_eq!(a, b);
}

/// The plan with every weight and bias multiplied by (1 + 2⁻²²·u), u ~ U(−1, 1).
fn jittered(plan: &ScorePlan) -> ScorePlan {
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

#[test]
fn cpu_draws_move_far_less_than_the_tolerance_under_rounding_size_weight_noise() {
    for (name, n, levels, config) in cases() {
        let s = setup(n, levels);
        let exact = cpu_draws(&s, &s.plan, &config);
        let moved = cpu_draws(&s, &jittered(&s.plan), &config);
        let err = max_rel_err(&moved, &exact);
        eprintln!("{name}: weights jittered by 2^-22 move the draws by {err:.3e}");
        assert!(
            err < TOL / 10.0,
            "{name}: {err} — TOL is too tight for these chains"
        );
    }
}

#[test]
fn other_priors_are_refused() {
    let s = setup(1, 12);
    let err = sample_cuda(
        0,
        &s.plan,
        &s.cond,
        &s.gammas,
        &GpuPrior::Other("uniform".into()),
        NUM,
        &SamplerConfig::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("standard normal"), "{err}");
}

#[test]
fn bad_grids_are_errors() {
    let s = setup(1, 12);
    let mut gammas = s.gammas.clone();
    gammas.swap(2, 3);
    assert!(sample_cuda(
        0,
        &s.plan,
        &s.cond,
        &gammas,
        &GpuPrior::StandardNormal,
        NUM,
        &SamplerConfig::default()
    )
    .is_err());
    // A conditioning for another grid.
    assert!(sample_cuda(
        0,
        &s.plan,
        &s.cond,
        &s.gammas[..12],
        &GpuPrior::StandardNormal,
        NUM,
        &SamplerConfig::default()
    )
    .is_err());
}

#[test]
fn no_device_is_an_error_not_a_panic() {
    if CudaBackend::shared(0).is_ok() {
        eprintln!("cuda:0 exists; nothing to check");
        return;
    }
    let s = setup(1, 12);
    let err = sample_cuda(
        0,
        &s.plan,
        &s.cond,
        &s.gammas,
        &GpuPrior::StandardNormal,
        NUM,
        &SamplerConfig::default(),
    )
    .unwrap_err();
    eprintln!("{err}");
    assert!(err.to_string().contains("cuda:0"), "{err}");
}
