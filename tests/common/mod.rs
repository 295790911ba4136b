//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod cuda_emulator;

use amortize::rng::{streams, PhiloxStream};
use amortize::{Result, Tape, Tensor, Var};

/// The CUDA backend of cuda:0 (the CUDA emulator when [`cuda_emulator::requested`]) when
/// it and NVRTC are usable; `None` (after printing why) when not and
/// `AMORTIZE_REQUIRE_CUDA` is not 1.
pub fn cuda_or_skip(test: &str) -> Option<std::sync::Arc<amortize::backend::cuda::CudaBackend>> {
    cuda_emulator::install();
    let why = match amortize::backend::cuda::CudaBackend::shared(0) {
        Ok(g) if amortize::devices::nvrtc_present() => return Some(g),
        Ok(_) => "no NVRTC library (libnvrtc.so) to compile the kernels".to_string(),
        Err(e) => e.to_string(),
    };
    if std::env::var("AMORTIZE_REQUIRE_CUDA").as_deref() == Ok("1") {
        panic!("{test}: AMORTIZE_REQUIRE_CUDA=1 but CUDA is unusable: {why}");
    }
    eprintln!("skipping {test}: {why} (set AMORTIZE_REQUIRE_CUDA=1 to fail instead)");
    None
}

/// A tensor of N(0, 1) draws, seeded so every run sees the same "fresh" inputs.
pub fn randn(shape: &[usize], seed: u64) -> Tensor {
    let mut data = vec![0.0; shape.iter().product()];
    PhiloxStream::new(seed, streams::TEST, 0).fill_normal(0.0, 1.0, &mut data);
    Tensor::from_vec(data, shape).unwrap()
}

/// A tensor of U(lo, hi) draws.
pub fn uniform(shape: &[usize], lo: f32, hi: f32, seed: u64) -> Tensor {
    let mut data = vec![0.0; shape.iter().product()];
    PhiloxStream::new(seed, streams::TEST, 1).fill_uniform(lo, hi, &mut data);
    Tensor::from_vec(data, shape).unwrap()
}

/// Largest |a − b| / max(1, |b|) over the elements.
pub fn max_rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
        .fold(0.0, f32::max)
}

/// Finite-difference step, and the tolerance |numeric − analytic| ≤ ATOL + RTOL·|analytic|
/// of [`grad_check`] (derivation at the top of `tests/grad_check.rs`).
pub const GRAD_H: f32 = 1e-2;
const GRAD_ATOL: f64 = 3e-3;
const GRAD_RTOL: f64 = 1e-2;

/// Checks the tape's gradients of L = Σ seed·f(inputs) (a fixed random `seed`, summed in
/// f64) against central differences, for at most `at_most` evenly spread elements of
/// every input (`usize::MAX`: all of them).
pub fn grad_check(
    name: &str,
    inputs: &[Tensor],
    at_most: usize,
    f: impl Fn(&mut Tape, &[Var]) -> Result<Var>,
) {
    let mut tape = Tape::new();
    let vars: Vec<Var> = inputs.iter().map(|t| tape.leaf(t.clone())).collect();
    let y = f(&mut tape, &vars).unwrap_or_else(|e| panic!("{name}: forward failed: {e}"));
    let seed = randn(tape.shape(y), 999);
    let seed_data = seed.to_vec().unwrap();
    let grads = tape.backward_with(y, seed).unwrap();
    let eval = |perturbed: &[Tensor]| -> f64 {
        let mut t = Tape::no_grad();
        let vs: Vec<Var> = perturbed.iter().map(|x| t.constant(x.clone())).collect();
        let out = f(&mut t, &vs).unwrap();
        let v = t.value(out).to_vec().unwrap();
        v.iter()
            .zip(&seed_data)
            .map(|(&a, &b)| a as f64 * b as f64)
            .sum()
    };
    for (i, input) in inputs.iter().enumerate() {
        let analytic = grads
            .get(vars[i])
            .unwrap_or_else(|| panic!("{name}: input {i} got no gradient"))
            .to_vec()
            .unwrap();
        assert_eq!(
            analytic.len(),
            input.numel(),
            "{name}: gradient {i} has the wrong size"
        );
        let base = input.to_vec().unwrap();
        let stride = (base.len() / at_most.max(1)).max(1);
        for e in (0..base.len()).step_by(stride) {
            let mut plus = inputs.to_vec();
            let mut minus = inputs.to_vec();
            let mut d = base.clone();
            d[e] += GRAD_H;
            plus[i] = Tensor::from_vec(d.clone(), input.shape()).unwrap();
            d[e] = base[e] - GRAD_H;
            minus[i] = Tensor::from_vec(d, input.shape()).unwrap();
            let numeric = (eval(&plus) - eval(&minus)) / (2.0 * GRAD_H as f64);
            let a = analytic[e] as f64;
            assert!(
                (numeric - a).abs() <= GRAD_ATOL + GRAD_RTOL * a.abs(),
                "{name}: d/d input{i}[{e}]: analytic {a} vs numeric {numeric}"
            );
        }
    }
}

