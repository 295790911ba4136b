//! The op parity cases shared by `tests/cuda_parity.rs` and `tests/wgpu_parity.rs`, which
//! run them on their backend (DESIGN.md, contract 2): every op forward and backward on
//! fresh random inputs (never zeros) against the CPU reference, on a backend in poison
//! mode, so every output buffer holds NaN before its kernel runs and an element the kernel
//! forgets to write fails the check. Tolerances: max relative error (|a − b| / max(1, |b|))
//! `ELEMENTWISE` for elementwise ops and `REDUCTION` for reductions and matmuls. Shapes
//! are small (the wgpu suite runs on lavapipe in CI) and include sizes that are not
//! multiples of the tiles, workgroups or blocks.
//!
//! Each case takes the `Device` to test; the caller has already turned poisoning on for
//! that device's (shared) backend. `op_parity_tests!` defines the thin `#[test]`
//! wrappers.
#![allow(dead_code)]

use std::sync::Arc;

use amortize::backend::cpu::CpuBackend;
use amortize::backend::{
    for_device, AdamStep, Backend, BinaryOp, MatLayout, MatmulDims, Reduction, UnaryOp,
};
use amortize::{Device, Tensor};

use crate::common::{masked_softmax_case, randn, spline_case, uniform};

/// Max relative error of elementwise ops.
pub const ELEMENTWISE: f32 = 1e-5;
/// Max relative error of reductions and matmuls.
pub const REDUCTION: f32 = 1e-4;

/// Defines one `#[test]` per `test => case` (or `test => case(args)`), which runs
/// `op_cases::case(device, args)` on the device that `$device(test name)` returns, or
/// passes when it returns `None` (no device, after saying why).
macro_rules! op_parity_tests {
    ($device:ident: $($test:ident => $case:ident $(($($arg:expr),*))?),* $(,)?) => {$(
        #[test]
        fn $test() {
            if let Some(device) = $device(stringify!($test)) {
                op_cases::$case(device $($(, $arg)*)?);
            }
        }
    )*};
}

/// The backend of `device` (the shared one, with the poisoning its test turned on).
pub fn backend(device: Device) -> Arc<dyn Backend> {
    let g = for_device(device).unwrap_or_else(|e| panic!("{device:?}: {e}"));
    assert_eq!(g.device(), device, "for_device gave another device");
    g
}

pub fn cpu() -> Arc<dyn Backend> {
    CpuBackend::shared()
}

/// A copy of a CPU tensor on the device of `g`.
pub fn up(g: &dyn Backend, t: &Tensor) -> Tensor {
    g.upload(&t.to_vec().unwrap(), t.shape()).unwrap()
}

/// Scaled N(0, 1) draws.
pub fn randn_scaled(shape: &[usize], s: f32, seed: u64) -> Tensor {
    randn_affine(shape, s, 0.0, seed)
}

/// N(shift, scale²) draws.
fn randn_affine(shape: &[usize], scale: f32, shift: f32, seed: u64) -> Tensor {
    let v: Vec<f32> = randn(shape, seed)
        .to_vec()
        .unwrap()
        .iter()
        .map(|x| x * scale + shift)
        .collect();
    Tensor::from_vec(v, shape).unwrap()
}

/// Asserts that a result of `g` matches the CPU reference: same shape, on `g`'s device,
/// finite wherever the reference is finite (a NaN there is an element the kernel never
/// wrote), the same infinity or NaN where the reference has one, and max relative error
/// ≤ `tol` over the finite elements.
pub fn check(what: &str, g: &dyn Backend, got: &Tensor, want: &Tensor, tol: f32) {
    assert_eq!(got.shape(), want.shape(), "{what}: shapes differ");
    assert_eq!(got.device(), g.device(), "{what}: result not on the GPU");
    let got = g.download(got).unwrap();
    let want = want.to_vec().unwrap();
    let mut worst = (0.0f32, 0usize);
    for (i, (&a, &b)) in got.iter().zip(&want).enumerate() {
        if !b.is_finite() {
            assert!(
                a.is_nan() && b.is_nan() || a == b,
                "{what}: element {i} is {a}, reference {b}"
            );
            continue;
        }
        assert!(
            a.is_finite(),
            "{what}: element {i} is {a} (unwritten?), reference {b}"
        );
        let err = (a - b).abs() / b.abs().max(1.0);
        if err > worst.0 {
            worst = (err, i);
        }
    }
    assert!(
        worst.0 <= tol,
        "{what}: max relative error {:e} at element {} (got {}, want {}) exceeds {tol:e}",
        worst.0,
        worst.1,
        got[worst.1],
        want[worst.1]
    );
}

