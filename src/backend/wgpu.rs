//! The wgpu backend: every op of [`Backend`] as a WGSL compute shader (`shaders/*.wgsl`,
//! one file per op family, the entry points named like the functions of
//! `src/backend/cpu.rs`, which define what each must compute).
//!
//! How it runs:
//! * **One backend per adapter**, created on first use and cached for the process
//!   ([`WgpuBackend::shared`]); the adapter order is `devices::wgpu_adapters()`'s.
//! * **Pipelines are compiled once** per (shader, entry point) and cached. Every entry
//!   point follows one binding convention (see `shaders/README.md`): binding 0 is a
//!   uniform block of at most 16 scalar parameters, then the read-only storage buffers,
//!   then the read-write ones; the pipeline layout is keyed by those two counts.
//! * **Buffers are pooled**: a tensor's buffer returns to a per-size-class free list when
//!   the last tensor holding it is dropped, so a training or sampling loop that repeats
//!   the same shapes stops creating buffers after its first iteration. Parameters travel
//!   in a ring of uniform slots inside one buffer.
//! * **Dispatches are batched**: each op records a compute pass into one pending command
//!   encoder; the encoder is submitted when data is read back ([`Backend::download`]),
//!   before host data is written (`upload`, index lists), when the parameter ring is full,
//!   or every [`MAX_PENDING`] dispatches. Nothing is read back unless asked.
//! * **Deterministic**: every reduction walks its elements in a fixed order and combines
//!   partial sums by a fixed tree; there are no float atomics.
//! * **Errors, not panics**: a missing adapter, a shader that fails validation or a
//!   device error is returned as [`Error::Device`]; wgpu's uncaptured errors are
//!   collected and reported by the next submission.
//!
//! Tests can make every freshly allocated output start as NaN
//! ([`WgpuBackend::set_poison_outputs`], or `AMORTIZE_WGPU_POISON=1`), so that an
//! element a kernel forgot to write fails the parity test instead of showing a stale value.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock, Weak};

use super::{AdamStep, Backend, BinaryOp, MatLayout, MatmulDims, Reduction, UnaryOp};
use crate::error::{Error, Result};
use crate::tensor::{Device, GpuBuffer, Storage, Tensor};

/// Dispatches recorded before the pending encoder is submitted without being asked.
pub const MAX_PENDING: usize = 256;
/// Parameter slots in the uniform ring (each slot holds one dispatch's parameters).
const PARAM_SLOTS: u64 = 1024;
/// Bytes of parameters one dispatch may pass (16 u32/f32 words).
const PARAM_BYTES: u64 = 64;
/// Free buffers the pool keeps, in bytes; beyond this, released buffers are destroyed.
const POOL_RETAIN_BYTES: u64 = 1 << 30;
/// Threads of the one-dimensional kernels (elementwise ops, row workgroups).
const WG: u64 = 256;
/// The output tile of the matmul kernel is TILE × TILE.
const MATMUL_TILE: u64 = 64;
/// llvmpipe's loop limiter (`LP_MAX_TGSI_LOOP_ITERATIONS` in Mesa's gallivm): on a CPU
/// adapter an invocation's loops, all of them together, end after this many iterations,
/// silently. Ops check their loop counts against it ([`WgpuBackend::check_loops`]); the
/// fused samplers cut their chains to stay under it.
pub(crate) const LLVMPIPE_LOOP_LIMIT: usize = 65_535;
/// The f32 bit pattern written into fresh outputs in poison mode (a quiet NaN).
const POISON_BITS: u32 = 0x7FC0_0000;

// ---------------------------------------------------------------------------------------
// shaders and kernels
// ---------------------------------------------------------------------------------------

/// One WGSL file of `shaders/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Shader {
    Fill,
    Binary,
    Scale,
    Unary,
    Matmul,
    Concat,
    Reduce,
    Softmax,
    LayerNorm,
    MaskedSetReduce,
    MaskedSoftmax,
    GatherRows,
    Mse,
    AdamUpdate,
    RqSpline,
    Philox,
}

impl Shader {
    fn name(self) -> &'static str {
        match self {
            Shader::Fill => "fill",
            Shader::Binary => "binary",
            Shader::Scale => "scale",
            Shader::Unary => "unary",
            Shader::Matmul => "matmul",
            Shader::Concat => "concat",
            Shader::Reduce => "reduce",
            Shader::Softmax => "softmax",
            Shader::LayerNorm => "layer_norm",
            Shader::MaskedSetReduce => "masked_set_reduce",
            Shader::MaskedSoftmax => "masked_softmax",
            Shader::GatherRows => "gather_rows",
            Shader::Mse => "mse",
            Shader::AdamUpdate => "adam_update",
            Shader::RqSpline => "rq_spline",
            Shader::Philox => "philox",
        }
    }

    fn source(self) -> &'static str {
        match self {
            Shader::Fill => include_str!("../../shaders/fill.wgsl"),
            Shader::Binary => include_str!("../../shaders/binary.wgsl"),
            Shader::Scale => include_str!("../../shaders/scale.wgsl"),
            Shader::Unary => include_str!("../../shaders/unary.wgsl"),
            Shader::Matmul => include_str!("../../shaders/matmul.wgsl"),
            Shader::Concat => include_str!("../../shaders/concat.wgsl"),
            Shader::Reduce => concat!(
                include_str!("../../shaders/workgroup_reduce.wgsl"),
                include_str!("../../shaders/reduce.wgsl")
            ),
            Shader::Softmax => concat!(
                include_str!("../../shaders/workgroup_reduce.wgsl"),
                include_str!("../../shaders/softmax.wgsl")
            ),
            Shader::LayerNorm => concat!(
                include_str!("../../shaders/workgroup_reduce.wgsl"),
                include_str!("../../shaders/layer_norm.wgsl")
            ),
            Shader::MaskedSetReduce => include_str!("../../shaders/masked_set_reduce.wgsl"),
            Shader::MaskedSoftmax => concat!(
                include_str!("../../shaders/workgroup_reduce.wgsl"),
                include_str!("../../shaders/masked_softmax.wgsl")
            ),
            Shader::GatherRows => include_str!("../../shaders/gather_rows.wgsl"),
            Shader::Mse => concat!(
                include_str!("../../shaders/workgroup_reduce.wgsl"),
                include_str!("../../shaders/mse.wgsl")
            ),
            Shader::AdamUpdate => include_str!("../../shaders/adam_update.wgsl"),
            Shader::RqSpline => include_str!("../../shaders/rq_spline.wgsl"),
            Shader::Philox => concat!(
                include_str!("../../shaders/philox.wgsl"),
                include_str!("../../shaders/philox_fill.wgsl")
            ),
        }
    }
}

/// One entry point: its file, its name, and how many read-only and read-write storage
/// buffers follow the parameter block (bindings 1..=reads, then reads+1..=reads+writes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Kernel {
    shader: Shader,
    entry: &'static str,
    reads: u32,
    writes: u32,
}

const fn kernel(shader: Shader, entry: &'static str, reads: u32, writes: u32) -> Kernel {
    Kernel {
        shader,
        entry,
        reads,
        writes,
    }
}

