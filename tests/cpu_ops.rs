//! The CPU reference's forward semantics against direct formulas (naive loops in f64),
//! including the tiled and parallel matmul paths and numerically hard inputs.

mod common;

use amortize::backend::{cpu, MatLayout, MatmulDims, Reduction, UnaryOp};
use amortize::{ops, Tensor};
use common::{max_rel_err, randn, uniform};

/// Element (i, j) of op(X) for a row-major `[rows, cols]` X, transposed or not.
fn at(x: &[f32], cols: usize, i: usize, j: usize, transposed: bool) -> f64 {
    if transposed {
        x[j * cols + i] as f64
    } else {
        x[i * cols + j] as f64
    }
}

fn naive_matmul(a: &[f32], b: &[f32], layout: MatLayout, d: MatmulDims) -> Vec<f32> {
    let (ta, tb) = match layout {
        MatLayout::NN => (false, false),
        MatLayout::NT => (false, true),
        MatLayout::TN => (true, false),
    };
    let a_cols = if ta { d.m } else { d.k };
    let b_cols = if tb { d.k } else { d.n };
    let mut c = vec![0.0; d.batch * d.m * d.n];
    for bi in 0..d.batch {
        let a = &a[bi * d.m * d.k..];
        let b = &b[bi * d.k * d.n..];
        for i in 0..d.m {
            for j in 0..d.n {
                let s: f64 = (0..d.k)
                    .map(|p| at(a, a_cols, i, p, ta) * at(b, b_cols, p, j, tb))
                    .sum();
                c[(bi * d.m + i) * d.n + j] = s as f32;
            }
        }
    }
    c
}

#[test]
fn matmul_matches_naive_loop_for_every_layout_and_edge_shape() {
    // Tiny and odd shapes (dimensions ≤ 5 included), batches, and the parallel path:
    // 300·64·70 multiply-adds exceed the serial threshold and 300 rows split into row
    // blocks of 128, 128 and 44.
    let shapes = [
        (1, 1, 1, 1),
        (1, 3, 5, 7),
        (1, 4, 16, 16),
        (1, 17, 9, 33),
        (2, 64, 96, 80),
        (3, 5, 2, 19),
        (1, 300, 64, 70),
    ];
    for &(batch, m, k, n) in &shapes {
        for layout in [MatLayout::NN, MatLayout::NT, MatLayout::TN] {
            let (sa, sb) = match layout {
                MatLayout::NN => ([batch, m, k], [batch, k, n]),
                MatLayout::NT => ([batch, m, k], [batch, n, k]),
                MatLayout::TN => ([batch, k, m], [batch, k, n]),
            };
            let a = randn(&sa, 1);
            let b = randn(&sb, 2);
            let dims = MatmulDims { batch, m, k, n };
            let expect = naive_matmul(&a.to_vec().unwrap(), &b.to_vec().unwrap(), layout, dims);
            let (a, b) = if batch == 1 {
                (a.reshape(&sa[1..]).unwrap(), b.reshape(&sb[1..]).unwrap())
            } else {
                (a, b)
            };
            let c = ops::matmul(&a, &b, layout).unwrap();
            let want_shape: Vec<usize> = if batch == 1 {
                vec![m, n]
            } else {
                vec![batch, m, n]
            };
            assert_eq!(c.shape(), want_shape.as_slice());
            let err = max_rel_err(&c.to_vec().unwrap(), &expect);
            assert!(err < 1e-5, "{layout:?} {batch}x{m}x{k}x{n}: error {err}");
        }
    }
}

#[test]
fn matmul_slice_kernel_overwrites_garbage_in_the_output() {
    let (m, k, n) = (6, 5, 18);
    let a = randn(&[m, k], 3).to_vec().unwrap();
    let b = randn(&[k, n], 4).to_vec().unwrap();
    let mut c = vec![f32::NAN; m * n];
    let dims = MatmulDims { batch: 1, m, k, n };
    cpu::matmul(&a, &b, &mut c, MatLayout::NN, dims);
    let expect = naive_matmul(&a, &b, MatLayout::NN, dims);
    assert!(max_rel_err(&c, &expect) < 1e-5);
}