pub fn upload_download_and_fill_round_trip(device: Device) {
    let g = &*backend(device);
    for shape in [vec![0], vec![1], vec![3, 5], vec![3, 17], vec![2, 3, 257]] {
        let x = randn(&shape, 1);
        let d = up(g, &x);
        assert_eq!(g.download(&d).unwrap(), x.to_vec().unwrap(), "{shape:?}");
        assert_eq!(d.to_vec().unwrap(), x.to_vec().unwrap(), "{shape:?}");
    }
    for (shape, value) in [(vec![5, 3], 2.5), (vec![2, 3, 257], -1.25), (vec![], 3.5)] {
        let f = g.fill(&shape, value).unwrap();
        check(
            &format!("fill {shape:?}"),
            g,
            &f,
            &Tensor::full(&shape, value),
            0.0,
        );
    }
    assert_eq!(g.fill(&[], 3.5).unwrap().item().unwrap(), 3.5);
    let e = g.fill(&[0, 4], 1.0).unwrap();
    assert!(g.download(&e).unwrap().is_empty());
}

/// Batched products `(batch, m, k, n)`: sizes below, at and above the tiles, single
/// elements, k = 0 (an output of zeros) and long inner dimensions.
pub const MATMUL_SHAPES: [(usize, usize, usize, usize); 14] = [
    (1, 70, 37, 45),
    (3, 65, 130, 17),
    (2, 1, 1, 1),
    (1, 128, 64, 128),
    (1, 5, 0, 3),
    (4, 9, 300, 66),
    (1, 1, 1, 1),
    (1, 3, 5, 7),
    (1, 64, 64, 64),
    (1, 65, 33, 70),
    (2, 17, 64, 31),
    (3, 5, 130, 19),
    (1, 130, 7, 129),
    (1, 4, 0, 3),
];

/// Every layout of every `(batch, m, k, n)` of `shapes`, with random operands (seeds from
/// `seed + 1` on).
pub fn matmul_cases<'a>(
    shapes: impl IntoIterator<Item = &'a (usize, usize, usize, usize)>,
    seed: u64,
) -> Vec<(MatLayout, MatmulDims, Tensor, Tensor)> {
    let mut seed = seed;
    let mut cases = Vec::new();
    for &(batch, m, k, n) in shapes {
        for layout in [MatLayout::NN, MatLayout::NT, MatLayout::TN] {
            seed += 1;
            let dims = MatmulDims { batch, m, k, n };
            let (a, b) = matmul_operands(layout, dims, seed);
            cases.push((layout, dims, a, b));
        }
    }
    cases
}

/// Random operands of `layout` for a batched product of `dims`.
fn matmul_operands(layout: MatLayout, dims: MatmulDims, seed: u64) -> (Tensor, Tensor) {
    let MatmulDims { batch, m, k, n } = dims;
    let a_shape = match layout {
        MatLayout::TN => [batch, k, m],
        _ => [batch, m, k],
    };
    let b_shape = match layout {
        MatLayout::NT => [batch, n, k],
        _ => [batch, k, n],
    };
    (randn(&a_shape, seed), randn(&b_shape, seed + 100))
}

