//! What the fused GPU samplers (`cuda.rs`, `wgpu.rs`) share: the prior they support,
//! the number of network passes per draw, and the checks of their inputs.

use super::{validate_chain, Algorithm, Conditioning, SamplerConfig, ScorePlan};
use crate::error::{Error, Result};

/// Largest width and dim θ the fused samplers handle.
pub const MAX_WIDTH: usize = 256;

/// The prior whose score the GPU samplers add (the composed score's
/// `(1 − n)(S − k)/S · ∇log p(θ)` term).
#[derive(Clone, Debug, PartialEq)]
pub enum GpuPrior {
    /// N(0, I) in the sampler's (standardized, unconstrained) space: ∇log p(θ) = −θ.
    StandardNormal,
    /// Any other prior, by name: not yet implemented on the GPU, so the GPU samplers
    /// refuses it with an error.
    Other(String),
}

/// Network passes (one [`ScorePlan::eps_hat`] per sample) of one draw on a grid of
/// `levels` levels (`gammas.len() − 1`): `L` per predictor level (1 for Algorithm 2) over
/// levels S − 1 … 1, plus `steps` per corrected level. FLOPs per draw are
/// `2 · plan.macs_per_step(n) · passes_per_draw(..)`.
pub fn passes_per_draw(levels: usize, config: &SamplerConfig) -> usize {
    let predictor = match config.algorithm {
        Algorithm::Diffusion => 1,
        Algorithm::Langevin { steps_per_level } => steps_per_level,
    };
    let predicted = levels.saturating_sub(1);
    predicted * predictor + predicted.min(config.corrector.levels) * config.corrector.steps
}

/// Checks the inputs of a fused GPU sampler (`op` names it): the chain (as
/// [`validate_chain`]), the prior, the network's size and the conditioning's shapes, and
/// that the chain's steps fit the Philox step word.
pub fn validate(
    op: &'static str,
    plan: &ScorePlan,
    cond: &Conditioning,
    gammas: &[f64],
    prior: &GpuPrior,
    config: &SamplerConfig,
) -> Result<()> {
    if let GpuPrior::Other(name) = prior {
        return Err(Error::invalid(
            op,
            format!(
                "the GPU samplers support only the standard normal prior (score −θ in the sampler's space), not {name}; sample on the CPU"
            ),
        ));
    }
    validate_chain(op, gammas, cond.observations, config)?;
    let levels = gammas.len() - 1;
    let (d, w) = (plan.config.dim_theta, plan.config.width);
    if d == 0 || w == 0 || d > MAX_WIDTH || w > MAX_WIDTH {
        return Err(Error::invalid(
            op,
            format!("the GPU samplers handle width and dim θ in 1..={MAX_WIDTH}, got width {w}, dim θ {d}"),
        ));
    }
    if cond.x_part.len() != cond.observations * w {
        return Err(Error::invalid(
            op,
            format!(
                "conditioning x part holds {} values, expected n·width = {}",
                cond.x_part.len(),
                cond.observations * w
            ),
        ));
    }
    if cond.t_part.len() != (levels + 1) * w {
        return Err(Error::invalid(
            op,
            format!(
                "conditioning t part holds {} values, expected (levels + 1)·width = {} for {} γ's",
                cond.t_part.len(),
                (levels + 1) * w,
                gammas.len()
            ),
        ));
    }
    let steps = 1 + passes_per_draw(levels, config) as u64;
    if steps > u32::MAX as u64 {
        return Err(Error::invalid(
            op,
            format!("{steps} chain steps overflow the Philox step word"),
        ));
    }
    Ok(())
}
