//! Parity of every WGSL op (forward and backward) with the CPU reference (DESIGN.md,
//! contract 2), Philox bit for bit (contract 3).
//!
//! Inputs are fresh random draws (never zeros); the backend runs in poison mode, so every
//! output buffer holds NaN before its kernel runs and an element the kernel forgets to
//! write fails the finiteness check. Tolerances: max relative error (|a − b| / max(1, |b|))
//! 1e-5 for elementwise ops, 1e-4 for reductions and matmuls. Shapes are small (the suite
//! runs on lavapipe in CI) and include sizes that are not multiples of the tiles.
//!
//! Without a wgpu adapter each test prints why and passes, unless
//! `AMORTIZE_REQUIRE_WGPU=1`, which turns the absence into a failure.
//! `AMORTIZE_WGPU_TEST_ADAPTER=N` tests adapter N instead of adapter 0.

mod common;

use std::sync::Arc;

use amortize::backend::cpu::CpuBackend;
use amortize::backend::wgpu::WgpuBackend;
use amortize::backend::{AdamStep, Backend, BinaryOp, MatLayout, MatmulDims, Reduction, UnaryOp};
use amortize::rng::{streams, PhiloxStream};
use amortize::Tensor;
use common::{masked_softmax_case, max_rel_err, randn, spline_case, uniform};

const ELEMENTWISE: f32 = 1e-5;
const REDUCTION: f32 = 1e-4;

/// The wgpu backend under test in poison mode (adapter 0, or the index in
/// `AMORTIZE_WGPU_TEST_ADAPTER`), or `None` (after saying why) when there is no adapter
/// and `AMORTIZE_REQUIRE_WGPU` is not 1.
fn gpu() -> Option<Arc<WgpuBackend>> {
    let index = std::env::var("AMORTIZE_WGPU_TEST_ADAPTER")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    match WgpuBackend::shared(index) {
        Ok(b) => {
            b.set_poison_outputs(true);
            Some(b)
        }
        Err(e) => {
            if std::env::var("AMORTIZE_REQUIRE_WGPU").is_ok_and(|v| v == "1") {
                panic!("AMORTIZE_REQUIRE_WGPU=1 but no wgpu backend: {e}");
            }
            eprintln!("skipping wgpu parity test: {e}");
            None
        }
    }
}

fn cpu() -> Arc<dyn Backend> {
    CpuBackend::shared()
}

/// A copy of a CPU tensor on the GPU.
fn up(g: &WgpuBackend, t: &Tensor) -> Tensor {
    g.upload(&t.to_vec().unwrap(), t.shape()).unwrap()
}

/// Scaled N(0, 1) draws.
fn randn_scaled(shape: &[usize], s: f32, seed: u64) -> Tensor {
    let v: Vec<f32> = randn(shape, seed)
        .to_vec()
        .unwrap()
        .iter()
        .map(|x| x * s)
        .collect();
    Tensor::from_vec(v, shape).unwrap()
}

/// Asserts that a GPU result matches the CPU reference: same shape, finite wherever the
/// reference is finite (catches unwritten NaN-poisoned elements), max relative error ≤ tol.
fn check(what: &str, g: &WgpuBackend, got: &Tensor, want: &Tensor, tol: f32) {
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let got = g.download(got).unwrap();
    let want = want.to_vec().unwrap();
    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
        if b.is_finite() {
            assert!(a.is_finite(), "{what}: element {i} is {a}, reference {b}");
        } else {
            assert!(
                a.is_nan() && b.is_nan() || a == b,
                "{what}: element {i} is {a}, reference {b}"
            );
        }
    }
    let finite: (Vec<f32>, Vec<f32>) = got
        .iter()
        .zip(&want)
        .filter(|(_, b)| b.is_finite())
        .map(|(a, b)| (*a, *b))
        .unzip();
    let err = max_rel_err(&finite.0, &finite.1);
    assert!(err <= tol, "{what}: max relative error {err:e} > {tol:e}");
}