pub fn matmul_every_layout_and_edge_shape(device: Device) {
    let g = &*backend(device);
    let c = cpu();
    for (layout, dims, a, b) in matmul_cases(&MATMUL_SHAPES, 10) {
        let MatmulDims { batch, m, k, n } = dims;
        let out_shape = [batch, m, n];
        let want = c.matmul(&a, &b, layout, dims, &out_shape).unwrap();
        let got = g
            .matmul(&up(g, &a), &up(g, &b), layout, dims, &out_shape)
            .unwrap();
        let what = format!("matmul {layout:?} batch {batch} m {m} k {k} n {n}");
        check(&what, g, &got, &want, REDUCTION);
    }
}

pub fn binary_and_scale_with_and_without_broadcast(device: Device) {
    let g = &*backend(device);
    let c = cpu();
    // Divisors always in [0.5, 2]; the other right operands N(0, 1) in the first case,
    // U(0.5, 2) in the second.
    for (rows, cols, normal_b, seed) in [(37, 29, true, 20), (7, 13, false, 3)] {
        let a = randn(&[rows, cols], seed);
        for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div] {
            for b_shape in [&[rows, cols][..], &[cols][..]] {
                let b = if normal_b && op != BinaryOp::Div {
                    randn(b_shape, seed + 2)
                } else {
                    uniform(b_shape, 0.5, 2.0, seed + 1)
                };
                let want = c.binary(op, &a, &b).unwrap();
                let got = g.binary(op, &up(g, &a), &up(g, &b)).unwrap();
                let what = format!("binary {} a {:?} b {b_shape:?}", op.name(), a.shape());
                check(&what, g, &got, &want, ELEMENTWISE);
            }
        }
    }
    for (shape, s, seed) in [([37, 29], -1.7, 20), ([3, 1001], -0.37, 6)] {
        let x = randn(&shape, seed);
        let want = c.scale(&x, s).unwrap();
        let got = g.scale(&up(g, &x), s).unwrap();
        check(&format!("scale {shape:?}"), g, &got, &want, ELEMENTWISE);
    }
}

pub fn unary_forward_and_backward_every_op(device: Device) {
    let g = &*backend(device);
    let c = cpu();
    // Log on U(lo, hi); the others on N(0, scale²), wide enough to reach the saturated
    // tails of sigmoid, tanh and softplus.
    for (shape, (lo, hi), scale, seed) in [
        ([41, 13], (0.1, 3.0), 4.0, 30),
        ([5, 301], (0.05, 8.0), 3.0, 7),
    ] {
        for op in UnaryOp::ALL {
            let x = match op {
                UnaryOp::Log => uniform(&shape, lo, hi, seed),
                _ => randn_scaled(&shape, scale, seed + 1),
            };
            let dy = randn(&shape, seed + 2);
            let y = c.unary(op, &x).unwrap();
            let (gx, gdy) = (up(g, &x), up(g, &dy));
            let gy = g.unary(op, &gx).unwrap();
            let what = format!("{} {shape:?}", op.name());
            check(&what, g, &gy, &y, ELEMENTWISE);
            let want = c.unary_backward(op, &x, &y, &dy).unwrap();
            let got = g.unary_backward(op, &gx, &up(g, &y), &gdy).unwrap();
            check(&format!("{what} backward"), g, &got, &want, ELEMENTWISE);
        }
    }
}

pub fn concat_and_split_along_features(device: Device) {
    let g = &*backend(device);
    let c = cpu();
    // Leading shapes × the widths of the parts (empty parts included).
    for (lead, widths) in [
        (&[7usize][..], &[3usize, 5, 1, 0, 2][..]),
        (&[2, 4][..], &[3, 5, 1, 0, 2][..]),
        (&[2, 3][..], &[3, 1, 5][..]),
        (&[4, 2][..], &[2, 0, 4, 3][..]),
    ] {
        let parts: Vec<Tensor> = widths
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                let mut s = lead.to_vec();
                s.push(w);
                randn(&s, 40 + i as u64)
            })
            .collect();
        let refs: Vec<&Tensor> = parts.iter().collect();
        let want = c.concat(&refs).unwrap();
        let gparts: Vec<Tensor> = parts.iter().map(|p| up(g, p)).collect();
        let grefs: Vec<&Tensor> = gparts.iter().collect();
        let got = g.concat(&grefs).unwrap();
        let what = format!("{lead:?} widths {widths:?}");
        check(&format!("concat {what}"), g, &got, &want, 0.0);
        let want = c.split(&want, widths).unwrap();
        let got = g.split(&got, widths).unwrap();
        assert_eq!(got.len(), want.len(), "split {what}: number of parts");
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            check(&format!("split {what} part {i}"), g, a, b, 0.0);
        }
    }
}

