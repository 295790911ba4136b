//! Priors with sampling, log-density and score, and for bounded priors a bijection to an
//! unconstrained space (DESIGN.md: "Bounded priors are sampled in an unconstrained space
//! through a bijection whose log-Jacobian is part of the prior's score").
//!
//! | prior | support | bijection `theta = T(u)` | density of `u` |
//! |---|---|---|---|
//! | [`Prior::Gaussian`] `N(mean, cov)` | R^d | identity | the prior itself |
//! | [`Prior::Uniform`] `U(lo, hi)` (a box) | `[lo, hi]` | `lo + (hi - lo) sigmoid(u)` | standard logistic per dim |
//! | [`Prior::LogNormal`] `exp N(mu, sigma^2)` | `(0, inf)^d` | `exp(u)` | `N(mu, sigma^2)` per dim |
//!
//! The density of `u` is `p(T(u)) |det T'(u)|`, so its log is
//! `log p(T(u)) + log_abs_det_jacobian(u)` and its score includes the gradient of the
//! log-Jacobian ([`Prior::score_unconstrained`]).
//!
//! All functions that take parameters take *rows*: `n × dim` values, row-major, and
//! return one value per row (log-densities) or one row per row (scores, transforms). A
//! length that is not a multiple of `dim` is an error. Densities are computed in `f64`.
//!
//! A prior serializes to JSON (it is part of a model's config), tagged by `"kind"`:
//!
//! ```json
//! {"kind": "gaussian", "mean": [0.0, 0.0], "cov": [[1.0, 0.0], [0.0, 1.0]]}
//! {"kind": "uniform", "lo": [-1.0, -1.0], "hi": [1.0, 1.0]}
//! {"kind": "log_normal", "mu": [0.0], "sigma": [0.5]}
//! ```
//!
//! Deserializing validates the spec (a covariance that is not symmetric positive
//! definite, `lo >= hi`, `sigma <= 0`, mismatched lengths and unknown fields are errors).

use std::path::Path;

use nalgebra::DMatrix;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::rng::PhiloxStream;

const LN_2PI: f64 = 1.837_877_066_409_345_3;

/// Smallest and largest box fraction `(theta - lo) / (hi - lo)` mapped by
/// [`Prior::to_unconstrained`]: points on the boundary are moved this far inside so the
/// logit stays finite (`|u| <= 16.1`). The round trip then moves a boundary point by
/// `1e-7 · (hi - lo)`, below f32 resolution for boxes of width up to ~10.
pub const BOX_FRACTION_CLAMP: f64 = 1e-7;

/// A prior over `theta ∈ R^dim`; see the module docs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Prior {
    /// Multivariate normal with full covariance.
    Gaussian(GaussianPrior),
    /// Independent uniforms on a box `[lo, hi]`.
    #[serde(alias = "box_uniform", alias = "box")]
    Uniform(UniformPrior),
    /// Independent log-normals: `log theta_i ~ N(mu_i, sigma_i^2)`.
    LogNormal(LogNormalPrior),
}

