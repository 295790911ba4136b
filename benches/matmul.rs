//! CPU matmul: our tiled rayon kernel (`ops::matmul`, NN layout) against nalgebra's GEMM
//! on the shapes the estimators use: a wide hidden layer ([4096×128]·[128×128]) and a
//! narrow input layer ([256×10]·[10×128]). On cuda:0, when there is one, the same shapes
//! plus a large square product through `kernels/matmul.cu` (f32) and
//! `kernels/matmul_tf32.cu` (TF32 tensor cores, compute capability 8.0 or newer), each
//! iteration waiting for the kernel to finish.
//!
//! Throughput is given in elements/s with one element = one FLOP (2·m·k·n per product),
//! so criterion's "Gelem/s" reads as GFLOP/s.
//!
//! Run: `cargo bench --bench matmul`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use nalgebra::DMatrix;

use amortize::backend::cuda::{CudaBackend, MatmulPrecision};
use amortize::backend::{Backend, MatLayout, MatmulDims};
use amortize::rng::{streams, PhiloxStream};
use amortize::{ops, Tensor};

fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut v = vec![0.0; len];
    PhiloxStream::new(seed, streams::TEST, 0).fill_normal(0.0, 1.0, &mut v);
    v
}

fn matmul(c: &mut Criterion) {
    let mut group = c.benchmark_group("matmul");
    for (m, k, n) in [(4096, 128, 128), (256, 10, 128)] {
        let label = format!("{m}x{k}x{n}");
        group.throughput(Throughput::Elements((2 * m * k * n) as u64));
        let (a, b) = (random(m * k, 1), random(k * n, 2));

        let (ta, tb) = (
            Tensor::from_vec(a.clone(), &[m, k]).unwrap(),
            Tensor::from_vec(b.clone(), &[k, n]).unwrap(),
        );
        group.bench_function(BenchmarkId::new("amortize", &label), |bench| {
            bench.iter(|| ops::matmul(&ta, &tb, MatLayout::NN).unwrap())
        });

        let na = DMatrix::from_row_slice(m, k, &a);
        let nb = DMatrix::from_row_slice(k, n, &b);
        let mut nc = DMatrix::<f32>::zeros(m, n);
        group.bench_function(BenchmarkId::new("nalgebra", &label), |bench| {
            bench.iter(|| nc.gemm(1.0, &na, &nb, 0.0))
        });
    }
    group.finish();
}

fn matmul_cuda(c: &mut Criterion) {
    let gpu = match CudaBackend::shared(0) {
        Ok(g) if amortize::devices::nvrtc_present() => g,
        Ok(_) => {
            eprintln!("matmul_cuda: skipped: no NVRTC library to compile the kernels");
            return;
        }
        Err(e) => {
            eprintln!("matmul_cuda: skipped: {e}");
            return;
        }
    };
    let mut precisions = vec![MatmulPrecision::F32];
    if gpu.compute_capability().0 >= 8 {
        // A device that reports compute 8.0 but rejects the TF32 kernels gets the F32
        // rows only, with the reason.
        let one = gpu.upload(&[1.0], &[1, 1]).unwrap();
        let dims = MatmulDims {
            batch: 1,
            m: 1,
            k: 1,
            n: 1,
        };
        match gpu.matmul_with_precision(
            &one,
            &one,
            MatLayout::NN,
            dims,
            &[1, 1],
            MatmulPrecision::Tf32,
        ) {
            Ok(_) => precisions.push(MatmulPrecision::Tf32),
            Err(e) => eprintln!("matmul_cuda: no TF32 rows: {e}"),
        }
    }
    let mut group = c.benchmark_group("matmul_cuda");
    for (m, k, n) in [(4096, 128, 128), (256, 10, 128), (4096, 4096, 4096)] {
        let label = format!("{m}x{k}x{n}");
        group.throughput(Throughput::Elements((2 * m * k * n) as u64));
        let a = gpu.upload(&random(m * k, 1), &[m, k]).unwrap();
        let b = gpu.upload(&random(k * n, 2), &[k, n]).unwrap();
        let dims = MatmulDims { batch: 1, m, k, n };
        for &precision in &precisions {
            let id = BenchmarkId::new(format!("{precision:?}").to_lowercase(), &label);
            group.bench_function(id, |bench| {
                bench.iter(|| {
                    let product = gpu
                        .matmul_with_precision(&a, &b, MatLayout::NN, dims, &[m, n], precision)
                        .unwrap();
                    gpu.synchronize().unwrap();
                    product
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, matmul, matmul_cuda);
criterion_main!(benches);
