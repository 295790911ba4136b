//! Posterior samplers for a score network composed over n observations (Geffner et al.
//! 2022): Algorithm 1 (annealed Langevin) and Algorithm 2 (composed diffusion with the
//! prior correction). Both run in the network's standardized space of θ: the prior's
//! unconstrained coordinates, or θ itself for a model in θ's natural space
//! ([`crate::estimators::score_model::ThetaSpace`]).
//!
//! With levels γ_0 = 1 > γ_1 > … > γ_S = 0, α_1 = γ_1, α_k = γ_k/γ_{k−1}, β_k = 1 − α_k,
//! and the composed score
//! `s(θ, k) = (1 − n)(S − k)/S · ∇log p(θ) + Σ_j s_ψ(θ, k, x_j)`:
//!
//! * Algorithm 1: θ ~ N(0, I/n); for k = S−1 … 1, L times:
//!   θ ← θ + δ_k/2 · s(θ, k) + √δ_k · η, δ_k = 0.05·(1 − α_k)/√α_k.
//! * Algorithm 2: θ ~ N(0, I/n); for k = S−1 … 1:
//!   μ_jk = (θ + (1 − α_k) s_ψ(θ, k, x_j))/√α_k, σ_k² = β_k/(n − α_k(n − 1)),
//!   μ_k = (Σ_j μ_jk − (n − 1)√α_k θ)/(n − α_k(n − 1)) + σ_k²(1 − n)(S − k)/S · ∇log p(θ),
//!   θ ~ N(μ_k, σ_k² I).
//!
//! Algorithm 2's last step (k = 1) adds noise σ_1 z to a draw that should be noise-free:
//! σ_1² = β_1 is the forward variance of level 1, while the reverse kernel's variance at
//! k = 1 is β̃_1 = β_1(1 − γ_0)/(1 − γ_1) = 0 (Ho et al. 2020 return μ_1 there). By
//! default ([`SamplerConfig::denoise_last`]) we return μ_1 too: with σ_1 = 0.011 (400
//! levels) or 0.025 (100) in standardized units, the extra noise widens posteriors as
//! narrow as gaussian_mixture's spike and two_moons' crescents (mean C2ST 0.013 worse on
//! both at 400 levels, `benches/RESULTS.md`).
//!
//! Both algorithms are biased for n > 1 even with the exact score: the composed
//! bridging densities are not the marginals of one diffusion, so a reverse step built
//! from them does not carry one into the next. On gaussian10 with the exact score and
//! T = 400, Algorithm 2 ends with 59% of the posterior variance at n = 4 and 54% at
//! n = 8; Algorithm 1 (δ = 0.05·(1 − α)/√α, L = 50) ends with 126% at n = 1, because its
//! steps shrink with 1 − α_k and the chain freezes before the last levels
//! (`tests/samplers.rs` checks our draws against these exact moments of the algorithms).
//! An optional [`Corrector`] fixes this: after the predictor step of each of the last
//! `levels` levels it runs `steps` Langevin steps on that level's bridging density,
//! θ ← θ + ε·s(θ, k) + √(2ε)·z, with ε = 2(r‖z‖/‖s‖)² ≈ 2r²d/‖s(θ, k)‖² per sample
//! (Song et al. 2021's predictor–corrector rule, signal-to-noise ratio r). It is not part
//! of Geffner et al.; with [`Corrector::NONE`] the samplers are exactly their algorithms.
//!
//! Samples are processed in tiles; each tile runs its whole chain with its own buffers
//! (allocated once per tile), tiles run in parallel with rayon. Noise is drawn from the
//! Philox contract: sample `lane` at chain step `step` reads
//! `PhiloxStream::at_step(seed, streams::SAMPLER, step, lane)`, step 0 being the initial
//! draw, so a GPU kernel with the same seed reproduces every trajectory.

pub mod cuda;
pub mod gauss;
pub mod gpu;
pub mod mcmc;
pub mod score_plan;
pub mod target;
pub mod wgpu;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::estimators::score_model::Standardization;
use crate::priors::Prior;
use crate::rng::{streams, PhiloxStream};
pub use score_plan::{BaseConditioning, Conditioning, Dense, ScorePlan, Workspace};
pub use target::{sample_target, ScoreComposition, Target};