const K_FILL: Kernel = kernel(Shader::Fill, "fill", 0, 1);
const K_BINARY: Kernel = kernel(Shader::Binary, "binary", 2, 1);
const K_SCALE: Kernel = kernel(Shader::Scale, "scale", 1, 1);
const K_UNARY: Kernel = kernel(Shader::Unary, "unary", 1, 1);
const K_UNARY_BACKWARD: Kernel = kernel(Shader::Unary, "unary_backward", 3, 1);
const K_MATMUL: Kernel = kernel(Shader::Matmul, "matmul", 2, 1);
const K_CONCAT: Kernel = kernel(Shader::Concat, "concat", 1, 1);
const K_SPLIT: Kernel = kernel(Shader::Concat, "split", 1, 1);
const K_REDUCE_ROWS: Kernel = kernel(Shader::Reduce, "reduce_rows", 1, 1);
const K_REDUCE_ROWS_BACKWARD: Kernel = kernel(Shader::Reduce, "reduce_rows_backward", 1, 1);
const K_REDUCE_FEATURES: Kernel = kernel(Shader::Reduce, "reduce_features", 1, 1);
const K_REDUCE_FEATURES_BACKWARD: Kernel = kernel(Shader::Reduce, "reduce_features_backward", 1, 1);
const K_SOFTMAX: Kernel = kernel(Shader::Softmax, "softmax", 1, 1);
const K_SOFTMAX_BACKWARD: Kernel = kernel(Shader::Softmax, "softmax_backward", 2, 1);
const K_LOG_SOFTMAX: Kernel = kernel(Shader::Softmax, "log_softmax", 1, 1);
const K_LOG_SOFTMAX_BACKWARD: Kernel = kernel(Shader::Softmax, "log_softmax_backward", 2, 1);
const K_LOGSUMEXP: Kernel = kernel(Shader::Softmax, "logsumexp", 1, 1);
const K_LOGSUMEXP_BACKWARD: Kernel = kernel(Shader::Softmax, "logsumexp_backward", 3, 1);
const K_LAYER_NORM: Kernel = kernel(Shader::LayerNorm, "layer_norm", 3, 3);
const K_LAYER_NORM_BACKWARD: Kernel = kernel(Shader::LayerNorm, "layer_norm_backward", 5, 1);
const K_LAYER_NORM_BACKWARD_PARAMS: Kernel =
    kernel(Shader::LayerNorm, "layer_norm_backward_params", 5, 2);
const K_SET_REDUCE: Kernel = kernel(Shader::MaskedSetReduce, "masked_set_reduce", 2, 1);
const K_SET_REDUCE_BACKWARD: Kernel =
    kernel(Shader::MaskedSetReduce, "masked_set_reduce_backward", 2, 1);
const K_MASKED_SOFTMAX: Kernel = kernel(Shader::MaskedSoftmax, "masked_softmax", 2, 1);
const K_GATHER_ROWS: Kernel = kernel(Shader::GatherRows, "gather_rows", 2, 1);
const K_GATHER_ROWS_BACKWARD: Kernel = kernel(Shader::GatherRows, "gather_rows_backward", 3, 1);
const K_MSE_PARTIAL: Kernel = kernel(Shader::Mse, "mse_partial", 2, 1);
const K_MSE_FINAL: Kernel = kernel(Shader::Mse, "mse_final", 1, 1);
const K_MSE_BACKWARD: Kernel = kernel(Shader::Mse, "mse_backward", 3, 1);
const K_ADAM_UPDATE: Kernel = kernel(Shader::AdamUpdate, "adam_update", 1, 3);
const K_RQ_SPLINE: Kernel = kernel(Shader::RqSpline, "rq_spline", 4, 2);
const K_RQ_SPLINE_BACKWARD: Kernel = kernel(Shader::RqSpline, "rq_spline_backward", 6, 4);
const K_PHILOX_U32: Kernel = kernel(Shader::Philox, "philox_fill_u32", 0, 1);
const K_PHILOX_NORMAL: Kernel = kernel(Shader::Philox, "philox_fill_normal", 0, 1);

/// Elements per workgroup of `mse_partial` (the shader's CHUNK).
const MSE_CHUNK: u64 = 4096;

// ---------------------------------------------------------------------------------------
// buffers
// ---------------------------------------------------------------------------------------

/// Free buffers by capacity in bytes.
#[derive(Default)]
struct Pool {
    free: Mutex<PoolLists>,
}

#[derive(Default)]
struct PoolLists {
    lists: HashMap<u64, Vec<wgpu::Buffer>>,
    retained: u64,
}

impl Pool {
    fn take(&self, capacity: u64) -> Option<wgpu::Buffer> {
        let mut free = self.free.lock().ok()?;
        let buffer = free.lists.get_mut(&capacity)?.pop()?;
        free.retained -= capacity;
        Some(buffer)
    }

    fn give(&self, capacity: u64, buffer: wgpu::Buffer) {
        if let Ok(mut free) = self.free.lock() {
            if free.retained + capacity <= POOL_RETAIN_BYTES {
                free.retained += capacity;
                free.lists.entry(capacity).or_default().push(buffer);
            }
        }
    }
}

/// A storage buffer owned by the pool; the handle inside a tensor's [`GpuBuffer`].
/// Dropping the last tensor that holds it returns the buffer to the pool.
struct WgpuBuf {
    buffer: Option<wgpu::Buffer>,
    capacity: u64,
    pool: Weak<Pool>,
}

impl WgpuBuf {
    fn raw(&self) -> &wgpu::Buffer {
        self.buffer
            .as_ref()
            .expect("a pooled buffer is present until drop")
    }
}

impl Drop for WgpuBuf {
    fn drop(&mut self) {
        if let (Some(buffer), Some(pool)) = (self.buffer.take(), self.pool.upgrade()) {
            pool.give(self.capacity, buffer);
        }
    }
}

/// A buffer range bound to one binding of a dispatch.
#[derive(Clone, Copy)]
struct Bind<'a> {
    buffer: &'a wgpu::Buffer,
    bytes: u64,
}

impl<'a> Bind<'a> {
    fn of(buf: &'a WgpuBuf, elements: usize) -> Self {
        Bind {
            buffer: buf.raw(),
            bytes: elements as u64 * 4,
        }
    }
}

/// Capacity class of a request: powers of two up to 1 MiB, multiples of 1 MiB above, so
/// that similar sizes share buffers and repeated sizes always do.
fn size_class(bytes: u64) -> u64 {
    let bytes = bytes.max(16);
    if bytes <= 1 << 20 {
        bytes.next_power_of_two()
    } else {
        bytes.div_ceil(1 << 20) << 20
    }
}

// ---------------------------------------------------------------------------------------
// the backend
// ---------------------------------------------------------------------------------------

/// What changes between dispatches, behind one lock.
struct State {
    encoder: Option<wgpu::CommandEncoder>,
    pending: usize,
    param_slot: u64,
}

/// The wgpu op backend of one adapter (see the module docs).
pub struct WgpuBackend {
    index: usize,
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    limits: wgpu::Limits,
    matmul_bk: u32,
    param_stride: u64,
    params: wgpu::Buffer,
    modules: Mutex<HashMap<Shader, wgpu::ShaderModule>>,
    layouts: Mutex<HashMap<(u32, u32), (wgpu::BindGroupLayout, wgpu::PipelineLayout)>>,
    pipelines: Mutex<HashMap<(Shader, &'static str), wgpu::ComputePipeline>>,
    pool: Arc<Pool>,
    staging: Mutex<HashMap<u64, Vec<wgpu::Buffer>>>,
    state: Mutex<State>,
    errors: Arc<Mutex<Vec<String>>>,
    poison: AtomicBool,
}

impl std::fmt::Debug for WgpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WgpuBackend({})", self.describe())
    }
}

fn lock<'a, T>(m: &'a Mutex<T>, what: &str) -> Result<std::sync::MutexGuard<'a, T>> {
    m.lock().map_err(|_| Error::Device {
        device: "wgpu".into(),
        msg: format!("the {what} lock was poisoned by a panic in another thread"),
    })
}

