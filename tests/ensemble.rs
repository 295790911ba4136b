//! Ensembles of NPE, NLE, NRE and set NPE models: the mixture's log-likelihood per
//! observation (NPE, NLE) and the geometric mean of ratios (NRE), draws of an NPE or set
//! NPE ensemble from the mixture of its members, one member behaving exactly as the model, and ensemble directories round-tripping (and failing with errors that
//! say what is wrong).

use std::sync::OnceLock;

use amortize::estimators::ensemble::Ensemble;
use amortize::estimators::nle::{NleModel, NleOptions};
use amortize::estimators::npe::{NpeModel, NpeOptions};
use amortize::estimators::nre::{NreModel, NreOptions};
use amortize::estimators::set_npe::{draw_subsets, SetEncoderConfig, SetNpeModel, SetNpeOptions};
use amortize::rng::{streams, PhiloxStream};
use amortize::samplers::mcmc::LikelihoodEstimator;
use amortize::tasks::Task;
use amortize::train::TrainReport;

const TASK: Task = Task::GaussianLinear;

/// Small, quickly trained flow options: the tests check how members combine, not their
/// accuracy.
fn small_flow(seed: u64) -> NleOptions {
    let mut options = NleOptions {
        layers: 2,
        spline: false,
        width: 16,
        ..NleOptions::default()
    };
    options.train.epochs = 5;
    options.train.batch_size = 128;
    options.train.seed = seed;
    options
}

/// Two members trained by `train(seed, θ, x)` with seeds 0 and 1 on the pairs of
/// simulation seed `data`; the second member's θ moved by `shift` in every coordinate.
fn two_members<M>(
    data: u64,
    shift: f32,
    train: impl Fn(u64, &[f32], &[f32]) -> amortize::Result<(M, TrainReport)>,
) -> Vec<M> {
    let (theta, x) = TASK.simulate_dataset(1000, data);
    let shifted: Vec<f32> = theta.iter().map(|t| t + shift).collect();
    [(0, &theta), (1, &shifted)]
        .into_iter()
        .map(|(seed, theta)| train(seed, theta, &x).unwrap().0)
        .collect()
}

/// Two NLE members trained from different seeds on the same pairs.
fn nle_members() -> &'static [NleModel] {
    static MEMBERS: OnceLock<Vec<NleModel>> = OnceLock::new();
    MEMBERS.get_or_init(|| {
        two_members(3, 0.0, |seed, theta, x| {
            let options = small_flow(seed);
            NleModel::train(theta, x, TASK.dim_x(), TASK.prior(), None, &options, |_| {})
        })
    })
}

/// Two NPE members whose posteriors sit apart: the second is trained on θ + 1 (the
/// Gaussian prior has unbounded support, so nothing is rejected).
fn npe_members() -> &'static [NpeModel] {
    static MEMBERS: OnceLock<Vec<NpeModel>> = OnceLock::new();
    MEMBERS.get_or_init(|| {
        two_members(4, 1.0, |seed, theta, x| {
            let options: NpeOptions = small_flow(seed);
            NpeModel::train(theta, x, TASK.dim_x(), TASK.prior(), None, &options, |_| {})
        })
    })
}

/// Two NRE members trained from different seeds on the same pairs.
fn nre_members() -> Vec<NreModel> {
    two_members(5, 0.0, |seed, theta, x| {
        let mut options = NreOptions {
            width: 16,
            ..NreOptions::default()
        };
        options.train.epochs = 3;
        options.train.seed = seed;
        NreModel::train(theta, x, TASK.dim_x(), TASK.prior(), None, &options, |_| {})
    })
}

/// Two set NPE members on sets of up to two draws whose posteriors sit apart, as
/// [`npe_members`]'s: the second is trained on θ + 1.
fn set_npe_members() -> Vec<SetNpeModel> {
    let mut rng = PhiloxStream::new(6, streams::TEST, 0);
    let theta = TASK.prior().sample(&mut rng, 1000);
    let twice: Vec<f32> = theta
        .chunks_exact(TASK.dim_theta())
        .flat_map(|t| t.iter().chain(t).copied())
        .collect();
    let x = TASK.simulate(&twice, &mut rng).unwrap();
    let (set_theta, sets) = draw_subsets(&theta, &x, TASK.dim_theta(), 2).unwrap();
    let shifted: Vec<f32> = set_theta.iter().map(|t| t + 1.0).collect();
    [(0, &set_theta), (1, &shifted)]
        .into_iter()
        .map(|(seed, theta)| {
            let mut options = SetNpeOptions::deep_set(TASK.dim_x());
            if let SetEncoderConfig::DeepSet(encoder) = &mut options.encoder {
                encoder.width = 16;
                encoder.embedding = 16;
            }
            options.layers = 2;
            options.spline = false;
            options.train.epochs = 5;
            options.train.seed = seed;
            SetNpeModel::train(theta, &sets, TASK.prior(), None, &options, |_| {})
                .unwrap()
                .0
        })
        .collect()
}

