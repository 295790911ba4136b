//! The flow and set-encoder layers, and the NPE, NLE and NRE estimators' training, run on
//! a GPU device and agree with the CPU: every constant a layer builds is made on its
//! input's device, so no op meets operands on two devices.
//!
//! wgpu runs on lavapipe in CI (`AMORTIZE_REQUIRE_WGPU=1` turns "no adapter" into a
//! failure); CUDA runs where a device exists (`AMORTIZE_REQUIRE_CUDA=1` likewise).

mod common;

use amortize::backend::{self, Reduction, UnaryOp};
use amortize::estimators::nle::{NleModel, NleOptions};
use amortize::estimators::npe::{NpeModel, NpeOptions};
use amortize::estimators::nre::{NreModel, NreOptions};
use amortize::estimators::set_npe::{SetEncoderConfig, SetNpeModel, SetNpeOptions};
use amortize::nn::sets::RaggedSets;
use amortize::nn::{
    CausalTransformer, ConditionalFlow, Conditioner, DeepSet, DeepSetConfig, FlowConfig,
    Permutation, SetTransformer, TransformerConfig,
};
use amortize::rng::{streams, PhiloxStream};
use amortize::tasks::sets::gaussian_mean;
use amortize::tasks::Task;
use amortize::train::{EpochReport, TrainReport};
use amortize::{Device, ParamStore, Result, Tape, Tensor, Var};
use common::{max_rel_err, randn, uniform};

/// Whether `device` can run; if not, explains the skip (or fails when `require_var` is 1).
fn usable(device: Device, require_var: &str, what: &str) -> bool {
    common::cuda_emulator::install();
    match backend::for_device(device) {
        Ok(_) => true,
        Err(e) => {
            if std::env::var(require_var).as_deref() == Ok("1") {
                panic!("{require_var}=1 but {device} is unusable: {e}");
            }
            eprintln!("skipping {what} on {device}: {e}");
            false
        }
    }
}

/// A copy of `store` with every parameter on `device`.
fn on_device(store: &ParamStore, device: Device) -> ParamStore {
    let mut moved = ParamStore::new();
    for (_, name, t) in store.iter() {
        moved.add(name, t.to_device(device).unwrap()).unwrap();
    }
    moved
}

/// Replaces every parameter by U(−0.4, 0.4) draws, so that the zero-initialized coupling
/// outputs are not the identity and every gradient is nonzero.
fn randomize(store: &mut ParamStore) {
    let ids: Vec<_> = store
        .iter()
        .map(|(id, _, t)| (id, t.shape().to_vec()))
        .collect();
    for (id, shape) in ids {
        let value = uniform(&shape, -0.4, 0.4, 100 + id.index() as u64);
        store.set(id, value).unwrap();
    }
}

/// Largest |a − b| / max(1, max |b|) over the elements: the error relative to the
/// tensor's scale, for gradients whose small entries are sums of large cancelling terms.
fn scaled_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    let scale = b.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / scale)
        .fold(0.0, f32::max)
}

/// A layer's output on one device: its values and the gradients of the mean output with
/// respect to every parameter (in store order) and to the input.
struct Run {
    output: Vec<f32>,
    param_grads: Vec<(String, Vec<f32>)>,
    input_grad: Vec<f32>,
}

/// Runs `layer` on `input` with `store`'s parameters on `device` and differentiates the
/// mean of its output.
fn run_on(
    device: Device,
    store: &ParamStore,
    input: &Tensor,
    layer: impl FnOnce(&mut Tape, &ParamStore, Var) -> Result<Var>,
) -> Run {
    let store = on_device(store, device);
    let mut tape = Tape::new();
    let x = tape.leaf(input.to_device(device).unwrap());
    let y = layer(&mut tape, &store, x).unwrap();
    assert_eq!(tape.value(y).device(), device, "the output left the device");
    let loss = tape.reduce_all(y, Reduction::Mean).unwrap();
    let grads = tape.backward(loss).unwrap();
    let param_grads = grads.param_grads().unwrap();
    Run {
        output: tape.value(y).to_vec().unwrap(),
        param_grads: store
            .iter()
            .map(|(id, name, _)| {
                let g = param_grads
                    .get(id)
                    .unwrap_or_else(|| panic!("{name} got no gradient"));
                (name.to_string(), g.to_vec().unwrap())
            })
            .collect(),
        input_grad: grads.get(x).unwrap().to_vec().unwrap(),
    }
}

