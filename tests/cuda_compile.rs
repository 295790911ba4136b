//! Every CUDA kernel compiles with NVRTC (issue 5): no GPU needed, only libnvrtc (CI gets
//! it from the `nvidia-cuda-nvrtc-cu12` wheel). Without NVRTC the tests print why and
//! pass, unless `AMORTIZE_REQUIRE_NVRTC=1` (set in CI) makes that a failure.

use std::path::PathBuf;

use amortize::backend::cuda::{self, KERNELS};
use amortize::devices;

/// The architecture the compile test targets: Ampere, the oldest GPU generation the
/// kernels are written for, and supported by every NVRTC 11.1+.
const ARCH: &str = "compute_80";

fn kernels_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("kernels")
}

/// Whether NVRTC can be used; panics when it cannot and the environment requires it.
fn nvrtc_or_skip(test: &str) -> bool {
    match devices::nvrtc_version() {
        Ok(_) => true,
        Err(why) => {
            if std::env::var("AMORTIZE_REQUIRE_NVRTC").as_deref() == Ok("1") {
                panic!("{test}: AMORTIZE_REQUIRE_NVRTC=1 but NVRTC is unusable: {why}");
            }
            eprintln!("skipping {test}: {why} (set AMORTIZE_REQUIRE_NVRTC=1 to fail instead)");
            false
        }
    }
}

/// The `.cu` files in `kernels/`, sorted.
fn cu_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(kernels_dir())
        .expect("kernels/ exists")
        .map(|e| e.expect("readable kernels/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "cu"))
        .collect();
    files.sort();
    files
}

/// Resolves `#include "NAME"` from `kernels/` on disk.
fn disk_header(name: &str) -> Option<String> {
    std::fs::read_to_string(kernels_dir().join(name)).ok()
}

#[test]
fn every_kernel_file_in_the_directory_compiles() {
    if !nvrtc_or_skip("every_kernel_file_in_the_directory_compiles") {
        return;
    }
    let (major, minor) = devices::nvrtc_version().unwrap();
    eprintln!("NVRTC {major}.{minor}, target {ARCH}");
    let files = cu_files();
    assert!(!files.is_empty(), "no kernels/*.cu found");
    let mut failures = Vec::new();
    for path in &files {
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(path).unwrap();
        let result = cuda::expand_includes(&text, disk_header)
            .and_then(|src| cuda::compile_ptx(&name, &src, ARCH));
        match result {
            Ok(ptx) => eprintln!("compiled kernels/{name}.cu: {} bytes of PTX", ptx.len()),
            Err(e) => failures.push(format!("{e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn the_backend_source_list_matches_the_directory_and_every_entry_exists() {
    // The list half of this test needs no NVRTC: a kernel file the backend does not embed,
    // or an embedded copy that differs from the file, fails everywhere.
    let on_disk: Vec<String> = cu_files()
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().to_string())
        .collect();
    let mut listed: Vec<String> = KERNELS.iter().map(|k| k.name.to_string()).collect();
    listed.sort();
    assert_eq!(
        listed, on_disk,
        "backend::cuda::KERNELS and kernels/*.cu disagree"
    );
    for k in KERNELS {
        let disk = std::fs::read_to_string(kernels_dir().join(format!("{}.cu", k.name))).unwrap();
        assert_eq!(k.source, disk, "embedded {}.cu is stale", k.name);
        let expanded = cuda::kernel_source(k.name).unwrap();
        assert!(
            !expanded
                .lines()
                .any(|l| l.trim_start().starts_with("#include")),
            "{}.cu still has an #include after expansion",
            k.name
        );
    }
    if !nvrtc_or_skip("the_backend_source_list_matches_the_directory_and_every_entry_exists") {
        return;
    }
    let mut failures = Vec::new();
    for k in KERNELS {
        let ptx = match cuda::compile_ptx(k.name, &cuda::kernel_source(k.name).unwrap(), ARCH) {
            Ok(ptx) => ptx,
            Err(e) => {
                failures.push(format!("{e}"));
                continue;
            }
        };
        for entry in k.entries {
            let needle = format!(".entry {entry}(");
            if !ptx.contains(&needle) {
                failures.push(format!("kernels/{}.cu has no kernel `{entry}`", k.name));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// NVRTC passes inline PTX through to a `compute_XX` target unchecked; compiling for a real
/// architecture (`sm_XX`) runs its assembler too. `matmul_tf32.cu` is WMMA in inline PTX:
/// assemble it for Ampere and Hopper, with no register spills in its three kernels.
#[test]
fn matmul_tf32_inline_ptx_assembles_for_sm_80_and_sm_90() {
    if !nvrtc_or_skip("matmul_tf32_inline_ptx_assembles_for_sm_80_and_sm_90") {
        return;
    }
    for arch in ["sm_80", "sm_90"] {
        let functions = cuda::ptxas_resources("matmul_tf32", arch)
            .unwrap_or_else(|e| panic!("matmul_tf32.cu for {arch}: {e}"));
        let entries: Vec<_> = functions.iter().filter(|f| f.entry).collect();
        assert_eq!(entries.len(), 3, "{arch}: {functions:?}");
        assert!(
            functions.iter().all(|f| f.spill_stores == 0),
            "matmul_tf32.cu spills registers on {arch}: {functions:?}"
        );
    }
}

#[test]
fn unknown_includes_are_errors() {
    let err = cuda::expand_includes("#include \"nope.cuh\"\n", cuda::embedded_header).unwrap_err();
    assert!(err.to_string().contains("nope.cuh"), "{err}");
}

#[test]
fn compile_errors_carry_the_nvrtc_log() {
    if !nvrtc_or_skip("compile_errors_carry_the_nvrtc_log") {
        return;
    }
    let err = cuda::compile_ptx(
        "broken",
        "extern \"C\" __global__ void k() { int x = ; }",
        ARCH,
    )
    .unwrap_err();
    assert!(err.to_string().contains("broken.cu"), "{err}");
    assert!(err.to_string().contains("expected an expression"), "{err}");
}
