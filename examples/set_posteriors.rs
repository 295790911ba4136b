//! Set-based posteriors on the hierarchical SBI paper's tasks: a deep-set NPE trained on
//! sets of varying size, checked against the exact posterior (section 3.1) and by the
//! coverage of its central intervals on held-out datasets (sections 3.1 and 3.3).
//!
//! `cargo run --release --example set_posteriors`
//!
//! Prints (numbers only, nothing asserted):
//! 1. for the Gaussian-mean task, the median posterior standard deviation over test sets
//!    against the set size N next to the exact one, and the slope of log std against
//!    log N (the exact posterior tends to slope −½);
//! 2. for both tasks, the share of held-out datasets whose true parameter falls inside the
//!    central 50%, 68% and 95% intervals of the estimated posterior (nominal if calibrated),
//!    with the exact posterior's coverage beside it where there is one.

use std::time::Instant;

// The CPU backend allocates every op's output: see the mimalloc line of Cargo.toml.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use amortize::diagnostics::Coverage;
use amortize::estimators::set_npe::{SetEncoderConfig, SetNpeModel, SetNpeOptions};
use amortize::nn::DeepSetConfig;
use amortize::rng::{streams, PhiloxStream};
use amortize::tasks::sets::{gaussian_mean, SetDataset, SetTask};
use amortize::Result;

/// Central interval levels of the calibration table.
const LEVELS: [f64; 3] = [0.50, 0.68, 0.95];
/// Held-out datasets per calibration table.
const HELD_OUT: usize = 200;
/// Posterior draws per dataset.
const DRAWS: usize = 1000;
/// Set sizes of the shrinkage table.
const SIZES: [usize; 5] = [10, 25, 50, 100, 200];
/// Test parameters of the shrinkage table (one set of 200 elements each, read by prefix).
const SHRINKAGE_SETS: usize = 100;

/// Training sets per task. Many sets seen a few times generalize better than few sets
/// seen often, and simulations are cheap.
const TRAIN_SETS: usize = 8000;
/// Training epochs per task: with [`TRAIN_SETS`], about a minute per task on two cores.
const EPOCHS: usize = 30;

/// The options both tasks train with: a deep set of width 32 and 4 spline layers (the
/// paper's appendix uses widths 512 and 128; this is sized for two CPU cores).
fn options(features: usize) -> SetNpeOptions {
    let mut options = SetNpeOptions::deep_set(features);
    options.encoder = SetEncoderConfig::DeepSet(DeepSetConfig {
        width: 32,
        embedding: 32,
        ..DeepSetConfig::new(features, 16)
    });
    options.train.epochs = EPOCHS;
    options.train.patience = 10;
    options.train.batch_size = 64;
    options
}

fn train(task: SetTask, data: &SetDataset) -> Result<SetNpeModel> {
    let start = Instant::now();
    let (model, report) = SetNpeModel::train(
        &data.theta,
        &data.sets,
        task.prior(),
        Some(task.name().to_string()),
        &options(task.features()),
        |e| {
            if e.epoch % 5 == 0 {
                eprintln!(
                    "{} epoch {} train {:.3} val {:?} {:.1}s",
                    task.name(),
                    e.epoch,
                    e.train_loss,
                    e.validation_loss,
                    e.seconds
                );
            }
        },
    )?;
    println!(
        "trained {} on {} sets: {} epochs, best validation loss {:.3} (epoch {}), {:.0} s",
        task.name(),
        data.sets.len(),
        report.history.len(),
        report.best_loss,
        report.best_epoch,
        start.elapsed().as_secs_f64()
    );
    Ok(model)
}

