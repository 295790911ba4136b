//! The GAUSS composition of Linhart et al. (2024, "Diffusion posterior sampling for
//! simulation-based inference in tall data settings"): a composed score that is exact
//! when the per-observation posteriors and the prior are Gaussian, sampled as one
//! ordinary diffusion (Algorithm 2 with n = 1).
//!
//! Geffner et al.'s composition (Algorithms 1 and 2) is biased for n > 1 even with the
//! exact score (see the module docs of [`crate::samplers`]): the product of the diffused
//! single-observation posteriors is not the diffused tall posterior. GAUSS corrects the
//! product with the denoising covariances. With per-observation posterior covariances
//! Σ_j and prior covariance Σ_λ (estimated, in the sampler's space) and
//! c_t = γ_t/(1 − γ_t):
//!
//! * Σ_{t,j}⁻¹ = Σ_j⁻¹ + c_t·I, Σ_{λ,t}⁻¹ = Σ_λ⁻¹ + c_t·I,
//! * Λ_t = Σ_j Σ_{t,j}⁻¹ + (1 − n)·Σ_{λ,t}⁻¹,
//! * s(θ, t) = Λ_t⁻¹ [Σ_j Σ_{t,j}⁻¹ s_ψ(θ, t, x_j) + (1 − n)·Σ_{λ,t}⁻¹ s_λ(θ, t)],
//!
//! where s_λ(θ, t) = −(γ_t Σ_λ + (1 − γ_t) I)⁻¹(θ − √γ_t μ_λ) is the diffused score of
//! the prior's Gaussian approximation N(μ_λ, Σ_λ). For Gaussian posteriors and prior this
//! is exactly ∇log p_t(θ | x_1, …, x_n), so the reference distribution is N(0, I) and the
//! ordinary reverse step applies. Σ_j comes from a pilot run of the single-observation
//! sampler (exact for n = 1), μ_λ and Σ_λ from the prior.
//!
//! Estimated covariances need one guard. When everything is Gaussian, Σ_j⁻¹ − Σ_λ⁻¹ is
//! observation j's likelihood precision, positive semi-definite, so the tall precision
//! P* = Σ_λ⁻¹ + Σ_j (Σ_j⁻¹ − Σ_λ⁻¹) is at least the prior's. A pilot run broader than the
//! prior in some direction (a poorly trained network, a prior poorly described by its
//! moments) breaks that, P* can turn indefinite and Λ_t⁻¹ explodes at the last levels. So
//! each Σ_j⁻¹ enters as Σ_λ⁻¹ + [Σ_j⁻¹ − Σ_λ⁻¹]₊, its likelihood part projected onto the
//! positive semi-definite matrices (negative eigenvalues set to 0): nothing changes where
//! the Gaussian picture holds, and P* ≥ Σ_λ⁻¹ always.

use nalgebra::{DMatrix, DVector};

use super::ComposableScore;
use crate::error::{Error, Result};

/// The prior GAUSS composes with, in the sampler's space.
#[derive(Clone, Copy, Debug)]
pub enum GaussPrior<'a> {
    /// The prior's Gaussian approximation N(μ_λ, Σ_λ): `mean` `[d]`, `cov` row-major d×d.
    Gaussian {
        /// μ_λ.
        mean: &'a [f64],
        /// Σ_λ.
        cov: &'a [f64],
    },
    /// A flat prior (a uniform box sampled in θ's own coordinates, inside the box):
    /// Σ_λ⁻¹ = 0 and s_λ = 0, the limit Σ_λ → ∞ of the Gaussian.
    Flat,
}

/// Per level k: the matrices that turn the n per-observation scores into the composed one.
#[derive(Clone, Debug)]
struct LevelWeights {
    /// Λ⁻¹·Σ_{t,j}⁻¹ for each j, row-major d×d.
    observation: Vec<Vec<f32>>,
    /// Λ⁻¹·(1 − n)·Σ_{λ,t}⁻¹·(γΣ_λ + (1 − γ)I)⁻¹, row-major d×d.
    prior: Vec<f32>,
    /// √γ·μ_λ.
    prior_center: Vec<f32>,
}

