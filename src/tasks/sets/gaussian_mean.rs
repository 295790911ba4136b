//! The hierarchical SBI paper's section 3.1 task: the mean μ ∈ ℝ³ of a multivariate
//! normal with known covariance, inferred from a set of up to 200 elements.
//!
//! * Prior μ ~ N(0, 3·I₃). The paper writes "No(0, 3)"; its normals elsewhere in 3.1 are
//!   parameterized by the covariance (No(x | θ, Σ)), so 3 is read as the variance.
//! * One set element is 5 iid draws from N(μ, Σ), Σ = diag(2, 4, 6) (variances), stored
//!   draw after draw: 15 features `[d₁, d₂, …, d₅]`, each dᵢ ∈ ℝ³ (appendix A.1: "each
//!   element having 15 features (3 multivariate normal dimensions with 5 draws per
//!   dimension)").
//!
//! A set of N elements is therefore 5N iid draws, and the conjugate posterior is
//! N(μ_post, Σ_post) with Σ_post = (Σ₀⁻¹ + 5N·Σ⁻¹)⁻¹ and μ_post = Σ_post·Σ⁻¹·Σⱼ dⱼ (the
//! paper's formula with its N, the number of draws, equal to 5N here).

use crate::error::Result;
use crate::priors::Prior;
use crate::rng::PhiloxStream;
use crate::tasks::posterior::{AnalyticPosterior, LikelihoodComponent};

/// Dimension of μ.
pub const DIM: usize = 3;
/// Draws from N(μ, Σ) in one set element.
pub const DRAWS_PER_ELEMENT: usize = 5;
/// Features of one set element.
pub const FEATURES: usize = DIM * DRAWS_PER_ELEMENT;
/// The diagonal of Σ (variances).
pub const NOISE_VAR: [f64; DIM] = [2.0, 4.0, 6.0];
/// The prior variance of each coordinate of μ.
pub const PRIOR_VAR: f64 = 3.0;
/// The largest set the paper trains on (N ~ U{1, …, 200}).
pub const MAX_SET_SIZE: usize = 200;

/// μ ~ N(0, 3·I₃).
pub fn prior() -> Prior {
    Prior::gaussian_diag(&[0.0; DIM], &[PRIOR_VAR; DIM]).expect("a valid Gaussian prior")
}

/// A set of `n` elements for mean `mu` (`[DIM]`): `n · FEATURES` normals drawn in order
/// from `rng`, returned as `[n, FEATURES]`.
pub fn simulate_set(mu: &[f32], n: usize, rng: &mut PhiloxStream) -> Vec<f32> {
    let mut set = vec![0.0f32; n * FEATURES];
    for draw in set.chunks_exact_mut(DIM) {
        for ((v, &m), var) in draw.iter_mut().zip(mu).zip(NOISE_VAR) {
            *v = (m as f64 + var.sqrt() * rng.normal() as f64) as f32;
        }
    }
    set
}

/// The exact posterior of μ given a set `[n ≥ 1, FEATURES]`: each element's 5 draws are
/// 5 observations of the conjugate model in [`AnalyticPosterior::conjugate`].
pub fn posterior(set: &[f32]) -> Result<AnalyticPosterior> {
    let likelihood = LikelihoodComponent {
        weight: 1.0,
        sign: 1.0,
        var: NOISE_VAR.to_vec(),
    };
    AnalyticPosterior::conjugate(&[PRIOR_VAR; DIM], &[likelihood], set)
}

/// The posterior standard deviation of each coordinate of μ after a set of `n` elements,
/// (1/3 + 5n/Σᵢᵢ)^(−1/2): it does not depend on the data, and falls as 1/√n for large n.
pub fn posterior_std(n: usize) -> [f64; DIM] {
    NOISE_VAR.map(|v| (1.0 / PRIOR_VAR + (DRAWS_PER_ELEMENT * n) as f64 / v).powf(-0.5))
}
