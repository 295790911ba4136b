//! `amortize devices`: every backend this machine has, with a matmul parity check.

use amortize::backend::{self, MatLayout};
use amortize::rng::{streams, PhiloxStream};
use amortize::{devices, ops, Device, Result, Tensor};

/// Shapes of the parity matmul: small enough to be instant, odd enough to hit every
/// edge of a tiled kernel.
const PARITY_M: usize = 67;
const PARITY_K: usize = 45;
const PARITY_N: usize = 33;

/// Lists the CPU, NVRTC, CUDA devices and wgpu adapters; checks a matmul on each.
pub fn run() -> Result<()> {
    println!(
        "cpu        {}",
        backend::for_device(Device::Cpu)?.describe()
    );
    let (a, b) = parity_operands()?;
    let reference = naive_matmul_f64(&a.to_vec()?, &b.to_vec()?);
    report_parity(Device::Cpu, &a, &b, &reference, "f64 naive loop");

    match devices::nvrtc_version() {
        Ok((major, minor)) => println!("nvrtc      {major}.{minor} (CUDA kernels can be compiled)"),
        Err(why) => println!("nvrtc      none: {why}"),
    }
    match devices::cuda_devices() {
        Ok(list) if list.is_empty() => println!("cuda       driver present, no devices"),
        Ok(list) => {
            for d in list {
                println!(
                    "cuda:{}     {} (compute {}.{}, {:.1} GiB)",
                    d.ordinal,
                    d.name,
                    d.compute_capability.0,
                    d.compute_capability.1,
                    d.total_memory_bytes as f64 / (1u64 << 30) as f64
                );
                report_parity(Device::Cuda(d.ordinal), &a, &b, &reference, "CPU reference");
            }
        }
        Err(why) => println!("cuda       none: {why}"),
    }
    let adapters = devices::wgpu_adapters();
    if adapters.is_empty() {
        println!("wgpu       no adapters (no Vulkan, Metal or DX12 driver found)");
    }
    for ad in adapters {
        println!(
            "wgpu:{}     {} ({}, {}, driver {:?}, workgroup storage {} KiB)",
            ad.index,
            ad.name,
            ad.backend,
            ad.device_type,
            ad.driver,
            ad.max_compute_workgroup_storage_size / 1024
        );
        report_parity(Device::Wgpu(ad.index), &a, &b, &reference, "CPU reference");
    }
    Ok(())
}

fn parity_operands() -> Result<(Tensor, Tensor)> {
    let mut rng = PhiloxStream::new(0, streams::TEST, 0);
    let mut a = vec![0.0; PARITY_M * PARITY_K];
    let mut b = vec![0.0; PARITY_K * PARITY_N];
    rng.fill_normal(0.0, 1.0, &mut a);
    rng.fill_normal(0.0, 1.0, &mut b);
    Ok((
        Tensor::from_vec(a, &[PARITY_M, PARITY_K])?,
        Tensor::from_vec(b, &[PARITY_K, PARITY_N])?,
    ))
}

fn naive_matmul_f64(a: &[f32], b: &[f32]) -> Vec<f32> {
    let mut c = vec![0.0; PARITY_M * PARITY_N];
    for i in 0..PARITY_M {
        for j in 0..PARITY_N {
            let s: f64 = (0..PARITY_K)
                .map(|p| a[i * PARITY_K + p] as f64 * b[p * PARITY_N + j] as f64)
                .sum();
            c[i * PARITY_N + j] = s as f32;
        }
    }
    c
}

/// Runs the matmul on `device` and prints its largest error relative to `reference`.
fn report_parity(device: Device, a: &Tensor, b: &Tensor, reference: &[f32], against: &str) {
    let run = || -> Result<Vec<f32>> {
        let c = ops::matmul(&a.to_device(device)?, &b.to_device(device)?, MatLayout::NN)?;
        c.to_vec()
    };
    match run() {
        Ok(c) => {
            let scale = reference
                .iter()
                .fold(0.0f32, |m, v| m.max(v.abs()))
                .max(1e-30);
            let err = c
                .iter()
                .zip(reference)
                .map(|(x, r)| (x - r).abs())
                .fold(0.0f32, f32::max);
            let verdict = if err / scale <= 1e-4 {
                "ok"
            } else {
                "MISMATCH"
            };
            println!(
                "           matmul {PARITY_M}x{PARITY_K}x{PARITY_N} on {device}: max error {:.2e} of max |C| vs {against}: {verdict}",
                err / scale
            );
        }
        Err(e) => println!("           matmul on {device}: not run: {e}"),
    }
}
