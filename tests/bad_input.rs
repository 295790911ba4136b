//! Every op rejects mismatched shapes with an `Err` that names the op (never a panic).

mod common;

use amortize::backend::{AdamStep, BinaryOp, MatLayout, Reduction, UnaryOp};
use amortize::{ops, Error, Result, Tensor};
use common::randn;

/// Asserts `result` is an error whose message starts with `op:` (the op's own name, not
/// that of an op it calls).
fn rejects<T: std::fmt::Debug>(op: &str, result: Result<T>) {
    match result {
        Ok(v) => panic!("{op} accepted bad input and returned {v:?}"),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.starts_with(&format!("{op}:")),
                "{op}: error does not name the op: {msg}"
            );
        }
    }
}

#[test]
fn matmul_rejects_inner_dimension_and_rank_mismatches() {
    let a = randn(&[4, 3], 1);
    let b = randn(&[5, 2], 2);
    for layout in [MatLayout::NN, MatLayout::NT, MatLayout::TN] {
        rejects("matmul", ops::matmul(&a, &b, layout));
    }
    rejects(
        "matmul",
        ops::matmul(&randn(&[2, 4, 3], 3), &randn(&[3, 3, 2], 4), MatLayout::NN),
    );
    rejects(
        "matmul",
        ops::matmul(&randn(&[12], 5), &randn(&[3, 2], 6), MatLayout::NN),
    );
    let err = ops::matmul(&a, &b, MatLayout::NN).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("[4, 3]") && msg.contains("[5, 2]"),
        "both shapes named: {msg}"
    );
    assert!(matches!(err, Error::Shape { .. }));
}

#[test]
fn elementwise_ops_reject_shapes_that_do_not_broadcast() {
    let a = randn(&[4, 3], 1);
    for (op, b) in [
        (BinaryOp::Add, randn(&[4, 2], 2)),
        (BinaryOp::Sub, randn(&[3, 3], 3)),
        (BinaryOp::Mul, randn(&[2], 4)),
        (BinaryOp::Div, randn(&[1, 4], 5)),
    ] {
        rejects(op.name(), ops::binary(op, &a, &b));
    }
    for op in UnaryOp::ALL {
        let name = format!("{}_backward", op.name());
        let y = ops::unary(op, &a).unwrap();
        match ops::unary_backward(op, &a, &y, &randn(&[4, 2], 6)) {
            Ok(_) => panic!("{name} accepted a dy of the wrong shape"),
            Err(e) => assert!(e.to_string().contains(op.name()), "{e}"),
        }
    }
}

#[test]
fn feature_ops_reject_bad_widths() {
    let a = randn(&[4, 3], 1);
    rejects("concat", ops::concat(&[&a, &randn(&[5, 2], 2)]));
    rejects("concat", ops::concat(&[]));
    rejects("split", ops::split(&a, &[1, 1]));
    rejects("split", ops::split(&a, &[2, 2]));
    rejects(
        "reduce_rows_backward",
        ops::reduce_rows_backward(&randn(&[2], 3), Reduction::Sum, &[4, 3]),
    );
    rejects(
        "reduce_features_backward",
        ops::reduce_features_backward(&randn(&[3], 4), Reduction::Mean, &[4, 3]),
    );
}

#[test]
fn normalizing_ops_reject_bad_shapes() {
    let x = randn(&[4, 3], 1);
    rejects(
        "softmax_backward",
        ops::softmax_backward(&x, &randn(&[4, 2], 2)),
    );
    rejects(
        "log_softmax_backward",
        ops::log_softmax_backward(&x, &randn(&[3, 3], 3)),
    );
    rejects(
        "logsumexp_backward",
        ops::logsumexp_backward(&x, &randn(&[3], 4), &randn(&[4], 5)),
    );
    rejects(
        "layer_norm",
        ops::layer_norm(&x, &randn(&[4], 6), &randn(&[3], 7), 1e-5),
    );
    rejects(
        "layer_norm",
        ops::layer_norm(&x, &randn(&[3], 6), &randn(&[3], 7), 0.0),
    );
    let (_, mean, rstd) = ops::layer_norm(&x, &randn(&[3], 6), &randn(&[3], 7), 1e-5).unwrap();
    rejects(
        "layer_norm_backward",
        ops::layer_norm_backward(&x, &randn(&[3], 6), &mean, &rstd, &randn(&[4, 4], 8)),
    );
}

#[test]
fn set_gather_and_loss_ops_reject_bad_shapes_and_indices() {
    let x = randn(&[2, 5, 3], 1);
    rejects(
        "masked_set_reduce",
        ops::masked_set_reduce(&x, &Tensor::full(&[2, 4], 1.0), Reduction::Mean),
    );
    rejects(
        "masked_set_reduce",
        ops::masked_set_reduce(
            &randn(&[10, 3], 2),
            &Tensor::full(&[2, 5], 1.0),
            Reduction::Sum,
        ),
    );
    rejects(
        "masked_set_reduce_backward",
        ops::masked_set_reduce_backward(
            &randn(&[2, 3], 3),
            &Tensor::full(&[2, 5], 1.0),
            Reduction::Sum,
            4,
        ),
    );
    let rows = randn(&[4, 3], 4);
    rejects("gather_rows", ops::gather_rows(&rows, &[0, 4]));
    rejects(
        "gather_rows_backward",
        ops::gather_rows_backward(&randn(&[3, 3], 5), &[0, 1], &[4, 3]),
    );
    rejects("mse", ops::mse(&rows, &randn(&[4, 2], 6)));
    rejects(
        "mse_backward",
        ops::mse_backward(&rows, &rows, &randn(&[2], 7)),
    );
}

#[test]
fn adam_update_rejects_moments_of_another_shape() {
    let mut p = randn(&[4, 3], 1);
    let g = randn(&[4, 3], 2);
    let mut m = Tensor::zeros(&[4, 3]);
    let mut v = Tensor::zeros(&[3, 4]);
    let step = AdamStep {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
        decoupled: false,
        bias_correction1: 0.1,
        bias_correction2: 0.001,
    };
    rejects(
        "adam_update",
        ops::adam_update(&mut p, &g, &mut m, &mut v, &step),
    );
}

#[test]
fn tensors_reject_data_of_the_wrong_length() {
    let err = Tensor::from_vec(vec![1.0; 5], &[2, 3]).unwrap_err();
    assert!(err.to_string().contains("[2, 3]"), "{err}");
}
