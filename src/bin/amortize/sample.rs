//! `amortize sample`: posterior draws given iid observations.

use std::path::{Path, PathBuf};
use std::time::Instant;

use amortize::estimators::ensemble::{Compatible, Ensemble, EnsembleConfig, ENSEMBLE_MODEL_KIND};
use amortize::estimators::nle::{NleModel, NLE_MODEL_KIND};
use amortize::estimators::npe::{NpeModel, PosteriorDraws, NPE_MODEL_KIND};
use amortize::estimators::nre::{NreModel, NRE_MODEL_KIND};
use amortize::estimators::score_model::{ThetaSpace, SCORE_MODEL_KIND};
use amortize::estimators::set_npe::{SetNpeModel, SET_NPE_MODEL_KIND};
use amortize::estimators::{Composition, SamplingOptions, ScoreModel};
use amortize::io::model::model_kind;
use amortize::io::npy::{read_npy_matrix, write_npy};
use amortize::samplers::mcmc::{sample_estimator, LikelihoodEstimator, McmcOptions};
use amortize::samplers::{Algorithm, Corrector, SamplerConfig};
use amortize::{Device, Error, Result};

use crate::progress;

/// How to sample; shared by `sample`, `evaluate` and `quickstart`.
#[derive(clap::Args, Clone)]
pub struct SamplerArgs {
    /// Algorithm 2 of Geffner et al. (`diffusion`) or Algorithm 1 (`langevin`, L = 50).
    #[arg(long, default_value = "diffusion")]
    pub sampler: String,
    /// Noise levels of the sampling grid (the network was trained on T levels; fewer
    /// levels are a coarser grid of the same schedule).
    #[arg(long, default_value_t = 100)]
    pub levels: usize,
    /// Langevin corrector steps after the predictor at each of the last
    /// `--corrector-levels` levels (0: exactly the paper's algorithm).
    #[arg(long, default_value_t = 0)]
    pub corrector_steps: usize,
    /// How many of the last levels get corrector steps.
    #[arg(long, default_value_t = 10)]
    pub corrector_levels: usize,
    /// Diffusion: add σ_1 z at the last step, as Geffner et al.'s Algorithm 2 is written
    /// (by default the last step returns its mean, as Ho et al.'s sampler does).
    #[arg(long)]
    pub noisy_last_step: bool,
    /// How n > 1 observations are composed: `gauss` (Linhart et al. 2024: exact for
    /// Gaussian posteriors, pilot runs of 1000 draws per observation) or `geffner`
    /// (the paper's composition as written, biased for n > 1). Default: `gauss`.
    /// Score models that compose observations only.
    #[arg(long)]
    pub compose: Option<String>,
    /// Seed of the sampler's noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where to sample: cpu, cuda:N or wgpu:N (the fused samplers, both compositions).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// NLE and NRE: parallel MCMC chains.
    #[arg(long, default_value_t = McmcOptions::default().chains)]
    pub chains: usize,
    /// NLE and NRE: warm-up sweeps discarded per chain.
    #[arg(long, default_value_t = McmcOptions::default().warmup)]
    pub warmup: usize,
    /// NLE and NRE: keep one draw every `thin` sweeps.
    #[arg(long, default_value_t = McmcOptions::default().thin)]
    pub thin: usize,
    /// NLE and NRE: differential-evolution moves of all chains after every sweep (they
    /// carry chains between modes; 0 turns them off).
    #[arg(long, default_value_t = McmcOptions::default().population_moves)]
    pub population_moves: usize,
}

impl SamplerArgs {
    /// The sampling options, or an error for an unknown sampler or composition.
    pub fn options(&self) -> Result<SamplingOptions> {
        Ok(SamplingOptions {
            levels: self.levels,
            sampler: SamplerConfig {
                algorithm: self.sampler.parse::<Algorithm>()?,
                corrector: Corrector {
                    steps: self.corrector_steps,
                    levels: self.corrector_levels,
                    ..Corrector::NONE
                },
                seed: self.seed,
                denoise_last: !self.noisy_last_step,
                ..SamplerConfig::default()
            },
            composition: self
                .compose
                .as_deref()
                .unwrap_or("gauss")
                .parse::<Composition>()?,
            device: self.device.parse::<Device>()?,
        })
    }

    /// The MCMC options (NLE, NRE).
    pub fn mcmc(&self) -> McmcOptions {
        McmcOptions {
            chains: self.chains,
            warmup: self.warmup,
            thin: self.thin,
            population_moves: self.population_moves,
            seed: self.seed,
            ..McmcOptions::default()
        }
    }
}

/// Arguments of `amortize sample`.
#[derive(clap::Args)]
pub struct Args {
    /// Model directory written by `amortize train`.
    #[arg(long)]
    pub model: PathBuf,
    /// Observations [n, dim x] (n iid observations, composed).
    #[arg(long)]
    pub obs: PathBuf,
    /// Number of posterior draws.
    #[arg(long, default_value_t = 10_000)]
    pub num: usize,
    /// Output .npy [num, dim θ].
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub sampler: SamplerArgs,
}

