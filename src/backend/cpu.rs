//! The CPU reference backend: the semantics every CUDA kernel and WGSL shader must match.
//!
//! Each op is a plain function over slices with the name its kernel has in
//! `kernels/NAME.cu` and `shaders/NAME.wgsl`; [`CpuBackend`] wraps them for tensors.
//! Samplers call the slice functions directly on preallocated buffers. Work is split
//! over rows with rayon when a call is big enough to pay for it; every output element is
//! computed by one thread in a fixed order, so results do not depend on the thread
//! count. Reductions accumulate in f64 so that the reference is closer to the exact
//! value than any f32 kernel compared against it.

use std::sync::{Arc, OnceLock};

use rayon::prelude::*;

use super::{AdamStep, Backend, BinaryOp, MatLayout, MatmulDims, Reduction, UnaryOp};
use crate::error::Result;
use crate::tensor::{Device, Storage, Tensor};

/// Below this many multiply-adds (or elements) a call runs on the calling thread: rayon's
/// fork/join costs a few microseconds, more than a small op takes.
const PARALLEL_WORK: usize = 1 << 15;

/// Rows of C one matmul task computes: big enough that the GEMM's packing pays off,
/// small enough that a [4096, 128] product splits over every core.
const ROWS_PER_TASK: usize = 128;

/// Below this many multiply-adds a matmul runs on the calling thread: the GEMM does
/// ~20 GFLOP/s per core, so this is ~50 µs of work, well above rayon's fork/join cost.
const MATMUL_PARALLEL_WORK: usize = 1 << 20;

// ---------------------------------------------------------------------------------------
// matmul
// ---------------------------------------------------------------------------------------

/// C = op(A)·op(B) for `dims.batch` independent products, row-major, per `layout`
/// (see [`MatLayout`]): `C[b,i,j] = Σ_p A'[b,i,p]·B'[b,p,j]`.
///
/// Each task is one block of rows of C handed to `matrixmultiply::sgemm` (the GEMM
/// behind nalgebra, with run-time AVX/FMA dispatch) through strides, so the transposed
/// layouts cost no copy. We call it directly: through nalgebra, views with a dimension
/// ≤ 5 take nalgebra's own loop, which wrote out of bounds on our strided views
/// (valgrind). `benches/matmul.rs` chose it over our own register-tiled loop, which ran
/// at a third of its speed on [4096×128]·[128×128] (see `benches/RESULTS.md`). The blocks are fixed by the shape,
/// not the thread count, so results do not depend on the number of threads.
pub fn matmul(a: &[f32], b: &[f32], c: &mut [f32], layout: MatLayout, dims: MatmulDims) {
    let MatmulDims { batch, m, k, n } = dims;
    if c.is_empty() {
        return;
    }
    if k == 0 {
        c.fill(0.0);
        return;
    }
    // (row stride, column stride) of op(A) [m, k] and op(B) [k, n] in their buffers.
    let (a_strides, b_strides) = match layout {
        MatLayout::NN => ((k, 1), (n, 1)),
        MatLayout::NT => ((k, 1), (1, k)),
        MatLayout::TN => ((1, m), (n, 1)),
    };
    let task = |(batch_index, (block_index, c_block)): (usize, (usize, &mut [f32]))| {
        let row0 = block_index * ROWS_PER_TASK;
        let rows = c_block.len() / n;
        let a_block = &a[batch_index * m * k + row0 * a_strides.0..(batch_index + 1) * m * k];
        let b_block = &b[batch_index * k * n..(batch_index + 1) * k * n];
        // The last element each operand reaches must lie inside its slice.
        debug_assert!((rows - 1) * a_strides.0 + (k - 1) * a_strides.1 < a_block.len());
        debug_assert!((k - 1) * b_strides.0 + (n - 1) * b_strides.1 < b_block.len());
        // SAFETY: op(A) is `rows × k` and op(B) `k × n` with the strides above, both inside
        // their slices (asserted in debug builds; guaranteed by `ops::matmul_dims`);
        // `c_block` holds exactly `rows × n` row-major elements; beta = 0 means C is
        // written, never read, so garbage (or NaN) in it cannot leak into the result.
        unsafe {
            matrixmultiply::sgemm(
                rows,
                k,
                n,
                1.0,
                a_block.as_ptr(),
                a_strides.0 as isize,
                a_strides.1 as isize,
                b_block.as_ptr(),
                b_strides.0 as isize,
                b_strides.1 as isize,
                0.0,
                c_block.as_mut_ptr(),
                n as isize,
                1,
            );
        }
    };
    let blocks = c
        .chunks_mut(m * n)
        .enumerate()
        .flat_map(|(batch_index, cb)| {
            cb.chunks_mut(ROWS_PER_TASK * n)
                .enumerate()
                .map(move |blk| (batch_index, blk))
        });
    if batch * m * n * k < MATMUL_PARALLEL_WORK {
        blocks.for_each(task);
    } else {
        blocks.collect::<Vec<_>>().into_par_iter().for_each(task);
    }
}

// ---------------------------------------------------------------------------------------
// elementwise
// ---------------------------------------------------------------------------------------

/// Runs `f(chunk_start, out_chunk)` over `out` in parallel chunks when it is large.
fn for_chunks(out: &mut [f32], f: impl Fn(usize, &mut [f32]) + Sync) {
    if out.len() < PARALLEL_WORK {
        f(0, out);
    } else {
        out.par_chunks_mut(PARALLEL_WORK)
            .enumerate()
            .for_each(|(i, chunk)| f(i * PARALLEL_WORK, chunk));
    }
}

/// `out[i] = a[i] ∘ b[i mod b.len()]`: `b` is either a's size or one row of length
/// `b.len()` broadcast over all rows.
pub fn binary(op: BinaryOp, a: &[f32], b: &[f32], out: &mut [f32]) {
    // One loop per op: a match or a modulo per element would keep the loop from
    // vectorizing (they were the top of a spline flow's profile).
    match op {
        BinaryOp::Add => binary_with(a, b, out, |x, y| x + y),
        BinaryOp::Sub => binary_with(a, b, out, |x, y| x - y),
        BinaryOp::Mul => binary_with(a, b, out, |x, y| x * y),
        BinaryOp::Div => binary_with(a, b, out, |x, y| x / y),
    }
}

/// [`binary`] for one op `f`: each chunk is walked in runs that end where `b` wraps.
fn binary_with(a: &[f32], b: &[f32], out: &mut [f32], f: impl Fn(f32, f32) -> f32 + Sync) {
    let bn = b.len();
    for_chunks(out, |start, chunk| {
        let a = &a[start..start + chunk.len()];
        let (mut done, mut col) = (0, start % bn);
        while done < chunk.len() {
            let len = (bn - col).min(chunk.len() - done);
            let run = chunk[done..done + len].iter_mut().zip(&a[done..done + len]);
            for ((o, &x), &y) in run.zip(&b[col..col + len]) {
                *o = f(x, y);
            }
            done += len;
            col = 0;
        }
    });
}

