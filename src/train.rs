//! The minibatch loop: a seeded train/validation split, shuffled minibatches, Adam with a
//! cosine schedule and clipping, early stopping on the validation loss, and the best
//! parameters restored at the end.

use std::time::Instant;

use crate::autograd::{ParamStore, Tape, Var};
use crate::error::{Error, Result};
use crate::ops;
use crate::optim::{clip_grad_norm, Adam, AdamConfig, CosineSchedule};
use crate::rng::{streams, PhiloxStream};

/// How to train.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    /// Maximum number of passes over the training rows.
    pub epochs: usize,
    /// Rows per optimizer step.
    pub batch_size: usize,
    /// Share of rows held out for validation, in [0, 1). With 0 there is no early stopping.
    pub validation_fraction: f32,
    /// Epochs without a validation improvement before stopping.
    pub patience: usize,
    /// Smallest decrease of the validation loss that counts as an improvement.
    pub min_delta: f32,
    /// Seeds the split and the shuffles.
    pub seed: u64,
    /// Optimizer hyper-parameters; `optimizer.lr` is the schedule's peak.
    pub optimizer: AdamConfig,
    /// Warm-up steps of the cosine schedule.
    pub warmup_steps: usize,
    /// Learning rate at the end of the schedule, as a fraction of the peak.
    pub min_lr_fraction: f32,
    /// Clip the global gradient norm to this value, if set.
    pub clip_norm: Option<f32>,
    /// Keep an exponential moving average of the parameters with this decay per step
    /// (e.g. 0.999), validate it and return it instead of the raw parameters. Averaging
    /// out the last steps' noise is what diffusion models are usually sampled with.
    pub ema_decay: Option<f32>,
    /// Consecutive rows that belong together (the iid draws of one simulation) and so go
    /// to the same side of the train/validation split, lest validation see draws of a
    /// simulation that training saw; 1 splits row by row. Must divide the rows.
    pub rows_per_group: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 100,
            batch_size: 256,
            validation_fraction: 0.2,
            patience: 20,
            min_delta: 0.0,
            seed: 0,
            optimizer: AdamConfig::adam(1e-3),
            warmup_steps: 100,
            min_lr_fraction: 0.01,
            clip_norm: Some(5.0),
            ema_decay: None,
            rows_per_group: 1,
        }
    }
}

impl TrainConfig {
    fn validate(&self, rows: usize) -> Result<()> {
        let op = "train";
        if self.epochs == 0 || self.batch_size == 0 {
            return Err(Error::invalid(op, "epochs and batch_size must be positive"));
        }
        if self.patience == 0 {
            return Err(Error::invalid(op, "patience must be at least 1 epoch"));
        }
        if !(0.0..1.0).contains(&self.validation_fraction) {
            return Err(Error::invalid(
                op,
                format!(
                    "validation_fraction must be in [0, 1), got {}",
                    self.validation_fraction
                ),
            ));
        }
        if let Some(d) = self.ema_decay {
            if !(0.0..1.0).contains(&d) {
                return Err(Error::invalid(
                    op,
                    format!("ema_decay must be in [0, 1), got {d}"),
                ));
            }
        }
        if rows < 2 {
            return Err(Error::invalid(
                op,
                format!("needs at least 2 rows, got {rows}"),
            ));
        }
        if self.rows_per_group == 0 || rows % self.rows_per_group != 0 {
            return Err(Error::invalid(
                op,
                format!(
                    "{rows} rows do not split into groups of {} (rows_per_group)",
                    self.rows_per_group
                ),
            ));
        }
        Ok(())
    }
}

/// What happened in one epoch.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochReport {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean training loss over the epoch's minibatches (weighted by rows).
    pub train_loss: f32,
    /// Mean validation loss, if there is a validation split.
    pub validation_loss: Option<f32>,
    /// Learning rate at the epoch's last step.
    pub lr: f32,
    /// Whether this epoch set a new best (validation, or training loss without validation).
    pub improved: bool,
    /// Wall time of the epoch.
    pub seconds: f32,
}

/// The outcome of [`fit`].
#[derive(Clone, Debug)]
pub struct TrainReport {
    /// Every epoch's report.
    pub history: Vec<EpochReport>,
    /// The epoch whose parameters were kept.
    pub best_epoch: usize,
    /// Its loss (validation, or training without validation).
    pub best_loss: f32,
    /// Whether the patience ran out before `epochs`.
    pub stopped_early: bool,
    /// Optimizer steps taken.
    pub steps: usize,
}

/// Splits row indices `0..rows` into (train, validation) after a seeded shuffle of the
/// groups of `group` consecutive rows (1: of the rows), so a group's rows land on one
/// side; `group` divides `rows`.
pub fn train_validation_split(
    rows: usize,
    fraction: f32,
    seed: u64,
    group: usize,
) -> (Vec<u32>, Vec<u32>) {
    let groups = rows / group;
    let mut idx: Vec<u32> = (0..groups as u32).collect();
    PhiloxStream::new(seed, streams::SHUFFLE, u32::MAX).shuffle(&mut idx);
    let n_val = ((groups as f64) * fraction as f64).round() as usize;
    let n_val = n_val.min(groups - 1);
    let rows_of = |g: &[u32]| -> Vec<u32> {
        g.iter()
            .flat_map(|&g| g * group as u32..(g + 1) * group as u32)
            .collect()
    };
    let (validation, train) = idx.split_at(n_val);
    (rows_of(train), rows_of(validation))
}