/// Compares a run on `device` with the CPU's: outputs within `output_tol` (relative,
/// [`max_rel_err`]) and gradients within `grad_tol` (relative to each gradient's largest
/// entry, [`scaled_err`]). Returns the largest differences (output, gradient).
fn compare(what: &str, device: Device, gpu: &Run, cpu: &Run, tol: [f32; 2]) -> [f32; 2] {
    let out = max_rel_err(&gpu.output, &cpu.output);
    assert!(
        out <= tol[0],
        "{what} on {device}: output differs from the CPU by {out:.2e}"
    );
    let mut grad = scaled_err(&gpu.input_grad, &cpu.input_grad);
    assert!(
        grad <= tol[1],
        "{what} on {device}: input gradient differs by {grad:.2e}"
    );
    for ((name, g), (_, c)) in gpu.param_grads.iter().zip(&cpu.param_grads) {
        let e = scaled_err(g, c);
        assert!(
            e <= tol[1],
            "{what} on {device}: gradient of {name} differs by {e:.2e}"
        );
        grad = grad.max(e);
    }
    eprintln!("{what} on {device}: output {out:.2e}, gradients {grad:.2e} from the CPU");
    [out, grad]
}

/// Affine and spline flows: log q(θ | c), its gradients and the inverse map on `device`
/// against the CPU.
fn flows_match_the_cpu(device: Device, require_var: &str) {
    if !usable(device, require_var, "the flow parity") {
        return;
    }
    let rows = 48;
    // θ spread beyond the spline's [−5, 5] so the identity tails are exercised too.
    let theta = uniform(&[rows, 3], -6.0, 6.0, 1);
    let context = randn(&[rows, 2], 2);
    for (name, base) in [
        ("affine flow", FlowConfig::affine(3, 2, 3)),
        ("spline flow", FlowConfig::spline(3, 2, 3)),
    ] {
        let config = FlowConfig {
            conditioner: Conditioner {
                width: 16,
                hidden_layers: 2,
                activation: UnaryOp::Silu,
            },
            permutation: Permutation::Random,
            ..base
        };
        let mut store = ParamStore::new();
        let mut rng = PhiloxStream::new(3, streams::INIT, 0);
        let flow = ConditionalFlow::new(&mut store, "flow", config, &mut rng).unwrap();
        randomize(&mut store);
        let log_prob = |device: Device| {
            let c = context.to_device(device).unwrap();
            run_on(device, &store, &theta, |tape, store, t| {
                let c = tape.constant(c);
                flow.log_prob(tape, store, t, Some(c))
            })
        };
        // Within contract 2's 1e-4 for reductions: the log-density sums over three
        // coupling layers' matmuls and reductions, whose summation order differs.
        compare(
            &format!("{name} log_prob"),
            device,
            &log_prob(device),
            &log_prob(Device::Cpu),
            [1e-4, 1e-4],
        );
        let inverse = |device: Device| {
            let c = context.to_device(device).unwrap();
            run_on(device, &store, &theta, |tape, store, z| {
                let c = tape.constant(c);
                let (x, logdet) = flow.inverse(tape, store, z, Some(c))?;
                let logdet = tape.reshape(logdet, &[rows, 1])?;
                tape.concat(&[x, logdet])
            })
        };
        compare(
            &format!("{name} inverse"),
            device,
            &inverse(device),
            &inverse(Device::Cpu),
            [1e-4, 1e-4],
        );
    }
}

/// Sets of sizes 1..=5 with their mask, padded at the end.
fn ragged_batch(features: usize) -> (Tensor, Tensor) {
    let mut sets = RaggedSets::new(features).unwrap();
    for (i, size) in [3usize, 1, 5, 2, 4].into_iter().enumerate() {
        sets.push(&randn(&[size, features], 10 + i as u64).to_vec().unwrap())
            .unwrap();
    }
    sets.padded(&[0, 1, 2, 3, 4]).unwrap()
}