#[test]
fn upload_download_and_fill_round_trip() {
    let Some(g) = gpu() else { return };
    for shape in [vec![0], vec![1], vec![3, 5], vec![2, 3, 257]] {
        let x = randn(&shape, 1);
        let back = g.download(&up(&g, &x)).unwrap();
        assert_eq!(back, x.to_vec().unwrap(), "round trip {shape:?}");
        let filled = g.fill(&shape, -1.25).unwrap();
        assert_eq!(filled.shape(), &shape[..]);
        assert!(g.download(&filled).unwrap().iter().all(|&v| v == -1.25));
    }
    let s = g.fill(&[], 3.5).unwrap();
    assert_eq!(s.item().unwrap(), 3.5);
}

#[test]
fn no_such_adapter_is_an_error_not_a_panic() {
    let err = WgpuBackend::shared(10_000).unwrap_err();
    assert!(err.to_string().contains("wgpu:10000"), "{err}");
}

#[test]
fn matmul_every_layout_and_edge_shape() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let shapes = [
        (1, 1, 1, 1),
        (1, 3, 5, 7),
        (1, 64, 64, 64),
        (1, 65, 33, 70),
        (2, 17, 64, 31),
        (3, 5, 130, 19),
        (1, 130, 7, 129),
        (1, 4, 0, 3),
    ];
    for &(batch, m, k, n) in &shapes {
        for layout in [MatLayout::NN, MatLayout::NT, MatLayout::TN] {
            let (sa, sb) = match layout {
                MatLayout::NN => ([batch, m, k], [batch, k, n]),
                MatLayout::NT => ([batch, m, k], [batch, n, k]),
                MatLayout::TN => ([batch, k, m], [batch, k, n]),
            };
            let (a, b) = (randn(&sa, 1), randn(&sb, 2));
            let dims = MatmulDims { batch, m, k, n };
            let out_shape = [batch, m, n];
            let want = c.matmul(&a, &b, layout, dims, &out_shape).unwrap();
            let got = g
                .matmul(&up(&g, &a), &up(&g, &b), layout, dims, &out_shape)
                .unwrap();
            check(
                &format!("matmul {layout:?} {batch}x{m}x{k}x{n}"),
                &g,
                &got,
                &want,
                REDUCTION,
            );
        }
    }
}

#[test]
fn binary_and_scale_with_and_without_broadcast() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let a = randn(&[7, 13], 3);
    let b_full = uniform(&[7, 13], 0.5, 2.0, 4);
    let b_row = uniform(&[13], 0.5, 2.0, 5);
    for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div] {
        for b in [&b_full, &b_row] {
            let want = c.binary(op, &a, b).unwrap();
            let got = g.binary(op, &up(&g, &a), &up(&g, b)).unwrap();
            check(
                &format!("{} {:?}", op.name(), b.shape()),
                &g,
                &got,
                &want,
                ELEMENTWISE,
            );
        }
    }
    let x = randn(&[3, 1001], 6);
    let want = c.scale(&x, -0.37).unwrap();
    let got = g.scale(&up(&g, &x), -0.37).unwrap();
    check("scale", &g, &got, &want, ELEMENTWISE);
}

#[test]
fn unary_forward_and_backward_every_op() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    for op in UnaryOp::ALL {
        let x = match op {
            UnaryOp::Log => uniform(&[5, 301], 0.05, 8.0, 7),
            _ => randn_scaled(&[5, 301], 3.0, 7),
        };
        let dy = randn(&[5, 301], 8);
        let y = c.unary(op, &x).unwrap();
        let (gx, gdy) = (up(&g, &x), up(&g, &dy));
        let gy = g.unary(op, &gx).unwrap();
        check(op.name(), &g, &gy, &y, ELEMENTWISE);
        let want = c.unary_backward(op, &x, &y, &dy).unwrap();
        let got = g.unary_backward(op, &gx, &up(&g, &y), &gdy).unwrap();
        check(
            &format!("{} backward", op.name()),
            &g,
            &got,
            &want,
            ELEMENTWISE,
        );
    }
}

