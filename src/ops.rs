//! Tensor ops: check shapes and devices, then run the op on the operands' backend.
//!
//! This is the one place where shapes are validated, so every backend can assume
//! consistent operands. Each error names the op and the shapes it was given.

use std::sync::Arc;

use crate::backend::{
    self, AdamStep, Backend, BinaryOp, MatLayout, MatmulDims, Reduction, UnaryOp,
};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// The backend shared by `tensors`, or an error if they live on different devices.
fn backend_of(op: &'static str, tensors: &[&Tensor]) -> Result<Arc<dyn Backend>> {
    let device = tensors[0].device();
    if let Some(other) = tensors.iter().find(|t| t.device() != device) {
        return Err(Error::DeviceMismatch {
            op,
            lhs: device.to_string(),
            rhs: other.device().to_string(),
        });
    }
    backend::for_device(device)
}

fn same_shape(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.shape() != b.shape() {
        return Err(Error::shape_because(
            op,
            a.shape(),
            b.shape(),
            "operands must have the same shape",
        ));
    }
    Ok(())
}

fn at_least_rank(op: &'static str, x: &Tensor, rank: usize) -> Result<()> {
    if x.rank() < rank {
        return Err(Error::invalid(
            op,
            format!(
                "needs a tensor of rank >= {rank}, got shape {:?}",
                x.shape()
            ),
        ));
    }
    Ok(())
}

/// The sizes of `op(a)·op(b)` in `layout`: `[m,k]·[k,n]` or batched `[b,m,k]·[b,k,n]`.
pub fn matmul_dims(
    a: &[usize],
    b: &[usize],
    layout: MatLayout,
) -> Result<(MatmulDims, Vec<usize>)> {
    let op = "matmul";
    let batched = match (a.len(), b.len()) {
        (2, 2) => false,
        (3, 3) => true,
        _ => {
            return Err(Error::shape_because(
                op,
                a,
                b,
                "operands must both be rank 2, or both rank 3 (batched)",
            ))
        }
    };
    let (batch, a2, b2) = if batched {
        if a[0] != b[0] {
            return Err(Error::shape_because(op, a, b, "batch sizes differ"));
        }
        (a[0], &a[1..], &b[1..])
    } else {
        (1, a, b)
    };
    let (m, ka) = match layout {
        MatLayout::TN => (a2[1], a2[0]),
        _ => (a2[0], a2[1]),
    };
    let (kb, n) = match layout {
        MatLayout::NT => (b2[1], b2[0]),
        _ => (b2[0], b2[1]),
    };
    if ka != kb {
        let why = format!("inner dimensions differ ({ka} vs {kb}) in layout {layout:?}");
        return Err(Error::shape_because(op, a, b, &why));
    }
    let dims = MatmulDims { batch, m, k: ka, n };
    let out = if batched {
        vec![batch, m, n]
    } else {
        vec![m, n]
    };
    Ok((dims, out))
}

/// Matrix product in `layout` (see [`MatLayout`]); rank-3 operands are batched.
pub fn matmul(a: &Tensor, b: &Tensor, layout: MatLayout) -> Result<Tensor> {
    let backend = backend_of("matmul", &[a, b])?;
    let (dims, out_shape) = matmul_dims(a.shape(), b.shape(), layout)?;
    backend.matmul(a, b, layout, dims, &out_shape)
}

/// Whether `b` is one row broadcast over `a`'s rows (shape `[n]` or `[1, n]` with n = a's
/// last dimension, while a has more than one row); errors if `b` fits neither way.
pub fn is_row_broadcast(op: &'static str, a: &Tensor, b: &Tensor) -> Result<bool> {
    if a.shape() == b.shape() {
        return Ok(false);
    }
    let one_row = match b.shape() {
        [n] | [1, n] => *n == a.cols() && a.rank() >= 1,
        _ => false,
    };
    if !one_row {
        return Err(Error::shape_because(
            op,
            a.shape(),
            b.shape(),
            "the right operand must have the left's shape or be one row [n] / [1, n] of its last dimension",
        ));
    }
    Ok(true)
}

/// a ∘ b with `b` of a's shape or one row broadcast over a's rows.
pub fn binary(op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let backend = backend_of(op.name(), &[a, b])?;
    is_row_broadcast(op.name(), a, b)?;
    backend.binary(op, a, b)
}

/// a + b (b may be a broadcast row).
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(BinaryOp::Add, a, b)
}