/// Trains the parameters in `store` on `rows` rows of data.
///
/// `loss(tape, store, batch)` records the mean loss of the rows `batch` on `tape` and
/// returns it; on a [`Tape::no_grad`] tape (validation) it only computes it.
/// `on_epoch` sees each epoch's report (progress bars, logs). The best epoch's parameters
/// are restored before returning. A non-finite loss stops training with an error.
pub fn fit<F>(
    store: &mut ParamStore,
    rows: usize,
    cfg: &TrainConfig,
    mut loss: F,
    mut on_epoch: impl FnMut(&EpochReport),
) -> Result<TrainReport>
where
    F: FnMut(&mut Tape, &ParamStore, &[u32]) -> Result<Var>,
{
    cfg.validate(rows)?;
    let (mut train_rows, val_rows) =
        train_validation_split(rows, cfg.validation_fraction, cfg.seed, cfg.rows_per_group);
    let batches_per_epoch = train_rows.len().div_ceil(cfg.batch_size);
    let schedule = CosineSchedule {
        base_lr: cfg.optimizer.lr,
        min_lr: cfg.optimizer.lr * cfg.min_lr_fraction,
        warmup_steps: cfg.warmup_steps,
        total_steps: batches_per_epoch * cfg.epochs,
    };
    let mut adam = Adam::new(cfg.optimizer)?;
    let mut average = cfg.ema_decay.map(|_| store.clone());
    let mut best = (f32::INFINITY, 0usize, store.clone());
    let mut history = Vec::new();
    let mut bad_epochs = 0;
    let mut steps = 0;
    let mut lr = schedule.lr_at(0);
    for epoch in 1..=cfg.epochs {
        let start = Instant::now();
        PhiloxStream::new(cfg.seed, streams::SHUFFLE, epoch as u32).shuffle(&mut train_rows);
        let mut total = 0.0f64;
        for batch in train_rows.chunks(cfg.batch_size) {
            let mut tape = Tape::new();
            let l = loss(&mut tape, store, batch)?;
            let value = finite_loss(&tape, l, epoch)?;
            total += value as f64 * batch.len() as f64;
            let mut grads = tape.backward(l)?.param_grads()?;
            drop(tape);
            if let Some(max) = cfg.clip_norm {
                clip_grad_norm(&mut grads, max)?;
            }
            lr = schedule.lr_at(steps);
            adam.step(store, &grads, lr)?;
            if let (Some(avg), Some(decay)) = (average.as_mut(), cfg.ema_decay) {
                update_average(avg, store, decay)?;
            }
            steps += 1;
        }
        let train_loss = (total / train_rows.len() as f64) as f32;
        // With weight averaging the average is what is validated, kept and returned.
        let candidate: &ParamStore = average.as_ref().unwrap_or(store);
        let validation_loss = if val_rows.is_empty() {
            None
        } else {
            Some(evaluate(
                candidate,
                &val_rows,
                cfg.batch_size,
                epoch,
                &mut loss,
            )?)
        };
        let current = validation_loss.unwrap_or(train_loss);
        let improved = current < best.0 - cfg.min_delta;
        if improved {
            best = (current, epoch, candidate.clone());
            bad_epochs = 0;
        } else {
            bad_epochs += 1;
        }
        let report = EpochReport {
            epoch,
            train_loss,
            validation_loss,
            lr,
            improved,
            seconds: start.elapsed().as_secs_f32(),
        };
        on_epoch(&report);
        history.push(report);
        if validation_loss.is_some() && bad_epochs >= cfg.patience {
            break;
        }
    }
    let stopped_early = history.len() < cfg.epochs;
    let (best_loss, best_epoch, best_store) = best;
    *store = best_store;
    Ok(TrainReport {
        history,
        best_epoch,
        best_loss,
        stopped_early,
        steps,
    })
}

/// avg ← decay·avg + (1 − decay)·params, parameter by parameter.
fn update_average(avg: &mut ParamStore, params: &ParamStore, decay: f32) -> Result<()> {
    for (id, _, p) in params.iter() {
        let blended = ops::add(
            &ops::scale(avg.get(id), decay)?,
            &ops::scale(p, 1.0 - decay)?,
        )?;
        avg.set(id, blended)?;
    }
    Ok(())
}

/// The row-weighted mean loss over `rows`, without recording gradients.
fn evaluate<F>(
    store: &ParamStore,
    rows: &[u32],
    batch_size: usize,
    epoch: usize,
    loss: &mut F,
) -> Result<f32>
where
    F: FnMut(&mut Tape, &ParamStore, &[u32]) -> Result<Var>,
{
    let mut total = 0.0f64;
    for batch in rows.chunks(batch_size) {
        let mut tape = Tape::no_grad();
        let l = loss(&mut tape, store, batch)?;
        total += finite_loss(&tape, l, epoch)? as f64 * batch.len() as f64;
    }
    Ok((total / rows.len() as f64) as f32)
}

fn finite_loss(tape: &Tape, l: Var, epoch: usize) -> Result<f32> {
    let value = tape.value(l).item()?;
    if !value.is_finite() {
        return Err(Error::invalid(
            "train",
            format!(
                "loss is {value} in epoch {epoch}: training diverged (lower the learning rate?)"
            ),
        ));
    }
    Ok(value)
}
