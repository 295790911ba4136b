//! Throughput of the fused WGSL Algorithm 2 sampler (`shaders/sample_diffusion.wgsl`), in
//! one of two sizes (`AMORTIZE_BENCH_SIZE`):
//!
//! * `small` (the default): next to the CPU sampler (`samplers::sample`, rayon over
//!   tiles) on the same network: dim θ = dim x = 10, width 64, 3 hidden layers per MLP,
//!   n = 1 observation, S = 50 levels, 4096 draws per call, best of 3. On lavapipe
//!   (Mesa's Vulkan on the CPU) both run on the same cores, so the ratio shows the
//!   overhead of the shader path, not GPU speed.
//! * `gaussian10`: `benches/sample_cuda.rs`'s size, for the ratio to the fused CUDA kernel
//!   on the same GPU: width 128, T = 400 levels, n = 1 and n = 8 (Geffner et al.), 10⁵
//!   draws, one timed call after a warm-up. The CPU draws only the first 64 chains, to
//!   check the fused ones (a chain's draws do not depend on how many run beside it).
//!
//! `AMORTIZE_BENCH_DRAWS` overrides the draws. The weights are random (throughput does
//! not depend on them). FLOPs per draw = 2 · `ScorePlan::macs_per_step(n)` · (S − 1)
//! network passes: the dense layers' multiply-adds only, 2 · 21 760 · 49 ≈ 2.1 MFLOP for
//! `small`, as in `sample_cuda.rs` for `gaussian10` (67 MFLOP at n = 1, 258 at n = 8).
//!
//! Without an adapter it prints why and exits 0.
//!
//! Run: `cargo bench --bench sample_wgpu` (`AMORTIZE_WGPU_TEST_ADAPTER=N` for adapter N).

mod common;

use std::time::Instant;

use amortize::backend::wgpu::WgpuBackend;
use amortize::backend::Backend;
use amortize::estimators::score::{NoiseSchedule, ScoreNet, ScoreNetConfig};
use amortize::rng::{streams, PhiloxStream};
use amortize::samplers::wgpu::{passes_per_draw, GpuPrior};
use amortize::samplers::{
    sample_target, Algorithm, Corrector, SamplerConfig, ScoreComposition, ScorePlan, Target,
};
use amortize::{Device, ParamStore};

const REPEATS: usize = 3;

/// A network size and grid to time.
struct Size {
    width: usize,
    levels: usize,
    observations: &'static [usize],
    draws: usize,
    /// Time the CPU sampler on every draw too (else it draws only
    /// [`common::CHECKED_CHAINS`] chains to check against).
    time_cpu: bool,
    /// Largest relative difference from the CPU's draws: f32 rounding grows along the
    /// chain and with n (lavapipe: 1.0e-4 for `small`, 8.8e-4 at n = 8 over 400 levels);
    /// a broken kernel differs by O(1).
    tol: f32,
}

const SMALL: Size = Size {
    width: 64,
    levels: 50,
    observations: &[1],
    draws: 4096,
    time_cpu: true,
    tol: 1e-3,
};

const GAUSSIAN10: Size = Size {
    width: 128,
    levels: 400,
    observations: &[1, 8],
    draws: 100_000,
    time_cpu: false,
    tol: 1e-2,
};

/// The best of `repeats` timings of `f`, in seconds.
fn best_of(repeats: usize, mut f: impl FnMut()) -> f64 {
    (0..repeats)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let adapter = std::env::var("AMORTIZE_WGPU_TEST_ADAPTER")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let size = match std::env::var("AMORTIZE_BENCH_SIZE").as_deref() {
        Err(_) | Ok("small") => SMALL,
        Ok("gaussian10") => GAUSSIAN10,
        Ok(other) => {
            println!("sample_wgpu: unknown AMORTIZE_BENCH_SIZE {other:?} (small or gaussian10)");
            std::process::exit(2);
        }
    };
    let gpu = match WgpuBackend::shared(adapter) {
        Ok(g) => g,
        Err(e) => {
            println!("sample_wgpu: skipped: {e}");
            return;
        }
    };
    let draws = std::env::var("AMORTIZE_BENCH_DRAWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(size.draws);
    println!("{}", gpu.describe());

    let config = ScoreNetConfig::new(10, 10, size.width);
    let mut store = ParamStore::new();
    let mut rng = PhiloxStream::new(1, streams::INIT, 0);
    let net = ScoreNet::new(&mut store, config, &mut rng).expect("network");
    let plan = ScorePlan::new(&net, &store).expect("plan");
    let (t, gammas) = NoiseSchedule { levels: 400 }.grid(size.levels);
    let sampler = SamplerConfig {
        algorithm: Algorithm::Diffusion,
        corrector: Corrector::NONE,
        seed: 7,
        ..SamplerConfig::default()
    };
    for &n in size.observations {
        let mut x = vec![0.0f32; n * config.dim_x];
        PhiloxStream::new(2, streams::TEST, 0).fill_normal(0.0, 1.0, &mut x);
        let cond = plan.condition(&x, &t).expect("conditioning");
        let flops_per_draw =
            2.0 * plan.macs_per_step(n) as f64 * passes_per_draw(size.levels, &sampler) as f64;
        let target = Target {
            plan: &plan,
            cond: &cond,
            gammas: &gammas,
            prior: &GpuPrior::StandardNormal,
            composition: ScoreComposition::Geffner,
        };
        let run_gpu =
            |num: usize| sample_target(Device::Wgpu(adapter), &target, num, &sampler, &|_| {});
        let run_cpu = |num: usize| common::cpu_draws(&target, &sampler, num);
        // Warm-up: compiles the pipeline.
        if let Err(e) = run_gpu(32) {
            println!("sample_wgpu: failed: {e}");
            std::process::exit(1);
        }
        let repeats = if size.time_cpu { REPEATS } else { 1 };
        let mut gpu_draws = Vec::new();
        let gpu_secs = best_of(repeats, || {
            gpu_draws = run_gpu(draws).expect("sampling");
            assert_eq!(gpu_draws.len(), draws * config.dim_theta);
        });
        let (cpu_draws, cpu_secs) = if size.time_cpu {
            run_cpu(64);
            let mut cpu_draws = Vec::new();
            let secs = best_of(repeats, || cpu_draws = run_cpu(draws));
            (cpu_draws, Some(secs))
        } else {
            (run_cpu(draws.min(common::CHECKED_CHAINS)), None)
        };
        common::assert_matches_cpu(&gpu_draws, &cpu_draws, config.dim_theta, size.tol);

        let report = |what: &str, secs: f64| {
            println!(
                "{what}: Algorithm 2, d = 10, width {}, n = {n}, S = {}, {draws} draws: {secs:.3} s, \
                 {:.0} samples/s, {:.2} GFLOP/s ({:.2} MFLOP/draw)",
                size.width,
                size.levels,
                draws as f64 / secs,
                flops_per_draw * draws as f64 / secs / 1e9,
                flops_per_draw / 1e6
            );
        };
        report("fused WGSL", gpu_secs);
        if let Some(cpu_secs) = cpu_secs {
            report("CPU sampler", cpu_secs);
            println!(
                "ratio fused WGSL / CPU (samples/s): {:.2}",
                cpu_secs / gpu_secs
            );
        }
    }
}