/// Per-observation scores s_ψ(θ, k, x_j) for a tile of samples.
pub trait ComposableScore: Sync {
    /// Scratch memory of one tile.
    type Scratch: Send;
    /// Dimension of θ.
    fn dim(&self) -> usize;
    /// n, the number of observations.
    fn observations(&self) -> usize;
    /// Scratch for tiles of up to `rows` samples.
    fn scratch(&self, rows: usize) -> Self::Scratch;
    /// Writes s_ψ(θ, level, x_j) for every j into `out` `[n, rows, dim]`; `theta` is
    /// `[rows, dim]` and `level` indexes the sampling grid (γ_level).
    fn scores(&self, level: usize, theta: &[f32], scratch: &mut Self::Scratch, out: &mut [f32]);
}

/// ∇log p(θ) of the prior in the sampler's space.
pub trait PriorScore: Sync {
    /// Writes the score at one `theta` row into `out`.
    fn prior_score(&self, theta: &[f32], out: &mut [f32]);
}

/// A prior's score in the samplers' space θ̃ = (u − m)/s, where u = B⁻¹(θ) are the
/// prior's unconstrained coordinates and (m, s) the training set's standardization of u:
/// by the chain rule through θ̃ ↦ u = m + s ⊙ θ̃,
/// `∇log p(θ̃) = s ⊙ ∇_u log p_u(m + s ⊙ θ̃)`, with p_u the prior pushed to u (its
/// bijection's log-Jacobian included, [`Prior::score_unconstrained_into`]). u is formed
/// in f32, the unconstrained score in f64 rounded to f32, the product with s in f32; the
/// fused GPU samplers compute the same ([`gpu::GpuPrior`]).
#[derive(Clone, Debug, PartialEq)]
pub struct StandardizedPrior {
    /// The prior over θ.
    pub prior: Prior,
    /// The standardization (m, s) of u = B⁻¹(θ).
    pub standardization: Standardization,
}

impl PriorScore for StandardizedPrior {
    fn prior_score(&self, theta: &[f32], out: &mut [f32]) {
        let s = &self.standardization;
        // A stack buffer for u in the common low-dimensional case: this runs per sample
        // and step.
        let mut stack = [0.0f32; 32];
        let mut heap = Vec::new();
        let u: &mut [f32] = if theta.len() <= stack.len() {
            &mut stack[..theta.len()]
        } else {
            heap.resize(theta.len(), 0.0);
            &mut heap
        };
        for (((v, &t), m), sd) in u.iter_mut().zip(theta).zip(&s.mean).zip(&s.std) {
            *v = m + sd * t;
        }
        // u is finite (the sampler's state is), so the unconstrained score is defined.
        if self.prior.score_unconstrained_into(u, out).is_err() {
            out.fill(0.0);
        }
        for (o, sd) in out.iter_mut().zip(&s.std) {
            *o *= sd;
        }
    }
}

/// The learned score: s_ψ = −ε̂/√(1 − γ_k), ε̂ from a [`ScorePlan`].
pub struct LearnedScore<'a> {
    /// The network.
    pub plan: &'a ScorePlan,
    /// Its per-call precomputation for these observations and levels.
    pub conditioning: Conditioning,
    /// γ_k of the sampling grid.
    pub gammas: Vec<f64>,
}

impl ComposableScore for LearnedScore<'_> {
    type Scratch = Workspace;

    fn dim(&self) -> usize {
        self.plan.config.dim_theta
    }

    fn observations(&self) -> usize {
        self.conditioning.observations
    }

    fn scratch(&self, rows: usize) -> Workspace {
        self.plan.workspace(rows)
    }

    fn scores(&self, level: usize, theta: &[f32], scratch: &mut Workspace, out: &mut [f32]) {
        self.plan
            .eps_hat(&self.conditioning, level, theta, scratch, out);
        let scale = -1.0 / (1.0 - self.gammas[level]).sqrt() as f32;
        for v in out.iter_mut() {
            *v *= scale;
        }
    }
}

