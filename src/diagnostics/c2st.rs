//! Classifier two-sample test (C2ST) as sbibm computes it (Lueckmann et al. 2021,
//! `sbibm/metrics/c2st.py`), trained on the crate's own tape.
//!
//! 1. Both sets are z-scored with the mean and standard deviation (ddof 1) of the
//!    *first* set `x` (the reference, e.g. true posterior samples).
//! 2. The rows are labelled 0 (`x`) and 1 (`y`), pooled, shuffled with the seed and
//!    split into `folds` (5) folds (sklearn's `KFold(shuffle=True)`).
//! 3. For each fold an MLP with two hidden ReLU layers of `10 · dim` units and one logit
//!    output is trained with Adam (lr 1e-3, minibatches of 200, as sklearn's
//!    `MLPClassifier` defaults) on the other folds by binary cross-entropy, written with
//!    existing tape ops as `softplus(logit) - y · logit` (the mean over rows).
//! 4. The result is the mean held-out accuracy over the folds: 0.5 when the sets are
//!    indistinguishable, 1 when they are perfectly separated.
//!
//! Departures from sbibm, for speed (it is run on 10⁴ vs 10⁴ samples in benchmarks):
//! sklearn trains up to 10 000 epochs and stops when the *training* loss has not
//! improved by 1e-4 for 10 epochs; here training stops when a held-out 10% of the
//! training folds has not improved for [`C2stConfig::patience`] epochs, or after
//! [`C2stConfig::max_epochs`] (default 100), and the best epoch's weights are used
//! (via [`crate::train::fit`], with a constant learning rate). sklearn's L2 penalty
//! (alpha = 1e-4) is omitted. Sets larger than [`C2stConfig::max_samples`] are
//! subsampled (seeded, without replacement). Folds train in parallel with rayon.

use rayon::prelude::*;

use crate::autograd::{ParamStore, Tape, Var};
use crate::backend::{Reduction, UnaryOp};
use crate::error::{Error, Result};
use crate::nn::Linear;
use crate::optim::AdamConfig;
use crate::rng::{streams, PhiloxStream};
use crate::tensor::Tensor;
use crate::train::{fit, TrainConfig};

/// How to run the test; [`Default`] gives the values documented on each field.
#[derive(Clone, Debug, PartialEq)]
pub struct C2stConfig {
    /// Number of cross-validation folds (5, as sbibm).
    pub folds: usize,
    /// Hidden width = `hidden_factor · dim` (10, as sbibm).
    pub hidden_factor: usize,
    /// Use at most this many rows of each set (seeded subsample); `None` uses all.
    /// Default `Some(10_000)`: sbibm's 10⁴ vs 10⁴ is never truncated.
    pub max_samples: Option<usize>,
    /// Most epochs per fold (100).
    pub max_epochs: usize,
    /// Epochs without a validation improvement before a fold stops (10, sklearn's
    /// `n_iter_no_change`).
    pub patience: usize,
    /// Minibatch size (200, sklearn's `min(200, n)`).
    pub batch_size: usize,
    /// Adam learning rate (1e-3, sklearn's default).
    pub lr: f32,
    /// Share of each fold's training rows held out for early stopping (0.1).
    pub validation_fraction: f32,
    /// Seeds the subsample, the folds, the initialization and the minibatches (1, as
    /// sbibm's `seed=1`).
    pub seed: u64,
    /// z-score both sets by the first set's statistics (true, as sbibm).
    pub z_score: bool,
}

impl Default for C2stConfig {
    fn default() -> Self {
        C2stConfig {
            folds: 5,
            hidden_factor: 10,
            max_samples: Some(10_000),
            max_epochs: 100,
            patience: 10,
            batch_size: 200,
            lr: 1e-3,
            validation_fraction: 0.1,
            seed: 1,
            z_score: true,
        }
    }
}

/// The outcome of [`c2st_with`].
#[derive(Clone, Debug, PartialEq)]
pub struct C2stReport {
    /// Mean held-out accuracy over the folds.
    pub accuracy: f64,
    /// Held-out accuracy of each fold.
    pub fold_accuracies: Vec<f64>,
    /// Rows used from `x` and from `y` (after subsampling).
    pub samples_used: (usize, usize),
    /// Epochs each fold trained for.
    pub epochs: Vec<usize>,
}

/// C2ST accuracy of `x` vs `y` (rows of `dim` values) with [`C2stConfig::default`].
pub fn c2st(x: &[f32], y: &[f32], dim: usize) -> Result<f64> {
    Ok(c2st_with(x, y, dim, &C2stConfig::default())?.accuracy)
}

