//! The minibatch loop: a small MLP fits a smooth function; early stopping restores the best.

use amortize::backend::UnaryOp;
use amortize::nn::{MlpShape, ResidualMlp};
use amortize::optim::AdamConfig;
use amortize::rng::{streams, PhiloxStream};
use amortize::train::{fit, TrainConfig};
use amortize::{ParamStore, Tape, Tensor};

fn rows_of(data: &[f32], cols: usize, batch: &[u32]) -> Tensor {
    let picked: Vec<f32> = batch
        .iter()
        .flat_map(|&r| {
            data[r as usize * cols..(r as usize + 1) * cols]
                .iter()
                .copied()
        })
        .collect();
    Tensor::from_vec(picked, &[batch.len(), cols]).unwrap()
}

#[test]
fn a_residual_mlp_fits_sin_2x() {
    const N: usize = 1024;
    let mut x = vec![0.0; N];
    PhiloxStream::new(1, streams::DATA, 0).fill_uniform(-2.0, 2.0, &mut x);
    let y: Vec<f32> = x.iter().map(|v| (2.0 * v).sin()).collect();
    let mut store = ParamStore::new();
    let mut rng = PhiloxStream::new(1, streams::INIT, 0);
    let net = ResidualMlp::new(
        &mut store,
        "net",
        MlpShape {
            in_features: 1,
            width: 32,
            out_features: 1,
            hidden_layers: 2,
            activation: UnaryOp::Silu,
        },
        &mut rng,
    )
    .unwrap();
    let cfg = TrainConfig {
        epochs: 150,
        batch_size: 64,
        optimizer: AdamConfig::adam(3e-3),
        warmup_steps: 20,
        patience: 30,
        ..TrainConfig::default()
    };
    let report = fit(
        &mut store,
        N,
        &cfg,
        |tape: &mut Tape, store: &ParamStore, batch: &[u32]| {
            let xb = tape.constant(rows_of(&x, 1, batch));
            let yb = tape.constant(rows_of(&y, 1, batch));
            let pred = net.forward(tape, store, xb)?;
            tape.mse(pred, yb)
        },
        |_| {},
    )
    .unwrap();
    // sin(2x) on [−2, 2] has variance ≈ 0.5; a validation MSE below 2e-3 means the net
    // explains > 99.5% of it, which a linear fit (MSE ≈ 0.3) or a net that stopped
    // learning early cannot reach.
    assert!(
        report.best_loss < 2e-3,
        "best validation MSE {}",
        report.best_loss
    );
    let first = report.history[0].validation_loss.unwrap();
    assert!(
        first > 10.0 * report.best_loss,
        "loss fell from {first} to {}",
        report.best_loss
    );
}

#[test]
fn early_stopping_on_noise_restores_the_best_parameters() {
    const N: usize = 256;
    let mut x = vec![0.0; N * 4];
    let mut y = vec![0.0; N];
    PhiloxStream::new(2, streams::DATA, 0).fill_normal(0.0, 1.0, &mut x);
    PhiloxStream::new(2, streams::DATA, 1).fill_normal(0.0, 1.0, &mut y);
    let mut store = ParamStore::new();
    let mut rng = PhiloxStream::new(2, streams::INIT, 0);
    let net = ResidualMlp::new(
        &mut store,
        "net",
        MlpShape {
            in_features: 4,
            width: 64,
            out_features: 1,
            hidden_layers: 2,
            activation: UnaryOp::Relu,
        },
        &mut rng,
    )
    .unwrap();
    let cfg = TrainConfig {
        epochs: 200,
        batch_size: 32,
        optimizer: AdamConfig::adam(1e-2),
        warmup_steps: 1,
        patience: 5,
        ..TrainConfig::default()
    };
    let mut loss = |tape: &mut Tape, store: &ParamStore, batch: &[u32]| {
        let xb = tape.constant(rows_of(&x, 4, batch));
        let yb = tape.constant(rows_of(&y, 1, batch));
        let pred = net.forward(tape, store, xb)?;
        tape.mse(pred, yb)
    };
    let report = fit(&mut store, N, &cfg, &mut loss, |_| {}).unwrap();
    // Targets are independent of inputs: the net overfits and validation stops improving.
    assert!(
        report.stopped_early,
        "ran all {} epochs",
        report.history.len()
    );
    assert_eq!(report.history.len(), report.best_epoch + cfg.patience);
    // The restored parameters reproduce the best validation loss.
    let (_, val_rows) =
        amortize::train::train_validation_split(N, cfg.validation_fraction, cfg.seed, 1);
    let mut tape = Tape::no_grad();
    let l = loss(&mut tape, &store, &val_rows).unwrap();
    let restored = tape.value(l).item().unwrap();
    assert!(
        (restored - report.best_loss).abs() < 1e-4 * report.best_loss.max(1.0),
        "{restored} vs {}",
        report.best_loss
    );
}

#[test]
fn a_diverging_loss_is_an_error_not_a_silent_nan() {
    let mut store = ParamStore::new();
    let id = store
        .add("w", Tensor::from_vec(vec![1.0], &[1, 1]).unwrap())
        .unwrap();
    let cfg = TrainConfig {
        epochs: 2,
        batch_size: 4,
        ..TrainConfig::default()
    };
    let err = fit(
        &mut store,
        8,
        &cfg,
        |tape: &mut Tape, store: &ParamStore, batch: &[u32]| {
            let w = tape.param(store, id);
            let nan = tape.constant(Tensor::full(&[batch.len(), 1], f32::NAN));
            let wide = tape.constant(Tensor::full(&[batch.len(), 1], 1.0));
            let pred = tape.matmul(wide, w, amortize::backend::MatLayout::NN)?;
            tape.mse(pred, nan)
        },
        |_| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("diverged"), "{err}");
}

