//! Set-based neural posterior estimation: q(θ | {x}) for a dataset that is a set of iid
//! events of any size, as in the hierarchical SBI paper
//! (`hierarchical-sbi-event-ensembles.txt`, section 2.2 and figure 1).
//!
//! A set encoder (a [`DeepSet`](crate::nn::DeepSet), or a
//! [`SetTransformer`](crate::nn::SetTransformer)) summarizes the set's
//! standardized elements; the summary, with the standardized log-cardinality ln N
//! appended, is the context of a [`ConditionalFlow`] over standardized θ. Encoder and flow
//! are trained jointly by maximum likelihood, L = −mean log q(θ̃ | {x̃}), on pairs of
//! parameters and sets of varying size. ln N is appended because mean pooling forgets N
//! while the posterior's width depends on it (the paper's lensing model does the same,
//! appendix A.4); with sum pooling it is redundant but harmless.
//!
//! A task whose x is a few iid draws (slcp's four points) is a set task too:
//! [`draw_subsets`] turns each simulation into every non-empty subset of its draws, and
//! `amortize train --estimator set_npe --iid-draws K` trains on those.
//!
//! A minibatch of sets is padded to its largest set and the encoders read the mask
//! (see [`crate::nn::sets`]), so the padding never changes the posterior. Inputs are
//! checked: an empty set (all-zero mask), elements with the wrong number of features and
//! non-finite elements are errors. Draws outside a bounded prior's support are rejected
//! as in [`crate::estimators::npe`].

use serde::{Deserialize, Serialize};

use crate::autograd::{ParamStore, Tape, Var};
use crate::backend::Reduction;
use crate::error::{Error, Result};
use crate::estimators::npe::{sample_posterior_flow, PosteriorDraws, PosteriorFlow};
use crate::estimators::score::gather;
use crate::estimators::score_model::{check_rows, move_store};
use crate::estimators::Standardization;
use crate::nn::flow::{ConditionalFlow, FlowConfig};
use crate::nn::sets::{check_set_batch, RaggedSets};
use crate::nn::{DeepSetConfig, TransformerConfig};
pub use crate::nn::{SetEncoder, SetEncoderConfig, SetEncoderKind};
use crate::priors::Prior;
use crate::rng::{streams, PhiloxStream};
use crate::tensor::{Device, Tensor};
use crate::train::{fit, EpochReport, TrainConfig, TrainReport};

/// Features of the encoder's summary in the default options.
const SUMMARY_FEATURES: usize = 16;

/// Sets per padded group in a training minibatch (see `TrainingSets::loss`).
const PADDING_GROUP: usize = 32;

/// How to train a [`SetNpeModel`].
#[derive(Clone, Debug)]
pub struct SetNpeOptions {
    /// The set encoder; its `in_features` must match the sets'.
    pub encoder: SetEncoderConfig,
    /// Coupling layers of the flow.
    pub layers: usize,
    /// Spline (true) or affine (false) couplings.
    pub spline: bool,
    /// Minibatch loop settings (a row is one set).
    pub train: TrainConfig,
    /// Where the training ops run; the trained weights come back to the CPU.
    pub device: Device,
}

impl SetNpeOptions {
    /// A set encoder of `kind` (16 summary features, hidden width `width`) and 4 spline
    /// layers, for elements of `features` values.
    pub fn new(kind: SetEncoderKind, features: usize, width: usize) -> Self {
        Self::with_encoder(kind.config(features, SUMMARY_FEATURES, width))
    }

    /// A deep set (mean pooling, 16 summary features) and 4 spline layers, for elements
    /// of `features` values.
    pub fn deep_set(features: usize) -> Self {
        Self::with_encoder(SetEncoderConfig::DeepSet(DeepSetConfig::new(
            features,
            SUMMARY_FEATURES,
        )))
    }

    /// A set transformer (16 summary features) and 4 spline layers, for elements of
    /// `features` values.
    pub fn set_transformer(features: usize) -> Self {
        Self::with_encoder(SetEncoderConfig::SetTransformer(TransformerConfig::new(
            features,
            SUMMARY_FEATURES,
        )))
    }

    fn with_encoder(encoder: SetEncoderConfig) -> Self {
        SetNpeOptions {
            encoder,
            layers: 4,
            spline: true,
            train: TrainConfig {
                epochs: 100,
                batch_size: 128,
                patience: 20,
                warmup_steps: 50,
                ..TrainConfig::default()
            },
            device: Device::Cpu,
        }
    }
}

/// Most draws per simulation that [`draw_subsets`] takes: it makes 2^K − 1 sets of K draws.
pub const MAX_SUBSET_DRAWS: usize = 6;