#[test]
fn concat_and_split_along_features() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let parts = [
        randn(&[2, 3, 3], 9),
        randn(&[2, 3, 1], 10),
        randn(&[2, 3, 5], 11),
    ];
    let refs: Vec<&Tensor> = parts.iter().collect();
    let want = c.concat(&refs).unwrap();
    let gparts: Vec<Tensor> = parts.iter().map(|p| up(&g, p)).collect();
    let grefs: Vec<&Tensor> = gparts.iter().collect();
    let got = g.concat(&grefs).unwrap();
    check("concat", &g, &got, &want, 0.0);
    let x = randn(&[4, 2, 9], 12);
    let want = c.split(&x, &[2, 0, 4, 3]).unwrap();
    let got = g.split(&up(&g, &x), &[2, 0, 4, 3]).unwrap();
    assert_eq!(got.len(), want.len());
    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
        check(&format!("split part {i}"), &g, a, b, 0.0);
    }
}

#[test]
fn reductions_and_their_backward() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    for shape in [
        vec![37, 19],
        vec![3, 300, 5],
        vec![5, 600],
        vec![1, 1],
        vec![7],
    ] {
        let x = randn(&shape, 13);
        let gx = up(&g, &x);
        for how in [Reduction::Sum, Reduction::Mean] {
            let want = c.reduce_rows(&x, how).unwrap();
            let got = g.reduce_rows(&gx, how).unwrap();
            check(
                &format!("reduce_rows {how:?} {shape:?}"),
                &g,
                &got,
                &want,
                REDUCTION,
            );
            let dy = randn(want.shape(), 14);
            let want_b = c.reduce_rows_backward(&dy, how, &shape).unwrap();
            let got_b = g.reduce_rows_backward(&up(&g, &dy), how, &shape).unwrap();
            let what = format!("reduce_rows_backward {how:?} {shape:?}");
            check(&what, &g, &got_b, &want_b, ELEMENTWISE);

            let want = c.reduce_features(&x, how).unwrap();
            let got = g.reduce_features(&gx, how).unwrap();
            let what = format!("reduce_features {how:?} {shape:?}");
            check(&what, &g, &got, &want, REDUCTION);
            let dy = randn(want.shape(), 15);
            let want_b = c.reduce_features_backward(&dy, how, &shape).unwrap();
            let got_b = g
                .reduce_features_backward(&up(&g, &dy), how, &shape)
                .unwrap();
            let what = format!("reduce_features_backward {how:?} {shape:?}");
            check(&what, &g, &got_b, &want_b, ELEMENTWISE);
        }
    }
}

#[test]
fn softmax_family_forward_and_backward() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    for shape in [vec![7, 13], vec![3, 700], vec![2, 2, 1], vec![4, 256]] {
        let x = randn_scaled(&shape, 2.0, 16);
        let dy = randn(&shape, 17);
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
        let dl = randn(lse.shape(), 18);
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
fn masked_softmax_with_padding_and_causal_masks() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    // Keys beyond 256 take the strided loop; batch 4 of 5 keys leaves the last set empty.
    for (batch, queries, keys) in [(4, 5, 5), (3, 4, 7), (2, 3, 300)] {
        let [x, mask] = masked_softmax_case(batch, queries, keys, 44);
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
            let dy = randn(x.shape(), 45);
            let want = c.softmax_backward(&y, &dy).unwrap();
            let got = g.softmax_backward(&gy, &up(&g, &dy)).unwrap();
            check(&format!("{what} backward"), &g, &got, &want, REDUCTION);
        }
    }
}

