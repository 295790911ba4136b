//! Calibration of posterior draws by the coverage of central credible intervals: over
//! held-out datasets whose true θ is known, the share in which θ_i falls inside the
//! central `level` interval of the posterior draws' marginal i (between the empirical
//! (1 − level)/2 and (1 + level)/2 quantiles). A calibrated posterior covers at the
//! nominal level; an overconfident (too narrow) one covers less, a too wide one more.
//! Over m datasets the share has a binomial standard error √(level(1 − level)/m).

use crate::error::{Error, Result};

/// Accumulates coverage over datasets, per dimension of θ and per level.
#[derive(Clone, Debug)]
pub struct Coverage {
    dim: usize,
    levels: Vec<f64>,
    /// `[dim][levels]` datasets whose truth was inside.
    hits: Vec<usize>,
    datasets: usize,
}

impl Coverage {
    /// Coverage of θ with `dim` dimensions at the central interval `levels` (each in
    /// (0, 1), e.g. `[0.5, 0.68, 0.95]`).
    pub fn new(dim: usize, levels: &[f64]) -> Result<Self> {
        if dim == 0 || levels.is_empty() || levels.iter().any(|l| !(*l > 0.0 && *l < 1.0)) {
            return Err(Error::invalid(
                "Coverage::new",
                format!("needs dim > 0 and levels in (0, 1), got dim {dim}, levels {levels:?}"),
            ));
        }
        Ok(Coverage {
            dim,
            levels: levels.to_vec(),
            hits: vec![0; dim * levels.len()],
            datasets: 0,
        })
    }

    /// Adds one dataset: its true θ `[dim]` and posterior draws `[draws, dim]`.
    pub fn add(&mut self, truth: &[f32], draws: &[f32]) -> Result<()> {
        let op = "Coverage::add";
        let d = self.dim;
        if truth.len() != d || draws.is_empty() || draws.len() % d != 0 {
            return Err(Error::invalid(
                op,
                format!(
                    "needs θ of {d} values and whole rows of draws, got {} and {}",
                    truth.len(),
                    draws.len()
                ),
            ));
        }
        if truth.iter().chain(draws).any(|v| !v.is_finite()) {
            return Err(Error::invalid(op, "NaN or infinite values"));
        }
        for (i, &t) in truth.iter().enumerate() {
            let mut marginal: Vec<f32> = draws.iter().skip(i).step_by(d).copied().collect();
            marginal.sort_by(f32::total_cmp);
            let quantile = |q: f64| marginal[(q * (marginal.len() - 1) as f64).round() as usize];
            for (j, level) in self.levels.iter().enumerate() {
                let tail = (1.0 - level) / 2.0;
                if quantile(tail) <= t && t <= quantile(1.0 - tail) {
                    self.hits[i * self.levels.len() + j] += 1;
                }
            }
        }
        self.datasets += 1;
        Ok(())
    }

    /// Datasets added so far.
    pub fn datasets(&self) -> usize {
        self.datasets
    }

    /// The levels, as given to [`Coverage::new`].
    pub fn levels(&self) -> &[f64] {
        &self.levels
    }

    /// The share of datasets covered, `[dim][level]` (NaN before any dataset).
    pub fn shares(&self) -> Vec<Vec<f64>> {
        self.hits
            .chunks_exact(self.levels.len())
            .map(|row| {
                row.iter()
                    .map(|&h| h as f64 / self.datasets as f64)
                    .collect()
            })
            .collect()
    }
}