/// A trained estimator of any kind the command line knows. NPE, NLE and NRE are held as
/// ensembles: a single model is an ensemble of one, which samples exactly as the model.
pub enum Estimator {
    /// Score-based (`amortize train --estimator score`), an ensemble of one or more
    /// networks whose mean ε̂ is sampled.
    Score(Box<Ensemble<ScoreModel>>),
    /// Posterior flows (`amortize train --estimator npe`).
    Npe(Box<Ensemble<NpeModel>>),
    /// Likelihood flows (`amortize train --estimator nle`), sampled by MCMC.
    Nle(Box<Ensemble<NleModel>>),
    /// Ratio classifiers (`amortize train --estimator nre`), sampled by MCMC.
    Nre(Box<Ensemble<NreModel>>),
    /// Posterior flows whose context is a set encoder (`amortize train --estimator
    /// set_npe --iid-draws K`): the n observations are one set, drawn from directly.
    SetNpe(Box<Ensemble<SetNpeModel>>),
}

impl Estimator {
    /// Loads the model directory, whatever its kind.
    pub fn load(dir: &Path) -> Result<Estimator> {
        let kind = model_kind(dir)?;
        let ensemble = kind == ENSEMBLE_MODEL_KIND;
        let kind = match ensemble {
            true => EnsembleConfig::load(dir)?.member_kind,
            false => kind,
        };
        fn members<M: Compatible>(dir: &Path, ensemble: bool) -> Result<Box<Ensemble<M>>> {
            Ok(Box::new(match ensemble {
                true => Ensemble::load(dir)?,
                false => Ensemble::new(vec![M::load_dir(dir)?])?,
            }))
        }
        match kind.as_str() {
            SCORE_MODEL_KIND => Ok(Estimator::Score(members(dir, ensemble)?)),
            NPE_MODEL_KIND => Ok(Estimator::Npe(members(dir, ensemble)?)),
            NLE_MODEL_KIND => Ok(Estimator::Nle(members(dir, ensemble)?)),
            NRE_MODEL_KIND => Ok(Estimator::Nre(members(dir, ensemble)?)),
            SET_NPE_MODEL_KIND => Ok(Estimator::SetNpe(members(dir, ensemble)?)),
            other => Err(Error::invalid(
                "load",
                format!(
                    "{}: a {other:?} model{}, which this command line cannot sample",
                    dir.display(),
                    if ensemble { " ensemble" } else { "" }
                ),
            )),
        }
    }

    /// (dim θ, dim x).
    pub fn dims(&self) -> (usize, usize) {
        match self {
            Estimator::Score(m) => {
                let c = &m.members()[0].config;
                (c.network.dim_theta, c.network.dim_x)
            }
            Estimator::Npe(m) => (m.prior().dim(), m.dim_x()),
            Estimator::Nle(m) => (m.prior().dim(), m.dim_x()),
            Estimator::Nre(m) => (m.prior().dim(), m.dim_x()),
            Estimator::SetNpe(m) => {
                let first = &m.members()[0];
                (first.config.prior.dim(), first.features())
            }
        }
    }

    /// Whether the model reads an observation's iid draws as one set (set NPE, a score
    /// network with a set encoder) rather than composing them.
    pub fn reads_sets(&self) -> bool {
        match self {
            Estimator::Score(m) => m.members()[0].config.network.x_encoder.is_some(),
            Estimator::SetNpe(_) => true,
            _ => false,
        }
    }

    /// The largest set a model that reads an observation's draws as one set was trained
    /// on, where its file records it; `None` for models that compose draws.
    pub fn largest_training_set(&self) -> Option<usize> {
        match self {
            Estimator::Score(m) => m
                .members()
                .iter()
                .filter_map(|m| m.config.max_cardinality)
                .max(),
            Estimator::SetNpe(m) => m
                .members()
                .iter()
                .filter_map(|m| m.config.max_cardinality)
                .max(),
            _ => None,
        }
    }

