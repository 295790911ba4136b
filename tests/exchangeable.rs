//! x made of iid draws (slcp's four points): every estimator trained with
//! `exchangeable_blocks` gives the same answer for an observation whatever the order of
//! its blocks, keeps that through its model directory, and refuses a block count that
//! does not split x; `split_iid_draws` turns (θ, x) into one pair per draw.

use std::path::PathBuf;

use amortize::estimators::nle::{NleModel, NleOptions};
use amortize::estimators::npe::{NpeModel, NpeOptions};
use amortize::estimators::nre::{NreModel, NreOptions};
use amortize::estimators::pairs::split_iid_draws;
use amortize::estimators::score_model::canonical_order;
use amortize::estimators::{SamplingOptions, ScoreModel, ScoreTrainOptions};
use amortize::samplers::mcmc::LikelihoodEstimator;
use amortize::tasks::Task;

const TASK: Task = Task::Slcp;
const BLOCKS: usize = 4;

/// Training pairs for the tiny models below (the answers compared are not accuracy).
fn pairs() -> (Vec<f32>, Vec<f32>) {
    TASK.simulate_dataset(64, 5)
}

/// An slcp observation and the same four (x, y) draws in another order.
fn observation_and_shuffled() -> (Vec<f32>, Vec<f32>) {
    let obs = vec![0.3, -1.2, 2.5, 0.4, -0.7, 1.9, 1.1, -0.2];
    let order = [2, 0, 3, 1];
    let shuffled = order
        .iter()
        .flat_map(|&b| obs[2 * b..2 * b + 2].to_vec())
        .collect();
    (obs, shuffled)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "amortize-exchangeable-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn canonical_order_is_the_same_for_every_ordering_of_the_blocks() {
    let (mut a, mut b) = observation_and_shuffled();
    assert_ne!(a, b);
    canonical_order(&mut a, 8, BLOCKS);
    canonical_order(&mut b, 8, BLOCKS);
    assert_eq!(a, b);
    // Sorted by the blocks' first feature, ties broken by the second.
    assert_eq!(a, vec![-0.7, 1.9, 0.3, -1.2, 1.1, -0.2, 2.5, 0.4]);
    let mut ties = vec![1.0, 5.0, 1.0, 2.0];
    canonical_order(&mut ties, 4, 2);
    assert_eq!(ties, vec![1.0, 2.0, 1.0, 5.0]);
    // One block leaves a row alone.
    let (mut c, _) = observation_and_shuffled();
    canonical_order(&mut c, 8, 1);
    assert_eq!(c, observation_and_shuffled().0);
}

