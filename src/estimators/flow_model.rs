//! What NPE and NLE share: a conditional flow over one side of the simulated pairs given
//! the other — q(θ | x) for NPE, q(x | θ) for NLE — trained by maximum likelihood,
//! L = −mean ln q(ṽ | c̃), on pairs standardized by their training statistics, with
//! its model directory and the sum of its log-density over n iid observations.

use serde::{Deserialize, Serialize};

use crate::autograd::{ParamStore, Tape};
use crate::backend::Reduction;
use crate::error::Result;
use crate::estimators::pairs::{sum_over_observations, StandardizedPairs};
use crate::estimators::score::gather;
use crate::estimators::score_model::move_store;
use crate::estimators::Standardization;
use crate::nn::coupling::Conditioner;
use crate::nn::flow::{ConditionalFlow, FlowConfig};
use crate::priors::Prior;
use crate::rng::{streams, PhiloxStream};
use crate::tensor::{Device, Tensor};
use crate::train::{fit, EpochReport, TrainConfig, TrainReport};

/// Which side of a pair the flow is a density of; the other side is its context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Modeled {
    /// q(θ | x): a posterior (NPE).
    Theta,
    /// q(x | θ): a likelihood (NLE).
    X,
}

/// How to train a flow estimator (NPE or NLE).
#[derive(Clone, Debug)]
pub struct FlowOptions {
    /// Coupling layers of the flow.
    pub layers: usize,
    /// Spline (true) or affine (false) couplings.
    pub spline: bool,
    /// Hidden width of every coupling layer's conditioner network.
    pub width: usize,
    /// Minibatch loop settings.
    pub train: TrainConfig,
    /// Where the training ops run; the trained weights come back to the CPU.
    pub device: Device,
    /// x is this many exchangeable blocks (see [`Standardization::exchangeable_blocks`]);
    /// 1 keeps x's order.
    pub exchangeable_blocks: usize,
}

impl Default for FlowOptions {
    fn default() -> Self {
        FlowOptions {
            layers: 5,
            spline: true,
            width: Conditioner::default().width,
            train: TrainConfig {
                epochs: 200,
                batch_size: 256,
                patience: 20,
                warmup_steps: 50,
                ..TrainConfig::default()
            },
            device: Device::Cpu,
            exchangeable_blocks: 1,
        }
    }
}

/// Everything about a flow estimator except its weights: the model file's `config.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowModelConfig {
    /// The flow's architecture (its `dim` is the modeled side, `context_dim` the other).
    pub flow: FlowConfig,
    /// The prior (NPE: the support check; NLE: the MCMC target's prior).
    pub prior: Prior,
    /// Standardization of θ.
    pub theta_standardization: Standardization,
    /// Standardization of x.
    pub x_standardization: Standardization,
    /// The task the model was trained on, if a built-in one.
    pub task: Option<String>,
}

/// A trained flow estimator.
#[derive(Clone, Debug)]
pub struct FlowModel {
    /// Architecture, maps and prior.
    pub config: FlowModelConfig,
    /// The flow on standardized values.
    pub flow: ConditionalFlow,
    /// Its parameters.
    pub store: ParamStore,
}

impl FlowModel {
    /// Trains the flow of `modeled` given the other side on rows θ `[rows, dim θ]`,
    /// x `[rows, dim x]`; `op` names the caller in errors.
    #[allow(clippy::too_many_arguments)]
    pub fn train(
        op: &'static str,
        modeled: Modeled,
        theta: &[f32],
        x: &[f32],
        dim_x: usize,
        prior: Prior,
        task: Option<String>,
        options: &FlowOptions,
        on_epoch: impl FnMut(&EpochReport),
    ) -> Result<(FlowModel, TrainReport)> {
        let dim_theta = prior.dim();
        let pairs =
            StandardizedPairs::new(op, theta, x, dim_theta, dim_x, options.exchangeable_blocks)?;
        let ((values, dim), (context, context_dim)) = match modeled {
            Modeled::Theta => ((&pairs.theta, dim_theta), (&pairs.x, dim_x)),
            Modeled::X => ((&pairs.x, dim_x), (&pairs.theta, dim_theta)),
        };
        let mut config = if options.spline {
            FlowConfig::spline(dim, context_dim, options.layers)
        } else {
            FlowConfig::affine(dim, context_dim, options.layers)
        };
        config.conditioner.width = options.width;
        let mut store = ParamStore::new();
        let mut rng = PhiloxStream::new(options.train.seed, streams::INIT, 0);
        let flow = ConditionalFlow::new(&mut store, "flow", config, &mut rng)?;
        flow.initialize(
            &mut store,
            &Tensor::from_vec(values.clone(), &[pairs.rows, dim])?,
        )?;
        let device = options.device;
        let mut store = move_store(&store, device)?;
        let report = fit(
            &mut store,
            pairs.rows,
            &options.train,
            |tape: &mut Tape, store: &ParamStore, batch: &[u32]| {
                let v = tape.constant(gather(values, dim, batch)?.to_device(device)?);
                let c = tape.constant(gather(context, context_dim, batch)?.to_device(device)?);
                let lp = flow.log_prob(tape, store, v, Some(c))?;
                let mean = tape.reduce_all(lp, Reduction::Mean)?;
                tape.scale(mean, -1.0)
            },
            on_epoch,
        )?;
        let store = move_store(&store, Device::Cpu)?;
        let config = FlowModelConfig {
            flow: config,
            prior,
            theta_standardization: pairs.theta_standardization,
            x_standardization: pairs.x_standardization,
            task,
        };
        Ok((
            FlowModel {
                config,
                flow,
                store,
            },
            report,
        ))
    }

    /// Writes the model directory `dir` as a model of `kind` (replacing one there).
    pub fn save(&self, dir: &std::path::Path, kind: &str) -> Result<()> {
        crate::io::model::save_model(dir, kind, &self.config, &self.store)
    }

    /// Reads a model directory of `kind` written by [`FlowModel::save`].
    pub fn load(dir: &std::path::Path, kind: &str) -> Result<FlowModel> {
        let (config, flow, store) =
            crate::io::model::load_architecture(dir, kind, |c: &FlowModelConfig, store, rng| {
                ConditionalFlow::new(store, "flow", c.flow, rng)
            })?;
        Ok(FlowModel {
            config,
            flow,
            store,
        })
    }

    /// `Σ_j ln q(ṽ | c̃)` over the observations `obs` `[n, dim x]` for every row of
    /// `theta` `[m, dim θ]` (both in original units, standardized here), where each pair
    /// (θ, x_j) is evaluated as the modeled side given the other, in standardized units.
    pub fn summed_log_prob(
        &self,
        modeled: Modeled,
        theta: &[f32],
        obs: &[f32],
    ) -> Result<Vec<f64>> {
        let c = &self.config;
        let (dim_theta, dim_x) = (c.prior.dim(), c.x_standardization.mean.len());
        let mut t = theta.to_vec();
        c.theta_standardization.apply(&mut t);
        let mut x = obs.to_vec();
        c.x_standardization.apply(&mut x);
        sum_over_observations(&t, &x, dim_theta, dim_x, |t, x| {
            let mut tape = Tape::no_grad();
            let (t, x) = (tape.constant(t), tape.constant(x));
            let (v, context) = match modeled {
                Modeled::Theta => (t, x),
                Modeled::X => (x, t),
            };
            let lp = self
                .flow
                .log_prob(&mut tape, &self.store, v, Some(context))?;
            tape.value(lp).to_vec()
        })
    }
}
