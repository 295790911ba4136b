//! Neural ratio estimation (NRE-B, Durkan et al. 2020): a classifier d(θ, x) whose logit
//! estimates ln p(θ | x)/p(θ) = ln ℓ(x | θ)/p(x) up to a constant in θ, and posterior
//! draws by MCMC on `ln p(θ) + Σ_j d(θ, x_j)` for n iid observations.
//!
//! Training is contrastive: for every pair (θ_i, x_i) of a minibatch, the K − 1 θ's of the
//! next rows of the (shuffled) batch serve as draws from the marginal, and the loss is the
//! cross-entropy of picking the true θ among the K: `L = −mean_i ln softmax_k d(θ_{i+k},
//! x_i)|_{k=0}`. Its minimizer is d = ln p(θ | x)/p(θ) + c(x), and c(x) cancels in MCMC.
//!
//! K defaults to 100, not the 10 common elsewhere: the loss teaches the ratio's shape only
//! where some of the K − 1 contrast θ's fall, and they are prior draws. Where the
//! posterior is much narrower than the prior, K = 10 almost never puts one inside it, so
//! nothing tells the classifier a narrow mode from a broad one: on sbibm's
//! gaussian_mixture (a σ = 0.1 component in a 20 × 20 box) its draws had 8% of their mass
//! within 0.2 of the observation where the posterior has 47%, C2ST 0.71; K = 100 gives
//! 0.55 (`benches/RESULTS.md`), at about 5× the training time.
//!
//! The classifier's activation is a choice ([`NreOptions::activation`]): ReLU, the default,
//! resolves sharp features of the log-ratio (gaussian_mixture's σ = 0.1 component: C2ST
//! 0.549 against 0.685 with SiLU); SiLU fits smooth ones better where training pairs are
//! sparse, in the tails of x's marginal, where a ReLU network's piecewise-linear logit
//! extrapolates worst (gaussian_linear, whose obs4 lies there: 0.585 → 0.539 in the mean,
//! obs4 0.653 → 0.566). `benches/RESULTS.md` has the table.

use serde::{Deserialize, Serialize};

use crate::autograd::{ParamStore, Tape, Var};
use crate::backend::{Reduction, UnaryOp};
use crate::error::{Error, Result};
use crate::estimators::pairs::{sum_over_observations, StandardizedPairs};
use crate::estimators::score::gather;
use crate::estimators::score_model::{check_rows, move_store};
use crate::estimators::Standardization;
use crate::nn::mlp::{MlpShape, ResidualMlp};
use crate::priors::Prior;
use crate::rng::{streams, PhiloxStream};
use crate::samplers::mcmc::LikelihoodEstimator;
use crate::tensor::{Device, Tensor};
use crate::train::{fit, EpochReport, TrainConfig, TrainReport};

/// How to train an NRE model.
#[derive(Clone, Debug)]
pub struct NreOptions {
    /// Hidden width of the classifier.
    pub width: usize,
    /// Hidden layers of the classifier (residual after the first).
    pub hidden_layers: usize,
    /// Classes K of the contrastive loss: the true θ and K − 1 from the marginal.
    pub atoms: usize,
    /// Minibatch loop settings.
    pub train: TrainConfig,
    /// Where the training ops run; the trained weights come back to the CPU.
    pub device: Device,
    /// x is this many exchangeable blocks (see [`Standardization::exchangeable_blocks`]);
    /// 1 keeps x's order.
    pub exchangeable_blocks: usize,
    /// The classifier's activation: ReLU by default, SiLU for smooth log-ratios (see the
    /// module docs).
    pub activation: UnaryOp,
}

impl Default for NreOptions {
    fn default() -> Self {
        NreOptions {
            width: 64,
            hidden_layers: 3,
            atoms: 100,
            train: TrainConfig {
                epochs: 200,
                batch_size: 256,
                patience: 20,
                warmup_steps: 50,
                ..TrainConfig::default()
            },
            device: Device::Cpu,
            exchangeable_blocks: 1,
            activation: UnaryOp::Relu,
        }
    }
}

