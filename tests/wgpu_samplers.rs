//! The fused WGSL samplers (`shaders/sample_diffusion.wgsl`, `shaders/sample_langevin.wgsl`
//! after `shaders/score_sampler.wgsl`) against the CPU samplers (`samplers::sample` with a
//! `LearnedScore`) for the same seed: whole trajectories compare, elementwise, because both
//! draw the same Philox stream. The cases (n = 1 and 3 observations, both algorithms, the
//! corrector, Gaussian, box and log-normal priors) are shared with `tests/cuda_samplers.rs`
//! in `tests/common/sampler_cases.rs`.
//!
//! Tolerance: |gpu − cpu| ≤ [`TOL`]·max(1, |cpu|) per element. The shaders use the CPU's
//! per-level constants (computed on the host by `run_tile`'s expressions) and its step
//! order, but compute in f32 throughout: the dense layers' dot products sum in another
//! order than the CPU's sgemm, Algorithm 2's mean is f32 (the CPU sums it in f64) and so
//! are the corrector's ‖s‖² and group mean and the prior's unconstrained score. Each of these is a relative error of a few
//! 1e-7 per step, carried along the chain, where the map θ ↦ θ' amplifies it (by up to
//! ∏ 1/√α_k over the levels in Algorithm 2 with a random, non-contracting network). The
//! CPU-only test `cpu_draws_move_far_less_than_the_tolerance_under_rounding_size_noise`
//! measures that amplification: relative weight noise of 2⁻²² (≈ 4 ulp, more than the
//! reordering changes) moves the CPU draws by well under TOL / 10 on these chains.
//!
//! Without a wgpu adapter the GPU tests print why and pass, unless
//! `AMORTIZE_REQUIRE_WGPU=1` makes that a failure. `AMORTIZE_WGPU_TEST_ADAPTER=N` tests
//! adapter N instead of adapter 0.

mod common;
#[path = "common/sampler_cases.rs"]
mod sampler_cases;

use amortize::backend::wgpu::WgpuBackend;
use amortize::samplers::wgpu::{sample_wgpu, sample_wgpu_with, GpuPrior, WgpuSamplerOptions};
use amortize::samplers::{
    Algorithm, Conditioning, Corrector, SamplerConfig, ScoreComposition, Target,
};
use sampler_cases::{
    assert_rounding_noise_moves_draws_far_less_than, check, compare, config, cpu_draws,
    gauss_weights, gpu_prior, setup, Case, PriorCase, Setup, CORRECTOR, NUM,
};

/// Elementwise tolerance relative to max(1, |cpu|) (module docs).
const TOL: f32 = 2e-4;

/// The adapter under test (0, or `AMORTIZE_WGPU_TEST_ADAPTER`), or `None` (after saying
/// why) when there is none and `AMORTIZE_REQUIRE_WGPU` is not 1.
fn adapter(test: &str) -> Option<usize> {
    let index = std::env::var("AMORTIZE_WGPU_TEST_ADAPTER")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    match WgpuBackend::shared(index) {
        Ok(_) => Some(index),
        Err(e) => {
            if std::env::var("AMORTIZE_REQUIRE_WGPU").is_ok_and(|v| v == "1") {
                panic!("{test}: AMORTIZE_REQUIRE_WGPU=1 but no wgpu adapter: {e}");
            }
            eprintln!("skipping {test}: {e} (set AMORTIZE_REQUIRE_WGPU=1 to fail instead)");
            None
        }
    }
}

/// The setup of a dim θ 3, width 16 network for `n` observations on a `levels`-level grid.
fn small(n: usize, levels: usize, prior: PriorCase) -> Setup {
    setup(&Case {
        name: "small",
        n,
        levels,
        dim_theta: 3,
        width: 16,
        prior,
        gauss: false,
        base: false,
        config: SamplerConfig::default(),
    })
}

/// The shared cases that pass `filter`, on adapter `adapter`.
fn compare_on(adapter: usize, filter: impl Fn(&SamplerConfig) -> bool) {
    compare(
        TOL,
        |c| filter(&c.config),
        |target, config| sample_wgpu(adapter, target, NUM, config),
    );
}

#[test]
fn fused_diffusion_matches_the_cpu_sampler() {
    let Some(a) = adapter("fused_diffusion_matches_the_cpu_sampler") else {
        return;
    };
    compare_on(a, |c| c.algorithm == Algorithm::Diffusion);
}

#[test]
fn fused_langevin_matches_the_cpu_sampler() {
    let Some(a) = adapter("fused_langevin_matches_the_cpu_sampler") else {
        return;
    };
    compare_on(a, |c| c.algorithm != Algorithm::Diffusion);
}

