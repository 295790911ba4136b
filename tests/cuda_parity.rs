//! CUDA kernels against the CPU reference (contract 2): every op forward and backward on
//! fresh random inputs, every output poisoned with NaN before its kernel runs, tolerance
//! 1e-5 (max relative error, relative to max(1, |reference|)) for elementwise ops and 1e-4
//! for reductions and matmuls; Philox words and uniforms bit for bit. The opt-in TF32
//! matmul has its own tolerance, relative to the norms of the row and column multiplied
//! (`TF32`).
//!
//! Without a CUDA device (or driver, or NVRTC) the tests print why and pass, unless
//! `AMORTIZE_REQUIRE_CUDA=1` makes that a failure.

mod common;

use std::sync::Arc;

use amortize::backend::cpu::CpuBackend;
use amortize::backend::cuda::{CudaBackend, MatmulPrecision};
use amortize::backend::{
    for_device, AdamStep, Backend, BinaryOp, MatLayout, MatmulDims, Reduction, UnaryOp,
};
use amortize::rng::{box_muller, key_from_seed, philox4x32_10, uniform_open01, PhiloxStream};
use amortize::{Device, Tensor};
use common::{masked_softmax_case, randn, spline_case, uniform};

const ELEMENTWISE: f32 = 1e-5;
const REDUCTION: f32 = 1e-4;
/// TF32 matmul: |C - C_cpu| <= TF32 · |A' row| · |B' column| per element. Rounding both
/// inputs to TF32 costs up to 2^-10 ≈ 9.8e-4 of that product (Cauchy–Schwarz), the f32
/// accumulations of the tensor cores and of the CPU up to k·(2^-23 + 2^-24) more: below
/// 2e-3 for k <= 4096 (`kernels/matmul_tf32.cu` derives it).
const TF32: f32 = 2e-3;

/// The backend of cuda:0 with output poisoning on, or `None` (after printing why) when
/// there is none and the environment does not require one.
fn gpu(test: &str) -> Option<Arc<CudaBackend>> {
    let why = match CudaBackend::shared(0) {
        Ok(g) => {
            if amortize::devices::nvrtc_present() {
                g.set_poison_outputs(true);
                return Some(g);
            }
            "no NVRTC library (libnvrtc.so) to compile the kernels".to_string()
        }
        Err(e) => e.to_string(),
    };
    if std::env::var("AMORTIZE_REQUIRE_CUDA").as_deref() == Ok("1") {
        panic!("{test}: AMORTIZE_REQUIRE_CUDA=1 but CUDA is unusable: {why}");
    }
    eprintln!("skipping {test}: {why} (set AMORTIZE_REQUIRE_CUDA=1 to fail instead)");
    None
}

fn cpu() -> Arc<dyn Backend> {
    CpuBackend::shared()
}

fn up(g: &CudaBackend, t: &Tensor) -> Tensor {
    g.upload(&t.to_vec().unwrap(), t.shape()).unwrap()
}

/// Asserts the CUDA result equals the CPU one within `tol`; a NaN where the reference is
/// a number (an element the kernel never wrote) fails.
fn check(what: &str, g: &CudaBackend, got: &Tensor, want: &Tensor, tol: f32) {
    assert_eq!(got.shape(), want.shape(), "{what}: shapes differ");
    assert_eq!(
        got.device(),
        Device::Cuda(0),
        "{what}: result not on the GPU"
    );
    let got = g.download(got).unwrap();
    let want = want.to_vec().unwrap();
    let mut worst = (0.0f32, 0usize);
    for (i, (&a, &b)) in got.iter().zip(&want).enumerate() {
        if b.is_nan() {
            continue;
        }
        assert!(
            !a.is_nan(),
            "{what}: element {i} is NaN (unwritten?), expected {b}"
        );
        if b.is_infinite() {
            assert_eq!(a, b, "{what}: element {i}");
            continue;
        }
        let err = (a - b).abs() / b.abs().max(1.0);
        if err > worst.0 {
            worst = (err, i);
        }
    }
    assert!(
        worst.0 <= tol,
        "{what}: max relative error {} at element {} (got {}, want {}) exceeds {tol}",
        worst.0,
        worst.1,
        got[worst.1],
        want[worst.1]
    );
}

