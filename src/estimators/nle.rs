//! Neural likelihood estimation (NLE, Papamakarios et al. 2019): a conditional flow
//! q(x | θ) trained by maximum likelihood on simulated pairs, L = −mean ln q(x̃ | θ̃) (θ
//! and x standardized by training-set statistics), and posterior draws by MCMC on
//! `ln p(θ) + Σ_j ln q(x_j | θ)`, so any number n of iid observations is handled by
//! summing per-observation terms.

use serde::{Deserialize, Serialize};

use crate::autograd::{ParamStore, Tape};
use crate::backend::Reduction;
use crate::error::Result;
use crate::estimators::pairs::{sum_over_observations, StandardizedPairs};
use crate::estimators::score::gather;
use crate::estimators::score_model::move_store;
use crate::estimators::Standardization;
use crate::nn::flow::{ConditionalFlow, FlowConfig};
use crate::priors::Prior;
use crate::rng::{streams, PhiloxStream};
use crate::samplers::mcmc::LikelihoodEstimator;
use crate::tensor::Device;
use crate::train::{fit, EpochReport, TrainConfig, TrainReport};

/// How to train an NLE model.
#[derive(Clone, Debug)]
pub struct NleOptions {
    /// Coupling layers of the flow.
    pub layers: usize,
    /// Spline (true) or affine (false) couplings.
    pub spline: bool,
    /// Minibatch loop settings.
    pub train: TrainConfig,
    /// Where the training ops run; the trained weights come back to the CPU.
    pub device: Device,
}

impl Default for NleOptions {
    fn default() -> Self {
        NleOptions {
            layers: 5,
            spline: true,
            train: TrainConfig {
                epochs: 200,
                batch_size: 256,
                patience: 20,
                warmup_steps: 50,
                ..TrainConfig::default()
            },
            device: Device::Cpu,
        }
    }
}

/// Everything about an NLE model except its weights: the model file's `config.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NleConfig {
    /// The flow's architecture (over x, with θ as context).
    pub flow: FlowConfig,
    /// The prior of the MCMC target.
    pub prior: Prior,
    /// Standardization of θ.
    pub theta_standardization: Standardization,
    /// Standardization of x.
    pub x_standardization: Standardization,
    /// The task the model was trained on, if a built-in one.
    pub task: Option<String>,
}

/// The `kind` of an NLE model directory.
pub const NLE_MODEL_KIND: &str = "nle";

/// A trained NLE model.
#[derive(Clone, Debug)]
pub struct NleModel {
    /// Architecture, maps and prior.
    pub config: NleConfig,
    /// The flow q(x̃ | θ̃).
    pub flow: ConditionalFlow,
    /// Its parameters.
    pub store: ParamStore,
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
        let dim_theta = prior.dim();
        let pairs = StandardizedPairs::new("NleModel::train", theta, x, dim_theta, dim_x)?;
        let config = if options.spline {
            FlowConfig::spline(dim_x, dim_theta, options.layers)
        } else {
            FlowConfig::affine(dim_x, dim_theta, options.layers)
        };
        let mut store = ParamStore::new();
        let mut rng = PhiloxStream::new(options.train.seed, streams::INIT, 0);
        let flow = ConditionalFlow::new(&mut store, "flow", config, &mut rng)?;
        flow.initialize(
            &mut store,
            &crate::Tensor::from_vec(pairs.x.clone(), &[pairs.rows, dim_x])?,
        )?;
        let device = options.device;
        let mut store = move_store(&store, device)?;
        let report = fit(
            &mut store,
            pairs.rows,
            &options.train,
            |tape: &mut Tape, store: &ParamStore, batch: &[u32]| {
                let x = tape.constant(gather(&pairs.x, dim_x, batch)?.to_device(device)?);
                let c = tape.constant(gather(&pairs.theta, dim_theta, batch)?.to_device(device)?);
                let lp = flow.log_prob(tape, store, x, Some(c))?;
                let mean = tape.reduce_all(lp, Reduction::Mean)?;
                tape.scale(mean, -1.0)
            },
            on_epoch,
        )?;
        let store = move_store(&store, Device::Cpu)?;
        let config = NleConfig {
            flow: config,
            prior,
            theta_standardization: pairs.theta_standardization,
            x_standardization: pairs.x_standardization,
            task,
        };
        Ok((
            NleModel {
                config,
                flow,
                store,
            },
            report,
        ))
    }

    /// Writes the model directory `dir` (replacing a model already there).
    pub fn save(&self, dir: &std::path::Path) -> Result<()> {
        crate::io::model::save_model(dir, NLE_MODEL_KIND, &self.config, &self.store)
    }

    /// Reads a model directory written by [`NleModel::save`].
    pub fn load(dir: &std::path::Path) -> Result<NleModel> {
        let (config, flow, store) = crate::io::model::load_architecture(
            dir,
            NLE_MODEL_KIND,
            |c: &NleConfig, store, rng| ConditionalFlow::new(store, "flow", c.flow, rng),
        )?;
        Ok(NleModel {
            config,
            flow,
            store,
        })
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
    fn log_likelihood(&self, theta: &[f32], obs: &[f32]) -> Result<Vec<f64>> {
        let c = &self.config;
        let (dim_theta, dim_x) = (c.prior.dim(), c.flow.dim);
        let mut t = theta.to_vec();
        c.theta_standardization.apply(&mut t);
        let mut x = obs.to_vec();
        c.x_standardization.apply(&mut x);
        let n = (obs.len() / dim_x) as f64;
        let log_scale = n * c
            .x_standardization
            .std
            .iter()
            .map(|&s| (s as f64).ln())
            .sum::<f64>();
        let sums = sum_over_observations(&t, &x, dim_theta, dim_x, |t, x| {
            let mut tape = Tape::no_grad();
            let (t, x) = (tape.constant(t), tape.constant(x));
            let lp = self.flow.log_prob(&mut tape, &self.store, x, Some(t))?;
            tape.value(lp).to_vec()
        })?;
        Ok(sums.into_iter().map(|s| s - log_scale).collect())
    }
}