/// Random spline knots for `n` elements: widths and heights positive summing to 2B, all
/// bins at least 0.5 wide, derivatives in (0.4, 2.5); and inputs placed at 20–80% of a
/// random bin (so a step of `GRAD_H` never crosses a knot), the last two in the tails.
pub fn spline_case(n: usize, bins: usize, bound: f32, inverse: bool, seed: u64) -> Vec<Tensor> {
    let mut rng = PhiloxStream::new(seed, streams::TEST, 7);
    let sizes = |rng: &mut PhiloxStream| -> Vec<f32> {
        let mut v = Vec::with_capacity(n * bins);
        for _ in 0..n {
            let raw: Vec<f32> = (0..bins).map(|_| rng.uniform_range(1.0, 3.0)).collect();
            let sum: f32 = raw.iter().sum();
            v.extend(raw.iter().map(|r| 2.0 * bound * r / sum));
        }
        v
    };
    let widths = sizes(&mut rng);
    let heights = sizes(&mut rng);
    let derivs: Vec<f32> = (0..n * (bins + 1))
        .map(|_| rng.uniform_range(0.4, 2.5))
        .collect();
    let along = if inverse { &heights } else { &widths };
    let x: Vec<f32> = (0..n)
        .map(|i| {
            if i + 2 >= n {
                return if i % 2 == 0 {
                    bound + 1.0
                } else {
                    -bound - 0.7
                };
            }
            let k = rng.below(bins as u32) as usize;
            let row = &along[i * bins..(i + 1) * bins];
            let left: f32 = -bound + row[..k].iter().sum::<f32>();
            left + rng.uniform_range(0.2, 0.8) * row[k]
        })
        .collect();
    vec![
        Tensor::from_vec(x, &[n]).unwrap(),
        Tensor::from_vec(widths, &[n, bins]).unwrap(),
        Tensor::from_vec(heights, &[n, bins]).unwrap(),
        Tensor::from_vec(derivs, &[n, bins + 1]).unwrap(),
    ]
}

/// Scores `[batch, queries, keys]` (N(0, 4) draws) and a ragged key mask `[batch, keys]`
/// for `masked_softmax`: set b keeps its first keys − 2b keys (later sets may be empty),
/// set 1 also masks key 0 (so with a causal mask its first query sees nothing), and every
/// masked key holds +∞ or −∞ in the scores, which a kernel must never read into a row.
pub fn masked_softmax_case(batch: usize, queries: usize, keys: usize, seed: u64) -> [Tensor; 2] {
    let mut x = randn(&[batch, queries, keys], seed).to_vec().unwrap();
    let mut mask = vec![0.0f32; batch * keys];
    for b in 0..batch {
        for j in 0..keys.saturating_sub(2 * b) {
            mask[b * keys + j] = if b == 1 && j == 0 { 0.0 } else { 1.0 };
        }
    }
    for (i, v) in x.iter_mut().enumerate() {
        let (b, j) = (i / (queries * keys), i % keys);
        *v = if mask[b * keys + j] == 0.0 {
            if i % 2 == 0 {
                f32::INFINITY
            } else {
                f32::NEG_INFINITY
            }
        } else {
            2.0 * *v
        };
    }
    [
        Tensor::from_vec(x, &[batch, queries, keys]).unwrap(),
        Tensor::from_vec(mask, &[batch, keys]).unwrap(),
    ]
}

/// Whether wgpu adapter 0 exists; without one, prints why the test is skipped (lavapipe
/// in CI, where `AMORTIZE_REQUIRE_WGPU=1` makes a missing adapter a failure).
pub fn wgpu_adapter_or_skip() -> bool {
    match amortize::backend::for_device(amortize::Device::Wgpu(0)) {
        Ok(_) => true,
        Err(e) => {
            assert!(
                std::env::var("AMORTIZE_REQUIRE_WGPU").as_deref() != Ok("1"),
                "no wgpu adapter: {e}"
            );
            eprintln!("skipping: {e}");
            false
        }
    }
}
