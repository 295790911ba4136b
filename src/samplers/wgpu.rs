//! The fused WGSL samplers (contract 4): Algorithms 1 and 2, the optional corrector
//! included, for a [`ScorePlan`](super::ScorePlan), each as one compute dispatch that runs every sample's
//! whole chain: `shaders/sample_diffusion.wgsl` and `shaders/sample_langevin.wgsl`, each
//! compiled after `shaders/philox.wgsl` and `shaders/score_sampler.wgsl` (the shared network, noise and corrector,
//! whose top comment gives the workgroup shape, the workgroup-memory layout and the tables
//! this file uploads). The counterpart of [`super::cuda`], with the same API shape and the
//! same [`GpuPrior`].
//!
//! * **Same draws as the CPU.** [`sample_wgpu`] computes what [`super::sample`] computes
//!   with a [`super::LearnedScore`] for the same plan, conditioning, grid and
//!   [`SamplerConfig`]: the same Philox stream (sample `lane` at chain step `step` reads
//!   counter `(streams::SAMPLER, step, lane, block)` under the seed), the same step order,
//!   the per-level constants computed here in f64 by `run_tile`'s own expressions. Unlike
//!   the CPU (and the CUDA kernels) the shaders are f32 throughout — WGSL has no f64 — so
//!   the draws differ from the CPU's by f32 rounding carried along the chain: in the dense
//!   layers' dot products (another summation order), in Algorithm 2's mean (the CPU sums it
//!   in f64; the shader uses the algebraically equal form θ/√α + c_s·Σ_j s_j + c_p·∇log p
//!   with f32 coefficients, which has no cancellation) and in the corrector's ‖s‖² and group
//!   mean (f64 on the CPU). `tests/wgpu_samplers.rs` states the tolerance and measures why
//!   it holds.
//! * **Tiles.** A workgroup owns [`WGPU_TILE`] = 32 consecutive lanes, exactly one
//!   corrector lane group, so the group mean of ‖s‖² is a fixed-order reduction inside the
//!   workgroup. The draws do not depend on the tile (groups are fixed by lane), so
//!   `config.tile` is not used here.
//! * **Workgroup shape** ([`workgroup_shape`], chosen from the adapter's device type). Each
//!   invocation owns `COLS` output columns of every layer for all 32 rows of the tile. On a
//!   GPU: one column per invocation, max(width, dim θ) rounded up to 32 invocations. On a
//!   CPU adapter (`wgpu::DeviceType::Cpu`, i.e. lavapipe): [`CPU_THREADS`] = 8 invocations
//!   of ⌈max(width, dim θ)/8⌉ columns each. Mesa 22.3's llvmpipe runs 8 invocations as the
//!   lanes of one AVX2 register and, inside any loop, turns every workgroup- or
//!   storage-memory load into a loop over the lanes with a masked scalar load per lane and
//!   component (measured with `perf` on the JIT code), so what costs is the number of loaded
//!   components per multiply-add: per input row k an invocation loads the 32 activations of
//!   the tile and one weight per column it owns, then does 32·COLS multiply-adds. One
//!   column per invocation is one load per multiply-add; 8 columns a sixth of that, and a
//!   workgroup of 8 invocations is one llvmpipe coroutine, so its barriers cost nothing.
//!   On a GPU 8 invocations per workgroup would leave most of each SIMD unit idle, hence
//!   the two shapes. Both compute the same sums in the same order (bit-identical draws).
//! * **Workgroup memory.** Activations of the tile (32 × width), θ, Σ_j s_j and ∇log p
//!   stay in workgroup memory ([`workgroup_bytes`]; width 128 takes 16 KiB of lavapipe's
//!   32 KiB). Weights are read straight from the storage buffer: every weight is used by
//!   exactly one invocation of a workgroup (the one owning its output column), so staging
//!   it through workgroup memory would only add a copy and two barriers per slab (on
//!   lavapipe it cost 2.3× in samples/s; on a GPU the direct loads are coalesced across
//!   invocations, as the staging loads were). The shader is specialized per (width, dim θ,
//!   invocations, columns per invocation) by rewriting its `const` lines; pipelines are
//!   compiled once per adapter and specialization and cached for the process.
//! * **Dispatches.** On a GPU the whole chain runs in one dispatch by default
//!   ([`WgpuSamplerOptions::levels_per_dispatch`] = 0): compute-only GPUs have no
//!   watchdog. A GPU that also drives a display may kill a long dispatch (e.g. the 2 s TDR
//!   of Windows); there, set `levels_per_dispatch` to run the chain in chunks of that many
//!   levels, each its own dispatch and submission, θ kept in a storage buffer between
//!   them. On a CPU adapter the chain is always cut: llvmpipe (Mesa's gallivm, under
//!   lavapipe) ends an invocation's loops after 65 535 iterations counted over all of them
//!   together (`LLVMPIPE_LOOP_LIMIT`, Mesa's `LP_MAX_TGSI_LOOP_ITERATIONS`), silently, so a
//!   longer chain came back wrong (measured: width 64 from 20 levels on, width 16 at 400
//!   levels, Langevin with L = 50). Each dispatch there runs at most as many chain steps as
//!   fit `LLVMPIPE_LOOP_BUDGET` by an upper-bound count of the shader's loops, starting
//!   and ending inside a level if it must, and wider networks get more invocations of
//!   fewer columns until one step fits. The draws are the same bit for bit however the
//!   chain is cut.
//! * **Buffers.** One call creates its buffers once (weights, conditioning, level table,
//!   uniform slots, state, read-back) and nothing inside the chain; the draws are read back
//!   once at the end.
//! * **n observations.** Per network pass the θ path runs once per sample (its folded
//!   output stays in registers) and the head once per (sample, observation), with each
//!   observation's precomputed `Conditioning::x_part` row; the scores are summed in
//!   observation order as on the CPU.
//! * **GAUSS.** With [`ScoreComposition::Gauss`] the shader combines the n scores by the
//!   level's weights ([`super::gauss::GaussWeights::table`], uploaded once per call)
//!   instead of summing them, in [`super::gauss::GaussScore`]'s order, and the host runs
//!   the chain with one observation's coefficients and initial draw: the composed score of
//!   Linhart et al. at d² multiply-adds per sample, observation and pass on top of Geffner
//!   et al.'s. The pilot runs that estimate the weights' covariances are ordinary n = 1
//!   calls of this sampler ([`crate::estimators::ScoreModel::sample`]).
//! * **GAUSS.** With [`ScoreComposition::Gauss`] the shader combines the n scores by the
//!   level's weights ([`super::gauss::GaussWeights::table`], uploaded once per call)
//!   instead of summing them, in [`super::gauss::GaussScore`]'s order, and the host runs
//!   the chain with one observation's coefficients and initial draw: the composed score of
//!   Linhart et al. at d² multiply-adds per sample, observation and pass on top of Geffner
//!   et al.'s. The pilot runs that estimate the weights' covariances are ordinary n = 1
//!   calls of this sampler ([`crate::estimators::ScoreModel::sample`]).
//! * **Prior.** The shaders evaluate ∇log p(θ) themselves, once per pass where its weight
//!   (1 − n)(S − k)/S is not 0, from the [`GpuPrior`]'s tables ([`GpuPrior::tables`]: the
//!   Gaussian, log-normal and uniform box priors through their bijections and the
//!   standardization, as [`super::StandardizedPrior`] on the CPU, but in f32).
//! * **Speed on lavapipe.** `benches/sample_wgpu.rs` (d = 10, width 64, n = 1, S = 50,
//!   4096 draws, 2 cores): about 590 samples/s against the CPU sampler's 12 000, a ratio
//!   of ≈ 0.05 (`benches/RESULTS.md`). What costs is llvmpipe's per-lane loads of the
//!   activations; the shader path is for GPUs, lavapipe is for parity.
//!
//! No adapter, a shader the driver rejects or a device error is an error, never a CPU
//! fallback.

