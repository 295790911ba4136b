//! The CUDA emulator's own checks (`tests/cuda_emulator/driver.cpp`): the kernels of
//! `tests/cuda_emulator/selftest.cu` each break or probe one rule, and the emulator must
//! catch the break (a race within a block or a warp, a barrier some threads skip, a write
//! past a buffer) or honour the rule (indices, poisoned shared memory). These run only under the emulator
//! (`AMORTIZE_CUDA_EMULATOR=1`, as `.ci/run` sets): on a GPU a race may well pass.

mod common;

use std::sync::Arc;

use amortize::backend::cuda::compile_ptx;
use common::cuda_emulator;
use cudarc::driver::{CudaContext, CudaFunction, CudaStream, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::Ptx;

const SOURCE: &str = include_str!("cuda_emulator/selftest.cu");

/// The selftest functions on the emulator's device, or `None` (after printing why) when
/// the emulator was not asked for.
fn emulator(test: &str) -> Option<(Arc<CudaStream>, impl Fn(&str) -> CudaFunction)> {
    if !cuda_emulator::install() {
        eprintln!("skipping {test}: set {}=1 to run it", cuda_emulator::VAR);
        return None;
    }
    let ctx = CudaContext::new(0).unwrap();
    let ptx = compile_ptx("selftest", SOURCE, "compute_90").unwrap();
    let module = ctx.load_module(Ptx::from_src(ptx)).unwrap();
    let function = move |name: &str| module.load_function(name).unwrap();
    Some((ctx.default_stream(), function))
}

fn block(threads: u32, shared_floats: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (1, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 4 * shared_floats,
    }
}

/// Launches `kernel` (`selftest_block_sum` or `selftest_warp_sum`: each group of `group`
/// threads writes its inputs to shared memory, and its first thread sums them into
/// `out[group index]`) on one block of `threads`, with its barrier and without: with it
/// the sums are exact; without it each first thread sums before some of its group have
/// written, and reads the NaN the shared memory starts as (unless the shuffled order
/// happens to run it last of its group).
fn check_missing_barrier(test: &str, kernel: &str, threads: u32, group: u32) {
    let Some((stream, function)) = emulator(test) else {
        return;
    };
    let f = function(kernel);
    let input: Vec<f32> = (0..threads).map(|i| i as f32).collect();
    let want: Vec<f32> = input
        .chunks(group as usize)
        .map(|g| g.iter().sum())
        .collect();
    let input = stream.clone_htod(&input).unwrap();
    for barrier in [1i32, 0] {
        let mut out = stream.alloc_zeros::<f32>(want.len()).unwrap();
        let mut l = stream.launch_builder(&f);
        l.arg(&mut out).arg(&input).arg(&barrier);
        // SAFETY: out holds one float per group, input and the shared memory one per thread.
        unsafe { l.launch(block(threads, threads)) }.unwrap();
        let got = stream.clone_dtoh(&out).unwrap();
        if barrier == 1 {
            assert_eq!(got, want, "{kernel} with its barrier");
        } else {
            assert!(
                got.iter().all(|v| v.is_nan()),
                "{kernel} without its barrier: {got:?}"
            );
        }
    }
}

#[test]
fn a_missing_barrier_changes_the_result() {
    check_missing_barrier(
        "a_missing_barrier_changes_the_result",
        "selftest_block_sum",
        256,
        256,
    );
}

#[test]
fn a_missing_warp_barrier_changes_the_result() {
    let test = "a_missing_warp_barrier_changes_the_result";
    check_missing_barrier(test, "selftest_warp_sum", 128, 32);
}

/// Launches `f(out)` on one block of `threads` with as many floats of dynamic shared
/// memory (or none), `out` holding one float per thread; returns `out`.
fn launch_per_thread(
    stream: &Arc<CudaStream>,
    f: &CudaFunction,
    threads: u32,
    shared: bool,
) -> Result<Vec<f32>, cudarc::driver::DriverError> {
    let mut out = stream.alloc_zeros::<f32>(threads as usize)?;
    let mut l = stream.launch_builder(f);
    l.arg(&mut out);
    // SAFETY: the selftest kernels taking only `out` write at most one float per thread.
    unsafe { l.launch(block(threads, if shared { threads } else { 0 })) }?;
    stream.clone_dtoh(&out)
}

#[test]
fn a_barrier_some_threads_skip_fails_the_launch() {
    let Some((stream, function)) = emulator("a_barrier_some_threads_skip_fails_the_launch") else {
        return;
    };
    let err = launch_per_thread(&stream, &function("selftest_early_return"), 64, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("CUDA_ERROR_LAUNCH_FAILED"), "{err}");
}

#[test]
fn three_dimensional_indices_cover_the_grid_once() {
    let Some((stream, function)) = emulator("three_dimensional_indices_cover_the_grid_once") else {
        return;
    };
    let f = function("selftest_indices");
    let (grid, threads) = ((3u32, 2u32, 2u32), (4u32, 3u32, 2u32));
    let blocks = grid.0 * grid.1 * grid.2;
    let per_block = threads.0 * threads.1 * threads.2;
    let mut out = stream
        .clone_htod(&vec![u32::MAX; (blocks * per_block) as usize])
        .unwrap();
    let mut l = stream.launch_builder(&f);
    l.arg(&mut out);
    let cfg = LaunchConfig {
        grid_dim: grid,
        block_dim: threads,
        shared_mem_bytes: 0,
    };
    // SAFETY: out holds one u32 per thread of the grid.
    unsafe { l.launch(cfg) }.unwrap();
    let got = stream.clone_dtoh(&out).unwrap();
    for b in 0..blocks {
        for t in 0..per_block {
            assert_eq!(
                got[(b * per_block + t) as usize],
                b * 1000 + t,
                "block {b} thread {t}"
            );
        }
    }
}

#[test]
fn dynamic_shared_memory_starts_as_nan() {
    let Some((stream, function)) = emulator("dynamic_shared_memory_starts_as_nan") else {
        return;
    };
    let got = launch_per_thread(&stream, &function("selftest_read_shared"), 32, true).unwrap();
    assert!(got.iter().all(|v| v.is_nan()), "{got:?}");
}

/// Run in a child process by [`a_write_past_a_buffer_stops_the_process_naming_the_kernel`]:
/// the emulator ends the process it runs in.
#[test]
#[ignore = "run in a child process by a_write_past_a_buffer_stops_the_process_naming_the_kernel"]
fn overrun_child() {
    let Some((stream, function)) = emulator("overrun_child") else {
        return;
    };
    let f = function("selftest_overrun");
    let n = 10i32;
    let mut out = stream.alloc_zeros::<f32>(n as usize).unwrap();
    let mut l = stream.launch_builder(&f);
    l.arg(&mut out).arg(&n);
    // SAFETY: none, on purpose: the kernel writes out[n]; the emulator's guard page stops
    // the process before anything else sees the write.
    let _ = unsafe { l.launch(block(32, 0)) };
    eprintln!("the overrun went unnoticed");
}

#[test]
fn a_write_past_a_buffer_stops_the_process_naming_the_kernel() {
    if emulator("a_write_past_a_buffer_stops_the_process_naming_the_kernel").is_none() {
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "overrun_child", "--nocapture"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the child survived:\n{stderr}");
    assert!(
        stderr.contains("kernel selftest_overrun, block (0, 0, 0), thread (0, 0, 0)"),
        "{stderr}"
    );
}