/// How many sets [`draw_subsets`] makes of one simulation of `draws` draws: 2^K − 1.
pub fn subsets_per_simulation(draws: usize) -> usize {
    (1usize << draws.min(usize::BITS as usize - 1)) - 1
}

/// Training sets from simulations whose x `[rows, draws·feat]` is `draws` iid draws of
/// `feat` values each: every non-empty subset of each simulation's draws (2^K − 1 of
/// them, in the order of their bit masks, elements in draw order), with θ repeated for
/// each. Returns θ `[rows·(2^K − 1), dim θ]` and the sets, a simulation's sets next to
/// each other (so [`TrainConfig::rows_per_group`] = [`subsets_per_simulation`] keeps
/// them on one side of the validation split).
///
/// Why subsets: a set encoder trained on the full sets alone sees `rows` sets and
/// overfits them (slcp, 10⁴ simulations of 4 points: training loss 1.17 against
/// validation 1.78, C2ST 0.80 in the mean); every subset is another set from the same
/// posterior family with what each draw says in it (0.74), and more than prefixes of one
/// shuffled order of the draws give (0.78; `benches/RESULTS.md`).
pub fn draw_subsets(
    theta: &[f32],
    x: &[f32],
    dim_theta: usize,
    draws: usize,
) -> Result<(Vec<f32>, RaggedSets)> {
    let op = "draw_subsets";
    let rows = check_rows(op, "theta", theta, dim_theta)?;
    if !(1..=MAX_SUBSET_DRAWS).contains(&draws) {
        return Err(Error::invalid(
            op,
            format!(
                "{draws} draws per simulation: every subset is a set, so 1 to {MAX_SUBSET_DRAWS} draws"
            ),
        ));
    }
    if rows == 0 || x.len() % (rows * draws) != 0 {
        return Err(Error::invalid(
            op,
            format!(
                "x has {} values: {rows} simulations of {draws} draws need a multiple of {}",
                x.len(),
                rows * draws
            ),
        ));
    }
    let features = x.len() / (rows * draws);
    let per_simulation = subsets_per_simulation(draws);
    let mut sets = RaggedSets::new(features)?;
    let mut repeated = Vec::with_capacity(theta.len() * per_simulation);
    let mut set = Vec::with_capacity(draws * features);
    for (t, simulation) in theta
        .chunks_exact(dim_theta)
        .zip(x.chunks_exact(draws * features))
    {
        for mask in 1..=per_simulation {
            set.clear();
            for (d, draw) in simulation.chunks_exact(features).enumerate() {
                if mask & (1 << d) != 0 {
                    set.extend_from_slice(draw);
                }
            }
            sets.push(&set)?;
            repeated.extend_from_slice(t);
        }
    }
    Ok((repeated, sets))
}

/// Everything about a set NPE model except its weights: the model file's `config.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SetNpeConfig {
    /// The set encoder's architecture.
    pub encoder: SetEncoderConfig,
    /// The flow's architecture (its context is the summary plus ln N).
    pub flow: FlowConfig,
    /// The prior (for the support check).
    pub prior: Prior,
    /// Standardization of θ.
    pub theta_standardization: Standardization,
    /// Standardization of the set elements, feature by feature.
    pub x_standardization: Standardization,
    /// Standardization of ln N over the training sets.
    pub cardinality_standardization: Standardization,
    /// The task the model was trained on, if a built-in one.
    pub task: Option<String>,
    /// The largest training set's cardinality: a larger set asks the model to
    /// extrapolate in N. `None` in model files written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cardinality: Option<usize>,
}

/// The `kind` of a set NPE model directory.
pub const SET_NPE_MODEL_KIND: &str = "set_npe";

/// A trained set NPE model.
#[derive(Clone, Debug)]
pub struct SetNpeModel {
    /// Architecture, maps and prior.
    pub config: SetNpeConfig,
    /// The set encoder.
    pub encoder: SetEncoder,
    /// The flow q(θ̃ | summary, ln N).
    pub flow: ConditionalFlow,
    /// The parameters of both.
    pub store: ParamStore,
}

/// The flow's context `[batch, summary + 1]` for standardized sets x `[batch, set, feat]`
/// with mask `[batch, set]`: the encoder's summary and the standardized ln N.
fn set_context(
    tape: &mut Tape,
    store: &ParamStore,
    encoder: &SetEncoder,
    cardinality_standardization: &Standardization,
    x: Tensor,
    mask: &Tensor,
) -> Result<Var> {
    // The batch goes where the parameters are (the CPU, or a GPU backend).
    let device = store
        .iter()
        .next()
        .map_or(Device::Cpu, |(_, _, t)| t.device());
    let mask = mask.to_device(device)?;
    let x = tape.constant(x.to_device(device)?);
    encoder.summary_and_log_n(tape, store, x, &mask, |log_n| {
        cardinality_standardization.apply(log_n)
    })
}

