//! Every op's backward against central finite differences of its forward, through the
//! tape (so the tape's wiring is checked with the backend's backward kernels).
//!
//! The scalar checked is L = Σ seed·y with a fixed random seed tensor, accumulated in
//! f64 from the f32 outputs. With step h = 1e-2 the truncation error is O(h²·f''') ≈ 1e-4
//! and the rounding error ≈ 1e-7·|L|/h ≈ 1e-4 for our sizes, so |numeric − analytic| ≤
//! 3e-3 + 1e-2·|analytic| separates a right gradient from a wrong one (a wrong gradient
//! is off by O(1)). Inputs of kinked ops (relu) stay away from the kink.

mod common;

use amortize::backend::{BinaryOp, MatLayout, Reduction, UnaryOp};
use amortize::{Result, Tape, Tensor, Var};
use common::{grad_check, randn, uniform};

/// Elements checked per input (evenly spread), to keep the test fast on big inputs.
const MAX_CHECKED: usize = 48;

/// Checks the gradients of `f` with respect to every input.
fn check(name: &str, inputs: &[Tensor], f: impl Fn(&mut Tape, &[Var]) -> Result<Var>) {
    grad_check(name, inputs, MAX_CHECKED, f);
}

/// A tensor whose entries are at least 0.2 away from 0 (for relu's kink).
fn away_from_zero(shape: &[usize], seed: u64) -> Tensor {
    let v: Vec<f32> = randn(shape, seed)
        .to_vec()
        .unwrap()
        .into_iter()
        .map(|x| {
            if x.abs() < 0.2 {
                x.signum() * 0.2 + x
            } else {
                x
            }
        })
        .collect();
    Tensor::from_vec(v, shape).unwrap()
}

#[test]
fn matmul_all_layouts() {
    let cases = [
        (MatLayout::NN, [5, 7], [7, 3]),
        (MatLayout::NT, [5, 7], [3, 7]),
        (MatLayout::TN, [7, 5], [7, 3]),
    ];
    for (layout, sa, sb) in cases {
        check(
            &format!("matmul {layout:?}"),
            &[randn(&sa, 1), randn(&sb, 2)],
            |t, v| t.matmul(v[0], v[1], layout),
        );
    }
}

#[test]
fn batched_matmul_all_layouts() {
    let cases = [
        (MatLayout::NN, [3, 4, 6], [3, 6, 5]),
        (MatLayout::NT, [3, 4, 6], [3, 5, 6]),
        (MatLayout::TN, [3, 6, 4], [3, 6, 5]),
    ];
    for (layout, sa, sb) in cases {
        check(
            &format!("bmm {layout:?}"),
            &[randn(&sa, 3), randn(&sb, 4)],
            |t, v| t.matmul(v[0], v[1], layout),
        );
    }
}

#[test]
fn binary_ops_same_shape_and_broadcast() {
    for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div] {
        // Division needs a denominator away from 0.
        let b = uniform(&[4, 6], 0.5, 2.0, 5);
        check(
            &format!("{op:?} same shape"),
            &[randn(&[4, 6], 6), b],
            |t, v| t.binary(op, v[0], v[1]),
        );
        for bias_shape in [vec![6], vec![1, 6]] {
            let b = uniform(&bias_shape, 0.5, 2.0, 7);
            check(
                &format!("{op:?} broadcast {bias_shape:?}"),
                &[randn(&[4, 6], 8), b],
                |t, v| t.binary(op, v[0], v[1]),
            );
        }
        let b3 = uniform(&[5], 0.5, 2.0, 9);
        check(
            &format!("{op:?} broadcast over rank 3"),
            &[randn(&[2, 3, 5], 10), b3],
            |t, v| t.binary(op, v[0], v[1]),
        );
    }
}

#[test]
fn scale_and_reshape() {
    check("scale", &[randn(&[3, 4], 11)], |t, v| t.scale(v[0], -1.7));
    check("reshape", &[randn(&[3, 4], 12)], |t, v| {
        let r = t.reshape(v[0], &[2, 6])?;
        t.unary(UnaryOp::Tanh, r)
    });
}

#[test]
fn unary_ops() {
    for op in UnaryOp::ALL {
        let x = match op {
            UnaryOp::Log => uniform(&[4, 5], 0.3, 3.0, 13),
            UnaryOp::Relu => away_from_zero(&[4, 5], 14),
            _ => randn(&[4, 5], 15),
        };
        check(op.name(), &[x], |t, v| t.unary(op, v[0]));
    }
}