impl WgpuBackend {
    /// The backend of adapter `index` (in `devices::wgpu_adapters()` order), created on
    /// first use and shared afterwards; an error when there is no such adapter or its
    /// device cannot be opened.
    pub fn shared(index: usize) -> Result<Arc<WgpuBackend>> {
        static CACHE: OnceLock<Mutex<HashMap<usize, Arc<WgpuBackend>>>> = OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        let mut cache = lock(cache, "backend cache")?;
        if let Some(b) = cache.get(&index) {
            return Ok(b.clone());
        }
        let backend = Arc::new(WgpuBackend::new(index)?);
        cache.insert(index, backend.clone());
        Ok(backend)
    }

    fn new(index: usize) -> Result<WgpuBackend> {
        let (device, queue) = crate::devices::open_wgpu_device(index)?;
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut v) = sink.lock() {
                v.push(e.to_string());
            }
        }));
        let limits = device.limits();
        // Two slabs of 64 × BK f32 in workgroup memory: BK = 32 needs 16 KiB.
        let matmul_bk = if limits.max_compute_workgroup_storage_size >= 16 * 1024 {
            32
        } else {
            16
        };
        let param_stride = (limits.min_uniform_buffer_offset_alignment as u64).max(PARAM_BYTES);
        let params = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("amortize params ring"),
            size: param_stride * PARAM_SLOTS,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let poison = std::env::var("AMORTIZE_WGPU_POISON").is_ok_and(|v| v == "1");
        Ok(WgpuBackend {
            index,
            info: device.adapter_info(),
            device,
            queue,
            limits,
            matmul_bk,
            param_stride,
            params,
            modules: Mutex::default(),
            layouts: Mutex::default(),
            pipelines: Mutex::default(),
            pool: Arc::default(),
            staging: Mutex::default(),
            state: Mutex::new(State {
                encoder: None,
                pending: 0,
                param_slot: 0,
            }),
            errors,
            poison: AtomicBool::new(poison),
        })
    }

    /// Makes every output buffer an op allocates start as NaN (for parity tests: an
    /// element the kernel does not write then fails the comparison). Off by default, on
    /// when the environment has `AMORTIZE_WGPU_POISON=1`.
    pub fn set_poison_outputs(&self, on: bool) {
        self.poison.store(on, Ordering::SeqCst);
    }

    /// The adapter index, the `n` of `Device::Wgpu(n)`.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The device, for kernels that manage their own pipelines and buffers (the fused
    /// samplers of `samplers::wgpu`).
    pub(crate) fn device(&self) -> &wgpu::Device {
        &self.device
    }

    /// The queue of [`WgpuBackend::device`].
    pub(crate) fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    /// The limits the device was opened with (the adapter's own).
    pub(crate) fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    /// The adapter's device type (`Cpu` for lavapipe), for kernels whose best shape
    /// differs between CPU and GPU adapters (the fused samplers of `samplers::wgpu`).
    pub(crate) fn device_type(&self) -> wgpu::DeviceType {
        self.info.device_type
    }

    /// The matmul tile as (rows of C, columns of C, contracted slab BK); BK is chosen from
    /// the adapter's workgroup storage limit.
    pub fn matmul_tile(&self) -> (u32, u32, u32) {
        (MATMUL_TILE as u32, MATMUL_TILE as u32, self.matmul_bk)
    }

    /// Refuses a dispatch whose invocations would loop more than llvmpipe allows.
    /// `iterations` bounds the loop iterations of one invocation, all loops together
    /// (short constant loops counted as if not unrolled); `what` names the size that
    /// drives it (formatted only for the error, so GPUs and small inputs pay nothing).
    /// GPUs have no such limit.
    fn check_loops(
        &self,
        op: &'static str,
        iterations: usize,
        what: std::fmt::Arguments,
    ) -> Result<()> {
        if self.info.device_type == wgpu::DeviceType::Cpu && iterations > LLVMPIPE_LOOP_LIMIT {
            return Err(self.err(format!(
                "{op}: {what} takes one invocation through about {iterations} loop iterations, past llvmpipe's limit of {LLVMPIPE_LOOP_LIMIT}, where it would end the loops early and return wrong numbers; use the CPU backend for inputs this large"
            )));
        }
        Ok(())
    }

    fn err(&self, msg: impl Into<String>) -> Error {
        Error::Device {
            device: Device::Wgpu(self.index).to_string(),
            msg: msg.into(),
        }
    }

    // ---- pipelines ----------------------------------------------------------------

    fn layout(&self, reads: u32, writes: u32) -> Result<wgpu::PipelineLayout> {
        let mut layouts = lock(&self.layouts, "layout cache")?;
        if let Some((_, pl)) = layouts.get(&(reads, writes)) {
            return Ok(pl.clone());
        }
        let mut entries = vec![wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        }];
        for b in 1..=reads + writes {
            entries.push(wgpu::BindGroupLayoutEntry {
                binding: b,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage {
                        read_only: b <= reads,
                    },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            });
        }
        let bgl = self
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: None,
                entries: &entries,
            });
        let pl = self
            .device
            .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: None,
                bind_group_layouts: &[Some(&bgl)],
                immediate_size: 0,
            });
        layouts.insert((reads, writes), (bgl, pl.clone()));
        Ok(pl)
    }

    fn bind_group_layout(&self, reads: u32, writes: u32) -> Result<wgpu::BindGroupLayout> {
        self.layout(reads, writes)?;
        let layouts = lock(&self.layouts, "layout cache")?;
        Ok(layouts[&(reads, writes)].0.clone())
    }

    fn module(&self, shader: Shader) -> Result<wgpu::ShaderModule> {
        let mut modules = lock(&self.modules, "shader cache")?;
        if let Some(m) = modules.get(&shader) {
            return Ok(m.clone());
        }
        let source: Cow<'static, str> = match shader {
            Shader::Matmul => Cow::Owned(shader.source().replace(
                "const BK: u32 = 16u;",
                &format!("const BK: u32 = {}u;", self.matmul_bk),
            )),
            _ => Cow::Borrowed(shader.source()),
        };
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(shader.name()),
                source: wgpu::ShaderSource::Wgsl(source),
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(self.err(format!("shaders/{}.wgsl: {e}", shader.name())));
        }
        modules.insert(shader, module.clone());
        Ok(module)
    }

    fn pipeline(&self, k: Kernel) -> Result<wgpu::ComputePipeline> {
        if let Some(p) = lock(&self.pipelines, "pipeline cache")?.get(&(k.shader, k.entry)) {
            return Ok(p.clone());
        }
        let module = self.module(k.shader)?;
        let layout = self.layout(k.reads, k.writes)?;
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(k.entry),
                layout: Some(&layout),
                module: &module,
                entry_point: Some(k.entry),
                compilation_options: Default::default(),
                cache: None,
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(self.err(format!(
                "shaders/{}.wgsl, entry point {}: {e}",
                k.shader.name(),
                k.entry
            )));
        }
        lock(&self.pipelines, "pipeline cache")?.insert((k.shader, k.entry), pipeline.clone());
        Ok(pipeline)
    }

    // ---- submission ---------------------------------------------------------------

    fn check_errors(&self) -> Result<()> {
        let mut errors = lock(&self.errors, "error list")?;
        if errors.is_empty() {
            Ok(())
        } else {
            let msg = errors.join("; ");
            errors.clear();
            Err(self.err(msg))
        }
    }

    /// Submits the pending encoder (if any) with the state lock held.
    fn flush_locked(&self, state: &mut State) -> Result<()> {
        if let Some(encoder) = state.encoder.take() {
            self.queue.submit([encoder.finish()]);
        }
        state.pending = 0;
        state.param_slot = 0;
        self.check_errors()
    }

    /// Submits every recorded dispatch. Ops call this themselves where needed; callers
    /// only need it to bound latency (e.g. before timing).
    pub fn flush(&self) -> Result<()> {
        let mut state = lock(&self.state, "queue state")?;
        self.flush_locked(&mut state)
    }

    /// Waits until the device has finished all submitted work.
    pub fn synchronize(&self) -> Result<()> {
        self.flush()?;
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| self.err(format!("waiting for the device: {e}")))?;
        self.check_errors()
    }

    /// The workgroup grid for `groups` one-dimensional workgroups, folded into y when it
    /// exceeds the per-dimension limit (shaders index `wid.y · nwg.x + wid.x`).
    fn grid(&self, groups: u64) -> Result<[u32; 3]> {
        let max = self.limits.max_compute_workgroups_per_dimension as u64;
        let x = groups.min(max);
        let y = groups.div_ceil(x.max(1));
        if y > max {
            return Err(self.err(format!(
                "{groups} workgroups exceed the adapter's grid ({max}²)"
            )));
        }
        Ok([x as u32, y as u32, 1])
    }

    /// Records one dispatch of `k` with `params` (u32 words; f32 as bits) and the buffers
    /// bound in order 1, 2, ...
    fn dispatch(&self, k: Kernel, params: &[u32], binds: &[Bind], grid: [u32; 3]) -> Result<()> {
        debug_assert_eq!(binds.len() as u32, k.reads + k.writes, "{}", k.entry);
        if grid.contains(&0) {
            return Ok(());
        }
        let pipeline = self.pipeline(k)?;
        let bgl = self.bind_group_layout(k.reads, k.writes)?;
        let mut words = [0u32; (PARAM_BYTES / 4) as usize];
        words[..params.len()].copy_from_slice(params);
        let mut state = lock(&self.state, "queue state")?;
        if state.param_slot == PARAM_SLOTS {
            self.flush_locked(&mut state)?;
        }
        let offset = state.param_slot * self.param_stride;
        state.param_slot += 1;
        self.queue
            .write_buffer(&self.params, offset, bytemuck::cast_slice(&words));
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &self.params,
                offset,
                size: wgpu::BufferSize::new(PARAM_BYTES),
            }),
        }];
        for (i, b) in binds.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry {
                binding: i as u32 + 1,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: b.buffer,
                    offset: 0,
                    size: wgpu::BufferSize::new(b.bytes.max(4)),
                }),
            });
        }
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &bgl,
            entries: &entries,
        });
        let encoder = state.encoder.get_or_insert_with(|| {
            self.device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None })
        });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(k.entry),
                timestamp_writes: None,
            });
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            pass.dispatch_workgroups(grid[0], grid[1], grid[2]);
        }
        state.pending += 1;
        if state.pending >= MAX_PENDING {
            self.flush_locked(&mut state)?;
        }
        Ok(())
    }

    /// A one-thread-per-element dispatch over `n` elements.
    fn dispatch_1d(&self, k: Kernel, params: &[u32], binds: &[Bind], n: usize) -> Result<()> {
        let grid = self.grid((n as u64).div_ceil(WG))?;
        self.dispatch(k, params, binds, grid)
    }

    // ---- buffers ------------------------------------------------------------------

    fn raw_alloc(&self, bytes: u64) -> Result<Arc<WgpuBuf>> {
        let capacity = size_class(bytes);
        let max = self
            .limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size);
        if capacity > max {
            return Err(self.err(format!(
                "a buffer of {bytes} bytes exceeds the adapter's storage binding limit of {max} bytes"
            )));
        }
        let buffer = self.pool.take(capacity).unwrap_or_else(|| {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size: capacity,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        });
        Ok(Arc::new(WgpuBuf {
            buffer: Some(buffer),
            capacity,
            pool: Arc::downgrade(&self.pool),
        }))
    }

    /// A buffer of `len` f32 for an op's output (NaN-filled in poison mode).
    fn alloc(&self, len: usize) -> Result<Arc<WgpuBuf>> {
        let buf = self.raw_alloc(len as u64 * 4)?;
        if self.poison.load(Ordering::Relaxed) && len > 0 {
            self.dispatch_1d(
                K_FILL,
                &[len as u32, POISON_BITS],
                &[Bind::of(&buf, len)],
                len,
            )?;
        }
        Ok(buf)
    }

    fn tensor(&self, buf: Arc<WgpuBuf>, shape: &[usize]) -> Tensor {
        let len = shape.iter().product();
        Tensor::from_storage(
            Storage::Wgpu {
                index: self.index,
                buffer: GpuBuffer { len, handle: buf },
            },
            shape,
        )
    }

    /// The pooled buffer of a tensor on this adapter.
    fn buf<'a>(&self, x: &'a Tensor, op: &'static str) -> Result<&'a WgpuBuf> {
        match x.storage() {
            Storage::Wgpu { index, buffer } if *index == self.index => buffer
                .handle
                .as_ref()
                .downcast_ref::<WgpuBuf>()
                .ok_or_else(|| self.err(format!("{op}: the tensor's buffer is not a wgpu buffer"))),
            _ => Err(Error::DeviceMismatch {
                op,
                lhs: Device::Wgpu(self.index).to_string(),
                rhs: x.device().to_string(),
            }),
        }
    }

    /// Copies host bytes into a new buffer. The pending encoder is submitted first: a
    /// queue write lands before any command recorded but not yet submitted, and the
    /// pooled buffer may still be read by such a command.
    fn upload_bytes(&self, bytes: &[u8]) -> Result<Arc<WgpuBuf>> {
        let buf = self.raw_alloc(bytes.len() as u64)?;
        if !bytes.is_empty() {
            let mut state = lock(&self.state, "queue state")?;
            self.flush_locked(&mut state)?;
            self.queue.write_buffer(buf.raw(), 0, bytes);
        }
        Ok(buf)
    }

    /// Reads `bytes` bytes from the start of `buffer` back to the host.
    fn download_bytes(&self, buffer: &wgpu::Buffer, bytes: u64) -> Result<Vec<u8>> {
        if bytes == 0 {
            return Ok(Vec::new());
        }
        let capacity = size_class(bytes);
        let staging = lock(&self.staging, "staging pool")?
            .get_mut(&capacity)
            .and_then(|v| v.pop())
            .unwrap_or_else(|| {
                self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("amortize staging"),
                    size: capacity,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            });
        {
            let mut state = lock(&self.state, "queue state")?;
            let encoder = state.encoder.get_or_insert_with(|| {
                self.device
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None })
            });
            encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, bytes);
            self.flush_locked(&mut state)?;
        }
        let (tx, rx) = mpsc::channel();
        staging
            .slice(..bytes)
            .map_async(wgpu::MapMode::Read, move |r| {
                let _ = tx.send(r);
            });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| self.err(format!("waiting for a read-back: {e}")))?;
        self.check_errors()?;
        rx.recv()
            .map_err(|_| self.err("the read-back was dropped"))?
            .map_err(|e| self.err(format!("mapping the read-back buffer: {e}")))?;
        let out = {
            let view = staging
                .slice(..bytes)
                .get_mapped_range()
                .map_err(|e| self.err(format!("reading the mapped buffer: {e}")))?;
            view.to_vec()
        };
        staging.unmap();
        lock(&self.staging, "staging pool")?
            .entry(capacity)
            .or_default()
            .push(staging);
        Ok(out)
    }

    /// Replaces `x`'s buffer by a private copy when another tensor shares it, so an
    /// in-place update does not change that other tensor (copy-on-write, as the CPU).
    fn make_unique(&self, x: &mut Tensor, op: &'static str) -> Result<()> {
        let shared = match x.storage() {
            Storage::Wgpu { buffer, .. } => Arc::strong_count(&buffer.handle) > 1,
            _ => false,
        };
        self.buf(x, op)?;
        if !shared {
            return Ok(());
        }
        let len = x.numel();
        let fresh = self.raw_alloc(len as u64 * 4)?;
        {
            let src = self.buf(x, op)?;
            let mut state = lock(&self.state, "queue state")?;
            let encoder = state.encoder.get_or_insert_with(|| {
                self.device
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None })
            });
            if len > 0 {
                encoder.copy_buffer_to_buffer(src.raw(), 0, fresh.raw(), 0, len as u64 * 4);
            }
        }
        *x = self.tensor(fresh, x.shape());
        Ok(())
    }

    // ---- random numbers -------------------------------------------------------------

    fn philox_params(
        seed: u64,
        stream: u32,
        step: u32,
        lane: u32,
        first: u64,
        blocks: usize,
    ) -> [u32; 8] {
        [
            seed as u32,
            (seed >> 32) as u32,
            stream,
            step,
            lane,
            first as u32,
            (first >> 32) as u32,
            blocks as u32,
        ]
    }

    /// Blocks `first_block .. first_block + blocks` of the Philox4x32-10 words of
    /// `(seed, stream, step, lane)` computed by `shaders/philox.wgsl`, four words per
    /// block: bit for bit `rng::PhiloxStream::at_step(seed, stream, step, lane).block(b)`.
    pub fn philox_fill_u32(
        &self,
        seed: u64,
        stream: u32,
        step: u32,
        lane: u32,
        first_block: u64,
        blocks: usize,
    ) -> Result<Vec<u32>> {
        let len = blocks * 4;
        let buf = self.alloc(len)?;
        let params = Self::philox_params(seed, stream, step, lane, first_block, blocks);
        self.dispatch_1d(K_PHILOX_U32, &params, &[Bind::of(&buf, len)], blocks)?;
        let bytes = self.download_bytes(buf.raw(), len as u64 * 4)?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// `4·blocks` standard normals from blocks `0..blocks` of `(seed, stream, step, lane)`
    /// by Box–Muller on word pairs (0, 1) and (2, 3) of each block: the sequence
    /// `rng::PhiloxStream::at_step(seed, stream, step, lane).fill_normal(0, 1, ..)` draws,
    /// as a wgpu tensor.
    pub fn philox_fill_normal(
        &self,
        seed: u64,
        stream: u32,
        step: u32,
        lane: u32,
        blocks: usize,
    ) -> Result<Tensor> {
        let len = blocks * 4;
        let buf = self.alloc(len)?;
        let params = Self::philox_params(seed, stream, step, lane, 0, blocks);
        self.dispatch_1d(K_PHILOX_NORMAL, &params, &[Bind::of(&buf, len)], blocks)?;
        Ok(self.tensor(buf, &[len]))
    }

    // ---- shared op bodies -------------------------------------------------------------

    /// [`WgpuBackend::check_loops`] for a kernel whose 256 threads share a row of `cols`:
    /// at most four passes over the row and two 8-step tree reductions.
    fn check_row_loops(&self, op: &'static str, cols: usize) -> Result<()> {
        self.check_loops(
            op,
            4 * cols.div_ceil(256) + 16,
            format_args!("rows of {cols}"),
        )
    }

    /// An op with one workgroup per row of `rows` (the softmax family, layer norm).
    fn row_grid(&self, rows: usize) -> Result<[u32; 3]> {
        self.grid(rows as u64)
    }

    /// A 16-column-per-workgroup grid for the column reductions.
    fn column_grid(&self, cols: usize) -> Result<[u32; 3]> {
        self.grid((cols as u64).div_ceil(16))
    }

    fn row_op(&self, k: Kernel, x: &Tensor, name: &'static str) -> Result<Tensor> {
        let xb = self.buf(x, name)?;
        let (rows, cols) = (x.rows(), x.cols());
        self.check_row_loops(name, cols)?;
        let out = self.alloc(x.numel())?;
        self.dispatch(
            k,
            &[rows as u32, cols as u32, x.numel() as u32],
            &[Bind::of(xb, x.numel()), Bind::of(&out, x.numel())],
            self.row_grid(rows)?,
        )?;
        Ok(self.tensor(out, x.shape()))
    }

    /// The bindings x, widths, heights, derivatives shared by both spline kernels.
    fn rq_spline_inputs<'a>(
        &self,
        x: &'a Tensor,
        knots: [&'a Tensor; 3],
        op: &'static str,
    ) -> Result<Vec<Bind<'a>>> {
        let mut binds = vec![Bind::of(self.buf(x, op)?, x.numel())];
        for t in knots {
            binds.push(Bind::of(self.buf(t, op)?, t.numel()));
        }
        Ok(binds)
    }

    fn row_backward(
        &self,
        k: Kernel,
        y: &Tensor,
        dy: &Tensor,
        name: &'static str,
    ) -> Result<Tensor> {
        let (yb, dyb) = (self.buf(y, name)?, self.buf(dy, name)?);
        let (rows, cols, n) = (y.rows(), y.cols(), y.numel());
        self.check_row_loops(name, cols)?;
        let out = self.alloc(n)?;
        self.dispatch(
            k,
            &[rows as u32, cols as u32, n as u32],
            &[Bind::of(yb, n), Bind::of(dyb, n), Bind::of(&out, n)],
            self.row_grid(rows)?,
        )?;
        Ok(self.tensor(out, y.shape()))
    }
}