#[test]
fn asking_for_a_missing_device_is_an_error_that_says_why() {
    // Runs everywhere: on a machine without CUDA this is the "no driver" error; with CUDA,
    // an ordinal no machine has.
    let err = CudaBackend::shared(4096).unwrap_err().to_string();
    assert!(err.contains("cuda:4096"), "{err}");
    match for_device(Device::Cuda(0)) {
        Ok(b) => assert_eq!(b.device(), Device::Cuda(0)),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains("cuda:0") && msg.len() > "device cuda:0: ".len(),
                "{msg}"
            );
        }
    }
}

#[test]
fn philox_streams_match_bit_for_bit() {
    let Some(g) = gpu("philox_streams_match_bit_for_bit") else {
        return;
    };
    for (seed, stream, step, lanes, blocks) in [
        (0u64, 0u32, 0u32, 1usize, 1usize),
        (0x0123_4567_89ab_cdef, 3, 7, 1000, 3),
        (u64::MAX, u32::MAX, u32::MAX, 257, 2),
    ] {
        let (words, uniforms, normals) = g.philox_fill(seed, stream, step, lanes, blocks).unwrap();
        for lane in 0..lanes {
            let reader = PhiloxStream::at_step(seed, stream, step, lane as u32);
            for block in 0..blocks {
                let w = philox4x32_10(
                    [stream, step, lane as u32, block as u32],
                    key_from_seed(seed),
                );
                assert_eq!(w, reader.block(block as u64), "rng.rs counter layout");
                let o = 4 * (lane * blocks + block);
                assert_eq!(&words[o..o + 4], &w, "words, lane {lane} block {block}");
                for i in 0..4 {
                    assert_eq!(
                        uniforms[o + i].to_bits(),
                        uniform_open01(w[i]).to_bits(),
                        "uniform {i}, lane {lane} block {block}"
                    );
                }
                let (z0, z1) = box_muller(w[0], w[1]);
                let (z2, z3) = box_muller(w[2], w[3]);
                for (i, z) in [z0, z1, z2, z3].into_iter().enumerate() {
                    let got = normals[o + i];
                    assert!(
                        (got - z).abs() <= ELEMENTWISE * z.abs().max(1.0),
                        "normal {i}, lane {lane} block {block}: {got} vs {z}"
                    );
                }
            }
        }
    }
}