#[test]
fn concat_and_split() {
    check(
        "concat",
        &[randn(&[3, 2], 16), randn(&[3, 5], 17), randn(&[3, 1], 18)],
        |t, v| t.concat(v),
    );
    check(
        "concat rank 3",
        &[randn(&[2, 3, 2], 19), randn(&[2, 3, 4], 20)],
        |t, v| t.concat(v),
    );
    // Uses two of three pieces (the middle one unused) and mixes them, so each piece's
    // gradient must land at its own offset.
    check("split", &[randn(&[4, 7], 21)], |t, v| {
        let parts = t.split(v[0], &[2, 3, 2])?;
        let a = t.unary(UnaryOp::Tanh, parts[0])?;
        let b = t.scale(parts[2], 3.0)?;
        t.mul(a, b)
    });
}

#[test]
fn reductions() {
    for how in [Reduction::Sum, Reduction::Mean] {
        check(
            &format!("reduce_rows {how:?}"),
            &[randn(&[5, 3], 22)],
            |t, v| t.reduce_rows(v[0], how),
        );
        check(
            &format!("reduce_rows rank 3 {how:?}"),
            &[randn(&[2, 4, 3], 23)],
            |t, v| t.reduce_rows(v[0], how),
        );
        check(
            &format!("reduce_features {how:?}"),
            &[randn(&[5, 3], 24)],
            |t, v| t.reduce_features(v[0], how),
        );
        check(
            &format!("reduce_all {how:?}"),
            &[randn(&[2, 3, 4], 25)],
            |t, v| t.reduce_all(v[0], how),
        );
    }
}

#[test]
fn softmax_family_and_logsumexp() {
    check("softmax", &[randn(&[4, 6], 26)], |t, v| t.softmax(v[0]));
    check("log_softmax", &[randn(&[4, 6], 27)], |t, v| {
        t.log_softmax(v[0])
    });
    check("logsumexp", &[randn(&[4, 6], 28)], |t, v| t.logsumexp(v[0]));
    check("logsumexp rank 3", &[randn(&[2, 3, 5], 29)], |t, v| {
        t.logsumexp(v[0])
    });
}

#[test]
fn layer_norm_all_inputs() {
    let x = randn(&[5, 8], 30);
    let gamma = uniform(&[8], 0.5, 1.5, 31);
    let beta = randn(&[8], 32);
    check("layer_norm", &[x, gamma, beta], |t, v| {
        t.layer_norm(v[0], v[1], v[2], 1e-5)
    });
}

#[test]
fn masked_set_reduce_with_padding_and_empty_set() {
    // Set 0 has 3 of 4 elements, set 1 one, set 2 none (padding only).
    let mask = Tensor::from_vec(
        vec![1., 1., 1., 0., 0., 1., 0., 0., 0., 0., 0., 0.],
        &[3, 4],
    )
    .unwrap();
    for how in [Reduction::Sum, Reduction::Mean] {
        check(
            &format!("masked_set_reduce {how:?}"),
            &[randn(&[3, 4, 5], 33)],
            |t, v| t.masked_set_reduce(v[0], &mask, how),
        );
    }
}

#[test]
fn gather_rows_with_repeats() {
    check("gather_rows", &[randn(&[5, 3], 34)], |t, v| {
        t.gather_rows(v[0], &[4, 0, 4, 2, 4])
    });
    check("gather_rows rank 3", &[randn(&[4, 2, 3], 35)], |t, v| {
        t.gather_rows(v[0], &[1, 1, 3])
    });
}

#[test]
fn mse_both_operands() {
    check("mse", &[randn(&[6, 3], 36), randn(&[6, 3], 37)], |t, v| {
        t.mse(v[0], v[1])
    });
}

#[test]
fn a_small_network_end_to_end() {
    // Linear → gelu → layer norm → concat with a skip → linear: the ops as layers use them.
    let inputs = [
        randn(&[6, 4], 38),
        randn(&[5, 4], 39),
        randn(&[5], 40),
        uniform(&[5], 0.5, 1.5, 41),
        randn(&[5], 42),
        randn(&[2, 9], 43),
    ];
    check("network", &inputs, |t, v| {
        let h = t.matmul(v[0], v[1], MatLayout::NT)?;
        let h = t.add(h, v[2])?;
        let h = t.unary(UnaryOp::Gelu, h)?;
        let h = t.layer_norm(h, v[3], v[4], 1e-5)?;
        let h = t.concat(&[h, v[0]])?;
        let y = t.matmul(h, v[5], MatLayout::NT)?;
        t.log_softmax(y)
    });
}