pub fn reductions_and_their_backward(device: Device) {
    let g = &*backend(device);
    let c = cpu();
    for shape in [
        &[300usize, 50][..],
        &[3, 7, 33][..],
        &[1, 1000][..],
        &[2000, 3][..],
        &[37, 19][..],
        &[3, 300, 5][..],
        &[5, 600][..],
        &[1, 1][..],
        &[7][..],
    ] {
        let x = randn(shape, 50);
        let gx = up(g, &x);
        for how in [Reduction::Sum, Reduction::Mean] {
            let what = format!("{how:?} {shape:?}");
            let want = c.reduce_rows(&x, how).unwrap();
            let got = g.reduce_rows(&gx, how).unwrap();
            check(&format!("reduce_rows {what}"), g, &got, &want, REDUCTION);
            let dy = randn(want.shape(), 51);
            let want = c.reduce_rows_backward(&dy, how, shape).unwrap();
            let got = g.reduce_rows_backward(&up(g, &dy), how, shape).unwrap();
            let name = format!("reduce_rows_backward {what}");
            check(&name, g, &got, &want, ELEMENTWISE);

            let want = c.reduce_features(&x, how).unwrap();
            let got = g.reduce_features(&gx, how).unwrap();
            let name = format!("reduce_features {what}");
            check(&name, g, &got, &want, REDUCTION);
            let dy = randn(want.shape(), 52);
            let want = c.reduce_features_backward(&dy, how, shape).unwrap();
            let got = g.reduce_features_backward(&up(g, &dy), how, shape).unwrap();
            let name = format!("reduce_features_backward {what}");
            check(&name, g, &got, &want, ELEMENTWISE);
        }
    }
}

pub fn softmax_family_and_logsumexp(device: Device) {
    let g = &*backend(device);
    let c = cpu();
    // Rows of one element, and rows longer than a workgroup or block; inputs N(0, scale²).
    for (shape, scale) in [
        (&[33usize, 7][..], 3.0),
        (&[5, 1000][..], 3.0),
        (&[2, 3, 257][..], 3.0),
        (&[4, 1][..], 3.0),
        (&[7, 13][..], 2.0),
        (&[3, 700][..], 2.0),
        (&[2, 2, 1][..], 2.0),
        (&[4, 256][..], 2.0),
    ] {
        let x = randn_scaled(shape, scale, 60);
        let dy = randn(shape, 61);
        let (gx, gdy) = (up(g, &x), up(g, &dy));

        let y = c.softmax(&x).unwrap();
        let got = g.softmax(&gx).unwrap();
        check(&format!("softmax {shape:?}"), g, &got, &y, REDUCTION);
        let want = c.softmax_backward(&y, &dy).unwrap();
        let got = g.softmax_backward(&up(g, &y), &gdy).unwrap();
        let what = format!("softmax_backward {shape:?}");
        check(&what, g, &got, &want, REDUCTION);

        let y = c.log_softmax(&x).unwrap();
        let got = g.log_softmax(&gx).unwrap();
        check(&format!("log_softmax {shape:?}"), g, &got, &y, REDUCTION);
        let want = c.log_softmax_backward(&y, &dy).unwrap();
        let got = g.log_softmax_backward(&up(g, &y), &gdy).unwrap();
        let what = format!("log_softmax_backward {shape:?}");
        check(&what, g, &got, &want, REDUCTION);

        let lse = c.logsumexp(&x).unwrap();
        let got = g.logsumexp(&gx).unwrap();
        check(&format!("logsumexp {shape:?}"), g, &got, &lse, REDUCTION);
        let dl = randn(lse.shape(), 62);
        let want = c.logsumexp_backward(&x, &lse, &dl).unwrap();
        let got = g
            .logsumexp_backward(&gx, &up(g, &lse), &up(g, &dl))
            .unwrap();
        let what = format!("logsumexp_backward {shape:?}");
        check(&what, g, &got, &want, REDUCTION);
    }
}

