//! Where the composed posterior's error comes from (gaussian10, 10⁴ simulations): for
//! three observation sets and n = 1, 8 (GAUSS composition, 100 levels), C2ST against the
//! analytic posterior, the error of the draws' mean in units of the true posterior
//! (Mahalanobis distance) and the range of the eigenvalues of Σ_true⁻¹·Σ_draws (all 1
//! when the covariance is right).
//!
//! Next to each, the same numbers for the best the *right* parametric family can do on
//! the same budget: q(θ | x) = N(A·[x, 1], S) fitted by least squares on the same 10⁴
//! pairs and composed exactly with the known prior. It bounds what any estimator that
//! does not know the simulator is linear-Gaussian can expect at this budget.
//!
//! Run: `cargo run --release --example score_compose -- MODEL_DIR [EPOCHS] [LR] [SEED]`
//! (trains the width-64 quickstart network into MODEL_DIR when it does not exist).

use amortize::diagnostics::c2st::c2st;
use amortize::estimators::{Composition, SamplingOptions, ScoreModel, ScoreTrainOptions};
use amortize::rng::{streams, PhiloxStream};
use amortize::samplers::gauss::covariance;
use amortize::tasks::Task;
use nalgebra::{DMatrix, DVector};

fn moments(draws: &[f32], d: usize) -> (DVector<f64>, DMatrix<f64>) {
    let rows = draws.len() / d;
    let mean = DVector::from_iterator(
        d,
        (0..d).map(|i| draws.chunks_exact(d).map(|r| r[i] as f64).sum::<f64>() / rows as f64),
    );
    (mean, DMatrix::from_row_slice(d, d, &covariance(draws, d)))
}

fn main() -> amortize::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().expect("MODEL_DIR"));
    let epochs: usize = args.next().map_or(150, |v| v.parse().unwrap());
    let lr: f32 = args.next().map_or(1e-3, |v| v.parse().unwrap());
    let seed: u64 = args.next().map_or(1, |v| v.parse().unwrap());
    let task = Task::Gaussian10;
    let d = task.dim_theta();
    let model = if dir.exists() {
        ScoreModel::load(&dir)?
    } else {
        let (theta, x) = task.simulate_dataset(10_000, 1);
        let mut options = ScoreTrainOptions {
            width: 64,
            ..Default::default()
        };
        options.train.epochs = epochs;
        options.train.seed = seed;
        options.train.optimizer.lr = lr;
        options.train.ema_decay = Some(0.999);
        let (model, report) = ScoreModel::train(
            &theta,
            &x,
            task.dim_x(),
            task.prior(),
            None,
            &options,
            |_| {},
        )?;
        println!(
            "trained {} epochs, best {} loss {:.4}",
            report.history.len(),
            report.best_epoch,
            report.best_loss
        );
        model.save(&dir)?;
        model
    };
    let plan = model.plan()?;
    // q(θ | x) = N(A·[x, 1], S) by least squares; for n observations and the N(0, I)
    // prior the composed posterior is Gaussian with precision n·S⁻¹ − (n − 1)·I.
    let (theta_all, x_all) = task.simulate_dataset(10_000, 1);
    let rows = theta_all.len() / d;
    let design = DMatrix::from_fn(rows, task.dim_x() + 1, |r, c| {
        if c < task.dim_x() {
            x_all[r * task.dim_x() + c] as f64
        } else {
            1.0
        }
    });
    let targets = DMatrix::from_fn(rows, d, |r, c| theta_all[r * d + c] as f64);
    let coef =
        (design.transpose() * &design).try_inverse().unwrap() * design.transpose() * &targets;
    let resid = &targets - &design * &coef;
    let s_inv = ((resid.transpose() * &resid) / (rows - task.dim_x() - 1) as f64)
        .try_inverse()
        .unwrap();
    let linear_gaussian = |obs: &[f32], n: usize, rng: &mut PhiloxStream| -> Vec<f32> {
        let mut precision = &s_inv * n as f64 - DMatrix::identity(d, d) * (n as f64 - 1.0);
        precision = (&precision + precision.transpose()) * 0.5;
        let mut rhs = DVector::zeros(d);
        for j in 0..n {
            let xj = DVector::from_fn(task.dim_x() + 1, |c, _| {
                if c < task.dim_x() {
                    obs[j * task.dim_x() + c] as f64
                } else {
                    1.0
                }
            });
            rhs += &s_inv * (coef.transpose() * xj);
        }
        let cov = precision.try_inverse().unwrap();
        let mean = &cov * rhs;
        let chol = cov.cholesky().unwrap().l();
        let mut z = vec![0.0f32; 10_000 * d];
        rng.fill_normal(0.0, 1.0, &mut z);
        z.chunks_exact(d)
            .flat_map(|zr| {
                let v = &mean + &chol * DVector::from_iterator(d, zr.iter().map(|&v| v as f64));
                v.iter().map(|&a| a as f32).collect::<Vec<_>>()
            })
            .collect()
    };
    for set in 0..3u32 {
        let mut rng = PhiloxStream::new(1 + set as u64, streams::TEST, 0);
        let true_theta = task.prior().sample(&mut rng, 1);
        let observations = task.simulate(&true_theta.repeat(8), &mut rng)?;
        for n in [1usize, 8] {
            let obs = &observations[..n * task.dim_x()];
            let reference = task
                .analytic_posterior(obs)?
                .sample(&mut PhiloxStream::new(7, streams::TEST, n as u32), 10_000);
            let (m_true, c_true) = moments(&reference, d);
            let l_inv = c_true
                .cholesky()
                .expect("covariance")
                .l()
                .try_inverse()
                .unwrap();
            // Mean error in the true posterior's units and the eigenvalues of
            // L⁻¹·Σ·L⁻ᵀ (Σ_true = L·Lᵀ): the same as those of Σ_true⁻¹·Σ, but symmetric.
            let report = |what: &str, draws: &[f32]| -> amortize::Result<()> {
                let (m, c) = moments(draws, d);
                let error = (&l_inv * (&m - &m_true)).norm();
                let ratio = (&l_inv * c * l_inv.transpose())
                    .symmetric_eigen()
                    .eigenvalues;
                println!(
                    "set {set} n {n} {what:>15}: c2st {:.3}  mean error {error:.3}  variance ratio {:.2}..{:.2}",
                    c2st(draws, &reference, d)?,
                    ratio.min(),
                    ratio.max(),
                );
                Ok(())
            };
            let fit = linear_gaussian(obs, n, &mut PhiloxStream::new(9, streams::TEST, n as u32));
            report("linear-Gaussian", &fit)?;
            let options = SamplingOptions {
                levels: 100,
                composition: Composition::Gauss { pilot_draws: 1000 },
                ..SamplingOptions::default()
            };
            let draws = model
                .sample_with_plan(&plan, obs, 10_000, &options, &|_| {})?
                .samples;
            report("score, GAUSS", &draws)?;
        }
    }
    Ok(())
}
