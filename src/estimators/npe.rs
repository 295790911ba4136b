//! Neural posterior estimation (NPE): a conditional flow q(θ | x) trained by maximum
//! likelihood on simulated pairs (the shared flow estimator of
//! [`crate::estimators::flow_model`]). Given one observation it draws from the flow;
//! draws outside a bounded prior's support are rejected and the acceptance rate is
//! reported. Given n > 1 it is a [`LikelihoodEstimator`] of the factorized posterior,
//! sampled by MCMC.

use std::ops::Deref;

use crate::autograd::ParamStore;
use crate::error::{Error, Result};
use crate::estimators::flow_model::{FlowModel, FlowModelConfig, FlowOptions, Modeled};
use crate::estimators::score_model::check_rows;
use crate::estimators::Standardization;
use crate::nn::flow::ConditionalFlow;
use crate::priors::Prior;
use crate::rng::{streams, PhiloxStream};
use crate::samplers::mcmc::LikelihoodEstimator;
use crate::train::{EpochReport, TrainReport};

/// How to train an NPE model.
pub type NpeOptions = FlowOptions;

/// An NPE model's `config.json`: the flow is over θ (`flow.dim` = dim θ) with x as context.
pub type NpeConfig = FlowModelConfig;

/// The `kind` of an NPE model directory.
pub const NPE_MODEL_KIND: &str = "npe";

/// A trained NPE model: a [`FlowModel`] of θ given x.
#[derive(Clone, Debug)]
pub struct NpeModel(pub FlowModel);

impl Deref for NpeModel {
    type Target = FlowModel;
    fn deref(&self) -> &FlowModel {
        &self.0
    }
}

/// Posterior draws inside the prior's support, and how many proposals it took to get
/// them (NPE, set NPE, and the score estimator in θ's natural space reject the rest).
#[derive(Clone, Debug)]
pub struct PosteriorDraws {
    /// `[num, dim θ]`, all inside the prior's support.
    pub samples: Vec<f32>,
    /// Accepted / proposed.
    pub acceptance_rate: f64,
}

/// Proposals per accepted draw after which sampling gives up (acceptance below 0.1%).
const MAX_PROPOSALS_PER_DRAW: usize = 1000;

impl NpeModel {
    /// Trains q(θ | x) on rows θ `[rows, dim θ]`, x `[rows, dim x]`.
    pub fn train(
        theta: &[f32],
        x: &[f32],
        dim_x: usize,
        prior: Prior,
        task: Option<String>,
        options: &NpeOptions,
        on_epoch: impl FnMut(&EpochReport),
    ) -> Result<(NpeModel, TrainReport)> {
        let (model, report) = FlowModel::train(
            "NpeModel::train",
            Modeled::Theta,
            theta,
            x,
            dim_x,
            prior,
            task,
            options,
            on_epoch,
        )?;
        Ok((NpeModel(model), report))
    }

    /// Writes the model directory `dir` (replacing a model already there).
    pub fn save(&self, dir: &std::path::Path) -> Result<()> {
        self.0.save(dir, NPE_MODEL_KIND)
    }

    /// Reads a model directory written by [`NpeModel::save`].
    pub fn load(dir: &std::path::Path) -> Result<NpeModel> {
        Ok(NpeModel(FlowModel::load(dir, NPE_MODEL_KIND)?))
    }

    /// `num` draws from q(θ | x_obs) inside the prior's support, seeded by `seed`.
    pub fn sample(&self, obs: &[f32], num: usize, seed: u64) -> Result<PosteriorDraws> {
        sample_posterior_flow(self, obs, num, seed)
    }
}

impl PosteriorFlow for NpeModel {
    fn prior(&self) -> &Prior {
        &self.config.prior
    }

    /// The standardized observation; anything but one row `[1, dim x]` is an error.
    fn context(&self, obs: &[f32]) -> Result<Vec<f32>> {
        let op = "NpeModel::sample";
        let c = &self.config;
        let dim_x = c.x_standardization.mean.len();
        if check_rows(op, "the observation", obs, dim_x)? != 1 {
            return Err(Error::invalid(
                op,
                "NPE draws directly given exactly one observation [1, dim x]; for n > 1 sample its factorized posterior with samplers::mcmc::sample_estimator",
            ));
        }
        let mut context = obs.to_vec();
        c.x_standardization.apply(&mut context);
        Ok(context)
    }

    fn flow(&self) -> (&ConditionalFlow, &ParamStore, &Standardization) {
        (&self.flow, &self.store, &self.config.theta_standardization)
    }
}

/// A posterior flow q(θ | ·) that draws directly: NPE given one observation, set NPE
/// given a set of draws. Its draws, and an [`crate::estimators::ensemble::Ensemble`]'s
/// mixture of them, are kept inside the prior's support by rejection.
pub trait PosteriorFlow {
    /// The prior whose support the draws are kept in.
    fn prior(&self) -> &Prior;