/// Per-coordinate standard deviations of draws `[n, dim]`.
fn std_per_dim(draws: &[f32], dim: usize) -> Vec<f64> {
    (0..dim)
        .map(|i| {
            let col: Vec<f64> = draws
                .iter()
                .skip(i)
                .step_by(dim)
                .map(|&v| v as f64)
                .collect();
            let mean = col.iter().sum::<f64>() / col.len() as f64;
            (col.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (col.len() - 1) as f64).sqrt()
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Least-squares slope of log y against log x.
fn log_log_slope(x: &[usize], y: &[f64]) -> f64 {
    let lx: Vec<f64> = x.iter().map(|&v| (v as f64).ln()).collect();
    let ly: Vec<f64> = y.iter().map(|v| v.ln()).collect();
    let (mx, my) = (
        lx.iter().sum::<f64>() / lx.len() as f64,
        ly.iter().sum::<f64>() / ly.len() as f64,
    );
    let cov: f64 = lx.iter().zip(&ly).map(|(a, b)| (a - mx) * (b - my)).sum();
    let var: f64 = lx.iter().map(|a| (a - mx).powi(2)).sum();
    cov / var
}

/// Section 3.1's figure 2 as numbers: posterior std against N.
fn shrinkage_table(model: &SetNpeModel) -> Result<()> {
    let task = SetTask::GaussianMean;
    let dim = gaussian_mean::DIM;
    let max = *SIZES.last().expect("sizes");
    let theta = task
        .prior()
        .sample(&mut PhiloxStream::new(10, streams::TEST, 0), SHRINKAGE_SETS);
    let mut rng = PhiloxStream::new(10, streams::TEST, 1);
    let sets: Vec<Vec<f32>> = theta
        .chunks_exact(dim)
        .map(|t| task.simulate_set(t, max, &mut rng))
        .collect::<Result<_>>()?;
    println!("\nGaussian mean (3.1): median posterior std over {SHRINKAGE_SETS} test sets, by set size N");
    println!(
        "{:>5}  {:>22}  {:>22}",
        "N", "estimated (mu1 mu2 mu3)", "exact (mu1 mu2 mu3)"
    );
    let mut estimated = vec![Vec::new(); dim];
    let mut exact = vec![Vec::new(); dim];
    for &n in &SIZES {
        let mut per_set = vec![Vec::new(); dim];
        for (k, set) in sets.iter().enumerate() {
            let draws = model.sample(&set[..n * gaussian_mean::FEATURES], DRAWS, k as u64)?;
            for (i, s) in std_per_dim(&draws.samples, dim).into_iter().enumerate() {
                per_set[i].push(s);
            }
        }
        let est: Vec<f64> = per_set.into_iter().map(median).collect();
        let truth = gaussian_mean::posterior_std(n);
        println!(
            "{n:>5}  {:>6.4} {:>6.4} {:>6.4}    {:>6.4} {:>6.4} {:>6.4}",
            est[0], est[1], est[2], truth[0], truth[1], truth[2]
        );
        for i in 0..dim {
            estimated[i].push(est[i]);
            exact[i].push(truth[i]);
        }
    }
    let slopes = |v: &[Vec<f64>]| -> Vec<String> {
        v.iter()
            .map(|y| format!("{:+.3}", log_log_slope(&SIZES, y)))
            .collect()
    };
    println!(
        "slope of log std vs log N: estimated {}  exact {}",
        slopes(&estimated).join(" "),
        slopes(&exact).join(" ")
    );
    Ok(())
}

/// Coverage of the posterior draws `draws_for(k)` of every dataset k.
fn coverage(
    data: &SetDataset,
    dim: usize,
    mut draws_for: impl FnMut(usize) -> Result<Vec<f32>>,
) -> Result<Coverage> {
    let mut coverage = Coverage::new(dim, &LEVELS)?;
    for k in 0..data.sets.len() {
        coverage.add(&data.theta[k * dim..(k + 1) * dim], &draws_for(k)?)?;
    }
    Ok(coverage)
}

fn print_coverage(label: &str, names: &[&str], coverage: &Coverage) {
    for (name, row) in names.iter().zip(coverage.shares()) {
        println!(
            "{label:<30} {name:<9} {:>6.3} {:>6.3} {:>6.3}",
            row[0], row[1], row[2]
        );
    }
}

fn calibration(task: SetTask, model: &SetNpeModel, names: &[&str]) -> Result<()> {
    let data = task.simulate_dataset(HELD_OUT, 20)?;
    let dim = task.prior().dim();
    let estimated = coverage(&data, dim, |k| {
        Ok(model
            .sample(data.sets.set(k), DRAWS, 100 + k as u64)?
            .samples)
    })?;
    print_coverage(&format!("{} (set NPE)", task.name()), names, &estimated);
    if task == SetTask::GaussianMean {
        let exact = coverage(&data, dim, |k| {
            let posterior = gaussian_mean::posterior(data.sets.set(k))?;
            Ok(posterior.sample(&mut PhiloxStream::new(k as u64, streams::TEST, 2), DRAWS))
        })?;
        print_coverage(&format!("{} (exact)", task.name()), names, &exact);
    }
    Ok(())
}

fn main() -> Result<()> {
    let start = Instant::now();
    let gaussian = SetTask::GaussianMean;
    let gaussian_model = train(gaussian, &gaussian.simulate_dataset(TRAIN_SETS, 1)?)?;
    let resonance = SetTask::Resonance;
    let resonance_model = train(resonance, &resonance.simulate_dataset(TRAIN_SETS, 2)?)?;

    shrinkage_table(&gaussian_model)?;

    println!(
        "\ncoverage of central intervals over {HELD_OUT} held-out datasets ({DRAWS} draws each)"
    );
    println!(
        "{:<30} {:<9} {:>6} {:>6} {:>6}",
        "task", "param", "50%", "68%", "95%"
    );
    calibration(gaussian, &gaussian_model, &["mu1", "mu2", "mu3"])?;
    calibration(resonance, &resonance_model, &["strength"])?;
    println!("\ntotal {:.0} s", start.elapsed().as_secs_f64());
    Ok(())
}
