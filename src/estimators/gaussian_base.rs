//! A linear-Gaussian base for the score network: q(θ̃ | x̃) = N(A·x̃ + b, diag(v)),
//! fitted by least squares to the standardized training pairs, whose diffused score is
//! known in closed form. The network then learns only what the base gets wrong:
//! ε̂ = ε̂_net + ε_base.
//!
//! Why: a network extrapolates poorly where the training pairs are sparse, and an
//! observation a few prior standard deviations out (sbibm's gaussian_linear obs1 and
//! obs4) is there. Composition sums every observation's error, so at n = 8 a mean shift
//! of a fraction of a standard deviation per observation becomes a large one
//! (`benches/RESULTS.md`: on gaussian10 the linear fit composed reaches C2ST 0.55–0.62 at
//! n = 8 where the network alone reaches 0.72–0.78). A base that is linear in x
//! extrapolates as the posterior mean of such tasks does, and where the posterior is not
//! Gaussian the network corrects it.
//!
//! The math: with θ̃₀ | x ~ N(m, diag(v)) and θ̃_t = √γ θ̃₀ + √(1 − γ) ε, the optimal
//! denoiser is E[ε | θ̃_t, x] = √(1 − γ)·(θ̃_t − √γ m) / (γ v + 1 − γ), per component.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::estimators::score::{NoiseSchedule, ScoreNetConfig};

/// Smallest residual variance (standardized units) the base keeps, so that its ε at
/// γ = 1 is 0 rather than 0/0.
const MIN_VARIANCE: f64 = 1e-4;

/// The ridge added to the normal equations' x block (see [`GaussianBase::fit`]).
const RIDGE: f64 = 1e-3;

/// q(θ̃ | x̃) = N(A·x̃ + b, diag(v)) in the network's standardized spaces.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GaussianBase {
    /// A, `[dim θ, dim x]`, row-major.
    pub weight: Vec<f32>,
    /// b, `[dim θ]`.
    pub bias: Vec<f32>,
    /// v, the residual variance of each component of θ̃, `[dim θ]`.
    pub variance: Vec<f32>,
}

impl GaussianBase {
    /// The least-squares fit of θ̃ `[rows, dim θ]` on [x̃, 1] (`x` `[rows, dim x]`), with the
    /// residuals' variance per component (divided by rows − dim x − 1). Constant or
    /// collinear features of x get the smallest coefficients that fit (a tiny ridge). An
    /// error if there are not more rows than coefficients.
    pub fn fit(theta: &[f32], x: &[f32], dim_theta: usize, dim_x: usize) -> Result<Self> {
        let op = "GaussianBase::fit";
        let rows = theta.len() / dim_theta.max(1);
        let p = dim_x + 1;
        if dim_theta == 0 || dim_x == 0 || x.len() != rows * dim_x || rows <= p {
            return Err(Error::invalid(
                op,
                format!(
                    "needs more rows than the {p} coefficients per component, and x `[rows, {dim_x}]` beside θ `[rows, {dim_theta}]`: got {} and {} values",
                    theta.len(),
                    x.len()
                ),
            ));
        }
        let features = |r: usize| {
            x[r * dim_x..(r + 1) * dim_x]
                .iter()
                .map(|&v| v as f64)
                .chain(std::iter::once(1.0))
        };
        let mut gram = nalgebra::DMatrix::<f64>::zeros(p, p);
        let mut cross = nalgebra::DMatrix::<f64>::zeros(p, dim_theta);
        for r in 0..rows {
            let f: Vec<f64> = features(r).collect();
            let th = &theta[r * dim_theta..(r + 1) * dim_theta];
            for i in 0..p {
                for j in 0..p {
                    gram[(i, j)] += f[i] * f[j];
                }
                for (k, &t) in th.iter().enumerate() {
                    cross[(i, k)] += f[i] * t as f64;
                }
            }
        }
        // A ridge far below the rows' own weight (standardized features: Σ x² ≈ rows)
        // keeps the normal equations solvable when x has constant or collinear features.
        for i in 0..dim_x {
            gram[(i, i)] += RIDGE;
        }
        let coef = gram.cholesky().map(|c| c.solve(&cross)).ok_or_else(|| {
            Error::invalid(
                op,
                "the normal equations are not positive definite (non-finite x?)",
            )
        })?;
        let mut sq = vec![0.0f64; dim_theta];
        for r in 0..rows {
            let f: Vec<f64> = features(r).collect();
            for (k, s) in sq.iter_mut().enumerate() {
                let fitted: f64 = (0..p).map(|i| f[i] * coef[(i, k)]).sum();
                *s += (theta[r * dim_theta + k] as f64 - fitted).powi(2);
            }
        }
        Ok(GaussianBase {
            weight: (0..dim_theta)
                .flat_map(|k| (0..dim_x).map(move |i| (k, i)))
                .map(|(k, i)| coef[(i, k)] as f32)
                .collect(),
            bias: (0..dim_theta).map(|k| coef[(dim_x, k)] as f32).collect(),
            variance: sq
                .iter()
                .map(|s| (s / (rows - p) as f64).max(MIN_VARIANCE) as f32)
                .collect(),
        })
    }

