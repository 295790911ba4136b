//! `amortize train`: an estimator (score, NPE, NLE or NRE) from simulated pairs.

use std::path::PathBuf;
use std::time::Instant;

use amortize::backend::UnaryOp;
use amortize::estimators::ensemble::Ensemble;
use amortize::estimators::flow_model::FlowOptions;
use amortize::estimators::nle::NleModel;
use amortize::estimators::npe::NpeModel;
use amortize::estimators::nre::{NreModel, NreOptions};
use amortize::estimators::pairs::split_iid_draws;
use amortize::estimators::score::LevelDraw;
use amortize::estimators::score_model::ThetaSpace;
use amortize::estimators::set_npe::{
    draw_subsets, subsets_per_simulation, SetNpeModel, SetNpeOptions,
};
use amortize::estimators::{ScoreModel, ScoreTrainOptions};
use amortize::io::model::ModelFile;
use amortize::io::npy::read_npy_matrix;
use amortize::priors::Prior;
use amortize::tasks::Task;
use amortize::train::{EpochReport, TrainConfig, TrainReport};
use amortize::{Device, Error, Result};

use crate::progress;

/// Arguments of `amortize train`.
#[derive(clap::Args)]
pub struct Args {
    /// Directory with theta.npy [N, dim θ] and x.npy [N, dim x].
    #[arg(long)]
    pub data: PathBuf,
    /// Built-in task whose prior the data was drawn from.
    #[arg(long, required_unless_present = "prior")]
    pub task: Option<String>,
    /// A prior spec (JSON) instead of a task's prior.
    #[arg(long)]
    pub prior: Option<PathBuf>,
    /// Output model directory.
    #[arg(long)]
    pub out: PathBuf,
    /// `score` (score-based, Geffner et al.), `npe` (a spline flow q(θ | x)), `nle` (a
    /// spline flow q(x | θ), sampled by MCMC), `nre` (a contrastive ratio classifier,
    /// sampled by MCMC) or `set_npe` (a spline flow q(θ | {x}) whose context is a set
    /// encoder over x's iid draws, trained on every subset of them; needs `--iid-draws`).
    #[arg(long, default_value = "score")]
    pub estimator: String,
    /// Where the training ops run: cpu, cuda:N or wgpu:N (the trained model is written
    /// from the CPU either way).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Most epochs (training stops earlier when the validation loss stops improving).
    #[arg(long, default_value_t = 150)]
    pub epochs: usize,
    /// Minibatch size.
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    /// Peak learning rate of Adam's cosine schedule.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f32,
    /// Decoupled weight decay λ of AdamW (each step also shrinks the weights by lr·λ,
    /// as PyTorch's AdamW); 0 is plain Adam.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub weight_decay: f32,
    /// Fraction of the simulations held out to validate each epoch and stop early. 0
    /// trains on all of them for `--epochs` (the cosine schedule runs out) and keeps the
    /// epoch with the lowest training loss.
    #[arg(long, default_value_t = 0.2, allow_negative_numbers = true)]
    pub validation_fraction: f32,
    /// Seeds the initialization, the split, the shuffles and the noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Epochs without a validation improvement before training stops (default: the
    /// estimator's, 30 for score and 20 for NPE, NLE, NRE). The cosine learning rate
    /// decays over all `--epochs`, so a run that stops early ends before it has decayed.
    #[arg(long)]
    pub patience: Option<usize>,
    /// Hidden width of the score network's three MLPs, of NPE's and NLE's coupling
    /// conditioners, of NRE's classifier and of set NPE's set encoder.
    #[arg(long, default_value_t = 64)]
    pub width: usize,
    /// NPE, NLE and set NPE: the coupling layers' bijection, `spline` (rational-quadratic)
    /// or `affine`.
    #[arg(long, default_value = "spline")]
    pub flow: String,
    /// NPE, NLE and set NPE: coupling layers of the flow.
    #[arg(long, default_value_t = FlowOptions::default().layers)]
    pub flow_layers: usize,
    /// Noise levels T of the schedule.
    #[arg(long, default_value_t = 400)]
    pub levels: usize,
    /// Score estimator: training draws its levels as t = T·u^p, u ~ U(0, 1]; p = 1 is
    /// Geffner et al.'s uniform t, larger p trains more on the low-noise levels.
    #[arg(long, default_value_t = LevelDraw::default().power)]
    pub level_power: f32,
    /// NRE: classes K of the contrastive loss (the true θ and K − 1 others of the
    /// minibatch).
    #[arg(long, default_value_t = NreOptions::default().atoms)]
    pub atoms: usize,
    /// NRE: the classifier's activation, `relu` (resolves sharp features of the
    /// log-ratio) or `silu` (smoother; better where the likelihood is smooth and
    /// simulations are sparse, e.g. sbibm's gaussian_linear).
    #[arg(long, default_value = "relu")]
    pub nre_activation: String,
    /// Set NPE: the set encoder, `set_transformer` (self-attention between the points,
    /// pooling by attention; width a multiple of its 4 heads) or `deep_set` (a per-point
    /// MLP and mean pooling: 2.6× cheaper to train, but it averages away what pairs of
    /// points say, e.g. slcp's C2ST 0.745 against 0.685–0.711, benches/RESULTS.md).
    /// Default: `set_transformer`.
    #[arg(long)]
    pub set_encoder: Option<String>,
    /// Decay of the exponential moving average of the weights that is validated and
    /// saved (0 turns the average off). Default: 0.999 for the score estimator, off for
    /// NPE, NLE and NRE (whose early stopping comes before a slow average settles).
    #[arg(long)]
    pub ema_decay: Option<f32>,
    /// Train this many members (seeds `--seed`, `--seed` + 1, ...) and save their
    /// ensemble: the mixture of their densities (NPE, NLE), the geometric mean of their
    /// ratios (NRE), the mean of their scores (score; sampled as one network).
    #[arg(long, default_value_t = 1)]
    pub ensemble: usize,
    /// x is this many equal blocks whose order carries no information (slcp: its 4 iid
    /// draws, `--exchangeable-blocks 4`). The model sorts each x's blocks into one
    /// canonical order, in training and for every observation it is given later.
    #[arg(long, default_value_t = 1)]
    pub exchangeable_blocks: usize,
    /// Score estimator: the coordinates of θ the network learns and samples in,
    /// `unconstrained` (the prior's bijection to ℝᵈ, e.g. a box's scaled logit) or
    /// `natural` (θ itself; uniform-box and Gaussian priors: draws outside the box are
    /// rejected, and a narrow mode near the box's edge is not stretched by the logit).
    #[arg(long, default_value = "unconstrained")]
    pub theta_space: String,
    /// Score estimator: the network's x path, `mlp` (Geffner et al.'s x-MLP) or a set
    /// encoder over x's iid draws (`set_transformer`: attention between the draws sees
    /// what pairs of them say; `deep_set`), hidden width 64. A set encoder needs
    /// `--iid-draws K`: it trains on every non-empty subset of each simulation's draws,
    /// as set NPE does, and samples an observation's draws as one set, composing nothing.
    #[arg(long, default_value = "mlp")]
    pub x_encoder: String,
    /// Score estimator: put a linear-Gaussian posterior N(A·x + b, diag(v)), fitted by
    /// least squares to the standardized simulations, under the network, which then
    /// learns only what it gets wrong. Extrapolates where simulations are sparse and
    /// keeps composed observations' errors from adding up where the posterior is near
    /// Gaussian (gaussian_linear, gaussian10); x-MLP only, CPU sampling only.
    #[arg(long)]
    pub gaussian_base: bool,
    /// x is this many iid draws of a smaller output (slcp: 4 points in the plane): the
    /// model learns one draw from every simulation's draws (the 10⁴ simulations of slcp
    /// give 4·10⁴ pairs (θ, point)), and an observation's draws are composed as iid
    /// observations when sampling (`sample --obs` takes them as rows).
    #[arg(long, default_value_t = 1)]
    pub iid_draws: usize,
}