/// `N(mean, cov)` with its Cholesky factor and precision cached.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "GaussianSpec", into = "GaussianSpec")]
pub struct GaussianPrior {
    mean: Vec<f64>,
    /// Row-major `dim × dim`.
    cov: Vec<f64>,
    /// Lower Cholesky factor, row-major.
    chol: Vec<f64>,
    /// `cov⁻¹`, row-major.
    precision: Vec<f64>,
    /// `-(dim/2) ln 2π - Σ ln L_ii`.
    log_norm: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GaussianSpec {
    mean: Vec<f64>,
    cov: Vec<Vec<f64>>,
}

/// `U(lo, hi)` per dimension.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "UniformSpec", into = "UniformSpec")]
pub struct UniformPrior {
    lo: Vec<f64>,
    hi: Vec<f64>,
    /// `-Σ ln(hi - lo)`.
    log_density_inside: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UniformSpec {
    lo: Vec<f64>,
    hi: Vec<f64>,
}

/// `exp N(mu, sigma^2)` per dimension.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "LogNormalSpec", into = "LogNormalSpec")]
pub struct LogNormalPrior {
    mu: Vec<f64>,
    sigma: Vec<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogNormalSpec {
    mu: Vec<f64>,
    sigma: Vec<f64>,
}

fn finite_all(v: &[f64]) -> bool {
    v.iter().all(|x| x.is_finite())
}

impl TryFrom<GaussianSpec> for GaussianPrior {
    type Error = String;
    fn try_from(s: GaussianSpec) -> std::result::Result<Self, String> {
        let d = s.mean.len();
        if d == 0 {
            return Err("gaussian prior: mean is empty".into());
        }
        if s.cov.len() != d || s.cov.iter().any(|r| r.len() != d) {
            return Err(format!(
                "gaussian prior: cov must be {d}×{d} to match mean, got {} rows of lengths {:?}",
                s.cov.len(),
                s.cov.iter().map(Vec::len).collect::<Vec<_>>()
            ));
        }
        let cov: Vec<f64> = s.cov.into_iter().flatten().collect();
        if !finite_all(&s.mean) || !finite_all(&cov) {
            return Err("gaussian prior: mean and cov must be finite".into());
        }
        for i in 0..d {
            for j in 0..i {
                let (a, b) = (cov[i * d + j], cov[j * d + i]);
                if (a - b).abs() > 1e-9 * (1.0 + a.abs().max(b.abs())) {
                    return Err(format!(
                        "gaussian prior: cov is not symmetric: cov[{i}][{j}] = {a} but cov[{j}][{i}] = {b}"
                    ));
                }
            }
        }
        let m = DMatrix::from_row_slice(d, d, &cov);
        let chol = nalgebra::Cholesky::new(m)
            .ok_or("gaussian prior: cov is not positive definite (Cholesky failed)")?;
        let l = chol.l();
        let precision = chol.inverse();
        let log_norm = -0.5 * d as f64 * LN_2PI - (0..d).map(|i| l[(i, i)].ln()).sum::<f64>();
        let row_major = |m: &DMatrix<f64>| {
            let mut out = Vec::with_capacity(d * d);
            for i in 0..d {
                for j in 0..d {
                    out.push(m[(i, j)]);
                }
            }
            out
        };
        Ok(GaussianPrior {
            mean: s.mean,
            chol: row_major(&l),
            precision: row_major(&precision),
            cov,
            log_norm,
        })
    }
}

impl From<GaussianPrior> for GaussianSpec {
    fn from(g: GaussianPrior) -> Self {
        let d = g.mean.len();
        GaussianSpec {
            cov: g.cov.chunks(d).map(<[f64]>::to_vec).collect(),
            mean: g.mean,
        }
    }
}

impl TryFrom<UniformSpec> for UniformPrior {
    type Error = String;
    fn try_from(s: UniformSpec) -> std::result::Result<Self, String> {
        if s.lo.is_empty() || s.lo.len() != s.hi.len() {
            return Err(format!(
                "uniform prior: lo and hi must be non-empty and of equal length, got {} and {}",
                s.lo.len(),
                s.hi.len()
            ));
        }
        for (i, (&lo, &hi)) in s.lo.iter().zip(&s.hi).enumerate() {
            if !(lo.is_finite() && hi.is_finite() && lo < hi) {
                return Err(format!(
                    "uniform prior: dimension {i} needs finite lo < hi, got [{lo}, {hi}]"
                ));
            }
        }
        let log_density_inside = -s
            .lo
            .iter()
            .zip(&s.hi)
            .map(|(l, h)| (h - l).ln())
            .sum::<f64>();
        Ok(UniformPrior {
            lo: s.lo,
            hi: s.hi,
            log_density_inside,
        })
    }
}

impl From<UniformPrior> for UniformSpec {
    fn from(u: UniformPrior) -> Self {
        UniformSpec { lo: u.lo, hi: u.hi }
    }
}

impl TryFrom<LogNormalSpec> for LogNormalPrior {
    type Error = String;
    fn try_from(s: LogNormalSpec) -> std::result::Result<Self, String> {
        if s.mu.is_empty() || s.mu.len() != s.sigma.len() {
            return Err(format!(
                "log_normal prior: mu and sigma must be non-empty and of equal length, got {} and {}",
                s.mu.len(),
                s.sigma.len()
            ));
        }
        for (i, (&m, &sd)) in s.mu.iter().zip(&s.sigma).enumerate() {
            if !(m.is_finite() && sd.is_finite() && sd > 0.0) {
                return Err(format!(
                    "log_normal prior: dimension {i} needs finite mu and sigma > 0, got mu = {m}, sigma = {sd}"
                ));
            }
        }
        Ok(LogNormalPrior {
            mu: s.mu,
            sigma: s.sigma,
        })
    }
}

impl From<LogNormalPrior> for LogNormalSpec {
    fn from(p: LogNormalPrior) -> Self {
        LogNormalSpec {
            mu: p.mu,
            sigma: p.sigma,
        }
    }
}

/// `ln(1 + e^x)` without overflow.
#[inline]
fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// `1 / (1 + e^-x)` without overflow.
#[inline]
fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

impl GaussianPrior {
    /// The mean.
    pub fn mean(&self) -> &[f64] {
        &self.mean
    }

