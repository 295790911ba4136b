//! The hierarchical SBI paper's section 3.3 task (details in its appendix A.3): a narrow
//! resonance on a diffuse background. Each event is one number x drawn from
//!
//! x ~ θ·N(θ_ν, σ_s²) + (1 − θ)·N(μ_b, σ_b²),  σ_s = 0.1, μ_b = 0, σ_b = 1,
//!
//! with the signal strength θ ~ U(0, 1) the parameter of interest and the signal location
//! θ_ν ~ N(1, 2²) a nuisance parameter, marginalized by training on θ alone. A dataset is
//! a fixed batch of N₀ = 100 events (the paper's real-time setting, no Poisson rate).
//!
//! Choices the paper leaves open: the widths σ are standard deviations (A.3 writes
//! "No(θ_ν | μ = 1, σ = 2)"); each event picks its component with one uniform draw (u < θ
//! is signal), then draws one normal.

use crate::priors::Prior;
use crate::rng::PhiloxStream;

/// σ_s, the signal's standard deviation.
pub const SIGNAL_WIDTH: f64 = 0.1;
/// μ_b, the background's mean.
pub const BACKGROUND_MEAN: f64 = 0.0;
/// σ_b, the background's standard deviation.
pub const BACKGROUND_WIDTH: f64 = 1.0;
/// Mean of the signal location's prior.
pub const LOCATION_PRIOR_MEAN: f64 = 1.0;
/// Standard deviation of the signal location's prior.
pub const LOCATION_PRIOR_STD: f64 = 2.0;
/// N₀, the events per dataset.
pub const EVENTS: usize = 100;

/// θ ~ U(0, 1), the signal strength (mixture fraction).
pub fn prior() -> Prior {
    Prior::uniform(&[0.0], &[1.0]).expect("a valid uniform prior")
}

/// θ_ν ~ N(1, 2²), the signal location.
pub fn location_prior() -> Prior {
    Prior::gaussian_diag(&[LOCATION_PRIOR_MEAN], &[LOCATION_PRIOR_STD.powi(2)])
        .expect("a valid Gaussian prior")
}

/// `n` events for signal strength `strength` and location `location`: per event one
/// uniform (the component) then one normal, in order from `rng`. Returns `[n, 1]`.
pub fn simulate_set(strength: f32, location: f32, n: usize, rng: &mut PhiloxStream) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let (mean, width) = if rng.uniform() < strength {
                (location as f64, SIGNAL_WIDTH)
            } else {
                (BACKGROUND_MEAN, BACKGROUND_WIDTH)
            };
            (mean + width * rng.normal() as f64) as f32
        })
        .collect()
}