/// The score estimator's default weight average (see `--ema-decay`).
const SCORE_EMA_DECAY: f32 = 0.999;

impl Args {
    /// The training options these arguments ask for.
    pub fn options(&self) -> Result<ScoreTrainOptions> {
        let mut options = ScoreTrainOptions {
            width: self.width,
            levels: self.levels,
            level_draw: LevelDraw {
                power: self.level_power,
            },
            device: self.device.parse()?,
            exchangeable_blocks: self.exchangeable_blocks,
            theta_space: self.theta_space.parse()?,
            x_encoder: match self.x_encoder.as_str() {
                "mlp" => None,
                set => Some(set.parse().map_err(|_| {
                    Error::invalid(
                        "train",
                        format!(
                            "unknown x encoder {set:?} (known: mlp, set_transformer, deep_set)"
                        ),
                    )
                })?),
            },
            gaussian_base: self.gaussian_base,
            ..ScoreTrainOptions::default()
        };
        options.train.ema_decay = Some(SCORE_EMA_DECAY);
        options.train = self.train_config(options.train, self.seed);
        Ok(options)
    }

    /// NPE's and NLE's flow options with training seed `seed`, or an error for an
    /// unknown `--flow`.
    pub fn flow_options(&self, device: Device, seed: u64) -> Result<FlowOptions> {
        Ok(FlowOptions {
            layers: self.flow_layers,
            spline: self.spline()?,
            width: self.width,
            train: self.train_config(FlowOptions::default().train, seed),
            device,
            exchangeable_blocks: self.exchangeable_blocks,
        })
    }

