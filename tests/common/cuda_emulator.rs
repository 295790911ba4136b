//! The CUDA tests without a GPU: with `AMORTIZE_CUDA_EMULATOR=1`, [`install`] builds
//! `tests/cuda_emulator` (a stand-in for `libcuda.so` that runs `kernels/*.cu` compiled as
//! C++ on the CPU; its `driver.cpp` says what that checks and what it cannot) and loads it
//! before cudarc looks for the driver, so cuda:0 is the emulator for this process.
//!
//! The build needs g++ (x86-64 Linux). Each kernel file is compiled from the text NVRTC
//! sees ([`kernel_source`]) with `emu.h` in front and one `EMU_KERNEL(entry)` line per
//! entry of [`KERNELS`] after it; `extern __shared__ T name[];` becomes the block's dynamic
//! shared memory. `selftest.cu` (the emulator's own checks,
//! `tests/cuda_emulator_checks.rs`) is built in the same way. Functions of inline PTX (the
//! tensor-core helpers of `matmul_tf32.cu`) are dropped and `emu_wmma.h`'s C++ stand-ins
//! included in their place.
//!
//! The library is cached under `target/tmp/cuda-emulator/<hash of its inputs>/`, written
//! through a temporary folder and a rename so parallel test processes never load half a
//! build; `current` links to the build of the sources last tested, for other binaries:
//! `LD_PRELOAD=target/tmp/cuda-emulator/current/libcuda.so amortize sample --device
//! cuda:0 ...` runs the command line on the emulator.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use amortize::backend::cuda::{kernel_source, KERNELS};

/// g++'s options for every translation unit: no contraction, as `__fadd_rn` and friends
/// ask of NVCC (emu.h).
const CXX_FLAGS: &[&str] = &[
    "-std=c++17",
    "-O2",
    "-fPIC",
    "-ffp-contract=off",
    "-Wall",
    "-Wno-unknown-pragmas",
    "-Wno-unused-function",
    "-Wno-unused-variable",
];

/// The variable that turns the emulator on.
pub const VAR: &str = "AMORTIZE_CUDA_EMULATOR";

/// Whether this process asked for the emulator.
pub fn requested() -> bool {
    std::env::var(VAR).as_deref() == Ok("1")
}

/// The emulator, once [`install`] loaded it.
static LOADED: OnceLock<Result<libloading::Library, String>> = OnceLock::new();

/// Loads the emulator as this process's CUDA driver when [`requested`] (building it on
/// first use), and says whether it did. Panics with the compiler's output when the build
/// fails: a test that asked for the emulator must not pass by skipping.
pub fn install() -> bool {
    let Some(path) = library() else {
        return false;
    };
    match LOADED.get_or_init(|| load(&path)) {
        Ok(_) => true,
        Err(e) => panic!("{VAR}=1 but the CUDA emulator is unusable: {e}"),
    }
}

/// How many device allocations (`cuMemAlloc`) the emulator has made in this process, or
/// `None` when it is not installed.
pub fn allocation_count() -> Option<u64> {
    let library = LOADED.get()?.as_ref().ok()?;
    // SAFETY: driver.cpp defines `unsigned long long emu_allocation_count()`.
    let count =
        unsafe { library.get::<unsafe extern "C" fn() -> u64>(b"emu_allocation_count") }.ok()?;
    // SAFETY: it takes nothing and reads an atomic.
    Some(unsafe { count() })
}

/// The emulator's library when [`requested`] (built on first use), for child processes
/// (`LD_PRELOAD`); panics as [`install`] when the build fails.
pub fn library() -> Option<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    if !requested() {
        return None;
    }
    match BUILT.get_or_init(build) {
        Ok(path) => Some(path.clone()),
        Err(e) => panic!("{VAR}=1 but the CUDA emulator is unusable: {e}"),
    }
}

fn load(path: &Path) -> Result<libloading::Library, String> {
    // SAFETY: the library is ours (driver.cpp); its constructors only fill the kernel
    // table. It carries the soname libcuda.so, so cudarc's later dlopen("libcuda.so")
    // returns this library instead of searching the disk.
    unsafe { libloading::Library::new(path) }.map_err(|e| format!("loading {path:?}: {e}"))
}

