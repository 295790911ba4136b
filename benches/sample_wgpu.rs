//! Throughput of the fused WGSL Algorithm 2 sampler (`shaders/sample_diffusion.wgsl`) next
//! to the CPU sampler (`samplers::sample`, rayon over tiles) on the same network: dim θ =
//! dim x = 10, width 64, 3 hidden layers per MLP, n = 1 observation, S = 50 levels, 4096
//! draws per call (override with `AMORTIZE_BENCH_DRAWS`). The weights are random
//! (throughput does not depend on them).
//!
//! FLOPs per draw = 2 · `ScorePlan::macs_per_step(n)` · (S − 1) network passes: the dense
//! layers' multiply-adds only, 2 · 21 760 · 49 ≈ 2.1 MFLOP here.
//!
//! On lavapipe (Mesa's Vulkan on the CPU) both run on the same cores, so the ratio shows the
//! overhead of the shader path, not GPU speed. Without an adapter it prints why and exits 0.
//!
//! Run: `cargo bench --bench sample_wgpu` (`AMORTIZE_WGPU_TEST_ADAPTER=N` for adapter N).

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

const LEVELS: usize = 50;
const DRAWS: usize = 4096;
const REPEATS: usize = 3;

/// The best of `REPEATS` timings of `f`, in seconds.
fn best_of(mut f: impl FnMut()) -> f64 {
    (0..REPEATS)
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
        .unwrap_or(DRAWS);
    println!("{}", gpu.describe());

    let config = ScoreNetConfig::new(10, 10, 64);
    let mut store = ParamStore::new();
    let mut rng = PhiloxStream::new(1, streams::INIT, 0);
    let net = ScoreNet::new(&mut store, config, &mut rng).expect("network");
    let plan = ScorePlan::new(&net, &store).expect("plan");
    let (t, gammas) = NoiseSchedule { levels: 400 }.grid(LEVELS);
    let sampler = SamplerConfig {
        algorithm: Algorithm::Diffusion,
        corrector: Corrector::NONE,
        seed: 7,
        ..SamplerConfig::default()
    };
    let n = 1;
    let mut x = vec![0.0f32; n * config.dim_x];
    PhiloxStream::new(2, streams::TEST, 0).fill_normal(0.0, 1.0, &mut x);
    let cond = plan.condition(&x, &t).expect("conditioning");
    let flops_per_draw =
        2.0 * plan.macs_per_step(n) as f64 * passes_per_draw(LEVELS, &sampler) as f64;

    let target = Target {
        plan: &plan,
        cond: &cond,
        gammas: &gammas,
        prior: &GpuPrior::StandardNormal,
        composition: ScoreComposition::Geffner,
    };
    let run = |device, num: usize| sample_target(device, &target, num, &sampler, &|_| {});
    let run_gpu = |num: usize| run(Device::Wgpu(adapter), num);
    // Warm-up: compiles the pipeline.
    if let Err(e) = run_gpu(32) {
        println!("sample_wgpu: failed: {e}");
        std::process::exit(1);
    }
    let mut gpu_draws = Vec::new();
    let gpu_secs = best_of(|| {
        gpu_draws = run_gpu(draws).expect("sampling");
        assert_eq!(gpu_draws.len(), draws * config.dim_theta);
    });

    let run_cpu = |num: usize| run(Device::Cpu, num).expect("cpu sampling");
    run_cpu(64);
    let mut cpu_draws = Vec::new();
    let cpu_secs = best_of(|| {
        cpu_draws = run_cpu(draws);
        assert_eq!(cpu_draws.len(), draws * config.dim_theta);
    });
    // A timing of wrong draws is no timing: both samplers draw the same chains.
    assert!(
        gpu_draws.iter().all(|v| v.is_finite()),
        "non-finite fused draws"
    );
    let err = gpu_draws
        .iter()
        .zip(&cpu_draws)
        .map(|(g, c)| (g - c).abs() / c.abs().max(1.0))
        .fold(0.0f32, f32::max);
    println!("largest |fused − CPU| / max(1, |CPU|) over the draws: {err:.2e}");
    assert!(err < 1e-3, "the fused draws differ from the CPU's by {err}");

    let report = |what: &str, secs: f64| {
        println!(
            "{what}: Algorithm 2, d = 10, width 64, n = {n}, S = {LEVELS}, {draws} draws: {secs:.3} s, \
             {:.0} samples/s, {:.2} GFLOP/s ({:.2} MFLOP/draw)",
            draws as f64 / secs,
            flops_per_draw * draws as f64 / secs / 1e9,
            flops_per_draw / 1e6
        );
    };
    report("fused WGSL", gpu_secs);
    report("CPU sampler", cpu_secs);
    println!(
        "ratio fused WGSL / CPU (samples/s): {:.2}",
        cpu_secs / gpu_secs
    );
}
