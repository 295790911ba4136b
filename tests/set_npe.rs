//! Set NPE and the set tasks: the section 3.1 simulator and its exact posterior, a small
//! seeded training checked against that posterior, padding invariance, bad input and the
//! model directory round trip.

use std::sync::OnceLock;

use amortize::estimators::npe::NpeModel;
use amortize::estimators::set_npe::{
    draw_subsets, subsets_per_simulation, SetEncoderConfig, SetNpeModel, SetNpeOptions,
    MAX_SUBSET_DRAWS,
};
use amortize::nn::sets::RaggedSets;
use amortize::nn::{DeepSetConfig, TransformerConfig};
use amortize::rng::{streams, PhiloxStream};
use amortize::tasks::sets::{gaussian_mean, resonance, SetTask};
use amortize::Tensor;

/// Largest set of the small training runs (the task's own sets go up to 200; smaller
/// sets keep the test fast and still span a 5× range of posterior widths).
const MAX_TEST_SET: usize = 40;

/// Mean and (n − 1) variance of `values`.
fn moments(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var)
}

/// `count` sets of the Gaussian-mean task with sizes uniform on 1..=MAX_TEST_SET.
fn small_gaussian_sets(count: usize, seed: u64) -> (Vec<f32>, RaggedSets) {
    let theta =
        gaussian_mean::prior().sample(&mut PhiloxStream::new(seed, streams::TEST, 0), count);
    let mut rng = PhiloxStream::new(seed, streams::TEST, 1);
    let mut sets = RaggedSets::new(gaussian_mean::FEATURES).unwrap();
    for mu in theta.chunks_exact(gaussian_mean::DIM) {
        let n = 1 + rng.below(MAX_TEST_SET as u32) as usize;
        sets.push(&gaussian_mean::simulate_set(mu, n, &mut rng))
            .unwrap();
    }
    (theta, sets)
}

/// One small deep-set model on the Gaussian-mean task, shared by the tests that need a
/// trained model (training it once keeps the file fast).
fn trained_model() -> &'static SetNpeModel {
    static MODEL: OnceLock<SetNpeModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        let (theta, sets) = small_gaussian_sets(10000, 1);
        let mut options = SetNpeOptions::deep_set(gaussian_mean::FEATURES);
        options.encoder = SetEncoderConfig::DeepSet(DeepSetConfig {
            width: 32,
            embedding: 32,
            ..DeepSetConfig::new(gaussian_mean::FEATURES, 8)
        });
        options.layers = 4;
        options.train.epochs = 12;
        options.train.batch_size = 64;
        options.train.seed = 2;
        let task = Some(SetTask::GaussianMean.name().to_string());
        let (model, _) = SetNpeModel::train(
            &theta,
            &sets,
            gaussian_mean::prior(),
            task,
            &options,
            |_| {},
        )
        .unwrap();
        model
    })
}