/// Everything about an NRE model except its weights: the model file's `config.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NreConfig {
    /// Dimension of θ.
    pub dim_theta: usize,
    /// Dimension of x.
    pub dim_x: usize,
    /// Hidden width of the classifier.
    pub width: usize,
    /// Hidden layers of the classifier.
    pub hidden_layers: usize,
    /// The prior of the MCMC target.
    pub prior: Prior,
    /// Standardization of θ.
    pub theta_standardization: Standardization,
    /// Standardization of x.
    pub x_standardization: Standardization,
    /// The task the model was trained on, if a built-in one.
    pub task: Option<String>,
    /// The classifier's activation. Model files written before it was recorded were all
    /// trained with ReLU, so that is what a missing entry means.
    #[serde(default = "relu")]
    pub activation: UnaryOp,
}

fn relu() -> UnaryOp {
    UnaryOp::Relu
}

impl NreConfig {
    fn shape(&self) -> MlpShape {
        MlpShape {
            in_features: self.dim_theta + self.dim_x,
            width: self.width,
            out_features: 1,
            hidden_layers: self.hidden_layers,
            activation: self.activation,
        }
    }
}

/// The `kind` of an NRE model directory.
pub const NRE_MODEL_KIND: &str = "nre";

/// A trained NRE model.
#[derive(Clone, Debug)]
pub struct NreModel {
    /// Architecture, maps and prior.
    pub config: NreConfig,
    /// The classifier d(θ̃, x̃) on standardized inputs.
    pub classifier: ResidualMlp,
    /// Its parameters.
    pub store: ParamStore,
}

impl NreModel {
    /// Trains the classifier on rows θ `[rows, dim θ]`, x `[rows, dim x]`.
    pub fn train(
        theta: &[f32],
        x: &[f32],
        dim_x: usize,
        prior: Prior,
        task: Option<String>,
        options: &NreOptions,
        on_epoch: impl FnMut(&EpochReport),
    ) -> Result<(NreModel, TrainReport)> {
        let op = "NreModel::train";
        if options.atoms < 2 {
            return Err(Error::invalid(
                op,
                format!(
                    "the contrastive loss needs at least 2 atoms, got {}",
                    options.atoms
                ),
            ));
        }
        let dim_theta = prior.dim();
        let pairs =
            StandardizedPairs::new(op, theta, x, dim_theta, dim_x, options.exchangeable_blocks)?;
        let config = NreConfig {
            dim_theta,
            dim_x,
            width: options.width,
            hidden_layers: options.hidden_layers,
            prior,
            theta_standardization: pairs.theta_standardization.clone(),
            x_standardization: pairs.x_standardization.clone(),
            task,
            activation: options.activation,
        };
        let mut store = ParamStore::new();
        let mut rng = PhiloxStream::new(options.train.seed, streams::INIT, 0);
        let classifier = ResidualMlp::new(&mut store, "classifier", config.shape(), &mut rng)?;
        let mut store = move_store(&store, options.device)?;
        let report = fit(
            &mut store,
            pairs.rows,
            &options.train,
            |tape: &mut Tape, store: &ParamStore, batch: &[u32]| {
                contrastive_loss(tape, store, &classifier, &pairs, batch, options.atoms)
            },
            on_epoch,
        )?;
        let store = move_store(&store, Device::Cpu)?;
        Ok((
            NreModel {
                config,
                classifier,
                store,
            },
            report,
        ))
    }

    /// Writes the model directory `dir` (replacing a model already there).
    pub fn save(&self, dir: &std::path::Path) -> Result<()> {
        crate::io::model::save_model(dir, NRE_MODEL_KIND, &self.config, &self.store)
    }

    /// Reads a model directory written by [`NreModel::save`].
    pub fn load(dir: &std::path::Path) -> Result<NreModel> {
        let (config, classifier, store) = crate::io::model::load_architecture(
            dir,
            NRE_MODEL_KIND,
            |c: &NreConfig, store, rng| ResidualMlp::new(store, "classifier", c.shape(), rng),
        )?;
        Ok(NreModel {
            config,
            classifier,
            store,
        })
    }

