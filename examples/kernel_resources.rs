//! What ptxas reports for every CUDA kernel, per function: registers, static shared
//! memory, stack and register spills, for each real architecture asked for (default
//! `sm_80,sm_90`). Static facts of the compiled code, no GPU needed (NVRTC runs ptxas):
//! what limits occupancy, and which functions touch local memory.
//!
//! Every launch of the backend has 256 threads per block, so registers alone allow
//! ⌊65536 / (256 · r)⌋ blocks per SM, with r rounded up to ptxas's granularity of 8.
//!
//! Run: `cargo run --release --example kernel_resources [-- sm_90,...]`
//! (needs NVRTC on `LD_LIBRARY_PATH`, as the tests do).

use amortize::backend::cuda::{ptxas_resources, KERNELS};

fn main() {
    let archs = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "sm_80,sm_90".into());
    if !amortize::devices::nvrtc_present() {
        eprintln!("kernel_resources: no NVRTC library on the library path");
        std::process::exit(1);
    }
    for arch in archs.split(',') {
        println!("\n{arch}: function, registers, blocks/SM by registers, smem, stack, spill stores/loads (bytes)");
        for kernel in KERNELS {
            let functions = match ptxas_resources(kernel.name, arch) {
                Ok(f) => f,
                Err(e) => {
                    println!("  {}: {e}", kernel.name);
                    continue;
                }
            };
            println!("  {}.cu", kernel.name);
            for f in functions {
                let registers = f.registers.map_or("-".to_string(), |r| r.to_string());
                let blocks = f.registers.map_or("-".to_string(), |r| {
                    (65536 / (256 * r.div_ceil(8) * 8)).to_string()
                });
                let name: String = f.function.chars().take(48).collect();
                println!(
                    "    {}{name:<48} {registers:>4} {blocks:>3} {:>6} {:>5} {:>5}/{}",
                    if f.entry { "" } else { "~" },
                    f.shared_bytes,
                    f.stack_bytes,
                    f.spill_stores,
                    f.spill_loads
                );
            }
        }
    }
}
