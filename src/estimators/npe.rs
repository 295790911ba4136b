//! Neural posterior estimation (NPE): a conditional flow q(θ | x) trained by maximum
//! likelihood on simulated pairs, L = −mean log q(θ̃ | x̃), with θ and x standardized by
//! training-set statistics. Draws outside a bounded prior's support are rejected and
//! the acceptance rate is reported. One observation per posterior (n = 1).

use serde::{Deserialize, Serialize};

use crate::autograd::{ParamStore, Tape};
use crate::backend::Reduction;
use crate::error::{Error, Result};
use crate::estimators::pairs::{sum_over_observations, StandardizedPairs};
use crate::estimators::score::gather;
use crate::estimators::score_model::{check_rows, move_store};
use crate::estimators::Standardization;
use crate::nn::flow::{ConditionalFlow, FlowConfig};
use crate::priors::Prior;
use crate::rng::{streams, PhiloxStream};
use crate::samplers::mcmc::LikelihoodEstimator;
use crate::tensor::Device;
use crate::train::{fit, EpochReport, TrainConfig, TrainReport};

/// How to train an NPE model.
#[derive(Clone, Debug)]
pub struct NpeOptions {
    /// Coupling layers of the flow.
    pub layers: usize,
    /// Spline (true) or affine (false) couplings.
    pub spline: bool,
    /// Minibatch loop settings.
    pub train: TrainConfig,
    /// Where the training ops run; the trained weights come back to the CPU.
    pub device: Device,
}

impl Default for NpeOptions {
    fn default() -> Self {
        NpeOptions {
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

/// Everything about an NPE model except its weights: the model file's `config.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NpeConfig {
    /// The flow's architecture.
    pub flow: FlowConfig,
    /// The prior (for the support check).
    pub prior: Prior,
    /// Standardization of θ.
    pub theta_standardization: Standardization,
    /// Standardization of x.
    pub x_standardization: Standardization,
    /// The task the model was trained on, if a built-in one.
    pub task: Option<String>,
}

/// The `kind` of an NPE model directory.
pub const NPE_MODEL_KIND: &str = "npe";

/// A trained NPE model.
#[derive(Clone, Debug)]
pub struct NpeModel {
    /// Architecture, maps and prior.
    pub config: NpeConfig,
    /// The flow q(θ̃ | x̃).
    pub flow: ConditionalFlow,
    /// Its parameters.
    pub store: ParamStore,
}

/// Draws and how many proposals it took to get them.
#[derive(Clone, Debug)]
pub struct NpeDraws {
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
        let dim_theta = prior.dim();
        let pairs = StandardizedPairs::new("NpeModel::train", theta, x, dim_theta, dim_x)?;
        let (ts, xs, rows) = (&pairs.theta, &pairs.x, pairs.rows);
        let config = if options.spline {
            FlowConfig::spline(dim_theta, dim_x, options.layers)
        } else {
            FlowConfig::affine(dim_theta, dim_x, options.layers)
        };
        let mut store = ParamStore::new();
        let mut rng = PhiloxStream::new(options.train.seed, streams::INIT, 0);
        let flow = ConditionalFlow::new(&mut store, "flow", config, &mut rng)?;
        flow.initialize(
            &mut store,
            &crate::Tensor::from_vec(ts.clone(), &[rows, dim_theta])?,
        )?;
        let device = options.device;
        let mut store = move_store(&store, device)?;
        let report = fit(
            &mut store,
            rows,
            &options.train,
            |tape: &mut Tape, store: &ParamStore, batch: &[u32]| {
                let t = tape.constant(gather(ts, dim_theta, batch)?.to_device(device)?);
                let c = tape.constant(gather(xs, dim_x, batch)?.to_device(device)?);
                let lp = flow.log_prob(tape, store, t, Some(c))?;
                let mean = tape.reduce_all(lp, Reduction::Mean)?;
                tape.scale(mean, -1.0)
            },
            on_epoch,
        )?;
        let store = move_store(&store, Device::Cpu)?;
        Ok((
            NpeModel {
                config: NpeConfig {
                    flow: config,
                    prior,
                    theta_standardization: pairs.theta_standardization,
                    x_standardization: pairs.x_standardization,
                    task,
                },
                flow,
                store,
            },
            report,
        ))
    }

    /// Writes the model directory `dir` (replacing a model already there).
    pub fn save(&self, dir: &std::path::Path) -> Result<()> {
        crate::io::model::save_model(dir, NPE_MODEL_KIND, &self.config, &self.store)
    }

    /// Reads a model directory written by [`NpeModel::save`].
    pub fn load(dir: &std::path::Path) -> Result<NpeModel> {
        let (config, flow, store) = crate::io::model::load_architecture(
            dir,
            NPE_MODEL_KIND,
            |c: &NpeConfig, store, rng| ConditionalFlow::new(store, "flow", c.flow, rng),
        )?;
        Ok(NpeModel {
            config,
            flow,
            store,
        })
    }

    /// `num` draws from q(θ | x_obs) inside the prior's support, seeded by `seed`.
    pub fn sample(&self, obs: &[f32], num: usize, seed: u64) -> Result<NpeDraws> {
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
        sample_in_support(
            op,
            &self.flow,
            &self.store,
            &context,
            &c.theta_standardization,
            &c.prior,
            num,
            seed,
        )
    }
}

/// `num` draws θ ~ q(θ | c) for one standardized context row `context`, mapped back by
/// `theta_standardization` and kept only inside `prior`'s support (rejection), seeded by
/// `seed` on [`streams::SAMPLER`]. Shared by the posterior estimators built on a
/// [`ConditionalFlow`]; `op` names the caller in errors.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sample_in_support(
    op: &'static str,
    flow: &ConditionalFlow,
    store: &ParamStore,
    context: &[f32],
    theta_standardization: &Standardization,
    prior: &Prior,
    num: usize,
    seed: u64,
) -> Result<NpeDraws> {
    let d = prior.dim();
    let mut rng = PhiloxStream::new(seed, streams::SAMPLER, 0);
    let mut samples = Vec::with_capacity(num * d);
    let (mut proposed, mut in_support) = (0usize, 0usize);
    while samples.len() < num * d {
        if proposed > MAX_PROPOSALS_PER_DRAW * num.max(1) {
            return Err(Error::invalid(
                op,
                format!("acceptance below 1/{MAX_PROPOSALS_PER_DRAW}: the flow puts its mass outside the prior"),
            ));
        }
        let want = num - samples.len() / d;
        let batch = (want + want / 4 + 16).min(100_000);
        let mut draws = flow.sample(store, context, batch, &mut rng)?;
        theta_standardization.invert(&mut draws);
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
    Ok(NpeDraws {
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
        let (dim_theta, dim_x) = (c.flow.dim, c.flow.context_dim);
        let mut t = theta.to_vec();
        c.theta_standardization.apply(&mut t);
        let mut x = obs.to_vec();
        c.x_standardization.apply(&mut x);
        let n = (obs.len() / dim_x) as f64;
        let sums = sum_over_observations(&t, &x, dim_theta, dim_x, |t, x| {
            let mut tape = Tape::no_grad();
            let (t, x) = (tape.constant(t), tape.constant(x));
            let lp = self.flow.log_prob(&mut tape, &self.store, t, Some(x))?;
            tape.value(lp).to_vec()
        })?;
        let log_prior = c.prior.log_density(theta)?;
        Ok(sums
            .iter()
            .zip(&log_prior)
            .map(|(s, p)| s - n * p)
            .collect())
    }
}
