//! Convergence diagnostics of parallel MCMC chains, per dimension, as Stan computes them
//! (Gelman et al., *Bayesian Data Analysis*, 3rd ed., §11.4–11.5), on split chains: each
//! of the m chains of 2N draws is cut into two halves, giving 2m chains of N draws.
//!
//! With chain means θ̄_c, chain variances s_c² (divisor N − 1), W = mean_c s_c²,
//! B/N = variance of the θ̄_c (divisor 2m − 1) and var⁺ = (N − 1)/N · W + B/N:
//!
//! * split R̂ = √(var⁺ / W): near 1 when the chains agree; values above ~1.01–1.05 mean
//!   the chains have not mixed.
//! * effective sample size: ρ_t = 1 − (W − mean_c γ_c(t)) / var⁺ with γ_c(t) the lag-t
//!   autocovariance of chain c (divisor N); Geyer's initial monotone sequence truncates
//!   the sum of the pairs P_k = ρ_{2k} + ρ_{2k+1} at the first negative pair and makes the
//!   rest non-increasing; τ = −1 + 2 Σ_k P_k and ESS = 2mN / τ.

use crate::error::{Error, Result};

/// R̂ and ESS of every dimension.
#[derive(Clone, Debug, PartialEq)]
pub struct ChainDiagnostics {
    /// Split R̂ per dimension.
    pub rhat: Vec<f64>,
    /// Effective sample size per dimension (over all chains).
    pub ess: Vec<f64>,
}

impl ChainDiagnostics {
    /// The largest R̂ (the dimension that mixed worst).
    pub fn max_rhat(&self) -> f64 {
        self.rhat.iter().copied().fold(f64::NAN, f64::max)
    }

    /// The smallest ESS.
    pub fn min_ess(&self) -> f64 {
        self.ess.iter().copied().fold(f64::NAN, f64::min)
    }
}

/// Diagnostics of `draws` laid out `[chains, per_chain, dim]` row-major. Needs at least
/// one chain of four draws (two split halves of two draws) and finite values.
pub fn chain_diagnostics(
    draws: &[f32],
    chains: usize,
    per_chain: usize,
    dim: usize,
) -> Result<ChainDiagnostics> {
    let op = "chain_diagnostics";
    if chains == 0 || per_chain < 4 || dim == 0 {
        return Err(Error::invalid(
            op,
            format!("needs at least 1 chain of 4 draws, got {chains} chains of {per_chain}"),
        ));
    }
    if draws.len() != chains * per_chain * dim {
        return Err(Error::invalid(
            op,
            format!(
                "{} values for {chains} chains × {per_chain} draws × {dim} dims",
                draws.len()
            ),
        ));
    }
    if draws.iter().any(|v| !v.is_finite()) {
        return Err(Error::invalid(op, "draws hold NaN or infinite values"));
    }
    let half = per_chain / 2;
    // Each split chain as the draws of one dimension; an odd draw in the middle is dropped.
    let split = |c: usize, k: usize, i: usize| -> Vec<f64> {
        let start = c * per_chain + if i == 0 { 0 } else { per_chain - half };
        (start..start + half)
            .map(|t| draws[t * dim + k] as f64)
            .collect()
    };
    let mut rhat = Vec::with_capacity(dim);
    let mut ess = Vec::with_capacity(dim);
    for k in 0..dim {
        let halves: Vec<Vec<f64>> = (0..chains)
            .flat_map(|c| [split(c, k, 0), split(c, k, 1)])
            .collect();
        let (r, e) = rhat_and_ess(&halves);
        rhat.push(r);
        ess.push(e);
    }
    Ok(ChainDiagnostics { rhat, ess })
}

/// (R̂, ESS) of one dimension given the split chains, all of equal length N ≥ 2.
fn rhat_and_ess(chains: &[Vec<f64>]) -> (f64, f64) {
    let m = chains.len() as f64;
    let n = chains[0].len();
    let nf = n as f64;
    let means: Vec<f64> = chains.iter().map(|c| c.iter().sum::<f64>() / nf).collect();
    let within = chains
        .iter()
        .zip(&means)
        .map(|(c, mu)| c.iter().map(|v| (v - mu).powi(2)).sum::<f64>() / (nf - 1.0))
        .sum::<f64>()
        / m;
    let grand = means.iter().sum::<f64>() / m;
    let between_over_n = if chains.len() > 1 {
        means.iter().map(|mu| (mu - grand).powi(2)).sum::<f64>() / (m - 1.0)
    } else {
        0.0
    };
    let var_plus = (nf - 1.0) / nf * within + between_over_n;
    if within <= 0.0 {
        // Every chain stuck at one value: nothing mixed.
        return (f64::INFINITY, 1.0);
    }
    let rhat = (var_plus / within).sqrt();

    let autocov = |t: usize| -> f64 {
        chains
            .iter()
            .zip(&means)
            .map(|(c, mu)| {
                (0..n - t)
                    .map(|i| (c[i] - mu) * (c[i + t] - mu))
                    .sum::<f64>()
                    / nf
            })
            .sum::<f64>()
            / m
    };
    let rho = |t: usize| 1.0 - (within - autocov(t)) / var_plus;
    let mut sum_pairs = 0.0;
    let mut last_pair = f64::INFINITY;
    let mut t = 0;
    while t + 1 < n {
        let pair = rho(t) + rho(t + 1);
        if pair < 0.0 {
            break;
        }
        let pair = pair.min(last_pair);
        sum_pairs += pair;
        last_pair = pair;
        t += 2;
    }
    // Stan's cap: antithetic chains may claim at most mN·log10(mN) effective draws.
    let tau = (-1.0 + 2.0 * sum_pairs).max(1.0 / (m * nf).log10().max(1.0));
    (rhat, m * nf / tau)
}