/// Checks a sample set: whole rows, at least `min_rows`, all finite.
pub(crate) fn check_set(
    op: &'static str,
    name: &str,
    s: &[f32],
    dim: usize,
    min_rows: usize,
) -> Result<usize> {
    if dim == 0 {
        return Err(Error::invalid(op, "dim must be positive"));
    }
    if s.len() % dim != 0 {
        return Err(Error::shape_because(
            op,
            &[s.len()],
            &[dim],
            &format!("{name} must be rows of {dim} values"),
        ));
    }
    let rows = s.len() / dim;
    if rows < min_rows {
        return Err(Error::invalid(
            op,
            format!("{name} has {rows} rows; at least {min_rows} are needed"),
        ));
    }
    let bad = s
        .chunks(dim)
        .filter(|r| r.iter().any(|v| !v.is_finite()))
        .count();
    if bad > 0 {
        let first = s.chunks(dim).position(|r| r.iter().any(|v| !v.is_finite()));
        return Err(Error::invalid(
            op,
            format!(
                "{name} has {bad} rows with NaN or inf (first: row {})",
                first.unwrap_or(0)
            ),
        ));
    }
    Ok(rows)
}

/// A seeded subsample of at most `max` rows (all rows, in order, if there are fewer).
pub(crate) fn subsample(
    s: &[f32],
    dim: usize,
    max: Option<usize>,
    rng: &mut PhiloxStream,
) -> Vec<f32> {
    let rows = s.len() / dim;
    match max {
        Some(m) if rows > m => {
            let mut idx: Vec<u32> = (0..rows as u32).collect();
            rng.shuffle(&mut idx);
            let mut keep = idx[..m].to_vec();
            keep.sort_unstable();
            keep.iter()
                .flat_map(|&r| s[r as usize * dim..(r as usize + 1) * dim].iter().copied())
                .collect()
        }
        _ => s.to_vec(),
    }
}

struct Classifier {
    layers: [Linear; 3],
}

impl Classifier {
    fn new(
        store: &mut ParamStore,
        dim: usize,
        hidden: usize,
        rng: &mut PhiloxStream,
    ) -> Result<Self> {
        Ok(Classifier {
            layers: [
                Linear::new(store, "c2st.0", dim, hidden, true, rng)?,
                Linear::new(store, "c2st.1", hidden, hidden, true, rng)?,
                Linear::new(store, "c2st.2", hidden, 1, true, rng)?,
            ],
        })
    }

    /// Logits `[rows, 1]`.
    fn forward(&self, tape: &mut Tape, store: &ParamStore, x: Var) -> Result<Var> {
        let h = self.layers[0].forward(tape, store, x)?;
        let h = tape.unary(UnaryOp::Relu, h)?;
        let h = self.layers[1].forward(tape, store, h)?;
        let h = tape.unary(UnaryOp::Relu, h)?;
        self.layers[2].forward(tape, store, h)
    }
}

