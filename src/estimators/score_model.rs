//! A trained score-based posterior estimator: the network, the maps between θ and the
//! network's space, the prior, and the noise schedule. Trains on (θ, x) rows, samples
//! the posterior of n ≥ 1 iid observations, saves to and loads from a model directory.
//!
//! The network's space for θ is u = B⁻¹(θ) (the prior's bijection to ℝᵈ), standardized:
//! θ̃ = (u − m_u)/s_u with training-set statistics; x̃ = (x − m_x)/s_x. The prior's score
//! in θ̃ space is s_u ⊙ ∇_u log p_u(u), where p_u includes the bijection's log-Jacobian.
//!
//! A model of a uniform-box prior may instead learn θ in its own coordinates
//! ([`ThetaSpace::Natural`]): u = θ. Inside the box the prior's score is then 0, so the
//! composition of n observations needs no prior term, and draws that leave the box are
//! rejected as NPE rejects them. Why: the scaled logit stretches a box's edges, so a
//! narrow posterior mode near an edge is learned where it is wide in u and few prior
//! draws land (sbibm's gaussian_mixture, `benches/RESULTS.md`).

use serde::{Deserialize, Serialize};

use crate::autograd::ParamStore;
use crate::error::{Error, Result};
use crate::estimators::gaussian_base::GaussianBase;
use crate::estimators::npe::{sample_in_support, PosteriorDraws};
use crate::estimators::score::{
    dsm_loss, BaseTerms, LevelDraw, NoiseSchedule, ScoreNet, ScoreNetConfig, XData,
};
use crate::nn::sets::RaggedSets;
use crate::nn::SetEncoderKind;
use crate::optim::AdamConfig;
use crate::priors::Prior;
use crate::rng::{streams, PhiloxStream};
use crate::samplers::gauss::{covariance, GaussPrior, GaussWeights};
use crate::samplers::gpu::GpuPrior;
use crate::samplers::{
    sample_target, SamplerConfig, ScoreComposition, ScorePlan, StandardizedPrior, Target,
};
use crate::tensor::Device;
use crate::train::{fit, EpochReport, TrainConfig, TrainReport};

/// Per-feature affine map to zero mean and unit variance, after putting a row made of
/// exchangeable blocks in its canonical order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Standardization {
    /// Feature means.
    pub mean: Vec<f32>,
    /// Feature standard deviations (never 0: constant features keep scale 1).
    pub std: Vec<f32>,
    /// A row is this many equal-sized blocks whose order carries no information (the iid
    /// draws of one simulator call, say): [`Standardization::apply`] first sorts each row's
    /// blocks by [`canonical_order`], so every ordering of the same blocks maps to the same
    /// input. 1 (the default) keeps the order.
    #[serde(default = "one_block", skip_serializing_if = "is_one_block")]
    pub exchangeable_blocks: usize,
}

fn one_block() -> usize {
    1
}

fn is_one_block(blocks: &usize) -> bool {
    *blocks == 1
}

