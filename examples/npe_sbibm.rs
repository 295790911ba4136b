//! NPE (a spline flow q(θ | x)) on the sbibm tasks at 10⁴ simulations: C2ST against the
//! reference posteriors of observations 1–5, the prior-support acceptance rate, and the
//! flow's sampling throughput.
//!
//! Run: `cargo run --release --example npe_sbibm [-- TASK ...]`

use std::time::Instant;

use amortize::diagnostics::c2st::c2st;
use amortize::estimators::npe::{NpeModel, NpeOptions};
use amortize::tasks::Task;
use amortize::Result;

fn main() -> Result<()> {
    let names: Vec<String> = std::env::args().skip(1).collect();
    let tasks: Vec<Task> = if names.is_empty() {
        vec![
            Task::GaussianLinear,
            Task::TwoMoons,
            Task::GaussianMixture,
            Task::Slcp,
        ]
    } else {
        names
            .iter()
            .map(|n| Task::by_name(n))
            .collect::<Result<_>>()?
    };
    for task in tasks {
        let (theta, x) = task.simulate_dataset(10_000, 1);
        let start = Instant::now();
        let (model, report) = NpeModel::train(
            &theta,
            &x,
            task.dim_x(),
            task.prior(),
            Some(task.name().into()),
            &NpeOptions::default(),
            |_| {},
        )?;
        println!(
            "{task}: trained in {:.1} s ({} epochs, best validation −log q {:.3})",
            start.elapsed().as_secs_f64(),
            report.history.len(),
            report.best_loss
        );
        for k in 1..=5 {
            let reference = task.load_reference(k, None)?;
            let start = Instant::now();
            let draws = model.sample(&reference.observation, 10_000, k as u64)?;
            let rate = 10_000.0 / start.elapsed().as_secs_f64();
            let accuracy = c2st(
                &draws.samples,
                &reference.reference_samples,
                task.dim_theta(),
            )?;
            println!(
                "  obs{k}: C2ST {accuracy:.3}  acceptance {:.3}  {rate:.0} samples/s",
                draws.acceptance_rate
            );
        }
    }
    Ok(())
}