/// out = s·x.
pub fn scale(x: &[f32], s: f32, out: &mut [f32]) {
    for_chunks(out, |start, chunk| {
        for (o, &v) in chunk.iter_mut().zip(&x[start..]) {
            *o = s * v;
        }
    });
}

/// y = f(x) elementwise.
pub fn unary(op: UnaryOp, x: &[f32], y: &mut [f32]) {
    // One loop per op, as in `binary`: `apply` with a constant op inlines to its formula.
    match op {
        UnaryOp::Relu => unary_with(x, y, |v| UnaryOp::Relu.apply(v)),
        UnaryOp::Gelu => unary_with(x, y, |v| UnaryOp::Gelu.apply(v)),
        UnaryOp::Silu => unary_with(x, y, |v| UnaryOp::Silu.apply(v)),
        UnaryOp::Tanh => unary_with(x, y, |v| UnaryOp::Tanh.apply(v)),
        UnaryOp::Sigmoid => unary_with(x, y, |v| UnaryOp::Sigmoid.apply(v)),
        UnaryOp::Softplus => unary_with(x, y, |v| UnaryOp::Softplus.apply(v)),
        UnaryOp::Exp => unary_with(x, y, |v| UnaryOp::Exp.apply(v)),
        UnaryOp::Log => unary_with(x, y, |v| UnaryOp::Log.apply(v)),
    }
}

/// [`unary`] for one op `f`.
fn unary_with(x: &[f32], y: &mut [f32], f: impl Fn(f32) -> f32 + Sync) {
    for_chunks(y, |start, chunk| {
        for (o, &v) in chunk.iter_mut().zip(&x[start..]) {
            *o = f(v);
        }
    });
}

/// dx = f'(x)·dy elementwise.
pub fn unary_backward(op: UnaryOp, x: &[f32], y: &[f32], dy: &[f32], dx: &mut [f32]) {
    // One loop per op, as in `unary`: a match and three bounds checks per element were a
    // quarter of a score network's training profile.
    let d = |op: UnaryOp| move |x: f32, y: f32| op.derivative(x, y);
    match op {
        UnaryOp::Relu => unary_backward_with(x, y, dy, dx, d(UnaryOp::Relu)),
        UnaryOp::Gelu => unary_backward_with(x, y, dy, dx, d(UnaryOp::Gelu)),
        UnaryOp::Silu => unary_backward_with(x, y, dy, dx, d(UnaryOp::Silu)),
        UnaryOp::Tanh => unary_backward_with(x, y, dy, dx, d(UnaryOp::Tanh)),
        UnaryOp::Sigmoid => unary_backward_with(x, y, dy, dx, d(UnaryOp::Sigmoid)),
        UnaryOp::Softplus => unary_backward_with(x, y, dy, dx, d(UnaryOp::Softplus)),
        UnaryOp::Exp => unary_backward_with(x, y, dy, dx, d(UnaryOp::Exp)),
        UnaryOp::Log => unary_backward_with(x, y, dy, dx, d(UnaryOp::Log)),
    }
}

/// [`unary_backward`] for one op's derivative `f(x, y)`.
fn unary_backward_with(
    x: &[f32],
    y: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    f: impl Fn(f32, f32) -> f32 + Sync,
) {
    for_chunks(dx, |start, chunk| {
        let end = start + chunk.len();
        let inputs = x[start..end]
            .iter()
            .zip(&y[start..end])
            .zip(&dy[start..end]);
        for (o, ((&xv, &yv), &g)) in chunk.iter_mut().zip(inputs) {
            *o = f(xv, yv) * g;
        }
    });
}

// ---------------------------------------------------------------------------------------
// concat / split along the last axis
// ---------------------------------------------------------------------------------------

/// out[r, :] = [parts[0][r, :], parts[1][r, :], ...] for `rows` rows; each part is
/// `(data, width)`.
pub fn concat(parts: &[(&[f32], usize)], rows: usize, out: &mut [f32]) {
    let total: usize = parts.iter().map(|p| p.1).sum();
    for r in 0..rows {
        let mut offset = r * total;
        for &(data, width) in parts {
            out[offset..offset + width].copy_from_slice(&data[r * width..(r + 1) * width]);
            offset += width;
        }
    }
}

/// The inverse of [`concat()`]: `outs[q][r, :] = x[r, offset_q .. offset_q + width_q]`.
pub fn split(x: &[f32], rows: usize, outs: &mut [(&mut [f32], usize)]) {
    let total: usize = outs.iter().map(|p| p.1).sum();
    for r in 0..rows {
        let mut offset = r * total;
        for (data, width) in outs.iter_mut() {
            let w = *width;
            data[r * w..(r + 1) * w].copy_from_slice(&x[offset..offset + w]);
            offset += w;
        }
    }
}

// ---------------------------------------------------------------------------------------
// reductions
// ---------------------------------------------------------------------------------------

fn divisor(how: Reduction, count: usize) -> f64 {
    match how {
        Reduction::Sum => 1.0,
        Reduction::Mean => count as f64,
    }
}

/// `out[j] = Σ_r x[r, j]` (÷ rows for a mean), summed over r in order.
pub fn reduce_rows(x: &[f32], rows: usize, cols: usize, how: Reduction, out: &mut [f32]) {
    if cols == 0 {
        return;
    }
    let mut acc = vec![0.0f64; cols];
    for row in x.chunks_exact(cols).take(rows) {
        for (a, &v) in acc.iter_mut().zip(row) {
            *a += v as f64;
        }
    }
    let d = divisor(how, rows);
    for (o, a) in out.iter_mut().zip(acc) {
        *o = (a / d) as f32;
    }
}

/// `dx[r, j] = dy[j]` (÷ rows for a mean).
pub fn reduce_rows_backward(dy: &[f32], rows: usize, how: Reduction, dx: &mut [f32]) {
    let cols = dy.len();
    let s = (1.0 / divisor(how, rows)) as f32;
    for_chunks(dx, |start, chunk| {
        for (i, o) in chunk.iter_mut().enumerate() {
            *o = dy[(start + i) % cols] * s;
        }
    });
}

/// `out[r] = Σ_j x[r, j]` (÷ cols for a mean).
pub fn reduce_features(x: &[f32], cols: usize, how: Reduction, out: &mut [f32]) {
    let d = divisor(how, cols);
    for_rows(out, 1, cols, |r, o| {
        let row = &x[r * cols..(r + 1) * cols];
        o[0] = (row.iter().map(|&v| v as f64).sum::<f64>() / d) as f32;
    });
}

