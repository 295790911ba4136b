//! Throughput of a conditional spline flow on the CPU reference backend: rows/s of
//! log q(θ | c) (a no-grad tape, as MCMC calls it for NLE) and of sampling, at several
//! batch sizes, for the sbibm-sized flow (dim 10, context 10, 5 spline couplings).
//!
//! `cargo run --release --example flow_throughput [dim] [context] [iterations]`

use std::time::Instant;

// The CPU backend allocates every op's output: see the mimalloc line of Cargo.toml.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use amortize::nn::flow::{ConditionalFlow, FlowConfig};
use amortize::rng::{streams, PhiloxStream};
use amortize::{ParamStore, Result, Tape, Tensor};

/// Seconds per call of `f`, the median of `iterations` timed calls after one warm-up.
fn time(iterations: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut times = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let start = Instant::now();
        f()?;
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(|a, b| a.total_cmp(b));
    Ok(times[times.len() / 2])
}

fn main() -> Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| {
            a.parse()
                .expect("dim, context and iterations are positive integers")
        })
        .collect();
    let dim = args.first().copied().unwrap_or(10);
    let context = args.get(1).copied().unwrap_or(10);
    let iterations = args.get(2).copied().unwrap_or(20);
    let mut store = ParamStore::new();
    let mut rng = PhiloxStream::new(0, streams::INIT, 0);
    let flow = ConditionalFlow::new(
        &mut store,
        "flow",
        FlowConfig::spline(dim, context, 5),
        &mut rng,
    )?;
    println!(
        "spline flow, dim {dim}, context {context}, 5 couplings: median of {iterations} calls"
    );
    println!(
        "{:>8} {:>16} {:>16}",
        "rows", "log q rows/s", "sample rows/s"
    );
    for rows in [64, 256, 1024, 4096] {
        let mut data = vec![0.0; rows * (dim + context)];
        PhiloxStream::new(1, streams::TEST, 0).fill_normal(0.0, 1.0, &mut data);
        let (theta, c) = data.split_at(rows * dim);
        let log_q = time(iterations, || {
            let mut tape = Tape::no_grad();
            let t = tape.constant(Tensor::from_vec(theta.to_vec(), &[rows, dim])?);
            let c = tape.constant(Tensor::from_vec(c.to_vec(), &[rows, context])?);
            flow.log_prob(&mut tape, &store, t, Some(c))?;
            Ok(())
        })?;
        let sample = time(iterations, || {
            let mut rng = PhiloxStream::new(2, streams::SAMPLER, 0);
            flow.sample(&store, &c[..context], rows, &mut rng)?;
            Ok(())
        })?;
        println!(
            "{rows:>8} {:>16.0} {:>16.0}",
            rows as f64 / log_q,
            rows as f64 / sample
        );
    }
    Ok(())
}