/// Which algorithm of Geffner et al.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Algorithm {
    /// Algorithm 2: composed Gaussian transitions, one network pass per level.
    Diffusion,
    /// Algorithm 1: `steps_per_level` (L) Langevin steps per level.
    Langevin {
        /// L (Appendix B: 50).
        steps_per_level: usize,
    },
}

impl std::str::FromStr for Algorithm {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "diffusion" => Ok(Algorithm::Diffusion),
            "langevin" => Ok(Algorithm::Langevin {
                steps_per_level: 50,
            }),
            other => Err(Error::invalid(
                "sampler",
                format!("unknown sampler {other:?} (known: diffusion, langevin)"),
            )),
        }
    }
}

/// Langevin corrector steps after the predictor at the last levels (module docs).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Corrector {
    /// Corrector steps per corrected level.
    pub steps: usize,
    /// How many of the last levels (k = 1 ..= levels) get corrected.
    pub levels: usize,
    /// Signal-to-noise ratio r of the step-size rule.
    pub snr: f32,
}

impl Corrector {
    /// No corrector: the samplers are exactly Geffner et al.'s algorithms.
    pub const NONE: Corrector = Corrector {
        steps: 0,
        levels: 0,
        snr: 0.16,
    };
}

/// How to sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplerConfig {
    /// Algorithm 1 or 2.
    pub algorithm: Algorithm,
    /// Langevin corrector at the last levels.
    pub corrector: Corrector,
    /// Seeds the Philox noise.
    pub seed: u64,
    /// Samples per tile (one rayon task runs one tile's whole chain).
    pub tile: usize,
    /// Algorithm 2 returns the last step's mean μ_1 without adding σ_1 z (module docs);
    /// `false` is Geffner et al.'s Algorithm 2 to the letter. Algorithm 1 ignores it.
    pub denoise_last: bool,
}

impl SamplerConfig {
    /// σ_k of Algorithm 2's step at level `k` with step variance `var` = σ_k²: 0 at
    /// k = 1 when [`SamplerConfig::denoise_last`]. The CPU and the GPU level tables all
    /// take it from here, so they agree bit for bit.
    pub(crate) fn diffusion_noise_std(&self, k: usize, var: f64) -> f32 {
        if k == 1 && self.denoise_last {
            0.0
        } else {
            var.sqrt() as f32
        }
    }
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            algorithm: Algorithm::Diffusion,
            corrector: Corrector::NONE,
            seed: 0,
            tile: 64,
            denoise_last: true,
        }
    }
}

/// Checks what every sampler (CPU or GPU) needs of its inputs: a strictly decreasing
/// grid from γ_0 = 1 to γ_S = 0 with S ≥ 2, at least one observation, a positive
/// corrector snr, and at least one Langevin step per level. `op` names the caller.
pub fn validate_chain(
    op: &'static str,
    gammas: &[f64],
    observations: usize,
    config: &SamplerConfig,
) -> Result<()> {
    let levels = gammas.len().saturating_sub(1);
    if levels < 2 {
        return Err(Error::invalid(
            op,
            format!("needs at least 2 noise levels, got {levels}"),
        ));
    }
    if gammas[0] != 1.0 || gammas[levels] != 0.0 || gammas.windows(2).any(|w| w[1] >= w[0]) {
        return Err(Error::invalid(
            op,
            "levels must decrease strictly from γ_0 = 1 to γ_S = 0",
        ));
    }
    if observations == 0 {
        return Err(Error::invalid(op, "the observation set is empty"));
    }
    if !(config.corrector.snr > 0.0 && config.corrector.snr.is_finite()) {
        return Err(Error::invalid(op, "the corrector's snr must be positive"));
    }
    if let Algorithm::Langevin { steps_per_level: 0 } = config.algorithm {
        return Err(Error::invalid(
            op,
            "Langevin needs at least one step per level",
        ));
    }
    Ok(())
}

/// Standard normals of sample `lane` at chain step `step` (the Philox contract).
fn noise(seed: u64, step: u32, lane: u32, out: &mut [f32]) {
    PhiloxStream::at_step(seed, streams::SAMPLER, step, lane).fill_normal(0.0, 1.0, out);
}

