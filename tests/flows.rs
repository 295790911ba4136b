//! Conditional coupling flows: the spline op's gradients, invertibility, log-determinants
//! against a numerical Jacobian, a trained conditional flow against the true density, and
//! bad input. Everything is seeded; run with `cargo test --release --test flows`.

mod common;

use amortize::backend::UnaryOp;
use amortize::nn::{
    ConditionalFlow, Conditioner, CouplingKind, CouplingLayer, FlowConfig, Permutation,
};
use amortize::optim::{Adam, AdamConfig};
use amortize::rng::{streams, PhiloxStream};
use amortize::{ops, ParamStore, Tape, Tensor, Var};
use common::{grad_check, randn, spline_case};

// ---------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------

fn small_conditioner() -> Conditioner {
    Conditioner {
        width: 16,
        hidden_layers: 2,
        activation: UnaryOp::Tanh,
    }
}

/// Overwrites every parameter with N(0, std²) draws, so that zero-initialized layers
/// become non-trivial maps (the identity would pass every test below trivially).
fn randomize(store: &mut ParamStore, std: f32, seed: u64) {
    let ids: Vec<_> = store.iter().map(|(id, _, _)| id).collect();
    for (i, id) in ids.into_iter().enumerate() {
        let shape = store.get(id).shape().to_vec();
        let mut v = vec![0.0; shape.iter().product()];
        PhiloxStream::new(seed, streams::TEST, i as u32).fill_normal(0.0, std, &mut v);
        store.set(id, Tensor::from_vec(v, &shape).unwrap()).unwrap();
    }
}