/// Sorts the `blocks` equal-sized blocks of every row of `data` `[rows, cols]` in place,
/// lexicographically (first feature first, ties by the next; `total_cmp`, so NaN has a
/// place too). A function of the set of blocks alone: any permutation of a row's blocks
/// gives the same result.
pub fn canonical_order(data: &mut [f32], cols: usize, blocks: usize) {
    if blocks <= 1 {
        return;
    }
    let width = cols / blocks;
    let mut scratch = vec![0.0f32; cols];
    let mut order: Vec<usize> = (0..blocks).collect();
    for row in data.chunks_exact_mut(cols) {
        let block = |b: usize| &row[b * width..(b + 1) * width];
        order.sort_by(|&a, &b| {
            block(a)
                .iter()
                .zip(block(b))
                .map(|(u, v)| u.total_cmp(v))
                .find(|o| o.is_ne())
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        for (slot, &b) in scratch.chunks_exact_mut(width).zip(&order) {
            slot.copy_from_slice(block(b));
        }
        row.copy_from_slice(&scratch);
        order.iter_mut().enumerate().for_each(|(i, o)| *o = i);
    }
}

impl Standardization {
    /// Statistics of rows `data` `[rows, cols]` made of `blocks` exchangeable blocks (see
    /// [`Standardization::exchangeable_blocks`]), taken in canonical order; an error unless
    /// `blocks` ≥ 1 divides `cols`. `op` names the caller in errors.
    pub fn fit_exchangeable(
        op: &'static str,
        data: &[f32],
        cols: usize,
        blocks: usize,
    ) -> Result<Self> {
        if blocks == 0 || cols % blocks != 0 {
            return Err(Error::invalid(
                op,
                format!("{blocks} exchangeable blocks do not split x's {cols} features evenly"),
            ));
        }
        if blocks == 1 {
            return Ok(Standardization::fit(data, cols));
        }
        let mut canonical = data.to_vec();
        canonical_order(&mut canonical, cols, blocks);
        Ok(Standardization {
            exchangeable_blocks: blocks,
            ..Standardization::fit(&canonical, cols)
        })
    }

    /// Statistics of the rows of `data` `[rows, cols]`, accumulated in f64.
    pub fn fit(data: &[f32], cols: usize) -> Self {
        let rows = (data.len() / cols).max(1);
        let mut mean = vec![0.0f64; cols];
        for row in data.chunks_exact(cols) {
            for (m, &v) in mean.iter_mut().zip(row) {
                *m += v as f64;
            }
        }
        mean.iter_mut().for_each(|m| *m /= rows as f64);
        let mut var = vec![0.0f64; cols];
        for row in data.chunks_exact(cols) {
            for ((s, &v), m) in var.iter_mut().zip(row).zip(&mean) {
                *s += (v as f64 - m).powi(2);
            }
        }
        let std = var
            .iter()
            .map(|s| {
                let sd = (s / rows as f64).sqrt();
                if sd > 1e-12 && sd.is_finite() {
                    sd as f32
                } else {
                    1.0
                }
            })
            .collect();
        Standardization {
            mean: mean.iter().map(|&m| m as f32).collect(),
            std,
            exchangeable_blocks: 1,
        }
    }

    /// In place: each row put in canonical block order, then v ← (v − mean)/std.
    pub fn apply(&self, data: &mut [f32]) {
        canonical_order(data, self.mean.len(), self.exchangeable_blocks);
        for row in data.chunks_exact_mut(self.mean.len()) {
            for ((v, m), s) in row.iter_mut().zip(&self.mean).zip(&self.std) {
                *v = (*v - m) / s;
            }
        }
    }

    /// In place: v ← mean + std·v, row by row (rows stay in canonical block order).
    pub fn invert(&self, data: &mut [f32]) {
        for row in data.chunks_exact_mut(self.mean.len()) {
            for ((v, m), s) in row.iter_mut().zip(&self.mean).zip(&self.std) {
                *v = m + s * *v;
            }
        }
    }
}

/// The coordinates u of θ that the score network learns and samples in (before
/// standardization).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThetaSpace {
    /// u = B⁻¹(θ), the prior's bijection to ℝᵈ (the identity for a Gaussian prior): every
    /// draw lies in the prior's support.
    #[default]
    Unconstrained,
    /// u = θ. For uniform-box and Gaussian priors only: inside a box the prior's score is
    /// 0, and draws outside it are rejected.
    Natural,
}

impl ThetaSpace {
    /// Whether this is [`ThetaSpace::Unconstrained`] (the value model files may omit).
    pub fn is_unconstrained(&self) -> bool {
        *self == ThetaSpace::Unconstrained
    }

    /// Checks that a model of `prior` can use this space: the natural space of a
    /// log-normal prior has a boundary at 0 where its score diverges.
    pub fn check(self, op: &'static str, prior: &Prior) -> Result<()> {
        if self == ThetaSpace::Natural && matches!(prior, Prior::LogNormal(_)) {
            return Err(Error::invalid(
                op,
                "θ's natural space is for uniform-box and Gaussian priors; a log-normal prior's score diverges at 0: use the unconstrained space",
            ));
        }
        Ok(())
    }

    /// u of each row of θ `[rows, dim]` drawn from `prior`; errors if a row lies outside
    /// the prior's support.
    pub fn from_theta(self, op: &'static str, prior: &Prior, theta: &[f32]) -> Result<Vec<f32>> {
        match self {
            ThetaSpace::Unconstrained => prior.to_unconstrained(theta),
            ThetaSpace::Natural => {
                let outside = prior
                    .log_density(theta)?
                    .iter()
                    .filter(|lp| !lp.is_finite())
                    .count();
                if outside > 0 {
                    return Err(Error::invalid(
                        op,
                        format!("theta has {outside} row(s) outside the prior's support"),
                    ));
                }
                Ok(theta.to_vec())
            }
        }
    }
}

impl std::str::FromStr for ThetaSpace {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self> {
        match name {
            "unconstrained" => Ok(ThetaSpace::Unconstrained),
            "natural" => Ok(ThetaSpace::Natural),
            other => Err(Error::invalid(
                "theta space",
                format!("unknown θ space {other:?} (known: unconstrained, natural)"),
            )),
        }
    }
}

/// Everything about a score model except its weights: the model file's `config.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoreModelConfig {
    /// Network sizes.
    pub network: ScoreNetConfig,
    /// Noise levels the network was trained on.
    pub schedule: NoiseSchedule,
    /// The prior (its bijection is implied by its kind).
    pub prior: Prior,
    /// The coordinates u of θ the network learns in; absent in model files written before
    /// there was a choice, which are [`ThetaSpace::Unconstrained`].
    #[serde(default, skip_serializing_if = "ThetaSpace::is_unconstrained")]
    pub theta_space: ThetaSpace,
    /// Standardization of u.
    pub theta_standardization: Standardization,
    /// Standardization of x.
    pub x_standardization: Standardization,
    /// The task the model was trained on, if a built-in one.
    pub task: Option<String>,
    /// A set encoder's largest training set (absent for the x-MLP): larger sets are an
    /// extrapolation in N.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cardinality: Option<usize>,
    /// A linear-Gaussian base under the network (ε̂ = ε̂_net + ε_base), fitted to the
    /// standardized training pairs; absent for the network alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gaussian_base: Option<GaussianBase>,
}

