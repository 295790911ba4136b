//! `amortize evaluate`: C2ST and MMD² of a model's posterior against the analytic
//! posterior (tasks that have one) or the sbibm reference samples.

use std::path::PathBuf;

use amortize::diagnostics::c2st::c2st;
use amortize::diagnostics::mmd::mmd2;
use amortize::io::npy::read_npy_matrix;
use amortize::rng::{streams, PhiloxStream};
use amortize::tasks::Task;
use amortize::{Error, Result};

use crate::sample::{Estimator, SamplerArgs};

/// Arguments of `amortize evaluate`.
#[derive(clap::Args)]
pub struct Args {
    /// The task the model was trained on.
    #[arg(long)]
    pub task: String,
    /// Model directory.
    #[arg(long)]
    pub model: PathBuf,
    /// sbibm tasks: reference observations to use (1–5; default all five).
    #[arg(long = "observation", value_delimiter = ',')]
    pub observations: Vec<usize>,
    /// Tasks with an analytic posterior: observations [n, dim x] to condition on. Without
    /// it, n observations are simulated from one θ drawn from the prior, for each n in `--n`.
    #[arg(long)]
    pub obs: Option<PathBuf>,
    /// Numbers of observations to simulate when `--obs` is not given.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub n: Vec<usize>,
    /// Posterior draws per case (and reference draws for analytic posteriors).
    #[arg(long, default_value_t = 10_000)]
    pub num: usize,
    /// Reference data folder (default: ../shared/data, or $AMORTIZE_DATA_DIR).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub sampler: SamplerArgs,
}

/// One comparison: a label, observations, reference draws.
struct Case {
    label: String,
    obs: Vec<f32>,
    reference: Vec<f32>,
}

fn cases(task: Task, args: &Args) -> Result<Vec<Case>> {
    if task.has_analytic_posterior() && (args.obs.is_some() || !task.is_sbibm()) {
        let sets: Vec<(String, Vec<f32>)> = match &args.obs {
            Some(path) => {
                let (obs, n, _) = read_npy_matrix(path, Some(task.dim_x()))?;
                vec![(format!("{} (n={n})", path.display()), obs)]
            }
            None => {
                let mut rng = PhiloxStream::new(args.sampler.seed, streams::TEST, 0);
                let theta = task.prior().sample(&mut rng, 1);
                let most = args.n.iter().copied().max().unwrap_or(1);
                let all = task.simulate(&theta.repeat(most), &mut rng)?;
                args.n
                    .iter()
                    .map(|&n| (format!("n={n}"), all[..n * task.dim_x()].to_vec()))
                    .collect()
            }
        };
        return sets
            .into_iter()
            .enumerate()
            .map(|(i, (label, obs))| {
                let posterior = task.analytic_posterior(&obs)?;
                let reference = posterior.sample(
                    &mut PhiloxStream::new(args.sampler.seed, streams::TEST, 1 + i as u32),
                    args.num,
                );
                Ok(Case {
                    label,
                    obs,
                    reference,
                })
            })
            .collect();
    }
    if !task.is_sbibm() {
        return Err(Error::invalid(
            "evaluate",
            format!("task {task} has no reference posterior"),
        ));
    }
    let indices = if args.observations.is_empty() {
        vec![1, 2, 3, 4, 5]
    } else {
        args.observations.clone()
    };
    indices
        .into_iter()
        .map(|k| {
            let r = task.load_reference(k, args.data_dir.as_deref())?;
            Ok(Case {
                label: format!("obs{k}"),
                obs: r.observation,
                reference: r.reference_samples,
            })
        })
        .collect()
}

/// Samples each case and prints C2ST, MMD² and samples/s.
pub fn run(args: &Args) -> Result<()> {
    let task = Task::by_name(&args.task)?;
    let model = Estimator::load(&args.model)?;
    let (dim_theta, dim_x) = model.dims();
    let per_draw = dim_theta == task.dim_theta()
        && task.iid_draws() > 1
        && dim_x * task.iid_draws() == task.dim_x();
    if per_draw {
        let k = task.iid_draws();
        match model.reads_sets() {
            true => eprintln!(
                "the model reads {task}'s {k} iid draws as one set (set NPE, or a score network with --x-encoder): each observation's draws are one set"
            ),
            false => eprintln!(
                "the model learned one of {task}'s {k} iid draws (train --iid-draws {k}): each observation is composed of its draws"
            ),
        }
    } else if (dim_theta, dim_x) != (task.dim_theta(), task.dim_x()) {
        return Err(Error::invalid(
            "evaluate",
            format!(
                "the model has dim θ {} and dim x {}, task {task} has {} and {}",
                dim_theta,
                dim_x,
                task.dim_theta(),
                task.dim_x()
            ),
        ));
    }
    if args.num < 10 {
        return Err(Error::invalid("evaluate", "--num must be at least 10"));
    }
    println!(
        "{:<24} {:>8} {:>10} {:>10}",
        "case", "C2ST", "MMD²", "samples/s"
    );
    let cases = cases(task, args)?;
    let (mut c2st_sum, mut c2st_max) = (0.0, f64::NEG_INFINITY);
    for case in &cases {
        let (draws, rate) = model.draw(&case.obs, args.num, &args.sampler)?;
        let accuracy = c2st(&draws, &case.reference, task.dim_theta())?;
        let mmd = mmd2(&draws, &case.reference, task.dim_theta())?;
        println!(
            "{:<24} {accuracy:>8.3} {mmd:>10.4} {rate:>10.0}",
            case.label
        );
        c2st_sum += accuracy;
        c2st_max = c2st_max.max(accuracy);
    }
    // What a target "below c on every observation" asks about, at a glance.
    if cases.len() > 1 {
        println!(
            "{:<24} {:>8.3}   (max {c2st_max:.3})",
            "mean",
            c2st_sum / cases.len() as f64
        );
    }
    Ok(())
}