#[test]
fn fill_upload_download_round_trip() {
    let Some(g) = gpu("fill_upload_download_round_trip") else {
        return;
    };
    let x = randn(&[3, 17], 1);
    let d = up(&g, &x);
    assert_eq!(g.download(&d).unwrap(), x.to_vec().unwrap());
    assert_eq!(d.to_vec().unwrap(), x.to_vec().unwrap());
    let f = g.fill(&[5, 3], 2.5).unwrap();
    check("fill", &g, &f, &Tensor::full(&[5, 3], 2.5), 0.0);
    let e = g.fill(&[0, 4], 1.0).unwrap();
    assert!(g.download(&e).unwrap().is_empty());
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

#[test]
fn matmul_all_layouts_and_batches() {
    let Some(g) = gpu("matmul_all_layouts_and_batches") else {
        return;
    };
    let c = cpu();
    let mut seed = 10;
    for (batch, m, k, n) in [
        (1, 70, 37, 45),
        (3, 65, 130, 17),
        (2, 1, 1, 1),
        (1, 128, 64, 128),
        (1, 5, 0, 3),
        (4, 9, 300, 66),
    ] {
        for layout in [MatLayout::NN, MatLayout::NT, MatLayout::TN] {
            seed += 1;
            let dims = MatmulDims { batch, m, k, n };
            let (a, b) = matmul_operands(layout, dims, seed);
            let out_shape = [batch, m, n];
            let want = c.matmul(&a, &b, layout, dims, &out_shape).unwrap();
            let got = g
                .matmul(&up(&g, &a), &up(&g, &b), layout, dims, &out_shape)
                .unwrap();
            let what = format!("matmul {layout:?} batch {batch} m {m} k {k} n {n}");
            check(&what, &g, &got, &want, REDUCTION);
        }
    }
}

#[test]
fn matmul_tf32_all_layouts_and_edge_shapes() {
    let Some(g) = gpu("matmul_tf32_all_layouts_and_edge_shapes") else {
        return;
    };
    assert_eq!(g.matmul_precision(), MatmulPrecision::F32, "the default");
    if g.compute_capability().0 < 8 {
        // TF32 tensor cores need compute capability 8.0: asking is an error that says so.
        let err = g
            .set_matmul_precision(MatmulPrecision::Tf32)
            .unwrap_err()
            .to_string();
        assert!(err.contains("compute capability 8.0"), "{err}");
        eprintln!("matmul_tf32: {} has no TF32 tensor cores", g.describe());
        return;
    }
    let c = cpu();
    let mut seed = 500;
    let mut worst_of_all = 0.0f32;
    for (batch, m, k, n) in [
        (1, 70, 37, 45),
        (3, 65, 130, 17),
        (2, 1, 1, 1),
        (1, 128, 64, 128),
        (1, 5, 0, 3),
        (4, 9, 300, 66),
        (1, 16, 8, 16),
        (2, 63, 33, 129),
    ] {
        for layout in [MatLayout::NN, MatLayout::NT, MatLayout::TN] {
            seed += 1;
            let dims = MatmulDims { batch, m, k, n };
            let (a, b) = matmul_operands(layout, dims, seed);
            let out_shape = [batch, m, n];
            let want = c.matmul(&a, &b, layout, dims, &out_shape).unwrap();
            let got = g
                .matmul_with_precision(
                    &up(&g, &a),
                    &up(&g, &b),
                    layout,
                    dims,
                    &out_shape,
                    MatmulPrecision::Tf32,
                )
                .unwrap();
            assert_eq!(got.shape(), &out_shape);
            let got = g.download(&got).unwrap();
            let want = want.to_vec().unwrap();
            // A'[z, i, p] and B'[z, p, j] for the norms of rows and columns.
            let (av, bv) = (a.to_vec().unwrap(), b.to_vec().unwrap());
            let a_at = |z: usize, i: usize, p: usize| match layout {
                MatLayout::TN => av[(z * k + p) * m + i],
                _ => av[(z * m + i) * k + p],
            };
            let b_at = |z: usize, p: usize, j: usize| match layout {
                MatLayout::NT => bv[(z * n + j) * k + p],
                _ => bv[(z * k + p) * n + j],
            };
            let what = format!("matmul_tf32 {layout:?} batch {batch} m {m} k {k} n {n}");
            let mut worst = 0.0f32;
            for z in 0..batch {
                let row_norms: Vec<f32> = (0..m)
                    .map(|i| (0..k).map(|p| a_at(z, i, p).powi(2)).sum::<f32>().sqrt())
                    .collect();
                let col_norms: Vec<f32> = (0..n)
                    .map(|j| (0..k).map(|p| b_at(z, p, j).powi(2)).sum::<f32>().sqrt())
                    .collect();
                for (i, row_norm) in row_norms.iter().enumerate() {
                    for (j, col_norm) in col_norms.iter().enumerate() {
                        let e = (z * m + i) * n + j;
                        assert!(!got[e].is_nan(), "{what}: element {e} is NaN (unwritten?)");
                        let err = (got[e] - want[e]).abs();
                        let scale = row_norm * col_norm;
                        assert!(
                            err <= TF32 * scale,
                            "{what}: element {e} = {} differs from {} by {err} > {TF32} · {scale}",
                            got[e],
                            want[e]
                        );
                        if scale > 0.0 {
                            worst = worst.max(err / scale);
                        }
                    }
                }
            }
            eprintln!("{what}: max error / (|row| |column|) = {worst:e}");
            worst_of_all = worst_of_all.max(worst);
        }
    }
    // Rounded inputs leave errors near 2^-11 / sqrt(k) of the scale, f32 ones near 1e-8:
    // the products really ran in TF32.
    assert!(
        worst_of_all > 1e-6,
        "TF32 error {worst_of_all:e} looks like f32"
    );
}

#[test]
fn binary_and_scale() {
    let Some(g) = gpu("binary_and_scale") else {
        return;
    };
    let c = cpu();
    let a = randn(&[37, 29], 20);
    for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div] {
        for b_shape in [&[37, 29][..], &[29][..]] {
            let b = if op == BinaryOp::Div {
                uniform(b_shape, 0.5, 2.0, 21)
            } else {
                randn(b_shape, 22)
            };
            let want = c.binary(op, &a, &b).unwrap();
            let got = g.binary(op, &up(&g, &a), &up(&g, &b)).unwrap();
            check(
                &format!("binary {op:?} b {b_shape:?}"),
                &g,
                &got,
                &want,
                ELEMENTWISE,
            );
        }
    }
    let want = c.scale(&a, -1.7).unwrap();
    let got = g.scale(&up(&g, &a), -1.7).unwrap();
    check("scale", &g, &got, &want, ELEMENTWISE);
}

