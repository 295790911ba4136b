//! Throughput of the set encoders on the CPU reference backend: events (set elements)
//! per second for inference (a no-grad tape) and for a training step's forward +
//! backward, at batch 64, set size 100, 8 features, width 64.
//!
//! `cargo run --release --example set_encoders [batch] [set] [iterations] [name filter]`

use std::time::Instant;

// The CPU backend allocates every op's output: see the mimalloc line of Cargo.toml.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use amortize::backend::Reduction;
use amortize::nn::{CausalTransformer, DeepSet, DeepSetConfig, SetTransformer, TransformerConfig};
use amortize::rng::{streams, PhiloxStream};
use amortize::{ParamStore, Result, Tape, Tensor, Var};

const FEAT: usize = 8;
const WIDTH: usize = 64;
const OUT: usize = 16;

type Forward<'a> = Box<dyn Fn(&mut Tape, Var, &Tensor) -> Result<Var> + 'a>;

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
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let filter = raw.get(3).cloned().unwrap_or_default();
    let args: Vec<usize> = raw
        .iter()
        .take(3)
        .map(|a| {
            a.parse()
                .expect("batch, set and iterations are positive integers")
        })
        .collect();
    let batch = args.first().copied().unwrap_or(64);
    let set = args.get(1).copied().unwrap_or(100);
    let iterations = args.get(2).copied().unwrap_or(20);

    let mut data = vec![0.0; batch * set * FEAT];
    PhiloxStream::new(0, streams::TEST, 0).fill_normal(0.0, 1.0, &mut data);
    let x = Tensor::from_vec(data, &[batch, set, FEAT])?;
    let mask = Tensor::full(&[batch, set], 1.0);

    let mut rng = PhiloxStream::new(0, streams::INIT, 0);
    let mut store = ParamStore::new();
    let deep = DeepSet::new(
        &mut store,
        "deep_set",
        DeepSetConfig {
            width: WIDTH,
            embedding: WIDTH,
            pooling: Reduction::Mean,
            ..DeepSetConfig::new(FEAT, OUT)
        },
        &mut rng,
    )?;
    let config = TransformerConfig {
        width: WIDTH,
        heads: 4,
        ff_width: 2 * WIDTH,
        blocks: 2,
        ..TransformerConfig::new(FEAT, OUT)
    };
    let set_tf = SetTransformer::new(&mut store, "set_transformer", config, &mut rng)?;
    let causal = CausalTransformer::new(&mut store, "causal", config, &mut rng)?;

    let store = &store;
    let encoders: Vec<(&str, Forward)> = vec![
        (
            "deep set (2+2 layers)",
            Box::new(|t, x, m| deep.forward(t, store, x, m)),
        ),
        (
            "set transformer (2 blocks, 4 heads, PMA)",
            Box::new(|t, x, m| set_tf.forward(t, store, x, m)),
        ),
        (
            "causal transformer (2 blocks, 4 heads)",
            Box::new(|t, x, m| causal.forward(t, store, x, m)),
        ),
    ];

    println!(
        "CPU, {} rayon threads; batch {batch}, set {set}, feat {FEAT}, width {WIDTH}, out {OUT}; median of {iterations}",
        rayon::current_num_threads()
    );
    println!(
        "{:<42} {:>12} {:>14} {:>12} {:>16}",
        "encoder", "infer ms", "infer ev/s", "train ms", "train ev/s"
    );
    let events = (batch * set) as f64;
    for (name, forward) in encoders.iter().filter(|(n, _)| n.contains(&filter)) {
        let infer = time(iterations, || {
            let mut tape = Tape::no_grad();
            let xv = tape.constant(x.clone());
            forward(&mut tape, xv, &mask)?;
            Ok(())
        })?;
        let train = time(iterations, || {
            let mut tape = Tape::new();
            let xv = tape.constant(x.clone());
            let y = forward(&mut tape, xv, &mask)?;
            let loss = tape.reduce_all(y, Reduction::Mean)?;
            tape.backward(loss)?.param_grads()?;
            Ok(())
        })?;
        println!(
            "{:<42} {:>12.2} {:>14.0} {:>12.2} {:>16.0}",
            name,
            infer * 1e3,
            events / infer,
            train * 1e3,
            events / train
        );
    }
    Ok(())
}
