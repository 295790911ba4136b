//! `amortize quickstart`: the whole workflow on gaussian10 in a few minutes — simulate
//! 10⁴ pairs, train, then draw 10⁴ samples for n = 1, 2, 4, 8 observations with
//! Algorithm 2 and print C2ST against the analytic posterior and samples/s.

use std::time::Instant;

use amortize::diagnostics::c2st::c2st;
use amortize::estimators::ensemble::Ensemble;
use amortize::estimators::{Composition, SamplingOptions, ScoreModel};
use amortize::rng::{streams, PhiloxStream};
use amortize::tasks::Task;
use amortize::{Error, Result};

use crate::progress;
use crate::sample::SamplerArgs;

/// Arguments of `amortize quickstart`.
#[derive(clap::Args)]
pub struct Args {
    /// Simulations to train on.
    #[arg(long, default_value_t = 10_000)]
    pub simulations: usize,
    /// Posterior draws per n.
    #[arg(long, default_value_t = 10_000)]
    pub draws: usize,
    /// Most training epochs.
    #[arg(long, default_value_t = 150)]
    pub epochs: usize,
    /// Hidden width of the three MLPs.
    #[arg(long, default_value_t = 64)]
    pub width: usize,
    /// Decay of the exponential moving average of the weights (0 turns it off).
    #[arg(long, default_value_t = 0.999)]
    pub ema_decay: f32,
    /// Score networks to train (seeds `--data-seed`, `--data-seed` + 1, ...) and sample
    /// as the ensemble of their mean score.
    #[arg(long, default_value_t = 1)]
    pub ensemble: usize,
    /// Seed of the simulations, the training and the observations.
    #[arg(long, default_value_t = 1)]
    pub data_seed: u64,
    /// Put a linear-Gaussian base under the network (see `amortize train --help`).
    #[arg(long)]
    pub gaussian_base: bool,
    #[command(flatten)]
    pub sampler: SamplerArgs,
}

/// Runs the workflow and prints the table.
pub fn run(args: &Args) -> Result<()> {
    let task = Task::Gaussian10;
    if args.ensemble == 0 {
        return Err(Error::invalid(
            "quickstart",
            "--ensemble must be at least 1",
        ));
    }
    println!("gaussian10: θ ~ N(0, I₁₀), x ~ N(θ, diag(linspace(0.6, 1.4, 10))); analytic posterior for any n");
    let start = Instant::now();
    let (theta, x) = task.simulate_dataset(args.simulations, args.data_seed);
    println!(
        "simulated {} pairs in {:.2} s",
        args.simulations,
        start.elapsed().as_secs_f64()
    );

    let mut options = amortize::estimators::ScoreTrainOptions {
        width: args.width,
        gaussian_base: args.gaussian_base,
        ..Default::default()
    };
    options.train.epochs = args.epochs;
    options.train.ema_decay = (args.ema_decay > 0.0).then_some(args.ema_decay);
    let mut members = Vec::with_capacity(args.ensemble);
    for k in 0..args.ensemble {
        options.train.seed = args.data_seed + k as u64;
        let bar = progress::bar(args.epochs as u64, "epochs");
        let start = Instant::now();
        let (model, report) = ScoreModel::train(
            &theta,
            &x,
            task.dim_x(),
            task.prior(),
            Some(task.name().into()),
            &options,
            |e| progress::report_epoch(&bar, e),
        )?;
        bar.finish_and_clear();
        println!(
            "trained width {} in {:.1} s: {} epochs, best validation loss {:.4}",
            args.width,
            start.elapsed().as_secs_f64(),
            report.history.len(),
            report.best_loss
        );
        members.push(model);
    }
    let model = Ensemble::new(members)?;

    let mut rng = PhiloxStream::new(args.data_seed, streams::TEST, 0);
    let true_theta = task.prior().sample(&mut rng, 1);
    let observations = task.simulate(&true_theta.repeat(8), &mut rng)?;
    let options = args.sampler.options()?;
    println!("sampling on {}", options.device);
    println!(
        "{:>2} {:>7} {:>9} {:>7} {:>10}",
        "n", "levels", "compose", "C2ST", "samples/s"
    );
    for n in [1, 2, 4, 8] {
        let obs = &observations[..n * task.dim_x()];
        let reference = task.analytic_posterior(obs)?.sample(
            &mut PhiloxStream::new(args.data_seed, streams::TEST, n as u32),
            args.draws,
        );
        // C2ST against the number of levels (fewer levels cost nothing while C2ST stays
        // put): at n = 1 up to the trained 400, at n > 1 with GAUSS up to `--levels`;
        // Geffner et al.'s composition as written at `--levels` beside it.
        let gauss = Composition::Gauss { pilot_draws: 1000 };
        let levels = args.sampler.levels;
        let runs: Vec<(usize, Composition)> = if n == 1 {
            [25, 50, 100, 400]
                .map(|l| (l, options.composition))
                .to_vec()
        } else {
            let coarser = [25, 50].into_iter().filter(|&l| l < levels);
            std::iter::once((levels, Composition::Geffner))
                .chain(coarser.map(|l| (l, gauss)))
                .chain([(levels, gauss)])
                .collect()
        };
        for (levels, composition) in runs {
            let opts = SamplingOptions {
                levels,
                composition,
                ..options
            };
            let start = Instant::now();
            let draws = model.sample(obs, args.draws, &opts, &|_| {})?.samples;
            let rate = args.draws as f64 / start.elapsed().as_secs_f64();
            let accuracy = c2st(&draws, &reference, task.dim_theta())?;
            let name = match composition {
                Composition::Geffner => "geffner",
                Composition::Gauss { .. } => "gauss",
            };
            let name = if n == 1 { "-" } else { name };
            println!("{n:>2} {levels:>7} {name:>9} {accuracy:>7.3} {rate:>10.0}");
        }
    }
    Ok(())
}