/// a − b (b may be a broadcast row).
pub fn sub(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(BinaryOp::Sub, a, b)
}

/// a·b elementwise (b may be a broadcast row).
pub fn mul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(BinaryOp::Mul, a, b)
}

/// a / b elementwise (b may be a broadcast row).
pub fn div(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(BinaryOp::Div, a, b)
}

/// s·x.
pub fn scale(x: &Tensor, s: f32) -> Result<Tensor> {
    backend_of("scale", &[x])?.scale(x, s)
}

/// f(x) elementwise.
pub fn unary(op: UnaryOp, x: &Tensor) -> Result<Tensor> {
    backend_of(op.name(), &[x])?.unary(op, x)
}

/// f'(x)·dy, given y = f(x).
pub fn unary_backward(op: UnaryOp, x: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Tensor> {
    let backend = backend_of(op.name(), &[x, y, dy])?;
    same_shape(op.name(), x, y)?;
    same_shape(op.name(), x, dy)?;
    backend.unary_backward(op, x, y, dy)
}

/// Concatenates along the last axis; all parts share their leading shape.
pub fn concat(parts: &[&Tensor]) -> Result<Tensor> {
    let op = "concat";
    let first = parts
        .first()
        .ok_or_else(|| Error::invalid(op, "needs at least one tensor"))?;
    let backend = backend_of(op, parts)?;
    at_least_rank(op, first, 1)?;
    let lead = &first.shape()[..first.rank() - 1];
    for p in &parts[1..] {
        if p.rank() != first.rank() || &p.shape()[..p.rank() - 1] != lead {
            return Err(Error::shape_because(
                op,
                first.shape(),
                p.shape(),
                "all but the last dimension must agree",
            ));
        }
    }
    backend.concat(parts)
}

/// Splits along the last axis into pieces of `widths`, which must add up to its size.
pub fn split(x: &Tensor, widths: &[usize]) -> Result<Vec<Tensor>> {
    let op = "split";
    let backend = backend_of(op, &[x])?;
    at_least_rank(op, x, 1)?;
    let total: usize = widths.iter().sum();
    if widths.is_empty() || total != x.cols() {
        let why = format!("widths {widths:?} must add up to the last dimension");
        return Err(Error::shape_because(op, x.shape(), &[total], &why));
    }
    backend.split(x, widths)
}

/// Sum or mean over the rows (all axes but the last): `[..., n]` → `[n]`.
pub fn reduce_rows(x: &Tensor, how: Reduction) -> Result<Tensor> {
    let backend = backend_of("reduce_rows", &[x])?;
    at_least_rank("reduce_rows", x, 1)?;
    backend.reduce_rows(x, how)
}

/// The backward of [`reduce_rows`]: `dy` `[n]` spread over `out_shape` (`[..., n]`).
pub fn reduce_rows_backward(dy: &Tensor, how: Reduction, out_shape: &[usize]) -> Result<Tensor> {
    let op = "reduce_rows_backward";
    let backend = backend_of(op, &[dy])?;
    if dy.rank() != 1 || out_shape.last() != Some(&dy.numel()) {
        return Err(Error::shape_because(
            op,
            dy.shape(),
            out_shape,
            "dy must be [n] for an input [..., n]",
        ));
    }
    backend.reduce_rows_backward(dy, how, out_shape)
}

/// Sum or mean over the last axis: `[..., n]` → `[...]`.
pub fn reduce_features(x: &Tensor, how: Reduction) -> Result<Tensor> {
    let backend = backend_of("reduce_features", &[x])?;
    at_least_rank("reduce_features", x, 1)?;
    backend.reduce_features(x, how)
}

/// The backward of [`reduce_features`]: `dy` `[...]` spread over the last axis of `out_shape`.
pub fn reduce_features_backward(
    dy: &Tensor,
    how: Reduction,
    out_shape: &[usize],
) -> Result<Tensor> {
    let op = "reduce_features_backward";
    let backend = backend_of(op, &[dy])?;
    if out_shape.is_empty() || dy.shape() != &out_shape[..out_shape.len() - 1] {
        return Err(Error::shape_because(
            op,
            dy.shape(),
            out_shape,
            "dy must be the input shape without its last axis",
        ));
    }
    backend.reduce_features_backward(dy, how, out_shape)
}

/// Sum of all elements, as a rank-0 tensor.
pub fn sum_all(x: &Tensor) -> Result<Tensor> {
    let flat = x.reshape(&[x.numel()])?;
    reduce_features(&flat, Reduction::Sum)
}

/// Σ x², read back to the host (used for gradient norms).
pub fn squared_norm(x: &Tensor) -> Result<f32> {
    sum_all(&mul(x, x)?)?.item()
}

/// Softmax over the last axis.
pub fn softmax(x: &Tensor) -> Result<Tensor> {
    let backend = backend_of("softmax", &[x])?;
    at_least_rank("softmax", x, 1)?;
    backend.softmax(x)
}

/// The backward of [`softmax`] given its output `y`.
pub fn softmax_backward(y: &Tensor, dy: &Tensor) -> Result<Tensor> {
    let backend = backend_of("softmax_backward", &[y, dy])?;
    same_shape("softmax_backward", y, dy)?;
    at_least_rank("softmax_backward", y, 1)?;
    backend.softmax_backward(y, dy)
}

/// Log-softmax over the last axis.
pub fn log_softmax(x: &Tensor) -> Result<Tensor> {
    let backend = backend_of("log_softmax", &[x])?;
    at_least_rank("log_softmax", x, 1)?;
    backend.log_softmax(x)
}

/// The backward of [`log_softmax`] given its output `y`.
pub fn log_softmax_backward(y: &Tensor, dy: &Tensor) -> Result<Tensor> {
    let backend = backend_of("log_softmax_backward", &[y, dy])?;
    same_shape("log_softmax_backward", y, dy)?;
    at_least_rank("log_softmax_backward", y, 1)?;
    backend.log_softmax_backward(y, dy)
}

fn check_norm_params(op: &'static str, x: &Tensor, gamma: &Tensor) -> Result<()> {
    at_least_rank(op, x, 1)?;
    if gamma.shape() != [x.cols()] {
        return Err(Error::shape_because(
            op,
            x.shape(),
            gamma.shape(),
            "gamma and beta must be [n] for an input [..., n]",
        ));
    }
    Ok(())
}

/// Layer norm over the last axis; returns (y, mean, rstd).
pub fn layer_norm(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f32,
) -> Result<(Tensor, Tensor, Tensor)> {
    let op = "layer_norm";
    let backend = backend_of(op, &[x, gamma, beta])?;
    check_norm_params(op, x, gamma)?;
    check_norm_params(op, x, beta)?;
    // Written to reject NaN as well as non-positive values.
    if eps.is_nan() || eps <= 0.0 {
        return Err(Error::invalid(
            op,
            format!("eps must be positive, got {eps}"),
        ));
    }
    backend.layer_norm(x, gamma, beta, eps)
}

/// The backward of [`layer_norm`]: (dx, dgamma, dbeta).
pub fn layer_norm_backward(
    x: &Tensor,
    gamma: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
    dy: &Tensor,
) -> Result<(Tensor, Tensor, Tensor)> {
    let op = "layer_norm_backward";
    let backend = backend_of(op, &[x, gamma, mean, rstd, dy])?;
    check_norm_params(op, x, gamma)?;
    same_shape(op, x, dy)?;
    same_shape(op, mean, rstd)?;
    if mean.shape() != [x.rows()] {
        return Err(Error::shape_because(
            op,
            x.shape(),
            mean.shape(),
            "mean and rstd must be [rows]",
        ));
    }
    backend.layer_norm_backward(x, gamma, mean, rstd, dy)
}

/// log Σ exp over the last axis: `[..., n]` → `[...]`.
pub fn logsumexp(x: &Tensor) -> Result<Tensor> {
    let backend = backend_of("logsumexp", &[x])?;
    at_least_rank("logsumexp", x, 1)?;
    backend.logsumexp(x)
}

/// The backward of [`logsumexp`] given its output `lse`.
pub fn logsumexp_backward(x: &Tensor, lse: &Tensor, dy: &Tensor) -> Result<Tensor> {
    let op = "logsumexp_backward";
    let backend = backend_of(op, &[x, lse, dy])?;
    at_least_rank(op, x, 1)?;
    same_shape(op, lse, dy)?;
    if lse.shape() != &x.shape()[..x.rank() - 1] {
        return Err(Error::shape_because(
            op,
            x.shape(),
            lse.shape(),
            "lse must be the input shape without its last axis",
        ));
    }
    backend.logsumexp_backward(x, lse, dy)
}

fn check_set_mask(op: &'static str, x: &[usize], mask: &Tensor) -> Result<()> {
    if x.len() != 3 || mask.shape() != &x[..2] {
        return Err(Error::shape_because(
            op,
            x,
            mask.shape(),
            "expects x [batch, set, feat] and mask [batch, set]",
        ));
    }
    Ok(())
}

/// Masked sum or mean over the set axis: x `[batch, set, feat]`, mask `[batch, set]` →
/// `[batch, feat]`. Mask entries are weights (0 = padding); an empty set's mean is 0.
pub fn masked_set_reduce(x: &Tensor, mask: &Tensor, how: Reduction) -> Result<Tensor> {
    let op = "masked_set_reduce";
    let backend = backend_of(op, &[x, mask])?;
    check_set_mask(op, x.shape(), mask)?;
    backend.masked_set_reduce(x, mask, how)
}

/// The backward of [`masked_set_reduce`] for sets of `set_size` elements.
pub fn masked_set_reduce_backward(
    dy: &Tensor,
    mask: &Tensor,
    how: Reduction,
    set_size: usize,
) -> Result<Tensor> {
    let op = "masked_set_reduce_backward";
    let backend = backend_of(op, &[dy, mask])?;
    if dy.rank() != 2 {
        return Err(Error::shape_because(
            op,
            dy.shape(),
            mask.shape(),
            "dy must be [batch, feat]",
        ));
    }
    check_set_mask(op, &[dy.shape()[0], set_size, dy.shape()[1]], mask)?;
    backend.masked_set_reduce_backward(dy, mask, how, set_size)
}

/// Softmax over the keys each query may see (see [`Backend::masked_softmax`]): x
/// `[batch, queries, keys]`, mask `[batch, keys]` (nonzero = key present); with `causal`,
/// query i also sees only keys j ≤ i, which needs queries = keys. Hidden keys get 0 and a
/// query that sees no key a row of zeros. The backward is [`softmax_backward`].
pub fn masked_softmax(x: &Tensor, mask: &Tensor, causal: bool) -> Result<Tensor> {
    let op = "masked_softmax";
    let backend = backend_of(op, &[x, mask])?;
    if x.rank() != 3 || mask.shape() != [x.shape()[0], x.shape()[2]] {
        return Err(Error::shape_because(
            op,
            x.shape(),
            mask.shape(),
            "expects scores [batch, queries, keys] and a key mask [batch, keys]",
        ));
    }
    if causal && x.shape()[1] != x.shape()[2] {
        return Err(Error::shape_because(
            op,
            x.shape(),
            mask.shape(),
            "a causal mask needs as many queries as keys (self-attention)",
        ));
    }
    backend.masked_softmax(x, mask, causal)
}

fn check_indices(op: &'static str, indices: &[u32], rows: usize) -> Result<()> {
    if let Some(bad) = indices.iter().find(|&&i| i as usize >= rows) {
        return Err(Error::invalid(
            op,
            format!("index {bad} out of range for {rows} rows"),
        ));
    }
    Ok(())
}

/// Rows of `x` along axis 0 picked by `indices`.
pub fn gather_rows(x: &Tensor, indices: &[u32]) -> Result<Tensor> {
    let op = "gather_rows";
    let backend = backend_of(op, &[x])?;
    at_least_rank(op, x, 1)?;
    check_indices(op, indices, x.shape()[0])?;
    backend.gather_rows(x, indices)
}

/// The backward of [`gather_rows`]: gradients scattered (and summed) into `out_shape`.
pub fn gather_rows_backward(dy: &Tensor, indices: &[u32], out_shape: &[usize]) -> Result<Tensor> {
    let op = "gather_rows_backward";
    let backend = backend_of(op, &[dy])?;
    if out_shape.is_empty()
        || dy.rank() != out_shape.len()
        || dy.shape()[0] != indices.len()
        || dy.shape()[1..] != out_shape[1..]
    {
        return Err(Error::shape_because(
            op,
            dy.shape(),
            out_shape,
            "dy must be [indices, ...] of the input's row shape",
        ));
    }
    check_indices(op, indices, out_shape[0])?;
    backend.gather_rows_backward(dy, indices, out_shape)
}

/// Mean squared error over all elements, as a rank-0 tensor.
pub fn mse(prediction: &Tensor, target: &Tensor) -> Result<Tensor> {
    let backend = backend_of("mse", &[prediction, target])?;
    same_shape("mse", prediction, target)?;
    if prediction.numel() == 0 {
        return Err(Error::invalid("mse", "needs at least one element"));
    }
    backend.mse(prediction, target)
}

/// The backward of [`mse`] for the prediction, with `dy` the rank-0 upstream gradient.
pub fn mse_backward(prediction: &Tensor, target: &Tensor, dy: &Tensor) -> Result<Tensor> {
    let op = "mse_backward";
    let backend = backend_of(op, &[prediction, target, dy])?;
    same_shape(op, prediction, target)?;
    if dy.numel() != 1 {
        return Err(Error::shape_because(
            op,
            dy.shape(),
            &[],
            "dy must have one element",
        ));
    }
    backend.mse_backward(prediction, target, dy)
}

/// One Adam(W) step in place; all four tensors have the same shape.
pub fn adam_update(
    param: &mut Tensor,
    grad: &Tensor,
    m: &mut Tensor,
    v: &mut Tensor,
    step: &AdamStep,
) -> Result<()> {
    let op = "adam_update";
    let backend = backend_of(op, &[param, grad, m, v])?;
    same_shape(op, param, grad)?;
    same_shape(op, param, m)?;
    same_shape(op, param, v)?;
    backend.adam_update(param, grad, m, v, step)
}

/// Checks the operands of the rational-quadratic spline: widths and heights `[..., K]`
/// and derivatives `[..., K + 1]` for an input `[...]`, K ≥ 1, bound finite and positive.
fn check_rq_spline(
    op: &'static str,
    x: &Tensor,
    knots: [&Tensor; 3],
    bound: f32,
) -> Result<Arc<dyn Backend>> {
    let [widths, heights, derivatives] = knots;
    let backend = backend_of(op, &[x, widths, heights, derivatives])?;
    at_least_rank(op, widths, 1)?;
    let bins = widths.cols();
    let knot_shape = |n: usize| {
        let mut s = x.shape().to_vec();
        s.push(n);
        s
    };
    if bins == 0 || widths.shape() != knot_shape(bins) {
        let why = "widths must be [..., K] (K ≥ 1) for an input [...]";
        return Err(Error::shape_because(op, x.shape(), widths.shape(), why));
    }
    if heights.shape() != widths.shape() {
        let why = "heights must have the widths' shape [..., K]";
        return Err(Error::shape_because(
            op,
            widths.shape(),
            heights.shape(),
            why,
        ));
    }
    if derivatives.shape() != knot_shape(bins + 1) {
        let why = "derivatives must be [..., K + 1] for widths [..., K]";
        return Err(Error::shape_because(
            op,
            widths.shape(),
            derivatives.shape(),
            why,
        ));
    }
    if !(bound.is_finite() && bound > 0.0) {
        return Err(Error::invalid(
            op,
            format!("bound must be finite and positive, got {bound}"),
        ));
    }
    Ok(backend)
}

/// The monotone rational-quadratic spline with identity tails (see
/// [`Backend::rq_spline`]): returns (y, ln |dy/dx|) elementwise, or with `inverse` the x
/// that maps to the input and ln |dx/dy|.
pub fn rq_spline(
    x: &Tensor,
    widths: &Tensor,
    heights: &Tensor,
    derivatives: &Tensor,
    bound: f32,
    inverse: bool,
) -> Result<(Tensor, Tensor)> {
    let backend = check_rq_spline("rq_spline", x, [widths, heights, derivatives], bound)?;
    backend.rq_spline(x, widths, heights, derivatives, bound, inverse)
}

/// The backward of [`rq_spline`]: [dx, dwidths, dheights, dderivatives] given the
/// gradients of its two outputs; `knots` = [widths, heights, derivatives].
pub fn rq_spline_backward(
    x: &Tensor,
    knots: [&Tensor; 3],
    bound: f32,
    inverse: bool,
    dy: &Tensor,
    dlogdet: &Tensor,
) -> Result<[Tensor; 4]> {
    let op = "rq_spline_backward";
    let backend = check_rq_spline(op, x, knots, bound)?;
    backend_of(op, &[x, dy, dlogdet])?;
    same_shape(op, x, dy)?;
    same_shape(op, x, dlogdet)?;
    backend.rq_spline_backward(x, knots, bound, inverse, dy, dlogdet)
}
