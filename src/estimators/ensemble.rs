//! Ensembles: K estimators of one kind trained on the same simulations from different
//! seeds, combined per observation into one density (or ratio).
//!
//! Normalized densities (NPE's q(θ | x), NLE's q(x | θ)) are combined as their
//! equal-weight mixture: `ℓ(x | θ) = (1/K) Σ_k q_k(x | θ)`, per observation, the logs
//! summed over n iid observations: `Σ_j ln (1/K) Σ_k ℓ_k(x_j | θ)`. Averaging densities
//! (not log densities) keeps every member's mass: where one member is too narrow, the
//! others widen the mixture, which is what makes ensembles better calibrated than their
//! members (Lakshminarayanan et al. 2017; Hermans et al. 2022 for SBI).
//!
//! Contrastive ratio estimators (NRE-B) are not normalized: member k learns
//! `ln r(θ, x) + c_k(x)` with an arbitrary offset c_k per member and observation, so a
//! mixture of their ratios would weight each member by `exp c_k(x)`, in effect picking
//! one. Their ensemble is the geometric mean, `(1/K) Σ_k ln r_k`, in which the offsets
//! add up to one constant in θ that the posterior does not see.
//!
//! Score networks (ε̂-parameterized, [`ScoreModel`]) are combined by the mean of their
//! ε̂, i.e. of their scores: one network of the ensemble's mean score, sampled by the
//! same diffusion samplers ([`crate::samplers::ScorePlan::average`]). The mean of scores
//! is the score of the members' normalized geometric mean at each noise level; since every
//! member estimates the same posterior, averaging cancels the part of each member's error
//! that comes from its seed (initialization, split, minibatches, noise), which composing
//! n observations would otherwise add up (gaussian10 at n = 8: C2ST 0.742 → 0.671 with
//! five members). Where members place a narrow mode differently the mean blurs it
//! (gaussian_mixture's σ = 0.1 spike: 0.596 → 0.617; `benches/RESULTS.md`).

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::estimators::nle::NleModel;
use crate::estimators::npe::{
    sample_in_support, sample_posterior_flow, NpeModel, PosteriorDraws, PosteriorFlow,
};
use crate::estimators::nre::NreModel;
use crate::estimators::score_model::{SamplingOptions, ScoreModel};
use crate::estimators::set_npe::SetNpeModel;
use crate::io::model::{load_config, save_model_dir, ModelFile};
use crate::priors::Prior;
use crate::rng::PhiloxStream;
use crate::samplers::mcmc::LikelihoodEstimator;

/// The `kind` of an ensemble's model directory.
pub const ENSEMBLE_MODEL_KIND: &str = "ensemble";

/// An ensemble's `config.json`: the members' kind and count. Member k is the model
/// directory `member-k` inside the ensemble's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnsembleConfig {
    /// The `kind` of every member ("npe", "nle", "nre").
    pub member_kind: String,
    /// K, the number of members.
    pub members: usize,
}

impl EnsembleConfig {
    /// Reads the config of the ensemble directory `dir`.
    pub fn load(dir: &Path) -> Result<EnsembleConfig> {
        load_config(dir, ENSEMBLE_MODEL_KIND)
    }
}

/// The directory of member `k` inside the ensemble directory `dir`.
fn member_dir(dir: &Path, k: usize) -> PathBuf {
    dir.join(format!("member-{k}"))
}

/// K trained estimators of one kind, combined as the mixture of their densities.
#[derive(Clone, Debug)]
pub struct Ensemble<M> {
    members: Vec<M>,
}

impl<M> Ensemble<M> {
    /// The ensemble of `members` (at least one).
    pub fn new(members: Vec<M>) -> Result<Self> {
        if members.is_empty() {
            return Err(Error::invalid(
                "Ensemble::new",
                "an ensemble needs at least one member",
            ));
        }
        Ok(Ensemble { members })
    }

    /// The members, in training order.
    pub fn members(&self) -> &[M] {
        &self.members
    }
}

