//! NLE and NRE: small budgets reach stated C2STs on gaussian_linear (one and several
//! observations), NRE's classifier beats chance on held-out pairs, models round-trip
//! through their directories, bad input is an error.

use std::sync::OnceLock;

use amortize::backend::UnaryOp;
use amortize::diagnostics::c2st::c2st;
use amortize::estimators::nle::{NleModel, NleOptions};
use amortize::estimators::nre::{NreModel, NreOptions};
use amortize::rng::{streams, PhiloxStream};
use amortize::samplers::mcmc::{sample_estimator, LikelihoodEstimator, McmcOptions};
use amortize::tasks::Task;

const TASK: Task = Task::GaussianLinear;

/// The NLE model the tests share, trained once.
fn nle() -> &'static NleModel {
    static MODEL: OnceLock<NleModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        let (theta, x) = TASK.simulate_dataset(2000, 11);
        let mut options = NleOptions {
            layers: 3,
            spline: false,
            ..NleOptions::default()
        };
        options.train.epochs = 30;
        options.train.batch_size = 128;
        NleModel::train(
            &theta,
            &x,
            TASK.dim_x(),
            TASK.prior(),
            None,
            &options,
            |_| {},
        )
        .unwrap()
        .0
    })
}

/// The NRE model the tests share, trained once, with a SiLU classifier (gaussian_linear's
/// log-ratio is smooth; ReLU, the default, is what the other tests' NRE models use).
fn nre() -> &'static NreModel {
    static MODEL: OnceLock<NreModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        let (theta, x) = TASK.simulate_dataset(2000, 12);
        let mut options = NreOptions {
            activation: UnaryOp::Silu,
            ..NreOptions::default()
        };
        options.train.epochs = 30;
        options.train.batch_size = 128;
        NreModel::train(
            &theta,
            &x,
            TASK.dim_x(),
            TASK.prior(),
            None,
            &options,
            |_| {},
        )
        .unwrap()
        .0
    })
}

/// n observations of one θ from the prior.
fn observations(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = PhiloxStream::new(seed, streams::TEST, 0);
    let truth = TASK.prior().sample(&mut rng, 1);
    TASK.simulate(&truth.repeat(n), &mut rng).unwrap()
}

/// C2ST of 1500 MCMC draws against the analytic posterior.
fn c2st_given(model: &impl LikelihoodEstimator, obs: &[f32]) -> f64 {
    let options = McmcOptions {
        chains: 50,
        warmup: 50,
        ..McmcOptions::default()
    };
    let draws = sample_estimator(model, obs, 1500, &options, &|_| {}).unwrap();
    assert!(
        draws.diagnostics.max_rhat() < 1.1,
        "{:?}",
        draws.diagnostics
    );
    let reference = TASK
        .analytic_posterior(obs)
        .unwrap()
        .sample(&mut PhiloxStream::new(5, streams::TEST, 1), 1500);
    c2st(&draws.samples, &reference, TASK.dim_theta()).unwrap()
}

#[test]
fn nle_posterior_reaches_a_stated_c2st_for_one_and_three_observations() {
    let model = nle();
    // The likelihood N(θ, 0.1 I) is exactly an affine flow; 2000 simulations and 30
    // epochs get close. The prior against these posteriors scores ≈ 1.0 and a sum over
    // observations done wrong (e.g. averaged) gives a posterior √3 too wide at n = 3,
    // which scores > 0.8; 0.7 passes a correct model with margin at this budget.
    for n in [1, 3] {
        let accuracy = c2st_given(model, &observations(n, 21 + n as u64));
        assert!(accuracy < 0.7, "n = {n}: C2ST {accuracy}");
    }
}