/// `dx[r, j] = dy[r]` (÷ cols for a mean).
pub fn reduce_features_backward(dy: &[f32], cols: usize, how: Reduction, dx: &mut [f32]) {
    let s = (1.0 / divisor(how, cols)) as f32;
    for_rows(dx, cols, cols, |r, o| o.fill(dy[r] * s));
}

/// Runs `f(row, out_row)` over rows of `out` (each `out_width` wide), in parallel when
/// the work (`rows × cost_per_row`) is large.
fn for_rows(
    out: &mut [f32],
    out_width: usize,
    cost_per_row: usize,
    f: impl Fn(usize, &mut [f32]) + Sync,
) {
    if out_width == 0 {
        return;
    }
    let rows = out.len() / out_width;
    if rows * cost_per_row < PARALLEL_WORK {
        out.chunks_mut(out_width)
            .enumerate()
            .for_each(|(r, o)| f(r, o));
    } else {
        out.par_chunks_mut(out_width)
            .enumerate()
            .for_each(|(r, o)| f(r, o));
    }
}

fn row_max(row: &[f32]) -> f32 {
    row.iter().copied().fold(f32::NEG_INFINITY, f32::max)
}

/// log Σ_j exp(row[j]) with the max subtracted first; −∞ for an all −∞ row.
fn row_logsumexp(row: &[f32]) -> f64 {
    let max = row_max(row);
    if max == f32::NEG_INFINITY {
        return f64::NEG_INFINITY;
    }
    let s: f64 = row.iter().map(|&v| ((v - max) as f64).exp()).sum();
    max as f64 + s.ln()
}

/// y[r, j] = exp(x[r, j] − m_r) / Σ_j' exp(x[r, j'] − m_r), m_r = max_j x[r, j].
pub fn softmax(x: &[f32], cols: usize, y: &mut [f32]) {
    for_rows(y, cols, cols, |r, out| {
        let row = &x[r * cols..(r + 1) * cols];
        let max = row_max(row);
        let s: f64 = row.iter().map(|&v| ((v - max) as f64).exp()).sum();
        for (o, &v) in out.iter_mut().zip(row) {
            *o = (((v - max) as f64).exp() / s) as f32;
        }
    });
}

/// dx[r, j] = y[r, j]·(dy[r, j] − Σ_j' dy[r, j']·y[r, j']).
pub fn softmax_backward(y: &[f32], dy: &[f32], cols: usize, dx: &mut [f32]) {
    for_rows(dx, cols, cols, |r, out| {
        let yr = &y[r * cols..(r + 1) * cols];
        let dyr = &dy[r * cols..(r + 1) * cols];
        let dot: f64 = yr.iter().zip(dyr).map(|(&a, &b)| a as f64 * b as f64).sum();
        for ((o, &yv), &g) in out.iter_mut().zip(yr).zip(dyr) {
            *o = (yv as f64 * (g as f64 - dot)) as f32;
        }
    });
}

/// y[r, j] = x[r, j] − logsumexp_j' x[r, j'].
pub fn log_softmax(x: &[f32], cols: usize, y: &mut [f32]) {
    for_rows(y, cols, cols, |r, out| {
        let row = &x[r * cols..(r + 1) * cols];
        let lse = row_logsumexp(row);
        for (o, &v) in out.iter_mut().zip(row) {
            *o = (v as f64 - lse) as f32;
        }
    });
}

/// dx[r, j] = dy[r, j] − exp(y[r, j])·Σ_j' dy[r, j'].
pub fn log_softmax_backward(y: &[f32], dy: &[f32], cols: usize, dx: &mut [f32]) {
    for_rows(dx, cols, cols, |r, out| {
        let yr = &y[r * cols..(r + 1) * cols];
        let dyr = &dy[r * cols..(r + 1) * cols];
        let total: f64 = dyr.iter().map(|&g| g as f64).sum();
        for ((o, &yv), &g) in out.iter_mut().zip(yr).zip(dyr) {
            *o = (g as f64 - (yv as f64).exp() * total) as f32;
        }
    });
}

/// `out[r] = log Σ_j exp(x[r, j])`, max-subtracted.
pub fn logsumexp(x: &[f32], cols: usize, out: &mut [f32]) {
    for_rows(out, 1, cols, |r, o| {
        o[0] = row_logsumexp(&x[r * cols..(r + 1) * cols]) as f32;
    });
}

/// `dx[r, j] = dy[r]·exp(x[r, j] − lse[r])`.
pub fn logsumexp_backward(x: &[f32], lse: &[f32], dy: &[f32], cols: usize, dx: &mut [f32]) {
    for_rows(dx, cols, cols, |r, out| {
        let row = &x[r * cols..(r + 1) * cols];
        for (o, &v) in out.iter_mut().zip(row) {
            *o = dy[r] * (v - lse[r]).exp();
        }
    });
}

/// Layer norm over the last axis: μ_r, σ²_r (population variance, as PyTorch),
/// rstd_r = 1/√(σ²_r + eps), y[r, j] = (x[r, j] − μ_r)·rstd_r·γ_j + β_j. Writes μ and rstd
/// for the backward pass.
#[allow(clippy::too_many_arguments)]
pub fn layer_norm(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    cols: usize,
    y: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
) {
    for (r, (m, s)) in mean.iter_mut().zip(rstd.iter_mut()).enumerate() {
        let (mu, rs) = row_moments(&x[r * cols..(r + 1) * cols], eps);
        *m = mu as f32;
        *s = rs as f32;
    }
    let (mean, rstd) = (&*mean, &*rstd);
    for_rows(y, cols, cols, |r, out| {
        let row = &x[r * cols..(r + 1) * cols];
        for j in 0..cols {
            out[j] = (row[j] - mean[r]) * rstd[r] * gamma[j] + beta[j];
        }
    });
}

/// (mean, 1/√(population variance + eps)) of one row, in f64.
fn row_moments(row: &[f32], eps: f32) -> (f64, f64) {
    let n = row.len() as f64;
    let mu = row.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = row.iter().map(|&v| (v as f64 - mu).powi(2)).sum::<f64>() / n;
    (mu, 1.0 / (var + eps as f64).sqrt())
}

