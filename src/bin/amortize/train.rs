//! `amortize train`: an estimator (score, NPE, NLE or NRE) from simulated pairs.

use std::path::PathBuf;
use std::time::Instant;

use amortize::estimators::flow_model::FlowOptions;
use amortize::estimators::nle::NleModel;
use amortize::estimators::npe::NpeModel;
use amortize::estimators::nre::{NreModel, NreOptions};
use amortize::estimators::{ScoreModel, ScoreTrainOptions};
use amortize::io::npy::read_npy_matrix;
use amortize::priors::Prior;
use amortize::tasks::Task;
use amortize::train::{EpochReport, TrainConfig};
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
    /// spline flow q(x | θ), sampled by MCMC) or `nre` (a contrastive ratio classifier,
    /// sampled by MCMC).
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
    /// Seeds the initialization, the split, the shuffles and the noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Hidden width of the score network's three MLPs, of NPE's and NLE's coupling
    /// conditioners and of NRE's classifier.
    #[arg(long, default_value_t = 64)]
    pub width: usize,
    /// NPE and NLE: the coupling layers' bijection, `spline` (rational-quadratic) or
    /// `affine`.
    #[arg(long, default_value = "spline")]
    pub flow: String,
    /// NPE and NLE: coupling layers of the flow.
    #[arg(long, default_value_t = FlowOptions::default().layers)]
    pub flow_layers: usize,
    /// Noise levels T of the schedule.
    #[arg(long, default_value_t = 400)]
    pub levels: usize,
    /// Decay of the exponential moving average of the weights that is validated and
    /// saved (0 turns the average off). Default: 0.999 for the score estimator, off for
    /// NPE, NLE and NRE (whose early stopping comes before a slow average settles).
    #[arg(long)]
    pub ema_decay: Option<f32>,
}

/// The score estimator's default weight average (see `--ema-decay`).
const SCORE_EMA_DECAY: f32 = 0.999;

impl Args {
    /// The training options these arguments ask for.
    pub fn options(&self) -> Result<ScoreTrainOptions> {
        let mut options = ScoreTrainOptions {
            width: self.width,
            levels: self.levels,
            device: self.device.parse()?,
            ..ScoreTrainOptions::default()
        };
        options.train.ema_decay = Some(SCORE_EMA_DECAY);
        options.train = self.train_config(options.train);
        Ok(options)
    }

    /// NPE's and NLE's flow options, or an error for an unknown `--flow`.
    pub fn flow_options(&self, device: Device) -> Result<FlowOptions> {
        let spline = match self.flow.as_str() {
            "spline" => true,
            "affine" => false,
            other => {
                return Err(Error::invalid(
                    "train",
                    format!("unknown flow {other:?} (known: spline, affine)"),
                ))
            }
        };
        Ok(FlowOptions {
            layers: self.flow_layers,
            spline,
            width: self.width,
            train: self.train_config(FlowOptions::default().train),
            device,
        })
    }

    /// An estimator's default minibatch settings `base` with the ones given here.
    pub fn train_config(&self, base: TrainConfig) -> TrainConfig {
        let mut train = base;
        train.epochs = self.epochs;
        train.batch_size = self.batch_size;
        train.optimizer.lr = self.lr;
        train.seed = self.seed;
        if let Some(decay) = self.ema_decay {
            train.ema_decay = (decay > 0.0).then_some(decay);
        }
        train
    }
}

/// Reads the data, trains with a progress bar, writes the model.
pub fn run(args: &Args) -> Result<()> {
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
    let options = args.options()?;
    let bar = progress::bar(options.train.epochs as u64, "epochs");
    let start = Instant::now();
    let on_epoch = |e: &EpochReport| progress::report_epoch(&bar, e);
    let report = match args.estimator.as_str() {
        "score" => {
            let (model, report) =
                ScoreModel::train(&theta, &x, dim_x, prior, task_name, &options, on_epoch)?;
            model.save(&args.out)?;
            report
        }
        "npe" => {
            let npe = args.flow_options(options.device)?;
            let (model, report) =
                NpeModel::train(&theta, &x, dim_x, prior, task_name, &npe, on_epoch)?;
            model.save(&args.out)?;
            report
        }
        "nle" => {
            let nle = args.flow_options(options.device)?;
            let (model, report) =
                NleModel::train(&theta, &x, dim_x, prior, task_name, &nle, on_epoch)?;
            model.save(&args.out)?;
            report
        }
        "nre" => {
            let nre = NreOptions {
                width: args.width,
                train: args.train_config(NreOptions::default().train),
                device: options.device,
                ..NreOptions::default()
            };
            let (model, report) =
                NreModel::train(&theta, &x, dim_x, prior, task_name, &nre, on_epoch)?;
            model.save(&args.out)?;
            report
        }
        other => {
            return Err(Error::invalid(
                "train",
                format!("unknown estimator {other:?} (known: score, npe, nle, nre)"),
            ))
        }
    };
    bar.finish_and_clear();
    println!(
        "trained on {rows} simulations in {:.1} s ({} epochs{}, best validation loss {:.4} at epoch {}); model written to {}",
        start.elapsed().as_secs_f64(),
        report.history.len(),
        if report.stopped_early { ", stopped early" } else { "" },
        report.best_loss,
        report.best_epoch,
        args.out.display()
    );
    Ok(())
}