/// Standardized training data, as the loss reads it.
struct TrainingSets<'a> {
    theta: &'a [f32],
    dim_theta: usize,
    sets: &'a RaggedSets,
    cardinality_standardization: &'a Standardization,
}

impl TrainingSets<'_> {
    /// −mean log q(θ̃ | {x̃}) over the sets `batch`. The batch is sorted by cardinality
    /// and encoded in groups of [`PADDING_GROUP`] sets, each padded only to its own
    /// largest set: with sizes spread evenly over 1..N_max a whole batch padded to N_max
    /// would run the encoder on about twice the real elements. The loss is the same,
    /// since it is a mean over sets.
    fn loss(
        &self,
        tape: &mut Tape,
        store: &ParamStore,
        encoder: &SetEncoder,
        flow: &ConditionalFlow,
        batch: &[u32],
    ) -> Result<Var> {
        let total = self
            .sets
            .sum_over_size_groups(tape, batch, PADDING_GROUP, |tape, group| {
                let (x, mask) = self.sets.padded(group)?;
                let context = set_context(
                    tape,
                    store,
                    encoder,
                    self.cardinality_standardization,
                    x,
                    &mask,
                )?;
                let t = gather(self.theta, self.dim_theta, group)?;
                let t = tape.constant(t.to_device(tape.value(context).device())?);
                let lp = flow.log_prob(tape, store, t, Some(context))?;
                tape.reduce_all(lp, Reduction::Sum)
            })?;
        tape.scale(total, -1.0 / batch.len() as f32)
    }
}

impl SetNpeModel {
    /// Trains q(θ | {x}) on parameters θ `[sets, dim θ]` and one set per row of θ.
    pub fn train(
        theta: &[f32],
        sets: &RaggedSets,
        prior: Prior,
        task: Option<String>,
        options: &SetNpeOptions,
        on_epoch: impl FnMut(&EpochReport),
    ) -> Result<(SetNpeModel, TrainReport)> {
        let op = "SetNpeModel::train";
        let dim_theta = prior.dim();
        let rows = check_rows(op, "theta", theta, dim_theta)?;
        if rows != sets.len() {
            return Err(Error::invalid(
                op,
                format!("{rows} rows of theta but {} sets", sets.len()),
            ));
        }
        let features = sets.features();
        if options.encoder.in_features() != features {
            return Err(Error::invalid(
                op,
                format!(
                    "the encoder reads {} features per element but the sets have {features}",
                    options.encoder.in_features()
                ),
            ));
        }
        let mut ts = theta.to_vec();
        let theta_standardization = Standardization::fit(&ts, dim_theta);
        theta_standardization.apply(&mut ts);
        let mut xs = sets.clone();
        let x_standardization = Standardization::fit(xs.elements(), features);
        x_standardization.apply(xs.elements_mut());
        let log_n: Vec<f32> = (0..rows)
            .map(|i| (sets.cardinality(i) as f32).ln())
            .collect();
        let cardinality_standardization = Standardization::fit(&log_n, 1);

        let context_dim = options.encoder.out_features() + 1;
        let flow_config = if options.spline {
            FlowConfig::spline(dim_theta, context_dim, options.layers)
        } else {
            FlowConfig::affine(dim_theta, context_dim, options.layers)
        };
        let mut store = ParamStore::new();
        let mut rng = PhiloxStream::new(options.train.seed, streams::INIT, 0);
        let encoder = SetEncoder::new(&mut store, "encoder", options.encoder, &mut rng)?;
        let flow = ConditionalFlow::new(&mut store, "flow", flow_config, &mut rng)?;
        flow.initialize(
            &mut store,
            &Tensor::from_vec(ts.clone(), &[rows, dim_theta])?,
        )?;
        let mut store = move_store(&store, options.device)?;
        let report = fit(
            &mut store,
            rows,
            &options.train,
            |tape: &mut Tape, store: &ParamStore, batch: &[u32]| {
                let data = TrainingSets {
                    theta: &ts,
                    dim_theta,
                    sets: &xs,
                    cardinality_standardization: &cardinality_standardization,
                };
                data.loss(tape, store, &encoder, &flow, batch)
            },
            on_epoch,
        )?;
        let store = move_store(&store, Device::Cpu)?;
        Ok((
            SetNpeModel {
                config: SetNpeConfig {
                    encoder: options.encoder,
                    flow: flow_config,
                    prior,
                    theta_standardization,
                    x_standardization,
                    cardinality_standardization,
                    task,
                    max_cardinality: (0..rows).map(|i| sets.cardinality(i)).max(),
                },
                encoder,
                flow,
                store,
            },
            report,
        ))
    }

