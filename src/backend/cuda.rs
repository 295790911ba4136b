//! The CUDA backend: every op of [`Backend`] as one of our own kernels in `kernels/*.cu`,
//! compiled by NVRTC and launched through cudarc's driver API.
//!
//! * **Sources.** Each op family is one file, `kernels/NAME.cu`, named like its function in
//!   `src/backend/cpu.rs` (the reference it must match, contract 2). The files are embedded
//!   with `include_str!` ([`KERNELS`]); the headers ([`HEADERS`]: `philox.cuh`,
//!   `block_reduce.cuh`, `score_sampler.cuh`) are pasted in place of their `#include` lines
//!   by [`expand_includes`], because NVRTC cannot read them from disk at run time.
//! * **Compilation.** A module is compiled the first time one of its kernels is launched on
//!   a device, for that device's compute capability (`compute_XY`, clamped to what the
//!   loaded NVRTC supports), and cached in memory per device. The PTX is also cached on
//!   disk (see [`ptx_cache_dir`]) under a name holding a hash of the expanded source and
//!   the compile options, written to a temporary name and renamed, so a second process
//!   loads it instead of recompiling. A cached file the driver rejects is recompiled.
//! * **Memory.** Outputs come from a caching allocator: freed buffers go back to a free
//!   list keyed by their length, and the next request of that length reuses one, so a
//!   training or sampling loop that repeats the same shapes stops calling `cuMemAlloc`
//!   after its first iteration. [`CudaBackend::trim_pool`] gives the cached memory back.
//! * **Streams.** Everything runs on the context's default stream, in issue order, so a
//!   buffer returned to the pool may be handed to the next op at once. cudarc's per-buffer
//!   event tracking (only needed with several streams) is switched off.
//! * **Determinism.** Every reduction has a fixed order (see `kernels/block_reduce.cuh`);
//!   no float atomics write a result. `gather_rows_backward` groups the indices on the host
//!   so each output row is summed by one thread in index order.
//! * **Parity tests** turn on [`CudaBackend::set_poison_outputs`], which fills every fresh
//!   output with NaN before the kernel that should overwrite it runs.
//! * **Matmul precision.** Matrix products are exact f32 (`kernels/matmul.cu`, within 1e-4
//!   of the CPU reference) unless asked otherwise: [`CudaBackend::set_matmul_precision`]
//!   with [`MatmulPrecision::Tf32`] switches every later product on that device to TF32
//!   tensor cores (`kernels/matmul_tf32.cu`: inputs rounded to 10 mantissa bits, f32
//!   accumulation, error within 2e-3 of the product of the row's and the column's norms),
//!   and [`CudaBackend::matmul_with_precision`] picks the precision for one product. TF32
//!   needs compute capability 8.0 or newer; asking for it on an older device is an error,
//!   never a silent f32 fallback.
//!
//! Asking for a CUDA device that is not there is an error naming the reason (no driver
//! library, no device with that ordinal, no NVRTC to compile kernels), never a CPU fallback.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, LaunchConfig, PushKernelArg,
};
use cudarc::nvrtc::{CompileOptions, Ptx};

use super::{AdamStep, Backend, BinaryOp, MatLayout, MatmulDims, Reduction, UnaryOp};
use crate::devices;
use crate::error::{Error, Result};
use crate::tensor::{Device, GpuBuffer, Storage, Tensor};

/// One kernel source file: its name (the file is `kernels/NAME.cu`), its text, and the
/// `extern "C"` kernels the backend launches from it.
#[derive(Clone, Copy, Debug)]
pub struct KernelSource {
    /// File stem, also the module's cache key.
    pub name: &'static str,
    /// The file's text, before include expansion.
    pub source: &'static str,
    /// The kernel entry points the backend looks up in the compiled module.
    pub entries: &'static [&'static str],
}

macro_rules! kernel {
    ($name:literal, [$($entry:literal),* $(,)?]) => {
        KernelSource {
            name: $name,
            source: include_str!(concat!("../../kernels/", $name, ".cu")),
            entries: &[$($entry),*],
        }
    };
}

/// Every kernel file the backend uses, in `kernels/` order. The compile test checks that
/// this list and the directory agree.
pub const KERNELS: &[KernelSource] = &[
    kernel!("adam_update", ["adam_update"]),
    kernel!(
        "binary",
        ["binary_add", "binary_sub", "binary_mul", "binary_div"]
    ),
    kernel!("concat", ["concat_part", "split_part"]),
    kernel!("fill", ["fill"]),
    kernel!("gather_rows", ["gather_rows", "gather_rows_backward"]),
    kernel!(
        "layer_norm",
        [
            "layer_norm",
            "layer_norm_backward_dx",
            "layer_norm_backward_params"
        ]
    ),
    kernel!("logsumexp", ["logsumexp", "logsumexp_backward"]),
    kernel!(
        "masked_set_reduce",
        [
            "masked_set_weight",
            "masked_set_reduce",
            "masked_set_reduce_backward"
        ]
    ),
    kernel!("masked_softmax", ["masked_softmax"]),
    kernel!("matmul", ["matmul_nn", "matmul_nt", "matmul_tn"]),
    kernel!(
        "matmul_tf32",
        ["matmul_tf32_nn", "matmul_tf32_nt", "matmul_tf32_tn"]
    ),
    kernel!("mse", ["mse_partial", "mse_finish", "mse_backward"]),
    kernel!("philox_fill", ["philox_fill"]),
    kernel!(
        "reduce",
        [
            "reduce_rows",
            "reduce_rows_backward",
            "reduce_features",
            "reduce_features_backward"
        ]
    ),
    kernel!("rq_spline", ["rq_spline", "rq_spline_backward"]),
    kernel!("sample_diffusion", ["sample_diffusion"]),
    kernel!("sample_langevin", ["sample_langevin"]),
    kernel!("scale", ["scale"]),
    kernel!(
        "softmax",
        [
            "softmax",
            "softmax_backward",
            "log_softmax",
            "log_softmax_backward"
        ]
    ),
    kernel!(
        "unary",
        [
            "unary_relu",
            "unary_gelu",
            "unary_silu",
            "unary_tanh",
            "unary_sigmoid",
            "unary_softplus",
            "unary_exp",
            "unary_log",
            "unary_backward_relu",
            "unary_backward_gelu",
            "unary_backward_silu",
            "unary_backward_tanh",
            "unary_backward_sigmoid",
            "unary_backward_softplus",
            "unary_backward_exp",
            "unary_backward_log"
        ]
    ),
];

/// The headers kernel files may `#include "NAME"`, embedded.
pub const HEADERS: &[(&str, &str)] = &[
    ("philox.cuh", include_str!("../../kernels/philox.cuh")),
    (
        "block_reduce.cuh",
        include_str!("../../kernels/block_reduce.cuh"),
    ),
    (
        "score_sampler.cuh",
        include_str!("../../kernels/score_sampler.cuh"),
    ),
];

/// The embedded source of kernel file `name`.
pub fn kernel(name: &str) -> Result<&'static KernelSource> {
    KERNELS
        .iter()
        .find(|k| k.name == name)
        .ok_or_else(|| Error::invalid("cuda kernel", format!("no kernel file {name}.cu")))
}

/// `source` with every `#include "NAME"` line replaced by the text `header(NAME)` returns
/// (each header once; `#pragma once` lines dropped). An include that `header` cannot
/// resolve is an error: NVRTC has no file system to find it on.
pub fn expand_includes(source: &str, header: impl Fn(&str) -> Option<String>) -> Result<String> {
    fn go(
        text: &str,
        header: &dyn Fn(&str) -> Option<String>,
        seen: &mut Vec<String>,
        out: &mut String,
    ) -> Result<()> {
        for line in text.lines() {
            let trimmed = line.trim_start();
            if trimmed.starts_with("#pragma once") {
                continue;
            }
            if let Some(rest) = trimmed.strip_prefix("#include") {
                let name = rest
                    .trim()
                    .trim_matches(|c| c == '"' || c == '<' || c == '>');
                if seen.iter().any(|s| s == name) {
                    continue;
                }
                let body = header(name).ok_or_else(|| {
                    Error::invalid(
                        "cuda kernel",
                        format!("#include \"{name}\": not a kernels/ header (NVRTC sees no files)"),
                    )
                })?;
                seen.push(name.to_string());
                go(&body, header, seen, out)?;
                continue;
            }
            out.push_str(line);
            out.push('\n');
        }
        Ok(())
    }
    let mut out = String::with_capacity(source.len() * 2);
    go(source, &header, &mut Vec::new(), &mut out)?;
    Ok(out)
}

/// The embedded header `name`, for [`expand_includes`].
pub fn embedded_header(name: &str) -> Option<String> {
    HEADERS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| text.to_string())
}

/// The complete NVRTC input of embedded kernel file `name` (headers pasted in).
pub fn kernel_source(name: &str) -> Result<String> {
    expand_includes(kernel(name)?.source, embedded_header)
}

/// NVRTC options for a virtual architecture such as `compute_80`: IEEE division and square
/// root, no flush to zero, FMA contraction on (the CPU reference is within tolerance of
/// either choice; contraction is what every CUDA compiler does by default).
pub fn compile_options(arch: &str) -> Vec<String> {
    vec![
        format!("--gpu-architecture={arch}"),
        "--ftz=false".into(),
        "--prec-div=true".into(),
        "--prec-sqrt=true".into(),
        "--fmad=true".into(),
        "--std=c++17".into(),
    ]
}

