//! The fused CUDA samplers (contract 4): Algorithms 1 and 2, the optional corrector
//! included, for a [`ScorePlan`](super::ScorePlan), each as one kernel launch that runs every sample's whole
//! chain: `kernels/sample_diffusion.cu` and `kernels/sample_langevin.cu` (shared code in
//! `kernels/score_sampler.cuh`, whose top comment gives the block shape, the shared-memory
//! layout and the tables this file uploads).
//!
//! * **Same draws as the CPU.** [`sample_cuda`] computes what [`super::sample`] computes
//!   with a [`super::LearnedScore`] for the same plan, conditioning, grid and
//!   [`SamplerConfig`]: the same Philox stream (sample `lane` at chain step `step` reads
//!   counter `(streams::SAMPLER, step, lane, block)` under the seed), the same step order,
//!   the per-level constants computed here by the CPU's own expressions, the Algorithm 2
//!   mean in f64 and the corrector's group means in f64 in lane order. Only the dot
//!   products of the dense layers sum in another order than the CPU's sgemm, so the draws
//!   agree to f32 rounding propagated along the chain, not bit for bit
//!   (`tests/cuda_samplers.rs` states the tolerance and why).
//! * **Tiles.** A block owns [`GPU_TILE`] = 64 consecutive lanes (two corrector groups).
//!   The draws do not depend on the tile (corrector groups are fixed by lane), so
//!   `config.tile` is not used here.
//! * **n observations.** Per network pass the θ path runs once per sample and the head
//!   once per (sample, observation), with each observation's precomputed
//!   `Conditioning::x_part` row; the scores are summed in observation order as on the CPU.
//! * **GAUSS.** With [`ScoreComposition::Gauss`] the kernel combines the n scores by the
//!   level's weights ([`super::gauss::GaussWeights::table`], uploaded once per call)
//!   instead of summing them, in [`super::gauss::GaussScore`]'s order, and the host runs
//!   the chain with one observation's coefficients and initial draw: the composed score of
//!   Linhart et al. at d² multiply-adds per sample, observation and pass on top of Geffner
//!   et al.'s. The pilot runs that estimate the weights' covariances are ordinary n = 1
//!   calls of this sampler ([`crate::estimators::ScoreModel::sample`]).
//! * **Prior.** The kernels evaluate ∇log p(θ) themselves, once per pass where its weight
//!   (1 − n)(S − k)/S is not 0, from the [`GpuPrior`]'s tables ([`GpuPrior::tables`]: the
//!   Gaussian, log-normal and uniform box priors through their bijections and the
//!   standardization, as [`super::StandardizedPrior`] on the CPU, in double like it).
//! * **Sizes.** Width and dim θ up to [`MAX_WIDTH`]; the shared memory a block needs
//!   ([`shared_bytes`], about 88 KiB at width 128, dim θ 10) must fit the device's opt-in
//!   limit.
//!
//! No device, no driver or no NVRTC is an error, never a CPU fallback.

use cudarc::driver::sys::{CUdevice_attribute, CUfunction_attribute};
use cudarc::driver::{LaunchConfig, PushKernelArg};

pub use super::gpu::{passes_per_draw, GpuPrior, MAX_WIDTH};
pub use super::target::{ScoreComposition, Target};
use super::{Algorithm, SamplerConfig};
use crate::backend::cuda::CudaBackend;
use crate::error::{Error, Result};

/// Samples per thread block.
pub const GPU_TILE: usize = 64;
/// Threads per block (SAMPLER_THREADS in `kernels/score_sampler.cuh`).
const THREADS: u32 = 256;
/// Input rows of a weight slab in shared memory (SAMPLER_KC).
const SLAB_ROWS: usize = 32;
/// Lane groups per tile (SAMPLER_GROUPS).
const GROUPS: usize = GPU_TILE / super::CORRECTOR_GROUP;
/// Entries per level in the level tables.
const LEVEL_STRIDE: usize = 8;

