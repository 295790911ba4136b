//! Adam, AdamW, the cosine schedule and clipping against values computed by hand.

use amortize::backend::Reduction;
use amortize::optim::{clip_grad_norm, Adam, AdamConfig, CosineSchedule};
use amortize::{ParamStore, Tape, Tensor};

/// Gradients of loss = sum(p ⊙ g) with respect to each parameter are exactly `g`.
fn grads_equal_to(store: &ParamStore, g: &[(&str, Vec<f32>)]) -> amortize::autograd::ParamGrads {
    let mut tape = Tape::new();
    let mut terms = Vec::new();
    for (name, values) in g {
        let id = store.id(name).unwrap();
        let p = tape.param(store, id);
        let c = tape.constant(Tensor::from_vec(values.clone(), store.get(id).shape()).unwrap());
        let prod = tape.mul(p, c).unwrap();
        terms.push(tape.reduce_all(prod, Reduction::Sum).unwrap());
    }
    let mut loss = terms[0];
    for &t in &terms[1..] {
        loss = tape.add(loss, t).unwrap();
    }
    tape.backward(loss).unwrap().param_grads().unwrap()
}

/// Adam's update computed by hand: m, v, bias correction, step.
fn adam_by_hand(p: f64, grads: &[f64], lr: f64, wd: f64, decoupled: bool) -> f64 {
    let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
    let (mut p, mut m, mut v) = (p, 0.0, 0.0);
    for (t, &g) in grads.iter().enumerate() {
        let t = t as i32 + 1;
        let g = if decoupled { g } else { g + wd * p };
        if decoupled {
            p -= lr * wd * p;
        }
        m = b1 * m + (1.0 - b1) * g;
        v = b2 * v + (1.0 - b2) * g * g;
        let m_hat = m / (1.0 - b1.powi(t));
        let v_hat = v / (1.0 - b2.powi(t));
        p -= lr * m_hat / (v_hat.sqrt() + eps);
    }
    p
}

#[test]
fn adam_first_steps_match_the_hand_computation() {
    let mut store = ParamStore::new();
    store
        .add("p", Tensor::from_vec(vec![1.0, -2.0], &[2]).unwrap())
        .unwrap();
    let mut adam = Adam::new(AdamConfig::adam(0.1)).unwrap();
    let seq = [[0.5, 2.0], [-1.0, 0.25], [0.3, -4.0]];
    for g in seq {
        let grads = grads_equal_to(&store, &[("p", g.to_vec())]);
        adam.step(&mut store, &grads, 0.1).unwrap();
    }
    // Step one by hand: m̂ = g, v̂ = g², so p moves by exactly lr: 1 → 0.9.
    // Step two: m = 0.9·0.05 − 0.1 = −0.055, v = 0.999·0.00025 + 0.001 = 0.00124975,
    // m̂ = −0.055/0.19, v̂ = 0.00124975/0.001999 → p = 0.9 + 0.1·0.289474/0.790688 ≈ 0.936610.
    let after_two = 0.9 + 0.1 * (0.055 / 0.19) / (0.001_249_75f64 / 0.001_999).sqrt();
    assert!((after_two - 0.936_610).abs() < 1e-6);
    assert!((adam_by_hand(1.0, &[0.5, -1.0], 0.1, 0.0, false) - after_two).abs() < 1e-7);
    let p = store.get(store.id("p").unwrap()).to_vec().unwrap();
    for (i, &start) in [1.0, -2.0].iter().enumerate() {
        let g: Vec<f64> = seq.iter().map(|s| s[i] as f64).collect();
        let expected = adam_by_hand(start, &g, 0.1, 0.0, false);
        assert!(
            (p[i] as f64 - expected).abs() < 1e-5,
            "p[{i}] = {} vs {expected}",
            p[i]
        );
    }
    assert_eq!(adam.steps(), 3);
}