/// How to train a score model.
#[derive(Clone, Debug)]
pub struct ScoreTrainOptions {
    /// Hidden width of every MLP.
    pub width: usize,
    /// Noise levels T.
    pub levels: usize,
    /// How training draws the levels (default t = T·u², [`LevelDraw`]).
    pub level_draw: LevelDraw,
    /// Minibatch loop settings (epochs, batch size, validation split, Adam, seed, ...).
    pub train: TrainConfig,
    /// Where the training ops run; the trained weights come back to the CPU.
    pub device: Device,
    /// x is this many exchangeable blocks (see [`Standardization::exchangeable_blocks`]);
    /// 1 keeps x's order.
    pub exchangeable_blocks: usize,
    /// The coordinates of θ the network learns in.
    pub theta_space: ThetaSpace,
    /// A set encoder of this kind in the x-MLP's place, for [`ScoreModel::train_sets`];
    /// `None` keeps Appendix B's x-MLP.
    pub x_encoder: Option<SetEncoderKind>,
    /// Put a [`GaussianBase`] fitted to the training pairs under the network, which then
    /// learns what the base gets wrong (x-MLP only).
    pub gaussian_base: bool,
}

impl Default for ScoreTrainOptions {
    fn default() -> Self {
        ScoreTrainOptions {
            width: 128,
            levels: 400,
            level_draw: LevelDraw::default(),
            train: TrainConfig {
                epochs: 300,
                batch_size: 256,
                validation_fraction: 0.2,
                patience: 30,
                optimizer: AdamConfig::adam(1e-3),
                warmup_steps: 100,
                ..TrainConfig::default()
            },
            device: Device::Cpu,
            exchangeable_blocks: 1,
            theta_space: ThetaSpace::Unconstrained,
            x_encoder: None,
            gaussian_base: false,
        }
    }
}

/// A trained score-based posterior estimator.
#[derive(Clone, Debug)]
pub struct ScoreModel {
    /// Architecture, maps, prior and schedule.
    pub config: ScoreModelConfig,
    /// The network's parameters, by name.
    pub store: ParamStore,
    /// The network.
    pub net: ScoreNet,
}

/// Checks that `data` holds whole rows of `cols` finite values; names the array and
/// counts the bad rows.
pub fn check_rows(op: &'static str, what: &str, data: &[f32], cols: usize) -> Result<usize> {
    if cols == 0 || data.len() % cols != 0 {
        return Err(Error::invalid(
            op,
            format!("{what} has {} values, not whole rows of {cols}", data.len()),
        ));
    }
    let bad = data
        .chunks_exact(cols)
        .filter(|r| r.iter().any(|v| !v.is_finite()))
        .count();
    if bad > 0 {
        return Err(Error::invalid(
            op,
            format!("{what} has {bad} row(s) with NaN or infinite values"),
        ));
    }
    Ok(data.len() / cols)
}