    /// Whether `--flow` names spline (true) or affine (false) coupling layers.
    pub fn spline(&self) -> Result<bool> {
        match self.flow.as_str() {
            "spline" => Ok(true),
            "affine" => Ok(false),
            other => Err(Error::invalid(
                "train",
                format!("unknown flow {other:?} (known: spline, affine)"),
            )),
        }
    }

    /// The NRE classifier's activation named by `--nre-activation`.
    pub fn nre_activation(&self) -> Result<UnaryOp> {
        match self.nre_activation.as_str() {
            "silu" => Ok(UnaryOp::Silu),
            "relu" => Ok(UnaryOp::Relu),
            other => Err(Error::invalid(
                "train",
                format!("unknown NRE activation {other:?} (known: silu, relu)"),
            )),
        }
    }

    /// Set NPE's options for elements of `features` values with the encoder named by
    /// `--set-encoder`, its width `--width`.
    pub fn set_npe_options(&self, features: usize) -> Result<SetNpeOptions> {
        let kind = self.set_encoder.as_deref().unwrap_or("set_transformer");
        Ok(SetNpeOptions::new(kind.parse()?, features, self.width))
    }

    /// An estimator's default minibatch settings `base` with the ones given here, and
    /// `seed` (`--seed`, or an ensemble member's).
    pub fn train_config(&self, base: TrainConfig, seed: u64) -> TrainConfig {
        let mut train = base;
        train.epochs = self.epochs;
        train.batch_size = self.batch_size;
        train.optimizer.lr = self.lr;
        train.validation_fraction = self.validation_fraction;
        if self.weight_decay != 0.0 {
            train.optimizer.weight_decay = self.weight_decay;
            train.optimizer.decoupled = true;
        }
        train.seed = seed;
        train.rows_per_group = self.iid_draws;
        if let Some(patience) = self.patience {
            train.patience = patience;
        }
        if let Some(decay) = self.ema_decay {
            train.ema_decay = (decay > 0.0).then_some(decay);
        }
        train
    }
}

