//! The tape itself: accumulation into shared inputs, no-grad mode, parameters.

mod common;

use amortize::backend::{MatLayout, UnaryOp};
use amortize::{ParamStore, Tape, Tensor};
use common::randn;

#[test]
fn an_input_used_twice_gets_the_sum_of_both_gradients() {
    // f(x) = sum(x * x) + sum(3x): df/dx = 2x + 3, through two separate uses of x.
    let x0 = randn(&[4, 3], 1);
    let mut tape = Tape::new();
    let x = tape.leaf(x0.clone());
    let sq = tape.mul(x, x).unwrap();
    let lin = tape.scale(x, 3.0).unwrap();
    let s = tape.add(sq, lin).unwrap();
    let loss = tape
        .reduce_all(s, amortize::backend::Reduction::Sum)
        .unwrap();
    let grads = tape.backward(loss).unwrap();
    let g = grads.get(x).unwrap().to_vec().unwrap();
    for (gi, xi) in g.iter().zip(x0.to_vec().unwrap()) {
        assert!(
            (gi - (2.0 * xi + 3.0)).abs() < 1e-5,
            "{gi} vs {}",
            2.0 * xi + 3.0
        );
    }
}

#[test]
fn a_parameter_used_in_two_layers_accumulates() {
    // y = W·(W·x), loss = sum(y): the gradient of W sums over both uses.
    let mut store = ParamStore::new();
    let w0 = randn(&[3, 3], 2);
    let id = store.add("w", w0.clone()).unwrap();
    let x0 = randn(&[5, 3], 3);
    let mut tape = Tape::new();
    let w = tape.param(&store, id);
    let x = tape.constant(x0.clone());
    let h = tape.matmul(x, w, MatLayout::NT).unwrap();
    let y = tape.matmul(h, w, MatLayout::NT).unwrap();
    let loss = tape
        .reduce_all(y, amortize::backend::Reduction::Sum)
        .unwrap();
    let g = tape.backward(loss).unwrap().param_grads().unwrap();
    let gw = g.get(id).unwrap().to_vec().unwrap();

    // Central differences in f64 on the same function.
    let f = |w: &[f32]| -> f64 {
        let (x, w): (Vec<f64>, Vec<f64>) = (
            x0.to_vec().unwrap().iter().map(|&v| v as f64).collect(),
            w.iter().map(|&v| v as f64).collect(),
        );
        let apply = |rows: &[f64]| -> Vec<f64> {
            let mut out = Vec::with_capacity(rows.len());
            for r in rows.chunks(3) {
                for o in 0..3 {
                    out.push((0..3).map(|i| r[i] * w[o * 3 + i]).sum::<f64>());
                }
            }
            out
        };
        apply(&apply(&x)).iter().sum()
    };
    let w_vec = w0.to_vec().unwrap();
    for i in 0..9 {
        let (mut plus, mut minus) = (w_vec.clone(), w_vec.clone());
        plus[i] += 1e-2;
        minus[i] -= 1e-2;
        let fd = (f(&plus) - f(&minus)) / 2e-2;
        assert!(
            (gw[i] as f64 - fd).abs() < 1e-3 * fd.abs().max(1.0),
            "w[{i}]: {} vs {fd}",
            gw[i]
        );
    }
}

#[test]
fn no_grad_records_nothing_and_refuses_backward() {
    let mut store = ParamStore::new();
    let id = store.add("w", randn(&[4, 2], 4)).unwrap();
    let mut tape = Tape::no_grad();
    let w = tape.param(&store, id);
    let x = tape.constant(randn(&[3, 2], 5));
    let y = tape.matmul(x, w, MatLayout::NT).unwrap();
    let z = tape.unary(UnaryOp::Tanh, y).unwrap();
    assert!(!tape.is_recording());
    assert_eq!(tape.recorded_ops(), 0);
    assert_eq!(tape.value(z).shape(), &[3, 4]);
    assert!(tape.backward(z).is_err());
}

#[test]
fn backward_of_a_non_scalar_needs_a_seed_of_its_shape() {
    let mut tape = Tape::new();
    let x = tape.leaf(randn(&[2, 3], 6));
    let y = tape.unary(UnaryOp::Exp, x).unwrap();
    assert!(tape.backward(y).is_err(), "backward needs a scalar loss");
    assert!(tape.backward_with(y, Tensor::zeros(&[3, 2])).is_err());
    let grads = tape.backward_with(y, Tensor::full(&[2, 3], 1.0)).unwrap();
    let (g, yv) = (
        grads.get(x).unwrap().to_vec().unwrap(),
        tape.value(y).to_vec().unwrap(),
    );
    for (gi, yi) in g.iter().zip(yv) {
        assert!((gi - yi).abs() < 1e-6);
    }
}

#[test]
fn parameter_names_are_unique_keys() {
    let mut store = ParamStore::new();
    store.add("layer.weight", randn(&[2, 2], 7)).unwrap();
    let err = store.add("layer.weight", randn(&[2, 2], 8)).unwrap_err();
    assert!(err.to_string().contains("layer.weight"), "{err}");
    assert!(store.id("layer.weight").is_some());
    assert!(store.id("layer.bias").is_none());
}
