//! NPE, NLE and NRE on the sbibm tasks at 10⁴ simulations: C2ST of 10⁴ draws against the
//! reference posteriors of observations 1–5, then a table of task × estimator (mean
//! C2ST over the five observations). Also prints what each sampler costs: NPE's
//! prior-support acceptance and samples/s, the MCMC chains' R̂, ESS, acceptance of the
//! population (differential-evolution) moves and samples/s.
//!
//! Run: `cargo run --release --example sbibm [-- [--estimators npe,nle,nre]
//! [--mcmc CHAINS,WARMUP,THIN[,INIT_CANDIDATES[,POPULATION_MOVES]]]
//! [--observations 1,2,3,4,5] [--ema DECAY] [--ensemble K] [--exchangeable] [TASK ...]]`
//!
//! `--ensemble K` trains K members per estimator (seeds 0..K) and samples their mixture
//! ([`amortize::estimators::ensemble`]). `--exchangeable` trains every estimator with the
//! task's [`Task::iid_draws`] (slcp: its four iid draws sorted into one order).

use std::time::Instant;

// The CPU backend allocates every op's output: see the mimalloc line of Cargo.toml.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use amortize::diagnostics::c2st::c2st;
use amortize::estimators::ensemble::Ensemble;
use amortize::estimators::nle::{NleModel, NleOptions};
use amortize::estimators::npe::{NpeModel, NpeOptions};
use amortize::estimators::nre::{NreModel, NreOptions};
use amortize::samplers::mcmc::{sample_estimator, LikelihoodEstimator, McmcOptions};
use amortize::tasks::Task;
use amortize::train::TrainReport;
use amortize::{Error, Result};

const SIMULATIONS: usize = 10_000;
const DRAWS: usize = 10_000;

/// A trained estimator that can draw given one reference observation.
enum Trained {
    Npe(Box<Ensemble<NpeModel>>),
    Mcmc(Box<dyn LikelihoodEstimator>),
}

/// Trains `members` copies of `estimator` with its default options (seeds 0, 1, ...),
/// the weight average `ema` if given and x as `blocks` exchangeable blocks; one member is
/// the plain estimator.
fn train(
    estimator: &str,
    task: Task,
    theta: &[f32],
    x: &[f32],
    ema: Option<f32>,
    members: usize,
    blocks: usize,
) -> Result<(Trained, Vec<TrainReport>)> {
    let (dx, prior, name) = (task.dim_x(), task.prior(), Some(task.name().to_string()));
    let mut reports = Vec::new();
    macro_rules! train_members {
        ($model:ty, $options:ty) => {{
            let mut trained = Vec::new();
            for seed in 0..members as u64 {
                let mut options = <$options>::default();
                options.train.ema_decay = ema;
                options.train.seed = seed;
                options.exchangeable_blocks = blocks;
                let (m, r) =
                    <$model>::train(theta, x, dx, prior.clone(), name.clone(), &options, |_| {})?;
                trained.push(m);
                reports.push(r);
            }
            Ensemble::new(trained)?
        }};
    }
    let trained = match estimator {
        "npe" => Trained::Npe(Box::new(train_members!(NpeModel, NpeOptions))),
        "nle" => Trained::Mcmc(Box::new(train_members!(NleModel, NleOptions))),
        "nre" => Trained::Mcmc(Box::new(train_members!(NreModel, NreOptions))),
        other => {
            return Err(Error::invalid(
                "sbibm",
                format!("unknown estimator {other:?} (npe, nle, nre)"),
            ))
        }
    };
    Ok((trained, reports))
}