/// Columns per thread for `out` outputs (`sampler_nc` in the header).
fn columns_per_thread(out: usize) -> usize {
    match out.div_ceil(32) {
        0 | 1 => 1,
        2 => 2,
        3 | 4 => 4,
        _ => 8,
    }
}

/// Bytes of dynamic shared memory one block needs for dim θ `d` and width `w`
/// (`sampler_smem_floats` in the header, times 4).
pub fn shared_bytes(d: usize, w: usize) -> usize {
    let floats = 2 * GPU_TILE
        + 2 * GPU_TILE * w
        + SLAB_ROWS * 32 * columns_per_thread(w.max(d))
        + 3 * GPU_TILE * d
        + 2 * GROUPS;
    4 * floats
}

fn to_i32(v: usize, what: &str) -> Result<i32> {
    i32::try_from(v)
        .map_err(|_| Error::invalid("sample_cuda", format!("{what} = {v} exceeds 2^31 - 1")))
}

/// The per-level tables of the header (`level_f`, `level_d`), computed with `run_tile`'s
/// own expressions so both sides use the same constants bit for bit.
fn level_tables(gammas: &[f64], n: usize, config: &SamplerConfig) -> (Vec<f32>, Vec<f64>) {
    let levels = gammas.len() - 1;
    let nf = n as f64;
    let mut lf = vec![0.0f32; (levels + 1) * LEVEL_STRIDE];
    let mut ld = vec![0.0f64; (levels + 1) * LEVEL_STRIDE];
    for k in 1..levels {
        let alpha = gammas[k] / gammas[k - 1];
        let w = (1.0 - nf) * (levels - k) as f64 / levels as f64;
        let f = &mut lf[k * LEVEL_STRIDE..(k + 1) * LEVEL_STRIDE];
        // LearnedScore::scores: s_ψ = ε̂ · (−1/√(1 − γ_k)), the division in f32.
        f[0] = -1.0 / (1.0 - gammas[k]).sqrt() as f32;
        f[1] = w as f32;
        let dd = &mut ld[k * LEVEL_STRIDE..(k + 1) * LEVEL_STRIDE];
        match config.algorithm {
            Algorithm::Diffusion => {
                let denom = nf - alpha * (nf - 1.0);
                let var = (1.0 - alpha) / denom;
                let sqrt_alpha = alpha.sqrt();
                f[2] = config.diffusion_noise_std(k, var);
                dd[0] = sqrt_alpha;
                dd[1] = 1.0 - alpha;
                dd[2] = (nf - 1.0) * sqrt_alpha;
                dd[3] = denom;
                dd[4] = var * w;
            }
            Algorithm::Langevin { .. } => {
                let delta = 0.05 * (1.0 - alpha) / alpha.sqrt();
                f[2] = (delta / 2.0) as f32;
                f[3] = delta.sqrt() as f32;
            }
        }
    }
    (lf, ld)
}