/// A copy of `store` with every parameter on `device`, under the same names and ids.
pub(crate) fn move_store(store: &ParamStore, device: Device) -> Result<ParamStore> {
    let mut moved = ParamStore::new();
    for (_, name, t) in store.iter() {
        moved.add(name, t.to_device(device)?)?;
    }
    Ok(moved)
}

impl ScoreModel {
    /// Trains on rows θ `[rows, dim θ]` and x `[rows, dim x]` drawn from `prior` and the
    /// simulator. `on_epoch` sees every epoch's report. A set encoder
    /// ([`ScoreTrainOptions::x_encoder`]) trains on sets instead: see
    /// [`ScoreModel::train_sets`].
    pub fn train(
        theta: &[f32],
        x: &[f32],
        dim_x: usize,
        prior: Prior,
        task: Option<String>,
        options: &ScoreTrainOptions,
        on_epoch: impl FnMut(&EpochReport),
    ) -> Result<(ScoreModel, TrainReport)> {
        let op = "ScoreModel::train";
        if options.x_encoder.is_some() {
            return Err(Error::invalid(
                op,
                "a set encoder learns from sets of x's iid draws: train with ScoreModel::train_sets",
            ));
        }
        let rows = check_rows(op, "theta", theta, prior.dim())?;
        let x_rows = check_rows(op, "x", x, dim_x)?;
        if rows != x_rows {
            return Err(Error::invalid(
                op,
                format!("theta has {rows} rows but x has {x_rows}"),
            ));
        }
        let mut xs = x.to_vec();
        let x_standardization =
            Standardization::fit_exchangeable(op, &xs, dim_x, options.exchangeable_blocks)?;
        x_standardization.apply(&mut xs);
        let network = ScoreNetConfig::new(prior.dim(), dim_x, options.width);
        let data = (XData::Rows(&xs), x_standardization);
        Self::train_standardized(theta, data, network, prior, task, options, on_epoch)
    }

    /// Trains on θ `[sets, dim θ]` and one set of x's iid draws per row of θ (e.g.
    /// [`crate::estimators::set_npe::draw_subsets`]: every non-empty subset of each
    /// simulation's draws), with a set encoder of kind `options.x_encoder` in the x-MLP's
    /// place. The model learns the posterior given a set of any size, so sampling given n
    /// draws reads them as one set and composes nothing. With subsets, keep each
    /// simulation's on one side of the validation split: `options.train.rows_per_group`
    /// = [`crate::estimators::set_npe::subsets_per_simulation`]`(K)`.
    pub fn train_sets(
        theta: &[f32],
        sets: &RaggedSets,
        prior: Prior,
        task: Option<String>,
        options: &ScoreTrainOptions,
        on_epoch: impl FnMut(&EpochReport),
    ) -> Result<(ScoreModel, TrainReport)> {
        let op = "ScoreModel::train_sets";
        let Some(kind) = options.x_encoder else {
            return Err(Error::invalid(op, "sets need a set encoder (x_encoder)"));
        };
        if options.exchangeable_blocks != 1 {
            return Err(Error::invalid(
                op,
                "a set has no order to sort: exchangeable_blocks must be 1",
            ));
        }
        let rows = check_rows(op, "theta", theta, prior.dim())?;
        if rows != sets.len() {
            return Err(Error::invalid(
                op,
                format!("theta has {rows} rows but there are {} sets", sets.len()),
            ));
        }
        let dim_x = sets.features();
        check_rows(op, "the sets' elements", sets.elements(), dim_x)?;
        let x_standardization = Standardization::fit(sets.elements(), dim_x);
        let mut xs = sets.clone();
        x_standardization.apply(xs.elements_mut());
        let network = ScoreNetConfig::new(prior.dim(), dim_x, options.width)
            .with_set_encoder(kind, X_ENCODER_WIDTH);
        let data = (XData::Sets(&xs), x_standardization);
        let (mut model, report) =
            Self::train_standardized(theta, data, network, prior, task, options, on_epoch)?;
        model.config.max_cardinality = (0..sets.len()).map(|i| sets.cardinality(i)).max();
        Ok((model, report))
    }