pub fn masked_softmax_with_padding_and_causal_masks(device: Device) {
    let g = &*backend(device);
    let c = cpu();
    // Keys beyond 256 take the strided loop; batch 4 of 5 keys leaves the last set empty.
    for (batch, queries, keys) in [(4, 5, 5), (3, 4, 7), (2, 3, 300)] {
        let [x, mask] = masked_softmax_case(batch, queries, keys, 82);
        let (gx, gm) = (up(g, &x), up(g, &mask));
        for causal in [false, true] {
            if causal && queries != keys {
                continue;
            }
            let what = format!("masked_softmax {batch}x{queries}x{keys} causal={causal}");
            let y = c.masked_softmax(&x, &mask, causal).unwrap();
            let gy = g.masked_softmax(&gx, &gm, causal).unwrap();
            check(&what, g, &gy, &y, REDUCTION);
            // The tape's backward of masked_softmax is softmax_backward of its output.
            let dy = randn(x.shape(), 83);
            let want = c.softmax_backward(&y, &dy).unwrap();
            let got = g.softmax_backward(&gy, &up(g, &dy)).unwrap();
            check(&format!("{what} backward"), g, &got, &want, REDUCTION);
        }
    }
}

/// The spline's backward differentiates through f32 bin arithmetic (the inverse through
/// the root of a quadratic, then 1/f' and d ln f'/dx) against the CPU's f64. Over 200
/// draws of this case's shapes, lavapipe and the CUDA emulator both reach relative errors
/// of 1.2e-5 (forward, dwidths) and 5.0e-5 (inverse, dx and dheights): rounding, not a
/// fault, since the outputs y and logdet stay within 3.6e-6. 1e-4 leaves twice that; a
/// wrong partial, sign or bin errs by O(1).
const SPLINE_BACKWARD: f32 = 1e-4;

/// Knots, inputs and upstream gradients drawn with seeds 84 to 87.
pub fn rq_spline_forward_inverse_and_backward(device: Device) {
    let seed = 84;
    let g = &*backend(device);
    let c = cpu();
    let (n, bins, bound) = (300, 6, 3.0);
    for inverse in [false, true] {
        let case = spline_case(n, bins, bound, inverse, seed + inverse as u64);
        let [x, w, h, d] = [&case[0], &case[1], &case[2], &case[3]];
        let [gx, gw, gh, gd] = [0, 1, 2, 3].map(|i| up(g, &case[i]));
        let what = format!("rq_spline inverse={inverse}");
        let (y, logdet) = c.rq_spline(x, w, h, d, bound, inverse).unwrap();
        let (gy, glogdet) = g.rq_spline(&gx, &gw, &gh, &gd, bound, inverse).unwrap();
        check(&format!("{what} y"), g, &gy, &y, ELEMENTWISE);
        check(&format!("{what} logdet"), g, &glogdet, &logdet, ELEMENTWISE);
        let (dy, dlogdet) = (randn(&[n], seed + 2), randn(&[n], seed + 3));
        let want = c
            .rq_spline_backward(x, [w, h, d], bound, inverse, &dy, &dlogdet)
            .unwrap();
        let (gdy, gdlogdet) = (up(g, &dy), up(g, &dlogdet));
        let got = g
            .rq_spline_backward(&gx, [&gw, &gh, &gd], bound, inverse, &gdy, &gdlogdet)
            .unwrap();
        for (name, (a, b)) in ["dx", "dwidths", "dheights", "dderivatives"]
            .iter()
            .zip(got.iter().zip(&want))
        {
            check(&format!("{what} backward {name}"), g, a, b, SPLINE_BACKWARD);
        }
    }
}

