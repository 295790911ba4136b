//! What a score sampler draws from, and drawing it on any device: the CPU reference
//! sampler ([`super::sample`]) or a fused GPU sampler ([`super::cuda`], [`super::wgpu`]),
//! which reproduce the CPU's draws for the same seed up to f32 rounding.

use super::gauss::{GaussScore, GaussWeights};
use super::gpu::GpuPrior;
use super::{sample, Conditioning, LearnedScore, SamplerConfig, ScorePlan};
use crate::error::Result;
use crate::tensor::Device;

/// How the per-observation scores of the conditioning's n observations compose.
#[derive(Clone, Copy, Debug, Default)]
pub enum ScoreComposition<'a> {
    /// Geffner et al.'s composition: Algorithms 1 and 2 as written for n observations
    /// ([`LearnedScore`] over all n, the prior's score weighted by (1 − n)(S − k)/S).
    #[default]
    Geffner,
    /// GAUSS (Linhart et al. 2024, [`super::gauss`]): per level the n scores become one
    /// through these weights ([`GaussScore`]) and the chain runs as for one observation.
    Gauss(&'a GaussWeights),
}

impl ScoreComposition<'_> {
    /// The n the chain's coefficients and initial draw are computed for: the
    /// conditioning's `observations` for Geffner et al., 1 for GAUSS (whose composed score
    /// is one observation's to the sampler).
    pub fn chain_observations(&self, observations: usize) -> usize {
        match self {
            ScoreComposition::Geffner => observations,
            ScoreComposition::Gauss(_) => 1,
        }
    }
}

/// The composed posterior of the network `plan` conditioned on n observations (`cond`)
/// on the grid `gammas` (γ_0 = 1 > … > γ_S = 0), with the prior whose score Geffner et
/// al.'s composition adds, composed as `composition` says.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    /// The network.
    pub plan: &'a ScorePlan,
    /// Its per-call precomputation for the observations and the grid.
    pub cond: &'a Conditioning,
    /// γ_k of the grid.
    pub gammas: &'a [f64],
    /// The prior in the sampler's space.
    pub prior: &'a GpuPrior,
    /// How the n observations compose.
    pub composition: ScoreComposition<'a>,
}

/// `num` draws `[num, dim θ]` from `target` in the sampler's space on `device`: the CPU
/// sampler (whose `progress` hears of each finished tile) or the fused sampler of a CUDA
/// device or wgpu adapter (one launch, no progress until it returns). Any device error is
/// an error, never a fallback to another device.
pub fn sample_target(
    device: Device,
    target: &Target,
    num: usize,
    config: &SamplerConfig,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<Vec<f32>> {
    match device {
        Device::Cpu => {
            let score = LearnedScore {
                plan: target.plan,
                conditioning: target.cond.clone(),
                gammas: target.gammas.to_vec(),
            };
            match target.composition {
                ScoreComposition::Geffner => {
                    sample(&score, target.prior, target.gammas, num, config, progress)
                }
                ScoreComposition::Gauss(weights) => {
                    let composed = GaussScore::new(&score, weights)?;
                    sample(
                        &composed,
                        target.prior,
                        target.gammas,
                        num,
                        config,
                        progress,
                    )
                }
            }
        }
        Device::Cuda(ordinal) => super::cuda::sample_cuda(ordinal, target, num, config),
        Device::Wgpu(adapter) => super::wgpu::sample_wgpu(adapter, target, num, config),
    }
}
