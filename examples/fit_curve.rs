//! Trains a residual MLP on y = sin(2x) + noise with the tape, Adam, a cosine schedule and
//! early stopping, then prints the validation MSE per epoch and the training throughput.
//!
//! Run: `cargo run --release --example fit_curve`

use std::time::Instant;

use amortize::backend::UnaryOp;
use amortize::nn::{MlpShape, ResidualMlp};
use amortize::optim::AdamConfig;
use amortize::rng::{streams, PhiloxStream};
use amortize::train::{fit, TrainConfig};
use amortize::{ParamStore, Result, Tape, Tensor};

const ROWS: usize = 8192;
const NOISE_STD: f32 = 0.1;

fn main() -> Result<()> {
    let mut x = vec![0.0; ROWS];
    let mut noise = vec![0.0; ROWS];
    PhiloxStream::new(0, streams::DATA, 0).fill_uniform(-3.0, 3.0, &mut x);
    PhiloxStream::new(0, streams::DATA, 1).fill_normal(0.0, NOISE_STD, &mut noise);
    let y: Vec<f32> = x
        .iter()
        .zip(&noise)
        .map(|(v, e)| (2.0 * v).sin() + e)
        .collect();

    let mut store = ParamStore::new();
    let mut rng = PhiloxStream::new(0, streams::INIT, 0);
    let net = ResidualMlp::new(
        &mut store,
        "net",
        MlpShape {
            in_features: 1,
            width: 64,
            out_features: 1,
            hidden_layers: 3,
            activation: UnaryOp::Silu,
        },
        &mut rng,
    )?;
    println!("residual MLP: {} parameters", store.num_scalars());

    let cfg = TrainConfig {
        epochs: 60,
        batch_size: 128,
        optimizer: AdamConfig::adam(3e-3),
        patience: 10,
        ..TrainConfig::default()
    };
    let pick = |data: &[f32], batch: &[u32]| {
        let rows: Vec<f32> = batch.iter().map(|&r| data[r as usize]).collect();
        Tensor::from_vec(rows, &[batch.len(), 1])
    };
    let start = Instant::now();
    let report = fit(
        &mut store,
        ROWS,
        &cfg,
        |tape: &mut Tape, store: &ParamStore, batch: &[u32]| {
            let xb = tape.constant(pick(&x, batch)?);
            let yb = tape.constant(pick(&y, batch)?);
            let pred = net.forward(tape, store, xb)?;
            tape.mse(pred, yb)
        },
        |e| {
            if e.epoch % 5 == 0 || e.epoch == 1 {
                println!(
                    "epoch {:3}  train {:.5}  validation {:.5}  lr {:.2e}",
                    e.epoch,
                    e.train_loss,
                    e.validation_loss.unwrap_or(f32::NAN),
                    e.lr
                );
            }
        },
    )?;
    let seconds = start.elapsed().as_secs_f64();
    let rows_seen = report.steps as f64 * cfg.batch_size as f64;
    println!(
        "best validation MSE {:.5} at epoch {} (noise floor {:.5}); {} steps in {:.2} s, {:.0} rows/s",
        report.best_loss,
        report.best_epoch,
        NOISE_STD * NOISE_STD,
        report.steps,
        seconds,
        rows_seen / seconds
    );
    Ok(())
}