#[test]
fn unary_forward_and_backward() {
    let Some(g) = gpu("unary_forward_and_backward") else {
        return;
    };
    let c = cpu();
    for op in UnaryOp::ALL {
        let x = if op == UnaryOp::Log {
            uniform(&[41, 13], 0.1, 3.0, 30)
        } else {
            // Wide enough to reach the saturated tails of sigmoid, tanh and softplus.
            c.scale(&randn(&[41, 13], 31), 4.0).unwrap()
        };
        let dy = randn(&[41, 13], 32);
        let y = c.unary(op, &x).unwrap();
        let got = g.unary(op, &up(&g, &x)).unwrap();
        check(&format!("unary {op:?}"), &g, &got, &y, ELEMENTWISE);
        let want = c.unary_backward(op, &x, &y, &dy).unwrap();
        let got = g
            .unary_backward(op, &up(&g, &x), &up(&g, &y), &up(&g, &dy))
            .unwrap();
        check(
            &format!("unary_backward {op:?}"),
            &g,
            &got,
            &want,
            ELEMENTWISE,
        );
    }
}

#[test]
fn concat_and_split() {
    let Some(g) = gpu("concat_and_split") else {
        return;
    };
    let c = cpu();
    for lead in [&[7usize][..], &[2, 4][..]] {
        let parts: Vec<Tensor> = [3usize, 5, 1, 0, 2]
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
        let gparts: Vec<Tensor> = parts.iter().map(|p| up(&g, p)).collect();
        let grefs: Vec<&Tensor> = gparts.iter().collect();
        let got = g.concat(&grefs).unwrap();
        check(&format!("concat {lead:?}"), &g, &got, &want, 0.0);
        let widths = [3, 5, 1, 0, 2];
        let want = c.split(&want, &widths).unwrap();
        let got = g.split(&got, &widths).unwrap();
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            check(&format!("split {lead:?} part {i}"), &g, a, b, 0.0);
        }
    }
}

#[test]
fn reductions_forward_and_backward() {
    let Some(g) = gpu("reductions_forward_and_backward") else {
        return;
    };
    let c = cpu();
    for shape in [
        &[300usize, 50][..],
        &[3, 7, 33][..],
        &[1, 1000][..],
        &[2000, 3][..],
    ] {
        let x = randn(shape, 50);
        for how in [Reduction::Sum, Reduction::Mean] {
            let what = format!("{shape:?} {how:?}");
            let want = c.reduce_rows(&x, how).unwrap();
            let got = g.reduce_rows(&up(&g, &x), how).unwrap();
            check(&format!("reduce_rows {what}"), &g, &got, &want, REDUCTION);
            let dy = randn(want.shape(), 51);
            let want = c.reduce_rows_backward(&dy, how, shape).unwrap();
            let got = g.reduce_rows_backward(&up(&g, &dy), how, shape).unwrap();
            check(
                &format!("reduce_rows_backward {what}"),
                &g,
                &got,
                &want,
                ELEMENTWISE,
            );

            let want = c.reduce_features(&x, how).unwrap();
            let got = g.reduce_features(&up(&g, &x), how).unwrap();
            check(
                &format!("reduce_features {what}"),
                &g,
                &got,
                &want,
                REDUCTION,
            );
            let dy = randn(want.shape(), 52);
            let want = c.reduce_features_backward(&dy, how, shape).unwrap();
            let got = g
                .reduce_features_backward(&up(&g, &dy), how, shape)
                .unwrap();
            check(
                &format!("reduce_features_backward {what}"),
                &g,
                &got,
                &want,
                ELEMENTWISE,
            );
        }
    }
}