    /// Writes the model directory `dir` (replacing a model already there).
    pub fn save(&self, dir: &std::path::Path) -> Result<()> {
        crate::io::model::save_model(dir, SET_NPE_MODEL_KIND, &self.config, &self.store)
    }

    /// Reads a model directory written by [`SetNpeModel::save`].
    pub fn load(dir: &std::path::Path) -> Result<SetNpeModel> {
        let (config, (encoder, flow), store) = crate::io::model::load_architecture(
            dir,
            SET_NPE_MODEL_KIND,
            |c: &SetNpeConfig, store, rng| {
                let encoder = SetEncoder::new(store, "encoder", c.encoder, rng)?;
                Ok((encoder, ConditionalFlow::new(store, "flow", c.flow, rng)?))
            },
        )?;
        Ok(SetNpeModel {
            config,
            encoder,
            flow,
            store,
        })
    }

    /// Features per set element.
    pub fn features(&self) -> usize {
        self.config.encoder.in_features()
    }

    /// The flow's context for raw sets x `[batch, set, feat]` with mask `[batch, set]`,
    /// on a no-grad tape.
    fn batch_context(&self, tape: &mut Tape, x: &Tensor, mask: &Tensor) -> Result<Var> {
        let mut xs = x.to_vec()?;
        self.config.x_standardization.apply(&mut xs);
        set_context(
            tape,
            &self.store,
            &self.encoder,
            &self.config.cardinality_standardization,
            Tensor::from_vec(xs, x.shape())?,
            mask,
        )
    }

    /// log q(θ_b | set b) in θ's own units, one value per set: θ `[batch, dim θ]`, sets x
    /// `[batch, set, feat]` with the 0/1 mask `[batch, set]` (padding anywhere). Errors on
    /// an empty set, a feature count other than the model's, non-finite values or a θ
    /// row count other than the batch.
    pub fn log_prob(&self, theta: &[f32], x: &Tensor, mask: &Tensor) -> Result<Vec<f32>> {
        let op = "SetNpeModel::log_prob";
        check_set_batch(op, x, mask, self.features())?;
        let c = &self.config;
        let d = c.prior.dim();
        let batch = x.shape()[0];
        if check_rows(op, "theta", theta, d)? != batch {
            return Err(Error::invalid(
                op,
                format!(
                    "needs one theta row per set ({batch}), got {}",
                    theta.len() / d
                ),
            ));
        }
        let mut ts = theta.to_vec();
        c.theta_standardization.apply(&mut ts);
        let mut tape = Tape::no_grad();
        let context = self.batch_context(&mut tape, x, mask)?;
        let t = tape.constant(Tensor::from_vec(ts, &[batch, d])?);
        let lp = self
            .flow
            .log_prob(&mut tape, &self.store, t, Some(context))?;
        // θ = mean + std·θ̃, so log q(θ) = log q̃(θ̃) − Σ ln std.
        let log_jacobian: f32 = c.theta_standardization.std.iter().map(|s| s.ln()).sum();
        Ok(tape
            .value(lp)
            .to_vec()?
            .into_iter()
            .map(|v| v - log_jacobian)
            .collect())
    }

    /// `num` draws from q(θ | set) inside the prior's support, seeded by `seed`; `set` is
    /// the elements' rows `[n ≥ 1, feat]`.
    pub fn sample(&self, set: &[f32], num: usize, seed: u64) -> Result<PosteriorDraws> {
        sample_posterior_flow(self, set, num, seed)
    }
}

impl PosteriorFlow for SetNpeModel {
    fn prior(&self) -> &Prior {
        &self.config.prior
    }

    /// The encoder's summary of the set `[n ≥ 1, feat]`, with its standardized ln n;
    /// an empty set is an error.
    fn context(&self, set: &[f32]) -> Result<Vec<f32>> {
        let op = "SetNpeModel::sample";
        let features = self.features();
        let n = check_rows(op, "the set", set, features)?;
        if n == 0 {
            return Err(Error::invalid(
                op,
                "the set is empty: it needs at least one element",
            ));
        }
        let x = Tensor::from_slice(set, &[1, n, features])?;
        let mask = Tensor::full(&[1, n], 1.0);
        let mut tape = Tape::no_grad();
        let context = self.batch_context(&mut tape, &x, &mask)?;
        tape.value(context).to_vec()
    }

    fn flow(&self) -> (&ConditionalFlow, &ParamStore, &Standardization) {
        (&self.flow, &self.store, &self.config.theta_standardization)
    }
}

crate::io::model::impl_model_file!(SetNpeModel, SET_NPE_MODEL_KIND);