fn f(v: f32) -> u32 {
    v.to_bits()
}

fn divisor(how: Reduction, count: usize) -> f64 {
    match how {
        Reduction::Sum => 1.0,
        Reduction::Mean => count as f64,
    }
}

fn unary_code(op: UnaryOp) -> u32 {
    UnaryOp::ALL
        .iter()
        .position(|&o| o == op)
        .expect("every UnaryOp is in ALL") as u32
}

fn binary_code(op: BinaryOp) -> u32 {
    match op {
        BinaryOp::Add => 0,
        BinaryOp::Sub => 1,
        BinaryOp::Mul => 2,
        BinaryOp::Div => 3,
    }
}

impl Backend for WgpuBackend {
    fn device(&self) -> Device {
        Device::Wgpu(self.index)
    }

    fn describe(&self) -> String {
        format!(
            "{} ({:?}, {:?}), matmul tile {}x{}x{}",
            self.info.name,
            self.info.backend,
            self.info.device_type,
            MATMUL_TILE,
            MATMUL_TILE,
            self.matmul_bk
        )
    }

    fn upload(&self, data: &[f32], shape: &[usize]) -> Result<Tensor> {
        let numel: usize = shape.iter().product();
        if numel != data.len() {
            return Err(Error::shape_because(
                "upload",
                shape,
                &[data.len()],
                "the shape's element count differs from the data length",
            ));
        }
        let buf = self.upload_bytes(bytemuck::cast_slice(data))?;
        Ok(self.tensor(buf, shape))
    }