#[test]
fn binary_broadcast_adds_the_row_to_every_row() {
    let a = randn(&[3, 4], 5);
    let b = randn(&[4], 6);
    let y = ops::add(&a, &b).unwrap().to_vec().unwrap();
    let (av, bv) = (a.to_vec().unwrap(), b.to_vec().unwrap());
    for i in 0..3 {
        for j in 0..4 {
            assert_eq!(y[i * 4 + j], av[i * 4 + j] + bv[j]);
        }
    }
}

#[test]
fn unary_ops_match_their_formulas() {
    let x = randn(&[257], 7).to_vec().unwrap();
    for op in UnaryOp::ALL {
        let input: Vec<f32> = if op == UnaryOp::Log {
            x.iter().map(|v| v.abs() + 0.1).collect()
        } else {
            x.clone()
        };
        let y = ops::unary(op, &Tensor::from_slice(&input, &[257]).unwrap())
            .unwrap()
            .to_vec()
            .unwrap();
        for (&xi, &yi) in input.iter().zip(&y) {
            let v = xi as f64;
            let expect = match op {
                UnaryOp::Relu => v.max(0.0),
                UnaryOp::Gelu => {
                    0.5 * v
                        * (1.0
                            + ((2.0 / std::f64::consts::PI).sqrt() * (v + 0.044715 * v.powi(3)))
                                .tanh())
                }
                UnaryOp::Silu => v / (1.0 + (-v).exp()),
                UnaryOp::Tanh => v.tanh(),
                UnaryOp::Sigmoid => 1.0 / (1.0 + (-v).exp()),
                UnaryOp::Softplus => (1.0 + v.exp()).ln(),
                UnaryOp::Exp => v.exp(),
                UnaryOp::Log => v.ln(),
            };
            assert!(
                (yi as f64 - expect).abs() <= 1e-6 * expect.abs().max(1.0),
                "{op:?}({xi}) = {yi}, expected {expect}"
            );
        }
    }
}

#[test]
fn unary_derivatives_match_their_formulas_from_zero_to_saturation() {
    // SiLU's and GELU's backward read their gate back from the output (y/x): the grid
    // has x = 0, subnormal and tiny x, where that division would lose the gate, and
    // saturated x, where the gate is 0 or 1.
    let mut x: Vec<f32> = randn(&[257], 8).to_vec().unwrap();
    for v in [
        0.0f32, 1e-40, -1e-40, 1e-35, -1e-20, 1e-3, -1e-3, 20.0, -20.0, 90.0, -90.0,
    ] {
        x.push(v);
    }
    let n = x.len();
    let ones = Tensor::full(&[n], 1.0);
    for op in UnaryOp::ALL {
        let input: Vec<f32> = match op {
            UnaryOp::Log => x.iter().map(|v| v.abs() + 0.1).collect(),
            UnaryOp::Exp => x.iter().map(|v| v.clamp(-20.0, 20.0)).collect(),
            _ => x.clone(),
        };
        let xt = Tensor::from_slice(&input, &[n]).unwrap();
        let y = ops::unary(op, &xt).unwrap();
        let dx = ops::unary_backward(op, &xt, &y, &ones)
            .unwrap()
            .to_vec()
            .unwrap();
        for (&xi, &di) in input.iter().zip(&dx) {
            let v = xi as f64;
            let sigmoid = |z: f64| 1.0 / (1.0 + (-z).exp());
            let expect = match op {
                UnaryOp::Relu => f64::from(u8::from(v > 0.0)),
                UnaryOp::Gelu => {
                    let c = (2.0 / std::f64::consts::PI).sqrt();
                    let th = (c * (v + 0.044715 * v.powi(3))).tanh();
                    let du = c * (1.0 + 3.0 * 0.044715 * v * v);
                    0.5 * (1.0 + th) + 0.5 * v * (1.0 - th * th) * du
                }
                UnaryOp::Silu => sigmoid(v) * (1.0 + v * (1.0 - sigmoid(v))),
                UnaryOp::Tanh => 1.0 - v.tanh().powi(2),
                UnaryOp::Sigmoid => sigmoid(v) * (1.0 - sigmoid(v)),
                UnaryOp::Softplus => sigmoid(v),
                UnaryOp::Exp => v.exp(),
                UnaryOp::Log => 1.0 / v,
            };
            // f32 with a few roundings: 1e-5 of the scale holds them (the gate read back
            // as y/x adds about two).
            assert!(
                (di as f64 - expect).abs() <= 1e-5 * expect.abs().max(1.0),
                "{op:?}'({xi}) = {di}, expected {expect}"
            );
        }
    }
}