/// Draws `num` samples `[num, dim θ]` of the composed posterior `target` on CUDA device
/// `ordinal`, one launch for all chains: the same draws as [`super::sample`] with
/// `LearnedScore { plan, conditioning: cond, gammas }` (wrapped in a
/// [`super::gauss::GaussScore`] for [`ScoreComposition::Gauss`]) and a prior whose score is
/// `prior`, up to f32 rounding (module docs).
///
/// Errors (never panics, never falls back to the CPU) when there is no driver, no device
/// `ordinal`, no NVRTC to compile the kernels, a prior of another dimension than θ, GAUSS
/// weights for other observations or another grid, sizes past [`MAX_WIDTH`] or the
/// device's shared memory, or the CPU sampler's own input errors.
pub fn sample_cuda(
    ordinal: usize,
    target: &Target,
    num: usize,
    config: &SamplerConfig,
) -> Result<Vec<f32>> {
    let op = "sample_cuda";
    super::gpu::validate(op, target, config)?;
    let Target {
        plan,
        cond,
        gammas,
        prior,
        composition,
    } = *target;
    let (d, w, n) = (plan.config.dim_theta, plan.config.width, cond.observations);
    let chain_n = composition.chain_observations(n);
    let levels = gammas.len() - 1;
    to_i32(num * d, "draws × dim θ")?;
    let gpu = CudaBackend::shared(ordinal)?;
    if num == 0 {
        return Ok(Vec::new());
    }
    let (file, entry) = match config.algorithm {
        Algorithm::Diffusion => ("sample_diffusion", "sample_diffusion"),
        Algorithm::Langevin { .. } => ("sample_langevin", "sample_langevin"),
    };
    let f = gpu.function(file, entry)?;
    let stream = gpu.stream();
    let ctx = stream.context();
    let smem = shared_bytes(d, w);
    let limit = ctx
        .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
        .map_err(|e| gpu.err(op, e))?;
    if smem > limit.max(0) as usize {
        return Err(Error::invalid(
            op,
            format!(
                "width {w} and dim θ {d} need {smem} bytes of shared memory per block; this device allows {limit}"
            ),
        ));
    }
    ctx.bind_to_thread().map_err(|e| gpu.err(op, e))?;
    f.set_attribute(
        CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
        smem as i32,
    )
    .map_err(|e| {
        gpu.err(
            &format!("{entry}: opting in to {smem} bytes of shared memory"),
            e,
        )
    })?;

    let (params, offsets) = super::gpu::pack_weights(op, plan)?;
    // The layer table of `kernels/score_sampler.cuh`: weight and bias offsets as int.
    let offsets = offsets
        .into_iter()
        .map(|o| to_i32(o, "parameter offset"))
        .collect::<Result<Vec<i32>>>()?;
    let (level_f, level_d) = level_tables(gammas, chain_n, config);
    // GAUSS's weights and their stride per level, or one unused float and stride 0.
    let (gauss, gauss_stride) = match composition {
        ScoreComposition::Geffner => (vec![0.0f32], 0),
        ScoreComposition::Gauss(weights) => (weights.table(), weights.level_stride()),
    };
    let gauss_stride = to_i32(gauss_stride, "GAUSS weights per level")?;
    // The Gaussian base's table, or one unused float.
    let (base, has_base) = match super::gpu::base_table(cond) {
        Some(table) => (table, 1i32),
        None => (vec![0.0f32], 0),
    };
    to_i32(base.len(), "Gaussian base terms")?;
    to_i32(gauss.len(), "GAUSS weights")?;
    let prior = prior.tables(d);
    let up = |e| gpu.err(&format!("{op}: upload"), e);
    let params_d = stream.clone_htod(&params).map_err(up)?;
    let offsets_d = stream.clone_htod(&offsets).map_err(up)?;
    let x_part = stream.clone_htod(&cond.x_part).map_err(up)?;
    let t_part = stream.clone_htod(&cond.t_part).map_err(up)?;
    let level_f_d = stream.clone_htod(&level_f).map_err(up)?;
    let level_d_d = stream.clone_htod(&level_d).map_err(up)?;
    let prior_shift = stream.clone_htod(&prior.shift).map_err(up)?;
    let prior_scale = stream.clone_htod(&prior.scale).map_err(up)?;
    let prior_center = stream.clone_htod(&prior.center).map_err(up)?;
    let prior_precision = stream.clone_htod(&prior.precision).map_err(up)?;
    let gauss_d = stream.clone_htod(&gauss).map_err(up)?;
    let base_d = stream.clone_htod(&base).map_err(up)?;
    let prior_kind = prior.kind as i32;
    // NaN, so that a draw the kernel fails to write cannot pass for a sample.
    let out = stream.clone_htod(&vec![f32::NAN; num * d]).map_err(up)?;

    let nbt = to_i32(plan.theta_blocks.len(), "θ blocks")?;
    let nbh = to_i32(plan.head_blocks.len(), "head blocks")?;
    let (d_i, w_i, n_i) = (
        to_i32(d, "dim θ")?,
        to_i32(w, "width")?,
        to_i32(n, "observations")?,
    );
    let levels_i = to_i32(levels, "levels")?;
    let num_i = to_i32(num, "draws")?;
    let (seed_lo, seed_hi) = (config.seed as u32, (config.seed >> 32) as u32);
    let init_std = (1.0 / chain_n as f64).sqrt() as f32;
    let corrector_steps = to_i32(config.corrector.steps, "corrector steps")?;
    let corrector_levels = config.corrector.levels.min(levels) as i32;
    let snr2 = (config.corrector.snr as f64).powi(2);
    let corrector_numer = 2.0 * snr2 * d as f64;
    let steps_per_level = match config.algorithm {
        Algorithm::Diffusion => 0,
        Algorithm::Langevin { steps_per_level } => to_i32(steps_per_level, "steps per level")?,
    };
    let blocks = u32::try_from(num.div_ceil(GPU_TILE))
        .map_err(|_| Error::invalid(op, format!("{num} draws need too many thread blocks")))?;
    let cfg = LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: smem as u32,
    };
    let mut l = stream.launch_builder(&f);
    l.arg(&out)
        .arg(&params_d)
        .arg(&offsets_d)
        .arg(&nbt)
        .arg(&nbh)
        .arg(&d_i)
        .arg(&w_i)
        .arg(&x_part)
        .arg(&n_i)
        .arg(&t_part)
        .arg(&prior_kind)
        .arg(&prior_shift)
        .arg(&prior_scale)
        .arg(&prior_center)
        .arg(&prior_precision)
        .arg(&level_f_d)
        .arg(&level_d_d)
        .arg(&gauss_d)
        .arg(&gauss_stride)
        .arg(&base_d)
        .arg(&has_base)
        .arg(&levels_i)
        .arg(&num_i)
        .arg(&seed_lo)
        .arg(&seed_hi)
        .arg(&init_std)
        .arg(&corrector_steps)
        .arg(&corrector_levels)
        .arg(&corrector_numer);
    if let Algorithm::Langevin { .. } = config.algorithm {
        l.arg(&steps_per_level);
    }
    // SAFETY: the argument list matches the kernel's signature in kernels/sample_*.cu;
    // `out` holds num·d floats, the kernel writes only lanes < num; params/offsets hold the
    // layer table gpu::pack_weights built for nbt/nbh blocks of these sizes; x_part is [n, w],
    // t_part [levels + 1, w] (validated), the prior's shift, scale and center d entries and
    // its precision d·d (GpuPrior::tables, dimension validated), the level tables
    // (levels + 1)·8 entries, `gauss` (levels + 1)·gauss_stride floats when gauss_stride is
    // not 0 (GaussWeights::table, its observations, dimension and grid validated), `base`
    // n·d + (levels + 1)·2d floats when has_base is 1 (gpu::base_table, validated); the
    // dynamic shared memory is the size sampler_smem_floats computes, opted in above.
    unsafe { l.launch(cfg) }.map_err(|e| gpu.err(entry, e))?;
    let draws = stream
        .clone_dtoh(&out)
        .map_err(|e| gpu.err(&format!("{op}: download"), e))?;
    stream.synchronize().map_err(|e| gpu.err(entry, e))?;
    Ok(draws)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_memory_of_gaussian10_fits_two_blocks_per_h100_sm() {
        let bytes = shared_bytes(10, 128);
        assert_eq!(
            bytes,
            4 * (128 + 2 * 64 * 128 + 32 * 32 * 4 + 3 * 64 * 10 + 4)
        );
        assert!(bytes < 113 * 1024, "{bytes}");
    }

    #[test]
    fn passes_count_predictor_and_corrector_steps() {
        let mut config = SamplerConfig::default();
        assert_eq!(passes_per_draw(400, &config), 399);
        config.algorithm = Algorithm::Langevin { steps_per_level: 5 };
        config.corrector = super::super::Corrector {
            steps: 2,
            levels: 3,
            snr: 0.1,
        };
        assert_eq!(passes_per_draw(10, &config), 9 * 5 + 3 * 2);
    }
}