/// C2ST with an explicit configuration; see the module docs.
pub fn c2st_with(x: &[f32], y: &[f32], dim: usize, cfg: &C2stConfig) -> Result<C2stReport> {
    let op = "c2st";
    if cfg.folds < 2 || cfg.hidden_factor == 0 || cfg.max_epochs == 0 || cfg.batch_size == 0 {
        return Err(Error::invalid(
            op,
            format!(
                "folds must be >= 2 and hidden_factor, max_epochs, batch_size positive: {cfg:?}"
            ),
        ));
    }
    let min_rows = cfg.folds;
    check_set(op, "first sample set", x, dim, min_rows)?;
    check_set(op, "second sample set", y, dim, min_rows)?;
    let x = subsample(
        x,
        dim,
        cfg.max_samples,
        &mut PhiloxStream::new(cfg.seed, streams::TEST, 0),
    );
    let y = subsample(
        y,
        dim,
        cfg.max_samples,
        &mut PhiloxStream::new(cfg.seed, streams::TEST, 1),
    );
    let (nx, ny) = (x.len() / dim, y.len() / dim);

    // z-score by the first set (ddof 1, as torch.std); a constant column keeps scale 1.
    let mut mean = vec![0.0f64; dim];
    let mut scale = vec![1.0f64; dim];
    if cfg.z_score {
        for r in x.chunks(dim) {
            for (m, &v) in mean.iter_mut().zip(r) {
                *m += v as f64;
            }
        }
        mean.iter_mut().for_each(|m| *m /= nx as f64);
        let mut var = vec![0.0f64; dim];
        for r in x.chunks(dim) {
            for i in 0..dim {
                var[i] += (r[i] as f64 - mean[i]).powi(2);
            }
        }
        for i in 0..dim {
            let sd = (var[i] / (nx.max(2) - 1) as f64).sqrt();
            scale[i] = if sd > 0.0 { sd } else { 1.0 };
        }
    }
    let n = nx + ny;
    let mut data = Vec::with_capacity(n * dim);
    for r in x.chunks(dim).chain(y.chunks(dim)) {
        for i in 0..dim {
            data.push(((r[i] as f64 - mean[i]) / scale[i]) as f32);
        }
    }
    let labels: Vec<f32> = (0..n).map(|k| if k < nx { 0.0 } else { 1.0 }).collect();

    // KFold(shuffle=True): a seeded permutation cut into folds whose sizes differ by ≤ 1.
    let mut perm: Vec<u32> = (0..n as u32).collect();
    PhiloxStream::new(cfg.seed, streams::SHUFFLE, u32::MAX - 1).shuffle(&mut perm);
    let folds: Vec<Vec<u32>> = (0..cfg.folds)
        .map(|f| {
            let (lo, hi) = (f * n / cfg.folds, (f + 1) * n / cfg.folds);
            perm[lo..hi].to_vec()
        })
        .collect();

    let results: Vec<Result<(f64, usize)>> = (0..cfg.folds)
        .into_par_iter()
        .map(|f| {
            let train: Vec<u32> = folds
                .iter()
                .enumerate()
                .filter(|&(g, _)| g != f)
                .flat_map(|(_, idx)| idx.iter().copied())
                .collect();
            run_fold(&data, &labels, dim, &train, &folds[f], f, cfg)
        })
        .collect();
    let mut fold_accuracies = Vec::with_capacity(cfg.folds);
    let mut epochs = Vec::with_capacity(cfg.folds);
    for r in results {
        let (acc, ep) = r?;
        fold_accuracies.push(acc);
        epochs.push(ep);
    }
    let accuracy = fold_accuracies.iter().sum::<f64>() / cfg.folds as f64;
    Ok(C2stReport {
        accuracy,
        fold_accuracies,
        samples_used: (nx, ny),
        epochs,
    })
}

fn gather(data: &[f32], dim: usize, idx: &[u32]) -> Vec<f32> {
    idx.iter()
        .flat_map(|&r| {
            data[r as usize * dim..(r as usize + 1) * dim]
                .iter()
                .copied()
        })
        .collect()
}

/// Trains on `train` rows, returns (held-out accuracy on `test`, epochs trained).
fn run_fold(
    data: &[f32],
    labels: &[f32],
    dim: usize,
    train: &[u32],
    test: &[u32],
    fold: usize,
    cfg: &C2stConfig,
) -> Result<(f64, usize)> {
    let train_x = Tensor::from_vec(gather(data, dim, train), &[train.len(), dim])?;
    let train_y = Tensor::from_vec(gather(labels, 1, train), &[train.len(), 1])?;
    let mut store = ParamStore::new();
    let mut rng = PhiloxStream::new(cfg.seed, streams::INIT, fold as u32);
    let net = Classifier::new(&mut store, dim, cfg.hidden_factor * dim, &mut rng)?;
    let train_cfg = TrainConfig {
        epochs: cfg.max_epochs,
        batch_size: cfg.batch_size,
        validation_fraction: cfg.validation_fraction,
        patience: cfg.patience,
        min_delta: 0.0,
        seed: cfg.seed.wrapping_add(fold as u64 + 1),
        optimizer: AdamConfig::adam(cfg.lr),
        warmup_steps: 0,
        min_lr_fraction: 1.0,
        clip_norm: None,
        ema_decay: None,
        rows_per_group: 1,
    };
    let report = fit(
        &mut store,
        train.len(),
        &train_cfg,
        |tape, store, batch| {
            let xv = tape.constant(train_x.clone());
            let xb = tape.gather_rows(xv, batch)?;
            let yv = tape.constant(train_y.clone());
            let yb = tape.gather_rows(yv, batch)?;
            let logit = net.forward(tape, store, xb)?;
            // BCE(logit, y) = softplus(logit) - y · logit.
            let sp = tape.unary(UnaryOp::Softplus, logit)?;
            let yl = tape.mul(yb, logit)?;
            let l = tape.sub(sp, yl)?;
            tape.reduce_all(l, Reduction::Mean)
        },
        |_| {},
    )?;
    let test_x = Tensor::from_vec(gather(data, dim, test), &[test.len(), dim])?;
    let mut tape = Tape::no_grad();
    let xv = tape.constant(test_x);
    let logits = net.forward(&mut tape, &store, xv)?;
    let logits = tape.value(logits).to_vec()?;
    let correct = logits
        .iter()
        .zip(test)
        .filter(|(&l, &r)| (l > 0.0) == (labels[r as usize] > 0.5))
        .count();
    Ok((correct as f64 / test.len() as f64, report.history.len()))
}