/// With x̂ = (x − μ)·rstd and g = dy·γ: dx = rstd·(g − mean_j g − x̂·mean_j(g·x̂)),
/// dγ_j = Σ_r dy·x̂, dβ_j = Σ_r dy.
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_backward(
    x: &[f32],
    gamma: &[f32],
    mean: &[f32],
    rstd: &[f32],
    dy: &[f32],
    cols: usize,
    dx: &mut [f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) {
    let xhat = |r: usize, j: usize| (x[r * cols + j] - mean[r]) * rstd[r];
    for_rows(dx, cols, cols, |r, out| {
        let dyr = &dy[r * cols..(r + 1) * cols];
        let (mut mean_g, mut mean_gx) = (0.0f64, 0.0f64);
        for j in 0..cols {
            let g = (dyr[j] * gamma[j]) as f64;
            mean_g += g;
            mean_gx += g * xhat(r, j) as f64;
        }
        mean_g /= cols as f64;
        mean_gx /= cols as f64;
        for j in 0..cols {
            let g = (dyr[j] * gamma[j]) as f64;
            out[j] = (rstd[r] as f64 * (g - mean_g - xhat(r, j) as f64 * mean_gx)) as f32;
        }
    });
    let rows = mean.len();
    let mut acc_g = vec![0.0f64; cols];
    let mut acc_b = vec![0.0f64; cols];
    for r in 0..rows {
        for j in 0..cols {
            let g = dy[r * cols + j] as f64;
            acc_g[j] += g * xhat(r, j) as f64;
            acc_b[j] += g;
        }
    }
    for j in 0..cols {
        dgamma[j] = acc_g[j] as f32;
        dbeta[j] = acc_b[j] as f32;
    }
}

/// Σ_s mask[b, s] over one set, the divisor of a masked mean.
fn set_count(mask_row: &[f32]) -> f64 {
    mask_row.iter().map(|&m| m as f64).sum()
}

/// 1/Σ_s mask for a mean (0 for an empty set, so it reduces to 0), 1 for a sum.
fn set_weight(how: Reduction, mask_row: &[f32]) -> f64 {
    match how {
        Reduction::Sum => 1.0,
        Reduction::Mean => {
            let count = set_count(mask_row);
            if count == 0.0 {
                0.0
            } else {
                1.0 / count
            }
        }
    }
}

/// out[b, f] = w_b·Σ_s mask[b, s]·x[b, s, f] over `[batch, set, feat]`, with w_b = 1 for a
/// sum and 1/Σ_s mask[b, s] for a mean (0 when the set is empty).
pub fn masked_set_reduce(
    x: &[f32],
    mask: &[f32],
    set: usize,
    feat: usize,
    how: Reduction,
    out: &mut [f32],
) {
    for_rows(out, feat, set * feat, |b, o| {
        let mask_row = &mask[b * set..(b + 1) * set];
        let w = set_weight(how, mask_row);
        for (f, of) in o.iter_mut().enumerate() {
            let s: f64 = (0..set)
                .map(|s| mask_row[s] as f64 * x[(b * set + s) * feat + f] as f64)
                .sum();
            *of = (s * w) as f32;
        }
    });
}

/// dx[b, s, f] = w_b·mask[b, s]·dy[b, f].
pub fn masked_set_reduce_backward(
    dy: &[f32],
    mask: &[f32],
    set: usize,
    feat: usize,
    how: Reduction,
    dx: &mut [f32],
) {
    for_rows(dx, set * feat, set * feat, |b, o| {
        let mask_row = &mask[b * set..(b + 1) * set];
        let w = set_weight(how, mask_row);
        for s in 0..set {
            let coef = (w * mask_row[s] as f64) as f32;
            for f in 0..feat {
                o[s * feat + f] = coef * dy[b * feat + f];
            }
        }
    });
}

/// Softmax over the keys a query may see, for x `[batch, queries, keys]` and a key mask
/// `[batch, keys]`: key j is visible to query i of set b when mask[b, j] ≠ 0 and, with
/// `causal`, j ≤ i. y[b, i, j] = exp(x[b, i, j] − m)/Σ_visible exp(x[b, i, j'] − m), m the
/// max over visible keys; hidden keys get exactly 0 (whatever x holds there, even ±∞), and
/// a query that sees no key gets a row of zeros. The backward is [`softmax_backward`]:
/// y = 0 at hidden keys makes their gradient 0. Each exp is taken in f64 and held as f32
/// until the f64 sum is known (one extra rounding, 6e-8 relative).
pub fn masked_softmax(
    x: &[f32],
    mask: &[f32],
    queries: usize,
    keys: usize,
    causal: bool,
    y: &mut [f32],
) {
    for_rows(y, keys, keys, |r, out| {
        let (b, i) = (r / queries.max(1), r % queries.max(1));
        // Causal: keys after i are hidden whatever the mask says.
        let seen = if causal { (i + 1).min(keys) } else { keys };
        let row = &x[r * keys..r * keys + seen];
        let mask_row = &mask[b * keys..b * keys + seen];
        out.fill(0.0);
        let max = row
            .iter()
            .zip(mask_row)
            .filter(|(_, &m)| m != 0.0)
            .map(|(&v, _)| v)
            .fold(f32::NEG_INFINITY, f32::max);
        // exp(x − max) once per visible key, kept in `out` until the sum is known.
        let mut s = 0.0f64;
        for ((o, &v), &m) in out.iter_mut().zip(row).zip(mask_row) {
            if m != 0.0 {
                let e = ((v - max) as f64).exp();
                s += e;
                *o = e as f32;
            }
        }
        if s > 0.0 {
            for o in &mut out[..seen] {
                *o = (*o as f64 / s) as f32;
            }
        }
    });
}

// ---------------------------------------------------------------------------------------
// gather, loss, optimizer
// ---------------------------------------------------------------------------------------

/// `out[i, :] = x[indices[i], :]` for rows of width `row`.
pub fn gather_rows(x: &[f32], indices: &[u32], row: usize, out: &mut [f32]) {
    if row == 0 {
        return;
    }
    for (o, &idx) in out.chunks_exact_mut(row).zip(indices) {
        let src = idx as usize * row;
        o.copy_from_slice(&x[src..src + row]);
    }
}

/// dx = 0, then `dx[indices[i], :] += dy[i, :]` for i in order (repeated indices add up).
pub fn gather_rows_backward(dy: &[f32], indices: &[u32], row: usize, dx: &mut [f32]) {
    dx.fill(0.0);
    if row == 0 {
        return;
    }
    for (g, &idx) in dy.chunks_exact(row).zip(indices) {
        let dst = idx as usize * row;
        for (d, &v) in dx[dst..dst + row].iter_mut().zip(g) {
            *d += v;
        }
    }
}

/// `mean_i (p[i] − t[i])²`.
pub fn mse(p: &[f32], t: &[f32]) -> f32 {
    let s: f64 = p
        .iter()
        .zip(t)
        .map(|(&a, &b)| ((a - b) as f64).powi(2))
        .sum();
    (s / p.len() as f64) as f32
}

/// `dp[i] = 2·(p[i] − t[i])·dy / N`.
pub fn mse_backward(p: &[f32], t: &[f32], dy: f32, dp: &mut [f32]) {
    let s = 2.0 * dy / p.len() as f32;
    for_chunks(dp, |start, chunk| {
        for (i, o) in chunk.iter_mut().enumerate() {
            *o = s * (p[start + i] - t[start + i]);
        }
    });
}

/// One Adam(W) step per element: g' = g + wd·p (Adam) or p ← p·(1 − lr·wd) (AdamW);
/// m ← β1·m + (1 − β1)·g'; v ← β2·v + (1 − β2)·g'²;
/// p ← p − lr·(m / bc1) / (√(v / bc2) + eps).
pub fn adam_update(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], s: &AdamStep) {
    for i in 0..p.len() {
        let mut grad = g[i];
        if s.decoupled {
            p[i] *= 1.0 - s.lr * s.weight_decay;
        } else {
            grad += s.weight_decay * p[i];
        }
        m[i] = s.beta1 * m[i] + (1.0 - s.beta1) * grad;
        v[i] = s.beta2 * v[i] + (1.0 - s.beta2) * grad * grad;
        let mhat = m[i] / s.bias_correction1;
        let vhat = v[i] / s.bias_correction2;
        p[i] -= s.lr * mhat / (vhat.sqrt() + s.eps);
    }
}