#[test]
fn split_dispatches_give_the_same_draws_bit_for_bit() {
    let Some(a) = adapter("split_dispatches_give_the_same_draws_bit_for_bit") else {
        return;
    };
    let s = small(3, 12, PriorCase::Box);
    for config in [
        config(Algorithm::Diffusion, CORRECTOR),
        config(Algorithm::Langevin { steps_per_level: 2 }, CORRECTOR),
    ] {
        let run = |levels_per_dispatch| {
            let options = WgpuSamplerOptions {
                adapter: a,
                levels_per_dispatch,
            };
            sample_wgpu_with(&options, &s.target(), 40, &config).unwrap()
        };
        let whole = run(0);
        assert_eq!(whole.len(), 40 * 3);
        assert!(whole.iter().all(|v| v.is_finite()));
        // 11 chain levels in chunks of 1, 3 (ragged last chunk) and more than all.
        for per in [1, 3, 50] {
            assert_eq!(
                run(per),
                whole,
                "{:?}, {per} levels per dispatch",
                config.algorithm
            );
        }
    }
}

#[test]
fn chains_past_llvmpipes_loop_limit_match_the_cpu() {
    // On lavapipe an invocation's loops stop after 65 535 iterations in all; these chains
    // run more (about 3.7k per step at width 64 with 8 invocations of 8 columns, 19 steps;
    // L = 50 Langevin steps per level), so the host cuts them into several dispatches.
    // Before it did, their draws came back as NaN (the tile's store loop cut short) or
    // off by O(1). On a GPU they run as one dispatch.
    let Some(a) = adapter("chains_past_llvmpipes_loop_limit_match_the_cpu") else {
        return;
    };
    let long = |dim_theta, width, levels, config| Case {
        name: "long",
        n: 1,
        levels,
        dim_theta,
        width,
        prior: PriorCase::StandardNormal,
        gauss: false,
        base: false,
        config,
    };
    for (name, case) in [
        (
            "diffusion, width 64, 20 levels",
            long(3, 64, 20, config(Algorithm::Diffusion, Corrector::NONE)),
        ),
        (
            "langevin L = 50, 6 levels, corrector",
            long(
                3,
                16,
                6,
                config(
                    Algorithm::Langevin {
                        steps_per_level: 50,
                    },
                    CORRECTOR,
                ),
            ),
        ),
    ] {
        let s = setup(&case);
        let want = cpu_draws(&s, &s.plan, &case.config);
        let got = sample_wgpu(a, &s.target(), NUM, &case.config).unwrap();
        check(name, &got, &want, TOL);
    }
}

#[test]
fn errors_not_panics() {
    let s = small(1, 8, PriorCase::StandardNormal);
    let c = config(Algorithm::Diffusion, Corrector::NONE);
    let run = |prior: &GpuPrior, gammas: &[f64], cond: &Conditioning, c: &SamplerConfig| {
        let target = Target {
            cond,
            gammas,
            prior,
            ..s.target()
        };
        sample_wgpu(0, &target, 10, c)
    };
    // A prior of dimension 5 for a network with dim θ 3.
    let e = run(&gpu_prior(PriorCase::Box, 5), &s.gammas, &s.cond, &c).unwrap_err();
    assert!(e.to_string().contains("dim θ is 3"), "{e}");
    let e = run(&GpuPrior::StandardNormal, &s.gammas[..2], &s.cond, &c).unwrap_err();
    assert!(e.to_string().contains("at least 2"), "{e}");
    let mut reversed = s.gammas.clone();
    reversed.swap(2, 3);
    let e = run(&GpuPrior::StandardNormal, &reversed, &s.cond, &c).unwrap_err();
    assert!(e.to_string().contains("decrease"), "{e}");
    let mut empty = s.cond.clone();
    empty.observations = 0;
    let e = run(&GpuPrior::StandardNormal, &s.gammas, &empty, &c).unwrap_err();
    assert!(e.to_string().contains("empty"), "{e}");
    let mut short = s.cond.clone();
    short.t_part.pop();
    let e = run(&GpuPrior::StandardNormal, &s.gammas, &short, &c).unwrap_err();
    assert!(e.to_string().contains("t part"), "{e}");
    let lazy = config(Algorithm::Langevin { steps_per_level: 0 }, Corrector::NONE);
    let e = run(&GpuPrior::StandardNormal, &s.gammas, &s.cond, &lazy).unwrap_err();
    assert!(e.to_string().contains("at least one step"), "{e}");
    // GAUSS weights made for 2 observations, given 1.
    let weights = gauss_weights(3, 2, &s.gammas);
    let target = Target {
        composition: ScoreComposition::Gauss(&weights),
        ..s.target()
    };
    let e = sample_wgpu(0, &target, 10, &c).unwrap_err();
    assert!(
        e.to_string().contains("GAUSS weights for 2 observations"),
        "{e}"
    );
    // A missing adapter is an error too, never a CPU fallback.
    let e = sample_wgpu(usize::MAX, &s.target(), 10, &c).unwrap_err();
    assert!(e.to_string().contains("wgpu"), "{e}");
}

#[test]
fn cpu_draws_move_far_less_than_the_tolerance_under_rounding_size_noise() {
    assert_rounding_noise_moves_draws_far_less_than(TOL);
}