#[test]
fn adamw_decays_decoupled_and_adam_couples_the_l2_term() {
    for (config, decoupled) in [
        (AdamConfig::adamw(0.1, 0.5), true),
        (
            AdamConfig {
                weight_decay: 0.5,
                ..AdamConfig::adam(0.1)
            },
            false,
        ),
    ] {
        let mut store = ParamStore::new();
        store
            .add("p", Tensor::from_vec(vec![2.0], &[1]).unwrap())
            .unwrap();
        let mut adam = Adam::new(config).unwrap();
        for g in [0.5f32, -0.2] {
            let grads = grads_equal_to(&store, &[("p", vec![g])]);
            adam.step(&mut store, &grads, 0.1).unwrap();
        }
        let p = store.get(store.id("p").unwrap()).item().unwrap() as f64;
        let expected = adam_by_hand(2.0, &[0.5, -0.2], 0.1, 0.5, decoupled);
        assert!(
            (p - expected).abs() < 1e-5,
            "decoupled={decoupled}: {p} vs {expected}"
        );
    }
    // The two forms differ: AdamW's first step is 2 − 0.1·0.5·2 − 0.1 = 1.8, Adam+L2's 1.9.
    assert!((adam_by_hand(2.0, &[0.5], 0.1, 0.5, true) - 1.8).abs() < 1e-7);
    assert!((adam_by_hand(2.0, &[0.5], 0.1, 0.5, false) - 1.9).abs() < 1e-7);
}

#[test]
fn adam_rejects_invalid_hyper_parameters() {
    assert!(Adam::new(AdamConfig {
        beta1: 1.0,
        ..AdamConfig::adam(0.1)
    })
    .is_err());
    assert!(Adam::new(AdamConfig {
        eps: 0.0,
        ..AdamConfig::adam(0.1)
    })
    .is_err());
    assert!(Adam::new(AdamConfig::adam(-1.0)).is_err());
}

#[test]
fn cosine_schedule_warms_up_then_decays_to_the_floor() {
    let s = CosineSchedule {
        base_lr: 1.0,
        min_lr: 0.1,
        warmup_steps: 4,
        total_steps: 14,
    };
    let lrs: Vec<f32> = (0..20).map(|t| s.lr_at(t)).collect();
    assert_eq!(&lrs[..4], &[0.25, 0.5, 0.75, 1.0]);
    assert!((lrs[4] - 1.0).abs() < 1e-6);
    // Halfway through the cosine (step 4 + 5): min + (max − min)/2.
    assert!((lrs[9] - 0.55).abs() < 1e-6, "{}", lrs[9]);
    assert!(lrs[4..15].windows(2).all(|w| w[1] <= w[0]));
    assert!(lrs[14..].iter().all(|&l| (l - 0.1).abs() < 1e-6));
}

#[test]
fn clipping_scales_to_the_global_norm_only_when_above_it() {
    let mut store = ParamStore::new();
    store.add("a", Tensor::zeros(&[2])).unwrap();
    store.add("b", Tensor::zeros(&[1])).unwrap();
    // Global norm of (3, 0) and (4): 5.
    let mut grads = grads_equal_to(&store, &[("a", vec![3.0, 0.0]), ("b", vec![4.0])]);
    assert!((clip_grad_norm(&mut grads, 10.0).unwrap() - 5.0).abs() < 1e-6);
    assert!((grads.global_norm().unwrap() - 5.0).abs() < 1e-6);
    assert!((clip_grad_norm(&mut grads, 1.0).unwrap() - 5.0).abs() < 1e-6);
    let a = grads.get(store.id("a").unwrap()).unwrap().to_vec().unwrap();
    assert!((a[0] - 0.6).abs() < 1e-6 && a[1] == 0.0);
    let mut nan = grads_equal_to(&store, &[("a", vec![f32::NAN, 0.0]), ("b", vec![1.0])]);
    assert!(clip_grad_norm(&mut nan, 1.0).is_err());
}
