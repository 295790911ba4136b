//! What the fused-sampler benches share: a timing of wrong draws is no timing, so each
//! bench checks the fused sampler's draws against the CPU sampler's for the same chains.

use amortize::samplers::{sample_target, SamplerConfig, Target};
use amortize::Device;

/// Chains the CPU draws to check a long fused run against: a chain's draws do not depend
/// on how many run beside it, so the first chains of any run compare.
pub const CHECKED_CHAINS: usize = 64;

/// The CPU sampler's draws of the first `chains` chains of `target`.
pub fn cpu_draws(target: &Target, config: &SamplerConfig, chains: usize) -> Vec<f32> {
    sample_target(Device::Cpu, target, chains, config, &|_| {}).expect("CPU sampling")
}

/// Asserts that `fused` is finite and, over the chains `cpu` holds (its first ones), within
/// `tol` of `cpu` relative to max(1, |cpu|); prints the largest error.
pub fn assert_matches_cpu(fused: &[f32], cpu: &[f32], dim: usize, tol: f32) {
    assert!(
        fused.iter().all(|v| v.is_finite()),
        "non-finite fused draws"
    );
    let err = fused
        .iter()
        .zip(cpu)
        .map(|(g, c)| (g - c).abs() / c.abs().max(1.0))
        .fold(0.0f32, f32::max);
    println!(
        "largest |fused − CPU| / max(1, |CPU|) over the first {} chains: {err:.2e}",
        cpu.len().min(fused.len()) / dim
    );
    assert!(err < tol, "the fused draws differ from the CPU's by {err}");
}