    /// The training both [`ScoreModel::train`] and [`ScoreModel::train_sets`] run, on
    /// their standardized x and its standardization.
    fn train_standardized(
        theta: &[f32],
        (xs, x_standardization): (XData, Standardization),
        network: ScoreNetConfig,
        prior: Prior,
        task: Option<String>,
        options: &ScoreTrainOptions,
        on_epoch: impl FnMut(&EpochReport),
    ) -> Result<(ScoreModel, TrainReport)> {
        let op = "ScoreModel::train";
        let dim_theta = prior.dim();
        options.level_draw.validate(op)?;
        let rows = theta.len() / dim_theta;
        options.theta_space.check(op, &prior)?;
        let mut u = options.theta_space.from_theta(op, &prior, theta)?;
        let theta_standardization = Standardization::fit(&u, dim_theta);
        theta_standardization.apply(&mut u);

        // Fitted to every row, as the standardizations are, so that the members of an
        // ensemble trained on the same simulations share it.
        let (gaussian_base, base_means) = match (options.gaussian_base, xs) {
            (false, _) => (None, Vec::new()),
            (true, XData::Rows(x)) => {
                let base = GaussianBase::fit(&u, x, dim_theta, network.dim_x)?;
                let means = base.means(x);
                (Some(base), means)
            }
            (true, XData::Sets(_)) => {
                return Err(Error::invalid(
                    op,
                    "a Gaussian base is linear in one observation: a set encoder's network cannot have one",
                ))
            }
        };
        let base_terms = gaussian_base.as_ref().map(|base| BaseTerms {
            base,
            means: &base_means,
        });
        let schedule = NoiseSchedule {
            levels: options.levels,
        };
        let mut store = ParamStore::new();
        let mut rng = PhiloxStream::new(options.train.seed, streams::INIT, 0);
        let net = ScoreNet::new(&mut store, network, &mut rng)?;
        if gaussian_base.is_some() {
            // The model starts as the base and the network learns what it gets wrong; a
            // random output layer would add noise that a short run (and the weight
            // average, which starts from the initial weights) keeps.
            net.head.output.zero(&mut store)?;
        }
        let mut store = move_store(&store, options.device)?;
        let seed = options.train.seed;
        let level_draw = options.level_draw;
        let mut calls = 0u32;
        let report = fit(
            &mut store,
            rows,
            &options.train,
            |tape, store, batch| {
                // Validation (no-grad) always sees the same noise, so epochs compare.
                let step = if tape.is_recording() {
                    calls += 1;
                    calls
                } else {
                    u32::MAX
                };
                dsm_loss(
                    tape, store, &net, &schedule, level_draw, &u, xs, base_terms, batch, seed, step,
                )
            },
            on_epoch,
        )?;
        let store = move_store(&store, Device::Cpu)?;
        let model = ScoreModel {
            config: ScoreModelConfig {
                network,
                schedule,
                prior,
                theta_space: options.theta_space,
                theta_standardization,
                x_standardization,
                task,
                max_cardinality: None,
                gaussian_base,
            },
            store,
            net,
        };
        Ok((model, report))
    }

    /// The network prepared for sampling (weights copied, θ-path folded).
    pub fn plan(&self) -> Result<ScorePlan> {
        let plan = ScorePlan::new(&self.net, &self.store)?;
        match &self.config.gaussian_base {
            Some(base) => plan.with_base(base.clone(), self.config.schedule),
            None => Ok(plan),
        }
    }

    /// `num` draws `[num, dim θ]` from the posterior given the iid observations `obs`
    /// `[n, dim x]` (composed; a set encoder reads them as one set), all inside the prior's
    /// support (in θ's natural space, draws outside
    /// are rejected: see the acceptance rate). `progress` hears of each finished tile of
    /// the main run.
    pub fn sample(
        &self,
        obs: &[f32],
        num: usize,
        options: &SamplingOptions,
        progress: &(dyn Fn(usize) + Sync),
    ) -> Result<PosteriorDraws> {
        let plan = self.plan()?;
        self.sample_with_plan(&plan, obs, num, options, progress)
    }