pub fn layer_norm_forward_and_backward(device: Device) {
    let g = &*backend(device);
    let c = cpu();
    // x ~ N(shift, scale²): a mean far from 0 (cancellation in the variance) and a spread
    // other than 1; rows shorter and longer than a workgroup or block.
    for (shape, scale, shift) in [
        (&[40usize, 300][..], 1.0, 3.0),
        (&[3, 5, 7][..], 1.0, 3.0),
        (&[700, 64][..], 1.0, 3.0),
        (&[9, 31][..], 1.5, 0.0),
        (&[4, 300][..], 1.5, 0.0),
        (&[2, 3, 17][..], 1.5, 0.0),
    ] {
        let cols = *shape.last().unwrap();
        let x = randn_affine(shape, scale, shift, 70);
        let gamma = uniform(&[cols], 0.5, 1.5, 71);
        let beta = randn(&[cols], 72);
        let dy = randn(shape, 73);
        let (y, mean, rstd) = c.layer_norm(&x, &gamma, &beta, 1e-5).unwrap();
        let (gx, gg) = (up(g, &x), up(g, &gamma));
        let (gy, gmean, grstd) = g.layer_norm(&gx, &gg, &up(g, &beta), 1e-5).unwrap();
        let (dx, dgamma, dbeta) = c
            .layer_norm_backward(&x, &gamma, &mean, &rstd, &dy)
            .unwrap();
        let (gdx, gdgamma, gdbeta) = g
            .layer_norm_backward(&gx, &gg, &up(g, &mean), &up(g, &rstd), &up(g, &dy))
            .unwrap();
        for (name, got, want) in [
            ("y", &gy, &y),
            ("mean", &gmean, &mean),
            ("rstd", &grstd, &rstd),
            ("dx", &gdx, &dx),
            ("dgamma", &gdgamma, &dgamma),
            ("dbeta", &gdbeta, &dbeta),
        ] {
            let what = format!("layer_norm {name} {shape:?}");
            check(&what, g, got, want, REDUCTION);
        }
    }
}

pub fn masked_set_reduce_forward_and_backward(device: Device) {
    let g = &*backend(device);
    let c = cpu();
    // Ragged sets of 5 lengths (set b keeps its first lens[b] elements), some empty.
    for (set, feat, lens) in [(6, 9, [6usize, 3, 0, 1, 5]), (7, 11, [0, 2, 4, 6, 7])] {
        let batch = lens.len();
        let x = randn(&[batch, set, feat], 80);
        let mut mask = vec![0.0f32; batch * set];
        for (b, &len) in lens.iter().enumerate() {
            for s in 0..len {
                mask[b * set + s] = 1.0;
            }
        }
        let mask = Tensor::from_vec(mask, &[batch, set]).unwrap();
        let dy = randn(&[batch, feat], 81);
        let (gx, gm) = (up(g, &x), up(g, &mask));
        for how in [Reduction::Sum, Reduction::Mean] {
            let what = format!("{how:?} lengths {lens:?}");
            let want = c.masked_set_reduce(&x, &mask, how).unwrap();
            let got = g.masked_set_reduce(&gx, &gm, how).unwrap();
            check(
                &format!("masked_set_reduce {what}"),
                g,
                &got,
                &want,
                REDUCTION,
            );
            let want = c.masked_set_reduce_backward(&dy, &mask, how, set).unwrap();
            let got = g
                .masked_set_reduce_backward(&up(g, &dy), &gm, how, set)
                .unwrap();
            let name = format!("masked_set_reduce_backward {what}");
            check(&name, g, &got, &want, ELEMENTWISE);
        }
    }
}

