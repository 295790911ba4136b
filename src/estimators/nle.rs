//! Neural likelihood estimation (NLE, Papamakarios et al. 2019): a conditional flow
//! q(x | θ) trained by maximum likelihood on simulated pairs (the shared flow estimator
//! of [`crate::estimators::flow_model`]), and posterior draws by MCMC on
//! `ln p(θ) + Σ_j ln q(x_j | θ)`, so any number n of iid observations is handled by
//! summing per-observation terms.

use std::ops::Deref;

use crate::error::Result;
use crate::estimators::flow_model::{FlowModel, FlowModelConfig, FlowOptions, Modeled};
use crate::priors::Prior;
use crate::samplers::mcmc::LikelihoodEstimator;
use crate::train::{EpochReport, TrainReport};

/// How to train an NLE model.
pub type NleOptions = FlowOptions;

/// An NLE model's `config.json`: the flow is over x (`flow.dim` = dim x) with θ as context.
pub type NleConfig = FlowModelConfig;

/// The `kind` of an NLE model directory.
pub const NLE_MODEL_KIND: &str = "nle";

/// A trained NLE model: a [`FlowModel`] of x given θ.
#[derive(Clone, Debug)]
pub struct NleModel(pub FlowModel);

impl Deref for NleModel {
    type Target = FlowModel;
    fn deref(&self) -> &FlowModel {
        &self.0
    }
}

impl NleModel {
    /// Trains q(x | θ) on rows θ `[rows, dim θ]`, x `[rows, dim x]`.
    pub fn train(
        theta: &[f32],
        x: &[f32],
        dim_x: usize,
        prior: Prior,
        task: Option<String>,
        options: &NleOptions,
        on_epoch: impl FnMut(&EpochReport),
    ) -> Result<(NleModel, TrainReport)> {
        let (model, report) = FlowModel::train(
            "NleModel::train",
            Modeled::X,
            theta,
            x,
            dim_x,
            prior,
            task,
            options,
            on_epoch,
        )?;
        Ok((NleModel(model), report))
    }

    /// Writes the model directory `dir` (replacing a model already there).
    pub fn save(&self, dir: &std::path::Path) -> Result<()> {
        self.0.save(dir, NLE_MODEL_KIND)
    }

    /// Reads a model directory written by [`NleModel::save`].
    pub fn load(dir: &std::path::Path) -> Result<NleModel> {
        Ok(NleModel(FlowModel::load(dir, NLE_MODEL_KIND)?))
    }
}

impl LikelihoodEstimator for NleModel {
    fn prior(&self) -> &Prior {
        &self.config.prior
    }

    fn dim_x(&self) -> usize {
        self.config.flow.dim
    }

    /// `Σ_j ln q(x_j | θ)` in x's original units: the flow's density of the standardized
    /// x minus `Σ ln std_x` per observation (a constant, kept so the value is a density).
    /// With B exchangeable blocks the flow models x in canonical order, whose density is
    /// B! times x's, so `ln B!` comes off too.
    fn log_likelihood(&self, theta: &[f32], obs: &[f32]) -> Result<Vec<f64>> {
        let c = &self.config;
        let n = (obs.len() / c.flow.dim) as f64;
        let orderings: f64 = (2..=c.x_standardization.exchangeable_blocks)
            .map(|k| (k as f64).ln())
            .sum();
        let log_scale: f64 = orderings
            + c.x_standardization
                .std
                .iter()
                .map(|&s| (s as f64).ln())
                .sum::<f64>();
        let sums = self.summed_log_prob(Modeled::X, theta, obs)?;
        Ok(sums.into_iter().map(|s| s - n * log_scale).collect())
    }
}

crate::io::model::impl_model_file!(NleModel, NLE_MODEL_KIND);