use std::collections::HashMap;
use std::sync::{mpsc, Arc, Mutex, OnceLock};

use wgpu::util::DeviceExt;

pub use super::gpu::{passes_per_draw, GpuPrior, MAX_WIDTH};
pub use super::target::{ScoreComposition, Target};
use super::{Algorithm, SamplerConfig, CORRECTOR_GROUP};
use crate::backend::wgpu::{WgpuBackend, LLVMPIPE_LOOP_LIMIT};
use crate::error::{Error, Result};
use crate::tensor::Device;

/// Samples per workgroup (`TILE` in `shaders/score_sampler.wgsl`): one corrector group.
pub const WGPU_TILE: usize = CORRECTOR_GROUP;
/// Entries per level in the level table.
const LEVEL_STRIDE: usize = 8;
/// Words of the uniform parameter block (`Params` in the shader).
const PARAM_WORDS: usize = 21;

/// What one dispatch may spend of [`LLVMPIPE_LOOP_LIMIT`] by [`loop_iterations`]'s count.
const LLVMPIPE_LOOP_BUDGET: usize = 50_000;

const OP: &str = "sample_wgpu";

/// How [`sample_wgpu_with`] runs the chain.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WgpuSamplerOptions {
    /// The adapter, in `devices::wgpu_adapters()` order (the `n` of `wgpu:n`).
    pub adapter: usize,
    /// Levels per dispatch; 0 (the default) runs the whole chain in one dispatch. Set it on
    /// GPUs whose driver has a watchdog for long dispatches (module docs).
    pub levels_per_dispatch: usize,
}

/// Invocations per workgroup on a CPU adapter: one SIMD register of f32 lanes as
/// lavapipe compiles compute shaders (8 with AVX2), so a workgroup is one lavapipe
/// "thread" and its barriers cost nothing (module docs, "Workgroup shape").
pub const CPU_THREADS: usize = 8;

