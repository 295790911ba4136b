//! Forward + backward of a residual MLP (3 hidden layers of width 128, SiLU) on 4096
//! rows through the tape, with the MSE loss: the inner loop of training. Throughput is
//! rows/s.
//!
//! Run: `cargo bench --bench mlp`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use amortize::backend::UnaryOp;
use amortize::nn::{MlpShape, ResidualMlp};
use amortize::rng::{streams, PhiloxStream};
use amortize::{ParamStore, Tape, Tensor};

const ROWS: usize = 4096;
const IN: usize = 20;
const WIDTH: usize = 128;
const OUT: usize = 10;

fn random(shape: &[usize], seed: u64) -> Tensor {
    let mut v = vec![0.0; shape.iter().product()];
    PhiloxStream::new(seed, streams::TEST, 0).fill_normal(0.0, 1.0, &mut v);
    Tensor::from_vec(v, shape).unwrap()
}

fn mlp(c: &mut Criterion) {
    let mut store = ParamStore::new();
    let mut rng = PhiloxStream::new(0, streams::INIT, 0);
    let net = ResidualMlp::new(
        &mut store,
        "net",
        MlpShape {
            in_features: IN,
            width: WIDTH,
            out_features: OUT,
            hidden_layers: 3,
            activation: UnaryOp::Silu,
        },
        &mut rng,
    )
    .unwrap();
    let (x, y) = (random(&[ROWS, IN], 1), random(&[ROWS, OUT], 2));

    let mut group = c.benchmark_group("residual_mlp_w128_3layers");
    group.throughput(Throughput::Elements(ROWS as u64));
    group.bench_function("forward_backward_4096_rows", |bench| {
        bench.iter(|| {
            let mut tape = Tape::new();
            let (xv, yv) = (tape.constant(x.clone()), tape.constant(y.clone()));
            let pred = net.forward(&mut tape, &store, xv).unwrap();
            let loss = tape.mse(pred, yv).unwrap();
            tape.backward(loss).unwrap().param_grads().unwrap()
        })
    });
    group.bench_function("forward_no_grad_4096_rows", |bench| {
        bench.iter(|| {
            let mut tape = Tape::no_grad();
            let xv = tape.constant(x.clone());
            let pred = net.forward(&mut tape, &store, xv).unwrap();
            tape.value(pred).numel()
        })
    });
    group.finish();
}

criterion_group!(benches, mlp);
criterion_main!(benches);