#[test]
fn gaussian_mean_simulator_draws_from_its_stated_distribution() {
    let mu = [0.5f32, -1.0, 2.0];
    let n = 4000;
    let set = gaussian_mean::simulate_set(&mu, n, &mut PhiloxStream::new(3, streams::TEST, 0));
    assert_eq!(set.len(), n * gaussian_mean::FEATURES);
    let draws = n * gaussian_mean::DRAWS_PER_ELEMENT;
    for (d, (&m, want_var)) in mu.iter().zip(gaussian_mean::NOISE_VAR).enumerate() {
        let column: Vec<f64> = set
            .iter()
            .skip(d)
            .step_by(gaussian_mean::DIM)
            .map(|&v| v as f64)
            .collect();
        assert_eq!(column.len(), draws);
        let (mean, var) = moments(&column);
        // 4 standard errors: the mean's is sqrt(var / draws), the variance's
        // var·sqrt(2 / draws) (about 1% here).
        assert!(
            (mean - m as f64).abs() < 4.0 * (want_var / draws as f64).sqrt(),
            "dim {d}: mean {mean}, want {m}"
        );
        assert!(
            (var / want_var - 1.0).abs() < 4.0 * (2.0 / draws as f64).sqrt(),
            "dim {d}: variance {var}, want {want_var}"
        );
    }
    // The 5 draws of one element are independent: draw 1 and draw 2 of dimension 0 are
    // uncorrelated (standard error of the correlation 1/sqrt(n) ≈ 0.016).
    let first: Vec<f64> = set
        .chunks_exact(gaussian_mean::FEATURES)
        .map(|e| e[0] as f64)
        .collect();
    let second: Vec<f64> = set
        .chunks_exact(gaussian_mean::FEATURES)
        .map(|e| e[gaussian_mean::DIM] as f64)
        .collect();
    let (m1, v1) = moments(&first);
    let (m2, v2) = moments(&second);
    let cov = first
        .iter()
        .zip(&second)
        .map(|(a, b)| (a - m1) * (b - m2))
        .sum::<f64>()
        / (n as f64 - 1.0);
    assert!(
        (cov / (v1 * v2).sqrt()).abs() < 0.065,
        "correlated draws: {cov}"
    );
}

#[test]
fn resonance_simulator_draws_from_its_stated_mixture() {
    let (strength, location, n) = (0.3f32, 2.5f32, 40_000);
    let x = resonance::simulate_set(
        strength,
        location,
        n,
        &mut PhiloxStream::new(4, streams::TEST, 0),
    );
    let values: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let (mean, var) = moments(&values);
    let (s, l) = (strength as f64, location as f64);
    // Mixture moments: E x = θ·loc, E x² = θ(σ_s² + loc²) + (1 − θ)σ_b².
    let want_mean = s * l;
    let want_var =
        s * (resonance::SIGNAL_WIDTH.powi(2) + l * l) + (1.0 - s) - want_mean * want_mean;
    assert!(
        (mean - want_mean).abs() < 4.0 * (want_var / n as f64).sqrt(),
        "mean {mean}, want {want_mean}"
    );
    assert!(
        (var / want_var - 1.0).abs() < 0.05,
        "variance {var}, want {want_var}"
    );
    // The signal is narrow: about θ of the events lie within 5σ_s of the location (plus
    // the background's 4% there).
    let near = values.iter().filter(|&&v| (v - l).abs() < 0.5).count() as f64 / n as f64;
    let background_near = 0.0214 * (1.0 - s);
    assert!(
        (near - s - background_near).abs() < 0.01,
        "share near the peak {near}"
    );
}

#[test]
fn set_tasks_are_seeded_and_respect_their_cardinalities() {
    for task in SetTask::ALL {
        let a = task.simulate_dataset(300, 7).unwrap();
        assert_eq!(
            a,
            task.simulate_dataset(300, 7).unwrap(),
            "{task:?} is not reproducible"
        );
        assert_ne!(a, task.simulate_dataset(300, 8).unwrap());
        let (lo, hi) = task.cardinality_range();
        let sizes: Vec<usize> = (0..a.sets.len()).map(|i| a.sets.cardinality(i)).collect();
        assert!(
            sizes.iter().all(|&n| (lo..=hi).contains(&n)),
            "{task:?}: {sizes:?}"
        );
        if hi > lo {
            // 300 uniform draws on 1..=200 reach both ends' 10% with near certainty.
            assert!(
                sizes.iter().any(|&n| n <= lo + hi / 10)
                    && sizes.iter().any(|&n| n >= hi - hi / 10)
            );
        }
        assert_eq!(a.sets.features(), task.features());
        assert_eq!(a.theta.len(), 300 * task.prior().dim());
    }
}