// ---------------------------------------------------------------------------------------
// rational-quadratic spline (neural spline flows, Durkan et al. 2019)
// ---------------------------------------------------------------------------------------

/// The knots of one monotone rational-quadratic spline per element of an input `[n]`:
/// `widths` and `heights` are `[n, bins]` (positive, each row summing to 2·bound) and
/// `derivatives` is `[n, bins + 1]` (positive; the derivatives at the K + 1 knots).
/// Knot k of element i is at (x_k, y_k) = (−B + Σ_{j<k} w_ij, −B + Σ_{j<k} h_ij).
#[derive(Clone, Copy, Debug)]
pub struct RqKnots<'a> {
    /// Bin widths, `[n, bins]`.
    pub widths: &'a [f32],
    /// Bin heights, `[n, bins]`.
    pub heights: &'a [f32],
    /// Knot derivatives, `[n, bins + 1]`.
    pub derivatives: &'a [f32],
    /// K, the number of bins.
    pub bins: usize,
    /// B: the spline maps [−B, B] onto itself; outside it is the identity.
    pub bound: f32,
}

/// Gradient buffers with the layout of [`RqKnots`].
#[derive(Debug)]
pub struct RqKnotsMut<'a> {
    /// d/d widths, `[n, bins]`.
    pub widths: &'a mut [f32],
    /// d/d heights, `[n, bins]`.
    pub heights: &'a mut [f32],
    /// d/d derivatives, `[n, bins + 1]`.
    pub derivatives: &'a mut [f32],
}

/// The bin of one element that its input falls in, in f64.
struct RqBin {
    k: usize,
    xk: f64,
    yk: f64,
    wk: f64,
    hk: f64,
    d0: f64,
    d1: f64,
}

/// Finds the bin of `v` (an x for the forward map, a y for the inverse) by a linear scan
/// of the knots; values past the last knot (rounding) stay in the last bin.
fn rq_bin(v: f64, w: &[f32], h: &[f32], d: &[f32], bound: f64, inverse: bool) -> RqBin {
    let (search, other) = if inverse { (h, w) } else { (w, h) };
    let (mut lo_s, mut lo_o) = (-bound, -bound);
    let mut k = 0;
    while k + 1 < w.len() && v >= lo_s + search[k] as f64 {
        lo_s += search[k] as f64;
        lo_o += other[k] as f64;
        k += 1;
    }
    let (xk, yk) = if inverse { (lo_o, lo_s) } else { (lo_s, lo_o) };
    RqBin {
        k,
        xk,
        yk,
        wk: w[k] as f64,
        hk: h[k] as f64,
        d0: d[k] as f64,
        d1: d[k + 1] as f64,
    }
}

/// The forward map inside bin `b` at x: (y, ln dy/dx). With ξ = (x − x_k)/w_k,
/// s = h_k/w_k: y = y_k + h_k(sξ² + δ_k ξ(1−ξ)) / (s + (δ_k + δ_{k+1} − 2s) ξ(1−ξ)),
/// dy/dx = s²(δ_{k+1}ξ² + 2sξ(1−ξ) + δ_k(1−ξ)²) / (s + (δ_k + δ_{k+1} − 2s) ξ(1−ξ))².
fn rq_eval(b: &RqBin, x: f64) -> (f64, f64) {
    let xi = (x - b.xk) / b.wk;
    let s = b.hk / b.wk;
    let t = xi * (1.0 - xi);
    let num = b.hk * (s * xi * xi + b.d0 * t);
    let den = s + (b.d0 + b.d1 - 2.0 * s) * t;
    let p = b.d1 * xi * xi + 2.0 * s * t + b.d0 * (1.0 - xi) * (1.0 - xi);
    (b.yk + num / den, (s * s * p).ln() - 2.0 * den.ln())
}

/// The root ξ ∈ [0, 1] of the quadratic that inverts [`rq_eval`] in bin `b`, in the
/// cancellation-free form 2c / (−β − √(β² − 4αc)); returns x.
fn rq_invert(b: &RqBin, y: f64) -> f64 {
    let s = b.hk / b.wk;
    let dy = y - b.yk;
    let c1 = b.d0 + b.d1 - 2.0 * s;
    let alpha = b.hk * (s - b.d0) + dy * c1;
    let beta = b.hk * b.d0 - dy * c1;
    let c = -s * dy;
    let disc = (beta * beta - 4.0 * alpha * c).max(0.0);
    let xi = 2.0 * c / (-beta - disc.sqrt());
    b.xk + xi * b.wk
}

/// Reverse mode through [`rq_eval`]: the partials of gy·y + gl·ln y' with respect to
/// (x, x_k, w_k, y_k, h_k, δ_k, δ_{k+1}).
fn rq_eval_backward(b: &RqBin, x: f64, gy: f64, gl: f64) -> [f64; 7] {
    let (wk, hk, d0, d1) = (b.wk, b.hk, b.d0, b.d1);
    let xi = (x - b.xk) / wk;
    let s = hk / wk;
    let t = xi * (1.0 - xi);
    let inner = s * xi * xi + d0 * t;
    let num = hk * inner;
    let c1 = d0 + d1 - 2.0 * s;
    let den = s + c1 * t;
    let p = d1 * xi * xi + 2.0 * s * t + d0 * (1.0 - xi) * (1.0 - xi);
    // ln y' = ln(s²p) − 2 ln den = 2 ln s + ln p − 2 ln den.
    let g_num = gy / den;
    let g_den = -gy * num / (den * den) - 2.0 * gl / den;
    let g_p = gl / p;
    let mut g_s = 2.0 * gl / s;
    let mut g_hk = g_num * inner;
    let g_inner = g_num * hk;
    g_s += g_inner * xi * xi;
    let mut g_xi = g_inner * 2.0 * s * xi;
    let mut g_d0 = g_inner * t;
    let mut g_t = g_inner * d0;
    g_s += g_den * (1.0 - 2.0 * t);
    g_d0 += g_den * t;
    let mut g_d1 = g_den * t;
    g_t += g_den * c1;
    g_d1 += g_p * xi * xi;
    g_xi += g_p * (2.0 * d1 * xi - 2.0 * d0 * (1.0 - xi));
    g_s += g_p * 2.0 * t;
    g_t += g_p * 2.0 * s;
    g_d0 += g_p * (1.0 - xi) * (1.0 - xi);
    g_xi += g_t * (1.0 - 2.0 * xi);
    g_hk += g_s / wk;
    let mut g_wk = -g_s * s / wk;
    let g_x = g_xi / wk;
    let g_xk = -g_xi / wk;
    g_wk -= g_xi * xi / wk;
    [g_x, g_xk, g_wk, gy, g_hk, g_d0, g_d1]
}