#[test]
fn activations_do_not_overflow_at_extremes() {
    let x = Tensor::from_vec(vec![-100.0, 100.0, -1e4, 1e4], &[4]).unwrap();
    let softplus = ops::unary(UnaryOp::Softplus, &x).unwrap().to_vec().unwrap();
    assert_eq!(softplus[1], 100.0);
    assert_eq!(softplus[3], 1e4);
    assert!(softplus[0] >= 0.0 && softplus[0] < 1e-40);
    let sigmoid = ops::unary(UnaryOp::Sigmoid, &x).unwrap().to_vec().unwrap();
    assert_eq!(sigmoid, vec![0.0f32.max(sigmoid[0]), 1.0, 0.0, 1.0]);
    assert!(sigmoid.iter().all(|v| v.is_finite()));
    let silu = ops::unary(UnaryOp::Silu, &x).unwrap().to_vec().unwrap();
    assert!(silu.iter().all(|v| v.is_finite()));
}

#[test]
fn softmax_log_softmax_logsumexp_are_stable_for_large_inputs() {
    // exp(1000) overflows f32 and f64: only a max-subtracted kernel gets these right.
    let x = Tensor::from_vec(
        vec![1000.0, 1001.0, 999.0, -1000.0, -1001.0, -999.0],
        &[2, 3],
    )
    .unwrap();
    let p = ops::softmax(&x).unwrap().to_vec().unwrap();
    let (e0, e1, e2) = ((-1.0f64).exp(), 1.0, (-2.0f64).exp());
    let z = e0 + e1 + e2;
    let expect = [e0 / z, e1 / z, e2 / z];
    for r in 0..2 {
        let row_expect = if r == 0 {
            expect
        } else {
            [expect[0], expect[2], expect[1]]
        };
        for j in 0..3 {
            assert!((p[r * 3 + j] as f64 - row_expect[j]).abs() < 1e-6);
        }
    }
    let lse = ops::logsumexp(&x).unwrap().to_vec().unwrap();
    assert!((lse[0] as f64 - (1001.0 + z.ln())).abs() < 1e-3);
    assert!((lse[1] as f64 - (-999.0 + z.ln())).abs() < 1e-3);
    let ls = ops::log_softmax(&x).unwrap().to_vec().unwrap();
    for (l, q) in ls.iter().zip(&p) {
        assert!((l.exp() - q).abs() < 1e-6);
    }
}

#[test]
fn layer_norm_matches_formula() {
    let (rows, cols) = (7, 10);
    let x = randn(&[rows, cols], 8);
    let gamma = uniform(&[cols], 0.5, 1.5, 9);
    let beta = randn(&[cols], 10);
    let (y, mean, rstd) = ops::layer_norm(&x, &gamma, &beta, 1e-5).unwrap();
    let (xv, g, b) = (
        x.to_vec().unwrap(),
        gamma.to_vec().unwrap(),
        beta.to_vec().unwrap(),
    );
    let (y, mean, rstd) = (
        y.to_vec().unwrap(),
        mean.to_vec().unwrap(),
        rstd.to_vec().unwrap(),
    );
    for r in 0..rows {
        let row = &xv[r * cols..(r + 1) * cols];
        let mu = row.iter().map(|&v| v as f64).sum::<f64>() / cols as f64;
        let var = row.iter().map(|&v| (v as f64 - mu).powi(2)).sum::<f64>() / cols as f64;
        let rs = 1.0 / (var + 1e-5).sqrt();
        assert!((mean[r] as f64 - mu).abs() < 1e-6 && (rstd[r] as f64 - rs).abs() < 1e-5 * rs);
        for j in 0..cols {
            let expect = (row[j] as f64 - mu) * rs * g[j] as f64 + b[j] as f64;
            assert!((y[r * cols + j] as f64 - expect).abs() < 1e-5);
        }
    }
}