#[test]
fn exact_gaussian_mean_posterior_matches_a_grid() {
    let mu = [1.0f32, -2.0, 0.5];
    for n in [1, 7, 60] {
        let set =
            gaussian_mean::simulate_set(&mu, n, &mut PhiloxStream::new(5, streams::TEST, n as u32));
        let exact = gaussian_mean::posterior(&set).unwrap();
        let (mean, cov) = (exact.mean(), exact.cov());
        let closed_std = gaussian_mean::posterior_std(n);
        for d in 0..gaussian_mean::DIM {
            // Brute force: prior N(0, 3) times every draw's N(x | θ, Σ_dd) on a grid.
            let var = gaussian_mean::NOISE_VAR[d];
            let obs: Vec<f64> = set
                .iter()
                .skip(d)
                .step_by(gaussian_mean::DIM)
                .map(|&v| v as f64)
                .collect();
            let grid: Vec<f64> = (0..=40_000)
                .map(|k| -10.0 + 20.0 * k as f64 / 40_000.0)
                .collect();
            let log_post: Vec<f64> = grid
                .iter()
                .map(|&t| {
                    -0.5 * t * t / gaussian_mean::PRIOR_VAR
                        - obs.iter().map(|x| 0.5 * (x - t).powi(2) / var).sum::<f64>()
                })
                .collect();
            let max = log_post.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let w: Vec<f64> = log_post.iter().map(|l| (l - max).exp()).collect();
            let z: f64 = w.iter().sum();
            let grid_mean = grid.iter().zip(&w).map(|(t, w)| t * w).sum::<f64>() / z;
            let grid_var = grid
                .iter()
                .zip(&w)
                .map(|(t, w)| (t - grid_mean).powi(2) * w)
                .sum::<f64>()
                / z;
            let exact_var = cov[d * gaussian_mean::DIM + d];
            assert!(
                (mean[d] - grid_mean).abs() < 1e-4,
                "n {n} dim {d}: mean {} vs grid {grid_mean}",
                mean[d]
            );
            assert!(
                (exact_var / grid_var - 1.0).abs() < 1e-3,
                "n {n} dim {d}: var {exact_var} vs grid {grid_var}"
            );
            assert!((closed_std[d] - exact_var.sqrt()).abs() < 1e-9);
            // The paper's formula with its N the number of draws (5 per element).
            assert_eq!(obs.len(), gaussian_mean::DRAWS_PER_ELEMENT * n);
        }
    }
}

#[test]
fn small_set_npe_recovers_the_exact_posterior() {
    let model = trained_model();
    let mu_all = gaussian_mean::prior().sample(&mut PhiloxStream::new(9, streams::TEST, 0), 20);
    let mut rng = PhiloxStream::new(9, streams::TEST, 1);
    // Per coordinate of each test set: (mean error in exact posterior stds, log std ratio).
    let mut errors: Vec<(f64, f64)> = Vec::new();
    for (k, mu) in mu_all.chunks_exact(gaussian_mean::DIM).enumerate() {
        let n = if k % 2 == 0 { 4 } else { MAX_TEST_SET };
        let set = gaussian_mean::simulate_set(mu, n, &mut rng);
        let exact = gaussian_mean::posterior(&set).unwrap();
        let (mean, cov) = (exact.mean(), exact.cov());
        let draws = model.sample(&set, 2000, k as u64).unwrap().samples;
        for d in 0..gaussian_mean::DIM {
            let col: Vec<f64> = draws
                .iter()
                .skip(d)
                .step_by(gaussian_mean::DIM)
                .map(|&v| v as f64)
                .collect();
            let (m, v) = moments(&col);
            let sd = cov[d * gaussian_mean::DIM + d].sqrt();
            errors.push(((m - mean[d]) / sd, (v.sqrt() / sd).ln()));
        }
    }
    // Thresholds for a 12-epoch run on 10 000 sets, over every coordinate of 20 test sets
    // at N = 4 and N = 40 (exact stds about 3× apart): the RMS mean error below 0.4
    // posterior std, the geometric mean of the std ratios within 1.25× of 1, and no
    // coordinate off by more than 1 std in the mean or 2× in the std. Such runs land
    // near 0.25 RMS, ratio 1.1 (a briefly trained flow is a little too wide) and worst
    // cases near 0.7 and 1.7; sampling error (2000 draws) is ~2% of a std. A model that
    // ignored the data misses the mean by about one prior std (≥ 3 posterior stds), one
    // that ignored N misses the std by ~1.7× at both ends.
    let count = errors.len() as f64;
    let rms = (errors.iter().map(|e| e.0 * e.0).sum::<f64>() / count).sqrt();
    let ratio = (errors.iter().map(|e| e.1).sum::<f64>() / count).exp();
    let worst_mean = errors.iter().map(|e| e.0.abs()).fold(0.0, f64::max);
    let worst_ratio = errors.iter().map(|e| e.1.abs()).fold(0.0, f64::max).exp();
    assert!(
        rms < 0.4,
        "posterior means off by {rms} posterior stds (RMS)"
    );
    assert!(
        (1.0 / 1.25..1.25).contains(&ratio),
        "posterior stds off by a factor {ratio} (geometric mean)"
    );
    assert!(
        worst_mean < 1.0,
        "a posterior mean off by {worst_mean} stds"
    );
    assert!(
        worst_ratio < 2.0,
        "a posterior std off by a factor {worst_ratio}"
    );
}