fn main() -> Result<()> {
    let mut estimators = vec!["npe".to_string(), "nle".into(), "nre".into()];
    let mut tasks = Vec::new();
    let mut mcmc = McmcOptions::default();
    let mut observations = vec![1, 2, 3, 4, 5];
    let mut ema = None;
    let mut members = 1;
    let mut exchangeable = false;
    let mut args = std::env::args().skip(1);
    let numbers = |list: Option<String>| -> Vec<usize> {
        list.unwrap_or_default()
            .split(',')
            .map(|v| v.parse().expect("comma-separated positive integers"))
            .collect()
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--estimators" => {
                let list = args.next().unwrap_or_default();
                estimators = list.split(',').map(str::to_string).collect();
            }
            "--mcmc" => {
                let v = numbers(args.next());
                (mcmc.chains, mcmc.warmup, mcmc.thin) = (v[0], v[1], v[2]);
                mcmc.init_candidates = v.get(3).copied().unwrap_or(mcmc.init_candidates);
                mcmc.population_moves = v.get(4).copied().unwrap_or(mcmc.population_moves);
            }
            "--observations" => observations = numbers(args.next()),
            "--ema" => {
                let decay = args.next().unwrap_or_default();
                ema = Some(decay.parse().expect("--ema takes a decay in (0, 1)"));
            }
            "--ensemble" => members = numbers(args.next())[0],
            "--exchangeable" => exchangeable = true,
            _ => tasks.push(Task::by_name(&arg)?),
        }
    }
    if tasks.is_empty() {
        tasks = vec![
            Task::GaussianLinear,
            Task::TwoMoons,
            Task::GaussianMixture,
            Task::Slcp,
        ];
    }
    let mut table = Vec::new();
    for &task in &tasks {
        let (theta, x) = task.simulate_dataset(SIMULATIONS, 1);
        for estimator in &estimators {
            let start = Instant::now();
            let blocks = if exchangeable { task.iid_draws() } else { 1 };
            let (model, reports) = train(estimator, task, &theta, &x, ema, members, blocks)?;
            let epochs: Vec<usize> = reports.iter().map(|r| r.history.len()).collect();
            let losses: Vec<String> = reports
                .iter()
                .map(|r| format!("{:.3}", r.best_loss))
                .collect();
            println!(
                "{task} {estimator}: trained in {:.1} s ({epochs:?} epochs, best validation loss {})",
                start.elapsed().as_secs_f64(),
                losses.join(" ")
            );
            let mut scores = Vec::new();
            for &k in &observations {
                let reference = task.load_reference(k, None)?;
                let obs = &reference.observation;
                let start = Instant::now();
                let (samples, note) = match &model {
                    Trained::Npe(m) => {
                        let d = m.sample(obs, DRAWS, k as u64)?;
                        (d.samples, format!("acceptance {:.3}", d.acceptance_rate))
                    }
                    Trained::Mcmc(m) => {
                        let options = McmcOptions {
                            seed: k as u64,
                            ..mcmc.clone()
                        };
                        let d = sample_estimator(m.as_ref(), obs, DRAWS, &options, &|_| {})?;
                        let note = format!(
                            "R-hat {:.3}  ESS {:.0}  DE acceptance {:.2}  {:.0} evaluations/draw",
                            d.diagnostics.max_rhat(),
                            d.diagnostics.min_ess(),
                            d.population_acceptance,
                            d.evaluations as f64 / DRAWS as f64
                        );
                        (d.samples, note)
                    }
                };
                let rate = DRAWS as f64 / start.elapsed().as_secs_f64();
                let accuracy = c2st(&samples, &reference.reference_samples, task.dim_theta())?;
                println!("  obs{k}: C2ST {accuracy:.3}  {note}  {rate:.0} samples/s");
                scores.push(accuracy);
            }
            table.push((task, estimator.clone(), scores));
        }
    }
    println!(
        "\nC2ST at {SIMULATIONS} simulations, mean (min–max) over observations {observations:?}:"
    );
    println!("{:<18} {:<10} C2ST", "task", "estimator");
    for (task, estimator, scores) in &table {
        let mean = scores.iter().sum::<f64>() / scores.len() as f64;
        let lo = scores.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        println!(
            "{:<18} {:<10} {mean:.3} ({lo:.3}–{hi:.3})",
            task.name(),
            estimator
        );
    }
    Ok(())
}
