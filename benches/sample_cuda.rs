//! Throughput of the fused CUDA Algorithm 2 sampler (`kernels/sample_diffusion.cu`) on
//! the gaussian10 network size: dim θ = dim x = 10, width 128, 3 hidden layers per MLP,
//! T = 400 levels, n = 1 and n = 8 observations (n = 8 composed both as Geffner et al. and
//! by GAUSS, with made-up weights), 10⁵ draws per launch (override with
//! `AMORTIZE_BENCH_DRAWS`). The weights are random (throughput does not depend on them).
//!
//! FLOPs per draw = 2 · `ScorePlan::macs_per_step(n)` · (T − 1) network passes: the dense
//! layers' multiply-adds only (activations, noise and the update are not counted). For
//! this network that is 2 · (84 480 + 34 048·(n − 1)) · 399 ≈ 67 MFLOP at n = 1 and
//! ≈ 258 MFLOP at n = 8. GAUSS adds (n + 1)·d² multiply-adds per pass (900 at n = 8,
//! 0.7 MFLOP per draw), counted in its row. The FP32 peak printed beside the achieved rate is estimated
//! from the device's SM count and clock (128 FP32 lanes per SM, 64 on compute 8.0).
//!
//! Without a CUDA device (or driver, or NVRTC) it prints why and exits 0.
//!
//! Run: `cargo bench --bench sample_cuda`

mod common;

use std::time::Instant;

use amortize::backend::cuda::CudaBackend;
use amortize::estimators::score::{NoiseSchedule, ScoreNet, ScoreNetConfig};
use amortize::rng::{streams, PhiloxStream};
use amortize::samplers::cuda::{passes_per_draw, sample_cuda, GpuPrior};
use amortize::samplers::gauss::{GaussPrior, GaussWeights};
use amortize::samplers::{
    Algorithm, Corrector, SamplerConfig, ScoreComposition, ScorePlan, Target,
};
use amortize::ParamStore;
use cudarc::driver::sys::CUdevice_attribute;

const LEVELS: usize = 400;
const DRAWS: usize = 100_000;

/// The device's FP32 peak in GFLOP/s (2 per FMA lane per cycle), if the driver tells.
fn fp32_peak_gflops(cc: (i32, i32)) -> Option<f64> {
    let ctx = cudarc::driver::CudaContext::new(0).ok()?;
    let sms = ctx
        .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
        .ok()?;
    let khz = ctx
        .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_CLOCK_RATE)
        .ok()?;
    let lanes = if cc == (8, 0) || cc.0 < 8 {
        64.0
    } else {
        128.0
    };
    Some(sms as f64 * lanes * 2.0 * khz as f64 * 1e3 / 1e9)
}

fn main() {
    let gpu = match CudaBackend::shared(0) {
        Ok(g) if amortize::devices::nvrtc_present() => g,
        Ok(_) => {
            println!("sample_cuda: skipped: no NVRTC library (libnvrtc.so) to compile the kernels");
            return;
        }
        Err(e) => {
            println!("sample_cuda: skipped: {e}");
            return;
        }
    };
    let draws = std::env::var("AMORTIZE_BENCH_DRAWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DRAWS);
    use amortize::backend::Backend;
    println!("{}", gpu.describe());
    let peak = fp32_peak_gflops(gpu.compute_capability());
    if let Some(p) = peak {
        println!("estimated FP32 peak: {p:.0} GFLOP/s");
    }

    let config = ScoreNetConfig::new(10, 10, 128);
    let mut store = ParamStore::new();
    let mut rng = PhiloxStream::new(1, streams::INIT, 0);
    let net = ScoreNet::new(&mut store, config, &mut rng).expect("network");
    let plan = ScorePlan::new(&net, &store).expect("plan");
    let (t, gammas) = NoiseSchedule { levels: LEVELS }.grid(LEVELS);
    let sampler = SamplerConfig {
        algorithm: Algorithm::Diffusion,
        corrector: Corrector::NONE,
        seed: 7,
        ..SamplerConfig::default()
    };
    let d = config.dim_theta;
    let identity: Vec<f64> = (0..d * d)
        .map(|e| if e / d == e % d { 1.0 } else { 0.0 })
        .collect();
    for (n, gauss) in [(1usize, false), (8, false), (8, true)] {
        let mut x = vec![0.0f32; n * config.dim_x];
        PhiloxStream::new(2, streams::TEST, 0).fill_normal(0.0, 1.0, &mut x);
        let cond = plan.condition(&x, &t).expect("conditioning");
        // GAUSS with per-observation covariances I/2 and the prior N(0, I).
        let half: Vec<f64> = identity.iter().map(|v| v / 2.0).collect();
        let prior = GaussPrior::Gaussian {
            mean: &vec![0.0; d],
            cov: &identity,
        };
        let weights = GaussWeights::new(d, &gammas, &vec![half; n], prior).expect("GAUSS weights");
        let target = Target {
            plan: &plan,
            cond: &cond,
            gammas: &gammas,
            prior: &GpuPrior::StandardNormal,
            composition: match gauss {
                true => ScoreComposition::Gauss(&weights),
                false => ScoreComposition::Geffner,
            },
        };
        let run = |num: usize| sample_cuda(0, &target, num, &sampler);
        // Warm-up: compiles (or loads) the kernel and touches the weights.
        if let Err(e) = run(64) {
            println!("sample_cuda: failed: {e}");
            std::process::exit(1);
        }
        let start = Instant::now();
        let out = run(draws).expect("sampling");
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(out.len(), draws * config.dim_theta);
        // f32 rounding grows over 400 levels and with n (the fused WGSL sampler is 8.8e-4
        // from the CPU at n = 8 on lavapipe); a broken kernel differs by O(1).
        let cpu = common::cpu_draws(&target, &sampler, draws.min(common::CHECKED_CHAINS));
        common::assert_matches_cpu(&out, &cpu, config.dim_theta, 1e-2);
        let gauss_macs = if gauss { (n + 1) * d * d } else { 0 };
        let flops_per_draw = 2.0
            * (plan.macs_per_step(n) + gauss_macs) as f64
            * passes_per_draw(LEVELS, &sampler) as f64;
        let gflops = flops_per_draw * draws as f64 / secs / 1e9;
        let of_peak = peak
            .map(|p| format!(", {:.1}% of FP32 peak", 100.0 * gflops / p))
            .unwrap_or_default();
        println!(
            "fused Algorithm 2, n = {n}{}, T = {LEVELS}, {draws} draws: {secs:.3} s, {:.0} samples/s, \
             {:.1} MFLOP/draw, {gflops:.0} GFLOP/s{of_peak}",
            if gauss { " (GAUSS)" } else { "" },
            draws as f64 / secs,
            flops_per_draw / 1e6
        );
    }
}