impl<M: ModelFile> Ensemble<M> {
    /// Writes the ensemble directory `dir`, its members inside, whole or not at all
    /// (replacing a model already there).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let config = EnsembleConfig {
            member_kind: M::KIND.to_string(),
            members: self.members.len(),
        };
        save_model_dir(dir, ENSEMBLE_MODEL_KIND, &config, |staging| {
            self.members
                .iter()
                .enumerate()
                .try_for_each(|(k, m)| m.save_dir(&member_dir(staging, k)))
        })
    }

    /// Reads an ensemble directory written by [`Ensemble::save`] whose members are of
    /// `M`'s kind and can be combined ([`Compatible`]).
    pub fn load(dir: &Path) -> Result<Self>
    where
        M: Compatible,
    {
        let config = EnsembleConfig::load(dir)?;
        if config.member_kind != M::KIND {
            return Err(Error::invalid(
                "Ensemble::load",
                format!(
                    "{}: an ensemble of {:?} models, expected {:?}",
                    dir.display(),
                    config.member_kind,
                    M::KIND
                ),
            ));
        }
        let members = (0..config.members)
            .map(|k| M::load_dir(&member_dir(dir, k)))
            .collect::<Result<Vec<_>>>()?;
        if let Some((k, why)) = first_mismatch(&members) {
            return Err(Error::invalid(
                "Ensemble::load",
                format!("{}: member {k} has {why} than member 0", dir.display()),
            ));
        }
        Ensemble::new(members)
    }
}

/// What the members of one ensemble must share.
pub trait Compatible: ModelFile {
    /// What `other` has that differs from `self` and keeps them out of one ensemble
    /// (completing "member k has … than member 0"), if anything.
    fn mismatch(&self, other: &Self) -> Option<&'static str>;
}

/// The first member that cannot join member 0, and why.
fn first_mismatch<M: Compatible>(members: &[M]) -> Option<(usize, &'static str)> {
    members
        .iter()
        .enumerate()
        .find_map(|(k, m)| members[0].mismatch(m).map(|why| (k, why)))
}

/// [`Compatible::mismatch`] of estimators combined by their likelihoods: one prior and
/// one observation size.
fn likelihood_mismatch<M: LikelihoodEstimator>(a: &M, b: &M) -> Option<&'static str> {
    (a.prior() != b.prior() || a.dim_x() != b.dim_x())
        .then_some("another prior or observation size")
}

impl Compatible for NpeModel {
    fn mismatch(&self, other: &Self) -> Option<&'static str> {
        likelihood_mismatch(self, other)
    }
}

impl Compatible for NleModel {
    fn mismatch(&self, other: &Self) -> Option<&'static str> {
        likelihood_mismatch(self, other)
    }
}

impl Compatible for NreModel {
    fn mismatch(&self, other: &Self) -> Option<&'static str> {
        likelihood_mismatch(self, other)
    }
}

impl Compatible for SetNpeModel {
    fn mismatch(&self, other: &Self) -> Option<&'static str> {
        (self.config.prior != other.config.prior || self.features() != other.features())
            .then_some("another prior or set element size")
    }
}

impl Compatible for ScoreModel {
    /// Score networks average their ε̂ in one standardized space: members share
    /// everything but their weights (they are trained on the same simulations).
    fn mismatch(&self, other: &Self) -> Option<&'static str> {
        (self.config != other.config).then_some(
            "another architecture, noise schedule, prior or standardization (members must be trained on the same simulations)",
        )
    }
}

impl Ensemble<ScoreModel> {
    /// `num` draws `[num, dim θ]` from the posterior of the members' mean score given the
    /// iid observations `obs` `[n, dim x]`, on any device
    /// ([`ScoreModel::sample_with_plan`] with [`crate::samplers::ScorePlan::average`]);
    /// one member samples exactly as the model. The CPU evaluates the members one after
    /// another (K times one member's cost); a GPU's fused sampler runs one network of
    /// K times the width, which must stay within [`crate::samplers::gpu::MAX_WIDTH`].
    pub fn sample(
        &self,
        obs: &[f32],
        num: usize,
        options: &SamplingOptions,
        progress: &(dyn Fn(usize) + Sync),
    ) -> Result<PosteriorDraws> {
        if let Some((k, why)) = first_mismatch(&self.members) {
            return Err(Error::invalid(
                "Ensemble::sample",
                format!("member {k} has {why} than member 0"),
            ));
        }
        let plans = self
            .members
            .iter()
            .map(ScoreModel::plan)
            .collect::<Result<Vec<_>>>()?;
        let plan = crate::samplers::ScorePlan::average(&plans)?;
        self.members[0].sample_with_plan(&plan, obs, num, options, progress)
    }
}

/// How an ensemble combines its members' per-observation log-likelihoods ℓ_k.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Combination {
    /// `ln (1/K) Σ_k exp ℓ_k`: the mixture of normalized densities (NPE, NLE).
    Mixture,
    /// `(1/K) Σ_k ℓ_k`: the geometric mean of ratios known up to a per-member offset in x
    /// (contrastive NRE).
    GeometricMean,
}

/// An estimator that can be a member of an [`Ensemble`] sampled by MCMC.
pub trait EnsembleMember: LikelihoodEstimator + Sync {
    /// How members of this kind are combined.
    const COMBINATION: Combination;
}

impl EnsembleMember for NpeModel {
    const COMBINATION: Combination = Combination::Mixture;
}

