//! What the fused GPU samplers (`cuda.rs`, `wgpu.rs`) share: the prior whose score they
//! evaluate and the tables it becomes, the number of network passes per draw, and the
//! checks of their inputs.

use super::target::{ScoreComposition, Target};
use super::{
    validate_chain, Algorithm, Conditioning, PriorScore, SamplerConfig, ScorePlan,
    StandardizedPrior,
};
use crate::error::{Error, Result};
use crate::priors::Prior;

/// Largest width and dim θ the fused samplers handle.
pub const MAX_WIDTH: usize = 256;

/// The prior whose score the GPU samplers add (the composed score's
/// `(1 − n)(S − k)/S · ∇log p(θ)` term, evaluated only where that weight is not 0, i.e.
/// for n > 1). It is also a [`PriorScore`], the CPU reference of what the kernels compute.
#[derive(Clone, Debug, PartialEq)]
pub enum GpuPrior {
    /// N(0, I) in the sampler's space: ∇log p(θ) = −θ.
    StandardNormal,
    /// A flat prior: ∇log p(θ) = 0 (a uniform box sampled in θ's own coordinates, whose
    /// score is 0 inside the box; draws outside it are rejected afterwards).
    Flat,
    /// A prior of [`crate::priors`] through its bijection and the standardization of its
    /// unconstrained coordinates: every kind (Gaussian with full covariance, uniform box,
    /// log-normal) is supported.
    Standardized(StandardizedPrior),
}

impl PriorScore for GpuPrior {
    fn prior_score(&self, theta: &[f32], out: &mut [f32]) {
        match self {
            GpuPrior::StandardNormal => {
                for (o, t) in out.iter_mut().zip(theta) {
                    *o = -t;
                }
            }
            GpuPrior::Flat => out.fill(0.0),
            GpuPrior::Standardized(p) => p.prior_score(theta, out),
        }
    }
}

/// `PriorTables::kind` of a prior whose u-density is Gaussian:
/// ∇_u log p_u(u) = −P·(u − c).
pub const PRIOR_GAUSSIAN: u32 = 0;
/// `PriorTables::kind` of the uniform box: u is standard logistic per dimension,
/// ∇_u log p_u(u) = 1 − 2σ(u).
pub const PRIOR_LOGISTIC: u32 = 1;

/// A [`GpuPrior`] as the kernels read it: ∇log p(θ̃) = s ⊙ g(m + s ⊙ θ̃) with
/// g(u) = −P·(u − c) ([`PRIOR_GAUSSIAN`]: the Gaussian prior, P its precision and c its
/// mean; the log-normal, whose u = ln θ is N(μ, diag σ²), P = diag(1/σ²) and c = μ; the
/// standard normal, m = c = 0, s = 1, P = I; the flat prior, P = 0) or g(u) = 1 − 2σ(u) per dimension
/// ([`PRIOR_LOGISTIC`]: the uniform box through its scaled logit; P and c are zeros).
#[derive(Clone, Debug, PartialEq)]
pub struct PriorTables {
    /// [`PRIOR_GAUSSIAN`] or [`PRIOR_LOGISTIC`].
    pub kind: u32,
    /// m, the mean of u in the standardization, `[d]`.
    pub shift: Vec<f32>,
    /// s, the standard deviation of u in the standardization, `[d]`.
    pub scale: Vec<f32>,
    /// c, `[d]`.
    pub center: Vec<f64>,
    /// P, row-major `[d, d]`.
    pub precision: Vec<f64>,
}

/// The row-major `[d, d]` matrix with `values` on its diagonal.
fn diagonal(d: usize, values: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut p = vec![0.0; d * d];
    for (i, v) in values.enumerate() {
        p[i * d + i] = v;
    }
    p
}

impl GpuPrior {
    /// The kernels' tables for dimension `d` (checked by [`validate`]).
    pub fn tables(&self, d: usize) -> PriorTables {
        let (prior, standardization) = match self {
            // Gaussians centred at 0 in the sampler's space, of precision I or 0.
            GpuPrior::StandardNormal | GpuPrior::Flat => {
                let p = if *self == GpuPrior::Flat { 0.0 } else { 1.0 };
                return PriorTables {
                    kind: PRIOR_GAUSSIAN,
                    shift: vec![0.0; d],
                    scale: vec![1.0; d],
                    center: vec![0.0; d],
                    precision: diagonal(d, std::iter::repeat_n(p, d)),
                };
            }
            GpuPrior::Standardized(p) => (&p.prior, &p.standardization),
        };
        let (kind, center, precision) = match prior {
            Prior::Gaussian(g) => (PRIOR_GAUSSIAN, g.mean().to_vec(), g.precision().to_vec()),
            Prior::LogNormal(l) => (
                PRIOR_GAUSSIAN,
                l.mu().to_vec(),
                diagonal(d, l.sigma().iter().map(|s| 1.0 / (s * s))),
            ),
            Prior::Uniform(_) => (PRIOR_LOGISTIC, vec![0.0; d], vec![0.0; d * d]),
        };
        PriorTables {
            kind,
            shift: standardization.mean.clone(),
            scale: standardization.std.clone(),
            center,
            precision,
        }
    }