/// One element of [`rq_spline`]: (output, log |d output / d input|).
fn rq_spline_one(v: f64, w: &[f32], h: &[f32], d: &[f32], bound: f64, inverse: bool) -> (f64, f64) {
    if v < -bound || v > bound {
        return (v, 0.0);
    }
    let b = rq_bin(v, w, h, d, bound, inverse);
    if inverse {
        let x = rq_invert(&b, v);
        (x, -rq_eval(&b, x).1)
    } else {
        rq_eval(&b, v)
    }
}

/// Runs `f(i, outputs of element i)` over elements, in parallel when the call is big.
fn for_elements<T: Send>(items: Vec<T>, work: usize, f: impl Fn(usize, T) + Sync + Send) {
    if work < PARALLEL_WORK {
        items.into_iter().enumerate().for_each(|(i, t)| f(i, t));
    } else {
        items.into_par_iter().enumerate().for_each(|(i, t)| f(i, t));
    }
}

/// The monotone rational-quadratic spline of Durkan et al. (2019), elementwise with
/// identity tails: for x in [−B, B] in bin k, with ξ = (x − x_k)/w_k and s = h_k/w_k,
/// y = y_k + h_k(sξ² + δ_k ξ(1−ξ)) / (s + (δ_k + δ_{k+1} − 2s) ξ(1−ξ)) and logdet =
/// ln dy/dx; outside, y = x and logdet = 0. With `inverse`, the
/// input is a y and the output the x that maps to it (the root of a quadratic per
/// element), with logdet = ln dx/dy = −ln dy/dx. Computed in f64, stored in f32.
pub fn rq_spline(x: &[f32], knots: RqKnots, inverse: bool, y: &mut [f32], logdet: &mut [f32]) {
    let k = knots.bins;
    let bound = knots.bound as f64;
    let items: Vec<(&mut f32, &mut f32)> = y.iter_mut().zip(logdet.iter_mut()).collect();
    for_elements(items, x.len() * k * 8, |i, (yo, lo)| {
        let (w, h) = (
            &knots.widths[i * k..(i + 1) * k],
            &knots.heights[i * k..(i + 1) * k],
        );
        let d = &knots.derivatives[i * (k + 1)..(i + 1) * (k + 1)];
        let (v, l) = rq_spline_one(x[i] as f64, w, h, d, bound, inverse);
        *yo = v as f32;
        *lo = l as f32;
    });
}

/// The backward of [`rq_spline`] (same `x`, `knots` and direction) given the gradients
/// `dy` and `dlogdet` of its two outputs: writes dx and the knots' gradients (widths and
/// heights also through the knot positions, which are their running sums).
///
/// The inverse direction reuses the forward partials: with x = f⁻¹(y) and
/// G = dx_out − dlogdet·∂(ln f')/∂x, d/dy = G / f'(x) and d/dθ = −(G/f')·∂f/∂θ −
/// dlogdet·∂(ln f')/∂θ for every knot parameter θ.
pub fn rq_spline_backward(
    x: &[f32],
    knots: RqKnots,
    inverse: bool,
    dy: &[f32],
    dlogdet: &[f32],
    dx: &mut [f32],
    dknots: RqKnotsMut,
) {
    let k = knots.bins;
    let bound = knots.bound as f64;
    let items: Vec<_> = dx
        .iter_mut()
        .zip(dknots.widths.chunks_mut(k))
        .zip(dknots.heights.chunks_mut(k))
        .zip(dknots.derivatives.chunks_mut(k + 1))
        .collect();
    for_elements(items, x.len() * k * 16, |i, (((dxo, dw), dh), dd)| {
        dw.fill(0.0);
        dh.fill(0.0);
        dd.fill(0.0);
        let v = x[i] as f64;
        let (gy, gl) = (dy[i] as f64, dlogdet[i] as f64);
        if v < -bound || v > bound {
            *dxo = gy as f32;
            return;
        }
        let (w, h) = (
            &knots.widths[i * k..(i + 1) * k],
            &knots.heights[i * k..(i + 1) * k],
        );
        let d = &knots.derivatives[i * (k + 1)..(i + 1) * (k + 1)];
        let b = rq_bin(v, w, h, d, bound, inverse);
        let r = if inverse {
            let xv = rq_invert(&b, v);
            let fprime = rq_eval(&b, xv).1.exp();
            let dld_dx = rq_eval_backward(&b, xv, 0.0, 1.0)[0];
            let g = gy - gl * dld_dx;
            *dxo = (g / fprime) as f32;
            rq_eval_backward(&b, xv, -g / fprime, -gl)
        } else {
            let r = rq_eval_backward(&b, v, gy, gl);
            *dxo = r[0] as f32;
            r
        };
        let [_, g_xk, g_wk, g_yk, g_hk, g_d0, g_d1] = r;
        for j in 0..b.k {
            dw[j] = g_xk as f32;
            dh[j] = g_yk as f32;
        }
        dw[b.k] = g_wk as f32;
        dh[b.k] = g_hk as f32;
        dd[b.k] = g_d0 as f32;
        dd[b.k + 1] = g_d1 as f32;
    });
}

// ---------------------------------------------------------------------------------------
// the Backend impl
// ---------------------------------------------------------------------------------------

/// The rayon CPU backend.
#[derive(Debug, Default)]
pub struct CpuBackend;

impl CpuBackend {
    /// The process-wide instance.
    pub fn shared() -> Arc<dyn Backend> {
        static SHARED: OnceLock<Arc<dyn Backend>> = OnceLock::new();
        SHARED.get_or_init(|| Arc::new(CpuBackend)).clone()
    }
}

/// A new CPU tensor of `shape` filled by `f`.
fn new_tensor(shape: &[usize], f: impl FnOnce(&mut [f32])) -> Tensor {
    let mut data = vec![0.0f32; shape.iter().product()];
    f(&mut data);
    Tensor::from_storage(Storage::Cpu(Arc::new(data)), shape)
}