    /// [`ScoreModel::sample`] with a plan built once by the caller.
    pub fn sample_with_plan(
        &self,
        plan: &ScorePlan,
        obs: &[f32],
        num: usize,
        options: &SamplingOptions,
        progress: &(dyn Fn(usize) + Sync),
    ) -> Result<PosteriorDraws> {
        let op = "sample";
        let c = &self.config;
        let n = check_rows(op, "the observations", obs, c.network.dim_x)?;
        if n == 0 {
            return Err(Error::invalid(op, "the observation set is empty"));
        }
        // A set encoder reads the n draws as one set: nothing to compose.
        let composed = if c.network.x_encoder.is_some() { 1 } else { n };
        if options.levels < 2 {
            return Err(Error::invalid(
                op,
                format!("needs at least 2 noise levels, got {}", options.levels),
            ));
        }
        let mut x = obs.to_vec();
        c.x_standardization.apply(&mut x);
        let (t, gammas) = c.schedule.grid(options.levels);
        let prior = self.sampler_prior()?;
        // GAUSS's weights, from pilot runs of each observation alone on the same device.
        let weights = match options.composition {
            Composition::Gauss { pilot_draws } if composed > 1 => {
                let d = c.network.dim_theta;
                let covs = (0..composed)
                    .map(|j| {
                        let dx = c.network.dim_x;
                        let single = plan.condition(&x[j * dx..(j + 1) * dx], &t)?;
                        let pilot_config = SamplerConfig {
                            seed: options.sampler.seed ^ PILOT_SEED.wrapping_mul(j as u64 + 1),
                            ..options.sampler
                        };
                        let pilot = sample_target(
                            options.device,
                            &Target {
                                plan,
                                cond: &single,
                                gammas: &gammas,
                                prior: &prior,
                                composition: ScoreComposition::Geffner,
                            },
                            pilot_draws,
                            &pilot_config,
                            &|_| {},
                        )?;
                        Ok(covariance(&pilot, d))
                    })
                    .collect::<Result<Vec<_>>>()?;
                Some(match prior {
                    GpuPrior::Flat => GaussWeights::new(d, &gammas, &covs, GaussPrior::Flat)?,
                    _ => {
                        let (mean, cov) = self.standardized_prior_moments()?;
                        let prior = GaussPrior::Gaussian {
                            mean: &mean,
                            cov: &cov,
                        };
                        GaussWeights::new(d, &gammas, &covs, prior)?
                    }
                })
            }
            _ => None,
        };
        let composition = match &weights {
            Some(w) => ScoreComposition::Gauss(w),
            None => ScoreComposition::Geffner,
        };
        let cond = plan.condition(&x, &t)?;
        let target = Target {
            plan,
            cond: &cond,
            gammas: &gammas,
            prior: &prior,
            composition,
        };
        // `num` draws of the sampler seeded by `seed`, in u.
        let run = |num: usize, seed: u64, progress: &(dyn Fn(usize) + Sync)| {
            let config = SamplerConfig {
                seed,
                ..options.sampler
            };
            let mut draws = sample_target(options.device, &target, num, &config, progress)?;
            c.theta_standardization.invert(&mut draws);
            Ok(draws)
        };
        match c.theta_space {
            ThetaSpace::Unconstrained => {
                let mut samples = run(num, options.sampler.seed, progress)?;
                c.prior.from_unconstrained_in_place(&mut samples)?;
                Ok(PosteriorDraws {
                    samples,
                    acceptance_rate: 1.0,
                })
            }
            ThetaSpace::Natural => {
                // The first run is the sampler's own seed (so the draws equal the
                // sampler's where all stay inside); top-ups mix in their round. The
                // runs seed themselves, so the proposal stream (seed 0) goes unused.
                let mut round = 0u64;
                sample_in_support(op, &c.prior, num, 0, |batch, _| {
                    let seed = options.sampler.seed ^ TOP_UP_SEED.wrapping_mul(round);
                    round += 1;
                    run(batch, seed, if round == 1 { progress } else { &|_| {} })
                })
            }
        }
    }

    /// The prior whose score the samplers add, in the network's standardized space.
    fn sampler_prior(&self) -> Result<GpuPrior> {
        let c = &self.config;
        c.theta_space.check("sample", &c.prior)?;
        Ok(match (c.theta_space, &c.prior) {
            (ThetaSpace::Natural, Prior::Uniform(_)) => GpuPrior::Flat,
            _ => GpuPrior::Standardized(StandardizedPrior {
                prior: c.prior.clone(),
                standardization: c.theta_standardization.clone(),
            }),
        })
    }