/// A kernel file's text for g++: NVRTC's input with the dynamic shared array declared as
/// the block's dynamic shared memory, then the registration of every entry.
fn translation_unit(text: &str, entries: &[&str]) -> String {
    // Inside an unnamed namespace: each file is its own module, as NVRTC compiles it, so
    // the helpers that several files include do not collide when linked.
    let mut out = String::from("#include \"emu.h\"\nnamespace {\n");
    for line in text.lines() {
        let trimmed = line.trim();
        match trimmed
            .strip_prefix("extern __shared__ ")
            .and_then(|rest| rest.strip_suffix("[];"))
            .and_then(|decl| decl.rsplit_once(' '))
        {
            Some((ty, name)) => out.push_str(&format!(
                "{ty}* {name} = static_cast<{ty}*>(emu::dynamic_shared());\n"
            )),
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    for entry in entries {
        out.push_str(&format!("EMU_KERNEL({entry})\n"));
    }
    out.push_str("}\n");
    out
}

/// Points `root/current` at `build`, the emulator of the sources this process was built
/// from, for `LD_PRELOAD=target/tmp/cuda-emulator/current/libcuda.so amortize ...`.
fn point_current_at(root: &Path, build: &Path) {
    let link = root.join(format!("current.tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&link);
    // Best effort: the link is a convenience for running binaries by hand.
    if std::os::unix::fs::symlink(build, &link).is_ok() {
        let _ = std::fs::rename(&link, root.join("current"));
    }
}

/// The names of the `__global__ void NAME(` functions of `text`.
fn global_functions(text: &str) -> Vec<&str> {
    text.split("__global__ void ")
        .skip(1)
        .filter_map(|rest| rest.split('(').next())
        .map(str::trim)
        .collect()
}

fn has_inline_ptx(text: &str) -> bool {
    text.contains("asm(") || text.contains("asm volatile(")
}

/// `text` with every top-level function that holds inline PTX dropped and
/// `#include "emu_wmma.h"` (their C++ stand-ins) where the first one was. A function runs
/// from its line starting with `__device__` to the brace closing its body; braces in
/// comments, strings (PTX operand lists) and character literals do not count.
fn with_emulated_ptx(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::new();
    let (mut depth, mut i, mut copied) = (0usize, 0usize, 0usize);
    let mut start = None; // where the current top-level function's signature begins
    let mut included = false;
    while i < bytes.len() {
        let rest = &text[i..];
        if rest.starts_with("//") {
            i += rest.find('\n').unwrap_or(rest.len());
            continue;
        }
        if rest.starts_with("/*") {
            i += rest.find("*/").map_or(rest.len(), |e| e + 2);
            continue;
        }
        match bytes[i] {
            quote @ (b'"' | b'\'') => {
                i += 1;
                while i < bytes.len() && bytes[i] != quote {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    if let Some(s) = start.take() {
                        let function = &text[s..=i];
                        if has_inline_ptx(function) {
                            out.push_str(&text[copied..s]);
                            if !included {
                                out.push_str("#include \"emu_wmma.h\"\n");
                                included = true;
                            }
                            copied = i + 1;
                        }
                    }
                }
            }
            b'\n' if depth == 0 && rest[1..].starts_with("__device__") => start = Some(i + 1),
            _ => {}
        }
        i += 1;
    }
    out.push_str(&text[copied..]);
    out
}

/// Builds the library (or finds it built) and returns its path.
fn build() -> Result<PathBuf, String> {
    if !cfg!(all(target_arch = "x86_64", target_os = "linux")) {
        return Err("the emulator's fibers are written for x86-64 Linux".into());
    }
    let emulator = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cuda_emulator");
    let read = |name: &str| {
        std::fs::read_to_string(emulator.join(name)).map_err(|e| format!("{name}: {e}"))
    };
    let selftest = read("selftest.cu")?;
    let mut units = vec![
        ("driver".to_string(), read("driver.cpp")?),
        (
            "selftest".to_string(),
            translation_unit(&selftest, &global_functions(&selftest)),
        ),
    ];
    for k in KERNELS {
        let mut text = kernel_source(k.name).map_err(|e| e.to_string())?;
        if has_inline_ptx(&text) {
            text = with_emulated_ptx(&text);
        }
        units.push((k.name.to_string(), translation_unit(&text, k.entries)));
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    read("emu.h")?.hash(&mut hasher);
    read("emu_wmma.h")?.hash(&mut hasher);
    CXX_FLAGS.hash(&mut hasher);
    units.hash(&mut hasher);
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cuda-emulator");
    let done = root.join(format!("{:016x}", hasher.finish()));
    let library = done.join("libcuda.so");
    if library.exists() {
        point_current_at(&root, &done);
        return Ok(library);
    }
    let work = root.join(format!("build-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| format!("{work:?}: {e}"))?;
    eprintln!("building the CUDA emulator in {work:?}");
    let mut jobs = Vec::new();
    for (name, text) in &units {
        let source = work.join(format!("{name}.cpp"));
        std::fs::write(&source, text).map_err(|e| format!("{source:?}: {e}"))?;
        let child = Command::new("g++")
            .args(CXX_FLAGS)
            .arg("-I")
            .arg(&emulator)
            .arg("-c")
            .arg(&source)
            .arg("-o")
            .arg(work.join(format!("{name}.o")))
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("running g++: {e}"))?;
        jobs.push((name, child));
    }
    for (name, child) in jobs {
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "g++ failed on {name}:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    let out = Command::new("g++")
        .args(["-shared", "-Wl,-soname,libcuda.so", "-o"])
        .arg(work.join("libcuda.so"))
        .args(units.iter().map(|(name, _)| work.join(format!("{name}.o"))))
        .arg("-lpthread")
        .output()
        .map_err(|e| format!("running g++: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "linking the emulator failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    // Another process may have finished first; either build is the same.
    if std::fs::rename(&work, &done).is_err() {
        let _ = std::fs::remove_dir_all(&work);
    }
    if library.exists() {
        point_current_at(&root, &done);
        Ok(library)
    } else {
        Err(format!("{library:?} missing after the build"))
    }
}