fn values(tape: &Tape, v: Var) -> Vec<f32> {
    tape.value(v).to_vec().unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn scaled(t: Tensor, s: f32) -> Tensor {
    ops::scale(&t, s).unwrap()
}

// ---------------------------------------------------------------------------------------
// the rq_spline op: gradients by central finite differences (as tests/grad_check.rs)
// ---------------------------------------------------------------------------------------

#[test]
fn rq_spline_op_gradients_both_directions() {
    for inverse in [false, true] {
        let inputs = spline_case(12, 5, 3.0, inverse, 11 + inverse as u64);
        // Both outputs enter the checked scalar: y and logdet concatenated.
        grad_check(
            &format!("rq_spline inverse={inverse}"),
            &inputs,
            usize::MAX,
            |t, v| {
                let (y, ld) = t.rq_spline(v[0], [v[1], v[2], v[3]], 3.0, inverse)?;
                t.concat(&[y, ld])
            },
        );
    }
}

#[test]
fn rq_spline_op_inverts_and_has_identity_tails() {
    let inputs = spline_case(200, 8, 4.0, false, 5);
    let [x, w, h, d] = [&inputs[0], &inputs[1], &inputs[2], &inputs[3]];
    let (y, ld) = ops::rq_spline(x, w, h, d, 4.0, false).unwrap();
    let (x2, ld2) = ops::rq_spline(&y, w, h, d, 4.0, true).unwrap();
    let (xv, yv) = (x.to_vec().unwrap(), y.to_vec().unwrap());
    assert!(max_abs_diff(&x2.to_vec().unwrap(), &xv) < 1e-5);
    let sum: Vec<f32> = ops::add(&ld, &ld2).unwrap().to_vec().unwrap();
    assert!(sum.iter().all(|s| s.abs() < 1e-5), "logdets do not cancel");
    // The last two inputs lie outside [−B, B]: identity there.
    for i in 198..200 {
        assert_eq!(yv[i], xv[i]);
        assert_eq!(ld.to_vec().unwrap()[i], 0.0);
    }
    // Monotone: sorting x sorts y.
    // Monotone: one element's knots on a sorted grid give sorted outputs.
    let grid: Vec<f32> = (0..400).map(|i| -4.5 + 9.0 * i as f32 / 399.0).collect();
    let row = |t: &Tensor, n: usize| -> Tensor {
        let v = t.to_vec().unwrap()[..n].repeat(400);
        Tensor::from_vec(v, &[400, n]).unwrap()
    };
    let (w1, h1, d1) = (row(w, 8), row(h, 8), row(d, 9));
    let g = Tensor::from_vec(grid, &[400]).unwrap();
    let (gy, gld) = ops::rq_spline(&g, &w1, &h1, &d1, 4.0, false).unwrap();
    let gy = gy.to_vec().unwrap();
    assert!(gy.windows(2).all(|p| p[1] > p[0]), "not increasing");
    assert!(gld.to_vec().unwrap().iter().all(|v| v.is_finite()));
}

#[test]
fn rq_spline_op_rejects_bad_shapes() {
    let inputs = spline_case(6, 4, 3.0, false, 9);
    let [x, w, h, d] = [&inputs[0], &inputs[1], &inputs[2], &inputs[3]];
    assert!(
        ops::rq_spline(x, w, h, w, 3.0, false).is_err(),
        "derivs [n, K]"
    );
    assert!(
        ops::rq_spline(x, w, d, d, 3.0, false).is_err(),
        "heights [n, K+1]"
    );
    let x5 = Tensor::zeros(&[5]);
    assert!(ops::rq_spline(&x5, w, h, d, 3.0, false).is_err(), "x rows");
    assert!(ops::rq_spline(x, w, h, d, 0.0, false).is_err(), "bound 0");
    assert!(
        ops::rq_spline(x, w, h, d, f32::NAN, false).is_err(),
        "bound NaN"
    );
}

// ---------------------------------------------------------------------------------------
// coupling layers and flows: invertibility and log-determinants
// ---------------------------------------------------------------------------------------

fn kinds() -> [CouplingKind; 2] {
    [
        CouplingKind::affine(),
        CouplingKind::Spline {
            bins: 6,
            bound: 2.5,
        },
    ]
}

#[test]
fn coupling_layers_start_as_the_identity() {
    for kind in kinds() {
        let mut store = ParamStore::new();
        let mut rng = PhiloxStream::new(1, streams::INIT, 0);
        let layer =
            CouplingLayer::new(&mut store, "c", 3, 2, kind, small_conditioner(), &mut rng).unwrap();
        let mut tape = Tape::no_grad();
        let x = tape.constant(scaled(randn(&[50, 3], 2), 2.0));
        let c = tape.constant(randn(&[50, 2], 3));
        let (y, ld) = layer.forward(&mut tape, &store, x, Some(c)).unwrap();
        assert!(
            max_abs_diff(&values(&tape, y), &values(&tape, x)) < 1e-5,
            "{kind:?}"
        );
        assert!(values(&tape, ld).iter().all(|v| v.abs() < 1e-5), "{kind:?}");
    }
}

#[test]
fn coupling_inverse_of_forward_is_identity() {
    for kind in kinds() {
        for (dim, cdim) in [(3, 2), (2, 0), (1, 2)] {
            let mut store = ParamStore::new();
            let mut rng = PhiloxStream::new(2, streams::INIT, 0);
            let layer = CouplingLayer::new(
                &mut store,
                "c",
                dim,
                cdim,
                kind,
                small_conditioner(),
                &mut rng,
            )
            .unwrap();
            randomize(&mut store, random_std(kind), 3);
            let mut tape = Tape::no_grad();
            // Std 1.5 puts some of the inputs in the spline's identity tails.
            let x = tape.constant(scaled(randn(&[256, dim], 4), 1.5));
            let c = (cdim > 0).then(|| tape.constant(randn(&[256, cdim], 5)));
            let (y, ld) = layer.forward(&mut tape, &store, x, c).unwrap();
            let (x2, ld2) = layer.inverse(&mut tape, &store, y, c).unwrap();
            let what = format!("{kind:?} dim {dim} context {cdim}");
            let err = max_abs_diff(&values(&tape, x2), &values(&tape, x));
            assert!(err < 1e-4, "{what}: |inverse(forward(x)) − x| = {err}");
            let moved = max_abs_diff(&values(&tape, y), &values(&tape, x));
            assert!(moved > 0.1, "{what}: the randomized layer is the identity");
            let ld_sum: Vec<f32> = values(&tape, ld)
                .iter()
                .zip(values(&tape, ld2))
                .map(|(a, b)| a + b)
                .collect();
            assert!(ld_sum.iter().all(|s| s.abs() < 1e-4), "{what}: logdets");
        }
    }
}

/// The scale of randomized parameters: large enough for log-dets of O(1), small enough
/// that spline bins stay well conditioned (with std 0.4 some bins get slopes ≈ 1e-3, and
/// then f32 rounding of y alone moves f⁻¹(y) by ≈ 1e-4).
fn random_std(kind: CouplingKind) -> f32 {
    match kind {
        CouplingKind::Affine { .. } => 0.4,
        CouplingKind::Spline { .. } => 0.15,
    }
}

/// A flow with randomized couplings and an ActNorm initialized on data of scale ≠ 1.
fn random_flow(
    kind: CouplingKind,
    dim: usize,
    cdim: usize,
    seed: u64,
) -> (ConditionalFlow, ParamStore) {
    let mut store = ParamStore::new();
    let mut rng = PhiloxStream::new(seed, streams::INIT, 0);
    let config = FlowConfig {
        dim,
        context_dim: cdim,
        layers: 3,
        kind,
        conditioner: small_conditioner(),
        permutation: Permutation::Random,
    };
    let flow = ConditionalFlow::new(&mut store, "flow", config, &mut rng).unwrap();
    randomize(&mut store, 0.75 * random_std(kind), seed + 1);
    let data = ops::add(
        &scaled(randn(&[500, dim], seed + 2), 1.7),
        &Tensor::full(&[dim], 0.3),
    )
    .unwrap();
    flow.initialize(&mut store, &data).unwrap();
    (flow, store)
}

#[test]
fn flow_inverse_of_forward_is_identity() {
    for kind in kinds() {
        let (flow, store) = random_flow(kind, 3, 2, 10);
        let mut tape = Tape::no_grad();
        let theta = tape.constant(
            ops::add(&scaled(randn(&[300, 3], 4), 2.0), &Tensor::full(&[3], 0.3)).unwrap(),
        );
        let c = Some(tape.constant(randn(&[300, 2], 5)));
        let (z, ld) = flow.forward(&mut tape, &store, theta, c).unwrap();
        let (theta2, ld2) = flow.inverse(&mut tape, &store, z, c).unwrap();
        let err = max_abs_diff(&values(&tape, theta2), &values(&tape, theta));
        assert!(err < 1e-4, "{kind:?}: |f⁻¹(f(θ)) − θ| = {err}");
        let (lf, li) = (values(&tape, ld), values(&tape, ld2));
        assert!(
            lf.iter().zip(&li).all(|(a, b)| (a + b).abs() < 1e-4),
            "{kind:?}"
        );
        // And the other way round, from base draws.
        let z0 = tape.constant(randn(&[300, 3], 6));
        let (t0, _) = flow.inverse(&mut tape, &store, z0, c).unwrap();
        let (z1, _) = flow.forward(&mut tape, &store, t0, c).unwrap();
        let err = max_abs_diff(&values(&tape, z1), &values(&tape, z0));
        assert!(err < 1e-4, "{kind:?}: |f(f⁻¹(z)) − z| = {err}");
    }
}

/// log |det J| of `map` at `x` (one row of `dim`) from central differences of step h,
/// taken in f64 from the f32 outputs; the determinant by LU (nalgebra).
fn numerical_log_det(
    dim: usize,
    x: &[f32],
    h: f32,
    map: impl Fn(&[f32], usize) -> Vec<f32>,
) -> f64 {
    // All 2·dim perturbed copies in one batch.
    let mut batch = Vec::with_capacity(2 * dim * dim);
    for j in 0..dim {
        for sign in [1.0f32, -1.0] {
            let mut row = x.to_vec();
            row[j] += sign * h;
            batch.extend(row);
        }
    }
    let out = map(&batch, 2 * dim);
    let mut jac = nalgebra::DMatrix::<f64>::zeros(dim, dim);
    for j in 0..dim {
        let plus = &out[(2 * j) * dim..(2 * j + 1) * dim];
        let minus = &out[(2 * j + 1) * dim..(2 * j + 2) * dim];
        for i in 0..dim {
            jac[(i, j)] = (plus[i] as f64 - minus[i] as f64) / (2.0 * h as f64);
        }
    }
    jac.determinant().abs().ln()
}

/// Tolerance of the numerical log-determinant: with h = 1e-3 the f32 rounding of outputs
/// of size ≲ 10 gives ≈ 6e-7·10/1e-3 ≈ 6e-3·… per entry at worst, in practice ≈ 1e-4; the
/// truncation error is ≈ h²·f‴ ≈ 1e-6, and the spline's second derivative jumps at its
/// knots, which costs O(h) ≈ 1e-3 next to one. A wrong log-det (a missing layer, a sign)
/// is off by O(0.1–1) with these randomized parameters.
const LOGDET_TOL: f64 = 5e-3;

#[test]
fn log_determinants_match_numerical_jacobians() {
    for kind in kinds() {
        for (dim, cdim) in [(2, 1), (3, 2)] {
            // A single coupling layer.
            let mut store = ParamStore::new();
            let mut rng = PhiloxStream::new(20, streams::INIT, 0);
            let layer = CouplingLayer::new(
                &mut store,
                "c",
                dim,
                cdim,
                kind,
                small_conditioner(),
                &mut rng,
            )
            .unwrap();
            randomize(&mut store, random_std(kind), 21);
            let ctx = randn(&[1, cdim], 22).to_vec().unwrap();
            let layer_map = |rows_data: &[f32], rows: usize| -> Vec<f32> {
                let mut tape = Tape::no_grad();
                let x = tape.constant(Tensor::from_slice(rows_data, &[rows, dim]).unwrap());
                let c: Vec<f32> = (0..rows).flat_map(|_| ctx.clone()).collect();
                let c = tape.constant(Tensor::from_vec(c, &[rows, cdim]).unwrap());
                let (y, _) = layer.forward(&mut tape, &store, x, Some(c)).unwrap();
                values(&tape, y)
            };
            // The full flow.
            let (flow, fstore) = random_flow(kind, dim, cdim, 30);
            let flow_map = |rows_data: &[f32], rows: usize| -> Vec<f32> {
                let mut tape = Tape::no_grad();
                let x = tape.constant(Tensor::from_slice(rows_data, &[rows, dim]).unwrap());
                let c: Vec<f32> = (0..rows).flat_map(|_| ctx.clone()).collect();
                let c = tape.constant(Tensor::from_vec(c, &[rows, cdim]).unwrap());
                let (z, _) = flow.forward(&mut tape, &fstore, x, Some(c)).unwrap();
                values(&tape, z)
            };
            let points = scaled(randn(&[8, dim], 23), 1.5).to_vec().unwrap();
            for p in points.chunks(dim) {
                let c = Tensor::from_slice(&ctx, &[1, cdim]).unwrap();
                let x = Tensor::from_slice(p, &[1, dim]).unwrap();
                let mut tape = Tape::no_grad();
                let (xv, cv) = (tape.constant(x), tape.constant(c));
                let (_, ld) = layer.forward(&mut tape, &store, xv, Some(cv)).unwrap();
                let (_, fld) = flow.forward(&mut tape, &fstore, xv, Some(cv)).unwrap();
                let (ld, fld) = (values(&tape, ld)[0] as f64, values(&tape, fld)[0] as f64);
                let num = numerical_log_det(dim, p, 1e-3, layer_map);
                assert!(
                    (num - ld).abs() < LOGDET_TOL,
                    "{kind:?} layer dim {dim} at {p:?}: logdet {ld} vs numerical {num}"
                );
                let fnum = numerical_log_det(dim, p, 1e-3, flow_map);
                assert!(
                    (fnum - fld).abs() < LOGDET_TOL,
                    "{kind:?} flow dim {dim} at {p:?}: logdet {fld} vs numerical {fnum}"
                );
                assert!(fld.abs() > 0.05, "{kind:?}: trivial flow log-det {fld}");
            }
        }
    }
}

#[test]
fn fresh_flow_is_the_standard_normal_and_samples_agree_with_log_prob() {
    for kind in kinds() {
        let mut store = ParamStore::new();
        let mut rng = PhiloxStream::new(40, streams::INIT, 0);
        let flow = ConditionalFlow::new(
            &mut store,
            "f",
            FlowConfig {
                kind,
                ..FlowConfig::affine(3, 2, 2)
            },
            &mut rng,
        )
        .unwrap();
        let mut tape = Tape::no_grad();
        let theta = randn(&[20, 3], 41);
        let tv = tape.constant(theta.clone());
        let c = Some(tape.constant(randn(&[20, 2], 42)));
        let lp = flow.log_prob(&mut tape, &store, tv, c).unwrap();
        let expect: Vec<f32> = theta
            .to_vec()
            .unwrap()
            .chunks(3)
            .map(|r| {
                let ss: f64 = r.iter().map(|&v| (v as f64).powi(2)).sum();
                (-0.5 * ss - 1.5 * (2.0 * std::f64::consts::PI).ln()) as f32
            })
            .collect();
        assert!(max_abs_diff(&values(&tape, lp), &expect) < 1e-5, "{kind:?}");
    }
    // With random parameters: log q of the samples, as returned by the sampler, equals
    // log_prob evaluated on them, and sampling is deterministic given the RNG.
    for kind in kinds() {
        let (flow, store) = random_flow(kind, 3, 2, 50);
        let ctx = [0.3f32, -1.2, 1.0, 0.5];
        let mut rng = PhiloxStream::new(51, streams::SAMPLER, 0);
        let (s, lps) = flow
            .sample_with_log_prob(&store, &ctx, 100, &mut rng)
            .unwrap();
        assert_eq!(s.len(), 2 * 100 * 3);
        let again = flow
            .sample(
                &store,
                &ctx,
                100,
                &mut PhiloxStream::new(51, streams::SAMPLER, 0),
            )
            .unwrap();
        assert_eq!(s, again);
        let mut tape = Tape::no_grad();
        let tv = tape.constant(Tensor::from_vec(s, &[200, 3]).unwrap());
        let c: Vec<f32> = (0..200)
            .flat_map(|r| ctx[(r / 100) * 2..(r / 100) * 2 + 2].to_vec())
            .collect();
        let cv = tape.constant(Tensor::from_vec(c, &[200, 2]).unwrap());
        let lp = flow.log_prob(&mut tape, &store, tv, Some(cv)).unwrap();
        let err = max_abs_diff(&values(&tape, lp), &lps);
        assert!(err < 1e-3, "{kind:?}: sampler log q vs log_prob: {err}");
    }
}

#[test]
fn log_prob_gradients_reach_every_parameter() {
    for kind in kinds() {
        let (flow, store) = random_flow(kind, 3, 2, 60);
        let mut tape = Tape::new();
        let theta = tape.constant(randn(&[32, 3], 61));
        let c = tape.leaf(randn(&[32, 2], 62));
        let lp = flow.log_prob(&mut tape, &store, theta, Some(c)).unwrap();
        let loss = tape
            .reduce_all(lp, amortize::backend::Reduction::Mean)
            .unwrap();
        let grads = tape.backward(loss).unwrap();
        let pg = grads.param_grads().unwrap();
        assert_eq!(
            pg.len(),
            store.len(),
            "{kind:?}: some parameter got no gradient"
        );
        assert!(
            grads.get(c).is_some(),
            "{kind:?}: no gradient for the context"
        );
    }
}

// ---------------------------------------------------------------------------------------
// training on a conditional Gaussian
// ---------------------------------------------------------------------------------------

/// θ | c ~ N(c·[1, −1], diag(0.5, 2)), c ~ U(−2, 2).
fn simulate(rows: usize, rng: &mut PhiloxStream) -> (Vec<f32>, Vec<f32>) {
    let mut c = vec![0.0; rows];
    rng.fill_uniform(-2.0, 2.0, &mut c);
    let mut theta = Vec::with_capacity(2 * rows);
    for &cv in &c {
        theta.push(cv + 0.5f32.sqrt() * rng.normal());
        theta.push(-cv + 2.0f32.sqrt() * rng.normal());
    }
    (theta, c)
}

fn true_log_prob(theta: &[f32], c: &[f32]) -> Vec<f64> {
    let ln2pi = (2.0 * std::f64::consts::PI).ln();
    theta
        .chunks(2)
        .zip(c)
        .map(|(t, &cv)| {
            let (a, b) = (t[0] as f64 - cv as f64, t[1] as f64 + cv as f64);
            // ln det Σ = ln(0.5·2) = 0.
            -0.5 * (a * a / 0.5 + b * b / 2.0) - ln2pi
        })
        .collect()
}

/// Trains `kind` for `steps` Adam steps on fresh simulations and returns (mean log q,
/// mean true log p) on 4096 held-out draws, plus the flow for sampling checks.
fn train_gaussian(kind: CouplingKind, steps: usize) -> (f64, f64, ConditionalFlow, ParamStore) {
    let mut store = ParamStore::new();
    let mut rng = PhiloxStream::new(70, streams::INIT, 0);
    let config = FlowConfig {
        dim: 2,
        context_dim: 1,
        layers: 4,
        kind,
        conditioner: Conditioner {
            width: 32,
            hidden_layers: 2,
            activation: UnaryOp::Silu,
        },
        permutation: Permutation::Reverse,
    };
    let flow = ConditionalFlow::new(&mut store, "flow", config, &mut rng).unwrap();
    let mut data_rng = PhiloxStream::new(71, streams::DATA, 0);
    let (t0, _) = simulate(1024, &mut data_rng);
    flow.initialize(&mut store, &Tensor::from_vec(t0, &[1024, 2]).unwrap())
        .unwrap();
    let mut adam = Adam::new(AdamConfig::adam(3e-3)).unwrap();
    let batch = 256;
    for step in 0..steps {
        let (theta, c) = simulate(batch, &mut data_rng);
        let mut tape = Tape::new();
        let tv = tape.constant(Tensor::from_vec(theta, &[batch, 2]).unwrap());
        let cv = tape.constant(Tensor::from_vec(c, &[batch, 1]).unwrap());
        let lp = flow.log_prob(&mut tape, &store, tv, Some(cv)).unwrap();
        let mean = tape
            .reduce_all(lp, amortize::backend::Reduction::Mean)
            .unwrap();
        let loss = tape.scale(mean, -1.0).unwrap();
        let grads = tape.backward(loss).unwrap().param_grads().unwrap();
        // Cosine decay to 10% of the peak over the run.
        let progress = step as f32 / steps as f32;
        let lr = 3e-3 * (0.1 + 0.9 * 0.5 * (1.0 + (std::f32::consts::PI * progress).cos()));
        adam.step(&mut store, &grads, lr).unwrap();
    }
    let n = 4096;
    let (theta, c) = simulate(n, &mut PhiloxStream::new(72, streams::DATA, 1));
    let truth = true_log_prob(&theta, &c);
    let mut tape = Tape::no_grad();
    let tv = tape.constant(Tensor::from_vec(theta, &[n, 2]).unwrap());
    let cv = tape.constant(Tensor::from_vec(c, &[n, 1]).unwrap());
    let lp = flow.log_prob(&mut tape, &store, tv, Some(cv)).unwrap();
    let q: f64 = values(&tape, lp).iter().map(|&v| v as f64).sum::<f64>() / n as f64;
    let p: f64 = truth.iter().sum::<f64>() / n as f64;
    (q, p, flow, store)
}

/// The expected true log-likelihood is −(1 + ln 2π) − ½ ln det Σ = −2.838 nats. The
/// held-out gap mean log p − mean log q estimates KL(p ‖ q) averaged over c; both means
/// use the same 4096 draws, so the gap's sampling error is ≈ 0.005 nats (not the 0.016
/// of each mean). An affine flow represents this target exactly (a shift linear in c,
/// fixed scales) and a spline flow nearly so, so what remains after 400 steps is
/// optimization error: we require a gap below 0.02 nats for the affine flow and 0.03 for
/// the spline flow (≈ 1% of the entropy; measured: 0.001 and 0.002), and above −0.02 (q
/// beating the truth by more than the noise would mean a wrong normalization).
#[test]
fn trained_flows_reach_the_true_log_likelihood() {
    for (kind, max_gap) in [
        (CouplingKind::affine(), 0.02),
        (CouplingKind::spline(), 0.03),
    ] {
        let (q, p, flow, store) = train_gaussian(kind, 400);
        let gap = p - q;
        eprintln!("{kind:?}: mean log q = {q:.4}, mean log p = {p:.4}, gap = {gap:.4}");
        assert!((p + 2.838).abs() < 0.06, "the held-out set is off: {p}");
        assert!(
            gap < max_gap && gap > -0.02,
            "{kind:?}: gap {gap} (q {q}, p {p})"
        );
        // Samples at c = 1 have the right moments: mean (1, −1), variances (0.5, 2).
        let s = flow
            .sample(
                &store,
                &[1.0],
                20_000,
                &mut PhiloxStream::new(73, streams::SAMPLER, 0),
            )
            .unwrap();
        let n = 20_000.0;
        let mean: Vec<f64> = (0..2)
            .map(|j| s.iter().skip(j).step_by(2).map(|&v| v as f64).sum::<f64>() / n)
            .collect();
        let var: Vec<f64> = (0..2)
            .map(|j| {
                s.iter()
                    .skip(j)
                    .step_by(2)
                    .map(|&v| (v as f64 - mean[j]).powi(2))
                    .sum::<f64>()
                    / n
            })
            .collect();
        eprintln!("{kind:?}: sample mean {mean:?}, var {var:?}");
        assert!(
            (mean[0] - 1.0).abs() < 0.08 && (mean[1] + 1.0).abs() < 0.1,
            "{mean:?}"
        );
        assert!(
            (var[0] / 0.5 - 1.0).abs() < 0.12 && (var[1] / 2.0 - 1.0).abs() < 0.12,
            "{var:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// bad input
// ---------------------------------------------------------------------------------------

#[test]
fn bad_input_is_an_error() {
    let (flow, store) = random_flow(CouplingKind::affine(), 2, 3, 80);
    let mut tape = Tape::new();
    let theta = tape.constant(randn(&[4, 2], 81));
    let ctx = tape.constant(randn(&[4, 3], 82));
    assert!(flow.log_prob(&mut tape, &store, theta, Some(ctx)).is_ok());
    let narrow = tape.constant(randn(&[4, 2], 83));
    let e = flow
        .log_prob(&mut tape, &store, theta, Some(narrow))
        .unwrap_err();
    assert!(e.to_string().contains("context"), "{e}");
    let short = tape.constant(randn(&[3, 3], 84));
    assert!(flow
        .log_prob(&mut tape, &store, theta, Some(short))
        .is_err());
    assert!(flow.log_prob(&mut tape, &store, theta, None).is_err());
    let wide = tape.constant(randn(&[4, 3], 85));
    assert!(flow.log_prob(&mut tape, &store, wide, Some(ctx)).is_err());
    let mut t = randn(&[4, 2], 86).to_vec().unwrap();
    t[5] = f32::NAN;
    let nan_theta = tape.constant(Tensor::from_vec(t, &[4, 2]).unwrap());
    let e = flow
        .log_prob(&mut tape, &store, nan_theta, Some(ctx))
        .unwrap_err();
    assert!(e.to_string().contains("theta"), "{e}");
    let mut c = randn(&[4, 3], 87).to_vec().unwrap();
    c[0] = f32::INFINITY;
    let inf_ctx = tape.constant(Tensor::from_vec(c, &[4, 3]).unwrap());
    assert!(flow
        .log_prob(&mut tape, &store, theta, Some(inf_ctx))
        .is_err());

    let mut rng = PhiloxStream::new(88, streams::SAMPLER, 0);
    assert!(
        flow.sample(&store, &[0.0; 4], 10, &mut rng).is_err(),
        "4 values for width 3"
    );
    assert!(
        flow.sample(&store, &[], 10, &mut rng).is_err(),
        "no context"
    );
    assert!(flow
        .sample(&store, &[0.0, f32::NAN, 0.0], 10, &mut rng)
        .is_err());
    assert!(flow.sample(&store, &[0.0; 3], 0, &mut rng).is_err());
    assert_eq!(
        flow.sample(&store, &[0.0; 6], 5, &mut rng).unwrap().len(),
        2 * 5 * 2
    );

    // Construction: a one-feature unconditional layer has nothing to condition on.
    let mut s = ParamStore::new();
    let mut r = PhiloxStream::new(89, streams::INIT, 0);
    let one = FlowConfig::affine(1, 0, 2);
    assert!(ConditionalFlow::new(&mut s, "a", one, &mut r).is_err());
    let bins = FlowConfig {
        kind: CouplingKind::Spline {
            bins: 1,
            bound: 3.0,
        },
        ..FlowConfig::affine(2, 1, 2)
    };
    assert!(ConditionalFlow::new(&mut s, "b", bins, &mut r).is_err());
    let zero_layers = FlowConfig::affine(2, 1, 0);
    assert!(ConditionalFlow::new(&mut s, "c", zero_layers, &mut r).is_err());
}