    /// The logit d(θ_i, x_i) of every row pair, θ `[rows, dim θ]` and x `[rows, dim x]`
    /// in original units: the estimated ln p(θ | x)/p(θ) up to a constant in θ.
    pub fn log_ratio(&self, theta: &[f32], x: &[f32]) -> Result<Vec<f32>> {
        let op = "NreModel::log_ratio";
        let c = &self.config;
        let rows = check_rows(op, "theta", theta, c.dim_theta)?;
        if check_rows(op, "x", x, c.dim_x)? != rows {
            return Err(Error::invalid(
                op,
                "theta and x have different numbers of rows",
            ));
        }
        let (mut t, mut x) = (theta.to_vec(), x.to_vec());
        c.theta_standardization.apply(&mut t);
        c.x_standardization.apply(&mut x);
        let mut tape = Tape::no_grad();
        let t = tape.constant(Tensor::from_vec(t, &[rows, c.dim_theta])?);
        let x = tape.constant(Tensor::from_vec(x, &[rows, c.dim_x])?);
        let logit = self.logit(&mut tape, t, x)?;
        tape.value(logit).to_vec()
    }

    fn logit(&self, tape: &mut Tape, theta: Var, x: Var) -> Result<Var> {
        let input = tape.concat(&[theta, x])?;
        self.classifier.forward(tape, &self.store, input)
    }
}

/// The NRE-B loss of the rows `batch` (see the module docs); K is `atoms`, or the batch
/// size if smaller (the last minibatch of an epoch).
fn contrastive_loss(
    tape: &mut Tape,
    store: &ParamStore,
    classifier: &ResidualMlp,
    pairs: &StandardizedPairs,
    batch: &[u32],
    atoms: usize,
) -> Result<Var> {
    let k = atoms.min(batch.len());
    let b = batch.len();
    // Batches go where the parameters live.
    let device = store.get(classifier.output.weight).device();
    if k < 2 {
        // A lone pair has nothing to be contrasted with: it contributes no loss.
        return Ok(tape.constant(Tensor::full_on(device, &[1], 0.0)?));
    }
    let dim_theta = pairs.theta_standardization.mean.len();
    let dim_x = pairs.x_standardization.mean.len();
    // Row i·K + j pairs x_i with θ_{i+j}: j = 0 the true θ, j > 0 draws of the marginal.
    let mut theta_rows = Vec::with_capacity(b * k);
    let mut x_rows = Vec::with_capacity(b * k);
    for i in 0..b {
        for j in 0..k {
            theta_rows.push(batch[(i + j) % b]);
            x_rows.push(batch[i]);
        }
    }
    let t = tape.constant(gather(&pairs.theta, dim_theta, &theta_rows)?.to_device(device)?);
    let x = tape.constant(gather(&pairs.x, dim_x, &x_rows)?.to_device(device)?);
    let input = tape.concat(&[t, x])?;
    let logits = classifier.forward(tape, store, input)?;
    let logits = tape.reshape(logits, &[b, k])?;
    let log_p = tape.log_softmax(logits)?;
    let parts = tape.split(log_p, &[1, k - 1])?;
    let mean = tape.reduce_all(parts[0], Reduction::Mean)?;
    tape.scale(mean, -1.0)
}

impl LikelihoodEstimator for NreModel {
    fn prior(&self) -> &Prior {
        &self.config.prior
    }

    fn dim_x(&self) -> usize {
        self.config.dim_x
    }

    fn log_likelihood(&self, theta: &[f32], obs: &[f32]) -> Result<Vec<f64>> {
        let c = &self.config;
        let mut t = theta.to_vec();
        c.theta_standardization.apply(&mut t);
        let mut x = obs.to_vec();
        c.x_standardization.apply(&mut x);
        sum_over_observations(&t, &x, c.dim_theta, c.dim_x, |t, x| {
            let mut tape = Tape::no_grad();
            let (t, x) = (tape.constant(t), tape.constant(x));
            let logit = self.logit(&mut tape, t, x)?;
            tape.value(logit).to_vec()
        })
    }
}

crate::io::model::impl_model_file!(NreModel, NRE_MODEL_KIND);