    /// The flow's context for the observation `obs` (rows of `[_, dim x]`, as many as
    /// the estimator takes), checked and computed once per sampling call.
    fn context(&self, obs: &[f32]) -> Result<Vec<f32>>;

    /// The flow over standardized θ, its parameters and θ's standardization.
    fn flow(&self) -> (&ConditionalFlow, &ParamStore, &Standardization);

    /// `batch` unrestricted draws θ ~ q(θ | context) in θ's original units (some may lie
    /// outside the prior's support).
    fn propose(&self, context: &[f32], batch: usize, rng: &mut PhiloxStream) -> Result<Vec<f32>> {
        let (flow, store, theta_standardization) = self.flow();
        let mut draws = flow.sample(store, context, batch, rng)?;
        theta_standardization.invert(&mut draws);
        Ok(draws)
    }
}

/// `num` draws from `flow` given `obs`, inside the prior's support, seeded by `seed`.
pub fn sample_posterior_flow(
    flow: &impl PosteriorFlow,
    obs: &[f32],
    num: usize,
    seed: u64,
) -> Result<PosteriorDraws> {
    let context = flow.context(obs)?;
    sample_in_support(
        "sample_posterior_flow",
        flow.prior(),
        num,
        seed,
        |batch, rng| flow.propose(&context, batch, rng),
    )
}

/// `num` draws inside `prior`'s support by rejection: `propose(batch, rng)` returns
/// `batch` draws `[batch, dim θ]` in θ's original units, from a proposal whose draws are
/// exchangeable (so keeping the first accepted ones is unbiased), and the ones outside
/// the support are dropped. The first batch is `num` (most proposals stay inside), later
/// ones what is missing over the acceptance so far, with a margin. Seeded by `seed` on
/// [`streams::SAMPLER`]. Shared by the posterior estimators that can leave the support;
/// `op` names the caller in errors.
pub(crate) fn sample_in_support(
    op: &'static str,
    prior: &Prior,
    num: usize,
    seed: u64,
    mut propose: impl FnMut(usize, &mut PhiloxStream) -> Result<Vec<f32>>,
) -> Result<PosteriorDraws> {
    let d = prior.dim();
    let mut rng = PhiloxStream::new(seed, streams::SAMPLER, 0);
    let mut samples = Vec::with_capacity(num * d);
    let (mut proposed, mut in_support) = (0usize, 0usize);
    while samples.len() < num * d {
        if proposed > MAX_PROPOSALS_PER_DRAW * num.max(1) {
            return Err(Error::invalid(
                op,
                format!("acceptance below 1/{MAX_PROPOSALS_PER_DRAW}: the model puts its mass outside the prior"),
            ));
        }
        let want = num - samples.len() / d;
        let batch = if proposed == 0 {
            want
        } else {
            let acceptance = (in_support as f64 / proposed as f64).max(1e-3);
            (want as f64 / acceptance * 1.2) as usize + 16
        }
        .min(100_000);
        let draws = propose(batch, &mut rng)?;
        let log_p = prior.log_density(&draws)?;
        for (row, lp) in draws.chunks_exact(d).zip(&log_p) {
            if lp.is_finite() {
                in_support += 1;
                if samples.len() < num * d {
                    samples.extend_from_slice(row);
                }
            }
        }
        proposed += batch;
    }
    Ok(PosteriorDraws {
        samples,
        acceptance_rate: in_support as f64 / proposed.max(1) as f64,
    })
}

/// n > 1 observations: NPE learned q(θ | x) for one observation, and for iid
/// observations `p(θ | x_1..n) ∝ p(θ)^{1−n} Π_j p(θ | x_j)`. As an MCMC target this is
/// the prior times the "likelihood" `Σ_j [ln q(θ | x_j) − ln p(θ)]`, which
/// [`crate::samplers::mcmc::sample_estimator`] samples like NLE's.
impl LikelihoodEstimator for NpeModel {
    fn prior(&self) -> &Prior {
        &self.config.prior
    }

    fn dim_x(&self) -> usize {
        self.config.flow.context_dim
    }

    fn log_likelihood(&self, theta: &[f32], obs: &[f32]) -> Result<Vec<f64>> {
        let c = &self.config;
        let n = (obs.len() / c.flow.context_dim) as f64;
        let sums = self.summed_log_prob(Modeled::Theta, theta, obs)?;
        let log_prior = c.prior.log_density(theta)?;
        Ok(sums
            .iter()
            .zip(&log_prior)
            .map(|(s, p)| s - n * p)
            .collect())
    }
}

crate::io::model::impl_model_file!(NpeModel, NPE_MODEL_KIND);