/// The log-density of θ given one set, with the set laid out in a batch in a given way.
fn log_prob_of(
    model: &SetNpeModel,
    theta: &[f32],
    x: Vec<f32>,
    mask: Vec<f32>,
    size: usize,
) -> Vec<f32> {
    let f = model.features();
    let batch = mask.len() / size;
    model
        .log_prob(
            theta,
            &Tensor::from_vec(x, &[batch, size, f]).unwrap(),
            &Tensor::from_vec(mask, &[batch, size]).unwrap(),
        )
        .unwrap()
}

fn check_padding_invariance(model: &SetNpeModel) {
    let f = model.features();
    let (theta, sets) = small_gaussian_sets(2, 11);
    let (a, b) = (sets.set(0), sets.set(1));
    let (na, nb) = (a.len() / f, b.len() / f);
    let d = theta.len() / 2;
    let t0 = &theta[..d];
    let unpadded = log_prob_of(model, t0, a.to_vec(), vec![1.0; na], na)[0];

    // Set a padded at the end with zeros to 3 extra slots.
    let mut x = a.to_vec();
    x.extend(vec![0.0; 3 * f]);
    let mut mask = vec![1.0; na];
    mask.extend([0.0; 3]);
    let end = log_prob_of(model, t0, x, mask, na + 3)[0];

    // Set a with junk (finite) padding between its elements, in a batch beside set b.
    let size = 2 * na.max(nb) + 1;
    let (mut x, mut mask) = (Vec::new(), Vec::new());
    for (s, element) in a.chunks_exact(f).enumerate() {
        x.extend(std::iter::repeat_n(1e3 * (s as f32 + 1.0), f));
        mask.push(0.0);
        x.extend_from_slice(element);
        mask.push(1.0);
    }
    x.resize(size * f, -7.0);
    mask.resize(size, 0.0);
    x.extend_from_slice(b);
    x.resize(2 * size * f, 0.0);
    mask.extend(vec![1.0; nb]);
    mask.resize(2 * size, 0.0);
    let both = log_prob_of(model, &theta, x, mask, size);

    // The real elements in reverse order (a set has no order).
    let reversed: Vec<f32> = a.chunks_exact(f).rev().flatten().copied().collect();
    let permuted = log_prob_of(model, t0, reversed, vec![1.0; na], na)[0];

    for (what, value) in [
        ("end padding", end),
        ("interleaved padding", both[0]),
        ("permutation", permuted),
    ] {
        assert!(
            (value - unpadded).abs() < 1e-4 * unpadded.abs().max(1.0),
            "{what}: {value} vs {unpadded}"
        );
    }
    let alone = log_prob_of(model, &theta[d..], b.to_vec(), vec![1.0; nb], nb)[0];
    assert!((both[1] - alone).abs() < 1e-4 * alone.abs().max(1.0));
}

