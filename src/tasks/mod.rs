//! Built-in simulators with their priors: the papers' tasks (`gaussian10`, `mog10`,
//! `multimodal2`, Geffner et al. 2022) and four sbibm benchmark tasks
//! (`gaussian_linear`, `two_moons`, `gaussian_mixture`, `slcp`) exactly as the shared
//! data README defines them.
//!
//! Simulations draw from a [`PhiloxStream`] (the crate's one RNG); by convention
//! [`Task::simulate_dataset`] uses stream [`streams::DATA`], lane 0 for the prior and
//! lane 1 for the simulator. Within one call, rows are simulated in order, each
//! consuming a fixed pattern of draws (documented per family), so a dataset is a pure
//! function of `(task, n, seed)`.

pub mod gaussian;
pub mod gaussian_mixture;
pub mod multimodal;
pub mod posterior;
pub mod reference;
pub mod sets;
pub mod slcp;
pub mod two_moons;

pub use posterior::{AnalyticPosterior, LikelihoodComponent};
pub use reference::{default_data_dir, load_reference, ReferenceObservation};

use crate::error::{Error, Result};
use crate::priors::Prior;
use crate::rng::{streams, PhiloxStream};

/// A built-in task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Task {
    /// Prior `N(0, I₁₀)`, `x ~ N(theta, Sigma)`, `Sigma = diag(linspace(0.6, 1.4, 10))`.
    Gaussian10,
    /// Prior `N(0, I₁₀)`, `x ~ 0.5 N(theta, 2.25 Sigma) + 0.5 N(theta, Sigma/9)`.
    Mog10,
    /// Prior `N(0, I₂)`, `x ~ 0.5 N(theta, 0.5 I) + 0.5 N(-theta, 0.5 I)`.
    Multimodal2,
    /// sbibm: prior `N(0, 0.1 I₁₀)`, `x ~ N(theta, 0.1 I)`.
    GaussianLinear,
    /// sbibm: prior `U(-1, 1)²`, the two-moons simulator.
    TwoMoons,
    /// sbibm: prior `U(-10, 10)²`, `x ~ 0.5 N(theta, I) + 0.5 N(theta, 0.01 I)`.
    GaussianMixture,
    /// sbibm: prior `U(-3, 3)⁵`, 4 draws from a 2-D Gaussian with parameterized covariance.
    Slcp,
}

impl Task {
    /// Every task, in a fixed order.
    pub const ALL: [Task; 7] = [
        Task::Gaussian10,
        Task::Mog10,
        Task::Multimodal2,
        Task::GaussianLinear,
        Task::TwoMoons,
        Task::GaussianMixture,
        Task::Slcp,
    ];