#[test]
fn softmax_family_and_logsumexp() {
    let Some(g) = gpu("softmax_family_and_logsumexp") else {
        return;
    };
    let c = cpu();
    for shape in [
        &[33usize, 7][..],
        &[5, 1000][..],
        &[2, 3, 257][..],
        &[4, 1][..],
    ] {
        let x = c.scale(&randn(shape, 60), 3.0).unwrap();
        let dy = randn(shape, 61);
        let (gx, gdy) = (up(&g, &x), up(&g, &dy));

        let y = c.softmax(&x).unwrap();
        check(
            &format!("softmax {shape:?}"),
            &g,
            &g.softmax(&gx).unwrap(),
            &y,
            REDUCTION,
        );
        let want = c.softmax_backward(&y, &dy).unwrap();
        let got = g.softmax_backward(&up(&g, &y), &gdy).unwrap();
        check(
            &format!("softmax_backward {shape:?}"),
            &g,
            &got,
            &want,
            REDUCTION,
        );

        let y = c.log_softmax(&x).unwrap();
        let got = g.log_softmax(&gx).unwrap();
        check(&format!("log_softmax {shape:?}"), &g, &got, &y, REDUCTION);
        let want = c.log_softmax_backward(&y, &dy).unwrap();
        let got = g.log_softmax_backward(&up(&g, &y), &gdy).unwrap();
        check(
            &format!("log_softmax_backward {shape:?}"),
            &g,
            &got,
            &want,
            REDUCTION,
        );

        let lse = c.logsumexp(&x).unwrap();
        let got = g.logsumexp(&gx).unwrap();
        check(&format!("logsumexp {shape:?}"), &g, &got, &lse, REDUCTION);
        let dl = randn(lse.shape(), 62);
        let want = c.logsumexp_backward(&x, &lse, &dl).unwrap();
        let got = g
            .logsumexp_backward(&gx, &up(&g, &lse), &up(&g, &dl))
            .unwrap();
        check(
            &format!("logsumexp_backward {shape:?}"),
            &g,
            &got,
            &want,
            REDUCTION,
        );
    }
}

#[test]
fn layer_norm_forward_and_backward() {
    let Some(g) = gpu("layer_norm_forward_and_backward") else {
        return;
    };
    let c = cpu();
    for shape in [&[40usize, 300][..], &[3, 5, 7][..], &[700, 64][..]] {
        let cols = *shape.last().unwrap();
        let x = c
            .binary(
                BinaryOp::Add,
                &randn(shape, 70),
                &Tensor::full(&[cols], 3.0),
            )
            .unwrap();
        let gamma = uniform(&[cols], 0.5, 1.5, 71);
        let beta = randn(&[cols], 72);
        let dy = randn(shape, 73);
        let (y, mean, rstd) = c.layer_norm(&x, &gamma, &beta, 1e-5).unwrap();
        let (gy, gm, gr) = g
            .layer_norm(&up(&g, &x), &up(&g, &gamma), &up(&g, &beta), 1e-5)
            .unwrap();
        check(&format!("layer_norm y {shape:?}"), &g, &gy, &y, REDUCTION);
        check(
            &format!("layer_norm mean {shape:?}"),
            &g,
            &gm,
            &mean,
            REDUCTION,
        );
        check(
            &format!("layer_norm rstd {shape:?}"),
            &g,
            &gr,
            &rstd,
            REDUCTION,
        );
        let (dx, dg, db) = c
            .layer_norm_backward(&x, &gamma, &mean, &rstd, &dy)
            .unwrap();
        let (gdx, gdg, gdb) = g
            .layer_norm_backward(
                &up(&g, &x),
                &up(&g, &gamma),
                &up(&g, &mean),
                &up(&g, &rstd),
                &up(&g, &dy),
            )
            .unwrap();
        check(
            &format!("layer_norm dx {shape:?}"),
            &g,
            &gdx,
            &dx,
            REDUCTION,
        );
        check(
            &format!("layer_norm dgamma {shape:?}"),
            &g,
            &gdg,
            &dg,
            REDUCTION,
        );
        check(
            &format!("layer_norm dbeta {shape:?}"),
            &g,
            &gdb,
            &db,
            REDUCTION,
        );
    }
}