/// The workgroup's shape `(THREADS, COLS)` for dim θ `d` and width `w`: invocations, and
/// output columns each owns (columns t, t + THREADS, …) of the widest layer, max(w, d).
/// On a GPU (`cpu` false) one column per invocation, max(w, d) rounded up to a multiple
/// of 32; on a CPU adapter such as lavapipe [`CPU_THREADS`] invocations that own
/// ⌈max(w, d)/8⌉ columns each (module docs).
pub fn workgroup_shape(d: usize, w: usize, cpu: bool) -> (usize, usize) {
    let columns = w.max(d);
    if cpu {
        (CPU_THREADS, columns.div_ceil(CPU_THREADS))
    } else {
        (columns.div_ceil(32) * 32, 1)
    }
}

/// Bytes of workgroup memory one workgroup needs for dim θ `d` and width `w`: h
/// `[32·w]`, θ, Σ_j s_j and ∇log p `[32·d]` each, the corrector's ‖s‖² `[32]` and
/// (ε, √(2ε)).
pub fn workgroup_bytes(d: usize, w: usize) -> usize {
    4 * (WGPU_TILE * w + 3 * WGPU_TILE * d + WGPU_TILE + 2)
}

fn to_u32(v: usize, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::invalid(OP, format!("{what} = {v} exceeds 2^32 - 1")))
}

/// The per-level table of the shader (stride 8), from `run_tile`'s own expressions.
fn level_table(gammas: &[f64], n: usize, config: &SamplerConfig) -> Vec<f32> {
    let levels = gammas.len() - 1;
    let nf = n as f64;
    let mut table = vec![0.0f32; (levels + 1) * LEVEL_STRIDE];
    for k in 1..levels {
        let alpha = gammas[k] / gammas[k - 1];
        let w = (1.0 - nf) * (levels - k) as f64 / levels as f64;
        let f = &mut table[k * LEVEL_STRIDE..(k + 1) * LEVEL_STRIDE];
        // LearnedScore::scores: s_ψ = ε̂ · (−1/√(1 − γ_k)), the division in f32.
        f[0] = -1.0 / (1.0 - gammas[k]).sqrt() as f32;
        f[1] = w as f32;
        match config.algorithm {
            Algorithm::Diffusion => {
                let denom = nf - alpha * (nf - 1.0);
                let var = (1.0 - alpha) / denom;
                let sqrt_alpha = alpha.sqrt();
                f[2] = config.diffusion_noise_std(k, var);
                // μ = θ/√α + (1 − α)/(√α·denom)·Σ_j s_j + σ²w·∇log p: run_tile's mean with
                // (n − (n − 1)α)/denom = 1.
                f[3] = (1.0 / sqrt_alpha) as f32;
                f[4] = ((1.0 - alpha) / (sqrt_alpha * denom)) as f32;
                f[5] = (var * w) as f32;
            }
            Algorithm::Langevin { .. } => {
                let delta = 0.05 * (1.0 - alpha) / alpha.sqrt();
                f[2] = (delta / 2.0) as f32;
                f[3] = delta.sqrt() as f32;
            }
        }
    }
    table
}

/// An upper bound on the loop iterations one invocation of the sampler shader runs for
/// one chain step (a network pass and its move), `(per step, per dispatch)`, the second
/// for loading and storing the tile. Every loop is counted as if llvmpipe kept it (it
/// unrolls the short ones, so the true count is lower): a dense layer of `k_in` inputs is
/// k_in·(1 + COLS) (its k loop and the column loop inside) plus 2·COLS (zeroing and
/// epilogue), the per-element loops over the tile ⌈32·d/THREADS⌉·(1 + d) (the prior's
/// and GAUSS's matrix-vector products included).
fn loop_iterations(
    plan_sizes: (usize, usize, usize, usize),
    n: usize,
    (gauss, base): (bool, bool),
    (threads, cols): (usize, usize),
) -> (usize, usize) {
    let (d, w, nbt, nbh) = plan_sizes;
    let dense = |k_in: usize| k_in * (1 + cols) + 2 * cols;
    let per_element = (WGPU_TILE * d).div_ceil(threads) * (1 + d);
    let noise = (WGPU_TILE * d.div_ceil(4)).div_ceil(threads) * 5;
    let theta_path = dense(d) + (nbt + 1) * dense(w) + cols;
    let head = 1
        + cols
        + (nbh + 1) * dense(w)
        + cols
        + per_element * (usize::from(gauss) + usize::from(base));
    let evaluate = theta_path + n * head + per_element * (1 + usize::from(gauss));
    // The move (noise), the corrector's ‖s‖² and serial group mean, the level loops.
    let step = evaluate + noise + WGPU_TILE.div_ceil(threads) * (1 + d) + WGPU_TILE + 4;
    (step, noise + per_element)
}