    /// The task's name as the command line and files spell it.
    pub fn name(self) -> &'static str {
        match self {
            Task::Gaussian10 => "gaussian10",
            Task::Mog10 => "mog10",
            Task::Multimodal2 => "multimodal2",
            Task::GaussianLinear => "gaussian_linear",
            Task::TwoMoons => "two_moons",
            Task::GaussianMixture => "gaussian_mixture",
            Task::Slcp => "slcp",
        }
    }

    /// The task called `name` (case-insensitive, `-` read as `_`); an unknown name is an
    /// error that lists the known ones.
    pub fn by_name(name: &str) -> Result<Task> {
        let wanted = name.trim().to_ascii_lowercase().replace('-', "_");
        Task::ALL
            .into_iter()
            .find(|t| t.name() == wanted)
            .ok_or_else(|| {
                let known: Vec<&str> = Task::ALL.iter().map(|t| t.name()).collect();
                Error::invalid(
                    "task",
                    format!("unknown task {name:?}; known tasks: {}", known.join(", ")),
                )
            })
    }

    /// Dimension of theta.
    pub fn dim_theta(self) -> usize {
        match self {
            Task::Gaussian10 | Task::Mog10 | Task::GaussianLinear => 10,
            Task::Multimodal2 | Task::TwoMoons | Task::GaussianMixture => 2,
            Task::Slcp => 5,
        }
    }

    /// Dimension of one observation x.
    pub fn dim_x(self) -> usize {
        match self {
            Task::Gaussian10 | Task::Mog10 | Task::GaussianLinear => 10,
            Task::Multimodal2 | Task::TwoMoons | Task::GaussianMixture => 2,
            Task::Slcp => 2 * slcp::DRAWS,
        }
    }

    /// How many iid draws of a smaller output x is made of (slcp: four points in the
    /// plane), and so how many exchangeable blocks; 1 for the others.
    pub fn iid_draws(self) -> usize {
        match self {
            Task::Slcp => slcp::DRAWS,
            _ => 1,
        }
    }

    /// Whether the task is one of sbibm's (with reference data in `shared/data/sbibm`).
    pub fn is_sbibm(self) -> bool {
        matches!(
            self,
            Task::GaussianLinear | Task::TwoMoons | Task::GaussianMixture | Task::Slcp
        )
    }

    /// The prior.
    pub fn prior(self) -> Prior {
        let d = self.dim_theta();
        let built = match self {
            Task::Gaussian10 | Task::Mog10 | Task::Multimodal2 => Prior::standard_normal(d),
            Task::GaussianLinear => Prior::gaussian_diag(&vec![0.0; d], &vec![0.1; d]),
            Task::TwoMoons => Prior::uniform(&vec![-1.0; d], &vec![1.0; d]),
            Task::GaussianMixture => Prior::uniform(&vec![-10.0; d], &vec![10.0; d]),
            Task::Slcp => Prior::uniform(&vec![-3.0; d], &vec![3.0; d]),
        };
        built.expect("built-in priors are valid")
    }

    /// The likelihood as a diagonal Gaussian mixture, for the tasks that have one.
    fn components(self) -> Option<Vec<LikelihoodComponent>> {
        match self {
            Task::Gaussian10 => Some(gaussian::gaussian10_components()),
            Task::Mog10 => Some(gaussian::mog10_components()),
            Task::Multimodal2 => Some(multimodal::multimodal2_components()),
            Task::GaussianLinear => Some(gaussian::gaussian_linear_components()),
            Task::GaussianMixture => Some(gaussian_mixture::gaussian_mixture_components()),
            Task::TwoMoons | Task::Slcp => None,
        }
    }

    /// Simulates one `x` per row of `theta` (`[n, dim_theta]` row-major), returning
    /// `[n, dim_x]`. Errors on a length that is not a multiple of `dim_theta` or a
    /// non-finite parameter (naming the row).
    ///
    /// Draws per row: mixtures one uniform (the component) then `dim_x` normals;
    /// Gaussians `dim_x` normals; two_moons one uniform then one normal; slcp 8 normals.
    pub fn simulate(self, theta: &[f32], rng: &mut PhiloxStream) -> Result<Vec<f32>> {
        let (dt, dx) = (self.dim_theta(), self.dim_x());
        if theta.len() % dt != 0 {
            return Err(Error::shape_because(
                "simulate",
                &[theta.len()],
                &[dt],
                &format!("{}: theta must be rows of {dt} values", self.name()),
            ));
        }
        let n = theta.len() / dt;
        if let Some(k) = theta.iter().position(|v| !v.is_finite()) {
            return Err(Error::invalid(
                "simulate",
                format!(
                    "{}: theta row {} has a non-finite value {}",
                    self.name(),
                    k / dt,
                    theta[k]
                ),
            ));
        }
        let mut x = vec![0.0f32; n * dx];
        let components = self.components();
        for (t, xr) in theta.chunks(dt).zip(x.chunks_mut(dx)) {
            match self {
                Task::TwoMoons => two_moons::simulate_row(t, rng, xr),
                Task::Slcp => slcp::simulate_row(t, rng, xr),
                _ => gaussian::simulate_mixture_row(
                    components
                        .as_deref()
                        .expect("mixture tasks have components"),
                    t,
                    rng,
                    xr,
                ),
            }
        }
        Ok(x)
    }

    /// `n` pairs `(theta, x)` from the joint: theta from the prior on
    /// `PhiloxStream::new(seed, streams::DATA, 0)`, x from the simulator on lane 1.
    /// Returns `([n, dim_theta], [n, dim_x])`.
    pub fn simulate_dataset(self, n: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
        let theta = self
            .prior()
            .sample(&mut PhiloxStream::new(seed, streams::DATA, 0), n);
        let x = self
            .simulate(&theta, &mut PhiloxStream::new(seed, streams::DATA, 1))
            .expect("prior draws are finite and well shaped");
        (theta, x)
    }

    /// Whether [`Task::analytic_posterior`] is available (Gaussian-mixture likelihoods
    /// with a Gaussian prior: gaussian10, mog10, multimodal2, gaussian_linear).
    pub fn has_analytic_posterior(self) -> bool {
        matches!(self.prior(), Prior::Gaussian(_)) && self.components().is_some()
    }

    /// The exact posterior given `n >= 1` iid observations `obs` (`[n, dim_x]`), as a
    /// mixture of diagonal Gaussians (one component for gaussian10 and gaussian_linear,
    /// `2^n` for mog10 and multimodal2, at most
    /// [`posterior::MAX_COMPONENTS`]). For gaussian10 the posterior precision is
    /// `I + n Sigma⁻¹` and the mean is `(I + n Sigma⁻¹)⁻¹ Sigma⁻¹ Σ_j x_j`.
    pub fn analytic_posterior(self, obs: &[f32]) -> Result<AnalyticPosterior> {
        let components = match (self.has_analytic_posterior(), self.components()) {
            (true, Some(c)) => c,
            _ => {
                return Err(Error::invalid(
                    "analytic_posterior",
                    format!(
                        "task {} has no analytic posterior (available for gaussian10, mog10, multimodal2, gaussian_linear)",
                        self.name()
                    ),
                ))
            }
        };
        let prior_var = match self.prior() {
            Prior::Gaussian(g) => {
                let d = self.dim_theta();
                (0..d).map(|i| g.cov()[i * d + i]).collect::<Vec<f64>>()
            }
            _ => unreachable!("has_analytic_posterior checked the prior is Gaussian"),
        };
        AnalyticPosterior::conjugate(&prior_var, &components, obs)
    }

    /// Loads sbibm reference observation `index` (1..=5); see [`load_reference`].
    pub fn load_reference(
        self,
        index: usize,
        data_dir: Option<&std::path::Path>,
    ) -> Result<ReferenceObservation> {
        load_reference(self, index, data_dir)
    }
}

impl std::fmt::Display for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Task {
    type Err = Error;
    fn from_str(s: &str) -> Result<Task> {
        Task::by_name(s)
    }
}