pub fn gather_rows_forward_and_deterministic_backward(device: Device) {
    let g = &*backend(device);
    let c = cpu();
    // Repeated indices, so the backward sums several rows into one.
    for (shape, indices) in [
        ([10, 3, 2], [3u32, 1, 3, 9, 0, 3, 1]),
        ([10, 3, 4], [3, 0, 9, 3, 3, 7, 0]),
    ] {
        let x = randn(&shape, 90);
        let want = c.gather_rows(&x, &indices).unwrap();
        let got = g.gather_rows(&up(g, &x), &indices).unwrap();
        check(&format!("gather_rows {shape:?}"), g, &got, &want, 0.0);
        let dy = randn(&[indices.len(), shape[1], shape[2]], 91);
        let want = c.gather_rows_backward(&dy, &indices, &shape).unwrap();
        let gdy = up(g, &dy);
        let got = g.gather_rows_backward(&gdy, &indices, &shape).unwrap();
        // Same summation order as the CPU (index order from zero): bit for bit.
        let what = format!("gather_rows_backward {shape:?}");
        check(&what, g, &got, &want, 0.0);
        let again = g.gather_rows_backward(&gdy, &indices, &shape).unwrap();
        assert_eq!(g.download(&got).unwrap(), g.download(&again).unwrap());
    }
}

pub fn mse_forward_and_backward(device: Device) {
    let g = &*backend(device);
    let c = cpu();
    for (shape, upstream) in [
        (&[1usize][..], 0.7),
        (&[33, 17][..], 0.7),
        (&[1000, 300][..], 0.7),
        (&[33, 7][..], 0.75),
        (&[3, 4100][..], 0.75),
    ] {
        let p = randn(shape, 100);
        let t = randn(shape, 101);
        let (gp, gt) = (up(g, &p), up(g, &t));
        let want = c.mse(&p, &t).unwrap();
        let got = g.mse(&gp, &gt).unwrap();
        check(&format!("mse {shape:?}"), g, &got, &want, REDUCTION);
        let dy = Tensor::scalar(upstream);
        let want = c.mse_backward(&p, &t, &dy).unwrap();
        let got = g.mse_backward(&gp, &gt, &up(g, &dy)).unwrap();
        let what = format!("mse_backward {shape:?}");
        check(&what, g, &got, &want, ELEMENTWISE);
    }
}

pub fn adam_update_in_place_and_copy_on_write(device: Device) {
    let g = &*backend(device);
    let c = cpu();
    // (shape, weight decay, steps, scale of m, range of v).
    for (shape, weight_decay, steps, m_scale, (v_lo, v_hi)) in [
        ([31, 7], 0.05, 1, 1.0, (0.0, 2.0)),
        ([17, 23], 0.1, 2, 0.1, (0.01, 0.2)),
    ] {
        for decoupled in [false, true] {
            let step = AdamStep {
                lr: 1e-2,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay,
                decoupled,
                bias_correction1: 1.0 - 0.9f32.powi(3),
                bias_correction2: 1.0 - 0.999f32.powi(3),
            };
            let p0 = randn(&shape, 110);
            let grad = randn(&shape, 111);
            let m0 = randn_scaled(&shape, m_scale, 112);
            let v0 = uniform(&shape, v_lo, v_hi, 113);
            let (mut p, mut m, mut v) = (p0.clone(), m0.clone(), v0.clone());
            let gp_shared = up(g, &p0);
            let mut gp = gp_shared.clone(); // shares the buffer: must be copied, not overwritten
            let (ggrad, mut gm, mut gv) = (up(g, &grad), up(g, &m0), up(g, &v0));
            for _ in 0..steps {
                c.adam_update(&mut p, &grad, &mut m, &mut v, &step).unwrap();
                g.adam_update(&mut gp, &ggrad, &mut gm, &mut gv, &step)
                    .unwrap();
            }
            let what = format!("adam_update {shape:?} decoupled={decoupled} steps={steps}");
            check(&format!("{what} param"), g, &gp, &p, ELEMENTWISE);
            check(&format!("{what} m"), g, &gm, &m, ELEMENTWISE);
            check(&format!("{what} v"), g, &gv, &v, ELEMENTWISE);
            let what = format!("{what}: a tensor sharing the parameter's buffer");
            check(&what, g, &gp_shared, &p0, 0.0);
        }
    }
}
