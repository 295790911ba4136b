//! Exact posteriors of the conjugate tasks: mixtures of diagonal Gaussians.
//!
//! With a prior `N(0, tau² I)` and observations that each come from one of `K`
//! likelihood components `x_j ~ N(s_k theta, diag(v_k))` (weight `w_k`, sign
//! `s_k = ±1`), the posterior given `x_1..x_n` is a mixture over the `K^n` assignments
//! `c` of components to observations. Per dimension, with `y_j = s_{c_j} x_j` and
//! `d_j = v_{c_j}`: `A = Σ 1/d_j`, `B = Σ y_j/d_j`, the component is
//! `N(B / (1/tau² + A), 1 / (1/tau² + A))` and its log weight is
//! `Σ_j ln w_{c_j}` plus the log marginal likelihood of `y` under
//! `N(0, tau² 11ᵀ + diag(d))`, which by the matrix determinant lemma and
//! Sherman–Morrison is `-½ [n ln 2π + Σ ln d_j + ln(1 + tau² A) + Σ y_j²/d_j -
//! tau² B² / (1 + tau² A)]`. All of this is done in `f64`.

use crate::error::{Error, Result};
use crate::rng::PhiloxStream;

/// Largest number of mixture components (`K^n`) an exact posterior may have.
pub const MAX_COMPONENTS: usize = 1 << 16;

/// One likelihood component: `x ~ N(sign · theta, diag(var))` with probability `weight`.
#[derive(Clone, Debug, PartialEq)]
pub struct LikelihoodComponent {
    /// Mixture weight.
    pub weight: f64,
    /// `+1` or `-1`: the mean is `sign · theta`.
    pub sign: f64,
    /// Per-dimension noise variance.
    pub var: Vec<f64>,
}

/// A mixture of Gaussians with diagonal covariances, normalized weights.
#[derive(Clone, Debug, PartialEq)]
pub struct AnalyticPosterior {
    dim: usize,
    /// Normalized log weights, one per component.
    log_weights: Vec<f64>,
    /// Component means, `[K, dim]` row-major.
    means: Vec<f64>,
    /// Component variances, `[K, dim]` row-major.
    vars: Vec<f64>,
}

impl AnalyticPosterior {
    /// The exact posterior for prior `N(0, diag(prior_var))` and the given likelihood
    /// components, for observations `obs` (`[n, dim]` row-major, `n >= 1`).
    pub fn conjugate(
        prior_var: &[f64],
        components: &[LikelihoodComponent],
        obs: &[f32],
    ) -> Result<Self> {
        let op = "AnalyticPosterior";
        let d = prior_var.len();
        if d == 0 || components.is_empty() {
            return Err(Error::invalid(
                op,
                "needs a dimension and a likelihood component",
            ));
        }
        if obs.is_empty() || obs.len() % d != 0 {
            return Err(Error::shape_because(
                op,
                &[obs.len()],
                &[d],
                &format!("observations must be n >= 1 rows of {d} values"),
            ));
        }
        if let Some(k) = obs.iter().position(|v| !v.is_finite()) {
            return Err(Error::invalid(
                op,
                format!("observation row {} has a non-finite value", k / d),
            ));
        }
        let n = obs.len() / d;
        let kk = components.len();
        let total = (0..n).try_fold(1usize, |acc, _| {
            acc.checked_mul(kk).filter(|&t| t <= MAX_COMPONENTS)
        });
        let Some(total) = total else {
            return Err(Error::invalid(
                op,
                format!(
                    "{kk}^{n} mixture components exceed the limit of {MAX_COMPONENTS}; use fewer observations"
                ),
            ));
        };
        let mut log_weights = Vec::with_capacity(total);
        let mut means = Vec::with_capacity(total * d);
        let mut vars = Vec::with_capacity(total * d);
        let mut assign = vec![0usize; n];
        for mut code in 0..total {
            for a in assign.iter_mut() {
                *a = code % kk;
                code /= kk;
            }
            let mut lw: f64 = assign.iter().map(|&c| components[c].weight.ln()).sum();
            for i in 0..d {
                let tau2 = prior_var[i];
                let (mut a, mut b, mut yy, mut logd) = (0.0, 0.0, 0.0, 0.0);
                for (j, &c) in assign.iter().enumerate() {
                    let comp = &components[c];
                    let dj = comp.var[i];
                    let y = comp.sign * obs[j * d + i] as f64;
                    a += 1.0 / dj;
                    b += y / dj;
                    yy += y * y / dj;
                    logd += dj.ln();
                }
                let one_plus = 1.0 + tau2 * a;
                lw += -0.5
                    * (n as f64 * std::f64::consts::TAU.ln() + logd + one_plus.ln() + yy
                        - tau2 * b * b / one_plus);
                let prec = 1.0 / tau2 + a;
                means.push(b / prec);
                vars.push(1.0 / prec);
            }
            log_weights.push(lw);
        }
        let max = log_weights
            .iter()
            .cloned()
            .fold(f64::NEG_INFINITY, f64::max);
        let lse = max
            + log_weights
                .iter()
                .map(|w| (w - max).exp())
                .sum::<f64>()
                .ln();
        for w in log_weights.iter_mut() {
            *w -= lse;
        }
        Ok(AnalyticPosterior {
            dim: d,
            log_weights,
            means,
            vars,
        })
    }