/// A deep set, a set transformer and a causal transformer over a ragged batch on
/// `device` against the CPU (outputs and gradients).
fn set_encoders_match_the_cpu(device: Device, require_var: &str) {
    if !usable(device, require_var, "the set-encoder parity") {
        return;
    }
    let features = 3;
    let (x, mask) = ragged_batch(features);
    let transformer = TransformerConfig {
        width: 16,
        heads: 2,
        ff_width: 24,
        blocks: 2,
        seeds: 2,
        ..TransformerConfig::new(features, 4)
    };
    // One store per encoder, so that every parameter of each must get a gradient.
    let mut stores = [ParamStore::new(), ParamStore::new(), ParamStore::new()];
    let mut rng = PhiloxStream::new(4, streams::INIT, 0);
    let deep_config = DeepSetConfig {
        width: 16,
        embedding: 8,
        ..DeepSetConfig::new(features, 4)
    };
    let deep = DeepSet::new(&mut stores[0], "deep", deep_config, &mut rng).unwrap();
    let set = SetTransformer::new(&mut stores[1], "set", transformer, &mut rng).unwrap();
    let causal = CausalTransformer::new(&mut stores[2], "causal", transformer, &mut rng).unwrap();
    type Forward<'a> = Box<dyn Fn(&mut Tape, &ParamStore, Var, &Tensor) -> Result<Var> + 'a>;
    let encoders: [(&str, Forward); 3] = [
        (
            "deep set",
            Box::new(|tape, store, x, mask| deep.forward(tape, store, x, mask)),
        ),
        (
            "set transformer",
            Box::new(|tape, store, x, mask| set.forward(tape, store, x, mask)),
        ),
        (
            "causal transformer",
            Box::new(|tape, store, x, mask| causal.forward(tape, store, x, mask)),
        ),
    ];
    for ((name, forward), store) in encoders.iter().zip(&stores) {
        let run = |device: Device| {
            // The mask comes from the host: uploaded once per call, like the sets.
            let mask = mask.to_device(device).unwrap();
            run_on(device, store, &x, |tape, store, x| {
                forward(tape, store, x, &mask)
            })
        };
        compare(name, device, &run(device), &run(Device::Cpu), [1e-4, 1e-4]);
    }
}

/// Asserts that two training runs' per-epoch losses agree to `tol` (relative).
fn same_curve(what: &str, device: Device, gpu: &TrainReport, cpu: &TrainReport) -> f32 {
    assert_eq!(
        gpu.history.len(),
        cpu.history.len(),
        "{what}: epochs differ"
    );
    let losses = |e: &EpochReport| [e.train_loss, e.validation_loss.unwrap()];
    let mut worst = 0.0f32;
    for (g, c) in gpu.history.iter().zip(&cpu.history) {
        for (a, b) in losses(g).into_iter().zip(losses(c)) {
            // As in tests/device_training.rs: each op agrees to 1e-5..1e-4, Adam steps
            // compound that; 1e-3 of the loss still fails a wrong gradient or shuffle.
            let err = (a - b).abs() / b.abs().max(1.0);
            assert!(
                err <= 1e-3,
                "{what} on {device}, epoch {}: loss {a} vs CPU {b}",
                g.epoch
            );
            worst = worst.max(err);
        }
    }
    eprintln!("{what} on {device}: losses within {worst:.2e} of the CPU's");
    worst
}