#[test]
fn reductions_match_sums() {
    let x = randn(&[6, 5], 11);
    let xv = x.to_vec().unwrap();
    let rows = ops::reduce_rows(&x, Reduction::Mean).unwrap();
    assert_eq!(rows.shape(), &[5]);
    let feats = ops::reduce_features(&x, Reduction::Sum).unwrap();
    assert_eq!(feats.shape(), &[6]);
    for j in 0..5 {
        let s: f64 = (0..6).map(|i| xv[i * 5 + j] as f64).sum();
        assert!((rows.to_vec().unwrap()[j] as f64 - s / 6.0).abs() < 1e-6);
    }
    for i in 0..6 {
        let s: f64 = xv[i * 5..(i + 1) * 5].iter().map(|&v| v as f64).sum();
        assert!((feats.to_vec().unwrap()[i] as f64 - s).abs() < 1e-6);
    }
    assert!(
        (ops::sum_all(&x).unwrap().item().unwrap() as f64
            - xv.iter().map(|&v| v as f64).sum::<f64>())
        .abs()
            < 1e-5
    );
}

#[test]
fn masked_mean_ignores_padding_and_gives_zero_for_an_empty_set() {
    let x = randn(&[2, 3, 2], 12);
    let xv = x.to_vec().unwrap();
    let mask = Tensor::from_vec(vec![1., 0., 1., 0., 0., 0.], &[2, 3]).unwrap();
    let y = ops::masked_set_reduce(&x, &mask, Reduction::Mean)
        .unwrap()
        .to_vec()
        .unwrap();
    for f in 0..2 {
        assert!((y[f] - (xv[f] + xv[4 + f]) / 2.0).abs() < 1e-6);
        assert_eq!(y[2 + f], 0.0);
    }
    // Changing a padded element changes nothing.
    let mut xv2 = xv.clone();
    xv2[2] = 1e6;
    let y2 = ops::masked_set_reduce(
        &Tensor::from_vec(xv2, &[2, 3, 2]).unwrap(),
        &mask,
        Reduction::Mean,
    )
    .unwrap();
    assert_eq!(y2.to_vec().unwrap(), y);
}

#[test]
fn gather_and_mse_match_definitions() {
    let x = randn(&[4, 3], 13);
    let xv = x.to_vec().unwrap();
    let g = ops::gather_rows(&x, &[3, 3, 0]).unwrap().to_vec().unwrap();
    assert_eq!(&g[0..3], &xv[9..12]);
    assert_eq!(&g[3..6], &xv[9..12]);
    assert_eq!(&g[6..9], &xv[0..3]);
    let t = randn(&[4, 3], 14);
    let m = ops::mse(&x, &t).unwrap();
    assert_eq!(m.shape(), &[] as &[usize]);
    let expect: f64 = xv
        .iter()
        .zip(t.to_vec().unwrap())
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum::<f64>()
        / 12.0;
    assert!((m.item().unwrap() as f64 - expect).abs() < 1e-6);
}

#[test]
fn large_elementwise_ops_take_the_parallel_path_and_agree() {
    // ~2^17 elements: above the parallel threshold, so chunk offsets are exercised; rows
    // of 100 do not divide the chunk size, so chunks start in the middle of a row of the
    // broadcast operand.
    for cols in [64, 100] {
        let a = randn(&[(1 << 17) / cols, cols], 15);
        let b = randn(&[cols], 16);
        let (av, bv) = (a.to_vec().unwrap(), b.to_vec().unwrap());
        type Op = fn(&Tensor, &Tensor) -> amortize::Result<Tensor>;
        type Formula = fn(f32, f32) -> f32;
        let cases: [(Op, Formula); 4] = [
            (ops::add, |x, y| x + y),
            (ops::sub, |x, y| x - y),
            (ops::mul, |x, y| x * y),
            (ops::div, |x, y| x / y),
        ];
        for (op, f) in cases {
            let y = op(&a, &b).unwrap().to_vec().unwrap();
            assert!(y
                .iter()
                .enumerate()
                .all(|(i, &v)| v == f(av[i], bv[i % cols])));
        }
    }
    let a = randn(&[(1 << 17) / 64, 64], 15);
    let av = a.to_vec().unwrap();
    let t = ops::unary(UnaryOp::Tanh, &a).unwrap().to_vec().unwrap();
    assert!(t.iter().zip(&av).all(|(&v, &x)| v == x.tanh()));
}