fn data<'a>(x: &'a Tensor, op: &'static str) -> Result<&'a [f32]> {
    x.cpu_data(op)
}

impl Backend for CpuBackend {
    fn device(&self) -> Device {
        Device::Cpu
    }

    fn describe(&self) -> String {
        format!(
            "CPU reference backend ({} rayon threads)",
            rayon::current_num_threads()
        )
    }

    fn upload(&self, data: &[f32], shape: &[usize]) -> Result<Tensor> {
        Tensor::from_slice(data, shape)
    }

    fn download(&self, x: &Tensor) -> Result<Vec<f32>> {
        Ok(data(x, "download")?.to_vec())
    }

    fn fill(&self, shape: &[usize], value: f32) -> Result<Tensor> {
        Ok(Tensor::full(shape, value))
    }

    fn matmul(
        &self,
        a: &Tensor,
        b: &Tensor,
        layout: MatLayout,
        dims: MatmulDims,
        out_shape: &[usize],
    ) -> Result<Tensor> {
        let (a, b) = (data(a, "matmul")?, data(b, "matmul")?);
        Ok(new_tensor(out_shape, |c| matmul(a, b, c, layout, dims)))
    }

    fn binary(&self, op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let (ad, bd) = (data(a, op.name())?, data(b, op.name())?);
        Ok(new_tensor(a.shape(), |o| binary(op, ad, bd, o)))
    }

    fn scale(&self, x: &Tensor, s: f32) -> Result<Tensor> {
        let xd = data(x, "scale")?;
        Ok(new_tensor(x.shape(), |o| scale(xd, s, o)))
    }

    fn unary(&self, op: UnaryOp, x: &Tensor) -> Result<Tensor> {
        let xd = data(x, op.name())?;
        Ok(new_tensor(x.shape(), |o| unary(op, xd, o)))
    }