/// Compiles already-expanded CUDA source to PTX for `arch` (e.g. `compute_80`). Errors
/// carry NVRTC's log; a missing NVRTC library is an error, not a panic.
pub fn compile_ptx(name: &str, expanded: &str, arch: &str) -> Result<String> {
    if !devices::nvrtc_present() {
        return Err(Error::invalid(
            "nvrtc",
            format!(
                "cannot compile kernels/{name}.cu: no NVRTC library (libnvrtc.so) on the library \
                 path; install the nvidia-cuda-nvrtc-cu12 wheel or the CUDA toolkit and add its \
                 lib folder to LD_LIBRARY_PATH"
            ),
        ));
    }
    let opts = CompileOptions {
        options: compile_options(arch),
        name: Some(format!("{name}.cu")),
        ..Default::default()
    };
    let src = expanded.to_string();
    let result = std::panic::catch_unwind(move || cudarc::nvrtc::compile_ptx_with_opts(src, opts))
        .map_err(|_| Error::invalid("nvrtc", format!("NVRTC panicked compiling {name}.cu")))?;
    match result {
        Ok(ptx) => Ok(ptx.to_src()),
        Err(cudarc::nvrtc::CompileError::CompileError { nvrtc, log, .. }) => Err(Error::invalid(
            "nvrtc",
            format!(
                "kernels/{name}.cu failed to compile for {arch} ({nvrtc:?}):\n{}",
                log.to_string_lossy()
            ),
        )),
        Err(e) => Err(Error::invalid("nvrtc", format!("kernels/{name}.cu: {e}"))),
    }
}

/// What ptxas reports (`-v`) for one function of a kernel file assembled for a real
/// architecture: an `extern "C"` entry or a device function it calls (`__noinline__`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KernelResources {
    /// The function's name (mangled, for device functions).
    pub function: String,
    /// Whether this is an entry point (else a device function).
    pub entry: bool,
    /// Registers per thread (entries only).
    pub registers: Option<u32>,
    /// Static shared memory in bytes (entries only; 0 when ptxas names none).
    pub shared_bytes: u32,
    /// Bytes of stack frame per thread.
    pub stack_bytes: u32,
    /// Bytes of register spill stores and loads per thread.
    pub spill_stores: u32,
    /// See `spill_stores`.
    pub spill_loads: u32,
}

/// Assembles kernel file `name` for real architecture `arch` (e.g. `sm_90`) through NVRTC,
/// which runs ptxas, and returns what ptxas reports per function: registers, shared memory,
/// stack and spills. Static facts of the compiled code, for occupancy and spill checks
/// without a GPU. Errors as [`compile_ptx`], with NVRTC's log.
pub fn ptxas_resources(name: &str, arch: &str) -> Result<Vec<KernelResources>> {
    use cudarc::nvrtc::{result, sys};
    if !devices::nvrtc_present() {
        return Err(Error::invalid(
            "nvrtc",
            "no NVRTC library on the library path",
        ));
    }
    let source = std::ffi::CString::new(kernel_source(name)?)
        .map_err(|_| Error::invalid("nvrtc", format!("kernels/{name}.cu holds a NUL byte")))?;
    let mut options = compile_options(arch);
    options.push("--ptxas-options=-v".into());
    let fail = |e: &dyn std::fmt::Display| Error::invalid("nvrtc", format!("{name}.cu: {e}"));
    let prog = result::create_program(&source, None).map_err(|e| fail(&e))?;
    // SAFETY: `prog` was just created; it is destroyed once, below, after its last use.
    let compiled = unsafe { result::compile_program(prog, &options) };
    let log = unsafe { result::get_program_log(prog) };
    let mut cubin_bytes = 0usize;
    // SAFETY: writes one usize; `prog` is live.
    let cubin = unsafe { sys::nvrtcGetCUBINSize(prog, &mut cubin_bytes) }.result();
    unsafe { result::destroy_program(prog) }.map_err(|e| fail(&e))?;
    let log: String = log
        .map_err(|e| fail(&e))?
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8 as char)
        .collect();
    if compiled.is_err() || cubin.is_err() || cubin_bytes == 0 {
        return Err(Error::invalid(
            "nvrtc",
            format!("kernels/{name}.cu failed to assemble for {arch}:\n{log}"),
        ));
    }
    Ok(parse_ptxas_log(&log))
}

/// The functions of a `ptxas -v` log, in its order.
fn parse_ptxas_log(log: &str) -> Vec<KernelResources> {
    // The number before `unit` in `text`, e.g. 472 in "472 bytes stack frame".
    let number_before = |text: &str, unit: &str| -> Option<u32> {
        let at = text.find(unit)?;
        text[..at].split_whitespace().last()?.parse().ok()
    };
    let mut entries: Vec<String> = Vec::new();
    let mut out: Vec<KernelResources> = Vec::new();
    for line in log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            entries.extend(rest.split('\'').next().map(str::to_string));
        } else if let Some(rest) = line.split("Function properties for ").nth(1) {
            let function = rest.trim().to_string();
            out.push(KernelResources {
                entry: entries.contains(&function),
                function,
                ..Default::default()
            });
        } else if let Some(f) = out.last_mut() {
            if line.contains("bytes stack frame") {
                f.stack_bytes = number_before(line, "bytes stack frame").unwrap_or(0);
                f.spill_stores = number_before(line, "bytes spill stores").unwrap_or(0);
                f.spill_loads = number_before(line, "bytes spill loads").unwrap_or(0);
            } else if line.contains("Used ") && line.contains(" registers") {
                f.registers = number_before(line, " registers");
                f.shared_bytes = number_before(line, " bytes smem").unwrap_or(0);
            }
        }
    }
    out
}

/// The virtual architectures the loaded NVRTC can target, as `major*10 + minor`.
pub fn nvrtc_supported_archs() -> Result<Vec<i32>> {
    if !devices::nvrtc_present() {
        return Err(Error::invalid(
            "nvrtc",
            "no NVRTC library on the library path",
        ));
    }
    let archs = std::panic::catch_unwind(|| {
        let mut count = 0;
        // SAFETY: writes one int.
        unsafe { cudarc::nvrtc::sys::nvrtcGetNumSupportedArchs(&mut count) }
            .result()
            .ok()?;
        let mut archs = vec![0; count.max(0) as usize];
        // SAFETY: `archs` holds the `count` ints NVRTC writes.
        unsafe { cudarc::nvrtc::sys::nvrtcGetSupportedArchs(archs.as_mut_ptr()) }
            .result()
            .ok()?;
        Some(archs)
    });
    match archs {
        Ok(Some(a)) => Ok(a),
        _ => Err(Error::invalid(
            "nvrtc",
            "nvrtcGetSupportedArchs failed (NVRTC older than 11.2?)",
        )),
    }
}