#[test]
fn rq_spline_forward_inverse_and_backward() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let (n, bins, bound) = (300, 6, 3.0);
    for inverse in [false, true] {
        let case = spline_case(n, bins, bound, inverse, 46 + inverse as u64);
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
        let (dy, dlogdet) = (randn(&[n], 48), randn(&[n], 49));
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
fn layer_norm_forward_and_backward() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    for shape in [vec![9, 31], vec![4, 300], vec![2, 3, 17]] {
        let cols = *shape.last().unwrap();
        let x = randn_scaled(&shape, 1.5, 19);
        let gamma = uniform(&[cols], 0.5, 1.5, 20);
        let beta = randn(&[cols], 21);
        let dy = randn(&shape, 22);
        let (y, mean, rstd) = c.layer_norm(&x, &gamma, &beta, 1e-5).unwrap();
        let (gx, gg) = (up(&g, &x), up(&g, &gamma));
        let (gy, gmean, grstd) = g.layer_norm(&gx, &gg, &up(&g, &beta), 1e-5).unwrap();
        check(&format!("layer_norm y {shape:?}"), &g, &gy, &y, REDUCTION);
        check(
            &format!("layer_norm mean {shape:?}"),
            &g,
            &gmean,
            &mean,
            REDUCTION,
        );
        check(
            &format!("layer_norm rstd {shape:?}"),
            &g,
            &grstd,
            &rstd,
            REDUCTION,
        );
        let (dx, dgamma, dbeta) = c
            .layer_norm_backward(&x, &gamma, &mean, &rstd, &dy)
            .unwrap();
        let (gdx, gdgamma, gdbeta) = g
            .layer_norm_backward(&gx, &gg, &up(&g, &mean), &up(&g, &rstd), &up(&g, &dy))
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
            &gdgamma,
            &dgamma,
            REDUCTION,
        );
        check(
            &format!("layer_norm dbeta {shape:?}"),
            &g,
            &gdbeta,
            &dbeta,
            REDUCTION,
        );
    }
}

#[test]
fn masked_set_reduce_forward_and_backward() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let (batch, set, feat) = (5, 7, 11);
    let x = randn(&[batch, set, feat], 23);
    // A ragged mask: set b keeps its first (b·2) mod 8 elements; set 0 is empty.
    let mut mask = vec![0.0f32; batch * set];
    for b in 0..batch {
        for s in 0..((b * 2) % 8).min(set) {
            mask[b * set + s] = 1.0;
        }
    }
    let mask = Tensor::from_vec(mask, &[batch, set]).unwrap();
    let (gx, gm) = (up(&g, &x), up(&g, &mask));
    for how in [Reduction::Sum, Reduction::Mean] {
        let want = c.masked_set_reduce(&x, &mask, how).unwrap();
        let got = g.masked_set_reduce(&gx, &gm, how).unwrap();
        check(
            &format!("masked_set_reduce {how:?}"),
            &g,
            &got,
            &want,
            REDUCTION,
        );
        let dy = randn(&[batch, feat], 24);
        let want = c.masked_set_reduce_backward(&dy, &mask, how, set).unwrap();
        let got = g
            .masked_set_reduce_backward(&up(&g, &dy), &gm, how, set)
            .unwrap();
        let what = format!("masked_set_reduce_backward {how:?}");
        check(&what, &g, &got, &want, ELEMENTWISE);
    }
}

#[test]
fn gather_rows_forward_and_backward_with_repeats() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    let x = randn(&[10, 3, 4], 25);
    let indices = [3u32, 0, 9, 3, 3, 7, 0];
    let want = c.gather_rows(&x, &indices).unwrap();
    let got = g.gather_rows(&up(&g, &x), &indices).unwrap();
    check("gather_rows", &g, &got, &want, 0.0);
    let dy = randn(&[indices.len(), 3, 4], 26);
    let want = c.gather_rows_backward(&dy, &indices, &[10, 3, 4]).unwrap();
    let got = g
        .gather_rows_backward(&up(&g, &dy), &indices, &[10, 3, 4])
        .unwrap();
    check("gather_rows_backward", &g, &got, &want, 0.0);
}