/// GAUSS's per-level weights for n observations on one grid: what turns the n
/// per-observation scores s_j at level k into the composed score
/// `s(θ, k) = −M_k·(θ − c_k) + Σ_j W_{kj}·s_j` (module docs: W_{kj} = Λ⁻¹Σ_{t,j}⁻¹,
/// M_k = Λ⁻¹(1 − n)Σ_{λ,t}⁻¹(γΣ_λ + (1 − γ)I)⁻¹, c_k = √γ_k μ_λ). The CPU applies them in
/// [`GaussScore`], the fused GPU samplers from [`GaussWeights::table`].
#[derive(Clone, Debug)]
pub struct GaussWeights {
    dim: usize,
    observations: usize,
    levels: Vec<LevelWeights>,
}

/// The composed score of n observations by GAUSS, seen by the samplers as a single
/// observation's score.
pub struct GaussScore<'a, S: ComposableScore> {
    inner: &'a S,
    weights: &'a GaussWeights,
}

/// Added to the diagonal of an estimated covariance before it is inverted, so that a
/// degenerate pilot run (e.g. every draw equal in one direction) still has a precision.
const MIN_EIGENVALUE: f64 = 1e-6;

fn symmetric_inverse(m: &DMatrix<f64>, what: &str) -> Result<DMatrix<f64>> {
    let eig = m.clone().symmetric_eigen();
    // Written to reject NaN as well as non-positive eigenvalues.
    if eig.eigenvalues.iter().any(|&v| v.is_nan() || v <= 0.0) {
        return Err(Error::invalid(
            "gauss",
            format!("{what} is not positive definite"),
        ));
    }
    let inv = DVector::from_iterator(
        eig.eigenvalues.len(),
        eig.eigenvalues.iter().map(|v| 1.0 / v),
    );
    Ok(&eig.eigenvectors * DMatrix::from_diagonal(&inv) * eig.eigenvectors.transpose())
}

/// Clips the eigenvalues of a symmetric matrix from below.
fn clip_eigenvalues(m: &DMatrix<f64>, floor: f64) -> DMatrix<f64> {
    let eig = m.clone().symmetric_eigen();
    let clipped = DVector::from_iterator(
        eig.eigenvalues.len(),
        eig.eigenvalues.iter().map(|&v| v.max(floor)),
    );
    &eig.eigenvectors * DMatrix::from_diagonal(&clipped) * eig.eigenvectors.transpose()
}

fn row_major(m: &DMatrix<f64>) -> Vec<f32> {
    let (r, c) = m.shape();
    (0..r)
        .flat_map(|i| (0..c).map(move |j| m[(i, j)] as f32))
        .collect()
}

/// Sample covariance of rows `[rows, d]`, in f64.
pub fn covariance(samples: &[f32], d: usize) -> Vec<f64> {
    let rows = samples.len() / d;
    let mean: Vec<f64> = (0..d)
        .map(|i| samples.chunks_exact(d).map(|r| r[i] as f64).sum::<f64>() / rows as f64)
        .collect();
    let mut cov = vec![0.0; d * d];
    for r in samples.chunks_exact(d) {
        for a in 0..d {
            for b in 0..d {
                cov[a * d + b] += (r[a] as f64 - mean[a]) * (r[b] as f64 - mean[b]);
            }
        }
    }
    cov.iter_mut().for_each(|c| *c /= (rows.max(2) - 1) as f64);
    cov
}