impl EnsembleMember for NleModel {
    const COMBINATION: Combination = Combination::Mixture;
}

impl EnsembleMember for NreModel {
    const COMBINATION: Combination = Combination::GeometricMean;
}

impl<M: EnsembleMember> LikelihoodEstimator for Ensemble<M> {
    fn prior(&self) -> &Prior {
        self.members[0].prior()
    }

    fn dim_x(&self) -> usize {
        self.members[0].dim_x()
    }

    /// One value per row θ_r: `Σ_j ln (1/K) Σ_k exp ℓ_k(θ, x_j)` for a
    /// [`Combination::Mixture`], `(1/K) Σ_k Σ_j ℓ_k(θ, x_j)` for a
    /// [`Combination::GeometricMean`], with ℓ_k member k's per-observation
    /// log-likelihood (or log-ratio); one member's own value when K = 1.
    fn log_likelihood(&self, theta: &[f32], obs: &[f32]) -> Result<Vec<f64>> {
        if let [single] = self.members.as_slice() {
            return single.log_likelihood(theta, obs);
        }
        if M::COMBINATION == Combination::GeometricMean {
            // The mean over members commutes with the sum over observations.
            let per_member = self
                .members
                .par_iter()
                .map(|m| m.log_likelihood(theta, obs))
                .collect::<Result<Vec<_>>>()?;
            let k = self.members.len() as f64;
            return Ok((0..per_member[0].len())
                .map(|r| per_member.iter().map(|l| l[r]).sum::<f64>() / k)
                .collect());
        }
        let rows = theta.len() / self.prior().dim().max(1);
        let ln_k = (self.members.len() as f64).ln();
        let mut total = vec![0.0f64; rows];
        for x_j in obs.chunks_exact(self.dim_x()) {
            // The members run side by side: an MCMC sweep's batch (one row per chain) is
            // too small for the ops' own threads.
            let per_member = self
                .members
                .par_iter()
                .map(|m| m.log_likelihood(theta, x_j))
                .collect::<Result<Vec<_>>>()?;
            for (r, sum) in total.iter_mut().enumerate() {
                *sum += log_sum_exp(per_member.iter().map(|l| l[r])) - ln_k;
            }
        }
        Ok(total)
    }
}

/// `ln Σ exp(v)`, shifted by the largest term; `−∞` when every term is `−∞`.
fn log_sum_exp(values: impl Iterator<Item = f64> + Clone) -> f64 {
    let max = values.clone().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY || max.is_nan() {
        return max;
    }
    max + values.map(|v| (v - max).exp()).sum::<f64>().ln()
}

impl<M: PosteriorFlow> Ensemble<M> {
    /// `num` draws from the mixture `(1/K) Σ_k q_k(θ | x_obs)` of posterior flows (NPE
    /// given one observation, set NPE given a set) inside the prior's support, seeded by
    /// `seed`: each proposal picks its member uniformly, and draws outside the support
    /// are rejected from the mixture (not per member, which would reweight the members by
    /// their acceptance rates). One member draws exactly as [`sample_posterior_flow`].
    pub fn sample(&self, obs: &[f32], num: usize, seed: u64) -> Result<PosteriorDraws> {
        if let [single] = self.members.as_slice() {
            return sample_posterior_flow(single, obs, num, seed);
        }
        let contexts = self
            .members
            .iter()
            .map(|m| m.context(obs))
            .collect::<Result<Vec<_>>>()?;
        let prior = self.members[0].prior();
        let d = prior.dim();
        let k = self.members.len() as u32;
        sample_in_support("Ensemble::sample", prior, num, seed, |batch, rng| {
            let mut counts = vec![0usize; k as usize];
            for _ in 0..batch {
                counts[rng.below(k) as usize] += 1;
            }
            let mut draws = Vec::with_capacity(batch * d);
            for ((member, context), &count) in self.members.iter().zip(&contexts).zip(&counts) {
                if count > 0 {
                    draws.extend(member.propose(context, count, rng)?);
                }
            }
            shuffle_rows(&mut draws, d, rng);
            Ok(draws)
        })
    }
}

/// Shuffles the rows of a row-major `[_, cols]` buffer, so that the members' draws are
/// exchangeable when rejection keeps the first accepted ones.
fn shuffle_rows(data: &mut [f32], cols: usize, rng: &mut PhiloxStream) {
    let mut order: Vec<usize> = (0..data.len() / cols).collect();
    rng.shuffle(&mut order);
    let source = data.to_vec();
    for (dst, &src) in data.chunks_exact_mut(cols).zip(&order) {
        dst.copy_from_slice(&source[src * cols..(src + 1) * cols]);
    }
}