#[test]
fn mse_forward_and_backward() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    for shape in [vec![33, 7], vec![3, 4100], vec![1]] {
        let p = randn(&shape, 27);
        let t = randn(&shape, 28);
        let (gp, gt) = (up(&g, &p), up(&g, &t));
        let want = c.mse(&p, &t).unwrap();
        let got = g.mse(&gp, &gt).unwrap();
        check(&format!("mse {shape:?}"), &g, &got, &want, REDUCTION);
        let dy = Tensor::scalar(0.75);
        let want = c.mse_backward(&p, &t, &dy).unwrap();
        let got = g.mse_backward(&gp, &gt, &up(&g, &dy)).unwrap();
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
fn adam_update_in_place_and_copy_on_write() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    for decoupled in [false, true] {
        let step = AdamStep {
            lr: 1e-2,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.1,
            decoupled,
            bias_correction1: 1.0 - 0.9f32.powi(3),
            bias_correction2: 1.0 - 0.999f32.powi(3),
        };
        let shape = [17, 23];
        let (mut p, grad) = (randn(&shape, 29), randn(&shape, 30));
        let mut m = randn_scaled(&shape, 0.1, 31);
        let mut v = uniform(&shape, 0.01, 0.2, 32);
        let (mut gp, ggrad, mut gm, mut gv) = (up(&g, &p), up(&g, &grad), up(&g, &m), up(&g, &v));
        let before = gp.clone();
        let before_host = p.to_vec().unwrap();
        for _ in 0..2 {
            c.adam_update(&mut p, &grad, &mut m, &mut v, &step).unwrap();
            g.adam_update(&mut gp, &ggrad, &mut gm, &mut gv, &step)
                .unwrap();
        }
        let what = format!("adam (decoupled {decoupled})");
        check(&format!("{what} param"), &g, &gp, &p, ELEMENTWISE);
        check(&format!("{what} m"), &g, &gm, &m, ELEMENTWISE);
        check(&format!("{what} v"), &g, &gv, &v, ELEMENTWISE);
        assert_eq!(
            g.download(&before).unwrap(),
            before_host,
            "{what}: a tensor sharing the parameter's buffer changed"
        );
    }
}

#[test]
fn philox_u32_stream_is_bit_for_bit_the_cpu_stream() {
    let Some(g) = gpu() else { return };
    let cases = [
        (0u64, 0u32, 0u32, 0u32, 0u64, 1000usize),
        (0x0123_4567_89ab_cdef, streams::SAMPLER, 7, 9, 0, 777),
        (u64::MAX, u32::MAX, u32::MAX, u32::MAX, 5, 64),
        (42, streams::TEST, 12, 3, (1u64 << 32) - 3, 8),
    ];
    for (seed, stream, step, lane, first, blocks) in cases {
        let got = g
            .philox_fill_u32(seed, stream, step, lane, first, blocks)
            .unwrap();
        let s = PhiloxStream::at_step(seed, stream, step, lane);
        let want: Vec<u32> = (0..blocks as u64)
            .flat_map(|b| s.block(first + b))
            .collect();
        assert_eq!(got.len(), want.len());
        if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
            panic!(
                "seed {seed:x} stream {stream} step {step} lane {lane}: word {i} (block {}) \
                 is {:#010x}, the CPU stream has {:#010x}",
                first + i as u64 / 4,
                got[i],
                want[i]
            );
        }
    }
}

#[test]
fn philox_normals_match_the_cpu_box_muller() {
    let Some(g) = gpu() else { return };
    let blocks = 513;
    let got = g
        .philox_fill_normal(7, streams::SAMPLER, 5, 11, blocks)
        .unwrap();
    let mut want = vec![0.0; blocks * 4];
    PhiloxStream::at_step(7, streams::SAMPLER, 5, 11).fill_normal(0.0, 1.0, &mut want);
    let want = Tensor::from_vec(want, &[blocks * 4]).unwrap();
    check("philox normals", &g, &got, &want, ELEMENTWISE);
}

#[test]
fn many_queued_ops_reuse_buffers_and_stay_exact() {
    let Some(g) = gpu() else { return };
    let c = cpu();
    // More dispatches than the pending limit and the parameter ring, with buffers freed
    // and reused between them: the result must be the CPU's, bit for bit.
    let x0 = randn(&[3, 37], 33);
    let (mut x, mut gx) = (x0.clone(), up(&g, &x0));
    for i in 0..1500 {
        let s = if i % 2 == 0 { 1.001 } else { 0.999 };
        x = c.scale(&x, s).unwrap();
        gx = g.scale(&gx, s).unwrap();
    }
    check("1500 chained scales", &g, &gx, &x, 0.0);
}