#[test]
fn log_density_does_not_depend_on_padding() {
    check_padding_invariance(trained_model());
}

#[test]
fn bad_input_is_an_error() {
    let model = trained_model();
    let f = model.features();
    let theta = [0.0f32; 3];
    let x = Tensor::full(&[1, 4, f], 0.5);
    let err = |r: amortize::Result<Vec<f32>>| r.unwrap_err().to_string();

    let empty = err(model.log_prob(&theta, &x, &Tensor::zeros(&[1, 4])));
    assert!(empty.contains("empty"), "{empty}");
    let mut nan = vec![0.5; 4 * f];
    nan[f + 2] = f32::NAN;
    let nan = err(model.log_prob(
        &theta,
        &Tensor::from_vec(nan, &[1, 4, f]).unwrap(),
        &Tensor::full(&[1, 4], 1.0),
    ));
    assert!(nan.contains("NaN"), "{nan}");
    let narrow = err(model.log_prob(
        &theta,
        &Tensor::full(&[1, 4, f - 1], 0.5),
        &Tensor::full(&[1, 4], 1.0),
    ));
    assert!(narrow.contains("features"), "{narrow}");
    let rows = err(model.log_prob(&[0.0; 6], &x, &Tensor::full(&[1, 4], 1.0)));
    assert!(rows.contains("theta"), "{rows}");

    let sample_err = |set: &[f32]| model.sample(set, 10, 0).unwrap_err().to_string();
    assert!(sample_err(&[]).contains("empty"));
    assert!(sample_err(&vec![0.5; f + 1]).contains("rows"));
    let mut nan_set = vec![0.5; 2 * f];
    nan_set[3] = f32::NAN;
    assert!(sample_err(&nan_set).contains("NaN"));

    let mut sets = RaggedSets::new(f).unwrap();
    assert!(sets.push(&[]).is_err());
    assert!(sets.push(&vec![0.0; f + 2]).is_err());
    assert!(sets.push(&[f32::INFINITY; 15]).is_err());
    sets.push(&vec![0.0; 2 * f]).unwrap();
    sets.push(&vec![1.0; f]).unwrap();
    // An encoder for another element size, and θ rows that do not match the sets.
    let options = SetNpeOptions::deep_set(f + 1);
    let wrong = SetNpeModel::train(
        &[0.0; 6],
        &sets,
        gaussian_mean::prior(),
        None,
        &options,
        |_| {},
    );
    assert!(wrong.unwrap_err().to_string().contains("features"));
    let options = SetNpeOptions::deep_set(f);
    let wrong = SetNpeModel::train(
        &[0.0; 9],
        &sets,
        gaussian_mean::prior(),
        None,
        &options,
        |_| {},
    );
    assert!(wrong.unwrap_err().to_string().contains("sets"));
}

