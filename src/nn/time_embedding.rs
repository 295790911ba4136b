//! The sinusoidal embedding of Vaswani et al. (2017), used for diffusion time:
//! `e(t)[2i] = sin(t·ω_i)`, `e(t)[2i+1] = cos(t·ω_i)`, `ω_i = 10000^(−2i/dim)`.
//! It has no parameters, so samplers compute it once per noise level (contract 4).

use crate::error::{Error, Result};
use crate::tensor::Tensor;

const MAX_PERIOD: f64 = 10_000.0;

/// Writes the embedding of each t into the rows of `out` (`[t.len(), dim]`, dim even).
pub fn sinusoidal_embedding_into(t: &[f32], dim: usize, out: &mut [f32]) {
    let half = dim / 2;
    for (row, &tv) in out.chunks_exact_mut(dim).zip(t) {
        for i in 0..half {
            let omega = MAX_PERIOD.powf(-((2 * i) as f64) / dim as f64);
            let angle = tv as f64 * omega;
            row[2 * i] = angle.sin() as f32;
            row[2 * i + 1] = angle.cos() as f32;
        }
    }
}

/// The embedding of each t as a `[t.len(), dim]` tensor; dim must be even and positive.
pub fn sinusoidal_embedding(t: &[f32], dim: usize) -> Result<Tensor> {
    if dim == 0 || dim % 2 != 0 {
        return Err(Error::invalid(
            "sinusoidal_embedding",
            format!("dim must be even and positive, got {dim}"),
        ));
    }
    let mut out = vec![0.0; t.len() * dim];
    sinusoidal_embedding_into(t, dim, &mut out);
    Tensor::from_vec(out, &[t.len(), dim])
}