#[test]
fn nre_classifier_beats_chance_and_its_posterior_reaches_a_stated_c2st() {
    let model = nre();
    // Held-out pairs: the true θ_i should out-score θ_{i+1} for the same x_i.
    let (theta, x) = TASK.simulate_dataset(1000, 99);
    let d = TASK.dim_theta();
    let shifted: Vec<f32> = theta[d..].iter().chain(&theta[..d]).copied().collect();
    let joint = model.log_ratio(&theta, &x).unwrap();
    let marginal = model.log_ratio(&shifted, &x).unwrap();
    let wins = joint.iter().zip(&marginal).filter(|(j, m)| j > m).count();
    // Chance is 500 ± 16; the posterior is much narrower than the prior here, so a
    // trained classifier wins nearly always. 800 is > 18 sd above chance.
    assert!(wins > 800, "true θ won {wins} of 1000");
    // Measured 0.57 at this budget (0.60 with a ReLU classifier); 0.7 fails the prior (≈ 1.0) and a ratio with the
    // wrong sign or scale.
    let accuracy = c2st_given(model, &observations(1, 31));
    assert!(accuracy < 0.7, "C2ST {accuracy}");
}

#[test]
fn models_round_trip_through_their_directories() {
    let dir = std::env::temp_dir().join(format!("amortize-nle-nre-{}", std::process::id()));
    let theta = TASK
        .prior()
        .sample(&mut PhiloxStream::new(1, streams::TEST, 0), 5);
    let obs = observations(2, 4);
    let model = nle();
    model.save(&dir.join("nle")).unwrap();
    let loaded = NleModel::load(&dir.join("nle")).unwrap();
    assert_eq!(
        model.log_likelihood(&theta, &obs).unwrap(),
        loaded.log_likelihood(&theta, &obs).unwrap()
    );
    let model = nre();
    model.save(&dir.join("nre")).unwrap();
    let loaded = NreModel::load(&dir.join("nre")).unwrap();
    assert_eq!(
        model.log_likelihood(&theta, &obs).unwrap(),
        loaded.log_likelihood(&theta, &obs).unwrap()
    );
    // A file from before the activation was recorded holds a ReLU classifier, and loads
    // as one: the same weights then give other ratios than the SiLU classifier's.
    assert_eq!(model.config.activation, UnaryOp::Silu);
    let config = dir.join("nre").join("config.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    let entry = json["config"].as_object_mut().unwrap().remove("activation");
    assert_eq!(entry, Some(serde_json::json!("silu")));
    std::fs::write(&config, json.to_string()).unwrap();
    let old = NreModel::load(&dir.join("nre")).unwrap();
    assert_eq!(old.config.activation, UnaryOp::Relu);
    assert_ne!(
        model.log_likelihood(&theta, &obs).unwrap(),
        old.log_likelihood(&theta, &obs).unwrap()
    );
    // A directory of one kind is not loaded as the other.
    let err = NleModel::load(&dir.join("nre")).unwrap_err();
    assert!(err.to_string().contains("nre"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_input_is_an_error() {
    let (theta, x) = TASK.simulate_dataset(50, 1);
    let mut options = NreOptions::default();
    options.train.epochs = 1;
    let mut nan_x = x.clone();
    nan_x[7] = f32::NAN;
    let err = NreModel::train(
        &theta,
        &nan_x,
        TASK.dim_x(),
        TASK.prior(),
        None,
        &options,
        |_| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("1 row(s) with NaN"), "{err}");
    options.atoms = 1;
    assert!(NreModel::train(
        &theta,
        &x,
        TASK.dim_x(),
        TASK.prior(),
        None,
        &options,
        |_| {}
    )
    .is_err());
    let err = NleModel::train(
        &theta,
        &x[..x.len() - 1],
        TASK.dim_x(),
        TASK.prior(),
        None,
        &NleOptions::default(),
        |_| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("whole rows"), "{err}");

    options.atoms = 10;
    let model = NreModel::train(
        &theta,
        &x,
        TASK.dim_x(),
        TASK.prior(),
        None,
        &options,
        |_| {},
    )
    .unwrap()
    .0;
    let mcmc = McmcOptions::default();
    let err = sample_estimator(&model, &[], 10, &mcmc, &|_| {}).unwrap_err();
    assert!(err.to_string().contains("empty"), "{err}");
    assert!(sample_estimator(&model, &x[..TASK.dim_x() - 1], 10, &mcmc, &|_| {}).is_err());
    let mut nan_obs = x[..TASK.dim_x()].to_vec();
    nan_obs[0] = f32::NAN;
    assert!(sample_estimator(&model, &nan_obs, 10, &mcmc, &|_| {}).is_err());
}