    /// The covariance, row-major `dim × dim`.
    pub fn cov(&self) -> &[f64] {
        &self.cov
    }

    /// The precision `cov⁻¹`, row-major `dim × dim`.
    pub fn precision(&self) -> &[f64] {
        &self.precision
    }

    /// The lower Cholesky factor of the covariance, row-major.
    pub fn cholesky(&self) -> &[f64] {
        &self.chol
    }
}

impl UniformPrior {
    /// Lower bounds.
    pub fn lo(&self) -> &[f64] {
        &self.lo
    }

    /// Upper bounds.
    pub fn hi(&self) -> &[f64] {
        &self.hi
    }
}

impl LogNormalPrior {
    /// Means of `log theta`.
    pub fn mu(&self) -> &[f64] {
        &self.mu
    }

    /// Standard deviations of `log theta`.
    pub fn sigma(&self) -> &[f64] {
        &self.sigma
    }
}

/// The bijection `theta = T(u)` from the unconstrained space to the prior's support.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bijection {
    /// `theta = u` (Gaussian priors).
    Identity,
    /// `theta = lo + (hi - lo) sigmoid(u)` (uniform boxes).
    ScaledLogit,
    /// `theta = exp(u)` (log-normal priors).
    Log,
}

impl Bijection {
    /// The name stored in model configs: `"identity"`, `"scaled_logit"` or `"log"`.
    pub fn name(self) -> &'static str {
        match self {
            Bijection::Identity => "identity",
            Bijection::ScaledLogit => "scaled_logit",
            Bijection::Log => "log",
        }
    }
}

impl Prior {
    /// `N(mean, cov)`; `cov` is row-major `dim × dim`, symmetric positive definite.
    pub fn gaussian(mean: &[f64], cov: &[f64]) -> Result<Prior> {
        let d = mean.len();
        if cov.len() != d * d {
            return Err(Error::shape_because(
                "Prior::gaussian",
                &[d, d],
                &[cov.len()],
                "cov must be dim × dim",
            ));
        }
        let spec = GaussianSpec {
            mean: mean.to_vec(),
            cov: cov.chunks(d.max(1)).map(<[f64]>::to_vec).collect(),
        };
        GaussianPrior::try_from(spec)
            .map(Prior::Gaussian)
            .map_err(|m| Error::invalid("Prior::gaussian", m))
    }

    /// `N(mean, diag(var))`.
    pub fn gaussian_diag(mean: &[f64], var: &[f64]) -> Result<Prior> {
        let d = mean.len();
        if var.len() != d {
            return Err(Error::shape("Prior::gaussian_diag", &[d], &[var.len()]));
        }
        let mut cov = vec![0.0; d * d];
        for i in 0..d {
            cov[i * d + i] = var[i];
        }
        Self::gaussian(mean, &cov)
    }

    /// `N(0, I)` in `dim` dimensions.
    pub fn standard_normal(dim: usize) -> Result<Prior> {
        Self::gaussian_diag(&vec![0.0; dim], &vec![1.0; dim])
    }