/// Reads the data, trains with a progress bar, writes the model.
pub fn run(args: &Args) -> Result<()> {
    let options = args.options()?;
    if args.set_encoder.is_some() && args.estimator != "set_npe" {
        return Err(Error::invalid(
            "train",
            "--set-encoder is set NPE's (the score network's set encoder is --x-encoder)",
        ));
    }
    if args.estimator != "score" {
        if options.theta_space != ThetaSpace::Unconstrained {
            return Err(Error::invalid(
                "train",
                "--theta-space is the score estimator's: the flows and NRE learn θ in its own units",
            ));
        }
        if options.x_encoder.is_some() {
            return Err(Error::invalid(
                "train",
                "--x-encoder is the score estimator's (set NPE's encoder is --set-encoder)",
            ));
        }
        if options.gaussian_base {
            return Err(Error::invalid(
                "train",
                "--gaussian-base is the score estimator's",
            ));
        }
    } else if options.gaussian_base && options.x_encoder.is_some() {
        return Err(Error::invalid(
            "train",
            "--gaussian-base is linear in one observation: it cannot sit under a set encoder (--x-encoder)",
        ));
    } else if options.x_encoder.is_some() && args.iid_draws < 2 {
        return Err(Error::invalid(
            "train",
            "--x-encoder reads x's iid draws as a set: give --iid-draws K (K ≥ 2), the draws each x is made of",
        ));
    }
    let (prior, task_name) = match (&args.prior, &args.task) {
        (Some(path), _) => (Prior::from_json_file(path)?, args.task.clone()),
        (None, Some(name)) => {
            let task = Task::by_name(name)?;
            (task.prior(), Some(task.name().to_string()))
        }
        (None, None) => return Err(Error::invalid("train", "give --task or --prior")),
    };
    let (theta, rows, _) = read_npy_matrix(args.data.join("theta.npy"), Some(prior.dim()))?;
    let (x, x_rows, dim_x) = read_npy_matrix(args.data.join("x.npy"), None)?;
    if rows != x_rows {
        return Err(Error::invalid(
            "train",
            format!("theta.npy has {rows} rows but x.npy has {x_rows}"),
        ));
    }
    if let Some(task) = task_name.as_deref().map(Task::by_name).transpose()? {
        let draws = task.iid_draws();
        if draws > 1 && args.exchangeable_blocks == 1 && args.iid_draws == 1 {
            eprintln!(
                "note: {task}'s x is {draws} iid draws: --iid-draws {draws} learns one draw and composes them, --exchangeable-blocks {draws} ignores their order (benches/RESULTS.md)"
            );
        }
        for (flag, k) in [
            ("--iid-draws", args.iid_draws),
            ("--exchangeable-blocks", args.exchangeable_blocks),
        ] {
            if k > 1 && draws % k != 0 {
                return Err(Error::invalid(
                    "train",
                    format!("{flag} {k}: {task}'s x is not made of {k} iid draws (it is {draws})"),
                ));
            }
        }
        if dim_x != task.dim_x() {
            return Err(Error::invalid(
                "train",
                format!(
                    "x.npy has {dim_x} columns, task {task} has dim x = {}",
                    task.dim_x()
                ),
            ));
        }
    }
    if args.ensemble == 0 {
        return Err(Error::invalid("train", "--ensemble must be at least 1"));
    }
    let simulations = theta;
    let (theta, dim_x) = split_iid_draws(&simulations, prior.dim(), dim_x, args.iid_draws)?;
    let start = Instant::now();
    let (theta, x, name) = (theta.as_slice(), x.as_slice(), task_name);
    let reports = match args.estimator.as_str() {
        "score" if options.x_encoder.is_some() => {
            let (set_theta, sets) = draw_subsets(&simulations, x, prior.dim(), args.iid_draws)?;
            train_members(args, |seed, on_epoch| {
                let mut member = options.clone();
                member.train.seed = seed;
                member.train.rows_per_group = subsets_per_simulation(args.iid_draws);
                let task = name.clone();
                ScoreModel::train_sets(&set_theta, &sets, prior.clone(), task, &member, on_epoch)
            })?
        }
        "score" => train_members(args, |seed, on_epoch| {
            let mut member = options.clone();
            member.train.seed = seed;
            ScoreModel::train(
                theta,
                x,
                dim_x,
                prior.clone(),
                name.clone(),
                &member,
                on_epoch,
            )
        })?,
        "npe" => train_members(args, |seed, on_epoch| {
            let npe = args.flow_options(options.device, seed)?;
            NpeModel::train(theta, x, dim_x, prior.clone(), name.clone(), &npe, on_epoch)
        })?,
        "nle" => train_members(args, |seed, on_epoch| {
            let nle = args.flow_options(options.device, seed)?;
            NleModel::train(theta, x, dim_x, prior.clone(), name.clone(), &nle, on_epoch)
        })?,
        "nre" => train_members(args, |seed, on_epoch| {
            let nre = NreOptions {
                width: args.width,
                atoms: args.atoms,
                train: args.train_config(NreOptions::default().train, seed),
                device: options.device,
                exchangeable_blocks: args.exchangeable_blocks,
                activation: args.nre_activation()?,
                ..NreOptions::default()
            };
            NreModel::train(theta, x, dim_x, prior.clone(), name.clone(), &nre, on_epoch)
        })?,
        "set_npe" => {
            if args.iid_draws < 2 {
                return Err(Error::invalid(
                    "train",
                    "set_npe learns from sets of iid draws: give --iid-draws K (K ≥ 2), the draws each x is made of",
                ));
            }
            if args.exchangeable_blocks > 1 {
                return Err(Error::invalid(
                    "train",
                    "set_npe takes no --exchangeable-blocks: a set has no order to sort",
                ));
            }
            let (set_theta, sets) = draw_subsets(&simulations, x, prior.dim(), args.iid_draws)?;
            train_members(args, |seed, on_epoch| {
                let mut set_npe = args.set_npe_options(dim_x)?;
                set_npe.layers = args.flow_layers;
                set_npe.spline = args.spline()?;
                set_npe.train = args.train_config(set_npe.train, seed);
                set_npe.train.rows_per_group = subsets_per_simulation(args.iid_draws);
                set_npe.device = options.device;
                SetNpeModel::train(
                    &set_theta,
                    &sets,
                    prior.clone(),
                    name.clone(),
                    &set_npe,
                    on_epoch,
                )
            })?
        }
        other => {
            return Err(Error::invalid(
                "train",
                format!("unknown estimator {other:?} (known: score, npe, nle, nre, set_npe)"),
            ))
        }
    };
    let summary: Vec<String> = reports
        .iter()
        .map(|r| {
            format!(
                "{} epochs{}, best {} loss {:.4} at epoch {}",
                r.history.len(),
                if r.stopped_early {
                    ", stopped early"
                } else {
                    ""
                },
                if args.validation_fraction > 0.0 {
                    "validation"
                } else {
                    "training"
                },
                r.best_loss,
                r.best_epoch
            )
        })
        .collect();
    let each = match args.iid_draws {
        1 => String::new(),
        k => format!(" of {k} iid draws each"),
    };
    println!(
        "trained on {rows} simulations{each} in {:.1} s ({}); {} written to {}",
        start.elapsed().as_secs_f64(),
        summary.join("; "),
        if reports.len() > 1 {
            format!("ensemble of {} members", reports.len())
        } else {
            "model".into()
        },
        args.out.display()
    );
    Ok(())
}

/// Trains `--ensemble` members with `train(seed, on_epoch)` (seeds `--seed`, `--seed` + 1,
/// ...), each with its progress bar, and writes the one model, or the members' ensemble,
/// to `--out`. Returns the members' reports.
fn train_members<M: ModelFile>(
    args: &Args,
    train: impl Fn(u64, &dyn Fn(&EpochReport)) -> Result<(M, TrainReport)>,
) -> Result<Vec<TrainReport>> {
    let mut members = Vec::with_capacity(args.ensemble);
    let mut reports = Vec::with_capacity(args.ensemble);
    for k in 0..args.ensemble {
        let what = if args.ensemble > 1 {
            format!("epochs (member {}/{})", k + 1, args.ensemble)
        } else {
            "epochs".to_string()
        };
        let bar = progress::bar(args.epochs as u64, &what);
        let (model, report) = train(args.seed + k as u64, &|e| progress::report_epoch(&bar, e))?;
        bar.finish_and_clear();
        members.push(model);
        reports.push(report);
    }
    match members.len() {
        1 => members.remove(0).save_dir(&args.out)?,
        _ => Ensemble::new(members)?.save(&args.out)?,
    }
    Ok(reports)
}