/// The workgroup shape and the most chain steps per dispatch on adapter type `cpu`:
/// [`workgroup_shape`], and on a CPU adapter, where llvmpipe's loop limiter applies, more
/// invocations of fewer columns each until a step fits [`LLVMPIPE_LOOP_BUDGET`] (an
/// error when even `max_threads` do not).
fn shape_and_steps(
    plan_sizes: (usize, usize, usize, usize),
    n: usize,
    extra: (bool, bool),
    cpu: bool,
    max_threads: usize,
) -> Result<((usize, usize), usize)> {
    let (d, w, _, _) = plan_sizes;
    let mut shape = workgroup_shape(d, w, cpu);
    if !cpu {
        return Ok((shape, usize::MAX));
    }
    loop {
        let (step, fixed) = loop_iterations(plan_sizes, n, extra, shape);
        if step + fixed <= LLVMPIPE_LOOP_BUDGET {
            return Ok((shape, (LLVMPIPE_LOOP_BUDGET - fixed) / step));
        }
        let threads = 2 * shape.0;
        if threads > max_threads || shape.1 == 1 {
            return Err(Error::invalid(
                OP,
                format!(
                    "one chain step of width {w}, dim θ {d} and {n} observations runs about {} loop iterations per invocation, more than llvmpipe's limit of {LLVMPIPE_LOOP_LIMIT} allows a dispatch",
                    step + fixed
                ),
            ));
        }
        shape = (threads, w.max(d).div_ceil(threads));
    }
}

/// One dispatch's share of the chain: steps `step_lo .. step_hi` (global numbers), which
/// lie in levels `k_hi` down to `k_lo`; `level_step0` numbers the first step of `k_hi`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Chunk {
    k_hi: usize,
    k_lo: usize,
    level_step0: usize,
    step_lo: usize,
    step_hi: usize,
}

/// The chain of `levels` levels cut into dispatches of at most `levels_per_dispatch`
/// levels (0: no limit) and at most `steps_per_dispatch` steps.
fn chunks(
    levels: usize,
    config: &SamplerConfig,
    levels_per_dispatch: usize,
    steps_per_dispatch: usize,
) -> Vec<Chunk> {
    let mut out = Vec::new();
    let mut current: Option<Chunk> = None;
    let mut first = 1;
    for k in (1..levels).rev() {
        let count = steps_at_level(k, config);
        for step in first..first + count {
            let full = current.is_some_and(|c| {
                step - c.step_lo >= steps_per_dispatch
                    || (step == first
                        && levels_per_dispatch > 0
                        && c.k_hi - k >= levels_per_dispatch)
            });
            if full || current.is_none() {
                out.extend(current.take());
                current = Some(Chunk {
                    k_hi: k,
                    k_lo: k,
                    level_step0: first,
                    step_lo: step,
                    step_hi: step,
                });
            }
            if let Some(c) = current.as_mut() {
                c.k_lo = k;
                c.step_hi = step + 1;
            }
        }
        first += count;
    }
    out.extend(current);
    out
}

/// Chain steps taken at level `k` (predictor steps, then the corrector's).
fn steps_at_level(k: usize, config: &SamplerConfig) -> usize {
    let predictor = match config.algorithm {
        Algorithm::Diffusion => 1,
        Algorithm::Langevin { steps_per_level } => steps_per_level,
    };
    predictor
        + if k <= config.corrector.levels {
            config.corrector.steps
        } else {
            0
        }
}

/// A compiled sampler pipeline and its bind group layout.
struct SamplerPipeline {
    pipeline: ::wgpu::ComputePipeline,
    layout: ::wgpu::BindGroupLayout,
}