/// Draws `num` samples `[num, dim]` of the composed posterior on the grid `gammas`
/// (γ_0 = 1 > … > γ_S = 0). `progress` is told how many samples each finished tile held.
pub fn sample<S: ComposableScore, P: PriorScore>(
    score: &S,
    prior: &P,
    gammas: &[f64],
    num: usize,
    config: &SamplerConfig,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<Vec<f32>> {
    let op = "sample";
    validate_chain(op, gammas, score.observations(), config)?;
    if config.tile == 0 || config.tile % CORRECTOR_GROUP != 0 {
        return Err(Error::invalid(
            op,
            format!(
                "tile must be a positive multiple of {CORRECTOR_GROUP}, got {}",
                config.tile
            ),
        ));
    }
    let d = score.dim();
    let mut out = vec![0.0f32; num * d];
    out.par_chunks_mut(config.tile * d)
        .enumerate()
        .for_each(|(tile_index, tile)| {
            let first_lane = tile_index * config.tile;
            run_tile(score, prior, gammas, config, first_lane, tile);
            progress(tile.len() / d);
        });
    Ok(out)
}

/// Per-tile buffers: Σ_j s_j and ∇log p for every row, the noise of one row, and each
/// row's ‖Σ_j s_j + w·∇log p‖² for the corrector's step size.
struct TileState<Scratch> {
    scratch: Scratch,
    scores: Vec<f32>,
    sum_s: Vec<f32>,
    prior_g: Vec<f32>,
    z: Vec<f32>,
    score_norm2: Vec<f64>,
}

/// The corrector's step size at each level uses the mean ‖s‖² over a group of this many
/// consecutive lanes (as Song et al. average over a batch): one sample's ‖s‖² scatters
/// like a χ² with d degrees of freedom, which in low dimension makes per-sample steps
/// blow up near the mode. Groups are fixed by lane, not by tile, so draws do not depend
/// on the tile size; tiles are therefore whole groups.
pub const CORRECTOR_GROUP: usize = 32;

impl<Scratch> TileState<Scratch> {
    /// Evaluates Σ_j s_j(θ, k), (when `prior_weight` ≠ 0) ∇log p(θ), and
    /// ‖Σ_j s_j + w·∇log p‖² for every row.
    fn evaluate<S: ComposableScore<Scratch = Scratch>, P: PriorScore>(
        &mut self,
        score: &S,
        prior: &P,
        k: usize,
        prior_weight: f32,
        theta: &[f32],
    ) {
        let d = score.dim();
        let rows = theta.len() / d;
        score.scores(k, theta, &mut self.scratch, &mut self.scores);
        for r in 0..rows {
            let sum = &mut self.sum_s[r * d..(r + 1) * d];
            sum.copy_from_slice(&self.scores[r * d..(r + 1) * d]);
            for j in 1..score.observations() {
                for (acc, &v) in sum
                    .iter_mut()
                    .zip(&self.scores[(j * rows + r) * d..(j * rows + r + 1) * d])
                {
                    *acc += v;
                }
            }
            let g = &mut self.prior_g[r * d..(r + 1) * d];
            if prior_weight != 0.0 {
                prior.prior_score(&theta[r * d..(r + 1) * d], g);
            } else {
                g.fill(0.0);
            }
            self.score_norm2[r] = sum
                .iter()
                .zip(g.iter())
                .map(|(&s, &p)| ((s + prior_weight * p) as f64).powi(2))
                .sum();
        }
    }
}

/// One tile's whole chain, in place in `theta` `[rows, dim]`.
fn run_tile<S: ComposableScore, P: PriorScore>(
    score: &S,
    prior: &P,
    gammas: &[f64],
    config: &SamplerConfig,
    first_lane: usize,
    theta: &mut [f32],
) {
    let d = score.dim();
    let rows = theta.len() / d;
    let n = score.observations();
    let nf = n as f64;
    let levels = gammas.len() - 1;
    let mut st = TileState {
        scratch: score.scratch(rows),
        scores: vec![0.0; n * rows * d],
        sum_s: vec![0.0; rows * d],
        prior_g: vec![0.0; rows * d],
        z: vec![0.0; d],
        score_norm2: vec![0.0; rows],
    };
    let lane = |r: usize| (first_lane + r) as u32;

    let init_std = (1.0 / nf).sqrt() as f32;
    for (r, row) in theta.chunks_exact_mut(d).enumerate() {
        noise(config.seed, 0, lane(r), row);
        row.iter_mut().for_each(|v| *v *= init_std);
    }

    let mut step = 1u32;
    for k in (1..levels).rev() {
        let alpha = gammas[k] / gammas[k - 1];
        // Weight of the prior correction: (1 − n)(S − k)/S.
        let w = (1.0 - nf) * (levels - k) as f64 / levels as f64;
        match config.algorithm {
            Algorithm::Diffusion => {
                st.evaluate(score, prior, k, w as f32, theta);
                let denom = nf - alpha * (nf - 1.0);
                let var = (1.0 - alpha) / denom;
                let (sqrt_alpha, sigma) = (alpha.sqrt(), config.diffusion_noise_std(k, var));
                for (r, row) in theta.chunks_exact_mut(d).enumerate() {
                    noise(config.seed, step, lane(r), &mut st.z);
                    let (sum_s, prior_g) = (
                        &st.sum_s[r * d..(r + 1) * d],
                        &st.prior_g[r * d..(r + 1) * d],
                    );
                    for (i, v) in row.iter_mut().enumerate() {
                        let th = *v as f64;
                        // Σ_j μ_jk = (n·θ + (1 − α)·Σ_j s_j)/√α.
                        let sum_mu = (nf * th + (1.0 - alpha) * sum_s[i] as f64) / sqrt_alpha;
                        let mean = (sum_mu - (nf - 1.0) * sqrt_alpha * th) / denom
                            + var * w * prior_g[i] as f64;
                        *v = mean as f32 + sigma * st.z[i];
                    }
                }
                step += 1;
            }
            Algorithm::Langevin { steps_per_level } => {
                let delta = 0.05 * (1.0 - alpha) / alpha.sqrt();
                let (half_delta, sqrt_delta) = ((delta / 2.0) as f32, delta.sqrt() as f32);
                for _ in 0..steps_per_level {
                    st.evaluate(score, prior, k, w as f32, theta);
                    langevin_move(
                        &mut st,
                        theta,
                        w as f32,
                        config.seed,
                        step,
                        first_lane,
                        |_| (half_delta, sqrt_delta),
                    );
                    step += 1;
                }
            }
        }
        if k <= config.corrector.levels {
            let snr2 = (config.corrector.snr as f64).powi(2);
            for _ in 0..config.corrector.steps {
                st.evaluate(score, prior, k, w as f32, theta);
                // ε = 2r²d / mean ‖s‖² over the row's lane group.
                let steps: Vec<(f32, f32)> = st
                    .score_norm2
                    .chunks(CORRECTOR_GROUP)
                    .map(|group| {
                        let mean = group.iter().sum::<f64>() / group.len() as f64;
                        let eps = 2.0 * snr2 * d as f64 / mean.max(f64::MIN_POSITIVE);
                        (eps as f32, (2.0 * eps).sqrt() as f32)
                    })
                    .collect();
                langevin_move(
                    &mut st,
                    theta,
                    w as f32,
                    config.seed,
                    step,
                    first_lane,
                    |r| steps[r / CORRECTOR_GROUP],
                );
                step += 1;
            }
        }
    }
}

/// θ ← θ + a·s + b·z per row, s = Σ_j s_j + w·∇log p from the last evaluation, z the
/// row's Philox normals at `step`, and (a, b) = `coefficients(row)`.
fn langevin_move<Scratch>(
    st: &mut TileState<Scratch>,
    theta: &mut [f32],
    w: f32,
    seed: u64,
    step: u32,
    first_lane: usize,
    coefficients: impl Fn(usize) -> (f32, f32),
) {
    let d = st.z.len();
    for (r, row) in theta.chunks_exact_mut(d).enumerate() {
        noise(seed, step, (first_lane + r) as u32, &mut st.z);
        let (a, b) = coefficients(r);
        let (sum_s, prior_g) = (
            &st.sum_s[r * d..(r + 1) * d],
            &st.prior_g[r * d..(r + 1) * d],
        );
        for (i, v) in row.iter_mut().enumerate() {
            *v += a * (sum_s[i] + w * prior_g[i]) + b * st.z[i];
        }
    }
}