#[test]
fn an_averaged_model_is_validated_and_returned() {
    const N: usize = 512;
    let mut x = vec![0.0; N];
    PhiloxStream::new(3, streams::DATA, 0).fill_uniform(-2.0, 2.0, &mut x);
    let y: Vec<f32> = x.iter().map(|v| (2.0 * v).sin()).collect();
    let mut store = ParamStore::new();
    let mut rng = PhiloxStream::new(3, streams::INIT, 0);
    let shape = MlpShape {
        in_features: 1,
        width: 32,
        out_features: 1,
        hidden_layers: 2,
        activation: UnaryOp::Silu,
    };
    let net = ResidualMlp::new(&mut store, "net", shape, &mut rng).unwrap();
    let mut loss = |tape: &mut Tape, store: &ParamStore, batch: &[u32]| {
        let xb = tape.constant(rows_of(&x, 1, batch));
        let yb = tape.constant(rows_of(&y, 1, batch));
        let pred = net.forward(tape, store, xb)?;
        tape.mse(pred, yb)
    };
    let bad = TrainConfig {
        ema_decay: Some(1.5),
        ..TrainConfig::default()
    };
    assert!(fit(&mut store.clone(), N, &bad, &mut loss, |_| {}).is_err());
    // An average that barely moves (decay 1 − 10⁻⁶ over ~80 steps keeps 99.99% of the
    // start) is what comes back, not the raw weights, which do move.
    let frozen = TrainConfig {
        epochs: 5,
        batch_size: 64,
        optimizer: AdamConfig::adam(3e-3),
        warmup_steps: 0,
        ema_decay: Some(1.0 - 1e-6),
        ..TrainConfig::default()
    };
    let mut averaged = store.clone();
    fit(&mut averaged, N, &frozen, &mut loss, |_| {}).unwrap();
    let raw_cfg = TrainConfig {
        ema_decay: None,
        ..frozen
    };
    let mut raw = store.clone();
    fit(&mut raw, N, &raw_cfg, &mut loss, |_| {}).unwrap();
    let moved = |s: &ParamStore| -> f32 {
        s.iter()
            .zip(store.iter())
            .flat_map(|((_, _, a), (_, _, b))| {
                let (a, b) = (a.to_vec().unwrap(), b.to_vec().unwrap());
                a.iter()
                    .zip(b)
                    .map(|(x, y)| (x - y).abs())
                    .collect::<Vec<_>>()
            })
            .fold(0.0, f32::max)
    };
    assert!(
        moved(&averaged) < 1e-4,
        "averaged weights moved {}",
        moved(&averaged)
    );
    assert!(moved(&raw) > 1e-2, "raw weights moved only {}", moved(&raw));
    let cfg = TrainConfig {
        epochs: 150,
        batch_size: 64,
        optimizer: AdamConfig::adam(3e-3),
        warmup_steps: 20,
        ema_decay: Some(0.99),
        ..TrainConfig::default()
    };
    let report = fit(&mut store, N, &cfg, &mut loss, |_| {}).unwrap();
    // The same bar as the raw-weights fit above, with a little slack for the average
    // lagging the raw weights by ~100 steps.
    assert!(
        report.best_loss < 5e-3,
        "best validation MSE {}",
        report.best_loss
    );
    // What was returned is what was validated: recomputing gives the best loss.
    let (_, val_rows) =
        amortize::train::train_validation_split(N, cfg.validation_fraction, cfg.seed, 1);
    let mut tape = Tape::no_grad();
    let l = loss(&mut tape, &store, &val_rows).unwrap();
    assert!((tape.value(l).item().unwrap() - report.best_loss).abs() < 1e-5);
}

#[test]
fn a_split_by_groups_keeps_each_group_on_one_side_and_by_rows_mixes_them() {
    use amortize::train::train_validation_split;
    let (rows, group) = (400, 4);
    let (train, validation) = train_validation_split(rows, 0.2, 7, group);
    assert_eq!((train.len(), validation.len()), (320, 80));
    let mut all: Vec<u32> = train.iter().chain(&validation).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..rows as u32).collect::<Vec<_>>());
    let side = |r: u32| validation.contains(&r);
    for g in 0..(rows / group) as u32 {
        let first = side(g * 4);
        assert!((g * 4..g * 4 + 4).all(|r| side(r) == first), "group {g}");
    }
    // Row by row, some group of four straddles the split (what grouping prevents).
    let (_, by_rows) = train_validation_split(rows, 0.2, 7, 1);
    assert!((0..(rows / group) as u32).any(|g| {
        let inside = (g * 4..g * 4 + 4).filter(|r| by_rows.contains(r)).count();
        inside > 0 && inside < 4
    }));
}

#[test]
fn groups_that_do_not_divide_the_rows_are_an_error() {
    let mut store = ParamStore::new();
    let cfg = TrainConfig {
        rows_per_group: 3,
        ..TrainConfig::default()
    };
    let err = fit(&mut store, 10, &cfg, |_, _, _| unreachable!(), |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("groups of 3"), "{err}");
}