    /// Checks that the prior and its standardization have dimension `d` and a finite,
    /// nonzero scale.
    fn validate(&self, op: &'static str, d: usize) -> Result<()> {
        let GpuPrior::Standardized(p) = self else {
            return Ok(());
        };
        let s = &p.standardization;
        if p.prior.dim() != d || s.mean.len() != d || s.std.len() != d {
            return Err(Error::invalid(
                op,
                format!(
                    "the prior has dimension {} and its standardization {} means and {} scales; dim θ is {d}",
                    p.prior.dim(),
                    s.mean.len(),
                    s.std.len()
                ),
            ));
        }
        if s.mean.iter().chain(&s.std).any(|v| !v.is_finite()) || s.std.contains(&0.0) {
            return Err(Error::invalid(
                op,
                "the prior's standardization must be finite with nonzero scales",
            ));
        }
        Ok(())
    }
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
/// [`validate_chain`]), the prior's dimension, the network's size and the conditioning's
/// shapes, GAUSS weights made for these observations and this grid, and that the chain's
/// steps fit the Philox step word.
pub fn validate(op: &'static str, target: &Target, config: &SamplerConfig) -> Result<()> {
    let Target {
        plan,
        cond,
        gammas,
        prior,
        composition,
    } = *target;
    validate_chain(op, gammas, cond.observations, config)?;
    let levels = gammas.len() - 1;
    let (d, w) = (plan.config.dim_theta, plan.config.width);
    prior.validate(op, d)?;
    if d == 0 || w == 0 || d > MAX_WIDTH || w > MAX_WIDTH {
        let k = plan.ensemble_size();
        let ensemble = match k {
            1 => String::new(),
            _ => format!(
                " (an ensemble of {k} networks of width {} runs as one network {k} times as wide: sample it on the CPU, or with fewer or narrower members)",
                w / k
            ),
        };
        return Err(Error::invalid(
            op,
            format!("the GPU samplers handle width and dim θ in 1..={MAX_WIDTH}, got width {w}, dim θ {d}{ensemble}"),
        ));
    }
    if let Some(base) = &cond.base {
        let sizes = [
            (base.means.len(), cond.observations * d),
            (base.theta_coef.len(), (levels + 1) * d),
            (base.mean_coef.len(), (levels + 1) * d),
        ];
        if sizes.iter().any(|(got, want)| got != want) {
            return Err(Error::invalid(
                op,
                format!(
                    "the Gaussian base's terms hold {:?} values, expected n·d, (levels + 1)·d, (levels + 1)·d = {:?}",
                    sizes.map(|s| s.0),
                    sizes.map(|s| s.1)
                ),
            ));
        }
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
    if let ScoreComposition::Gauss(weights) = composition {
        if weights.dim() != d
            || weights.observations() != cond.observations
            || weights.grid_len() != gammas.len()
        {
            return Err(Error::invalid(
                op,
                format!(
                    "GAUSS weights for {} observations of dim {} on {} γ's, given {} observations of dim θ {d} on {} γ's",
                    weights.observations(),
                    weights.dim(),
                    weights.grid_len(),
                    cond.observations,
                    gammas.len()
                ),
            ));
        }
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

/// The plan's layers as transposed weights (`[in, out]`) followed by their biases, in one
/// buffer in the order both fused samplers read them (θ input, θ blocks, θ → head, head
/// blocks, head output), and the offsets of each layer's weights and bias in it.
pub fn pack_weights(op: &'static str, plan: &ScorePlan) -> Result<(Vec<f32>, Vec<usize>)> {
    let (d, w) = (plan.config.dim_theta, plan.config.width);
    let mut layers = vec![(&plan.theta_input, d, w)];
    layers.extend(plan.theta_blocks.iter().map(|b| (b, w, w)));
    layers.push((&plan.theta_to_head, w, w));
    layers.extend(plan.head_blocks.iter().map(|b| (b, w, w)));
    layers.push((&plan.head_output, w, d));
    let mut params = Vec::new();
    let mut offsets = Vec::new();
    for (i, (layer, fan_in, fan_out)) in layers.into_iter().enumerate() {
        if layer.in_features != fan_in
            || layer.out_features != fan_out
            || layer.weight.len() != fan_in * fan_out
            || layer.bias.len() != fan_out
        {
            return Err(Error::invalid(
                op,
                format!(
                    "layer {i} of the plan is {}→{} with {} weights and {} biases, expected {fan_in}→{fan_out}",
                    layer.in_features,
                    layer.out_features,
                    layer.weight.len(),
                    layer.bias.len()
                ),
            ));
        }
        offsets.push(params.len());
        for k in 0..fan_in {
            params.extend((0..fan_out).map(|o| layer.weight[o * fan_in + k]));
        }
        offsets.push(params.len());
        params.extend_from_slice(&layer.bias);
    }
    Ok((params, offsets))
}

/// The Gaussian base's table of the fused samplers (`kernels/score_sampler.cuh`,
/// `shaders/score_sampler.wgsl`): m_j for every observation (`[n, d]`), then c_k and s_k of
/// every level (`[levels + 1, 2, d]`); `None` without a base.
pub fn base_table(cond: &Conditioning) -> Option<Vec<f32>> {
    let base = cond.base.as_ref()?;
    let d = base.means.len() / cond.observations;
    let mut table = base.means.clone();
    for (c, s) in base
        .theta_coef
        .chunks_exact(d)
        .zip(base.mean_coef.chunks_exact(d))
    {
        table.extend_from_slice(c);
        table.extend_from_slice(s);
    }
    Some(table)
}