#[test]
fn masked_set_reduce_forward_and_backward() {
    let Some(g) = gpu("masked_set_reduce_forward_and_backward") else {
        return;
    };
    let c = cpu();
    let (batch, set, feat) = (5, 6, 9);
    let x = randn(&[batch, set, feat], 80);
    // Ragged sets, one of them empty.
    let mut mask = vec![0.0f32; batch * set];
    for (b, len) in [6usize, 3, 0, 1, 5].iter().enumerate() {
        for s in 0..*len {
            mask[b * set + s] = 1.0;
        }
    }
    let mask = Tensor::from_vec(mask, &[batch, set]).unwrap();
    let dy = randn(&[batch, feat], 81);
    for how in [Reduction::Sum, Reduction::Mean] {
        let want = c.masked_set_reduce(&x, &mask, how).unwrap();
        let got = g
            .masked_set_reduce(&up(&g, &x), &up(&g, &mask), how)
            .unwrap();
        check(
            &format!("masked_set_reduce {how:?}"),
            &g,
            &got,
            &want,
            REDUCTION,
        );
        let want = c.masked_set_reduce_backward(&dy, &mask, how, set).unwrap();
        let got = g
            .masked_set_reduce_backward(&up(&g, &dy), &up(&g, &mask), how, set)
            .unwrap();
        check(
            &format!("masked_set_reduce_backward {how:?}"),
            &g,
            &got,
            &want,
            ELEMENTWISE,
        );
    }
}

#[test]
fn masked_softmax_with_padding_and_causal_masks() {
    let Some(g) = gpu("masked_softmax_with_padding_and_causal_masks") else {
        return;
    };
    let c = cpu();
    // Keys beyond 256 take the strided loop; batch 4 of 5 keys leaves the last set empty.
    for (batch, queries, keys) in [(4, 5, 5), (3, 4, 7), (2, 3, 300)] {
        let [x, mask] = masked_softmax_case(batch, queries, keys, 82);
        let (gx, gm) = (up(&g, &x), up(&g, &mask));
        for causal in [false, true] {
            if causal && queries != keys {
                continue;
            }
            let what = format!("masked_softmax {batch}x{queries}x{keys} causal={causal}");
            let y = c.masked_softmax(&x, &mask, causal).unwrap();
            let gy = g.masked_softmax(&gx, &gm, causal).unwrap();
            check(&what, &g, &gy, &y, REDUCTION);
            // The tape's backward of masked_softmax is softmax_backward of its output.
            let dy = randn(x.shape(), 83);
            let want = c.softmax_backward(&y, &dy).unwrap();
            let got = g.softmax_backward(&gy, &up(&g, &dy)).unwrap();
            check(&format!("{what} backward"), &g, &got, &want, REDUCTION);
        }
    }
}

#[test]
fn rq_spline_forward_inverse_and_backward() {
    let Some(g) = gpu("rq_spline_forward_inverse_and_backward") else {
        return;
    };
    let c = cpu();
    let (n, bins, bound) = (300, 6, 3.0);
    for inverse in [false, true] {
        let case = spline_case(n, bins, bound, inverse, 84 + inverse as u64);
        let [x, w, h, d] = [&case[0], &case[1], &case[2], &case[3]];
        let [gx, gw, gh, gd] = [0, 1, 2, 3].map(|i| up(&g, &case[i]));
        let what = format!("rq_spline inverse={inverse}");
        let (y, logdet) = c.rq_spline(x, w, h, d, bound, inverse).unwrap();
        let (gy, glogdet) = g.rq_spline(&gx, &gw, &gh, &gd, bound, inverse).unwrap();
        check(&format!("{what} y"), &g, &gy, &y, ELEMENTWISE);
        check(
            &format!("{what} logdet"),
            &g,
            &glogdet,
            &logdet,
            ELEMENTWISE,
        );
        let (dy, dlogdet) = (randn(&[n], 86), randn(&[n], 87));
        let want = c
            .rq_spline_backward(x, [w, h, d], bound, inverse, &dy, &dlogdet)
            .unwrap();
        let got = g
            .rq_spline_backward(
                &gx,
                [&gw, &gh, &gd],
                bound,
                inverse,
                &up(&g, &dy),
                &up(&g, &dlogdet),
            )
            .unwrap();
        for (name, (a, b)) in ["dx", "dwidths", "dheights", "dderivatives"]
            .iter()
            .zip(got.iter().zip(&want))
        {
            check(&format!("{what} backward {name}"), &g, a, b, ELEMENTWISE);
        }
    }
}