/// FNV-1a, 64 bit: a hash that is stable across Rust versions and processes, for cache
/// file names.
fn fnv1a64(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Where compiled PTX is cached: `$AMORTIZE_PTX_CACHE` if set (an empty value turns the disk
/// cache off), else `$XDG_CACHE_HOME/amortize/ptx`, else `$HOME/.cache/amortize/ptx`.
pub fn ptx_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("AMORTIZE_PTX_CACHE") {
        return (!dir.is_empty()).then(|| PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("amortize").join("ptx"));
    }
    std::env::var_os("HOME")
        .filter(|d| !d.is_empty())
        .map(|home| {
            PathBuf::from(home)
                .join(".cache")
                .join("amortize")
                .join("ptx")
        })
}

/// The cache file for a module: `<name>-<hash of source and options>-<arch>.ptx`.
fn ptx_cache_file(dir: &Path, name: &str, expanded: &str, arch: &str) -> PathBuf {
    let options = compile_options(arch).join(" ");
    let hash = fnv1a64(&[expanded.as_bytes(), options.as_bytes()]);
    dir.join(format!("{name}-{hash:016x}-{arch}.ptx"))
}

/// Writes `text` to `path` through a temporary file in the same folder and a rename, so a
/// concurrent reader sees either nothing or the whole file.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp = path.with_extension(format!("tmp.{}.{nanos}", std::process::id()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

// ---------------------------------------------------------------------------------------
// device memory
// ---------------------------------------------------------------------------------------

/// Free device buffers of one device, keyed by element count.
#[derive(Default)]
struct Pool {
    free: Mutex<HashMap<usize, Vec<CudaSlice<f32>>>>,
}

/// A device buffer of `len` f32 (at least one element is allocated, so an empty tensor
/// still has a valid pointer). Dropping it returns the memory to its device's pool.
pub struct DeviceBuffer {
    slice: Option<CudaSlice<f32>>,
    len: usize,
    pool: Arc<Pool>,
}

impl DeviceBuffer {
    /// Number of f32 elements the tensor uses.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer holds no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The underlying cudarc slice (its length may exceed [`Self::len`] by one for empty
    /// buffers).
    pub fn slice(&self) -> &CudaSlice<f32> {
        self.slice
            .as_ref()
            .expect("a live DeviceBuffer holds its slice")
    }

    fn slice_mut(&mut self) -> &mut CudaSlice<f32> {
        self.slice
            .as_mut()
            .expect("a live DeviceBuffer holds its slice")
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        if let Some(slice) = self.slice.take() {
            if let Ok(mut free) = self.pool.free.lock() {
                free.entry(slice.len()).or_default().push(slice);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// the backend
// ---------------------------------------------------------------------------------------

/// How the CUDA backend computes matrix products.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum MatmulPrecision {
    /// f32 fused multiply-adds (`kernels/matmul.cu`): within 1e-4 of the CPU reference. The
    /// default.
    #[default]
    F32,
    /// TF32 tensor cores (`kernels/matmul_tf32.cu`): inputs rounded to TF32 (10 mantissa
    /// bits), products accumulated in f32. Each element is within 2e-3·|A' row|·|B' column|
    /// of the exact product for k ≤ 4096 (the kernel's header derives the bound). Needs
    /// compute capability 8.0 or newer.
    Tf32,
}

/// Threads per block of elementwise and row kernels (REDUCE_THREADS in block_reduce.cuh).
const THREADS: u32 = 256;
/// Most blocks an elementwise or row kernel is launched with; kernels stride beyond.
const MAX_BLOCKS: usize = 1 << 16;

/// The CUDA backend of one device.
pub struct CudaBackend {
    ordinal: usize,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    name: String,
    compute_capability: (i32, i32),
    arch: String,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    functions: Mutex<HashMap<&'static str, CudaFunction>>,
    pool: Arc<Pool>,
    poison: AtomicBool,
    tf32: AtomicBool,
}

impl std::fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaBackend({})", self.describe())
    }
}

fn device_err(ordinal: usize, msg: impl Into<String>) -> Error {
    Error::Device {
        device: Device::Cuda(ordinal).to_string(),
        msg: msg.into(),
    }
}

fn to_i32(v: usize, op: &'static str, what: &str) -> Result<i32> {
    i32::try_from(v).map_err(|_| {
        Error::invalid(
            op,
            format!("{what} = {v} exceeds the 2^31 - 1 elements a CUDA kernel indexes"),
        )
    })
}

fn grid_for(n: usize) -> u32 {
    n.div_ceil(THREADS as usize).clamp(1, MAX_BLOCKS) as u32
}

fn linear(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (grid_for(n), 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn per_row(rows: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows.clamp(1, MAX_BLOCKS) as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn per_column(cols: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (cols.div_ceil(32).max(1) as u32, 1, 1),
        block_dim: (32, 8, 1),
        shared_mem_bytes: 0,
    }
}

/// The number of partial sums `mse` uses for `n` elements: a function of `n` only, so
/// the summation order does not depend on the device.
fn mse_blocks(n: usize) -> usize {
    n.div_ceil(2048).clamp(1, 1024)
}

impl CudaBackend {
    /// The backward of a sum or mean reduction: kernel `op` spreads `dy` over
    /// `out_shape` (`cols` columns, as the kernel indexes it), dividing by `count` for a mean.
    fn spread_backward(
        &self,
        op: &'static str,
        dy: &Tensor,
        out_shape: &[usize],
        cols: usize,
        count: usize,
        how: Reduction,
    ) -> Result<Tensor> {
        let db = self.buf(dy, op)?;
        let n: usize = out_shape.iter().product();
        let s = match how {
            Reduction::Sum => 1.0f32,
            Reduction::Mean => (1.0 / count as f64) as f32,
        };
        let out = self.alloc(n)?;
        if n > 0 {
            let (ni, ci) = (to_i32(n, op, "elements")?, to_i32(cols, op, "cols")?);
            let f = self.function("reduce", op)?;
            let mut l = self.stream.launch_builder(&f);
            l.arg(db.slice()).arg(out.slice()).arg(&ni).arg(&ci).arg(&s);
            // SAFETY: dy holds n/count elements (the reduced shape), out holds n.
            unsafe { l.launch(linear(n)) }.map_err(|e| self.err(op, e))?;
        }
        Ok(self.wrap(out, out_shape))
    }

    /// The process-wide backend of device `ordinal`, created on first use; an error saying
    /// why when there is no such device.
    pub fn shared(ordinal: usize) -> Result<Arc<CudaBackend>> {
        static BACKENDS: OnceLock<Mutex<HashMap<usize, Arc<CudaBackend>>>> = OnceLock::new();
        let map = BACKENDS.get_or_init(Default::default);
        let mut map = map
            .lock()
            .map_err(|_| device_err(ordinal, "backend cache poisoned by a panic"))?;
        if let Some(b) = map.get(&ordinal) {
            return Ok(b.clone());
        }
        let backend = Arc::new(CudaBackend::open(ordinal)?);
        map.insert(ordinal, backend.clone());
        Ok(backend)
    }

    fn open(ordinal: usize) -> Result<CudaBackend> {
        if !devices::cuda_driver_present() {
            return Err(device_err(
                ordinal,
                "no CUDA driver library (libcuda.so) on this machine",
            ));
        }
        let count = std::panic::catch_unwind(CudaContext::device_count)
            .map_err(|_| device_err(ordinal, "the CUDA driver panicked in cuDeviceGetCount"))?
            .map_err(|e| device_err(ordinal, format!("cuInit failed: {e}")))?;
        if ordinal >= count.max(0) as usize {
            return Err(device_err(
                ordinal,
                format!("no CUDA device {ordinal}: this machine has {count} CUDA device(s)"),
            ));
        }
        let ctx = devices::open_cuda_device(ordinal)?;
        let err = |e: cudarc::driver::DriverError| device_err(ordinal, e.to_string());
        let name = ctx.name().map_err(err)?;
        let compute_capability = ctx.compute_capability().map_err(err)?;
        let cc = compute_capability.0 * 10 + compute_capability.1;
        // Compile for the device's own virtual architecture when NVRTC knows it, else for
        // the newest one NVRTC has below it (the driver JIT-compiles PTX forward).
        let target = match nvrtc_supported_archs() {
            Ok(archs) => archs.into_iter().filter(|&a| a <= cc).max().unwrap_or(cc),
            Err(_) => cc,
        };
        // SAFETY: this backend uses one stream only, so cudarc's per-buffer events (which
        // order work across streams) are not needed; see the module docs.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.default_stream();
        Ok(CudaBackend {
            ordinal,
            ctx,
            stream,
            name,
            compute_capability,
            arch: format!("compute_{target}"),
            modules: Mutex::new(HashMap::new()),
            functions: Mutex::new(HashMap::new()),
            pool: Arc::new(Pool::default()),
            poison: AtomicBool::new(false),
            tf32: AtomicBool::new(false),
        })
    }

    /// The device's compute capability `(major, minor)`.
    pub fn compute_capability(&self) -> (i32, i32) {
        self.compute_capability
    }

    /// The NVRTC target the kernels are compiled for, e.g. `compute_90`.
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// When on, every output buffer is filled with NaN before the kernel that computes it
    /// runs, so an element a kernel forgets to write fails a parity test instead of
    /// silently holding a previous op's value. Off by default (it costs one launch per
    /// output).
    pub fn set_poison_outputs(&self, on: bool) {
        self.poison.store(on, Ordering::SeqCst);
    }

    /// Sets how every later matrix product on this device is computed (the default is
    /// [`MatmulPrecision::F32`]). [`MatmulPrecision::Tf32`] on a device older than compute
    /// capability 8.0 is an error and leaves the setting unchanged.
    pub fn set_matmul_precision(&self, precision: MatmulPrecision) -> Result<()> {
        self.check_precision(precision)?;
        self.tf32
            .store(precision == MatmulPrecision::Tf32, Ordering::SeqCst);
        Ok(())
    }

    /// How matrix products are computed now (see [`Self::set_matmul_precision`]).
    pub fn matmul_precision(&self) -> MatmulPrecision {
        if self.tf32.load(Ordering::SeqCst) {
            MatmulPrecision::Tf32
        } else {
            MatmulPrecision::F32
        }
    }

    /// [`Backend::matmul`] at `precision` whatever [`Self::set_matmul_precision`] chose: the
    /// kernels of `kernels/matmul.cu` for [`MatmulPrecision::F32`], of
    /// `kernels/matmul_tf32.cu` for [`MatmulPrecision::Tf32`] (an error before compute
    /// capability 8.0). Both take the same arguments and launch the same grid of 256-thread
    /// blocks, one per 64 × 64 tile of C.
    pub fn matmul_with_precision(
        &self,
        a: &Tensor,
        b: &Tensor,
        layout: MatLayout,
        dims: MatmulDims,
        out_shape: &[usize],
        precision: MatmulPrecision,
    ) -> Result<Tensor> {
        let op = "matmul";
        self.check_precision(precision)?;
        let (ab, bb) = (self.buf(a, op)?, self.buf(b, op)?);
        let MatmulDims { batch, m, k, n } = dims;
        let out = self.alloc(batch * m * n)?;
        if batch * m * n > 0 {
            for (what, v) in [
                ("batch·m·k", batch * m * k),
                ("batch·k·n", batch * k * n),
                ("batch·m·n", batch * m * n),
            ] {
                to_i32(v, op, what)?;
            }
            let (file, entry) = match (precision, layout) {
                (MatmulPrecision::F32, MatLayout::NN) => ("matmul", "matmul_nn"),
                (MatmulPrecision::F32, MatLayout::NT) => ("matmul", "matmul_nt"),
                (MatmulPrecision::F32, MatLayout::TN) => ("matmul", "matmul_tn"),
                (MatmulPrecision::Tf32, MatLayout::NN) => ("matmul_tf32", "matmul_tf32_nn"),
                (MatmulPrecision::Tf32, MatLayout::NT) => ("matmul_tf32", "matmul_tf32_nt"),
                (MatmulPrecision::Tf32, MatLayout::TN) => ("matmul_tf32", "matmul_tf32_tn"),
            };
            let grid_y = n.div_ceil(64);
            if grid_y > 65_535 {
                return Err(Error::invalid(
                    op,
                    format!("n = {n} needs more than 65535 column tiles"),
                ));
            }
            let cfg = LaunchConfig {
                grid_dim: (
                    m.div_ceil(64) as u32,
                    grid_y as u32,
                    batch.min(65_535) as u32,
                ),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            let (bi, mi, ki, ni) = (batch as i32, m as i32, k as i32, n as i32);
            let f = self.function(file, entry)?;
            let mut l = self.stream.launch_builder(&f);
            l.arg(ab.slice())
                .arg(bb.slice())
                .arg(out.slice())
                .arg(&bi)
                .arg(&mi)
                .arg(&ki)
                .arg(&ni);
            // SAFETY: A holds batch·m·k, B batch·k·n and C batch·m·n elements (validated).
            unsafe { l.launch(cfg) }.map_err(|e| self.err(entry, e))?;
        }
        Ok(self.wrap(out, out_shape))
    }

    /// An error when this device cannot compute matrix products at `precision`.
    fn check_precision(&self, precision: MatmulPrecision) -> Result<()> {
        let (major, minor) = self.compute_capability;
        if precision == MatmulPrecision::Tf32 && major < 8 {
            return Err(self.err(
                "matmul",
                format!(
                    "TF32 tensor-core matmul needs compute capability 8.0 or newer; {} is \
                     {major}.{minor} (use MatmulPrecision::F32)",
                    self.name
                ),
            ));
        }
        Ok(())
    }

    /// Frees every cached device buffer that no tensor uses.
    pub fn trim_pool(&self) {
        if let Ok(mut free) = self.pool.free.lock() {
            free.clear();
        }
    }

    /// Waits until every launched kernel has finished (for timing; downloads already wait).
    pub fn synchronize(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(|e| self.err("synchronize", e))
    }

    /// The stream every launch of this backend goes to (the fused samplers launch on it).
    pub(crate) fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    pub(crate) fn err(&self, op: &str, e: impl std::fmt::Display) -> Error {
        device_err(self.ordinal, format!("{op}: {e}"))
    }

    /// Loads (compiling or reading the disk cache as needed) the module of kernel file
    /// `name` on this device.
    fn module(&self, name: &'static str) -> Result<Arc<CudaModule>> {
        let mut modules = self
            .modules
            .lock()
            .map_err(|_| self.err(name, "module cache poisoned"))?;
        if let Some(m) = modules.get(name) {
            return Ok(m.clone());
        }
        let expanded = kernel_source(name)?;
        let cache = ptx_cache_dir().map(|d| ptx_cache_file(&d, name, &expanded, &self.arch));
        let mut module = None;
        if let Some(path) = &cache {
            if let Some(text) = std::fs::read_to_string(path)
                .ok()
                .filter(|t| !t.contains('\0'))
            {
                // A file the driver rejects (truncated, or PTX newer than the driver) is
                // recompiled below.
                module = self.ctx.load_module(Ptx::from_src(text)).ok();
            }
        }
        let module = match module {
            Some(m) => m,
            None => {
                let ptx = compile_ptx(name, &expanded, &self.arch)?;
                let m = self
                    .ctx
                    .load_module(Ptx::from_src(ptx.clone()))
                    .map_err(|e| self.err(&format!("loading kernels/{name}.cu"), e))?;
                if let Some(path) = &cache {
                    // The disk cache is an optimisation: failing to write it is not an error.
                    let _ = write_atomically(path, &ptx);
                }
                m
            }
        };
        modules.insert(name, module.clone());
        Ok(module)
    }

    /// Kernel `entry` of kernel file `file`.
    pub(crate) fn function(&self, file: &'static str, entry: &'static str) -> Result<CudaFunction> {
        if let Some(f) = self
            .functions
            .lock()
            .ok()
            .and_then(|f| f.get(entry).cloned())
        {
            return Ok(f);
        }
        let module = self.module(file)?;
        let f = module
            .load_function(entry)
            .map_err(|e| self.err(&format!("kernel {entry} in kernels/{file}.cu"), e))?;
        if let Ok(mut fs) = self.functions.lock() {
            fs.insert(entry, f.clone());
        }
        Ok(f)
    }

    /// A device buffer of `len` f32 from the pool (or newly allocated), poisoned with NaN
    /// when poisoning is on.
    fn alloc(&self, len: usize) -> Result<DeviceBuffer> {
        let cap = len.max(1);
        let reused = self
            .pool
            .free
            .lock()
            .ok()
            .and_then(|mut free| free.get_mut(&cap).and_then(|v| v.pop()));
        let slice = match reused {
            Some(s) => s,
            // SAFETY: every kernel writes all of its output (the parity tests check this
            // with poisoning); uninitialized memory is never read.
            None => unsafe { self.stream.alloc::<f32>(cap) }
                .map_err(|e| self.err(&format!("allocating {cap} f32"), e))?,
        };
        let buf = DeviceBuffer {
            slice: Some(slice),
            len,
            pool: self.pool.clone(),
        };
        if self.poison.load(Ordering::Relaxed) && len > 0 {
            self.launch_fill(&buf, f32::NAN)?;
        }
        Ok(buf)
    }

    fn launch_fill(&self, buf: &DeviceBuffer, value: f32) -> Result<()> {
        let n = to_i32(buf.len, "fill", "elements")?;
        let f = self.function("fill", "fill")?;
        let mut l = self.stream.launch_builder(&f);
        l.arg(buf.slice()).arg(&value).arg(&n);
        // SAFETY: fill(out, value, n) writes out[0..n], which the buffer holds.
        unsafe { l.launch(linear(buf.len)) }.map_err(|e| self.err("fill", e))?;
        Ok(())
    }

    /// Host data into a new pooled buffer.
    fn upload_buffer(&self, data: &[f32]) -> Result<DeviceBuffer> {
        let mut buf = self.alloc(data.len())?;
        if !data.is_empty() {
            let mut view = buf.slice_mut().slice_mut(0..data.len());
            self.stream
                .memcpy_htod(data, &mut view)
                .map_err(|e| self.err("upload", e))?;
        }
        Ok(buf)
    }

    /// u32 host data into a pooled buffer (stored as the same bits in an f32 buffer; the
    /// kernels read it as `unsigned int*`).
    fn upload_u32(&self, data: &[u32]) -> Result<DeviceBuffer> {
        let bits: Vec<f32> = data.iter().map(|&v| f32::from_bits(v)).collect();
        self.upload_buffer(&bits)
    }

    fn download_buffer(&self, buf: &DeviceBuffer) -> Result<Vec<f32>> {
        let mut out = vec![0.0f32; buf.len];
        if buf.len > 0 {
            self.stream
                .memcpy_dtoh(&buf.slice().slice(0..buf.len), &mut out)
                .map_err(|e| self.err("download", e))?;
            // An asynchronous copy into pageable memory is not guaranteed to have finished
            // when the call returns: wait for it (this also surfaces kernel faults).
            self.synchronize()?;
        }
        Ok(out)
    }

    fn wrap(&self, buf: DeviceBuffer, shape: &[usize]) -> Tensor {
        Tensor::from_storage(
            Storage::Cuda {
                ordinal: self.ordinal,
                buffer: GpuBuffer {
                    len: buf.len,
                    handle: Arc::new(buf),
                },
            },
            shape,
        )
    }

    /// The device buffer of a tensor on this device.
    fn buf<'a>(&self, x: &'a Tensor, op: &'static str) -> Result<&'a DeviceBuffer> {
        match x.storage() {
            Storage::Cuda { ordinal, buffer } if *ordinal == self.ordinal => buffer
                .handle
                .downcast_ref::<DeviceBuffer>()
                .ok_or_else(|| Error::invalid(op, "CUDA tensor without a CUDA backend buffer")),
            _ => Err(Error::DeviceMismatch {
                op,
                lhs: Device::Cuda(self.ordinal).to_string(),
                rhs: x.device().to_string(),
            }),
        }
    }

    /// The buffer of `x` for writing in place, copied first if another tensor shares it
    /// (copy-on-write, as CPU tensors do).
    fn buf_mut<'a>(&self, x: &'a mut Tensor, op: &'static str) -> Result<&'a mut DeviceBuffer> {
        self.buf(x, op)?;
        let shared = match x.storage() {
            Storage::Cuda { buffer, .. } => Arc::strong_count(&buffer.handle) > 1,
            _ => false,
        };
        if shared {
            let copy = {
                let src = self.buf(x, op)?;
                let mut dst = self.alloc(src.len)?;
                if src.len > 0 {
                    self.stream
                        .memcpy_dtod(
                            &src.slice().slice(0..src.len),
                            &mut dst.slice_mut().slice_mut(0..src.len),
                        )
                        .map_err(|e| self.err(op, e))?;
                }
                dst
            };
            let shape = x.shape().to_vec();
            *x = self.wrap(copy, &shape);
        }
        match x.storage_mut() {
            Storage::Cuda { buffer, .. } => Arc::get_mut(&mut buffer.handle)
                .and_then(|h| h.downcast_mut::<DeviceBuffer>())
                .ok_or_else(|| Error::invalid(op, "CUDA buffer is shared after copy-on-write")),
            _ => Err(Error::invalid(op, "not a CUDA tensor")),
        }
    }

    /// Philox4x32-10 words, uniforms and Box–Muller normals of blocks `0..blocks` of lanes
    /// `0..lanes` for counter `(stream, step, lane, block)` under `seed`, computed by
    /// `kernels/philox_fill.cu`, each `4·lanes·blocks` long (lane-major, then block): the
    /// test hook that checks `kernels/philox.cuh` against `src/rng.rs`.
    pub fn philox_fill(
        &self,
        seed: u64,
        stream: u32,
        step: u32,
        lanes: usize,
        blocks: usize,
    ) -> Result<(Vec<u32>, Vec<f32>, Vec<f32>)> {
        let op = "philox_fill";
        let threads = lanes * blocks;
        let n = to_i32(threads * 4, op, "words")?;
        let lanes_i = to_i32(lanes, op, "lanes")?;
        let blocks_i = to_i32(blocks, op, "blocks")?;
        let words = self.alloc(threads * 4)?;
        let uniforms = self.alloc(threads * 4)?;
        let normals = self.alloc(threads * 4)?;
        let (lo, hi) = (seed as u32, (seed >> 32) as u32);
        if n > 0 {
            let f = self.function("philox_fill", "philox_fill")?;
            let mut l = self.stream.launch_builder(&f);
            l.arg(words.slice())
                .arg(uniforms.slice())
                .arg(normals.slice())
                .arg(&lo)
                .arg(&hi)
                .arg(&stream)
                .arg(&step)
                .arg(&lanes_i)
                .arg(&blocks_i);
            // SAFETY: each of the three buffers holds 4·lanes·blocks elements.
            unsafe { l.launch(linear(threads)) }.map_err(|e| self.err(op, e))?;
        }
        let words = self
            .download_buffer(&words)?
            .into_iter()
            .map(f32::to_bits)
            .collect();
        Ok((
            words,
            self.download_buffer(&uniforms)?,
            self.download_buffer(&normals)?,
        ))
    }

    /// Launches an elementwise kernel `entry(inputs..., out, n)`.
    fn elementwise(
        &self,
        file: &'static str,
        entry: &'static str,
        inputs: &[&DeviceBuffer],
        n: usize,
        shape: &[usize],
    ) -> Result<Tensor> {
        let out = self.alloc(n)?;
        if n > 0 {
            let ni = to_i32(n, entry, "elements")?;
            let f = self.function(file, entry)?;
            let mut l = self.stream.launch_builder(&f);
            for b in inputs {
                l.arg(b.slice());
            }
            l.arg(out.slice()).arg(&ni);
            // SAFETY: the kernel reads n elements of each input and writes n of `out`;
            // crate::ops validated that inputs hold n elements.
            unsafe { l.launch(linear(n)) }.map_err(|e| self.err(entry, e))?;
        }
        Ok(self.wrap(out, shape))
    }

    /// Launches a row kernel `entry(inputs..., outputs..., rows, cols)` with one block per
    /// row; returns the outputs.
    fn row_kernel(
        &self,
        file: &'static str,
        entry: &'static str,
        inputs: &[&DeviceBuffer],
        out_lens: &[usize],
        rows: usize,
        cols: usize,
    ) -> Result<Vec<DeviceBuffer>> {
        let outs = out_lens
            .iter()
            .map(|&len| self.alloc(len))
            .collect::<Result<Vec<_>>>()?;
        if rows > 0 && cols > 0 {
            let (ri, ci) = (to_i32(rows, entry, "rows")?, to_i32(cols, entry, "cols")?);
            to_i32(rows * cols, entry, "elements")?;
            let f = self.function(file, entry)?;
            let mut l = self.stream.launch_builder(&f);
            for b in inputs {
                l.arg(b.slice());
            }
            for o in &outs {
                l.arg(o.slice());
            }
            l.arg(&ri).arg(&ci);
            // SAFETY: row kernels read and write rows·cols (or rows) elements, which the
            // validated inputs and the outputs allocated above hold.
            unsafe { l.launch(per_row(rows)) }.map_err(|e| self.err(entry, e))?;
        } else {
            // Empty rows: a mean/sum over zero columns; match the CPU on the host.
            for o in &outs {
                if o.len > 0 {
                    self.launch_fill(o, 0.0)?;
                }
            }
        }
        Ok(outs)
    }
}

impl Backend for CudaBackend {
    fn device(&self) -> Device {
        Device::Cuda(self.ordinal)
    }

    fn describe(&self) -> String {
        let (major, minor) = self.compute_capability;
        format!(
            "CUDA backend on cuda:{} ({}, compute capability {major}.{minor}, kernels built for {})",
            self.ordinal, self.name, self.arch
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
        let buf = self.upload_buffer(data)?;
        Ok(self.wrap(buf, shape))
    }

    fn download(&self, x: &Tensor) -> Result<Vec<f32>> {
        self.download_buffer(self.buf(x, "download")?)
    }

    fn fill(&self, shape: &[usize], value: f32) -> Result<Tensor> {
        let buf = self.alloc(shape.iter().product())?;
        if buf.len > 0 {
            self.launch_fill(&buf, value)?;
        }
        Ok(self.wrap(buf, shape))
    }

    fn matmul(
        &self,
        a: &Tensor,
        b: &Tensor,
        layout: MatLayout,
        dims: MatmulDims,
        out_shape: &[usize],
    ) -> Result<Tensor> {
        self.matmul_with_precision(a, b, layout, dims, out_shape, self.matmul_precision())
    }

    fn binary(&self, op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let name = op.name();
        let entry = match op {
            BinaryOp::Add => "binary_add",
            BinaryOp::Sub => "binary_sub",
            BinaryOp::Mul => "binary_mul",
            BinaryOp::Div => "binary_div",
        };
        let (ab, bb) = (self.buf(a, name)?, self.buf(b, name)?);
        let n = a.numel();
        let out = self.alloc(n)?;
        if n > 0 {
            let ni = to_i32(n, entry, "elements")?;
            let bn = to_i32(b.numel().max(1), entry, "elements")?;
            let f = self.function("binary", entry)?;
            let mut l = self.stream.launch_builder(&f);
            l.arg(ab.slice())
                .arg(bb.slice())
                .arg(out.slice())
                .arg(&ni)
                .arg(&bn);
            // SAFETY: a and out hold n elements, b holds bn (n or one row).
            unsafe { l.launch(linear(n)) }.map_err(|e| self.err(entry, e))?;
        }
        Ok(self.wrap(out, a.shape()))
    }

    fn scale(&self, x: &Tensor, s: f32) -> Result<Tensor> {
        let xb = self.buf(x, "scale")?;
        let n = x.numel();
        let out = self.alloc(n)?;
        if n > 0 {
            let ni = to_i32(n, "scale", "elements")?;
            let f = self.function("scale", "scale")?;
            let mut l = self.stream.launch_builder(&f);
            l.arg(xb.slice()).arg(&s).arg(out.slice()).arg(&ni);
            // SAFETY: x and out hold n elements.
            unsafe { l.launch(linear(n)) }.map_err(|e| self.err("scale", e))?;
        }
        Ok(self.wrap(out, x.shape()))
    }

    fn unary(&self, op: UnaryOp, x: &Tensor) -> Result<Tensor> {
        let entry = match op {
            UnaryOp::Relu => "unary_relu",
            UnaryOp::Gelu => "unary_gelu",
            UnaryOp::Silu => "unary_silu",
            UnaryOp::Tanh => "unary_tanh",
            UnaryOp::Sigmoid => "unary_sigmoid",
            UnaryOp::Softplus => "unary_softplus",
            UnaryOp::Exp => "unary_exp",
            UnaryOp::Log => "unary_log",
        };
        let xb = self.buf(x, op.name())?;
        self.elementwise("unary", entry, &[xb], x.numel(), x.shape())
    }

    fn unary_backward(&self, op: UnaryOp, x: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Tensor> {
        let entry = match op {
            UnaryOp::Relu => "unary_backward_relu",
            UnaryOp::Gelu => "unary_backward_gelu",
            UnaryOp::Silu => "unary_backward_silu",
            UnaryOp::Tanh => "unary_backward_tanh",
            UnaryOp::Sigmoid => "unary_backward_sigmoid",
            UnaryOp::Softplus => "unary_backward_softplus",
            UnaryOp::Exp => "unary_backward_exp",
            UnaryOp::Log => "unary_backward_log",
        };
        let name = op.name();
        let bufs = [self.buf(x, name)?, self.buf(y, name)?, self.buf(dy, name)?];
        self.elementwise("unary", entry, &bufs, x.numel(), x.shape())
    }

    fn concat(&self, parts: &[&Tensor]) -> Result<Tensor> {
        let op = "concat";
        let rows = parts[0].rows();
        let total: usize = parts.iter().map(|p| p.cols()).sum();
        let mut shape = parts[0].shape().to_vec();
        *shape.last_mut().expect("validated rank >= 1") = total;
        let out = self.alloc(rows * total)?;
        let (ri, ti) = (to_i32(rows, op, "rows")?, to_i32(total, op, "cols")?);
        to_i32(rows * total, op, "elements")?;
        let mut offset = 0usize;
        for p in parts {
            let width = p.cols();
            if rows * width > 0 {
                let pb = self.buf(p, op)?;
                let (wi, oi) = (width as i32, offset as i32);
                let f = self.function("concat", "concat_part")?;
                let mut l = self.stream.launch_builder(&f);
                l.arg(pb.slice())
                    .arg(out.slice())
                    .arg(&ri)
                    .arg(&wi)
                    .arg(&ti)
                    .arg(&oi);
                // SAFETY: the part holds rows·width elements; out holds rows·total.
                unsafe { l.launch(linear(rows * width)) }.map_err(|e| self.err(op, e))?;
            }
            offset += width;
        }
        Ok(self.wrap(out, &shape))
    }

    fn split(&self, x: &Tensor, widths: &[usize]) -> Result<Vec<Tensor>> {
        let op = "split";
        let xb = self.buf(x, op)?;
        let rows = x.rows();
        let total: usize = widths.iter().sum();
        let (ri, ti) = (to_i32(rows, op, "rows")?, to_i32(total, op, "cols")?);
        to_i32(rows * total, op, "elements")?;
        let lead = &x.shape()[..x.rank() - 1];
        let mut offset = 0usize;
        let mut outs = Vec::with_capacity(widths.len());
        for &width in widths {
            let out = self.alloc(rows * width)?;
            if rows * width > 0 {
                let (wi, oi) = (width as i32, offset as i32);
                let f = self.function("concat", "split_part")?;
                let mut l = self.stream.launch_builder(&f);
                l.arg(xb.slice())
                    .arg(out.slice())
                    .arg(&ri)
                    .arg(&wi)
                    .arg(&ti)
                    .arg(&oi);
                // SAFETY: x holds rows·total elements; out holds rows·width.
                unsafe { l.launch(linear(rows * width)) }.map_err(|e| self.err(op, e))?;
            }
            offset += width;
            let mut shape = lead.to_vec();
            shape.push(width);
            outs.push(self.wrap(out, &shape));
        }
        Ok(outs)
    }

    fn reduce_rows(&self, x: &Tensor, how: Reduction) -> Result<Tensor> {
        let op = "reduce_rows";
        let xb = self.buf(x, op)?;
        let (rows, cols) = (x.rows(), x.cols());
        let out = self.alloc(cols)?;
        if cols > 0 {
            let (ri, ci) = (to_i32(rows, op, "rows")?, to_i32(cols, op, "cols")?);
            to_i32(rows * cols, op, "elements")?;
            let mean = i32::from(how == Reduction::Mean);
            let f = self.function("reduce", op)?;
            let mut l = self.stream.launch_builder(&f);
            l.arg(xb.slice())
                .arg(out.slice())
                .arg(&ri)
                .arg(&ci)
                .arg(&mean);
            // SAFETY: x holds rows·cols elements, out holds cols.
            unsafe { l.launch(per_column(cols)) }.map_err(|e| self.err(op, e))?;
        }
        Ok(self.wrap(out, &[cols]))
    }

    fn reduce_rows_backward(
        &self,
        dy: &Tensor,
        how: Reduction,
        out_shape: &[usize],
    ) -> Result<Tensor> {
        let cols = dy.numel();
        let rows = out_shape.iter().product::<usize>() / cols.max(1);
        self.spread_backward("reduce_rows_backward", dy, out_shape, cols, rows, how)
    }

    fn reduce_features(&self, x: &Tensor, how: Reduction) -> Result<Tensor> {
        let op = "reduce_features";
        let xb = self.buf(x, op)?;
        let (rows, cols) = (x.rows(), x.cols());
        let shape = &x.shape()[..x.rank().saturating_sub(1)];
        let out = self.alloc(rows)?;
        if rows > 0 {
            if cols == 0 {
                // Σ over nothing is 0; a mean over nothing is 0/0, as on the CPU.
                let v = match how {
                    Reduction::Sum => 0.0,
                    Reduction::Mean => f32::NAN,
                };
                self.launch_fill(&out, v)?;
            } else {
                let (ri, ci) = (to_i32(rows, op, "rows")?, to_i32(cols, op, "cols")?);
                to_i32(rows * cols, op, "elements")?;
                let mean = i32::from(how == Reduction::Mean);
                let f = self.function("reduce", op)?;
                let mut l = self.stream.launch_builder(&f);
                l.arg(xb.slice())
                    .arg(out.slice())
                    .arg(&ri)
                    .arg(&ci)
                    .arg(&mean);
                // SAFETY: x holds rows·cols elements, out holds rows.
                unsafe { l.launch(per_row(rows)) }.map_err(|e| self.err(op, e))?;
            }
        }
        Ok(self.wrap(out, shape))
    }

    fn reduce_features_backward(
        &self,
        dy: &Tensor,
        how: Reduction,
        out_shape: &[usize],
    ) -> Result<Tensor> {
        let cols = out_shape.last().copied().unwrap_or(1);
        self.spread_backward("reduce_features_backward", dy, out_shape, cols, cols, how)
    }

    fn softmax(&self, x: &Tensor) -> Result<Tensor> {
        let xb = self.buf(x, "softmax")?;
        let mut outs = self.row_kernel(
            "softmax",
            "softmax",
            &[xb],
            &[x.numel()],
            x.rows(),
            x.cols(),
        )?;
        Ok(self.wrap(outs.remove(0), x.shape()))
    }

    fn softmax_backward(&self, y: &Tensor, dy: &Tensor) -> Result<Tensor> {
        let op = "softmax_backward";
        let bufs = [self.buf(y, op)?, self.buf(dy, op)?];
        let mut outs = self.row_kernel("softmax", op, &bufs, &[y.numel()], y.rows(), y.cols())?;
        Ok(self.wrap(outs.remove(0), y.shape()))
    }

    fn log_softmax(&self, x: &Tensor) -> Result<Tensor> {
        let op = "log_softmax";
        let xb = self.buf(x, op)?;
        let mut outs = self.row_kernel("softmax", op, &[xb], &[x.numel()], x.rows(), x.cols())?;
        Ok(self.wrap(outs.remove(0), x.shape()))
    }

    fn log_softmax_backward(&self, y: &Tensor, dy: &Tensor) -> Result<Tensor> {
        let op = "log_softmax_backward";
        let bufs = [self.buf(y, op)?, self.buf(dy, op)?];
        let mut outs = self.row_kernel("softmax", op, &bufs, &[y.numel()], y.rows(), y.cols())?;
        Ok(self.wrap(outs.remove(0), y.shape()))
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
        let (rows, cols) = (x.rows(), x.cols());
        let y = self.alloc(rows * cols)?;
        let mean = self.alloc(rows)?;
        let rstd = self.alloc(rows)?;
        if rows > 0 && cols > 0 {
            let (ri, ci) = (to_i32(rows, op, "rows")?, to_i32(cols, op, "cols")?);
            to_i32(rows * cols, op, "elements")?;
            let f = self.function("layer_norm", op)?;
            let mut l = self.stream.launch_builder(&f);
            l.arg(xb.slice())
                .arg(gb.slice())
                .arg(bb.slice())
                .arg(y.slice())
                .arg(mean.slice())
                .arg(rstd.slice())
                .arg(&ri)
                .arg(&ci)
                .arg(&eps);
            // SAFETY: x and y hold rows·cols elements, gamma and beta cols, mean and rstd rows.
            unsafe { l.launch(per_row(rows)) }.map_err(|e| self.err(op, e))?;
        } else if rows > 0 {
            self.launch_fill(&mean, f32::NAN)?;
            self.launch_fill(&rstd, f32::NAN)?;
        }
        Ok((
            self.wrap(y, x.shape()),
            self.wrap(mean, &[rows]),
            self.wrap(rstd, &[rows]),
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
        let (mb, rb, db) = (self.buf(mean, op)?, self.buf(rstd, op)?, self.buf(dy, op)?);
        let (rows, cols) = (x.rows(), x.cols());
        let dx = self.alloc(rows * cols)?;
        let dgamma = self.alloc(cols)?;
        let dbeta = self.alloc(cols)?;
        if cols > 0 {
            let (ri, ci) = (to_i32(rows, op, "rows")?, to_i32(cols, op, "cols")?);
            to_i32(rows * cols, op, "elements")?;
            if rows > 0 {
                let f = self.function("layer_norm", "layer_norm_backward_dx")?;
                let mut l = self.stream.launch_builder(&f);
                l.arg(xb.slice())
                    .arg(gb.slice())
                    .arg(mb.slice())
                    .arg(rb.slice())
                    .arg(db.slice())
                    .arg(dx.slice())
                    .arg(&ri)
                    .arg(&ci);
                // SAFETY: x, dy and dx hold rows·cols elements, gamma cols, mean and rstd rows.
                unsafe { l.launch(per_row(rows)) }.map_err(|e| self.err(op, e))?;
            }
            let f = self.function("layer_norm", "layer_norm_backward_params")?;
            let mut l = self.stream.launch_builder(&f);
            l.arg(xb.slice())
                .arg(mb.slice())
                .arg(rb.slice())
                .arg(db.slice())
                .arg(dgamma.slice())
                .arg(dbeta.slice())
                .arg(&ri)
                .arg(&ci);
            // SAFETY: as above; dgamma and dbeta hold cols elements.
            unsafe { l.launch(per_column(cols)) }.map_err(|e| self.err(op, e))?;
        }
        Ok((
            self.wrap(dx, x.shape()),
            self.wrap(dgamma, gamma.shape()),
            self.wrap(dbeta, gamma.shape()),
        ))
    }

    fn logsumexp(&self, x: &Tensor) -> Result<Tensor> {
        let op = "logsumexp";
        let xb = self.buf(x, op)?;
        let shape = &x.shape()[..x.rank().saturating_sub(1)];
        let (rows, cols) = (x.rows(), x.cols());
        let out = if cols == 0 {
            let out = self.alloc(rows)?;
            if rows > 0 {
                self.launch_fill(&out, f32::NEG_INFINITY)?;
            }
            out
        } else {
            self.row_kernel("logsumexp", op, &[xb], &[rows], rows, cols)?
                .remove(0)
        };
        Ok(self.wrap(out, shape))
    }

    fn logsumexp_backward(&self, x: &Tensor, lse: &Tensor, dy: &Tensor) -> Result<Tensor> {
        let op = "logsumexp_backward";
        let (xb, lb, db) = (self.buf(x, op)?, self.buf(lse, op)?, self.buf(dy, op)?);
        let n = x.numel();
        let out = self.alloc(n)?;
        if n > 0 {
            let (ni, ci) = (to_i32(n, op, "elements")?, to_i32(x.cols(), op, "cols")?);
            let f = self.function("logsumexp", op)?;
            let mut l = self.stream.launch_builder(&f);
            l.arg(xb.slice())
                .arg(lb.slice())
                .arg(db.slice())
                .arg(out.slice())
                .arg(&ni)
                .arg(&ci);
            // SAFETY: x and out hold n elements, lse and dy n/cols.
            unsafe { l.launch(linear(n)) }.map_err(|e| self.err(op, e))?;
        }
        Ok(self.wrap(out, x.shape()))
    }

    fn masked_set_reduce(&self, x: &Tensor, mask: &Tensor, how: Reduction) -> Result<Tensor> {
        let op = "masked_set_reduce";
        let (xb, mb) = (self.buf(x, op)?, self.buf(mask, op)?);
        let (batch, set, feat) = (x.shape()[0], x.shape()[1], x.shape()[2]);
        let out = self.alloc(batch * feat)?;
        if batch * feat > 0 {
            let w = self.set_weights(mb, batch, set, how)?;
            let (bi, si, fi) = (batch as i32, set as i32, feat as i32);
            to_i32(batch * set * feat, op, "elements")?;
            let f = self.function("masked_set_reduce", op)?;
            let mut l = self.stream.launch_builder(&f);
            l.arg(xb.slice())
                .arg(mb.slice())
                .arg(w.slice())
                .arg(out.slice())
                .arg(&bi)
                .arg(&si)
                .arg(&fi);
            // SAFETY: x holds batch·set·feat, mask batch·set, w batch, out batch·feat.
            unsafe { l.launch(linear(batch * feat)) }.map_err(|e| self.err(op, e))?;
        }
        Ok(self.wrap(out, &[batch, feat]))
    }

    fn masked_set_reduce_backward(
        &self,
        dy: &Tensor,
        mask: &Tensor,
        how: Reduction,
        set_size: usize,
    ) -> Result<Tensor> {
        let op = "masked_set_reduce_backward";
        let (db, mb) = (self.buf(dy, op)?, self.buf(mask, op)?);
        let (batch, feat) = (dy.shape()[0], dy.shape()[1]);
        let n = batch * set_size * feat;
        let out = self.alloc(n)?;
        if n > 0 {
            let w = self.set_weights(mb, batch, set_size, how)?;
            to_i32(n, op, "elements")?;
            let (bi, si, fi) = (batch as i32, set_size as i32, feat as i32);
            let f = self.function("masked_set_reduce", op)?;
            let mut l = self.stream.launch_builder(&f);
            l.arg(db.slice())
                .arg(mb.slice())
                .arg(w.slice())
                .arg(out.slice())
                .arg(&bi)
                .arg(&si)
                .arg(&fi);
            // SAFETY: dy holds batch·feat, mask batch·set, w batch, out batch·set·feat.
            unsafe { l.launch(linear(n)) }.map_err(|e| self.err(op, e))?;
        }
        Ok(self.wrap(out, &[batch, set_size, feat]))
    }

    fn masked_softmax(&self, x: &Tensor, mask: &Tensor, causal: bool) -> Result<Tensor> {
        let op = "masked_softmax";
        let (xb, mb) = (self.buf(x, op)?, self.buf(mask, op)?);
        let (rows, queries, keys) = (x.rows(), x.shape()[1], x.shape()[2]);
        let out = self.alloc(x.numel())?;
        if x.numel() > 0 {
            to_i32(x.numel(), op, "elements")?;
            let (ri, qi, ki) = (rows as i32, queries as i32, keys as i32);
            let causal = i32::from(causal);
            let f = self.function(op, op)?;
            let mut l = self.stream.launch_builder(&f);
            l.arg(xb.slice())
                .arg(mb.slice())
                .arg(out.slice())
                .arg(&ri)
                .arg(&qi)
                .arg(&ki)
                .arg(&causal);
            // SAFETY: x and out hold rows·keys elements, mask (rows/queries)·keys.
            unsafe { l.launch(per_row(rows)) }.map_err(|e| self.err(op, e))?;
        }
        Ok(self.wrap(out, x.shape()))
    }

    fn gather_rows(&self, x: &Tensor, indices: &[u32]) -> Result<Tensor> {
        let op = "gather_rows";
        let xb = self.buf(x, op)?;
        let row = x.numel() / x.shape()[0].max(1);
        let mut shape = x.shape().to_vec();
        shape[0] = indices.len();
        let n = indices.len() * row;
        let out = self.alloc(n)?;
        if n > 0 {
            let idx = self.upload_u32(indices)?;
            let (ci, wi) = (
                to_i32(indices.len(), op, "indices")?,
                to_i32(row, op, "row")?,
            );
            to_i32(n, op, "elements")?;
            let f = self.function("gather_rows", op)?;
            let mut l = self.stream.launch_builder(&f);
            l.arg(xb.slice())
                .arg(idx.slice())
                .arg(out.slice())
                .arg(&ci)
                .arg(&wi);
            // SAFETY: indices are in range (validated by crate::ops); out holds count·row.
            unsafe { l.launch(linear(n)) }.map_err(|e| self.err(op, e))?;
        }
        Ok(self.wrap(out, &shape))
    }

    fn gather_rows_backward(
        &self,
        dy: &Tensor,
        indices: &[u32],
        out_shape: &[usize],
    ) -> Result<Tensor> {
        let op = "gather_rows_backward";
        let db = self.buf(dy, op)?;
        let out_rows = out_shape.first().copied().unwrap_or(1);
        let row: usize = out_shape.iter().skip(1).product();
        let n = out_rows * row;
        let out = self.alloc(n)?;
        if n > 0 {
            // CSR grouping of the positions by destination row, ascending within a row.
            let mut offsets = vec![0u32; out_rows + 1];
            for &i in indices {
                offsets[i as usize + 1] += 1;
            }
            for r in 0..out_rows {
                offsets[r + 1] += offsets[r];
            }
            let mut cursor = offsets.clone();
            let mut order = vec![0u32; indices.len().max(1)];
            for (pos, &i) in indices.iter().enumerate() {
                order[cursor[i as usize] as usize] = pos as u32;
                cursor[i as usize] += 1;
            }
            let offsets_b = self.upload_u32(&offsets)?;
            let order_b = self.upload_u32(&order)?;
            let (ri, wi) = (to_i32(out_rows, op, "rows")?, to_i32(row, op, "row")?);
            to_i32(n, op, "elements")?;
            to_i32(indices.len() * row, op, "elements of dy")?;
            let f = self.function("gather_rows", op)?;
            let mut l = self.stream.launch_builder(&f);
            l.arg(db.slice())
                .arg(offsets_b.slice())
                .arg(order_b.slice())
                .arg(out.slice())
                .arg(&ri)
                .arg(&wi);
            // SAFETY: offsets holds out_rows + 1 entries, order indexes rows of dy.
            unsafe { l.launch(linear(n)) }.map_err(|e| self.err(op, e))?;
        }
        Ok(self.wrap(out, out_shape))
    }

    fn mse(&self, prediction: &Tensor, target: &Tensor) -> Result<Tensor> {
        let op = "mse";
        let (pb, tb) = (self.buf(prediction, op)?, self.buf(target, op)?);
        let n = prediction.numel();
        let ni = to_i32(n, op, "elements")?;
        let blocks = mse_blocks(n);
        let partials = self.alloc(blocks)?;
        let out = self.alloc(1)?;
        let f = self.function("mse", "mse_partial")?;
        let mut l = self.stream.launch_builder(&f);
        l.arg(pb.slice())
            .arg(tb.slice())
            .arg(partials.slice())
            .arg(&ni);
        let cfg = LaunchConfig {
            grid_dim: (blocks as u32, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: p and t hold n elements; partials holds `blocks`.
        unsafe { l.launch(cfg) }.map_err(|e| self.err(op, e))?;
        let bi = blocks as i32;
        let f = self.function("mse", "mse_finish")?;
        let mut l = self.stream.launch_builder(&f);
        l.arg(partials.slice()).arg(out.slice()).arg(&bi).arg(&ni);
        // SAFETY: partials holds `blocks` elements, out one.
        unsafe { l.launch(per_row(1)) }.map_err(|e| self.err(op, e))?;
        Ok(self.wrap(out, &[]))
    }

    fn mse_backward(&self, prediction: &Tensor, target: &Tensor, dy: &Tensor) -> Result<Tensor> {
        let op = "mse_backward";
        let bufs = [
            self.buf(prediction, op)?,
            self.buf(target, op)?,
            self.buf(dy, op)?,
        ];
        self.elementwise("mse", op, &bufs, prediction.numel(), prediction.shape())
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
        let n = param.numel();
        if n == 0 {
            return Ok(());
        }
        let ni = to_i32(n, op, "elements")?;
        let gb = self.buf(grad, op)?;
        let pb = self.buf_mut(param, op)?;
        let mb = self.buf_mut(m, op)?;
        let vb = self.buf_mut(v, op)?;
        let decoupled = i32::from(step.decoupled);
        let f = self.function("adam_update", op)?;
        let mut l = self.stream.launch_builder(&f);
        l.arg(pb.slice_mut())
            .arg(gb.slice())
            .arg(mb.slice_mut())
            .arg(vb.slice_mut())
            .arg(&ni)
            .arg(&step.lr)
            .arg(&step.beta1)
            .arg(&step.beta2)
            .arg(&step.eps)
            .arg(&step.weight_decay)
            .arg(&decoupled)
            .arg(&step.bias_correction1)
            .arg(&step.bias_correction2);
        // SAFETY: param, grad, m and v hold n elements each (validated); param, m and v
        // are uniquely owned here (buf_mut copied them if they were shared).
        unsafe { l.launch(linear(n)) }.map_err(|e| self.err(op, e))?;
        Ok(())
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
        let n = x.numel();
        let (y, logdet) = (self.alloc(n)?, self.alloc(n)?);
        if n > 0 {
            let inputs = self.rq_spline_inputs(x, [widths, heights, derivatives], op)?;
            let (ni, bins) = (n as i32, widths.cols() as i32);
            let inverse = i32::from(inverse);
            let f = self.function(op, op)?;
            let mut l = self.stream.launch_builder(&f);
            for b in inputs {
                l.arg(b.slice());
            }
            l.arg(y.slice())
                .arg(logdet.slice())
                .arg(&ni)
                .arg(&bins)
                .arg(&bound)
                .arg(&inverse);
            // SAFETY: x, y and logdet hold n elements, widths and heights n·bins,
            // derivatives n·(bins + 1) (validated by ops::rq_spline).
            unsafe { l.launch(linear(n)) }.map_err(|e| self.err(op, e))?;
        }
        Ok((self.wrap(y, x.shape()), self.wrap(logdet, x.shape())))
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
        let n = x.numel();
        let [widths, heights, derivatives] = knots;
        let grads = [
            self.alloc(n)?,
            self.alloc(widths.numel())?,
            self.alloc(heights.numel())?,
            self.alloc(derivatives.numel())?,
        ];
        if n > 0 {
            let inputs = self.rq_spline_inputs(x, knots, op)?;
            let (ni, bins) = (n as i32, widths.cols() as i32);
            let inverse = i32::from(inverse);
            let f = self.function("rq_spline", op)?;
            let mut l = self.stream.launch_builder(&f);
            for b in inputs {
                l.arg(b.slice());
            }
            l.arg(self.buf(dy, op)?.slice())
                .arg(self.buf(dlogdet, op)?.slice());
            for g in &grads {
                l.arg(g.slice());
            }
            l.arg(&ni).arg(&bins).arg(&bound).arg(&inverse);
            // SAFETY: x, dy, dlogdet and dx hold n elements, widths, heights and their
            // gradients n·bins, derivatives and theirs n·(bins + 1) (validated by
            // ops::rq_spline_backward).
            unsafe { l.launch(linear(n)) }.map_err(|e| self.err(op, e))?;
        }
        let [dx, dw, dh, dd] = grads;
        Ok([
            self.wrap(dx, x.shape()),
            self.wrap(dw, widths.shape()),
            self.wrap(dh, heights.shape()),
            self.wrap(dd, derivatives.shape()),
        ])
    }
}

impl CudaBackend {
    /// The buffers of x, widths, heights and derivatives, the spline kernels' first four
    /// arguments; an error when the element counts exceed what a kernel indexes.
    fn rq_spline_inputs<'a>(
        &self,
        x: &'a Tensor,
        knots: [&'a Tensor; 3],
        op: &'static str,
    ) -> Result<[&'a DeviceBuffer; 4]> {
        to_i32(knots[2].numel(), op, "derivatives")?;
        let [w, h, d] = knots;
        Ok([
            self.buf(x, op)?,
            self.buf(w, op)?,
            self.buf(h, op)?,
            self.buf(d, op)?,
        ])
    }

    /// w[b] of a masked set reduction (1 for a sum, 1/Σ mask for a mean, 0 for an empty
    /// set) in a pooled scratch buffer.
    fn set_weights(
        &self,
        mask: &DeviceBuffer,
        batch: usize,
        set: usize,
        how: Reduction,
    ) -> Result<DeviceBuffer> {
        let op = "masked_set_weight";
        let w = self.alloc(batch)?;
        let (bi, si) = (to_i32(batch, op, "batch")?, to_i32(set, op, "set")?);
        to_i32(batch * set, op, "mask elements")?;
        let mean = i32::from(how == Reduction::Mean);
        let f = self.function("masked_set_reduce", op)?;
        let mut l = self.stream.launch_builder(&f);
        l.arg(mask.slice())
            .arg(w.slice())
            .arg(&bi)
            .arg(&si)
            .arg(&mean);
        // SAFETY: mask holds batch·set elements, w holds batch.
        unsafe { l.launch(linear(batch)) }.map_err(|e| self.err(op, e))?;
        Ok(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn includes_expand_once_and_cache_names_follow_the_source() {
        let src = "#include \"block_reduce.cuh\"\n#include \"block_reduce.cuh\"\nint x;\n";
        let out = expand_includes(src, embedded_header).unwrap();
        assert_eq!(
            out.matches("__device__ __forceinline__ float block_sum")
                .count(),
            1
        );
        assert!(out.ends_with("int x;\n"));
        let dir = Path::new("/cache");
        let a = ptx_cache_file(dir, "k", "int a;", "compute_80");
        assert_eq!(a, ptx_cache_file(dir, "k", "int a;", "compute_80"));
        assert_ne!(a, ptx_cache_file(dir, "k", "int b;", "compute_80"));
        assert_ne!(a, ptx_cache_file(dir, "k", "int a;", "compute_90"));
        assert!(a.to_string_lossy().ends_with("-compute_80.ptx"), "{a:?}");
    }

    #[test]
    fn ptxas_logs_parse_per_function() {
        let log = "ptxas info    : Compiling entry function 'k' for 'sm_90'
ptxas info    : Function properties for helper
ptxas         .     0 bytes stack frame, 8 bytes spill stores, 24 bytes spill loads
ptxas info    : Function properties for k
ptxas         .     472 bytes stack frame, 820 bytes spill stores, 1136 bytes spill loads
ptxas info    : Used 128 registers, used 1 barriers, 8320 bytes smem, 472 bytes cumulative stack size
";
        let f = parse_ptxas_log(log);
        assert_eq!(f.len(), 2);
        assert_eq!(
            f[0],
            KernelResources {
                function: "helper".into(),
                entry: false,
                spill_stores: 8,
                spill_loads: 24,
                ..Default::default()
            }
        );
        assert_eq!(
            f[1],
            KernelResources {
                function: "k".into(),
                entry: true,
                registers: Some(128),
                shared_bytes: 8320,
                stack_bytes: 472,
                spill_stores: 820,
                spill_loads: 1136,
            }
        );
    }

    #[test]
    fn cache_files_are_written_whole() {
        let dir = std::env::temp_dir().join(format!("amortize-ptx-test-{}", std::process::id()));
        let path = dir.join("nested").join("m.ptx");
        write_atomically(&path, "first").unwrap();
        write_atomically(&path, "second").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "second");
        let leftovers = std::fs::read_dir(path.parent().unwrap()).unwrap().count();
        assert_eq!(leftovers, 1, "temporary files left behind");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn no_device_is_an_error_not_a_panic() {
        if let Err(e) = CudaBackend::shared(usize::MAX / 2) {
            assert!(e.to_string().contains("cuda:"), "{e}");
        }
    }
}