#[test]
fn a_score_model_with_exchangeable_blocks_ignores_their_order_and_keeps_it_on_disk() {
    let (theta, x) = pairs();
    let train = |blocks| {
        let mut options = ScoreTrainOptions {
            width: 16,
            exchangeable_blocks: blocks,
            ..ScoreTrainOptions::default()
        };
        options.train.epochs = 1;
        ScoreModel::train(&theta, &x, 8, TASK.prior(), None, &options, |_| {})
            .unwrap()
            .0
    };
    let (obs, shuffled) = observation_and_shuffled();
    let mut sampling = SamplingOptions {
        levels: 10,
        ..SamplingOptions::default()
    };
    sampling.sampler.seed = 3;
    let draws =
        |model: &ScoreModel, o: &[f32]| model.sample(o, 20, &sampling, &|_| {}).unwrap().samples;

    let plain = train(1);
    assert_ne!(
        draws(&plain, &obs),
        draws(&plain, &shuffled),
        "without blocks the order of x's features matters, so the check below can fail"
    );
    let model = train(BLOCKS);
    let dir = scratch("score");
    model.save(&dir).unwrap();
    let loaded = ScoreModel::load(&dir).unwrap();
    assert_eq!(loaded.config.x_standardization.exchangeable_blocks, BLOCKS);
    assert_eq!(draws(&loaded, &shuffled), draws(&model, &obs));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn npe_nle_and_nre_with_exchangeable_blocks_ignore_their_order_and_keep_it_on_disk() {
    let (theta, x) = pairs();
    let (obs, shuffled) = observation_and_shuffled();
    let mut flow = NpeOptions {
        layers: 2,
        width: 16,
        exchangeable_blocks: BLOCKS,
        ..NpeOptions::default()
    };
    flow.train.epochs = 1;
    let npe = NpeModel::train(&theta, &x, 8, TASK.prior(), None, &flow, |_| {})
        .unwrap()
        .0;
    let dir = scratch("npe");
    npe.save(&dir).unwrap();
    let loaded = NpeModel::load(&dir).unwrap();
    assert_eq!(
        loaded.sample(&shuffled, 20, 4).unwrap().samples,
        npe.sample(&obs, 20, 4).unwrap().samples
    );

    let nle_options: NleOptions = flow.clone();
    let nle = NleModel::train(&theta, &x, 8, TASK.prior(), None, &nle_options, |_| {})
        .unwrap()
        .0;
    let mut nre_options = NreOptions {
        width: 16,
        atoms: 4,
        exchangeable_blocks: BLOCKS,
        ..NreOptions::default()
    };
    nre_options.train.epochs = 1;
    let nre = NreModel::train(&theta, &x, 8, TASK.prior(), None, &nre_options, |_| {})
        .unwrap()
        .0;
    let at = &theta[..3 * 5];
    nle.save(&dir).unwrap();
    let loaded = NleModel::load(&dir).unwrap();
    assert_eq!(
        loaded.log_likelihood(at, &shuffled).unwrap(),
        nle.log_likelihood(at, &obs).unwrap()
    );
    nre.save(&dir).unwrap();
    let loaded = NreModel::load(&dir).unwrap();
    assert_eq!(
        loaded.log_likelihood(at, &shuffled).unwrap(),
        nre.log_likelihood(at, &obs).unwrap()
    );
    std::fs::remove_dir_all(&dir).unwrap();

    // NRE without blocks: the same comparison tells the orders apart.
    nre_options.exchangeable_blocks = 1;
    let plain = NreModel::train(&theta, &x, 8, TASK.prior(), None, &nre_options, |_| {})
        .unwrap()
        .0;
    assert_ne!(
        plain.log_likelihood(at, &shuffled).unwrap(),
        plain.log_likelihood(at, &obs).unwrap()
    );
}

#[test]
fn blocks_that_do_not_split_x_are_an_error() {
    let (theta, x) = pairs();
    for blocks in [0, 3] {
        let options = NreOptions {
            exchangeable_blocks: blocks,
            ..NreOptions::default()
        };
        let err = NreModel::train(&theta, &x, 8, TASK.prior(), None, &options, |_| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains("exchangeable blocks"), "{err}");
        let options = ScoreTrainOptions {
            exchangeable_blocks: blocks,
            ..ScoreTrainOptions::default()
        };
        let err = ScoreModel::train(&theta, &x, 8, TASK.prior(), None, &options, |_| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains("exchangeable blocks"), "{err}");
    }
}

#[test]
fn a_task_s_exchangeable_blocks_split_its_x_into_draws_of_one_distribution() {
    for task in Task::ALL {
        assert_eq!(task.dim_x() % task.iid_draws(), 0, "{task}");
    }
    // slcp's four blocks at one θ: each block's means and variances match the first
    // block's. At this θ the larger variance is θ₃⁴ = 1.2⁴ ≈ 2.07, so over 4000 rows a
    // difference of two means has a standard error of ≈ 0.032 (0.12 is 3.7 of them) and
    // a difference of two variances ≈ 0.065 (0.5 is 7.7).
    let rows = 4000;
    let theta: Vec<f32> = [0.5f32, -1.0, 1.2, 0.8, 0.3].repeat(rows);
    let mut rng = amortize::rng::PhiloxStream::new(9, amortize::rng::streams::DATA, 0);
    let x = TASK.simulate(&theta, &mut rng).unwrap();
    let blocks = TASK.iid_draws();
    let width = TASK.dim_x() / blocks;
    let moments = |b: usize| -> Vec<f64> {
        let mut out = Vec::new();
        for f in 0..width {
            let v: Vec<f64> = x
                .chunks_exact(TASK.dim_x())
                .map(|r| r[b * width + f] as f64)
                .collect();
            let mean = v.iter().sum::<f64>() / rows as f64;
            let var = v.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / rows as f64;
            out.extend([mean, var]);
        }
        out
    };
    let first = moments(0);
    for b in 1..blocks {
        for (i, (a, c)) in first.iter().zip(moments(b)).enumerate() {
            let tolerance = if i % 2 == 0 { 0.12 } else { 0.5 };
            assert!(
                (a - c).abs() < tolerance,
                "block {b}, moment {i}: {a} vs {c}"
            );
        }
    }
}

#[test]
fn split_iid_draws_puts_each_theta_beside_each_of_its_draws() {
    let theta = [1.0, 2.0, 3.0, 4.0];
    let (repeated, dim) = split_iid_draws(&theta, 2, 8, 4).unwrap();
    assert_eq!(dim, 2);
    assert_eq!(
        repeated,
        [[1.0, 2.0]; 4]
            .concat()
            .into_iter()
            .chain([[3.0, 4.0]; 4].concat())
            .collect::<Vec<f32>>()
    );
    for draws in [0, 3] {
        let err = split_iid_draws(&theta, 2, 8, draws)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("{draws} iid draws")), "{err}");
    }
}