#[test]
fn gather_rows_forward_and_deterministic_backward() {
    let Some(g) = gpu("gather_rows_forward_and_deterministic_backward") else {
        return;
    };
    let c = cpu();
    let x = randn(&[10, 3, 2], 90);
    let indices = [3u32, 1, 3, 9, 0, 3, 1];
    let want = c.gather_rows(&x, &indices).unwrap();
    let got = g.gather_rows(&up(&g, &x), &indices).unwrap();
    check("gather_rows", &g, &got, &want, 0.0);
    let dy = randn(&[indices.len(), 3, 2], 91);
    let want = c.gather_rows_backward(&dy, &indices, &[10, 3, 2]).unwrap();
    let gdy = up(&g, &dy);
    let got = g.gather_rows_backward(&gdy, &indices, &[10, 3, 2]).unwrap();
    // Same summation order as the CPU (index order from zero): bit for bit.
    check("gather_rows_backward", &g, &got, &want, 0.0);
    let again = g.gather_rows_backward(&gdy, &indices, &[10, 3, 2]).unwrap();
    assert_eq!(g.download(&got).unwrap(), g.download(&again).unwrap());
}

#[test]
fn mse_forward_and_backward() {
    let Some(g) = gpu("mse_forward_and_backward") else {
        return;
    };
    let c = cpu();
    for shape in [&[1usize][..], &[33, 17][..], &[1000, 300][..]] {
        let p = randn(shape, 100);
        let t = randn(shape, 101);
        let want = c.mse(&p, &t).unwrap();
        let got = g.mse(&up(&g, &p), &up(&g, &t)).unwrap();
        check(&format!("mse {shape:?}"), &g, &got, &want, REDUCTION);
        let dy = Tensor::scalar(0.7);
        let want = c.mse_backward(&p, &t, &dy).unwrap();
        let got = g
            .mse_backward(&up(&g, &p), &up(&g, &t), &up(&g, &dy))
            .unwrap();
        check(
            &format!("mse_backward {shape:?}"),
            &g,
            &got,
            &want,
            ELEMENTWISE,
        );
    }
}

#[test]
fn adam_update_in_place_with_copy_on_write() {
    let Some(g) = gpu("adam_update_in_place_with_copy_on_write") else {
        return;
    };
    let c = cpu();
    for decoupled in [false, true] {
        let step = AdamStep {
            lr: 1e-2,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.05,
            decoupled,
            bias_correction1: 1.0 - 0.9f32.powi(3),
            bias_correction2: 1.0 - 0.999f32.powi(3),
        };
        let p0 = randn(&[31, 7], 110);
        let grad = randn(&[31, 7], 111);
        let m0 = randn(&[31, 7], 112);
        let v0 = uniform(&[31, 7], 0.0, 2.0, 113);
        let (mut p, mut m, mut v) = (p0.clone(), m0.clone(), v0.clone());
        c.adam_update(&mut p, &grad, &mut m, &mut v, &step).unwrap();

        let gp_shared = up(&g, &p0);
        let mut gp = gp_shared.clone(); // shares the buffer: must be copied, not overwritten
        let (mut gm, mut gv) = (up(&g, &m0), up(&g, &v0));
        g.adam_update(&mut gp, &up(&g, &grad), &mut gm, &mut gv, &step)
            .unwrap();
        let what = format!("adam_update decoupled={decoupled}");
        check(&format!("{what} param"), &g, &gp, &p, ELEMENTWISE);
        check(&format!("{what} m"), &g, &gm, &m, ELEMENTWISE);
        check(&format!("{what} v"), &g, &gv, &v, ELEMENTWISE);
        check(
            &format!("{what} shared copy untouched"),
            &g,
            &gp_shared,
            &p0,
            0.0,
        );
    }
}
