//! The score estimator end to end on the CPU: training reaches a stated C2ST, models
//! survive a save/load round trip bit for bit, bad input is an error, and sampling on wgpu
//! (both compositions) gives the CPU's draws.

mod common;

use common::{max_rel_err, wgpu_adapter_or_skip};

use amortize::diagnostics::c2st::c2st;
use amortize::estimators::ensemble::Ensemble;
use amortize::estimators::score_model::ThetaSpace;
use amortize::estimators::set_npe::{draw_subsets, subsets_per_simulation};
use amortize::estimators::{
    Composition, SamplingOptions, ScoreModel, ScoreTrainOptions, Standardization,
};
use amortize::nn::SetEncoderKind;
use amortize::priors::Prior;
use amortize::rng::{streams, PhiloxStream};
use amortize::samplers::SamplerConfig;
use amortize::tasks::Task;

/// A small gaussian10 model: 3000 simulations, width 32, 40 epochs (a few seconds).
fn small_model() -> ScoreModel {
    let task = Task::Gaussian10;
    let (theta, x) = task.simulate_dataset(3000, 4);
    let mut options = ScoreTrainOptions {
        width: 32,
        ..ScoreTrainOptions::default()
    };
    options.train.epochs = 40;
    options.train.batch_size = 128;
    options.train.seed = 4;
    ScoreModel::train(
        &theta,
        &x,
        task.dim_x(),
        task.prior(),
        Some("gaussian10".into()),
        &options,
        |_| {},
    )
    .unwrap()
    .0
}

fn observations(n: usize) -> Vec<f32> {
    let task = Task::Gaussian10;
    let mut rng = PhiloxStream::new(5, streams::TEST, 0);
    let theta = task.prior().sample(&mut rng, 1);
    task.simulate(&theta.repeat(n), &mut rng).unwrap()
}

fn options(levels: usize, composition: Composition) -> SamplingOptions {
    SamplingOptions {
        levels,
        sampler: SamplerConfig {
            seed: 8,
            ..SamplerConfig::default()
        },
        composition,
        device: amortize::Device::Cpu,
    }
}

