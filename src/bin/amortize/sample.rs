//! `amortize sample`: posterior draws given iid observations.

use std::path::PathBuf;
use std::time::Instant;

use amortize::estimators::{Composition, SamplingOptions, ScoreModel};
use amortize::io::npy::{read_npy_matrix, write_npy};
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
    /// How n > 1 observations are composed: `gauss` (Linhart et al. 2024: exact for
    /// Gaussian posteriors, pilot runs of 1000 draws per observation) or `geffner`
    /// (the paper's composition as written, biased for n > 1).
    #[arg(long, default_value = "gauss")]
    pub compose: String,
    /// Seed of the sampler's noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where to sample: cpu, cuda:N or wgpu:N (fused samplers; one observation so far).
    #[arg(long, default_value = "cpu")]
    pub device: String,
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
                ..SamplerConfig::default()
            },
            composition: self.compose.parse::<Composition>()?,
            device: self.device.parse::<Device>()?,
        })
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

/// Draws `num` samples with a progress bar; returns them and the samples/s.
pub fn draw(
    model: &ScoreModel,
    obs: &[f32],
    num: usize,
    args: &SamplerArgs,
) -> Result<(Vec<f32>, f64)> {
    let options = args.options()?;
    let bar = progress::bar(num as u64, "samples");
    let start = Instant::now();
    let draws = model.sample(obs, num, &options, &|rows| bar.inc(rows as u64))?;
    let rate = num as f64 / start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    Ok((draws, rate))
}

/// Loads the model and observations, samples, writes the draws.
pub fn run(args: &Args) -> Result<()> {
    let model = ScoreModel::load(&args.model)?;
    let c = &model.config.network;
    let (obs, n, _) = read_npy_matrix(&args.obs, Some(c.dim_x))?;
    if n == 0 {
        return Err(Error::invalid(
            "sample",
            format!("{}: the observation set is empty", args.obs.display()),
        ));
    }
    if args.num == 0 {
        return Err(Error::invalid("sample", "--num must be positive"));
    }
    let (draws, rate) = draw(&model, &obs, args.num, &args.sampler)?;
    write_npy(&args.out, &draws, &[args.num, c.dim_theta])?;
    println!(
        "{} draws given {n} observation(s), {} levels, {} sampler: {:.0} samples/s; written to {}",
        args.num,
        args.sampler.levels,
        args.sampler.sampler,
        rate,
        args.out.display()
    );
    Ok(())
}