impl GaussWeights {
    /// Precomputes the weights of every level of `gammas` for dim θ `d` from the
    /// per-observation posterior covariances `posterior_covs` (n row-major d×d, n ≥ 1) and
    /// the prior, all in the sampler's space.
    pub fn new(
        d: usize,
        gammas: &[f64],
        posterior_covs: &[Vec<f64>],
        prior: GaussPrior,
    ) -> Result<Self> {
        let n = posterior_covs.len();
        if n == 0 || posterior_covs.iter().any(|c| c.len() != d * d) {
            return Err(Error::invalid(
                "gauss",
                format!("needs one or more covariances of {d}×{d}, got {n}"),
            ));
        }
        let identity = DMatrix::<f64>::identity(d, d);
        // Σ_λ⁻¹, μ_λ, and Σ_λ (None for the flat prior).
        let (prior_precision, prior_mean, prior_cov) = match prior {
            GaussPrior::Gaussian { mean, cov } => {
                if mean.len() != d || cov.len() != d * d {
                    return Err(Error::invalid(
                        "gauss",
                        format!("the prior's moments must be {d} and {d}×{d}"),
                    ));
                }
                let cov = DMatrix::from_row_slice(d, d, cov);
                let precision = symmetric_inverse(&cov, "the prior covariance")?;
                (precision, mean.to_vec(), Some(cov))
            }
            GaussPrior::Flat => (DMatrix::zeros(d, d), vec![0.0; d], None),
        };
        // Σ_λ⁻¹ + [Σ_j⁻¹ − Σ_λ⁻¹]₊ (module docs).
        let precisions = posterior_covs
            .iter()
            .map(|c| {
                let p = symmetric_inverse(
                    &(DMatrix::from_row_slice(d, d, c) + &identity * MIN_EIGENVALUE),
                    "a posterior covariance",
                )?;
                Ok(&prior_precision + clip_eigenvalues(&(p - &prior_precision), 0.0))
            })
            .collect::<Result<Vec<_>>>()?;
        let nf = n as f64;
        // P* = Σ_j Σ_j⁻¹ + (1 − n)Σ_λ⁻¹, the tall posterior's precision, ≥ Σ_λ⁻¹.
        let tall = precisions
            .iter()
            .fold(DMatrix::zeros(d, d), |acc, p| acc + p)
            + &prior_precision * (1.0 - nf);
        let levels = gammas
            .iter()
            .map(|&g| {
                if g >= 1.0 || g <= 0.0 {
                    // Levels 0 and S are never sampled at; keep the slot for indexing.
                    return Ok(LevelWeights {
                        observation: vec![vec![0.0; d * d]; n],
                        prior: vec![0.0; d * d],
                        prior_center: vec![0.0; d],
                    });
                }
                let c = g / (1.0 - g);
                let lambda_inv = symmetric_inverse(&(&tall + &identity * c), "Λ")?;
                let observation = precisions
                    .iter()
                    .map(|p| row_major(&(&lambda_inv * (p + &identity * c))))
                    .collect();
                // The flat prior's diffused score is 0: no prior term.
                let prior = match &prior_cov {
                    Some(prior_cov) => {
                        let prior_t = &prior_precision + &identity * c;
                        let diffused_prior_cov_inv = symmetric_inverse(
                            &(prior_cov * g + &identity * (1.0 - g)),
                            "the diffused prior",
                        )?;
                        row_major(&(&lambda_inv * prior_t * (1.0 - nf) * diffused_prior_cov_inv))
                    }
                    None => vec![0.0; d * d],
                };
                let prior_center = prior_mean.iter().map(|m| (g.sqrt() * m) as f32).collect();
                Ok(LevelWeights {
                    observation,
                    prior,
                    prior_center,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(GaussWeights {
            dim: d,
            observations: n,
            levels,
        })
    }

    /// dim θ.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// n, the observations composed.
    pub fn observations(&self) -> usize {
        self.observations
    }

    /// Levels of the grid plus one (`gammas.len()`).
    pub fn grid_len(&self) -> usize {
        self.levels.len()
    }

    /// Floats per level in [`GaussWeights::table`]: (n + 1)·d² + d.
    pub fn level_stride(&self) -> usize {
        (self.observations + 1) * self.dim * self.dim + self.dim
    }

    /// The weights as the fused GPU samplers read them: per level k (stride
    /// [`GaussWeights::level_stride`]) W_{k0}, …, W_{k,n−1}, M_k (row-major d×d each), then c_k.
    pub fn table(&self) -> Vec<f32> {
        let mut t = Vec::with_capacity(self.levels.len() * self.level_stride());
        for l in &self.levels {
            l.observation.iter().for_each(|w| t.extend_from_slice(w));
            t.extend_from_slice(&l.prior);
            t.extend_from_slice(&l.prior_center);
        }
        t
    }
}

impl<'a, S: ComposableScore> GaussScore<'a, S> {
    /// The composed score of `inner`'s observations with `weights` (computed for as many
    /// observations, the same dim θ and the sampler's grid).
    pub fn new(inner: &'a S, weights: &'a GaussWeights) -> Result<Self> {
        if weights.dim != inner.dim() || weights.observations != inner.observations() {
            return Err(Error::invalid(
                "gauss",
                format!(
                    "weights for {} observations of dim {} given a score of {} observations of dim {}",
                    weights.observations,
                    weights.dim,
                    inner.observations(),
                    inner.dim()
                ),
            ));
        }
        Ok(GaussScore { inner, weights })
    }
}

/// Scratch of [`GaussScore`]: the inner score's scratch and its n scores.
pub struct GaussScratch<T> {
    inner: T,
    scores: Vec<f32>,
}

impl<S: ComposableScore> ComposableScore for GaussScore<'_, S> {
    type Scratch = GaussScratch<S::Scratch>;

    fn dim(&self) -> usize {
        self.inner.dim()
    }

    fn observations(&self) -> usize {
        1
    }

    fn scratch(&self, rows: usize) -> Self::Scratch {
        GaussScratch {
            inner: self.inner.scratch(rows),
            scores: vec![0.0; self.inner.observations() * rows * self.inner.dim()],
        }
    }

    fn scores(&self, level: usize, theta: &[f32], scratch: &mut Self::Scratch, out: &mut [f32]) {
        let d = self.dim();
        let rows = theta.len() / d;
        self.inner
            .scores(level, theta, &mut scratch.inner, &mut scratch.scores);
        let w = &self.weights.levels[level];
        for r in 0..rows {
            let th = &theta[r * d..(r + 1) * d];
            let o = &mut out[r * d..(r + 1) * d];
            for a in 0..d {
                // −M·(θ − √γ μ_λ) for the prior, then Σ_j W_j·s_j.
                let mut acc: f32 = -(0..d)
                    .map(|b| w.prior[a * d + b] * (th[b] - w.prior_center[b]))
                    .sum::<f32>();
                for (j, wj) in w.observation.iter().enumerate() {
                    let s = &scratch.scores[(j * rows + r) * d..(j * rows + r + 1) * d];
                    acc += (0..d).map(|b| wj[a * d + b] * s[b]).sum::<f32>();
                }
                o[a] = acc;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scaled_identity(d: usize, v: f64) -> Vec<f64> {
        (0..d * d)
            .map(|e| if e / d == e % d { v } else { 0.0 })
            .collect()
    }

    /// The level-k block of the table as (W_0 … W_{n−1}, M, c).
    fn level(w: &GaussWeights, k: usize) -> (Vec<Vec<f32>>, Vec<f32>, Vec<f32>) {
        let (d, n) = (w.dim(), w.observations());
        let stride = w.level_stride();
        let block = w.table()[k * stride..(k + 1) * stride].to_vec();
        let obs = block[..n * d * d]
            .chunks(d * d)
            .map(<[f32]>::to_vec)
            .collect();
        let m = block[n * d * d..(n + 1) * d * d].to_vec();
        (obs, m, block[(n + 1) * d * d..].to_vec())
    }

    #[test]
    fn gaussian_case_matches_the_closed_form() {
        // Prior N(μ, I), per-observation posteriors N(·, I/2) (likelihood precision I):
        // P* = 1 + n = 4 for n = 3; at level γ, c = γ/(1 − γ):
        // W_j = (2 + c)/(4 + c)·I, M = (1 − n)(1 + c)/((4 + c)(γ + 1 − γ))·I, c_k = √γ μ.
        // Tolerance 2e-5: MIN_EIGENVALUE on each covariance's diagonal moves each P_j by
        // 4e-6, P* by 1.2e-5.
        let (d, n) = (2, 3);
        let gammas = [1.0, 0.6, 0.2, 0.0];
        let w = GaussWeights::new(
            d,
            &gammas,
            &vec![scaled_identity(d, 0.5); n],
            GaussPrior::Gaussian {
                mean: &[0.5, -1.0],
                cov: &scaled_identity(d, 1.0),
            },
        )
        .unwrap();
        for (k, &g) in gammas.iter().enumerate().take(3).skip(1) {
            let c = g / (1.0 - g);
            let (obs, m, center) = level(&w, k);
            for wj in obs {
                assert!((wj[0] as f64 - (2.0 + c) / (4.0 + c)).abs() < 2e-5);
                assert!((wj[3] as f64 - (2.0 + c) / (4.0 + c)).abs() < 2e-5);
                assert!(wj[1].abs() < 1e-7 && wj[2].abs() < 1e-7);
            }
            assert!(
                (m[0] as f64 - (-2.0) * (1.0 + c) / (4.0 + c)).abs() < 2e-5,
                "{m:?}"
            );
            assert!((center[1] as f64 + g.sqrt()).abs() < 1e-6);
        }
    }

    #[test]
    fn flat_prior_composes_the_likelihoods_alone() {
        // Flat prior, per-observation posteriors N(m_j, I/2) (precision 2): the tall
        // posterior has precision P* = 2n = 6 for n = 3, and its diffused score is
        // Σ_j W_j s_j with W_j = (2 + c)/(6 + c)·I and no prior term (M = 0), since
        // s_j = −2(θ − √γ m_j)/((1 − γ)(2 + c)). Tolerance as above.
        let (d, n) = (2, 3);
        let gammas = [1.0, 0.6, 0.2, 0.0];
        let w = GaussWeights::new(
            d,
            &gammas,
            &vec![scaled_identity(d, 0.5); n],
            GaussPrior::Flat,
        )
        .unwrap();
        for (k, &g) in gammas.iter().enumerate().take(3).skip(1) {
            let c = g / (1.0 - g);
            let (obs, m, center) = level(&w, k);
            for wj in obs {
                assert!(
                    (wj[0] as f64 - (2.0 + c) / (6.0 + c)).abs() < 2e-5,
                    "{wj:?}"
                );
                assert!(wj[1].abs() < 1e-7 && wj[2].abs() < 1e-7);
            }
            assert!(
                m.iter().chain(&center).all(|v| *v == 0.0),
                "{m:?} {center:?}"
            );
        }
    }

    #[test]
    fn pilots_broader_than_the_prior_do_not_blow_up_the_weights() {
        // Every pilot covariance 4·I against the prior's I: the likelihood parts
        // 1/4 − 1 < 0 project to 0, so P* = I, W_j = I and M = (1 − n)·I at every level.
        // Unprojected, P* = 3/4 − 2 < 0 would make Λ_t singular near c_t = 5/4 and its
        // inverse explode (W of order 10⁶ at the last levels).
        let (d, n) = (2, 3);
        let gammas: Vec<f64> = (0..=20).map(|k| 1.0 - k as f64 / 20.0).collect();
        let w = GaussWeights::new(
            d,
            &gammas,
            &vec![scaled_identity(d, 4.0); n],
            GaussPrior::Gaussian {
                mean: &[0.0, 0.0],
                cov: &scaled_identity(d, 1.0),
            },
        )
        .unwrap();
        for k in 1..20 {
            let (obs, m, _) = level(&w, k);
            for wj in obs {
                assert!(
                    (wj[0] - 1.0).abs() < 1e-5 && wj[1].abs() < 1e-6,
                    "level {k}: {wj:?}"
                );
            }
            assert!((m[0] - (1.0 - n as f32)).abs() < 1e-5, "level {k}: {m:?}");
        }
    }
}