#[test]
fn reductions_are_deterministic() {
    let Some(g) = gpu() else { return };
    let x = up(&g, &randn(&[300, 257], 34));
    let a = g
        .download(&g.reduce_rows(&x, Reduction::Sum).unwrap())
        .unwrap();
    let b = g
        .download(&g.reduce_rows(&x, Reduction::Sum).unwrap())
        .unwrap();
    assert_eq!(a, b);
    let a = g.download(&g.mse(&x, &x).unwrap()).unwrap();
    assert_eq!(a, vec![0.0]);
}

#[test]
fn ops_on_wgpu_tensors_match_the_cpu_through_the_device_api() {
    let Some(g) = gpu() else { return };
    use amortize::{ops, Device};
    let device = Device::Wgpu(g.index());
    assert_eq!(
        amortize::backend::for_device(device).unwrap().device(),
        device
    );
    // A linear layer with a GELU and an MSE loss, the way a training step calls the ops.
    let x = randn(&[19, 10], 35);
    let w = randn_scaled(&[7, 10], 0.3, 36);
    let b = randn(&[7], 37);
    let t = randn(&[19, 7], 38);
    let forward = |x: &Tensor, w: &Tensor, b: &Tensor, t: &Tensor| {
        let h = ops::matmul(x, w, MatLayout::NT).unwrap();
        let h = ops::add(&h, b).unwrap();
        let h = ops::unary(UnaryOp::Gelu, &h).unwrap();
        ops::mse(&h, t).unwrap()
    };
    let want = forward(&x, &w, &b, &t);
    let on = |t: &Tensor| t.to_device(device).unwrap();
    let got = forward(&on(&x), &on(&w), &on(&b), &on(&t));
    assert_eq!(got.device(), device);
    let (got, want) = (got.item().unwrap(), want.item().unwrap());
    assert!(
        (got - want).abs() <= REDUCTION * want.abs().max(1.0),
        "{got} vs {want}"
    );
}

#[test]
fn rq_spline_gradients_through_the_tape_match_the_cpu() {
    let Some(g) = gpu() else { return };
    use amortize::{Device, Tape};
    // L = Σ r·[y, logdet] for random r: the tape's RqSpline node (concat of both outputs,
    // split of the upstream gradient, rq_spline_backward) on the device.
    let (n, bound) = (40, 3.0);
    let device = Device::Wgpu(g.index());
    for inverse in [false, true] {
        let case = spline_case(n, 5, bound, inverse, 53 + inverse as u64);
        let r = randn(&[2 * n], 55);
        let run = |device: Device| {
            let mut tape = Tape::new();
            let v: Vec<_> = case
                .iter()
                .map(|t| tape.leaf(t.to_device(device).unwrap()))
                .collect();
            let (y, logdet) = tape
                .rq_spline(v[0], [v[1], v[2], v[3]], bound, inverse)
                .unwrap();
            let both = tape.concat(&[y, logdet]).unwrap();
            let r = tape.constant(r.to_device(device).unwrap());
            let weighted = tape.mul(both, r).unwrap();
            let loss = tape.reduce_all(weighted, Reduction::Sum).unwrap();
            let grads = tape.backward(loss).unwrap();
            v.iter()
                .map(|&x| grads.get(x).unwrap().to_vec().unwrap())
                .collect::<Vec<_>>()
        };
        let (want, got) = (run(Device::Cpu), run(device));
        for (name, (a, b)) in ["x", "widths", "heights", "derivatives"]
            .iter()
            .zip(got.iter().zip(&want))
        {
            let err = max_rel_err(a, b);
            assert!(
                err <= ELEMENTWISE,
                "d{name} inverse={inverse}: max relative error {err:e}"
            );
        }
    }
}