/// Which shader specialization: (adapter, entry point, width, dim θ, THREADS, COLS).
type PipelineKey = (usize, &'static str, usize, usize, usize, usize);

fn device_err(adapter: usize, msg: impl Into<String>) -> Error {
    Error::Device {
        device: Device::Wgpu(adapter).to_string(),
        msg: msg.into(),
    }
}

/// The WGSL of `entry` specialized for width `w`, dim θ `d`, `threads` invocations of
/// `cols` columns each: the shared file with its HOST constants rewritten, followed by the
/// entry file.
fn shader_source(entry: &str, w: usize, d: usize, threads: usize, cols: usize) -> Result<String> {
    let common = include_str!("../../shaders/score_sampler.wgsl");
    let body = match entry {
        "sample_diffusion" => include_str!("../../shaders/sample_diffusion.wgsl"),
        _ => include_str!("../../shaders/sample_langevin.wgsl"),
    };
    let mut src = format!("{}\n{common}", include_str!("../../shaders/philox.wgsl"));
    for (line, value) in [
        ("const W: u32 = 16u;", w),
        ("const D: u32 = 4u;", d),
        ("const THREADS: u32 = 32u;", threads),
        ("const COLS: u32 = 1u;", cols),
    ] {
        if !src.contains(line) {
            return Err(Error::invalid(
                OP,
                format!("shaders/score_sampler.wgsl lost its line {line:?}"),
            ));
        }
        let name = &line[6..line.find(':').unwrap_or(7)];
        src = src.replacen(line, &format!("const {name}: u32 = {value}u;"), 1);
    }
    src.push('\n');
    src.push_str(body);
    Ok(src)
}

/// The pipeline of `key`, compiled on first use and cached for the process.
fn pipeline(gpu: &WgpuBackend, key: PipelineKey) -> Result<Arc<SamplerPipeline>> {
    static CACHE: OnceLock<Mutex<HashMap<PipelineKey, Arc<SamplerPipeline>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let poisoned = |_| device_err(key.0, "the sampler pipeline cache lock was poisoned");
    if let Some(p) = cache.lock().map_err(poisoned)?.get(&key) {
        return Ok(p.clone());
    }
    let (adapter, entry, w, d, threads, cols) = key;
    let device = gpu.device();
    let source = shader_source(entry, w, d, threads, cols)?;
    let scope = device.push_error_scope(::wgpu::ErrorFilter::Validation);
    let module = device.create_shader_module(::wgpu::ShaderModuleDescriptor {
        label: Some(entry),
        source: ::wgpu::ShaderSource::Wgsl(source.into()),
    });
    let storage = |binding: u32, read_only: bool| ::wgpu::BindGroupLayoutEntry {
        binding,
        visibility: ::wgpu::ShaderStages::COMPUTE,
        ty: ::wgpu::BindingType::Buffer {
            ty: ::wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    };
    let entries = [
        ::wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: ::wgpu::ShaderStages::COMPUTE,
            ty: ::wgpu::BindingType::Buffer {
                ty: ::wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        },
        storage(1, true),
        storage(2, true),
        storage(3, true),
        storage(4, true),
        storage(5, false),
        storage(6, true),
        storage(7, true),
    ];
    let layout = device.create_bind_group_layout(&::wgpu::BindGroupLayoutDescriptor {
        label: Some(entry),
        entries: &entries,
    });
    let pipeline_layout = device.create_pipeline_layout(&::wgpu::PipelineLayoutDescriptor {
        label: Some(entry),
        bind_group_layouts: &[Some(&layout)],
        immediate_size: 0,
    });
    let pipeline = device.create_compute_pipeline(&::wgpu::ComputePipelineDescriptor {
        label: Some(entry),
        layout: Some(&pipeline_layout),
        module: &module,
        entry_point: Some(entry),
        compilation_options: Default::default(),
        cache: None,
    });
    if let Some(e) = pollster::block_on(scope.pop()) {
        return Err(device_err(
            adapter,
            format!("shaders/{entry}.wgsl (after score_sampler.wgsl; width {w}, dim θ {d}, {threads} invocations of {cols} columns): {e}"),
        ));
    }
    let p = Arc::new(SamplerPipeline { pipeline, layout });
    cache.lock().map_err(poisoned)?.insert(key, p.clone());
    Ok(p)
}

/// Draws `num` samples `[num, dim θ]` of the composed posterior `target` on wgpu adapter
/// `adapter`, the whole chain in one dispatch: the same draws as [`super::sample`] with
/// `LearnedScore { plan, conditioning: cond, gammas }` (wrapped in a
/// [`super::gauss::GaussScore`] for [`ScoreComposition::Gauss`]) and a prior whose score is
/// `prior`, up to f32 rounding (module docs).
///
/// Errors (never panics, never falls back to the CPU) when there is no adapter `adapter`,
/// a prior of another dimension than θ, GAUSS weights for other observations or another
/// grid, sizes past [`MAX_WIDTH`] or the adapter's workgroup memory, a shader or device
/// error, or the CPU sampler's own input errors.
pub fn sample_wgpu(
    adapter: usize,
    target: &Target,
    num: usize,
    config: &SamplerConfig,
) -> Result<Vec<f32>> {
    let options = WgpuSamplerOptions {
        adapter,
        ..Default::default()
    };
    sample_wgpu_with(&options, target, num, config)
}

/// [`sample_wgpu`] with the adapter and the split of the chain into dispatches given by
/// `options` (the draws do not depend on the split).
pub fn sample_wgpu_with(
    options: &WgpuSamplerOptions,
    target: &Target,
    num: usize,
    config: &SamplerConfig,
) -> Result<Vec<f32>> {
    super::gpu::validate(OP, target, config)?;
    let Target {
        plan,
        cond,
        gammas,
        prior,
        composition,
    } = *target;
    let adapter = options.adapter;
    let (d, w, n) = (plan.config.dim_theta, plan.config.width, cond.observations);
    let chain_n = composition.chain_observations(n);
    let levels = gammas.len() - 1;
    let gpu = WgpuBackend::shared(adapter)?;
    if num == 0 {
        return Ok(Vec::new());
    }
    let limits = gpu.limits().clone();
    let cpu = gpu.device_type() == ::wgpu::DeviceType::Cpu;
    let max_threads = limits
        .max_compute_invocations_per_workgroup
        .min(limits.max_compute_workgroup_size_x) as usize;
    let gauss = matches!(composition, ScoreComposition::Gauss(_));
    let base = super::gpu::base_table(cond);
    let sizes = (d, w, plan.theta_blocks.len(), plan.head_blocks.len());
    let extra = (gauss, base.is_some());
    let ((threads, cols), steps_per_dispatch) = shape_and_steps(sizes, n, extra, cpu, max_threads)?;
    if threads > max_threads {
        return Err(device_err(
            adapter,
            format!(
                "{OP}: width {w} and dim θ {d} need workgroups of {threads} invocations; the adapter allows {max_threads}"
            ),
        ));
    }
    let storage_limit = limits.max_compute_workgroup_storage_size as usize;
    if workgroup_bytes(d, w) > storage_limit {
        return Err(device_err(
            adapter,
            format!(
                "{OP}: width {w} and dim θ {d} need {} bytes of workgroup memory; the adapter allows {storage_limit}",
                workgroup_bytes(d, w)
            ),
        ));
    }
    let entry = match config.algorithm {
        Algorithm::Diffusion => "sample_diffusion",
        Algorithm::Langevin { .. } => "sample_langevin",
    };
    let sp = pipeline(&gpu, (adapter, entry, w, d, threads, cols))?;

    let tiles = num.div_ceil(WGPU_TILE);
    let tiles_u32 = to_u32(tiles, "workgroups")?;
    let num_u32 = to_u32(num, "draws")?;
    to_u32(tiles * WGPU_TILE, "lanes")?;
    let state_bytes = (tiles * WGPU_TILE * d * 4) as u64;
    let (net, _) = super::gpu::pack_weights(OP, plan)?;
    let table = level_table(gammas, chain_n, config);
    // Binding 7: GAUSS's weights, or one unused float.
    let gauss_table = match composition {
        ScoreComposition::Geffner => vec![0.0f32],
        ScoreComposition::Gauss(weights) => weights.table(),
    };
    let prior = prior.tables(d);
    // [m, s, c, P], then the Gaussian base's table (binding 6).
    let prior_table: Vec<f32> = prior
        .shift
        .iter()
        .chain(&prior.scale)
        .copied()
        .chain(
            prior
                .center
                .iter()
                .chain(&prior.precision)
                .map(|&v| v as f32),
        )
        .chain(base.iter().flatten().copied())
        .collect();
    let max_binding = limits
        .max_storage_buffer_binding_size
        .min(limits.max_buffer_size);
    for (what, bytes) in [
        ("the chain state", state_bytes),
        ("the weights", net.len() as u64 * 4),
        ("the time conditioning", cond.t_part.len() as u64 * 4),
        ("the observation conditioning", cond.x_part.len() as u64 * 4),
        ("the prior", prior_table.len() as u64 * 4),
        ("the GAUSS weights", gauss_table.len() as u64 * 4),
    ] {
        if bytes > max_binding {
            return Err(device_err(
                adapter,
                format!(
                    "{OP}: {what} needs {bytes} bytes; the adapter binds at most {max_binding}"
                ),
            ));
        }
    }

    let chunks = chunks(
        levels,
        config,
        options.levels_per_dispatch,
        steps_per_dispatch,
    );

    // Each chunk's parameters at an offset the adapter's uniform alignment allows.
    let stride =
        (PARAM_WORDS * 4).next_multiple_of(limits.min_uniform_buffer_offset_alignment as usize);
    let mut uniforms = vec![0u8; stride * chunks.len()];
    let steps_per_level = match config.algorithm {
        Algorithm::Diffusion => 0,
        Algorithm::Langevin { steps_per_level } => to_u32(steps_per_level, "steps per level")?,
    };
    let snr2 = (config.corrector.snr as f64).powi(2);
    for (c, chunk) in chunks.iter().enumerate() {
        let words: [u32; PARAM_WORDS] = [
            to_u32(plan.theta_blocks.len(), "θ blocks")?,
            to_u32(plan.head_blocks.len(), "head blocks")?,
            to_u32(n, "observations")?,
            num_u32,
            config.seed as u32,
            (config.seed >> 32) as u32,
            ((1.0 / chain_n as f64).sqrt() as f32).to_bits(),
            to_u32(config.corrector.steps, "corrector steps")?,
            config.corrector.levels.min(levels) as u32,
            ((2.0 * snr2 * d as f64) as f32).to_bits(),
            steps_per_level,
            chunk.k_hi as u32,
            chunk.k_lo as u32,
            chunk.level_step0 as u32,
            chunk.step_lo as u32,
            chunk.step_hi as u32,
            u32::from(c == 0),
            tiles_u32,
            prior.kind,
            u32::from(gauss),
            u32::from(base.is_some()),
        ];
        uniforms[c * stride..c * stride + PARAM_WORDS * 4]
            .copy_from_slice(bytemuck::cast_slice(&words));
    }

    let device = gpu.device();
    let queue = gpu.queue();
    let scope = device.push_error_scope(::wgpu::ErrorFilter::Validation);
    let init = |label: &str, contents: &[u8], usage: ::wgpu::BufferUsages| {
        device.create_buffer_init(&::wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents,
            usage,
        })
    };
    let read = ::wgpu::BufferUsages::STORAGE;
    let params_buf = init("sampler params", &uniforms, ::wgpu::BufferUsages::UNIFORM);
    let net_buf = init("sampler weights", bytemuck::cast_slice(&net), read);
    let x_buf = init("sampler x part", bytemuck::cast_slice(&cond.x_part), read);
    let t_buf = init("sampler t part", bytemuck::cast_slice(&cond.t_part), read);
    let level_buf = init("sampler levels", bytemuck::cast_slice(&table), read);
    let prior_buf = init("sampler prior", bytemuck::cast_slice(&prior_table), read);
    let gauss_buf = init(
        "sampler GAUSS weights",
        bytemuck::cast_slice(&gauss_table),
        read,
    );
    // NaN, so that a draw the shader fails to write cannot pass for a sample.
    let poison = vec![f32::NAN; tiles * WGPU_TILE * d];
    let state_buf = init(
        "sampler state",
        bytemuck::cast_slice(&poison),
        read | ::wgpu::BufferUsages::COPY_SRC,
    );
    let out_bytes = (num * d * 4) as u64;
    let staging = device.create_buffer(&::wgpu::BufferDescriptor {
        label: Some("sampler read-back"),
        size: out_bytes,
        usage: ::wgpu::BufferUsages::MAP_READ | ::wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let max_dim = limits.max_compute_workgroups_per_dimension.max(1);
    let grid_x = tiles_u32.min(max_dim);
    let grid_y = tiles_u32.div_ceil(grid_x);
    if grid_y > max_dim {
        return Err(device_err(
            adapter,
            format!("{OP}: {tiles} workgroups exceed the adapter's grid ({max_dim}²)"),
        ));
    }
    for c in 0..chunks.len() {
        let bind_group = device.create_bind_group(&::wgpu::BindGroupDescriptor {
            label: Some(entry),
            layout: &sp.layout,
            entries: &[
                ::wgpu::BindGroupEntry {
                    binding: 0,
                    resource: ::wgpu::BindingResource::Buffer(::wgpu::BufferBinding {
                        buffer: &params_buf,
                        offset: (c * stride) as u64,
                        size: ::wgpu::BufferSize::new((PARAM_WORDS * 4) as u64),
                    }),
                },
                ::wgpu::BindGroupEntry {
                    binding: 1,
                    resource: net_buf.as_entire_binding(),
                },
                ::wgpu::BindGroupEntry {
                    binding: 2,
                    resource: x_buf.as_entire_binding(),
                },
                ::wgpu::BindGroupEntry {
                    binding: 3,
                    resource: t_buf.as_entire_binding(),
                },
                ::wgpu::BindGroupEntry {
                    binding: 4,
                    resource: level_buf.as_entire_binding(),
                },
                ::wgpu::BindGroupEntry {
                    binding: 5,
                    resource: state_buf.as_entire_binding(),
                },
                ::wgpu::BindGroupEntry {
                    binding: 6,
                    resource: prior_buf.as_entire_binding(),
                },
                ::wgpu::BindGroupEntry {
                    binding: 7,
                    resource: gauss_buf.as_entire_binding(),
                },
            ],
        });
        let mut encoder =
            device.create_command_encoder(&::wgpu::CommandEncoderDescriptor { label: Some(entry) });
        {
            let mut pass = encoder.begin_compute_pass(&::wgpu::ComputePassDescriptor {
                label: Some(entry),
                timestamp_writes: None,
            });
            pass.set_pipeline(&sp.pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            pass.dispatch_workgroups(grid_x, grid_y, 1);
        }
        if c + 1 == chunks.len() {
            encoder.copy_buffer_to_buffer(&state_buf, 0, &staging, 0, out_bytes);
        }
        // One submission per chunk, so a watchdog sees each chunk as its own work.
        queue.submit([encoder.finish()]);
    }
    if let Some(e) = pollster::block_on(scope.pop()) {
        return Err(device_err(adapter, format!("{entry}: {e}")));
    }
    let (tx, rx) = mpsc::channel();
    staging
        .slice(..)
        .map_async(::wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
    device
        .poll(::wgpu::PollType::wait_indefinitely())
        .map_err(|e| device_err(adapter, format!("{entry}: waiting for the device: {e}")))?;
    rx.recv()
        .map_err(|_| device_err(adapter, format!("{entry}: the read-back was dropped")))?
        .map_err(|e| device_err(adapter, format!("{entry}: mapping the draws: {e}")))?;
    let draws = {
        let view = staging
            .slice(..)
            .get_mapped_range()
            .map_err(|e| device_err(adapter, format!("{entry}: reading the draws: {e}")))?;
        bytemuck::pod_collect_to_vec::<u8, f32>(&view)
    };
    staging.unmap();
    Ok(draws)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workgroup_shapes_cover_every_column() {
        // lavapipe's 32 KiB hold width 128 (and 192), not 256.
        assert!(workgroup_bytes(10, 128) <= 32 * 1024);
        assert!(workgroup_bytes(10, 256) > 32 * 1024);
        assert_eq!(workgroup_bytes(3, 16), 4 * (32 * 16 + 3 * 32 * 3 + 32 + 2));
        assert_eq!(workgroup_shape(3, 16, false), (32, 1));
        assert_eq!(workgroup_shape(3, 40, false), (64, 1));
        assert_eq!(workgroup_shape(10, 64, true), (8, 8));
        assert_eq!(workgroup_shape(5, 48, true), (8, 6));
        assert_eq!(workgroup_shape(3, 2, true), (8, 1));
        for (d, w) in [(3, 16), (5, 48), (10, 64), (10, 128), (12, 8)] {
            for cpu in [false, true] {
                let (threads, cols) = workgroup_shape(d, w, cpu);
                assert!(threads * cols >= w.max(d));
                assert!(threads * (cols - 1) < w.max(d));
            }
        }
    }

    #[test]
    fn chunks_cover_the_chain_in_order_within_both_limits() {
        let mut config = SamplerConfig {
            algorithm: Algorithm::Langevin { steps_per_level: 3 },
            ..Default::default()
        };
        config.corrector.steps = 2;
        config.corrector.levels = 4;
        // Levels 9 … 1: 3 steps each, 5 at levels 4 … 1: 35 steps, numbered 1 … 35.
        for (per_level, per_step) in [(0, usize::MAX), (2, usize::MAX), (0, 4), (3, 7), (1, 1)] {
            let cut = chunks(10, &config, per_level, per_step);
            assert_eq!(cut[0].step_lo, 1);
            assert_eq!(cut.last().unwrap().step_hi, 36);
            assert_eq!(cut.last().unwrap().k_lo, 1);
            for (a, b) in cut.iter().zip(&cut[1..]) {
                assert_eq!(a.step_hi, b.step_lo, "{per_level} {per_step}");
            }
            for c in &cut {
                assert!(c.step_hi - c.step_lo <= per_step);
                assert!(per_level == 0 || c.k_hi - c.k_lo < per_level);
                // level_step0 numbers level k_hi's first step.
                let first: usize = 1
                    + (c.k_hi + 1..10)
                        .map(|k| steps_at_level(k, &config))
                        .sum::<usize>();
                assert_eq!(c.level_step0, first);
                assert!(c.step_lo >= first && c.step_lo < first + steps_at_level(c.k_hi, &config));
            }
        }
        assert_eq!(chunks(10, &config, 0, usize::MAX).len(), 1);
        assert_eq!(chunks(10, &config, 0, 4).len(), 9);
    }

    #[test]
    fn cpu_adapters_fit_each_dispatch_under_the_loop_limit() {
        // gaussian10's network: width 64 (8 invocations of 8 columns) and 128 (more
        // invocations once a step would not fit); n = 8 with GAUSS and a Gaussian base.
        for (w, n, extra) in [
            (64, 1, (false, false)),
            (128, 1, (false, false)),
            (128, 8, (true, false)),
            (256, 8, (true, true)),
        ] {
            let sizes = (10, w, 2, 2);
            let (shape, steps) = shape_and_steps(sizes, n, extra, true, 256).unwrap();
            let (step, fixed) = loop_iterations(sizes, n, extra, shape);
            assert!(
                steps >= 1 && steps * step + fixed <= LLVMPIPE_LOOP_BUDGET,
                "{w} {n}"
            );
            assert!(shape.0 * shape.1 >= w && shape.0 * (shape.1 - 1) < w);
        }
        assert_eq!(
            shape_and_steps((10, 64, 2, 2), 1, (false, false), true, 256)
                .unwrap()
                .0,
            (8, 8)
        );
        // GPUs: one dispatch, the GPU shape.
        assert_eq!(
            shape_and_steps((10, 64, 2, 2), 1, (false, false), false, 256).unwrap(),
            ((64, 1), usize::MAX)
        );
        // A step that cannot fit even with one column per invocation is an error.
        let e = shape_and_steps((10, 256, 2, 40), 8, (false, false), true, 64).unwrap_err();
        assert!(e.to_string().contains("llvmpipe"), "{e}");
    }

    #[test]
    fn shader_constants_are_rewritten() {
        let src = shader_source("sample_diffusion", 64, 10, 8, 8).unwrap();
        assert!(src.contains("const W: u32 = 64u;"));
        assert!(src.contains("const D: u32 = 10u;"));
        assert!(src.contains("const THREADS: u32 = 8u;"));
        assert!(src.contains("const COLS: u32 = 8u;"));
        assert!(src.contains("fn sample_diffusion("));
    }

    #[test]
    fn chunk_steps_add_up_to_the_chain() {
        let mut config = SamplerConfig {
            algorithm: Algorithm::Langevin { steps_per_level: 3 },
            ..Default::default()
        };
        config.corrector.steps = 2;
        config.corrector.levels = 4;
        let total: usize = (1..10).map(|k| steps_at_level(k, &config)).sum();
        assert_eq!(total, passes_per_draw(10, &config));
    }
}