    /// `U(lo, hi)` per dimension.
    pub fn uniform(lo: &[f64], hi: &[f64]) -> Result<Prior> {
        UniformPrior::try_from(UniformSpec {
            lo: lo.to_vec(),
            hi: hi.to_vec(),
        })
        .map(Prior::Uniform)
        .map_err(|m| Error::invalid("Prior::uniform", m))
    }

    /// `exp N(mu, sigma^2)` per dimension.
    pub fn log_normal(mu: &[f64], sigma: &[f64]) -> Result<Prior> {
        LogNormalPrior::try_from(LogNormalSpec {
            mu: mu.to_vec(),
            sigma: sigma.to_vec(),
        })
        .map(Prior::LogNormal)
        .map_err(|m| Error::invalid("Prior::log_normal", m))
    }

    /// Parses a JSON spec (see the module docs).
    pub fn from_json_str(text: &str) -> Result<Prior> {
        serde_json::from_str(text).map_err(|e| {
            Error::invalid(
                "Prior::from_json",
                format!(
                    "{e} (expected e.g. {{\"kind\": \"gaussian\", \"mean\": [...], \"cov\": [[...]]}}, \
                     {{\"kind\": \"uniform\", \"lo\": [...], \"hi\": [...]}} or \
                     {{\"kind\": \"log_normal\", \"mu\": [...], \"sigma\": [...]}})"
                ),
            )
        })
    }