    /// dim θ.
    pub fn dim_theta(&self) -> usize {
        self.bias.len()
    }

    /// dim x.
    pub fn dim_x(&self) -> usize {
        self.weight.len() / self.bias.len().max(1)
    }

    /// Checks that the base can sit under `network`: its x path reads one observation
    /// (not a set), the sizes fit, and the values are finite with positive variances (a
    /// model file may say anything).
    pub fn validate(&self, op: &'static str, network: &ScoreNetConfig) -> Result<()> {
        if network.x_encoder.is_some() {
            return Err(Error::invalid(
                op,
                "a Gaussian base is linear in one observation: a set encoder's network has none",
            ));
        }
        let (dim_theta, dim_x) = (network.dim_theta, network.dim_x);
        let sizes_fit = self.bias.len() == dim_theta
            && self.variance.len() == dim_theta
            && self.weight.len() == dim_theta * dim_x;
        if !sizes_fit {
            return Err(Error::invalid(
                op,
                format!(
                    "the Gaussian base must have A [{dim_theta}, {dim_x}], b and v [{dim_theta}]: got {}, {} and {} values",
                    self.weight.len(),
                    self.bias.len(),
                    self.variance.len()
                ),
            ));
        }
        let finite = self.weight.iter().chain(&self.bias).all(|v| v.is_finite());
        if !finite || !self.variance.iter().all(|v| *v > 0.0 && v.is_finite()) {
            return Err(Error::invalid(
                op,
                "the Gaussian base needs finite A and b and positive finite variances",
            ));
        }
        Ok(())
    }

    /// m = A·x̃ + b for each row of x̃ `[rows, dim x]`: `[rows, dim θ]`.
    pub fn means(&self, x: &[f32]) -> Vec<f32> {
        let (d, dx) = (self.dim_theta(), self.dim_x());
        x.chunks_exact(dx)
            .flat_map(|row| {
                (0..d).map(move |k| {
                    let a = &self.weight[k * dx..(k + 1) * dx];
                    self.bias[k] + a.iter().zip(row).map(|(w, v)| w * v).sum::<f32>()
                })
            })
            .collect()
    }

    /// The base's ε at noise level γ as coefficients per component: ε_base = c·θ̃_t − s·m
    /// with c = √(1 − γ)/(γ v + 1 − γ) and s = √γ·c. Returns (c, s), each `[dim θ]`.
    pub fn coefficients(&self, gamma: f64) -> (Vec<f32>, Vec<f32>) {
        self.variance
            .iter()
            .map(|&v| {
                let c = (1.0 - gamma).sqrt() / (gamma * v as f64 + 1.0 - gamma);
                (c as f32, (gamma.sqrt() * c) as f32)
            })
            .unzip()
    }