/// How many of `draws` an NPE ensemble of two members drew from the second, whose
/// posterior sits 1 above the first's in every coordinate: a row's mean coordinate more
/// than 0.5 above the centre of `first` (draws of the first member alone) tells.
fn from_second_member(draws: &[f32], first: &[f32]) -> usize {
    let d = TASK.dim_theta();
    let row_mean = |r: &[f32]| r.iter().sum::<f32>() / d as f32;
    let centre = first.chunks_exact(d).map(row_mean).sum::<f32>() / (first.len() / d) as f32;
    draws
        .chunks_exact(d)
        .filter(|r| row_mean(r) - centre > 0.5)
        .count()
}

fn test_theta(rows: usize) -> Vec<f32> {
    TASK.prior()
        .sample(&mut PhiloxStream::new(7, streams::TEST, 0), rows)
}

fn observations(n: usize) -> Vec<f32> {
    let (_, x) = TASK.simulate_dataset(n, 8);
    x
}

#[test]
fn log_likelihood_is_the_members_mixture_per_observation() {
    let members = nle_members();
    let ensemble = Ensemble::new(members.to_vec()).unwrap();
    let (theta, obs) = (test_theta(6), observations(3));
    let got = ensemble.log_likelihood(&theta, &obs).unwrap();
    // Reference: each member's value per observation, mixed in probability space.
    let mut want = vec![0.0f64; 6];
    for x_j in obs.chunks_exact(TASK.dim_x()) {
        let a = members[0].log_likelihood(&theta, x_j).unwrap();
        let b = members[1].log_likelihood(&theta, x_j).unwrap();
        for r in 0..6 {
            want[r] += ((a[r].exp() + b[r].exp()) / 2.0).ln();
        }
    }
    for (g, w) in got.iter().zip(&want) {
        // f64 throughout; the shifted log-sum-exp and the direct sum differ by rounding.
        assert!((g - w).abs() < 1e-9 * w.abs().max(1.0), "{g} vs {w}");
    }
    // The members differ (else the check above could not tell a mixture from a member).
    let a = members[0].log_likelihood(&theta, &obs).unwrap();
    let b = members[1].log_likelihood(&theta, &obs).unwrap();
    assert!(a.iter().zip(&b).any(|(a, b)| (a - b).abs() > 1e-3));
}

#[test]
fn ratio_classifiers_combine_by_their_geometric_mean() {
    // Contrastive NRE learns ln r + c_k(x): a mixture would weight members by e^{c_k},
    // the mean of the logs only shifts every θ by the same constant.
    let members = nre_members();
    let ensemble = Ensemble::new(members.clone()).unwrap();
    let (theta, obs) = (test_theta(6), observations(3));
    let got = ensemble.log_likelihood(&theta, &obs).unwrap();
    let a = members[0].log_likelihood(&theta, &obs).unwrap();
    let b = members[1].log_likelihood(&theta, &obs).unwrap();
    for r in 0..6 {
        let want = (a[r] + b[r]) / 2.0;
        assert!(
            (got[r] - want).abs() < 1e-9 * want.abs().max(1.0),
            "{} vs {want}",
            got[r]
        );
    }
    assert!(a.iter().zip(&b).any(|(a, b)| (a - b).abs() > 1e-3));
}

#[test]
fn one_member_is_exactly_the_model() {
    let member = nle_members()[0].clone();
    let (theta, obs) = (test_theta(5), observations(2));
    let alone = member.log_likelihood(&theta, &obs).unwrap();
    let ensemble = Ensemble::new(vec![member]).unwrap();
    assert_eq!(ensemble.log_likelihood(&theta, &obs).unwrap(), alone);

    let npe = npe_members()[0].clone();
    let obs = observations(1);
    let alone = npe.sample(&obs, 50, 9).unwrap().samples;
    let ensemble = Ensemble::new(vec![npe]).unwrap();
    assert_eq!(ensemble.sample(&obs, 50, 9).unwrap().samples, alone);
}