#[test]
fn a_small_budget_model_reaches_a_stated_c2st_and_round_trips_bitwise() {
    let model = small_model();
    let task = Task::Gaussian10;
    {
        let obs = observations(1);
        let draws = model
            .sample(&obs, 2000, &options(50, Composition::Geffner), &|_| {})
            .unwrap()
            .samples;
        let reference = task
            .analytic_posterior(&obs)
            .unwrap()
            .sample(&mut PhiloxStream::new(6, streams::TEST, 0), 2000);
        let accuracy = c2st(&draws, &reference, 10).unwrap();
        // At 3000 simulations and 40 epochs the posterior is visibly imperfect (≈ 0.68);
        // 0.75 still separates a working estimator from a broken one (the prior against
        // the posterior scores ≈ 0.9, a sign error or missing standardization ≈ 1.0).
        assert!(accuracy < 0.75, "C2ST {accuracy}");
    }

    let dir = std::env::temp_dir().join(format!("amortize-test-model-{}", std::process::id()));
    model.save(&dir).unwrap();
    let loaded = ScoreModel::load(&dir).unwrap();
    assert_eq!(loaded.config, model.config);
    let obs = observations(2);
    let opts = options(20, Composition::Geffner);
    let a = model.sample(&obs, 200, &opts, &|_| {}).unwrap().samples;
    let b = loaded.sample(&obs, 200, &opts, &|_| {}).unwrap().samples;
    assert!(
        a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
        "draws differ after save/load"
    );

    // A file of another format version, a missing tensor, a mis-shaped tensor.
    let config_path = dir.join("config.json");
    let text = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(
        &config_path,
        text.replace("\"format_version\": 4", "\"format_version\": 99"),
    )
    .unwrap();
    let err = ScoreModel::load(&dir).unwrap_err().to_string();
    assert!(err.contains("version") && err.contains("99"), "{err}");
    // Versions 1 to 3, the files written before the newer fields existed, still load.
    for old in ["1", "2", "3"] {
        std::fs::write(
            &config_path,
            text.replace(
                "\"format_version\": 4",
                &format!("\"format_version\": {old}"),
            ),
        )
        .unwrap();
        assert_eq!(ScoreModel::load(&dir).unwrap().config, model.config);
    }
    std::fs::write(&config_path, &text).unwrap();
    let rewrite = |keep: &dyn Fn(&str) -> Option<amortize::Tensor>| {
        let mut store = amortize::ParamStore::new();
        for (_, name, t) in model.store.iter() {
            if let Some(t) = keep(name).or(Some(t.clone())).filter(|t| t.numel() > 0) {
                store.add(name, t).unwrap();
            }
        }
        amortize::io::model::save_model(&dir, "score", &model.config, &store).unwrap();
        ScoreModel::load(&dir).unwrap_err().to_string()
    };
    let err = rewrite(&|name| (name == "head.output.bias").then(|| amortize::Tensor::zeros(&[3])));
    assert!(
        err.contains("head.output.bias") && err.contains("shape"),
        "{err}"
    );
    let err =
        rewrite(&|name| (name == "x_net.input.weight").then(|| amortize::Tensor::zeros(&[0])));
    assert!(err.contains("missing tensor x_net.input.weight"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn training_and_sampling_reject_bad_input() {
    let task = Task::Gaussian10;
    let (mut theta, x) = task.simulate_dataset(100, 1);
    theta[3] = f32::NAN;
    theta[25] = f32::INFINITY;
    let options = ScoreTrainOptions::default();
    let err = ScoreModel::train(&theta, &x, 10, task.prior(), None, &options, |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("2 row(s)") && err.contains("NaN"), "{err}");
    let err = ScoreModel::train(&theta[..50], &x, 10, task.prior(), None, &options, |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("theta"), "{err}");

    let model = small_model_untrained();
    let opts = options_default();
    assert!(model
        .sample(&[], 10, &opts, &|_| {})
        .unwrap_err()
        .to_string()
        .contains("empty"));
    assert!(model.sample(&[0.0; 7], 10, &opts, &|_| {}).is_err());
    let mut obs = observations(1);
    obs[0] = f32::NAN;
    assert!(model
        .sample(&obs, 10, &opts, &|_| {})
        .unwrap_err()
        .to_string()
        .contains("NaN"));
}

fn small_model_untrained() -> ScoreModel {
    let task = Task::Gaussian10;
    let (theta, x) = task.simulate_dataset(64, 1);
    let mut options = ScoreTrainOptions {
        width: 8,
        ..ScoreTrainOptions::default()
    };
    options.train.epochs = 1;
    ScoreModel::train(&theta, &x, 10, task.prior(), None, &options, |_| {})
        .unwrap()
        .0
}

fn options_default() -> SamplingOptions {
    SamplingOptions {
        levels: 10,
        ..SamplingOptions::default()
    }
}

/// A briefly trained model on θ ~ U([−1, 1] × [0, 5]), x = θ + N(0, 0.1²): its box prior
/// enters the composed score through the scaled logit and the standardization.
fn small_box_model() -> ScoreModel {
    small_box_model_seeded(6, 0)
}

/// [`small_box_model`] on the pairs of simulation seed `data`, trained with `seed`.
fn small_box_model_seeded(data: u64, seed: u64) -> ScoreModel {
    small_box_model_in(ThetaSpace::Unconstrained, data, seed)
}

/// The box prior of [`small_box_model`] and 256 pairs (θ, x) of simulation seed `data`.
fn box_pairs(data: u64) -> (Prior, Vec<f32>, Vec<f32>) {
    let prior = Prior::uniform(&[-1.0, 0.0], &[1.0, 5.0]).unwrap();
    let mut rng = PhiloxStream::new(data, streams::TEST, 0);
    let theta = prior.sample(&mut rng, 256);
    let x: Vec<f32> = theta.iter().map(|t| t + 0.1 * rng.normal()).collect();
    (prior, theta, x)
}

/// [`small_box_model_seeded`] learning θ in `space`.
fn small_box_model_in(space: ThetaSpace, data: u64, seed: u64) -> ScoreModel {
    let (prior, theta, x) = box_pairs(data);
    let mut options = ScoreTrainOptions {
        width: 16,
        theta_space: space,
        ..ScoreTrainOptions::default()
    };
    options.train.epochs = 2;
    options.train.seed = seed;
    ScoreModel::train(&theta, &x, 2, prior, None, &options, |_| {})
        .unwrap()
        .0
}

#[test]
fn natural_space_models_learn_theta_itself_and_keep_draws_in_the_box() {
    let (prior, theta, _) = box_pairs(6);
    let natural = small_box_model_in(ThetaSpace::Natural, 6, 0);
    let unconstrained = small_box_model_seeded(6, 0);
    // The network's θ is θ itself, standardized, not its scaled logit.
    assert_eq!(
        natural.config.theta_standardization,
        Standardization::fit(&theta, 2)
    );
    assert_ne!(
        unconstrained.config.theta_standardization,
        natural.config.theta_standardization
    );
    let obs = [0.95f32, 4.9, 0.9, 4.95, 0.98, 4.8];
    for (n, composition) in [
        (1, Composition::Geffner),
        (3, Composition::Geffner),
        (3, Composition::Gauss { pilot_draws: 200 }),
    ] {
        let draws = natural
            .sample(&obs[..2 * n], 300, &options(20, composition), &|_| {})
            .unwrap();
        assert_eq!(draws.samples.len(), 600);
        let inside = prior.log_density(&draws.samples).unwrap();
        assert!(inside.iter().all(|lp| lp.is_finite()), "n = {n}");
        // Observations at the box's corner and a network trained for two epochs put
        // mass past the edges: the rejection and its top-up runs are exercised.
        assert!(
            draws.acceptance_rate > 0.0 && draws.acceptance_rate < 1.0,
            "n = {n}: acceptance {}",
            draws.acceptance_rate
        );
    }

    // The space is saved; a file without it (written before the choice existed) is an
    // unconstrained model.
    let dir = std::env::temp_dir().join(format!("amortize-test-natural-{}", std::process::id()));
    natural.save(&dir).unwrap();
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    assert!(text.contains("\"theta_space\": \"natural\""), "{text}");
    let loaded = ScoreModel::load(&dir).unwrap();
    assert_eq!(loaded.config, natural.config);
    let opts = options(20, Composition::Geffner);
    assert_eq!(
        loaded.sample(&obs, 100, &opts, &|_| {}).unwrap().samples,
        natural.sample(&obs, 100, &opts, &|_| {}).unwrap().samples
    );
    std::fs::write(
        dir.join("config.json"),
        text.replace("\"theta_space\": \"natural\",", ""),
    )
    .unwrap();
    assert_eq!(
        ScoreModel::load(&dir).unwrap().config.theta_space,
        ThetaSpace::Unconstrained
    );
    unconstrained.save(&dir).unwrap();
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    assert!(!text.contains("theta_space"), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn natural_space_refuses_log_normal_priors_and_theta_outside_the_box() {
    let prior = Prior::log_normal(&[0.0], &[1.0]).unwrap();
    let options = ScoreTrainOptions {
        width: 8,
        theta_space: ThetaSpace::Natural,
        ..ScoreTrainOptions::default()
    };
    let theta = [1.0f32, 2.0, 0.5, 3.0];
    let err = ScoreModel::train(&theta, &theta, 1, prior, None, &options, |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("log-normal"), "{err}");
    let (prior, mut theta, x) = box_pairs(6);
    theta[5] = 7.5;
    let err = ScoreModel::train(&theta, &x, 2, prior, None, &options, |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("1 row(s) outside the prior's support"),
        "{err}"
    );
}

/// The largest |gpu − cpu| / max(1, |cpu|) between `model`'s draws on the CPU and on
/// wgpu:0 for the same seed, printed with `what`; asserts the draws are finite.
fn wgpu_against_cpu(model: &ScoreModel, obs: &[f32], composition: Composition, what: &str) -> f32 {
    let mut options = options(8, composition);
    let cpu = model.sample(obs, 64, &options, &|_| {}).unwrap().samples;
    options.device = amortize::Device::Wgpu(0);
    let gpu = model.sample(obs, 64, &options, &|_| {}).unwrap().samples;
    assert!(gpu.iter().all(|v| v.is_finite()), "{what}");
    let err = max_rel_err(&gpu, &cpu);
    eprintln!("{what}, wgpu:0 against the CPU: max relative error {err:.3e}");
    err
}

#[test]
fn wgpu_sampling_composes_observations_and_the_prior_like_the_cpu() {
    if !wgpu_adapter_or_skip() {
        return;
    }
    let model = small_box_model();
    let obs = [0.3f32, 1.0, 0.2, 1.4, 0.4, 1.2];
    let err = wgpu_against_cpu(&model, &obs, Composition::Geffner, "n = 3, box prior");
    assert!(err < 1e-3, "{err}");
    // In θ's natural space the box's score is 0 (GpuPrior::Flat's zero precision).
    let natural = small_box_model_in(ThetaSpace::Natural, 6, 0);
    let what = "n = 3, box prior, natural space";
    let err = wgpu_against_cpu(&natural, &obs, Composition::Geffner, what);
    assert!(err < 1e-3, "{err}");
}

#[test]
fn wgpu_sampling_composes_by_gauss_like_the_cpu() {
    if !wgpu_adapter_or_skip() {
        return;
    }
    // GAUSS's pilot runs go to the device too, so its weights come from covariances of
    // f32-rounded pilot draws: far below the pilots' sampling error, the same tolerance
    // as Geffner et al.'s composition holds.
    let model = small_model();
    let obs = observations(2);
    let composition = Composition::Gauss { pilot_draws: 200 };
    let err = wgpu_against_cpu(&model, &obs, composition, "gaussian10, n = 2, GAUSS");
    assert!(err < 1e-3, "{err}");
    // The comparison can fail: Geffner et al.'s composition gives other draws.
    let mut options = options(8, Composition::Geffner);
    let geffner = model.sample(&obs, 64, &options, &|_| {}).unwrap().samples;
    options.composition = composition;
    let gauss = model.sample(&obs, 64, &options, &|_| {}).unwrap().samples;
    let moved = geffner
        .iter()
        .zip(&gauss)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(moved > 0.1, "{moved}");
}

#[test]
fn score_ensembles_sample_their_mean_score_alike_on_the_cpu_and_wgpu_and_round_trip() {
    let members: Vec<ScoreModel> = (0..3).map(|seed| small_box_model_seeded(6, seed)).collect();
    let obs = [0.3f32, 1.0, 0.2, 1.4];
    let opts = options(8, Composition::Geffner);
    let draw = |e: &Ensemble<ScoreModel>| e.sample(&obs, 64, &opts, &|_| {}).unwrap().samples;
    // One member samples exactly as the model.
    let one = Ensemble::new(members[..1].to_vec()).unwrap();
    assert_eq!(
        draw(&one),
        members[0].sample(&obs, 64, &opts, &|_| {}).unwrap().samples
    );
    // Three members give other draws than any one of them (the mean score moves them).
    let ensemble = Ensemble::new(members.clone()).unwrap();
    let draws = draw(&ensemble);
    for (k, m) in members.iter().enumerate() {
        let moved = max_rel_err(&m.sample(&obs, 64, &opts, &|_| {}).unwrap().samples, &draws);
        assert!(moved > 1e-2, "member {k}: {moved}");
    }
    // Saved and loaded, the ensemble draws the same, bit for bit.
    let dir = std::env::temp_dir().join(format!("amortize-score-ensemble-{}", std::process::id()));
    ensemble.save(&dir).unwrap();
    assert_eq!(draw(&Ensemble::<ScoreModel>::load(&dir).unwrap()), draws);
    std::fs::remove_dir_all(&dir).unwrap();
    // Members trained on other simulations have another standardization: refused.
    let stranger = small_box_model_seeded(7, 1);
    let mixed = Ensemble::new(vec![members[0].clone(), stranger]).unwrap();
    let err = mixed
        .sample(&obs, 8, &opts, &|_| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("member 1") && err.contains("standardization"),
        "{err}"
    );
    mixed.save(&dir).unwrap();
    let err = Ensemble::<ScoreModel>::load(&dir).unwrap_err().to_string();
    assert!(
        err.contains("member 1") && err.contains("standardization"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();

    // On a GPU the ensemble is one network K times as wide: past the fused samplers'
    // largest width that is an error that says so (checked before any device is touched,
    // so it holds without one).
    let wide = Ensemble::new(vec![members[0].clone(); 17]).unwrap();
    let cuda = SamplingOptions {
        device: amortize::Device::Cuda(0),
        ..opts
    };
    let err = wide
        .sample(&obs, 8, &cuda, &|_| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("width 272") && err.contains("ensemble of 17"),
        "{err}"
    );

    // The fused WGSL sampler runs the ensemble as one wide network of block-diagonal
    // layers, the CPU member by member: the same draws up to f32 rounding (the
    // tolerance of one network's parity above).
    if !wgpu_adapter_or_skip() {
        return;
    }
    let wgpu = SamplingOptions {
        device: amortize::Device::Wgpu(0),
        ..opts
    };
    let gpu = ensemble.sample(&obs, 64, &wgpu, &|_| {}).unwrap().samples;
    assert!(gpu.iter().all(|v| v.is_finite()));
    let err = max_rel_err(&gpu, &draws);
    assert!(err < 1e-3, "ensemble of 3, wgpu:0 against the CPU: {err}");
}

#[test]
fn a_set_encoder_learns_from_subsets_reads_draws_as_one_set_and_samples_on_wgpu() {
    // Each simulation is two noisy draws of θ; training sees every non-empty subset.
    let (prior, theta, _) = box_pairs(6);
    let mut rng = PhiloxStream::new(7, streams::TEST, 0);
    let x: Vec<f32> = theta
        .chunks_exact(2)
        .flat_map(|t| [t[0], t[1], t[0], t[1]])
        .map(|v| v + 0.1 * rng.normal())
        .collect();
    let (set_theta, sets) = draw_subsets(&theta, &x, 2, 2).unwrap();
    let mut training = ScoreTrainOptions {
        width: 16,
        x_encoder: Some(SetEncoderKind::SetTransformer),
        ..ScoreTrainOptions::default()
    };
    training.train.epochs = 2;
    training.train.rows_per_group = subsets_per_simulation(2);
    let model = ScoreModel::train_sets(&set_theta, &sets, prior.clone(), None, &training, |_| {})
        .unwrap()
        .0;
    assert_eq!(
        model.config.x_standardization,
        Standardization::fit(sets.elements(), 2)
    );
    assert_eq!(model.config.max_cardinality, Some(2));

    let obs = [0.5f32, 2.0, 0.45, 2.1];
    let opts = options(8, Composition::Gauss { pilot_draws: 50 });
    let draws = model.sample(&obs, 100, &opts, &|_| {}).unwrap().samples;
    // The draws are one set: their order does not matter (up to the order of the
    // encoder's sums), and no GAUSS pilot runs compose them.
    let reversed = [0.45f32, 2.1, 0.5, 2.0];
    let other_order = model
        .sample(&reversed, 100, &opts, &|_| {})
        .unwrap()
        .samples;
    assert!(max_rel_err(&other_order, &draws) < 1e-4);
    let geffner = options(8, Composition::Geffner);
    assert_eq!(
        model.sample(&obs, 100, &geffner, &|_| {}).unwrap().samples,
        draws
    );

    let dir = std::env::temp_dir().join(format!("amortize-test-x-set-{}", std::process::id()));
    model.save(&dir).unwrap();
    let loaded = ScoreModel::load(&dir).unwrap();
    assert_eq!(loaded.config, model.config);
    let again = loaded.sample(&obs, 100, &opts, &|_| {}).unwrap().samples;
    assert!(
        again
            .iter()
            .zip(&draws)
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "draws differ after save/load"
    );
    std::fs::remove_dir_all(&dir).unwrap();

    // The x path runs before the samplers' loops: the fused wgpu sampler reads its
    // conditioning like any other.
    if wgpu_adapter_or_skip() {
        let err = wgpu_against_cpu(&model, &obs, Composition::Geffner, "a set of 2 draws");
        assert!(err < 1e-3, "{err}");
    }

    // Rows need the x-MLP, sets a set encoder.
    let err = ScoreModel::train(&theta, &x, 4, prior.clone(), None, &training, |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("train_sets"), "{err}");
    training.x_encoder = None;
    let err = ScoreModel::train_sets(&set_theta, &sets, prior, None, &training, |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("need a set encoder"), "{err}");
}

#[test]
fn a_gaussian_base_is_fitted_in_the_networks_spaces_samples_its_posterior_and_round_trips() {
    // gaussian10: θ ~ N(0, I), x ~ N(θ, diag(σ²)), so θ_i | x ~ N(x_i/(1 + σ_i²),
    // σ_i²/(1 + σ_i²)); standardized (θ's sd 1, x_i's √(1 + σ_i²)) the base's A is
    // diag(1/√(1 + σ_i²)) and v_i = σ_i²/(1 + σ_i²).
    let task = Task::Gaussian10;
    let (theta, x) = task.simulate_dataset(3000, 4);
    let mut training = ScoreTrainOptions {
        width: 16,
        gaussian_base: true,
        ..ScoreTrainOptions::default()
    };
    training.train.epochs = 2;
    let (mut model, _) =
        ScoreModel::train(&theta, &x, 10, task.prior(), None, &training, |_| {}).unwrap();
    let base = model.config.gaussian_base.clone().expect("a base");
    for i in 0..10 {
        let var = 0.6 + 0.8 * i as f32 / 9.0;
        let (a, v) = (1.0 / (1.0 + var).sqrt(), var / (1.0 + var));
        // Standard errors at 3000 pairs: ≈ 0.015 for A, ≈ 3% for v (and θ's sample sd).
        for k in 0..10 {
            let want = if k == i { a } else { 0.0 };
            let got = base.weight[i * 10 + k];
            assert!(
                (got - want).abs() < 0.06,
                "A[{i}, {k}] = {got}, want {want}"
            );
        }
        let got = base.variance[i];
        assert!((got - v).abs() < 0.12 * v, "v[{i}] = {got}, want {v}");
    }

    // A network over a base starts with its output layer at zero: trained with a zero
    // learning rate, ε̂ is the base's alone, and the samplers must draw the base's
    // posterior: for one observation, and for four composed by GAUSS. In θ̃
    // (θ standardized by m_θ, s_θ) the prior is N(−m_θ/s_θ, diag(1/s_θ²)) and the base
    // N(μ_j, diag(v)), so the composed posterior has precision n/v − (n − 1)·s_θ² and mean
    // (Σ_j μ_j/v + (n − 1)·s_θ·m_θ)/precision, per component.
    training.train.optimizer.lr = 0.0;
    training.train.epochs = 1;
    let (base_only, _) =
        ScoreModel::train(&theta, &x, 10, task.prior(), None, &training, |_| {}).unwrap();
    assert_eq!(base_only.config.gaussian_base, model.config.gaussian_base);
    let output = &base_only.net.head.output;
    for id in [Some(output.weight), output.bias].into_iter().flatten() {
        let values = base_only.store.get(id).to_vec().unwrap();
        assert!(
            values.iter().all(|&v| v == 0.0),
            "the output layer starts at zero"
        );
    }
    for n in [1, 4] {
        let obs = observations(n);
        let composition = Composition::Gauss { pilot_draws: 1000 };
        let draws = base_only
            .sample(&obs, 2000, &options(50, composition), &|_| {})
            .unwrap()
            .samples;
        let mut x_std = obs.clone();
        model.config.x_standardization.apply(&mut x_std);
        let mu = base.means(&x_std);
        let theta_std = &model.config.theta_standardization;
        let nf = n as f32;
        let mut reference = vec![0.0f32; 2000 * 10];
        PhiloxStream::new(6, streams::TEST, n as u32).fill_normal(0.0, 1.0, &mut reference);
        for row in reference.chunks_exact_mut(10) {
            for (i, z) in row.iter_mut().enumerate() {
                let (m, s) = (theta_std.mean[i], theta_std.std[i]);
                let precision = nf / base.variance[i] - (nf - 1.0) * s * s;
                let sum: f32 = (0..n).map(|j| mu[j * 10 + i]).sum();
                let mean = (sum / base.variance[i] + (nf - 1.0) * s * m) / precision;
                *z = mean + *z / precision.sqrt();
            }
        }
        theta_std.invert(&mut reference);
        let accuracy = c2st(&draws, &reference, 10).unwrap();
        // 2000 draws each: equal distributions score ≈ 0.5 ± 0.015; a base whose ε had
        // the wrong sign or scale, or missed the x-dependent mean, scores > 0.9.
        eprintln!("the base alone, n = {n}: C2ST {accuracy:.3} against its posterior");
        assert!(accuracy < 0.56, "n = {n}: C2ST {accuracy}");
    }

    // The base travels with the model file, and sampling after a reload is bitwise equal.
    let dir = std::env::temp_dir().join(format!("amortize-test-base-{}", std::process::id()));
    model.save(&dir).unwrap();
    let loaded = ScoreModel::load(&dir).unwrap();
    assert_eq!(loaded.config, model.config);
    let obs = observations(2);
    let opts = options(10, Composition::Geffner);
    let a = model.sample(&obs, 100, &opts, &|_| {}).unwrap().samples;
    let b = loaded.sample(&obs, 100, &opts, &|_| {}).unwrap().samples;
    assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
    // A base that does not fit the network is refused on load.
    model.config.gaussian_base = Some(amortize::estimators::gaussian_base::GaussianBase {
        variance: vec![1.0; 3],
        ..base
    });
    amortize::io::model::save_model(&dir, "score", &model.config, &model.store).unwrap();
    let err = ScoreModel::load(&dir).unwrap_err().to_string();
    assert!(err.contains("Gaussian base"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();

    // On wgpu the fused sampler adds the base's ε as the CPU does, in either composition.
    if wgpu_adapter_or_skip() {
        for composition in [
            Composition::Geffner,
            Composition::Gauss { pilot_draws: 200 },
        ] {
            let what = format!("gaussian10 with a base, n = 2, {composition:?}");
            let err = wgpu_against_cpu(&loaded, &obs, composition, &what);
            assert!(err < 1e-3, "{err}");
        }
    }
}
