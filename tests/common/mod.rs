//! Helpers shared by the integration tests.
#![allow(dead_code)]

use amortize::rng::{streams, PhiloxStream};
use amortize::Tensor;

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