    /// [`GaussianBase::coefficients`] at every level t of a sampling grid, `[levels, dim θ]`
    /// each, γ by `schedule`.
    pub fn level_coefficients(&self, schedule: &NoiseSchedule, t: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let mut c = Vec::with_capacity(t.len() * self.dim_theta());
        let mut s = Vec::with_capacity(t.len() * self.dim_theta());
        for &tk in t {
            let (ck, sk) = self.coefficients(schedule.gamma(tk as f64));
            c.extend(ck);
            s.extend(sk);
        }
        (c, s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{streams, PhiloxStream};

    #[test]
    fn the_fit_recovers_a_linear_gaussian_and_its_epsilon_is_the_posterior_mean_of_the_noise() {
        // θ = A·x + b + N(0, diag(v)) with A = [[0.5, −1], [2, 0], [0, 0.1]].
        let (a, b, v) = (
            [0.5f32, -1.0, 2.0, 0.0, 0.0, 0.1],
            [0.3f32, -2.0, 1.0],
            [0.04f32, 0.25, 1.0],
        );
        let rows = 20_000;
        let mut rng = PhiloxStream::new(4, streams::DATA, 0);
        let mut x = vec![0.0f32; rows * 2];
        rng.fill_normal(0.0, 1.0, &mut x);
        let mut noise = vec![0.0f32; rows * 3];
        rng.fill_normal(0.0, 1.0, &mut noise);
        let theta: Vec<f32> = (0..rows * 3)
            .map(|i| {
                let (r, k) = (i / 3, i % 3);
                b[k] + a[2 * k] * x[2 * r] + a[2 * k + 1] * x[2 * r + 1] + v[k].sqrt() * noise[i]
            })
            .collect();
        let base = GaussianBase::fit(&theta, &x, 3, 2).unwrap();
        // Standard errors are ≈ √(v/rows) ≤ 0.007 for A and b and ≈ v·√(2/rows) for v:
        // five of them is a miss this seeded draw would make ~1 time in 10⁶.
        for (fitted, truth) in base.weight.iter().zip(&a).chain(base.bias.iter().zip(&b)) {
            assert!((fitted - truth).abs() < 0.035, "{fitted} vs {truth}");
        }
        for (fitted, truth) in base.variance.iter().zip(&v) {
            assert!(
                (fitted - truth).abs() < 5.0 * truth * 0.01,
                "{fitted} vs {truth}"
            );
        }
        base.validate("test", &ScoreNetConfig::new(3, 2, 8))
            .unwrap();
        assert!(base
            .validate("test", &ScoreNetConfig::new(3, 3, 8))
            .is_err());

        // E[ε | θ_t] by regression on draws at γ = 0.3, given x = (1, −1): the base's
        // c·θ_t − s·m must match it in slope and intercept.
        let gamma = 0.3f64;
        let m = base.means(&[1.0, -1.0]);
        let (c, s) = base.coefficients(gamma);
        let draws = 50_000;
        let mut z = vec![0.0f32; draws * 6];
        rng.fill_normal(0.0, 1.0, &mut z);
        for k in 0..3 {
            let (mut sxx, mut sxy, mut sx, mut sy) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
            for r in 0..draws {
                let theta0 = m[k] as f64 + (base.variance[k] as f64).sqrt() * z[6 * r + k] as f64;
                let eps = z[6 * r + 3 + k] as f64;
                let theta_t = gamma.sqrt() * theta0 + (1.0 - gamma).sqrt() * eps;
                sx += theta_t;
                sy += eps;
                sxx += theta_t * theta_t;
                sxy += theta_t * eps;
            }
            let n = draws as f64;
            let slope = (sxy - sx * sy / n) / (sxx - sx * sx / n);
            let intercept = (sy - slope * sx) / n;
            // Slope standard error ≈ 1/√draws ≈ 0.005: 0.03 is six of them.
            assert!((slope - c[k] as f64).abs() < 0.03, "{slope} vs {}", c[k]);
            assert!(
                (intercept + s[k] as f64 * m[k] as f64).abs() < 0.03,
                "{intercept} vs {}",
                -s[k] * m[k]
            );
        }
        // At γ = 1 the noise is gone and so is ε; at γ = 0, ε = θ_t.
        assert!(base.coefficients(1.0).0.iter().all(|&c| c == 0.0));
        assert!(base
            .coefficients(0.0)
            .0
            .iter()
            .all(|&c| (c - 1.0).abs() < 1e-6));
    }

    #[test]
    fn too_few_rows_are_refused_and_dependent_features_still_fit() {
        assert!(GaussianBase::fit(&[1.0, 2.0], &[0.0, 1.0], 1, 1).is_err());
        // θ = x₁ − 1 with x₂ = 2·x₁ and a constant x₃: the fit is not unique, its
        // predictions are.
        let x: Vec<f32> = (0..20)
            .flat_map(|i| {
                let v = (i as f32 - 9.5) / 6.0;
                [v, 2.0 * v, 0.0]
            })
            .collect();
        let theta: Vec<f32> = x.chunks_exact(3).map(|r| r[0] - 1.0).collect();
        let base = GaussianBase::fit(&theta, &x, 1, 3).unwrap();
        for (m, t) in base.means(&x).iter().zip(&theta) {
            assert!((m - t).abs() < 1e-3, "{m} vs {t}");
        }
        assert_eq!(base.variance, vec![MIN_VARIANCE as f32]);
    }
}
