//! The CUDA backend's PTX disk cache across processes: a first process compiles a kernel
//! file with NVRTC and writes its PTX to `$AMORTIZE_PTX_CACHE`; a second process, with no
//! NVRTC it could compile with, runs the same kernel from that file; a file the driver
//! rejects is compiled again and replaced. Each process is this binary running
//! [`scale_on_cuda_child`].
//!
//! Runs where cuda:0 exists, or on the CUDA emulator (`AMORTIZE_CUDA_EMULATOR=1`, as CI);
//! otherwise it prints why and passes, unless `AMORTIZE_REQUIRE_CUDA=1`.

mod common;

use std::path::Path;
use std::process::Command;

use amortize::backend::for_device;
use amortize::Device;

/// The kernel file the children run (`scale`: no other test of this binary loads it).
const MODULE: &str = "scale";

/// Run as a child process by [`a_second_process_runs_the_kernels_from_the_disk_cache`].
#[test]
#[ignore = "run in a child process by a_second_process_runs_the_kernels_from_the_disk_cache"]
fn scale_on_cuda_child() {
    eprintln!("nvrtc present: {}", amortize::devices::nvrtc_present());
    common::cuda_emulator::install();
    let g = for_device(Device::Cuda(0)).unwrap();
    let x = g.upload(&[1.0, -2.0, 3.5], &[3]).unwrap();
    let y = g.scale(&x, 2.0).unwrap();
    assert_eq!(g.download(&y).unwrap(), [2.0, -4.0, 7.0]);
}

/// Runs [`scale_on_cuda_child`] with the PTX cache in `cache`; `nvrtc: false` leaves
/// NVRTC off the library path. Returns whether it succeeded, and whether it could load
/// NVRTC.
fn child(cache: &Path, nvrtc: bool) -> (bool, bool) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--ignored", "--exact", "scale_on_cuda_child", "--nocapture"])
        .env("AMORTIZE_PTX_CACHE", cache);
    if !nvrtc {
        cmd.env("LD_LIBRARY_PATH", "");
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nvrtc present: "), "{stderr}");
    (out.status.success(), stderr.contains("nvrtc present: true"))
}

/// The cache files of [`MODULE`] in `cache`.
fn cached(cache: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(cache)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().path())
                .filter(|p| {
                    let name = p.file_name().unwrap().to_string_lossy();
                    name.starts_with(&format!("{MODULE}-")) && name.ends_with(".ptx")
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_second_process_runs_the_kernels_from_the_disk_cache() {
    if common::cuda_or_skip("a_second_process_runs_the_kernels_from_the_disk_cache").is_none() {
        return;
    }
    let cache = std::env::temp_dir().join(format!("amortize-ptx-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);

    // Where NVRTC is found off the library path too (a system CUDA), a child cannot be
    // kept from compiling, and what this test shows would not be shown.
    let (ok, nvrtc_anyway) = child(&cache, false);
    if nvrtc_anyway {
        eprintln!("skipping: NVRTC loads here without LD_LIBRARY_PATH");
        return;
    }
    assert!(!ok, "ran without NVRTC or a cache file");

    assert_eq!(child(&cache, true), (true, true), "compiling");
    let files = cached(&cache);
    assert_eq!(files.len(), 1, "{files:?}");
    let ptx = std::fs::read_to_string(&files[0]).unwrap();
    assert!(ptx.contains(".entry scale"), "{ptx}");

    assert_eq!(child(&cache, false), (true, false), "from the cache");

    // A file the driver rejects is compiled again and replaced.
    std::fs::write(&files[0], "not PTX").unwrap();
    assert_eq!(child(&cache, true), (true, true), "recompiling");
    assert_eq!(std::fs::read_to_string(&files[0]).unwrap(), ptx);
    std::fs::remove_dir_all(&cache).unwrap();
}
