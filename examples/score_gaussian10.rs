//! Score-based posterior estimation on gaussian10 at a budget of 10^4 simulations:
//! trains once, then samples n = 1, 2, 4, 8 observations with Algorithm 2 on several
//! numbers of noise levels (with and without the corrector) and prints C2ST against the
//! analytic posterior next to samples/s.
//!
//! Run: `cargo run --release --example score_gaussian10 [-- WIDTH EPOCHS]`

use std::time::Instant;

use amortize::diagnostics::c2st::c2st;
use amortize::estimators::{Composition, SamplingOptions, ScoreModel, ScoreTrainOptions};
use amortize::rng::{streams, PhiloxStream};
use amortize::samplers::{Corrector, SamplerConfig};
use amortize::tasks::Task;
use amortize::Result;

const SIMULATIONS: usize = 10_000;
const DRAWS: usize = 10_000;

fn main() -> Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let task = Task::Gaussian10;
    let (theta, x) = task.simulate_dataset(SIMULATIONS, 1);
    let mut options = ScoreTrainOptions::default();
    options.width = *args.first().unwrap_or(&64);
    options.train.epochs = *args.get(1).unwrap_or(&200);
    let start = Instant::now();
    let (model, report) = ScoreModel::train(
        &theta,
        &x,
        task.dim_x(),
        task.prior(),
        Some(task.name().into()),
        &options,
        |e| {
            if e.epoch % 20 == 0 {
                println!(
                    "epoch {:4} train {:.4} validation {:.4}",
                    e.epoch,
                    e.train_loss,
                    e.validation_loss.unwrap_or(f32::NAN)
                );
            }
        },
    )?;
    println!(
        "trained width {} in {:.1} s: {} epochs, best validation loss {:.4} at epoch {}",
        options.width,
        start.elapsed().as_secs_f64(),
        report.history.len(),
        report.best_loss,
        report.best_epoch
    );
    let plan = model.plan()?;
    // Observations from one true θ drawn from the prior.
    let mut rng = PhiloxStream::new(7, streams::TEST, 0);
    let true_theta = task.prior().sample(&mut rng, 1);
    let all_obs = task.simulate(&true_theta.repeat(8), &mut rng)?;
    println!(
        "{:>2} {:>6} {:>10} {:>8} {:>10}",
        "n", "levels", "corrector", "C2ST", "samples/s"
    );
    for n in [1, 2, 4, 8] {
        let obs = &all_obs[..n * task.dim_x()];
        let reference = task
            .analytic_posterior(obs)?
            .sample(&mut PhiloxStream::new(9, streams::TEST, n as u32), DRAWS);
        for levels in [50, 100, 400] {
            for corrector in [
                Corrector::NONE,
                Corrector {
                    steps: 2,
                    levels: levels / 10,
                    snr: 0.16,
                },
            ] {
                let options = SamplingOptions {
                    levels,
                    sampler: SamplerConfig {
                        corrector,
                        seed: 3,
                        ..SamplerConfig::default()
                    },
                    composition: Composition::Geffner,
                };
                let t = Instant::now();
                let draws = model.sample_with_plan(&plan, obs, DRAWS, &options, &|_| {})?;
                let rate = DRAWS as f64 / t.elapsed().as_secs_f64();
                let acc = c2st(&draws, &reference, task.dim_theta())?;
                println!(
                    "{n:>2} {levels:>6} {:>10} {acc:>8.3} {rate:>10.0}",
                    if corrector.steps == 0 {
                        "none"
                    } else {
                        "2 x 10%"
                    }
                );
            }
        }
    }
    Ok(())
}