    /// Mean and covariance of the prior in the network's space (standardized u), from a
    /// fixed-seed Monte Carlo sample.
    fn standardized_prior_moments(&self) -> Result<(Vec<f64>, Vec<f64>)> {
        let c = &self.config;
        let d = c.network.dim_theta;
        let mut rng = PhiloxStream::new(0, streams::SAMPLER, u32::MAX);
        let mut u = match c.theta_space {
            ThetaSpace::Unconstrained => c.prior.sample_unconstrained(&mut rng, PRIOR_MOMENT_DRAWS),
            ThetaSpace::Natural => c.prior.sample(&mut rng, PRIOR_MOMENT_DRAWS),
        };
        c.theta_standardization.apply(&mut u);
        let mean = (0..d)
            .map(|i| {
                u.chunks_exact(d).map(|r| r[i] as f64).sum::<f64>() / PRIOR_MOMENT_DRAWS as f64
            })
            .collect();
        Ok((mean, covariance(&u, d)))
    }
}

/// Hidden width of a set encoder in the x-MLP's place: the set encoders' own default, as
/// set NPE uses it.
const X_ENCODER_WIDTH: usize = 64;

/// Prior draws behind the prior's moments in GAUSS (relative error of a variance
/// ≈ √(2/20000) = 1%).
const PRIOR_MOMENT_DRAWS: usize = 20_000;

/// Mixed into the sampler seed for observation j's pilot run (j + 1 times), so pilots
/// and the main run draw different noise.
const PILOT_SEED: u64 = 0x9E37_79B9_7F4A_7C15;

/// Mixed into the sampler seed for the r-th run that tops up draws rejected outside the
/// prior's support (r times; round 0 is the seed itself).
const TOP_UP_SEED: u64 = 0xD1B5_4A32_D192_ED03;

/// How the n per-observation scores are composed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Composition {
    /// Geffner et al.'s Algorithms 1 and 2 as written (biased for n > 1: see
    /// [`crate::samplers`]).
    Geffner,
    /// GAUSS (Linhart et al. 2024, [`crate::samplers::gauss`]): per-observation
    /// covariances from pilot runs of `pilot_draws` single-observation draws each.
    Gauss {
        /// Draws per observation in the pilot runs.
        pilot_draws: usize,
    },
}

impl std::str::FromStr for Composition {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "geffner" => Ok(Composition::Geffner),
            "gauss" => Ok(Composition::Gauss { pilot_draws: 1000 }),
            other => Err(Error::invalid(
                "composition",
                format!("unknown composition {other:?} (known: gauss, geffner)"),
            )),
        }
    }
}

/// How to draw from a score model's posterior.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplingOptions {
    /// Noise levels of the sampling grid (a coarser grid of the training schedule).
    pub levels: usize,
    /// Algorithm, corrector, seed, tile.
    pub sampler: SamplerConfig,
    /// How n > 1 observations are composed (either composition on any device; GAUSS's
    /// pilot runs go to the same device).
    pub composition: Composition,
    /// Where to sample: the CPU, or a GPU's fused sampler.
    pub device: Device,
}

impl Default for SamplingOptions {
    fn default() -> Self {
        SamplingOptions {
            levels: 100,
            sampler: SamplerConfig::default(),
            composition: Composition::Gauss { pilot_draws: 1000 },
            device: Device::Cpu,
        }
    }
}

/// The `kind` of a score model directory.
pub const SCORE_MODEL_KIND: &str = "score";

crate::io::model::impl_model_file!(ScoreModel, SCORE_MODEL_KIND);

impl ScoreModel {
    /// Writes the model directory `dir` (replacing a model already there).
    pub fn save(&self, dir: &std::path::Path) -> Result<()> {
        crate::io::model::save_model(dir, SCORE_MODEL_KIND, &self.config, &self.store)
    }

    /// Reads a model directory written by [`ScoreModel::save`].
    pub fn load(dir: &std::path::Path) -> Result<ScoreModel> {
        let (config, net, store) = crate::io::model::load_architecture(
            dir,
            SCORE_MODEL_KIND,
            |c: &ScoreModelConfig, store, rng| ScoreNet::new(store, c.network, rng),
        )?;
        if config.prior.dim() != config.network.dim_theta {
            return Err(Error::invalid(
                "ScoreModel::load",
                format!(
                    "{}: the prior has dimension {} but the network's θ has {}",
                    dir.display(),
                    config.prior.dim(),
                    config.network.dim_theta
                ),
            ));
        }
        if let Some(base) = &config.gaussian_base {
            base.validate("ScoreModel::load", &config.network)
                .map_err(|e| {
                    Error::invalid("ScoreModel::load", format!("{}: {e}", dir.display()))
                })?;
        }
        Ok(ScoreModel { config, store, net })
    }
}