    fn unary_backward(&self, op: UnaryOp, x: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Tensor> {
        let name = op.name();
        let (xd, yd, dyd) = (data(x, name)?, data(y, name)?, data(dy, name)?);
        Ok(new_tensor(x.shape(), |o| {
            unary_backward(op, xd, yd, dyd, o)
        }))
    }

    fn concat(&self, parts: &[&Tensor]) -> Result<Tensor> {
        let rows = parts[0].rows();
        let mut shape = parts[0].shape().to_vec();
        *shape.last_mut().expect("validated rank >= 1") = parts.iter().map(|p| p.cols()).sum();
        let slices = parts
            .iter()
            .map(|p| Ok((data(p, "concat")?, p.cols())))
            .collect::<Result<Vec<_>>>()?;
        Ok(new_tensor(&shape, |o| concat(&slices, rows, o)))
    }

    fn split(&self, x: &Tensor, widths: &[usize]) -> Result<Vec<Tensor>> {
        let xd = data(x, "split")?;
        let rows = x.rows();
        let mut bufs: Vec<Vec<f32>> = widths.iter().map(|w| vec![0.0; rows * w]).collect();
        let mut outs: Vec<(&mut [f32], usize)> = bufs
            .iter_mut()
            .zip(widths)
            .map(|(b, &w)| (b.as_mut_slice(), w))
            .collect();
        split(xd, rows, &mut outs);
        let lead = &x.shape()[..x.rank() - 1];
        bufs.into_iter()
            .zip(widths)
            .map(|(b, &w)| {
                let mut shape = lead.to_vec();
                shape.push(w);
                Tensor::from_vec(b, &shape)
            })
            .collect()
    }

    fn reduce_rows(&self, x: &Tensor, how: Reduction) -> Result<Tensor> {
        let xd = data(x, "reduce_rows")?;
        let (rows, cols) = (x.rows(), x.cols());
        Ok(new_tensor(&[cols], |o| reduce_rows(xd, rows, cols, how, o)))
    }

    fn reduce_rows_backward(
        &self,
        dy: &Tensor,
        how: Reduction,
        out_shape: &[usize],
    ) -> Result<Tensor> {
        let d = data(dy, "reduce_rows_backward")?;
        let rows = out_shape.iter().product::<usize>() / d.len().max(1);
        Ok(new_tensor(out_shape, |o| {
            reduce_rows_backward(d, rows, how, o)
        }))
    }

    fn reduce_features(&self, x: &Tensor, how: Reduction) -> Result<Tensor> {
        let xd = data(x, "reduce_features")?;
        let shape = &x.shape()[..x.rank().saturating_sub(1)];
        Ok(new_tensor(shape, |o| reduce_features(xd, x.cols(), how, o)))
    }

    fn reduce_features_backward(
        &self,
        dy: &Tensor,
        how: Reduction,
        out_shape: &[usize],
    ) -> Result<Tensor> {
        let d = data(dy, "reduce_features_backward")?;
        let cols = out_shape.last().copied().unwrap_or(1);
        Ok(new_tensor(out_shape, |o| {
            reduce_features_backward(d, cols, how, o)
        }))
    }

    fn softmax(&self, x: &Tensor) -> Result<Tensor> {
        let xd = data(x, "softmax")?;
        Ok(new_tensor(x.shape(), |o| softmax(xd, x.cols(), o)))
    }

    fn softmax_backward(&self, y: &Tensor, dy: &Tensor) -> Result<Tensor> {
        let (yd, dyd) = (data(y, "softmax_backward")?, data(dy, "softmax_backward")?);
        Ok(new_tensor(y.shape(), |o| {
            softmax_backward(yd, dyd, y.cols(), o)
        }))
    }

    fn log_softmax(&self, x: &Tensor) -> Result<Tensor> {
        let xd = data(x, "log_softmax")?;
        Ok(new_tensor(x.shape(), |o| log_softmax(xd, x.cols(), o)))
    }

    fn log_softmax_backward(&self, y: &Tensor, dy: &Tensor) -> Result<Tensor> {
        let op = "log_softmax_backward";
        let (yd, dyd) = (data(y, op)?, data(dy, op)?);
        Ok(new_tensor(y.shape(), |o| {
            log_softmax_backward(yd, dyd, y.cols(), o)
        }))
    }

    fn layer_norm(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        eps: f32,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let op = "layer_norm";
        let (xd, gd, bd) = (data(x, op)?, data(gamma, op)?, data(beta, op)?);
        let rows = x.rows();
        let (mut mean, mut rstd) = (vec![0.0; rows], vec![0.0; rows]);
        let y = new_tensor(x.shape(), |o| {
            layer_norm(xd, gd, bd, eps, x.cols(), o, &mut mean, &mut rstd)
        });
        Ok((
            y,
            Tensor::from_vec(mean, &[rows])?,
            Tensor::from_vec(rstd, &[rows])?,
        ))
    }

    fn layer_norm_backward(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        mean: &Tensor,
        rstd: &Tensor,
        dy: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let op = "layer_norm_backward";
        let (xd, gd) = (data(x, op)?, data(gamma, op)?);
        let (md, rd, dyd) = (data(mean, op)?, data(rstd, op)?, data(dy, op)?);
        let cols = x.cols();
        let (mut dgamma, mut dbeta) = (vec![0.0; cols], vec![0.0; cols]);
        let dx = new_tensor(x.shape(), |o| {
            layer_norm_backward(xd, gd, md, rd, dyd, cols, o, &mut dgamma, &mut dbeta)
        });
        Ok((
            dx,
            Tensor::from_vec(dgamma, gamma.shape())?,
            Tensor::from_vec(dbeta, gamma.shape())?,
        ))
    }

    fn logsumexp(&self, x: &Tensor) -> Result<Tensor> {
        let xd = data(x, "logsumexp")?;
        let shape = &x.shape()[..x.rank().saturating_sub(1)];
        Ok(new_tensor(shape, |o| logsumexp(xd, x.cols(), o)))
    }

    fn logsumexp_backward(&self, x: &Tensor, lse: &Tensor, dy: &Tensor) -> Result<Tensor> {
        let op = "logsumexp_backward";
        let (xd, ld, dyd) = (data(x, op)?, data(lse, op)?, data(dy, op)?);
        Ok(new_tensor(x.shape(), |o| {
            logsumexp_backward(xd, ld, dyd, x.cols(), o)
        }))
    }

    fn masked_set_reduce(&self, x: &Tensor, mask: &Tensor, how: Reduction) -> Result<Tensor> {
        let op = "masked_set_reduce";
        let (xd, md) = (data(x, op)?, data(mask, op)?);
        let (batch, set, feat) = (x.shape()[0], x.shape()[1], x.shape()[2]);
        Ok(new_tensor(&[batch, feat], |o| {
            masked_set_reduce(xd, md, set, feat, how, o)
        }))
    }

    fn masked_set_reduce_backward(
        &self,
        dy: &Tensor,
        mask: &Tensor,
        how: Reduction,
        set_size: usize,
    ) -> Result<Tensor> {
        let op = "masked_set_reduce_backward";
        let (dyd, md) = (data(dy, op)?, data(mask, op)?);
        let (batch, feat) = (dy.shape()[0], dy.shape()[1]);
        Ok(new_tensor(&[batch, set_size, feat], |o| {
            masked_set_reduce_backward(dyd, md, set_size, feat, how, o)
        }))
    }

    fn masked_softmax(&self, x: &Tensor, mask: &Tensor, causal: bool) -> Result<Tensor> {
        let op = "masked_softmax";
        let (xd, md) = (data(x, op)?, data(mask, op)?);
        let (queries, keys) = (x.shape()[1], x.shape()[2]);
        Ok(new_tensor(x.shape(), |o| {
            masked_softmax(xd, md, queries, keys, causal, o)
        }))
    }

    fn gather_rows(&self, x: &Tensor, indices: &[u32]) -> Result<Tensor> {
        let xd = data(x, "gather_rows")?;
        let row = x.numel() / x.shape()[0].max(1);
        let mut shape = x.shape().to_vec();
        shape[0] = indices.len();
        Ok(new_tensor(&shape, |o| gather_rows(xd, indices, row, o)))
    }

    fn gather_rows_backward(
        &self,
        dy: &Tensor,
        indices: &[u32],
        out_shape: &[usize],
    ) -> Result<Tensor> {
        let d = data(dy, "gather_rows_backward")?;
        let row = out_shape[1..].iter().product();
        Ok(new_tensor(out_shape, |o| {
            gather_rows_backward(d, indices, row, o)
        }))
    }

    fn mse(&self, prediction: &Tensor, target: &Tensor) -> Result<Tensor> {
        let (p, t) = (data(prediction, "mse")?, data(target, "mse")?);
        Ok(Tensor::scalar(mse(p, t)))
    }

    fn mse_backward(&self, prediction: &Tensor, target: &Tensor, dy: &Tensor) -> Result<Tensor> {
        let op = "mse_backward";
        let (p, t, g) = (data(prediction, op)?, data(target, op)?, data(dy, op)?);
        Ok(new_tensor(prediction.shape(), |o| {
            mse_backward(p, t, g[0], o)
        }))
    }

    fn adam_update(
        &self,
        param: &mut Tensor,
        grad: &Tensor,
        m: &mut Tensor,
        v: &mut Tensor,
        step: &AdamStep,
    ) -> Result<()> {
        let op = "adam_update";
        let g = data(grad, op)?;
        adam_update(
            param.cpu_data_mut(op)?,
            g,
            m.cpu_data_mut(op)?,
            v.cpu_data_mut(op)?,
            step,
        );
        Ok(())
    }

    fn rq_spline(
        &self,
        x: &Tensor,
        widths: &Tensor,
        heights: &Tensor,
        derivatives: &Tensor,
        bound: f32,
        inverse: bool,
    ) -> Result<(Tensor, Tensor)> {
        let op = "rq_spline";
        let knots = RqKnots {
            widths: data(widths, op)?,
            heights: data(heights, op)?,
            derivatives: data(derivatives, op)?,
            bins: widths.cols(),
            bound,
        };
        let xd = data(x, op)?;
        let mut logdet = vec![0.0f32; x.numel()];
        let y = new_tensor(x.shape(), |y| rq_spline(xd, knots, inverse, y, &mut logdet));
        Ok((y, Tensor::from_vec(logdet, x.shape())?))
    }

    fn rq_spline_backward(
        &self,
        x: &Tensor,
        knots: [&Tensor; 3],
        bound: f32,
        inverse: bool,
        dy: &Tensor,
        dlogdet: &Tensor,
    ) -> Result<[Tensor; 4]> {
        let op = "rq_spline_backward";
        let [widths, heights, derivatives] = knots;
        let knots = RqKnots {
            widths: data(widths, op)?,
            heights: data(heights, op)?,
            derivatives: data(derivatives, op)?,
            bins: widths.cols(),
            bound,
        };
        let (xd, dyd, dld) = (data(x, op)?, data(dy, op)?, data(dlogdet, op)?);
        let mut dw = vec![0.0f32; widths.numel()];
        let mut dh = vec![0.0f32; heights.numel()];
        let mut dd = vec![0.0f32; derivatives.numel()];
        let dx = new_tensor(x.shape(), |dx| {
            let dknots = RqKnotsMut {
                widths: &mut dw,
                heights: &mut dh,
                derivatives: &mut dd,
            };
            rq_spline_backward(xd, knots, inverse, dyd, dld, dx, dknots)
        });
        Ok([
            dx,
            Tensor::from_vec(dw, widths.shape())?,
            Tensor::from_vec(dh, heights.shape())?,
            Tensor::from_vec(dd, derivatives.shape())?,
        ])
    }
}