    /// Dimension of theta.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of mixture components.
    pub fn num_components(&self) -> usize {
        self.log_weights.len()
    }

    /// Normalized component weights.
    pub fn weights(&self) -> Vec<f64> {
        self.log_weights.iter().map(|w| w.exp()).collect()
    }

    /// Component `k`'s mean and per-dimension variance.
    pub fn component(&self, k: usize) -> (&[f64], &[f64]) {
        let d = self.dim;
        (
            &self.means[k * d..(k + 1) * d],
            &self.vars[k * d..(k + 1) * d],
        )
    }

    /// The posterior mean.
    pub fn mean(&self) -> Vec<f64> {
        let d = self.dim;
        let mut m = vec![0.0; d];
        for (k, w) in self.weights().into_iter().enumerate() {
            for (mi, &ci) in m.iter_mut().zip(&self.means[k * d..(k + 1) * d]) {
                *mi += w * ci;
            }
        }
        m
    }

    /// The posterior covariance, row-major `dim × dim`:
    /// `Σ_k w_k (diag(v_k) + m_k m_kᵀ) - m mᵀ`.
    pub fn cov(&self) -> Vec<f64> {
        let d = self.dim;
        let m = self.mean();
        let mut c = vec![0.0; d * d];
        for (k, w) in self.weights().into_iter().enumerate() {
            let (mk, vk) = self.component(k);
            for i in 0..d {
                c[i * d + i] += w * vk[i];
                for j in 0..d {
                    c[i * d + j] += w * mk[i] * mk[j];
                }
            }
        }
        for i in 0..d {
            for j in 0..d {
                c[i * d + j] -= m[i] * m[j];
            }
        }
        c
    }

    /// `n` exact draws, `[n, dim]` row-major.
    pub fn sample(&self, rng: &mut PhiloxStream, n: usize) -> Vec<f32> {
        let d = self.dim;
        let weights = self.weights();
        let mut cumulative = Vec::with_capacity(weights.len());
        let mut acc = 0.0;
        for w in &weights {
            acc += w;
            cumulative.push(acc);
        }
        let mut out = vec![0.0f32; n * d];
        for row in out.chunks_mut(d) {
            let k = if weights.len() == 1 {
                0
            } else {
                let u = rng.uniform() as f64 * acc;
                cumulative
                    .partition_point(|&c| c < u)
                    .min(weights.len() - 1)
            };
            let (mk, vk) = self.component(k);
            for i in 0..d {
                row[i] = (mk[i] + vk[i].sqrt() * rng.normal() as f64) as f32;
            }
        }
        out
    }

    /// `ln p(theta | x)` of each row of `theta` (`[m, dim]`).
    pub fn log_density(&self, theta: &[f32]) -> Result<Vec<f64>> {
        let d = self.dim;
        if theta.len() % d != 0 {
            return Err(Error::shape(
                "AnalyticPosterior::log_density",
                &[theta.len()],
                &[d],
            ));
        }
        Ok(theta
            .chunks(d)
            .map(|t| {
                let terms: Vec<f64> = (0..self.num_components())
                    .map(|k| {
                        let (mk, vk) = self.component(k);
                        self.log_weights[k]
                            + (0..d)
                                .map(|i| {
                                    let z = t[i] as f64 - mk[i];
                                    -0.5 * (std::f64::consts::TAU.ln() + vk[i].ln() + z * z / vk[i])
                                })
                                .sum::<f64>()
                    })
                    .collect();
                let max = terms.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                max + terms.iter().map(|v| (v - max).exp()).sum::<f64>().ln()
            })
            .collect())
    }
}