#[test]
fn npe_ensemble_draws_from_both_members_equally() {
    let ensemble = Ensemble::new(npe_members().to_vec()).unwrap();
    let obs = observations(1);
    let num = 4000;
    let draws = ensemble.sample(&obs, num, 5).unwrap().samples;
    // The members' posteriors are 1 apart in every coordinate and ~0.1 wide
    // (gaussian_linear's prior sd is 0.1).
    let alone = npe_members()[0].sample(&obs, num, 6).unwrap().samples;
    let from_second = from_second_member(&draws, &alone);
    // Binomial(4000, 1/2): sd 32, so ±200 is > 6 sd; a sampler that ignores a member
    // gives 0 or 4000.
    assert!(
        (from_second as i64 - 2000).abs() < 200,
        "{from_second} of {num} draws from the second member"
    );
    // Draws from the two members are interleaved, not in blocks.
    let first_half = from_second_member(&draws[..num / 2 * TASK.dim_theta()], &alone);
    assert!((first_half as i64 - 1000).abs() < 150, "{first_half}");
}

#[test]
fn set_npe_ensemble_draws_from_both_members_given_a_set() {
    let members = set_npe_members();
    let set = observations(2);
    let num = 2000;
    let alone = members[0].sample(&set, num, 6).unwrap().samples;
    // One member draws exactly as the model.
    let one = Ensemble::new(vec![members[0].clone()]).unwrap();
    assert_eq!(one.sample(&set, num, 6).unwrap().samples, alone);
    let ensemble = Ensemble::new(members).unwrap();
    let from_second = from_second_member(&ensemble.sample(&set, num, 5).unwrap().samples, &alone);
    // Binomial(2000, 1/2): sd 22, so ±150 is > 6 sd; ignoring a member gives 0 or 2000.
    assert!(
        (from_second as i64 - 1000).abs() < 150,
        "{from_second} of {num} draws from the second member"
    );
    // An empty set is an error from the ensemble as from the model.
    let err = ensemble.sample(&[], num, 5).unwrap_err();
    assert!(err.to_string().contains("empty"), "{err}");
}

#[test]
fn ensembles_round_trip_through_their_directories() {
    let dir = std::env::temp_dir().join(format!("amortize-ensemble-{}", std::process::id()));
    let ensemble = Ensemble::new(nle_members().to_vec()).unwrap();
    ensemble.save(&dir).unwrap();
    assert!(dir.join("member-1").join("weights.safetensors").exists());
    let loaded = Ensemble::<NleModel>::load(&dir).unwrap();
    let (theta, obs) = (test_theta(4), observations(2));
    assert_eq!(
        loaded.log_likelihood(&theta, &obs).unwrap(),
        ensemble.log_likelihood(&theta, &obs).unwrap()
    );
    // The members are NLE models: loading them as NRE says so.
    let err = Ensemble::<NreModel>::load(&dir).unwrap_err().to_string();
    assert!(err.contains("\"nle\"") && err.contains("\"nre\""), "{err}");
    // A member of another task (another prior and dim x) is refused.
    let (theta, x) = Task::TwoMoons.simulate_dataset(200, 1);
    let stranger = NleModel::train(
        &theta,
        &x,
        Task::TwoMoons.dim_x(),
        Task::TwoMoons.prior(),
        None,
        &small_flow(0),
        |_| {},
    )
    .unwrap()
    .0;
    let mixed = dir.with_extension("mixed");
    Ensemble::new(vec![nle_members()[0].clone(), stranger])
        .unwrap()
        .save(&mixed)
        .unwrap();
    let err = Ensemble::<NleModel>::load(&mixed).unwrap_err().to_string();
    assert!(err.contains("member 1 has another prior"), "{err}");
    std::fs::remove_dir_all(&mixed).unwrap();
    // A member directory gone missing is named in the error.
    std::fs::remove_dir_all(dir.join("member-1")).unwrap();
    let err = Ensemble::<NleModel>::load(&dir).unwrap_err().to_string();
    assert!(err.contains("member-1"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_empty_ensemble_is_an_error() {
    let err = Ensemble::<NleModel>::new(Vec::new()).unwrap_err();
    assert!(err.to_string().contains("at least one member"), "{err}");
}