#[test]
fn model_directory_round_trips() {
    let model = trained_model();
    let dir = std::env::temp_dir().join(format!("amortize-set-npe-{}", std::process::id()));
    model.save(&dir).unwrap();
    let loaded = SetNpeModel::load(&dir).unwrap();
    assert_eq!(loaded.config, model.config);
    let (theta, sets) = small_gaussian_sets(3, 12);
    let (x, mask) = sets.padded(&[0, 1, 2]).unwrap();
    assert_eq!(
        loaded.log_prob(&theta, &x, &mask).unwrap(),
        model.log_prob(&theta, &x, &mask).unwrap()
    );
    assert_eq!(
        loaded.sample(sets.set(0), 50, 3).unwrap().samples,
        model.sample(sets.set(0), 50, 3).unwrap().samples
    );
    let wrong_kind = NpeModel::load(&dir).unwrap_err().to_string();
    assert!(wrong_kind.contains("set_npe"), "{wrong_kind}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn set_transformer_encoder_trains_pads_and_round_trips() {
    let f = gaussian_mean::FEATURES;
    let (theta, sets) = small_gaussian_sets(200, 13);
    let mut options = SetNpeOptions::set_transformer(f);
    options.encoder = SetEncoderConfig::SetTransformer(TransformerConfig {
        width: 16,
        heads: 2,
        ff_width: 32,
        blocks: 1,
        ..TransformerConfig::new(f, 4)
    });
    options.layers = 2;
    options.train.epochs = 2;
    let (model, report) = SetNpeModel::train(
        &theta,
        &sets,
        gaussian_mean::prior(),
        None,
        &options,
        |_| {},
    )
    .unwrap();
    assert!(report.best_loss.is_finite());
    check_padding_invariance(&model);
    let dir = std::env::temp_dir().join(format!("amortize-set-npe-tf-{}", std::process::id()));
    model.save(&dir).unwrap();
    let loaded = SetNpeModel::load(&dir).unwrap();
    assert_eq!(loaded.config, model.config);
    let (x, mask) = sets.padded(&[0, 1]).unwrap();
    assert_eq!(
        loaded.log_prob(&theta[..6], &x, &mask).unwrap(),
        model.log_prob(&theta[..6], &x, &mask).unwrap()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn draw_subsets_are_every_non_empty_subset_of_each_simulations_draws() {
    // 30 simulations of 4 draws of 2 features; draw d of simulation i is (i, d), so every
    // element says where it came from.
    let (simulations, draws, dim_theta) = (30usize, 4usize, 3usize);
    let theta: Vec<f32> = (0..simulations * dim_theta).map(|v| v as f32).collect();
    let x: Vec<f32> = (0..simulations)
        .flat_map(|i| (0..draws).flat_map(move |d| [i as f32, d as f32]))
        .collect();
    let (repeated, sets) = draw_subsets(&theta, &x, dim_theta, draws).unwrap();
    let per = subsets_per_simulation(draws);
    assert_eq!(per, 15);
    assert_eq!(sets.len(), simulations * per);
    assert_eq!(sets.features(), 2);
    for i in 0..simulations {
        let mut subsets: Vec<Vec<usize>> = (0..per)
            .map(|k| {
                let row = i * per + k;
                assert_eq!(
                    &repeated[row * dim_theta..(row + 1) * dim_theta],
                    &theta[i * dim_theta..(i + 1) * dim_theta]
                );
                let set = sets.set(row);
                assert!(set.chunks_exact(2).all(|e| e[0] == i as f32));
                set.chunks_exact(2).map(|e| e[1] as usize).collect()
            })
            .collect();
        // Fifteen different subsets of {0, 1, 2, 3}, none empty, none repeating a draw:
        // every non-empty subset once.
        for subset in &subsets {
            assert!(!subset.is_empty() && subset.windows(2).all(|w| w[0] < w[1]));
        }
        subsets.sort();
        subsets.dedup();
        assert_eq!(subsets.len(), 15);
    }
    // x that is not whole simulations of `draws` draws is an error, and so are more
    // draws than the subsets can be enumerated for.
    let err = draw_subsets(&theta, &x[..x.len() - 2], dim_theta, draws).unwrap_err();
    assert!(err.to_string().contains("multiple of 120"), "{err}");
    let wide = vec![0.0f32; simulations * (MAX_SUBSET_DRAWS + 1)];
    let err = draw_subsets(&theta, &wide, dim_theta, MAX_SUBSET_DRAWS + 1).unwrap_err();
    assert!(err.to_string().contains("1 to 6 draws"), "{err}");
}