    /// Reads a JSON spec from a file; errors name the file.
    pub fn from_json_file(path: impl AsRef<Path>) -> Result<Prior> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        Self::from_json_str(&text).map_err(|e| Error::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
        })
    }

    /// The JSON spec.
    pub fn to_json_string(&self) -> String {
        serde_json::to_string_pretty(self).expect("a prior always serializes")
    }

    /// Writes the JSON spec atomically.
    pub fn to_json_file(&self, path: impl AsRef<Path>) -> Result<()> {
        crate::io::write_atomic(path, self.to_json_string().as_bytes())
    }

    /// Dimension of theta.
    pub fn dim(&self) -> usize {
        match self {
            Prior::Gaussian(g) => g.mean.len(),
            Prior::Uniform(u) => u.lo.len(),
            Prior::LogNormal(l) => l.mu.len(),
        }
    }

    /// `"gaussian"`, `"uniform"` or `"log_normal"` (the JSON `kind`).
    pub fn kind(&self) -> &'static str {
        match self {
            Prior::Gaussian(_) => "gaussian",
            Prior::Uniform(_) => "uniform",
            Prior::LogNormal(_) => "log_normal",
        }
    }

    /// Whether the support is a proper subset of R^dim (then samplers work in the
    /// unconstrained space).
    pub fn is_bounded(&self) -> bool {
        !matches!(self, Prior::Gaussian(_))
    }

    /// The bijection `theta = T(u)`.
    pub fn bijection(&self) -> Bijection {
        match self {
            Prior::Gaussian(_) => Bijection::Identity,
            Prior::Uniform(_) => Bijection::ScaledLogit,
            Prior::LogNormal(_) => Bijection::Log,
        }
    }

    fn check_rows(&self, op: &'static str, len: usize) -> Result<usize> {
        let d = self.dim();
        if len % d != 0 {
            return Err(Error::shape_because(
                op,
                &[len],
                &[d],
                &format!("expected rows of {d} values (len a multiple of {d})"),
            ));
        }
        Ok(len / d)
    }

    /// `n` draws, row-major `[n, dim]`.
    pub fn sample(&self, rng: &mut PhiloxStream, n: usize) -> Vec<f32> {
        let d = self.dim();
        let mut out = vec![0.0f32; n * d];
        match self {
            Prior::Gaussian(g) => {
                let mut z = vec![0.0f64; d];
                for row in out.chunks_mut(d) {
                    for zi in z.iter_mut() {
                        *zi = rng.normal() as f64;
                    }
                    for (i, r) in row.iter_mut().enumerate() {
                        let lz: f64 = (0..=i).map(|j| g.chol[i * d + j] * z[j]).sum();
                        *r = (g.mean[i] + lz) as f32;
                    }
                }
            }
            Prior::Uniform(u) => {
                for row in out.chunks_mut(d) {
                    for (i, r) in row.iter_mut().enumerate() {
                        let f = rng.uniform() as f64;
                        *r = (u.lo[i] + (u.hi[i] - u.lo[i]) * f) as f32;
                    }
                }
            }
            Prior::LogNormal(l) => {
                for row in out.chunks_mut(d) {
                    for (i, r) in row.iter_mut().enumerate() {
                        let z = rng.normal() as f64;
                        *r = (l.mu[i] + l.sigma[i] * z).exp() as f32;
                    }
                }
            }
        }
        out
    }

    /// `n` draws of `u = T⁻¹(theta)`, theta from the prior: exactly the unconstrained
    /// density ([`Prior::log_density_unconstrained`]), drawn directly (standard
    /// logistic / normal) rather than through a clamped inverse.
    pub fn sample_unconstrained(&self, rng: &mut PhiloxStream, n: usize) -> Vec<f32> {
        let d = self.dim();
        match self {
            Prior::Gaussian(_) => self.sample(rng, n),
            Prior::Uniform(_) => {
                let mut out = vec![0.0f32; n * d];
                for v in out.iter_mut() {
                    let f = rng.uniform() as f64;
                    *v = (f / (1.0 - f)).ln() as f32;
                }
                out
            }
            Prior::LogNormal(l) => {
                let mut out = vec![0.0f32; n * d];
                for row in out.chunks_mut(d) {
                    for (i, r) in row.iter_mut().enumerate() {
                        *r = (l.mu[i] + l.sigma[i] * rng.normal() as f64) as f32;
                    }
                }
                out
            }
        }
    }

    fn log_density_row(&self, theta: &[f32]) -> f64 {
        match self {
            Prior::Gaussian(g) => {
                let d = g.mean.len();
                // Solve L y = theta - mean; log p = log_norm - |y|²/2.
                let mut y = vec![0.0f64; d];
                for i in 0..d {
                    let mut s = theta[i] as f64 - g.mean[i];
                    for (j, yj) in y.iter().enumerate().take(i) {
                        s -= g.chol[i * d + j] * yj;
                    }
                    y[i] = s / g.chol[i * d + i];
                }
                g.log_norm - 0.5 * y.iter().map(|v| v * v).sum::<f64>()
            }
            Prior::Uniform(u) => {
                let inside = theta.iter().enumerate().all(|(i, &t)| {
                    let t = t as f64;
                    t >= u.lo[i] && t <= u.hi[i]
                });
                if inside {
                    u.log_density_inside
                } else {
                    f64::NEG_INFINITY
                }
            }
            Prior::LogNormal(l) => {
                let mut total = 0.0;
                for (i, &t) in theta.iter().enumerate() {
                    let t = t as f64;
                    if t <= 0.0 || t.is_nan() {
                        return f64::NEG_INFINITY;
                    }
                    let z = (t.ln() - l.mu[i]) / l.sigma[i];
                    total += -t.ln() - l.sigma[i].ln() - 0.5 * LN_2PI - 0.5 * z * z;
                }
                total
            }
        }
    }

    /// `log p(theta)` of each row (`-inf` outside the support).
    pub fn log_density(&self, theta: &[f32]) -> Result<Vec<f64>> {
        self.check_rows("Prior::log_density", theta.len())?;
        Ok(theta
            .chunks(self.dim())
            .map(|r| self.log_density_row(r))
            .collect())
    }

    fn score_row(&self, theta: &[f32], out: &mut [f32]) {
        match self {
            Prior::Gaussian(g) => {
                let d = g.mean.len();
                for (i, o) in out.iter_mut().enumerate().take(d) {
                    let s: f64 = (0..d)
                        .map(|j| g.precision[i * d + j] * (theta[j] as f64 - g.mean[j]))
                        .sum();
                    *o = -s as f32;
                }
            }
            Prior::Uniform(_) => out.fill(0.0),
            Prior::LogNormal(l) => {
                for (i, (&t, o)) in theta.iter().zip(out.iter_mut()).enumerate() {
                    let t = t as f64;
                    *o = if t > 0.0 {
                        let s2 = l.sigma[i] * l.sigma[i];
                        (-(1.0 + (t.ln() - l.mu[i]) / s2) / t) as f32
                    } else {
                        0.0
                    };
                }
            }
        }
    }

    /// `∇_theta log p(theta)` of each row into `out` (same length as `theta`).
    ///
    /// Gaussian: `-cov⁻¹ (theta - mean)`. Uniform: 0 (inside the box; the density is
    /// flat, and 0 is also returned outside, where it has no gradient). Log-normal:
    /// `-(1 + (ln theta - mu)/sigma²)/theta`, and 0 for `theta <= 0` (outside the support).
    pub fn score_into(&self, theta: &[f32], out: &mut [f32]) -> Result<()> {
        self.check_rows("Prior::score", theta.len())?;
        if out.len() != theta.len() {
            return Err(Error::shape(
                "Prior::score (out)",
                &[theta.len()],
                &[out.len()],
            ));
        }
        let d = self.dim();
        for (t, o) in theta.chunks(d).zip(out.chunks_mut(d)) {
            self.score_row(t, o);
        }
        Ok(())
    }

    /// `∇_theta log p(theta)` of each row; see [`Prior::score_into`].
    pub fn score(&self, theta: &[f32]) -> Result<Vec<f32>> {
        let mut out = vec![0.0; theta.len()];
        self.score_into(theta, &mut out)?;
        Ok(out)
    }

    /// `u = T⁻¹(theta)` of each row. Errors if a value lies outside the support (or is not
    /// finite), naming the row and dimension. Box points on (or within
    /// [`BOX_FRACTION_CLAMP`] of) the boundary map to `|u| ≈ 16.1`.
    pub fn to_unconstrained(&self, theta: &[f32]) -> Result<Vec<f32>> {
        self.check_rows("Prior::to_unconstrained", theta.len())?;
        let d = self.dim();
        let mut out = vec![0.0f32; theta.len()];
        for (k, (&t, o)) in theta.iter().zip(out.iter_mut()).enumerate() {
            let (row, i) = (k / d, k % d);
            let outside = |what: &str| {
                Error::invalid(
                    "Prior::to_unconstrained",
                    format!("theta[{row}][{i}] = {t} is outside the {what}"),
                )
            };
            if !t.is_finite() {
                return Err(outside("support (not finite)"));
            }
            let t = t as f64;
            *o = match self {
                Prior::Gaussian(_) => t as f32,
                Prior::Uniform(u) => {
                    if t < u.lo[i] || t > u.hi[i] {
                        return Err(outside(&format!("box [{}, {}]", u.lo[i], u.hi[i])));
                    }
                    let f = ((t - u.lo[i]) / (u.hi[i] - u.lo[i]))
                        .clamp(BOX_FRACTION_CLAMP, 1.0 - BOX_FRACTION_CLAMP);
                    (f / (1.0 - f)).ln() as f32
                }
                Prior::LogNormal(_) => {
                    if t <= 0.0 {
                        return Err(outside("log-normal support (0, inf)"));
                    }
                    t.ln() as f32
                }
            };
        }
        Ok(out)
    }

    fn value_from_unconstrained(&self, i: usize, u: f64) -> f64 {
        match self {
            Prior::Gaussian(_) => u,
            Prior::Uniform(b) => b.lo[i] + (b.hi[i] - b.lo[i]) * sigmoid(u),
            Prior::LogNormal(_) => u.exp(),
        }
    }

    /// `theta = T(u)` of each row, in place (the form the samplers use on their buffers).
    pub fn from_unconstrained_in_place(&self, u: &mut [f32]) -> Result<()> {
        self.check_rows("Prior::from_unconstrained", u.len())?;
        if matches!(self, Prior::Gaussian(_)) {
            return Ok(());
        }
        let d = self.dim();
        for (k, v) in u.iter_mut().enumerate() {
            *v = self.value_from_unconstrained(k % d, *v as f64) as f32;
        }
        Ok(())
    }

    /// `theta = T(u)` of each row.
    pub fn from_unconstrained(&self, u: &[f32]) -> Result<Vec<f32>> {
        let mut out = u.to_vec();
        self.from_unconstrained_in_place(&mut out)?;
        Ok(out)
    }

    fn log_abs_det_jacobian_row(&self, u: &[f32]) -> f64 {
        match self {
            Prior::Gaussian(_) => 0.0,
            Prior::Uniform(b) => u
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    let v = v as f64;
                    (b.hi[i] - b.lo[i]).ln() - softplus(v) - softplus(-v)
                })
                .sum(),
            Prior::LogNormal(_) => u.iter().map(|&v| v as f64).sum(),
        }
    }

    /// `ln |det ∂T(u)/∂u|` of each row: 0 (identity), `Σ ln(hi - lo) + ln σ(u) + ln σ(-u)`
    /// (scaled logit), `Σ u` (log).
    pub fn log_abs_det_jacobian(&self, u: &[f32]) -> Result<Vec<f64>> {
        self.check_rows("Prior::log_abs_det_jacobian", u.len())?;
        Ok(u.chunks(self.dim())
            .map(|r| self.log_abs_det_jacobian_row(r))
            .collect())
    }

    /// `ln p_u(u) = ln p(T(u)) + ln |det T'(u)|` of each row: the log-density of the prior
    /// pushed to the unconstrained space (a proper density on R^dim).
    pub fn log_density_unconstrained(&self, u: &[f32]) -> Result<Vec<f64>> {
        self.check_rows("Prior::log_density_unconstrained", u.len())?;
        let d = self.dim();
        Ok(u.chunks(d)
            .map(|r| match self {
                Prior::Gaussian(_) => self.log_density_row(r),
                // p(T(u)) is the constant 1/Π(hi - lo), which cancels the Π(hi - lo) of the
                // Jacobian: a product of standard logistic densities (computed directly, so
                // no rounding of T(u) onto the boundary can make it -inf).
                Prior::Uniform(_) => r
                    .iter()
                    .map(|&v| {
                        let v = v as f64;
                        -softplus(v) - softplus(-v)
                    })
                    .sum(),
                // ln N(u; mu, sigma²) per dimension, again directly.
                Prior::LogNormal(l) => r
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| {
                        let z = (v as f64 - l.mu[i]) / l.sigma[i];
                        -0.5 * LN_2PI - l.sigma[i].ln() - 0.5 * z * z
                    })
                    .sum(),
            })
            .collect())
    }

    /// `∇_u ln p_u(u)` of each row into `out`: the prior score in the unconstrained space,
    /// log-Jacobian included. Gaussian: the score itself. Uniform: `1 - 2 σ(u)` per dim.
    /// Log-normal: `-(u - mu)/sigma²` per dim.
    pub fn score_unconstrained_into(&self, u: &[f32], out: &mut [f32]) -> Result<()> {
        self.check_rows("Prior::score_unconstrained", u.len())?;
        if out.len() != u.len() {
            return Err(Error::shape(
                "Prior::score_unconstrained (out)",
                &[u.len()],
                &[out.len()],
            ));
        }
        let d = self.dim();
        match self {
            Prior::Gaussian(_) => {
                for (t, o) in u.chunks(d).zip(out.chunks_mut(d)) {
                    self.score_row(t, o);
                }
            }
            Prior::Uniform(_) => {
                for (&v, o) in u.iter().zip(out.iter_mut()) {
                    *o = (1.0 - 2.0 * sigmoid(v as f64)) as f32;
                }
            }
            Prior::LogNormal(l) => {
                for (k, (&v, o)) in u.iter().zip(out.iter_mut()).enumerate() {
                    let i = k % d;
                    *o = (-(v as f64 - l.mu[i]) / (l.sigma[i] * l.sigma[i])) as f32;
                }
            }
        }
        Ok(())
    }

    /// `∇_u ln p_u(u)` of each row; see [`Prior::score_unconstrained_into`].
    pub fn score_unconstrained(&self, u: &[f32]) -> Result<Vec<f32>> {
        let mut out = vec![0.0; u.len()];
        self.score_unconstrained_into(u, &mut out)?;
        Ok(out)
    }
}