/// NPE (affine flow), NLE (spline flow), NRE and set NPE (deep set) train a few epochs
/// on `device` and follow the CPU's loss curves; the models come back with their weights on the CPU.
fn estimators_train_like_the_cpu(device: Device, require_var: &str) {
    if !usable(device, require_var, "the estimator training runs") {
        return;
    }
    let task = Task::TwoMoons;
    let (theta, x) = task.simulate_dataset(160, 5);
    let (prior, dim_x) = (task.prior(), task.dim_x());
    let train = |seed| amortize::train::TrainConfig {
        epochs: 3,
        batch_size: 32,
        warmup_steps: 3,
        seed,
        ..amortize::train::TrainConfig::default()
    };
    let cpu_only = |store: &ParamStore| {
        for (_, name, t) in store.iter() {
            assert_eq!(t.device(), Device::Cpu, "{name} was not moved back");
        }
    };

    let npe = |device| {
        let options = NpeOptions {
            layers: 2,
            spline: false,
            train: train(1),
            device,
            ..Default::default()
        };
        let (model, report) =
            NpeModel::train(&theta, &x, dim_x, prior.clone(), None, &options, |_| {}).unwrap();
        cpu_only(&model.store);
        report
    };
    same_curve("NPE", device, &npe(device), &npe(Device::Cpu));

    let nle = |device| {
        let options = NleOptions {
            layers: 2,
            spline: true,
            train: train(2),
            device,
            ..Default::default()
        };
        let (model, report) =
            NleModel::train(&theta, &x, dim_x, prior.clone(), None, &options, |_| {}).unwrap();
        cpu_only(&model.store);
        report
    };
    same_curve("NLE", device, &nle(device), &nle(Device::Cpu));

    let nre = |device| {
        let options = NreOptions {
            width: 16,
            hidden_layers: 2,
            atoms: 4,
            train: train(3),
            device,
            ..NreOptions::default()
        };
        let (model, report) =
            NreModel::train(&theta, &x, dim_x, prior.clone(), None, &options, |_| {}).unwrap();
        cpu_only(&model.store);
        report
    };
    same_curve("NRE", device, &nre(device), &nre(Device::Cpu));

    let mut rng = PhiloxStream::new(6, streams::TEST, 0);
    let mu = gaussian_mean::prior().sample(&mut rng, 48);
    let mut sets = RaggedSets::new(gaussian_mean::FEATURES).unwrap();
    for m in mu.chunks_exact(gaussian_mean::DIM) {
        let n = 1 + rng.below(12) as usize;
        sets.push(&gaussian_mean::simulate_set(m, n, &mut rng))
            .unwrap();
    }
    let set_npe = |device| {
        let mut options = SetNpeOptions::deep_set(gaussian_mean::FEATURES);
        options.encoder = SetEncoderConfig::DeepSet(DeepSetConfig {
            width: 16,
            embedding: 16,
            ..DeepSetConfig::new(gaussian_mean::FEATURES, 4)
        });
        options.layers = 2;
        options.train = amortize::train::TrainConfig {
            batch_size: 16,
            ..train(4)
        };
        options.device = device;
        let (model, report) =
            SetNpeModel::train(&mu, &sets, gaussian_mean::prior(), None, &options, |_| {}).unwrap();
        cpu_only(&model.store);
        report
    };
    same_curve("set NPE", device, &set_npe(device), &set_npe(Device::Cpu));
}

#[test]
fn wgpu_flows_match_the_cpu() {
    flows_match_the_cpu(Device::Wgpu(0), "AMORTIZE_REQUIRE_WGPU");
}

#[test]
fn cuda_flows_match_the_cpu() {
    flows_match_the_cpu(Device::Cuda(0), "AMORTIZE_REQUIRE_CUDA");
}

#[test]
fn wgpu_set_encoders_match_the_cpu() {
    set_encoders_match_the_cpu(Device::Wgpu(0), "AMORTIZE_REQUIRE_WGPU");
}

#[test]
fn cuda_set_encoders_match_the_cpu() {
    set_encoders_match_the_cpu(Device::Cuda(0), "AMORTIZE_REQUIRE_CUDA");
}

#[test]
fn wgpu_estimators_train_like_the_cpu() {
    estimators_train_like_the_cpu(Device::Wgpu(0), "AMORTIZE_REQUIRE_WGPU");
}

#[test]
fn cuda_estimators_train_like_the_cpu() {
    estimators_train_like_the_cpu(Device::Cuda(0), "AMORTIZE_REQUIRE_CUDA");
}
