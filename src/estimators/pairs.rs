//! What the flow and classifier estimators share: checked, standardized training pairs
//! (θ, x), and the sum over n iid observations of a per-pair network output, which is
//! how NLE and NRE turn one-observation networks into n-observation likelihoods.

use crate::error::{Error, Result};
use crate::estimators::score_model::check_rows;
use crate::estimators::Standardization;
use crate::tensor::Tensor;

/// Simulated pairs, checked (whole rows, finite, as many θ as x) and standardized by
/// their own statistics.
#[derive(Clone, Debug)]
pub struct StandardizedPairs {
    /// Standardized θ `[rows, dim θ]`.
    pub theta: Vec<f32>,
    /// Standardized x `[rows, dim x]`.
    pub x: Vec<f32>,
    /// Number of pairs.
    pub rows: usize,
    /// The map applied to θ.
    pub theta_standardization: Standardization,
    /// The map applied to x.
    pub x_standardization: Standardization,
}

impl StandardizedPairs {
    /// Checks and standardizes θ `[rows, dim_theta]` and x `[rows, dim_x]`, x made of
    /// `x_blocks` exchangeable blocks ([`Standardization::exchangeable_blocks`]); `op`
    /// names the caller in errors.
    pub fn new(
        op: &'static str,
        theta: &[f32],
        x: &[f32],
        dim_theta: usize,
        dim_x: usize,
        x_blocks: usize,
    ) -> Result<Self> {
        let rows = check_rows(op, "theta", theta, dim_theta)?;
        if check_rows(op, "x", x, dim_x)? != rows {
            return Err(Error::invalid(
                op,
                "theta and x have different numbers of rows",
            ));
        }
        let mut theta = theta.to_vec();
        let theta_standardization = Standardization::fit(&theta, dim_theta);
        theta_standardization.apply(&mut theta);
        let mut x = x.to_vec();
        let x_standardization = Standardization::fit_exchangeable(op, &x, dim_x, x_blocks)?;
        x_standardization.apply(&mut x);
        Ok(StandardizedPairs {
            theta,
            x,
            rows,
            theta_standardization,
            x_standardization,
        })
    }
}

/// Pairs per network call when summing over observations: bounds the memory of one call.
const PAIRS_PER_CALL: usize = 8192;

/// `Σ_j f(θ_r, x_j)` for every row θ_r of `theta` `[m, dim θ]` and the observations `obs`
/// `[n, dim x]`, both already standardized. `f` gets a chunk of pairs as two tensors
/// `[pairs, dim θ]`, `[pairs, dim x]` and returns one value per pair; the pairs of a row
/// are contiguous, so every chunk holds whole rows.
pub fn sum_over_observations(
    theta: &[f32],
    obs: &[f32],
    dim_theta: usize,
    dim_x: usize,
    mut f: impl FnMut(Tensor, Tensor) -> Result<Vec<f32>>,
) -> Result<Vec<f64>> {
    let m = theta.len() / dim_theta;
    let n = obs.len() / dim_x;
    let rows_per_call = (PAIRS_PER_CALL / n).max(1);
    let mut out = Vec::with_capacity(m);
    for start in (0..m).step_by(rows_per_call) {
        let rows = rows_per_call.min(m - start);
        let mut t = Vec::with_capacity(rows * n * dim_theta);
        for r in start..start + rows {
            for _ in 0..n {
                t.extend_from_slice(&theta[r * dim_theta..(r + 1) * dim_theta]);
            }
        }
        let x = obs.repeat(rows);
        let values = f(
            Tensor::from_vec(t, &[rows * n, dim_theta])?,
            Tensor::from_vec(x, &[rows * n, dim_x])?,
        )?;
        out.extend(
            values
                .chunks_exact(n)
                .map(|v| v.iter().map(|&a| a as f64).sum::<f64>()),
        );
    }
    Ok(out)
}

/// Training pairs for an estimator of one of x's `draws` iid draws (x is `draws` draws
/// of a smaller simulator output, as slcp's four points): x `[rows, dim_x]` is read as
/// `[rows·draws, dim_x/draws]`, the same row-major buffer, and each θ row is repeated
/// beside each of its draws. Returns θ `[rows·draws, dim θ]` and the per-draw dim x, or
/// an error unless `draws` ≥ 1 divides `dim_x`. One simulation's draws are consecutive
/// rows: train with [`crate::train::TrainConfig::rows_per_group`] = `draws` to keep them
/// on one side of the validation split.
pub fn split_iid_draws(
    theta: &[f32],
    dim_theta: usize,
    dim_x: usize,
    draws: usize,
) -> Result<(Vec<f32>, usize)> {
    if draws == 0 || dim_x % draws != 0 {
        return Err(Error::invalid(
            "split_iid_draws",
            format!("{draws} iid draws do not split x's {dim_x} features evenly"),
        ));
    }
    let theta = theta
        .chunks_exact(dim_theta)
        .flat_map(|row| std::iter::repeat_n(row, draws).flatten().copied())
        .collect();
    Ok((theta, dim_x / draws))
}