    /// Draws `num` samples given `obs`, with a progress bar; returns them and the
    /// samples/s. NPE, NLE, NRE and set NPE sample on the CPU and ignore the diffusion
    /// options. NPE draws from its flow given one observation; given n > 1 it samples the
    /// factorized posterior p(θ)^{1−n} Π_j q(θ | x_j) by MCMC, as NLE and NRE always do
    /// (reporting the chains' R̂ and ESS on stderr). Set NPE draws from its flow given
    /// the n observations as one set.
    pub fn draw(&self, obs: &[f32], num: usize, args: &SamplerArgs) -> Result<(Vec<f32>, f64)> {
        let options = args.options()?;
        if options.device != Device::Cpu && !matches!(self, Estimator::Score(_)) {
            return Err(Error::Device {
                device: options.device.to_string(),
                msg: "NPE, NLE, NRE and set NPE sample on the CPU only so far".into(),
            });
        }
        let composes = matches!(self, Estimator::Score(_)) && !self.reads_sets();
        if args.compose.is_some() && !composes {
            eprintln!(
                "warning: --compose has no effect: only a score model whose x path reads one observation composes them"
            );
        }
        let size = obs.len() / self.dims().1;
        if let Some(largest) = self
            .largest_training_set()
            .filter(|&largest| size > largest)
        {
            eprintln!(
                "warning: a set of {size} elements, larger than any the model was trained on ({largest}): its posterior is an extrapolation in N"
            );
        }
        let start = Instant::now();
        let draws = match self {
            Estimator::Score(model) => {
                let bar = progress::bar(num as u64, "samples");
                let draws = model.sample(obs, num, &options, &|rows| bar.inc(rows as u64))?;
                bar.finish_and_clear();
                match model.members()[0].config.theta_space {
                    ThetaSpace::Natural => report_acceptance(draws),
                    ThetaSpace::Unconstrained => draws.samples,
                }
            }
            Estimator::Npe(model) if obs.len() == model.dim_x() => {
                report_acceptance(model.sample(obs, num, args.seed)?)
            }
            Estimator::SetNpe(model) => report_acceptance(model.sample(obs, num, args.seed)?),
            Estimator::Npe(model) => mcmc(model.as_ref(), obs, num, args)?,
            Estimator::Nle(model) => mcmc(model.as_ref(), obs, num, args)?,
            Estimator::Nre(model) => mcmc(model.as_ref(), obs, num, args)?,
        };
        Ok((draws, num as f64 / start.elapsed().as_secs_f64()))
    }
}

/// The draws of a posterior that can leave the prior's support (a flow, a score model in
/// θ's natural space), after printing how many of its proposals the support accepted.
fn report_acceptance(draws: PosteriorDraws) -> Vec<f32> {
    eprintln!(
        "prior-support acceptance rate: {:.3}",
        draws.acceptance_rate
    );
    draws.samples
}

/// MCMC draws with a progress bar and a report of the chains' convergence.
fn mcmc(
    model: &impl LikelihoodEstimator,
    obs: &[f32],
    num: usize,
    args: &SamplerArgs,
) -> Result<Vec<f32>> {
    let bar = progress::bar(num as u64, "samples");
    let draws = sample_estimator(model, obs, num, &args.mcmc(), &|kept| {
        bar.set_position(kept.min(num) as u64)
    })?;
    bar.finish_and_clear();
    let d = &draws.diagnostics;
    eprintln!(
        "MCMC (slice sampling): {} chains × {} draws, max R-hat {:.3}, min ESS {:.0}, population-move acceptance {:.2}, {:.0} likelihood evaluations per draw{}",
        draws.chains,
        draws.per_chain,
        d.max_rhat(),
        d.min_ess(),
        draws.population_acceptance,
        draws.evaluations as f64 / num as f64,
        if d.max_rhat() > 1.05 {
            " (R-hat > 1.05: the chains have not mixed; raise --warmup, --thin or --population-moves)"
        } else {
            ""
        }
    );
    Ok(draws.samples)
}

/// Loads the model and observations, samples, writes the draws.
pub fn run(args: &Args) -> Result<()> {
    let model = Estimator::load(&args.model)?;
    let (dim_theta, dim_x) = model.dims();
    let (obs, n, cols) = read_npy_matrix(&args.obs, None)?;
    if cols != dim_x {
        let hint = match cols % dim_x {
            0 => format!(
                " (a model trained with --iid-draws {} learns one draw: give each observation's draws as rows)",
                cols / dim_x
            ),
            _ => String::new(),
        };
        return Err(Error::invalid(
            "sample",
            format!(
                "{}: observations of {cols} features, the model's x has {dim_x}{hint}",
                args.obs.display()
            ),
        ));
    }
    if n == 0 {
        return Err(Error::invalid(
            "sample",
            format!("{}: the observation set is empty", args.obs.display()),
        ));
    }
    if args.num == 0 {
        return Err(Error::invalid("sample", "--num must be positive"));
    }
    let (draws, rate) = model.draw(&obs, args.num, &args.sampler)?;
    write_npy(&args.out, &draws, &[args.num, dim_theta])?;
    let how = match model {
        Estimator::Score(_) => format!(
            "{} levels, {} sampler",
            args.sampler.levels, args.sampler.sampler
        ),
        Estimator::Npe(_) if n == 1 => "posterior flow".into(),
        Estimator::SetNpe(_) => "posterior flow of the set".into(),
        Estimator::Npe(_) | Estimator::Nle(_) | Estimator::Nre(_) => "slice sampling".into(),
    };
    println!(
        "{} draws given {n} observation(s), {how}: {:.0} samples/s; written to {}",
        args.num,
        rate,
        args.out.display()
    );
    Ok(())
}