    fn download(&self, x: &Tensor) -> Result<Vec<f32>> {
        let b = self.buf(x, "download")?;
        let bytes = self.download_bytes(b.raw(), x.numel() as u64 * 4)?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    fn fill(&self, shape: &[usize], value: f32) -> Result<Tensor> {
        let len: usize = shape.iter().product();
        let buf = self.raw_alloc(len as u64 * 4)?;
        self.dispatch_1d(K_FILL, &[len as u32, f(value)], &[Bind::of(&buf, len)], len)?;
        Ok(self.tensor(buf, shape))
    }

    fn matmul(
        &self,
        a: &Tensor,
        b: &Tensor,
        layout: MatLayout,
        dims: MatmulDims,
        out_shape: &[usize],
    ) -> Result<Tensor> {
        let (ab, bb) = (self.buf(a, "matmul")?, self.buf(b, "matmul")?);
        let MatmulDims { batch, m, k, n } = dims;
        let (a_row, a_col, b_row, b_col) = match layout {
            MatLayout::NN => (k, 1, n, 1),
            MatLayout::NT => (k, 1, 1, k),
            MatLayout::TN => (1, m, n, 1),
        };
        let out = self.alloc(batch * m * n)?;
        let max = self.limits.max_compute_workgroups_per_dimension as u64;
        let grid = [
            (n as u64).div_ceil(MATMUL_TILE),
            (m as u64).div_ceil(MATMUL_TILE),
            batch as u64,
        ];
        if grid.iter().any(|&g| g > max) {
            return Err(self.err(format!(
                "matmul: grid {grid:?} of 64×64 tiles exceeds the adapter's {max} workgroups per dimension"
            )));
        }
        // Per slab of BK: the staging loop and the BK multiply-adds; then the 4×4 store.
        let bk = self.matmul_bk as usize;
        let per_slab = (16 * bk).div_ceil(256) + bk;
        self.check_loops(
            "matmul",
            k.div_ceil(bk) * per_slab + 20,
            format_args!("k = {k}"),
        )?;
        let params = [m, k, n, a_row, a_col, m * k, b_row, b_col, k * n].map(|v| v as u32);
        self.dispatch(
            K_MATMUL,
            &params,
            &[
                Bind::of(ab, a.numel()),
                Bind::of(bb, b.numel()),
                Bind::of(&out, batch * m * n),
            ],
            grid.map(|g| g as u32),
        )?;
        Ok(self.tensor(out, out_shape))
    }

    fn binary(&self, op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let (ab, bb) = (self.buf(a, op.name())?, self.buf(b, op.name())?);
        let n = a.numel();
        let out = self.alloc(n)?;
        self.dispatch_1d(
            K_BINARY,
            &[n as u32, b.numel() as u32, binary_code(op)],
            &[Bind::of(ab, n), Bind::of(bb, b.numel()), Bind::of(&out, n)],
            n,
        )?;
        Ok(self.tensor(out, a.shape()))
    }

    fn scale(&self, x: &Tensor, s: f32) -> Result<Tensor> {
        let xb = self.buf(x, "scale")?;
        let n = x.numel();
        let out = self.alloc(n)?;
        self.dispatch_1d(
            K_SCALE,
            &[n as u32, f(s)],
            &[Bind::of(xb, n), Bind::of(&out, n)],
            n,
        )?;
        Ok(self.tensor(out, x.shape()))
    }

    fn unary(&self, op: UnaryOp, x: &Tensor) -> Result<Tensor> {
        let xb = self.buf(x, op.name())?;
        let n = x.numel();
        let out = self.alloc(n)?;
        self.dispatch_1d(
            K_UNARY,
            &[n as u32, unary_code(op)],
            &[Bind::of(xb, n), Bind::of(&out, n)],
            n,
        )?;
        Ok(self.tensor(out, x.shape()))
    }

    fn unary_backward(&self, op: UnaryOp, x: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Tensor> {
        let name = op.name();
        let (xb, yb, dyb) = (self.buf(x, name)?, self.buf(y, name)?, self.buf(dy, name)?);
        let n = x.numel();
        let out = self.alloc(n)?;
        self.dispatch_1d(
            K_UNARY_BACKWARD,
            &[n as u32, unary_code(op)],
            &[
                Bind::of(xb, n),
                Bind::of(yb, n),
                Bind::of(dyb, n),
                Bind::of(&out, n),
            ],
            n,
        )?;
        Ok(self.tensor(out, x.shape()))
    }

    fn concat(&self, parts: &[&Tensor]) -> Result<Tensor> {
        let first = parts.first().ok_or_else(|| Error::Invalid {
            op: "concat",
            msg: "no tensors to concatenate".into(),
        })?;
        let rows = first.rows();
        let total: usize = parts.iter().map(|p| p.cols()).sum();
        let mut shape = first.shape().to_vec();
        if let Some(last) = shape.last_mut() {
            *last = total;
        }
        let out = self.alloc(rows * total)?;
        let mut offset = 0;
        for part in parts {
            let pb = self.buf(part, "concat")?;
            let (width, n) = (part.cols(), part.numel());
            self.dispatch_1d(
                K_CONCAT,
                &[n as u32, width as u32, total as u32, offset as u32],
                &[Bind::of(pb, n), Bind::of(&out, rows * total)],
                n,
            )?;
            offset += width;
        }
        Ok(self.tensor(out, &shape))
    }

    fn split(&self, x: &Tensor, widths: &[usize]) -> Result<Vec<Tensor>> {
        let xb = self.buf(x, "split")?;
        let rows = x.rows();
        let total = x.cols();
        let lead = &x.shape()[..x.rank().saturating_sub(1)];
        let mut offset = 0;
        let mut outs = Vec::with_capacity(widths.len());
        for &width in widths {
            let n = rows * width;
            let out = self.alloc(n)?;
            self.dispatch_1d(
                K_SPLIT,
                &[n as u32, width as u32, total as u32, offset as u32],
                &[Bind::of(xb, x.numel()), Bind::of(&out, n)],
                n,
            )?;
            let mut shape = lead.to_vec();
            shape.push(width);
            outs.push(self.tensor(out, &shape));
            offset += width;
        }
        Ok(outs)
    }

    fn reduce_rows(&self, x: &Tensor, how: Reduction) -> Result<Tensor> {
        let xb = self.buf(x, "reduce_rows")?;
        let (rows, cols) = (x.rows(), x.cols());
        // 16 threads share a column: rows/16 each, then a 4-step tree.
        self.check_loops(
            "reduce_rows",
            rows.div_ceil(16) + 4,
            format_args!("{rows} rows"),
        )?;
        let out = self.alloc(cols)?;
        let div = divisor(how, rows) as f32;
        self.dispatch(
            K_REDUCE_ROWS,
            &[rows as u32, cols as u32, f(div), f(1.0), cols as u32],
            &[Bind::of(xb, x.numel()), Bind::of(&out, cols)],
            self.column_grid(cols)?,
        )?;
        Ok(self.tensor(out, &[cols]))
    }

    fn reduce_rows_backward(
        &self,
        dy: &Tensor,
        how: Reduction,
        out_shape: &[usize],
    ) -> Result<Tensor> {
        let db = self.buf(dy, "reduce_rows_backward")?;
        let n: usize = out_shape.iter().product();
        let cols = dy.numel();
        let rows = n / cols.max(1);
        let s = (1.0 / divisor(how, rows)) as f32;
        let out = self.alloc(n)?;
        self.dispatch_1d(
            K_REDUCE_ROWS_BACKWARD,
            &[rows as u32, cols as u32, f(1.0), f(s), n as u32],
            &[Bind::of(db, cols), Bind::of(&out, n)],
            n,
        )?;
        Ok(self.tensor(out, out_shape))
    }

    fn reduce_features(&self, x: &Tensor, how: Reduction) -> Result<Tensor> {
        let xb = self.buf(x, "reduce_features")?;
        let (rows, cols) = (x.rows(), x.cols());
        self.check_row_loops("reduce_features", cols)?;
        let shape = &x.shape()[..x.rank().saturating_sub(1)];
        let out = self.alloc(rows)?;
        let div = divisor(how, cols) as f32;
        self.dispatch(
            K_REDUCE_FEATURES,
            &[rows as u32, cols as u32, f(div), f(1.0), rows as u32],
            &[Bind::of(xb, x.numel()), Bind::of(&out, rows)],
            self.row_grid(rows)?,
        )?;
        Ok(self.tensor(out, shape))
    }

    fn reduce_features_backward(
        &self,
        dy: &Tensor,
        how: Reduction,
        out_shape: &[usize],
    ) -> Result<Tensor> {
        let db = self.buf(dy, "reduce_features_backward")?;
        let n: usize = out_shape.iter().product();
        let cols = out_shape.last().copied().unwrap_or(1);
        let s = (1.0 / divisor(how, cols)) as f32;
        let out = self.alloc(n)?;
        self.dispatch_1d(
            K_REDUCE_FEATURES_BACKWARD,
            &[dy.numel() as u32, cols as u32, f(1.0), f(s), n as u32],
            &[Bind::of(db, dy.numel()), Bind::of(&out, n)],
            n,
        )?;
        Ok(self.tensor(out, out_shape))
    }

    fn softmax(&self, x: &Tensor) -> Result<Tensor> {
        self.row_op(K_SOFTMAX, x, "softmax")
    }

    fn softmax_backward(&self, y: &Tensor, dy: &Tensor) -> Result<Tensor> {
        self.row_backward(K_SOFTMAX_BACKWARD, y, dy, "softmax_backward")
    }

    fn log_softmax(&self, x: &Tensor) -> Result<Tensor> {
        self.row_op(K_LOG_SOFTMAX, x, "log_softmax")
    }

    fn log_softmax_backward(&self, y: &Tensor, dy: &Tensor) -> Result<Tensor> {
        self.row_backward(K_LOG_SOFTMAX_BACKWARD, y, dy, "log_softmax_backward")
    }

    fn layer_norm(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        eps: f32,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let op = "layer_norm";
        let (xb, gb, bb) = (self.buf(x, op)?, self.buf(gamma, op)?, self.buf(beta, op)?);
        let (rows, cols, n) = (x.rows(), x.cols(), x.numel());
        self.check_row_loops(op, cols)?;
        let (y, mean, rstd) = (self.alloc(n)?, self.alloc(rows)?, self.alloc(rows)?);
        self.dispatch(
            K_LAYER_NORM,
            &[rows as u32, cols as u32, f(eps)],
            &[
                Bind::of(xb, n),
                Bind::of(gb, cols),
                Bind::of(bb, cols),
                Bind::of(&y, n),
                Bind::of(&mean, rows),
                Bind::of(&rstd, rows),
            ],
            self.row_grid(rows)?,
        )?;
        Ok((
            self.tensor(y, x.shape()),
            self.tensor(mean, &[rows]),
            self.tensor(rstd, &[rows]),
        ))
    }

    fn layer_norm_backward(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        mean: &Tensor,
        rstd: &Tensor,
        dy: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let op = "layer_norm_backward";
        let (xb, gb) = (self.buf(x, op)?, self.buf(gamma, op)?);
        let (mb, rb, dyb) = (self.buf(mean, op)?, self.buf(rstd, op)?, self.buf(dy, op)?);
        let (rows, cols, n) = (x.rows(), x.cols(), x.numel());
        self.check_row_loops(op, cols)?;
        // dγ, dβ: 16 threads share a column, rows/16 each, then two 4-step trees.
        self.check_loops(op, rows.div_ceil(16) + 8, format_args!("{rows} rows"))?;
        let inputs = [
            Bind::of(xb, n),
            Bind::of(gb, cols),
            Bind::of(mb, rows),
            Bind::of(rb, rows),
            Bind::of(dyb, n),
        ];
        let params = [rows as u32, cols as u32, 0];
        let dx = self.alloc(n)?;
        let mut binds = inputs.to_vec();
        binds.push(Bind::of(&dx, n));
        self.dispatch(K_LAYER_NORM_BACKWARD, &params, &binds, self.row_grid(rows)?)?;
        let (dgamma, dbeta) = (self.alloc(cols)?, self.alloc(cols)?);
        let mut binds = inputs.to_vec();
        binds.push(Bind::of(&dgamma, cols));
        binds.push(Bind::of(&dbeta, cols));
        self.dispatch(
            K_LAYER_NORM_BACKWARD_PARAMS,
            &params,
            &binds,
            self.column_grid(cols)?,
        )?;
        Ok((
            self.tensor(dx, x.shape()),
            self.tensor(dgamma, gamma.shape()),
            self.tensor(dbeta, gamma.shape()),
        ))
    }

    fn logsumexp(&self, x: &Tensor) -> Result<Tensor> {
        let xb = self.buf(x, "logsumexp")?;
        let (rows, cols) = (x.rows(), x.cols());
        self.check_row_loops("logsumexp", cols)?;
        let shape = &x.shape()[..x.rank().saturating_sub(1)];
        let out = self.alloc(rows)?;
        self.dispatch(
            K_LOGSUMEXP,
            &[rows as u32, cols as u32, rows as u32],
            &[Bind::of(xb, x.numel()), Bind::of(&out, rows)],
            self.row_grid(rows)?,
        )?;
        Ok(self.tensor(out, shape))
    }

    fn logsumexp_backward(&self, x: &Tensor, lse: &Tensor, dy: &Tensor) -> Result<Tensor> {
        let op = "logsumexp_backward";
        let (xb, lb, dyb) = (self.buf(x, op)?, self.buf(lse, op)?, self.buf(dy, op)?);
        let (rows, cols, n) = (x.rows(), x.cols(), x.numel());
        let out = self.alloc(n)?;
        self.dispatch_1d(
            K_LOGSUMEXP_BACKWARD,
            &[rows as u32, cols as u32, n as u32],
            &[
                Bind::of(xb, n),
                Bind::of(lb, rows),
                Bind::of(dyb, rows),
                Bind::of(&out, n),
            ],
            n,
        )?;
        Ok(self.tensor(out, x.shape()))
    }

    fn masked_set_reduce(&self, x: &Tensor, mask: &Tensor, how: Reduction) -> Result<Tensor> {
        let op = "masked_set_reduce";
        let (xb, mb) = (self.buf(x, op)?, self.buf(mask, op)?);
        let (batch, set, feat) = (x.shape()[0], x.shape()[1], x.shape()[2]);
        self.check_loops(op, set, format_args!("sets of {set}"))?;
        let n = batch * feat;
        let out = self.alloc(n)?;
        let mean = u32::from(how == Reduction::Mean);
        self.dispatch_1d(
            K_SET_REDUCE,
            &[batch as u32, set as u32, feat as u32, mean, n as u32],
            &[
                Bind::of(xb, x.numel()),
                Bind::of(mb, mask.numel()),
                Bind::of(&out, n),
            ],
            n,
        )?;
        Ok(self.tensor(out, &[batch, feat]))
    }

    fn masked_set_reduce_backward(
        &self,
        dy: &Tensor,
        mask: &Tensor,
        how: Reduction,
        set_size: usize,
    ) -> Result<Tensor> {
        let op = "masked_set_reduce_backward";
        let (dyb, mb) = (self.buf(dy, op)?, self.buf(mask, op)?);
        let (batch, feat) = (dy.shape()[0], dy.shape()[1]);
        self.check_loops(op, set_size, format_args!("sets of {set_size}"))?;
        let n = batch * set_size * feat;
        let out = self.alloc(n)?;
        let mean = u32::from(how == Reduction::Mean);
        self.dispatch_1d(
            K_SET_REDUCE_BACKWARD,
            &[batch as u32, set_size as u32, feat as u32, mean, n as u32],
            &[
                Bind::of(dyb, dy.numel()),
                Bind::of(mb, mask.numel()),
                Bind::of(&out, n),
            ],
            n,
        )?;
        Ok(self.tensor(out, &[batch, set_size, feat]))
    }

    fn masked_softmax(&self, x: &Tensor, mask: &Tensor, causal: bool) -> Result<Tensor> {
        let op = "masked_softmax";
        let (xb, mb) = (self.buf(x, op)?, self.buf(mask, op)?);
        let (rows, queries, keys) = (x.rows(), x.shape()[1], x.shape()[2]);
        self.check_row_loops(op, keys)?;
        let out = self.alloc(x.numel())?;
        self.dispatch(
            K_MASKED_SOFTMAX,
            &[rows as u32, queries as u32, keys as u32, u32::from(causal)],
            &[
                Bind::of(xb, x.numel()),
                Bind::of(mb, mask.numel()),
                Bind::of(&out, x.numel()),
            ],
            self.row_grid(rows)?,
        )?;
        Ok(self.tensor(out, x.shape()))
    }

    fn gather_rows(&self, x: &Tensor, indices: &[u32]) -> Result<Tensor> {
        let xb = self.buf(x, "gather_rows")?;
        let row = x.numel() / x.shape().first().copied().unwrap_or(1).max(1);
        let mut shape = x.shape().to_vec();
        shape[0] = indices.len();
        let n = indices.len() * row;
        let idx = self.upload_bytes(bytemuck::cast_slice(indices))?;
        let out = self.alloc(n)?;
        self.dispatch_1d(
            K_GATHER_ROWS,
            &[n as u32, row as u32],
            &[
                Bind::of(xb, x.numel()),
                Bind::of(&idx, indices.len()),
                Bind::of(&out, n),
            ],
            n,
        )?;
        Ok(self.tensor(out, &shape))
    }

    fn gather_rows_backward(
        &self,
        dy: &Tensor,
        indices: &[u32],
        out_shape: &[usize],
    ) -> Result<Tensor> {
        let db = self.buf(dy, "gather_rows_backward")?;
        let out_rows = out_shape.first().copied().unwrap_or(1);
        let row: usize = out_shape.iter().skip(1).product();
        // CSR inverse of the index list: the i with indices[i] = d, ascending, for each d.
        let mut offsets = vec![0u32; out_rows + 1];
        for &d in indices {
            offsets[d as usize + 1] += 1;
        }
        let most = offsets.iter().copied().max().unwrap_or(0) as usize;
        self.check_loops(
            "gather_rows_backward",
            most,
            format_args!("a row gathered {most} times"),
        )?;
        for d in 0..out_rows {
            offsets[d + 1] += offsets[d];
        }
        let mut cursor = offsets.clone();
        let mut list = vec![0u32; indices.len()];
        for (i, &d) in indices.iter().enumerate() {
            list[cursor[d as usize] as usize] = i as u32;
            cursor[d as usize] += 1;
        }
        let offsets_buf = self.upload_bytes(bytemuck::cast_slice(&offsets))?;
        let list_buf = self.upload_bytes(bytemuck::cast_slice(&list))?;
        let n = out_rows * row;
        let out = self.alloc(n)?;
        self.dispatch_1d(
            K_GATHER_ROWS_BACKWARD,
            &[n as u32, row as u32],
            &[
                Bind::of(db, dy.numel()),
                Bind::of(&offsets_buf, offsets.len()),
                Bind::of(&list_buf, list.len()),
                Bind::of(&out, n),
            ],
            n,
        )?;
        Ok(self.tensor(out, out_shape))
    }

    fn mse(&self, prediction: &Tensor, target: &Tensor) -> Result<Tensor> {
        let (pb, tb) = (self.buf(prediction, "mse")?, self.buf(target, "mse")?);
        let n = prediction.numel();
        let chunks = (n as u64).div_ceil(MSE_CHUNK) as usize;
        let partial = self.alloc(chunks)?;
        self.dispatch(
            K_MSE_PARTIAL,
            &[n as u32, n as u32],
            &[Bind::of(pb, n), Bind::of(tb, n), Bind::of(&partial, chunks)],
            self.grid(chunks as u64)?,
        )?;
        let out = self.alloc(1)?;
        self.dispatch(
            K_MSE_FINAL,
            &[chunks as u32, n as u32],
            &[Bind::of(&partial, chunks), Bind::of(&out, 1)],
            [1, 1, 1],
        )?;
        Ok(self.tensor(out, &[]))
    }

    fn mse_backward(&self, prediction: &Tensor, target: &Tensor, dy: &Tensor) -> Result<Tensor> {
        let op = "mse_backward";
        let (pb, tb, db) = (
            self.buf(prediction, op)?,
            self.buf(target, op)?,
            self.buf(dy, op)?,
        );
        let n = prediction.numel();
        let out = self.alloc(n)?;
        self.dispatch_1d(
            K_MSE_BACKWARD,
            &[n as u32, n as u32],
            &[
                Bind::of(pb, n),
                Bind::of(tb, n),
                Bind::of(db, 1),
                Bind::of(&out, n),
            ],
            n,
        )?;
        Ok(self.tensor(out, prediction.shape()))
    }

    fn adam_update(
        &self,
        param: &mut Tensor,
        grad: &Tensor,
        m: &mut Tensor,
        v: &mut Tensor,
        step: &AdamStep,
    ) -> Result<()> {
        let op = "adam_update";
        self.make_unique(param, op)?;
        self.make_unique(m, op)?;
        self.make_unique(v, op)?;
        let n = param.numel();
        let params = [
            n as u32,
            u32::from(step.decoupled),
            f(step.lr),
            f(step.beta1),
            f(step.beta2),
            f(step.eps),
            f(step.weight_decay),
            f(step.bias_correction1),
            f(step.bias_correction2),
        ];
        self.dispatch_1d(
            K_ADAM_UPDATE,
            &params,
            &[
                Bind::of(self.buf(grad, op)?, n),
                Bind::of(self.buf(param, op)?, n),
                Bind::of(self.buf(m, op)?, n),
                Bind::of(self.buf(v, op)?, n),
            ],
            n,
        )
    }

    fn rq_spline(
        &self,
        x: &Tensor,
        widths: &Tensor,
        heights: &Tensor,
        derivatives: &Tensor,
        bound: f32,
        inverse: bool,
    ) -> Result<(Tensor, Tensor)> {
        let op = "rq_spline";
        let mut binds = self.rq_spline_inputs(x, [widths, heights, derivatives], op)?;
        let n = x.numel();
        let (y, logdet) = (self.alloc(n)?, self.alloc(n)?);
        binds.extend([Bind::of(&y, n), Bind::of(&logdet, n)]);
        let params = [n as u32, widths.cols() as u32, f(bound), u32::from(inverse)];
        self.dispatch_1d(K_RQ_SPLINE, &params, &binds, n)?;
        Ok((self.tensor(y, x.shape()), self.tensor(logdet, x.shape())))
    }

    fn rq_spline_backward(
        &self,
        x: &Tensor,
        knots: [&Tensor; 3],
        bound: f32,
        inverse: bool,
        dy: &Tensor,
        dlogdet: &Tensor,
    ) -> Result<[Tensor; 4]> {
        let op = "rq_spline_backward";
        let needed = K_RQ_SPLINE_BACKWARD.reads + K_RQ_SPLINE_BACKWARD.writes;
        let allowed = self.limits.max_storage_buffers_per_shader_stage;
        if allowed < needed {
            return Err(self.err(format!(
                "{op} binds {needed} storage buffers; the adapter allows {allowed} per shader stage"
            )));
        }
        let mut binds = self.rq_spline_inputs(x, knots, op)?;
        let n = x.numel();
        let [widths, heights, derivatives] = knots;
        let (nw, nd) = (widths.numel(), derivatives.numel());
        let grads = [
            self.alloc(n)?,
            self.alloc(nw)?,
            self.alloc(nw)?,
            self.alloc(nd)?,
        ];
        binds.extend([
            Bind::of(self.buf(dy, op)?, n),
            Bind::of(self.buf(dlogdet, op)?, n),
            Bind::of(&grads[0], n),
            Bind::of(&grads[1], nw),
            Bind::of(&grads[2], nw),
            Bind::of(&grads[3], nd),
        ]);
        let params = [n as u32, widths.cols() as u32, f(bound), u32::from(inverse)];
        self.dispatch_1d(K_RQ_SPLINE_BACKWARD, &params, &binds, n)?;
        let [dx, dw, dh, dd] = grads;
        Ok([
            self.tensor(dx, x.shape()),
            self.tensor(dw, widths.shape()),
            self.tensor(dh, heights.shape()),
            self.tensor(dd, derivatives.shape()),
        ])
    }
}
