//! The command line on bad input: a clear error, a failing exit status, and no output
//! file left behind.

mod common;

use common::wgpu_adapter_or_skip;

use std::path::{Path, PathBuf};
use std::process::Command;

use amortize::estimators::set_npe::SetEncoderConfig;
use amortize::io::npy::write_npy;

fn amortize(args: &[&str]) -> (bool, String) {
    amortize_with(&[], args)
}

/// [`amortize`] with extra environment variables.
fn amortize_with(env: &[(&str, &Path)], args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_amortize"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("amortize-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `amortize sample --model MODEL --obs OBS --num NUM --levels 5 EXTRA --out OUT`.
fn sample_few(model: &Path, obs: &Path, num: usize, extra: &[&str], out: &Path) -> (bool, String) {
    sample_few_with(&[], model, obs, num, extra, out)
}

/// [`sample_few`] with extra environment variables.
fn sample_few_with(
    env: &[(&str, &Path)],
    model: &Path,
    obs: &Path,
    num: usize,
    extra: &[&str],
    out: &Path,
) -> (bool, String) {
    let num = num.to_string();
    let args = [
        &["sample", "--model", s(model), "--obs", s(obs)][..],
        &["--num", &num, "--levels", "5"],
        extra,
        &["--out", s(out)],
    ]
    .concat();
    amortize_with(env, &args)
}

/// `amortize simulate --task two_moons --num NUM --out DIR`, which must succeed.
fn simulate_two_moons(num: usize, dir: &Path) {
    let (ok, err) = amortize(&[
        "simulate",
        "--task",
        "two_moons",
        "--num",
        &num.to_string(),
        "--out",
        s(dir),
    ]);
    assert!(ok, "{err}");
}

#[test]
fn bad_input_is_an_error_and_writes_nothing() {
    let dir = scratch("bad");
    let data = dir.join("data");
    let model = dir.join("model");
    let out = dir.join("draws.npy");

    let (ok, err) = amortize(&[
        "simulate",
        "--task",
        "nope",
        "--num",
        "10",
        "--out",
        s(&data),
    ]);
    assert!(!ok && err.contains("unknown task"), "{err}");
    assert!(!data.exists());

    // NaN in theta: training refuses, says how many rows, writes no model.
    simulate_two_moons(200, &data);
    let (theta, rows, cols) =
        amortize::io::npy::read_npy_matrix(data.join("theta.npy"), Some(2)).unwrap();
    let mut bad = theta.clone();
    bad[0] = f32::NAN;
    bad[7] = f32::NAN;
    write_npy(data.join("theta.npy"), &bad, &[rows, cols]).unwrap();
    let (ok, err) = amortize(&[
        "train",
        "--data",
        s(&data),
        "--task",
        "two_moons",
        "--out",
        s(&model),
        "--epochs",
        "1",
    ]);
    assert!(!ok && err.contains("2 row(s)"), "{err}");
    assert!(!model.exists());

    // x of the wrong width for the task.
    write_npy(data.join("theta.npy"), &theta, &[rows, cols]).unwrap();
    write_npy(data.join("x.npy"), &vec![0.0; rows * 3], &[rows, 3]).unwrap();
    let (ok, err) = amortize(&[
        "train",
        "--data",
        s(&data),
        "--task",
        "two_moons",
        "--out",
        s(&model),
        "--epochs",
        "1",
    ]);
    assert!(!ok && err.contains("columns"), "{err}");
    assert!(!model.exists());

    // A real (tiny) model, then bad sampling requests.
    simulate_two_moons(200, &data);
    let (ok, err) = amortize(&[
        "train",
        "--data",
        s(&data),
        "--task",
        "two_moons",
        "--out",
        s(&model),
        "--epochs",
        "1",
        "--width",
        "8",
    ]);
    assert!(ok, "{err}");
    let obs = dir.join("obs.npy");
    write_npy(&obs, &[0.1, 0.2], &[1, 2]).unwrap();
    let empty = dir.join("empty.npy");
    write_npy(&empty, &[], &[0, 2]).unwrap();
    let missing = dir.join("missing.npy");
    let cases: [(&[&str], &str); 5] = [
        (&["--obs", s(&missing)], "missing.npy"),
        (&["--obs", s(&empty)], "empty"),
        (&["--obs", s(&obs), "--sampler", "gibbs"], "unknown sampler"),
        (
            &["--obs", s(&obs), "--compose", "magic"],
            "unknown composition",
        ),
        (&["--obs", s(&obs), "--device", "tpu:0"], "device"),
    ];
    for (extra, expect) in cases {
        let mut args = vec![
            "sample",
            "--model",
            s(&model),
            "--num",
            "10",
            "--out",
            s(&out),
            "--levels",
            "5",
        ];
        args.extend_from_slice(extra);
        let (ok, err) = amortize(&args);
        assert!(!ok && err.contains(expect), "{extra:?}: {err}");
        assert!(!out.exists(), "{extra:?} left {}", out.display());
    }

    // A model of another format version.
    let config = model.join("config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("\"format_version\": 4", "\"format_version\": 5"),
    )
    .unwrap();
    let (ok, err) = amortize(&[
        "sample",
        "--model",
        s(&model),
        "--obs",
        s(&obs),
        "--num",
        "10",
        "--out",
        s(&out),
    ]);
    assert!(!ok && err.contains("format version"), "{err}");
    assert!(!out.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `amortize train --estimator ESTIMATOR` on the two_moons pairs in `data` for `epochs`,
/// writing `model`, with `extra` arguments.
fn train_two_moons(
    estimator: &str,
    data: &Path,
    model: &Path,
    epochs: &str,
    extra: &[&str],
) -> (bool, String) {
    train_two_moons_with(&[], estimator, data, model, epochs, extra)
}

/// [`train_two_moons`] with extra environment variables.
fn train_two_moons_with(
    env: &[(&str, &Path)],
    estimator: &str,
    data: &Path,
    model: &Path,
    epochs: &str,
    extra: &[&str],
) -> (bool, String) {
    let args = [
        &["train", "--estimator", estimator, "--data", s(data)][..],
        &["--task", "two_moons", "--out", s(model), "--epochs", epochs],
        extra,
    ]
    .concat();
    amortize_with(env, &args)
}

/// Trains `estimator` on two_moons for two epochs (extra arguments `train_args`),
/// samples 50 draws given `n` observations (extra arguments `sample_args`), checks them,
/// evaluates on obs1.
fn train_sample_evaluate(estimator: &str, n: usize, train_args: &[&str], sample_args: &[&str]) {
    let dir = scratch(&format!("{estimator}-n{n}-{}", train_args.join("")));
    let (data, model, out) = (dir.join("data"), dir.join("model"), dir.join("draws.npy"));
    simulate_two_moons(300, &data);
    let (ok, err) = train_two_moons(estimator, &data, &model, "2", train_args);
    assert!(ok, "{err}");
    if let Some(k) = train_args.iter().position(|a| *a == "--ensemble") {
        let members = train_args[k + 1].parse::<usize>().unwrap();
        let config = amortize::estimators::ensemble::EnsembleConfig::load(&model).unwrap();
        assert_eq!(
            (config.member_kind.as_str(), config.members),
            (estimator, members)
        );
    }
    let obs = dir.join("obs.npy");
    let values: Vec<f32> = (0..n).flat_map(|j| [0.1 + 0.01 * j as f32, 0.2]).collect();
    write_npy(&obs, &values, &[n, 2]).unwrap();
    let sample = [
        &["sample", "--model", s(&model), "--obs", s(&obs)][..],
        &["--num", "50", "--out", s(&out)],
        sample_args,
    ]
    .concat();
    let (ok, err) = amortize(&sample);
    assert!(ok, "{err}");
    let (draws, rows, cols) = amortize::io::npy::read_npy_matrix(&out, Some(2)).unwrap();
    assert_eq!((rows, cols), (50, 2));
    // The closed box: a briefly trained score network's draws can round to its edge.
    assert!(
        draws.iter().all(|v| v.abs() <= 1.0),
        "{estimator} draws stay in the prior's box: {draws:?}"
    );
    let evaluate = [
        &["evaluate", "--task", "two_moons", "--model", s(&model)][..],
        &["--observation", "1", "--num", "200"],
        sample_args,
    ]
    .concat();
    let (ok, err) = amortize(&evaluate);
    assert!(ok, "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_unknown_estimator_is_an_error_and_writes_no_model() {
    let dir = scratch("flowz");
    let (data, model) = (dir.join("data"), dir.join("model"));
    simulate_two_moons(50, &data);
    let (ok, err) = amortize(&[
        "train",
        "--estimator",
        "flowz",
        "--data",
        s(&data),
        "--task",
        "two_moons",
        "--out",
        s(&model),
    ]);
    assert!(!ok && err.contains("unknown estimator"), "{err}");
    assert!(!model.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_flow_of_npe_and_nle_is_chosen_from_the_command_line() {
    let dir = scratch("flow-shape");
    let data = dir.join("data");
    simulate_two_moons(100, &data);
    let train = |estimator, model: &Path, flow: &[&str]| {
        train_two_moons(estimator, &data, model, "1", flow)
    };
    let shape = ["--flow", "affine", "--flow-layers", "3", "--width", "16"];
    let model = dir.join("npe");
    let (ok, err) = train("npe", &model, &shape);
    assert!(ok, "{err}");
    let flow = amortize::estimators::npe::NpeModel::load(&model)
        .unwrap()
        .config
        .flow;
    assert_eq!((flow.layers, flow.conditioner.width), (3, 16));
    assert!(
        matches!(
            flow.kind,
            amortize::nn::coupling::CouplingKind::Affine { .. }
        ),
        "{:?}",
        flow.kind
    );
    let model = dir.join("nle");
    let (ok, err) = train("nle", &model, &["--flow", "spline", "--flow-layers", "2"]);
    assert!(ok, "{err}");
    let flow = amortize::estimators::nle::NleModel::load(&model)
        .unwrap()
        .config
        .flow;
    assert_eq!(flow.layers, 2);
    assert!(
        matches!(
            flow.kind,
            amortize::nn::coupling::CouplingKind::Spline { .. }
        ),
        "{:?}",
        flow.kind
    );
    let model = dir.join("bad");
    let (ok, err) = train("npe", &model, &["--flow", "maf"]);
    assert!(!ok && err.contains("unknown flow"), "{err}");
    assert!(!model.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_score_model_in_theta_natural_space_trains_samples_and_evaluates() {
    // Sampled in θ itself, the two-epoch network's draws leave the box; the rejected
    // ones are replaced, so all 50 lie inside (checked by train_sample_evaluate).
    train_sample_evaluate(
        "score",
        2,
        &["--theta-space", "natural"],
        &["--levels", "10"],
    );
}

#[test]
fn a_model_trains_on_every_simulation_without_a_validation_split() {
    train_sample_evaluate("npe", 1, &["--validation-fraction", "0"], &[]);
}

#[test]
fn evaluate_ends_with_the_mean_and_max_c2st_of_its_observations() {
    let dir = scratch("evaluate-mean");
    let (data, model) = (dir.join("data"), dir.join("model"));
    simulate_two_moons(300, &data);
    let (ok, err) = train_two_moons("npe", &data, &model, "2", &[]);
    assert!(ok, "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_amortize"))
        .args(["evaluate", "--task", "two_moons", "--model", s(&model)])
        .args(["--observation", "1,2", "--num", "200"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let c2st = |label: &str| -> f64 {
        let line = stdout.lines().find(|l| l.starts_with(label)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let (obs1, obs2, mean) = (c2st("obs1"), c2st("obs2"), c2st("mean"));
    // Printed to three decimals, so the mean of the printed values is within 1e-3.
    assert!((mean - (obs1 + obs2) / 2.0).abs() <= 1e-3, "{stdout}");
    assert!(
        stdout.contains(&format!("(max {:.3})", obs1.max(obs2))),
        "{stdout}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_npe_model_trains_samples_and_evaluates_from_the_command_line() {
    train_sample_evaluate("npe", 1, &[], &[]);
}

#[test]
fn npe_nle_and_nre_sample_several_observations_by_mcmc_from_the_command_line() {
    let mcmc = ["--chains", "10", "--warmup", "10"];
    train_sample_evaluate("npe", 3, &[], &mcmc);
    train_sample_evaluate("nle", 3, &[], &mcmc);
    train_sample_evaluate("nre", 3, &[], &mcmc);
}

#[test]
fn ensembles_train_sample_and_evaluate_from_the_command_line() {
    let ensemble = ["--ensemble", "2"];
    train_sample_evaluate("npe", 1, &ensemble, &[]);
    train_sample_evaluate("nre", 2, &ensemble, &["--chains", "10", "--warmup", "10"]);
    train_sample_evaluate("score", 3, &ensemble, &["--levels", "10"]);
    let dir = scratch("ensemble-of-none");
    let (data, model) = (dir.join("data"), dir.join("model"));
    simulate_two_moons(50, &data);
    let (ok, err) = train_two_moons("npe", &data, &model, "1", &["--ensemble", "0"]);
    assert!(!ok && err.contains("at least 1"), "{err}");
    assert!(!model.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn training_options_out_of_range_are_errors_and_write_nothing() {
    let dir = scratch("train-options");
    let (data, model) = (dir.join("data"), dir.join("model"));
    simulate_two_moons(50, &data);
    let (ok, err) = train_two_moons("score", &data, &model, "1", &["--level-power", "0"]);
    assert!(!ok && err.contains("level-draw exponent"), "{err}");
    let (ok, err) = train_two_moons("nre", &data, &model, "1", &["--atoms", "1"]);
    assert!(!ok && err.contains("at least 2 atoms"), "{err}");
    let (ok, err) = train_two_moons("nre", &data, &model, "1", &["--nre-activation", "tanh"]);
    assert!(
        !ok && err.contains("unknown NRE activation \"tanh\""),
        "{err}"
    );
    let (ok, err) = train_two_moons("npe", &data, &model, "1", &["--validation-fraction", "1"]);
    assert!(
        !ok && err.contains("validation_fraction must be in [0, 1)"),
        "{err}"
    );
    let (ok, err) = train_two_moons("npe", &data, &model, "1", &["--weight-decay", "-0.1"]);
    assert!(!ok && err.contains("weight_decay: -0.1"), "{err}");
    let (ok, err) = train_two_moons("npe", &data, &model, "1", &["--patience", "0"]);
    assert!(!ok && err.contains("patience must be at least 1"), "{err}");
    for flag in ["--exchangeable-blocks", "--iid-draws"] {
        let (ok, err) = train_two_moons("nle", &data, &model, "1", &[flag, "2"]);
        assert!(!ok && err.contains("not made of 2 iid draws"), "{err}");
    }
    let (ok, err) = train_two_moons("score", &data, &model, "1", &["--theta-space", "polar"]);
    assert!(!ok && err.contains("unknown θ space \"polar\""), "{err}");
    let (ok, err) = train_two_moons("npe", &data, &model, "1", &["--theta-space", "natural"]);
    assert!(
        !ok && err.contains("--theta-space is the score estimator's"),
        "{err}"
    );
    assert!(!model.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_score_model_trains_on_wgpu_from_the_command_line() {
    if !wgpu_adapter_or_skip() {
        return;
    }
    let dir = scratch("wgpu-train");
    let (data, model) = (dir.join("data"), dir.join("model"));
    simulate_two_moons(200, &data);
    let args = [
        "train",
        "--data",
        s(&data),
        "--task",
        "two_moons",
        "--out",
        s(&model),
        "--epochs",
        "2",
        "--width",
        "8",
        "--device",
        "wgpu:0",
    ];
    let (ok, err) = amortize(&args);
    assert!(ok, "{err}");
    assert!(amortize::estimators::ScoreModel::load(&model).is_ok());
    let (ok, err) = amortize(&[
        "train",
        "--data",
        s(&data),
        "--task",
        "two_moons",
        "--out",
        s(&dir.join("m2")),
        "--device",
        "cuda:7",
    ]);
    assert!(!ok && err.contains("cuda:7"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The environment under which `amortize` sees cuda:0: the CUDA emulator preloaded (and
/// logging its launches) when the tests run on it, nothing more with a real device; `None`
/// (after printing why) when there is neither and `AMORTIZE_REQUIRE_CUDA` is not 1.
fn cuda_environment(test: &str) -> Option<Vec<(&'static str, PathBuf)>> {
    if let Some(library) = common::cuda_emulator::library() {
        return Some(vec![
            ("LD_PRELOAD", library),
            ("AMORTIZE_CUDA_EMULATOR_LOG", PathBuf::from("1")),
        ]);
    }
    match amortize::backend::for_device(amortize::Device::Cuda(0)) {
        Ok(_) => Some(Vec::new()),
        Err(e) if std::env::var("AMORTIZE_REQUIRE_CUDA").as_deref() == Ok("1") => {
            panic!("{test}: AMORTIZE_REQUIRE_CUDA=1 but cuda:0 is unusable: {e}")
        }
        Err(e) => {
            eprintln!("skipping {test}: {e}");
            None
        }
    }
}

#[test]
fn a_score_model_trains_and_samples_on_cuda_from_the_command_line() {
    let test = "a_score_model_trains_and_samples_on_cuda_from_the_command_line";
    let Some(env) = cuda_environment(test) else {
        return;
    };
    let env: Vec<(&str, &Path)> = env.iter().map(|(k, v)| (*k, v.as_path())).collect();
    let dir = scratch("cuda");
    let (data, model) = (dir.join("data"), dir.join("model"));
    simulate_two_moons(300, &data);
    let extra = ["--width", "16", "--device", "cuda:0"];
    let (ok, err) = train_two_moons_with(&env, "score", &data, &model, "2", &extra);
    assert!(ok, "{err}");
    // On the emulator its log shows the kernels ran there: no silent CPU fallback.
    let emulated = common::cuda_emulator::requested();
    assert!(!emulated || err.contains("launch matmul_nn"), "{err}");
    let obs = dir.join("obs.npy");
    write_npy(&obs, &[0.1, 0.2, 0.0, 0.3, 0.2, 0.1], &[3, 2]).unwrap();
    // The same model, observations and seed on both devices: the fused kernel draws what
    // the CPU sampler draws, up to f32 rounding along the chain (the tolerance of
    // tests/cuda_samplers.rs); GAUSS's pilot runs on each device too.
    let draws = |device: &str| {
        let out = dir.join(format!("draws-{}.npy", device.replace(':', "")));
        let extra = ["--seed", "7", "--device", device];
        let (ok, err) = sample_few_with(&env, &model, &obs, 100, &extra, &out);
        assert!(ok, "{device}: {err}");
        let fused = err.contains("launch sample_diffusion");
        assert!(!emulated || fused == (device != "cpu"), "{device}: {err}");
        amortize::io::npy::read_npy(&out).unwrap()
    };
    let (cpu, cuda) = (draws("cpu"), draws("cuda:0"));
    assert_eq!(cpu.shape, [100, 2]);
    assert_eq!(cuda.shape, cpu.shape);
    let err = common::max_rel_err(&cuda.data, &cpu.data);
    assert!(err <= 2e-3, "cuda:0 draws differ from the CPU's by {err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn npe_nle_and_nre_train_on_wgpu_from_the_command_line() {
    if !wgpu_adapter_or_skip() {
        return;
    }
    let dir = scratch("wgpu-train-flows");
    let data = dir.join("data");
    simulate_two_moons(100, &data);
    for estimator in ["npe", "nle", "nre"] {
        let model = dir.join(estimator);
        let (ok, err) = train_two_moons(estimator, &data, &model, "1", &["--device", "wgpu:0"]);
        assert!(ok, "{estimator}: {err}");
        let loaded = match estimator {
            "npe" => amortize::estimators::npe::NpeModel::load(&model).map(drop),
            "nle" => amortize::estimators::nle::NleModel::load(&model).map(drop),
            _ => amortize::estimators::nre::NreModel::load(&model).map(drop),
        };
        assert!(loaded.is_ok(), "{estimator}: {loaded:?}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn models_of_iid_draws_train_evaluate_and_sample_from_the_command_line() {
    let dir = scratch("iid-draws");
    let (data, out) = (dir.join("data"), dir.join("draws.npy"));
    let (ok, err) = amortize(&[
        "simulate",
        "--task",
        "slcp",
        "--num",
        "200",
        "--out",
        s(&data),
    ]);
    assert!(ok, "{err}");
    // NLE learns one draw and composes an observation's four; set NPE reads them as one
    // set. Both take an observation's draws as rows.
    for (estimator, evaluated) in [
        ("nle", "composed of its draws"),
        ("set_npe", "draws are one set"),
    ] {
        let model = dir.join(estimator);
        let train = |draws: &str, more: &[&str]| {
            let args = [
                &["train", "--estimator", estimator, "--data", s(&data)][..],
                &["--task", "slcp", "--out", s(&model), "--epochs", "1"],
                &["--iid-draws", draws],
                more,
            ]
            .concat();
            amortize(&args)
        };
        let (ok, err) = train("3", &[]);
        assert!(!ok && err.contains("3 iid draws"), "{err}");
        if estimator == "set_npe" {
            let (ok, err) = train("1", &[]);
            assert!(!ok && err.contains("give --iid-draws K"), "{err}");
            let (ok, err) = train("4", &["--set-encoder", "lstm"]);
            assert!(!ok && err.contains("unknown set encoder \"lstm\""), "{err}");
            assert!(!model.exists());
            let (ok, err) = train("4", &["--width", "30"]);
            assert!(!ok && err.contains("multiple of heads 4"), "{err}");
            assert!(!model.exists());
            // The deep set is the other encoder; the model file names it.
            let (ok, err) = train("4", &["--set-encoder", "deep_set", "--width", "16"]);
            assert!(ok, "{err}");
            let loaded = amortize::estimators::set_npe::SetNpeModel::load(&model).unwrap();
            assert!(matches!(
                loaded.config.encoder,
                SetEncoderConfig::DeepSet(c) if c.width == 16
            ));
            std::fs::remove_dir_all(&model).unwrap();
        }
        assert!(!model.exists());
        // Set NPE is sampled as an ensemble of two: the mixture of their flows.
        let members: &[&str] = match estimator {
            "set_npe" => &["--ensemble", "2"],
            _ => &[],
        };
        let (ok, err) = train("4", members);
        assert!(ok, "{err}");
        let mcmc = ["--chains", "10", "--warmup", "10"];
        let evaluate = [
            &["evaluate", "--task", "slcp", "--model", s(&model)][..],
            &["--observation", "4", "--num", "50"],
            &mcmc,
        ]
        .concat();
        let (ok, err) = amortize(&evaluate);
        assert!(ok && err.contains(evaluated), "{estimator}: {err}");
        // One slcp observation is [1, 8]; this model reads its four draws as [4, 2].
        let (one_row, as_draws) = (dir.join("obs-1x8.npy"), dir.join("obs-4x2.npy"));
        let obs: Vec<f32> = (0..8).map(|i| 0.1 * i as f32).collect();
        write_npy(&one_row, &obs, &[1, 8]).unwrap();
        write_npy(&as_draws, &obs, &[4, 2]).unwrap();
        let sample = |obs: &Path| {
            let args = [
                &["sample", "--model", s(&model), "--obs", s(obs)][..],
                &["--num", "50", "--out", s(&out)],
                &mcmc,
            ]
            .concat();
            amortize(&args)
        };
        let (ok, err) = sample(&one_row);
        assert!(!ok && err.contains("--iid-draws 4"), "{err}");
        assert!(!out.exists());
        let (ok, err) = sample(&as_draws);
        assert!(ok, "{err}");
        let (_, rows, cols) = amortize::io::npy::read_npy_matrix(&out, Some(5)).unwrap();
        assert_eq!((rows, cols), (50, 5));
        std::fs::remove_file(&out).unwrap();
        // Eight points are two observations to NLE; to set NPE, a set twice as large as
        // any it was trained on, which it samples with a warning.
        let eight = dir.join("obs-8x2.npy");
        write_npy(&eight, &[obs.clone(), obs].concat(), &[8, 2]).unwrap();
        let (ok, err) = sample(&eight);
        let warned = err.contains("larger than any the model was trained on (4)");
        assert!(
            ok && warned == (estimator == "set_npe"),
            "{estimator}: {err}"
        );
        std::fs::remove_file(&out).unwrap();
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_score_network_with_a_set_encoder_trains_and_samples_from_the_command_line() {
    let dir = scratch("x-encoder");
    let (data, model, out) = (dir.join("data"), dir.join("model"), dir.join("draws.npy"));
    let (ok, err) = amortize(&[
        "simulate",
        "--task",
        "slcp",
        "--num",
        "100",
        "--out",
        s(&data),
    ]);
    assert!(ok, "{err}");
    let train = |estimator: &str, more: &[&str]| {
        let args = [
            &["train", "--estimator", estimator, "--data", s(&data)][..],
            &[
                "--task",
                "slcp",
                "--out",
                s(&model),
                "--epochs",
                "1",
                "--width",
                "16",
            ],
            more,
        ]
        .concat();
        amortize(&args)
    };
    let refusals: [(&str, &[&str], &str); 6] = [
        (
            "score",
            &["--x-encoder", "lstm"],
            "unknown x encoder \"lstm\"",
        ),
        (
            "score",
            &["--set-encoder", "deep_set", "--iid-draws", "4"],
            "--set-encoder is set NPE's",
        ),
        (
            "score",
            &[
                "--x-encoder",
                "deep_set",
                "--iid-draws",
                "4",
                "--gaussian-base",
            ],
            "cannot sit under a set encoder",
        ),
        (
            "nre",
            &["--gaussian-base"],
            "--gaussian-base is the score estimator's",
        ),
        (
            "score",
            &["--x-encoder", "set_transformer"],
            "give --iid-draws K",
        ),
        (
            "npe",
            &["--x-encoder", "deep_set", "--iid-draws", "4"],
            "--x-encoder is the score estimator's",
        ),
    ];
    for (estimator, more, expect) in refusals {
        let (ok, err) = train(estimator, more);
        assert!(!ok && err.contains(expect), "{more:?}: {err}");
        assert!(!model.exists(), "{more:?} left a model");
    }
    let (ok, err) = train(
        "score",
        &["--iid-draws", "4", "--x-encoder", "set_transformer"],
    );
    assert!(ok, "{err}");
    let loaded = amortize::estimators::ScoreModel::load(&model).unwrap();
    assert!(
        matches!(
            loaded.config.network.x_encoder,
            Some(SetEncoderConfig::SetTransformer(c)) if c.in_features == 2
        ),
        "{:?}",
        loaded.config.network
    );
    assert_eq!(loaded.config.max_cardinality, Some(4));
    // An observation's four points are one set; eight are larger than any in training.
    let obs = dir.join("obs.npy");
    let points: Vec<f32> = (0..16).map(|i| 0.1 * i as f32).collect();
    for (rows, warned) in [(4, false), (8, true)] {
        write_npy(&obs, &points[..2 * rows], &[rows, 2]).unwrap();
        let (ok, err) = sample_few(&model, &obs, 20, &[], &out);
        assert!(ok, "{err}");
        assert_eq!(
            err.contains("larger than any the model was trained on (4)"),
            warned,
            "{err}"
        );
        let (draws, num, _) = amortize::io::npy::read_npy_matrix(&out, Some(5)).unwrap();
        assert_eq!(num, 20);
        assert!(draws.iter().all(|v| v.is_finite()));
    }
    // The draws are one set, so there is nothing to compose: --compose is said to do
    // nothing, not silently ignored.
    let (ok, err) = sample_few(&model, &obs, 5, &["--compose", "geffner"], &out);
    assert!(ok && err.contains("--compose has no effect"), "{err}");
    let (ok, err) = amortize(&[
        "evaluate",
        "--task",
        "slcp",
        "--model",
        s(&model),
        "--observation",
        "2",
        "--num",
        "50",
        "--levels",
        "5",
    ]);
    assert!(ok && err.contains("draws are one set"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
