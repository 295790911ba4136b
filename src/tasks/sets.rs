//! Built-in set tasks: each dataset is a set of iid events of varying size, and the
//! posterior is over parameters shared by the whole set (the hierarchical SBI paper,
//! `hierarchical-sbi-event-ensembles.txt`, sections 3.1 and 3.3).
//!
//! * [`SetTask::GaussianMean`] ([`gaussian_mean`]): μ ∈ ℝ³ of a normal with known
//!   covariance; sets of 1 to 200 elements; exact posterior known.
//! * [`SetTask::Resonance`] ([`resonance`]): the signal strength of a narrow resonance on
//!   a background, its location a nuisance; sets of 100 events.
//!
//! [`SetTask::simulate_dataset`] follows the convention of [`crate::tasks`]: the
//! parameters come from the prior on `PhiloxStream::new(seed, streams::DATA, 0)`; lane 1
//! then simulates the sets in order, each drawing its cardinality (one
//! [`PhiloxStream::below`] when the task's sizes vary) and then its own draws
//! ([`SetTask::simulate_set`]). A dataset is a pure function of `(task, count, seed)`.

pub mod gaussian_mean;
pub mod resonance;

use crate::error::{Error, Result};
use crate::nn::sets::RaggedSets;
use crate::priors::Prior;
use crate::rng::{streams, PhiloxStream};

/// A built-in set task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SetTask {
    /// Section 3.1: μ ~ N(0, 3·I₃); each element is 5 draws from N(μ, diag(2, 4, 6)).
    GaussianMean,
    /// Section 3.3: θ ~ U(0, 1) of θ·N(θ_ν, 0.1²) + (1 − θ)·N(0, 1), θ_ν ~ N(1, 2²).
    Resonance,
}

/// Parameters and the sets simulated from them.
#[derive(Clone, Debug, PartialEq)]
pub struct SetDataset {
    /// The parameters of interest, `[count, dim θ]`.
    pub theta: Vec<f32>,
    /// One set per row of `theta`.
    pub sets: RaggedSets,
}

impl SetTask {
    /// Every set task, in a fixed order.
    pub const ALL: [SetTask; 2] = [SetTask::GaussianMean, SetTask::Resonance];

    /// The task's name.
    pub fn name(self) -> &'static str {
        match self {
            SetTask::GaussianMean => "gaussian_mean_sets",
            SetTask::Resonance => "resonance_sets",
        }
    }

    /// The prior of the parameters of interest (nuisance parameters are not part of θ).
    pub fn prior(self) -> Prior {
        match self {
            SetTask::GaussianMean => gaussian_mean::prior(),
            SetTask::Resonance => resonance::prior(),
        }
    }

    /// Features of one set element.
    pub fn features(self) -> usize {
        match self {
            SetTask::GaussianMean => gaussian_mean::FEATURES,
            SetTask::Resonance => 1,
        }
    }

    /// The smallest and largest cardinality of a simulated set (drawn uniformly between).
    pub fn cardinality_range(self) -> (usize, usize) {
        match self {
            SetTask::GaussianMean => (1, gaussian_mean::MAX_SET_SIZE),
            SetTask::Resonance => (resonance::EVENTS, resonance::EVENTS),
        }
    }

    /// One set of `n` elements for the parameters `theta` (`[dim θ]`), `[n, features]`.
    /// The resonance task first draws its signal location from its prior (one normal).
    pub fn simulate_set(self, theta: &[f32], n: usize, rng: &mut PhiloxStream) -> Result<Vec<f32>> {
        let d = self.prior().dim();
        if theta.len() != d || theta.iter().any(|v| !v.is_finite()) {
            return Err(Error::invalid(
                "SetTask::simulate_set",
                format!(
                    "{}: theta must be {d} finite values, got {theta:?}",
                    self.name()
                ),
            ));
        }
        Ok(match self {
            SetTask::GaussianMean => gaussian_mean::simulate_set(theta, n, rng),
            SetTask::Resonance => {
                let location = resonance::location_prior().sample(rng, 1)[0];
                resonance::simulate_set(theta[0], location, n, rng)
            }
        })
    }

    /// `count` parameters from the prior with one set each; see the module docs for the
    /// streams.
    pub fn simulate_dataset(self, count: usize, seed: u64) -> Result<SetDataset> {
        let prior = self.prior();
        let theta = prior.sample(&mut PhiloxStream::new(seed, streams::DATA, 0), count);
        let mut rng = PhiloxStream::new(seed, streams::DATA, 1);
        let (lo, hi) = self.cardinality_range();
        let mut sets = RaggedSets::new(self.features())?;
        for t in theta.chunks_exact(prior.dim()) {
            let n = if hi > lo {
                lo + rng.below((hi - lo + 1) as u32) as usize
            } else {
                lo
            };
            sets.push(&self.simulate_set(t, n, &mut rng)?)?;
        }
        Ok(SetDataset { theta, sets })
    }
}
