//! C2ST, MMD² and coverage on samples whose answer is known.

use amortize::diagnostics::{
    c2st, c2st_with, median_heuristic, mmd2, mmd2_with, C2stConfig, Coverage, MmdConfig,
};
use amortize::rng::{streams, PhiloxStream};

/// `n` draws of `N(shift·e_0, I)` in `dim` dimensions.
fn normals(n: usize, dim: usize, shift: f32, seed: u64) -> Vec<f32> {
    let mut rng = PhiloxStream::new(seed, streams::TEST, 0);
    let mut v = vec![0.0f32; n * dim];
    rng.fill_normal(0.0, 1.0, &mut v);
    for r in v.chunks_mut(dim) {
        r[0] += shift;
    }
    v
}

#[test]
fn c2st_is_one_half_for_one_distribution() {
    let x = normals(1000, 2, 0.0, 1);
    let y = normals(1000, 2, 0.0, 2);
    let acc = c2st(&x, &y, 2).unwrap();
    // Under the null each held-out prediction is a coin flip: the mean accuracy over
    // 2000 held-out rows has SE √(0.25/2000) = 0.011; a classifier fitting noise sits
    // at or slightly below 0.5. ±0.06 is > 5 SE.
    assert!((acc - 0.5).abs() < 0.06, "accuracy {acc}");
}

#[test]
fn c2st_is_one_for_separated_distributions() {
    let x = normals(1000, 3, 0.0, 1);
    let y = normals(1000, 3, 8.0, 2);
    // Means 8 std apart: the Bayes error is Φ(-4) = 3e-5, so any working classifier
    // gets ≥ 0.99 (20 errors in 2000 would be far more than chance allows).
    let acc = c2st(&x, &y, 3).unwrap();
    assert!(acc > 0.99, "accuracy {acc}");
}

#[test]
fn c2st_reaches_the_bayes_accuracy() {
    // N(0, 1) vs N(1, 1) in 1-D: the best classifier thresholds at 0.5 and is right
    // with probability Φ(0.5) = 0.6915. With 4000 held-out rows (SE 0.007) and a
    // well-trained MLP (excess error ≲ 0.01), ±0.035 is ~4 SE plus that slack.
    let x = normals(2000, 1, 0.0, 3);
    let y = normals(2000, 1, 1.0, 4);
    let r = c2st_with(&x, &y, 1, &C2stConfig::default()).unwrap();
    assert!((r.accuracy - 0.6915).abs() < 0.035, "{r:?}");
    assert_eq!(r.fold_accuracies.len(), 5);
    assert_eq!(r.samples_used, (2000, 2000));
}

#[test]
fn c2st_is_seeded_and_subsamples() {
    let x = normals(600, 2, 0.0, 5);
    let y = normals(900, 2, 0.5, 6);
    let cfg = C2stConfig {
        max_samples: Some(500),
        max_epochs: 20,
        ..C2stConfig::default()
    };
    let a = c2st_with(&x, &y, 2, &cfg).unwrap();
    let b = c2st_with(&x, &y, 2, &cfg).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.samples_used, (500, 500));
    assert!(
        a.epochs.iter().all(|&e| (1..=20).contains(&e)),
        "{:?}",
        a.epochs
    );
}

#[test]
fn c2st_rejects_bad_input() {
    let x = normals(100, 2, 0.0, 1);
    let mut y = normals(100, 2, 0.0, 2);
    assert!(c2st(&x, &y[..199], 2).is_err());
    assert!(c2st(&x, &y, 0).is_err());
    assert!(c2st(&x, &y[..6], 2).is_err(), "fewer rows than folds");
    y[41] = f32::NAN;
    y[77] = f32::INFINITY;
    let e = c2st(&x, &y, 2).unwrap_err().to_string();
    assert!(e.contains("2 rows") && e.contains("row 20"), "{e}");
    assert!(mmd2(&x, &y, 2).is_err());
}

#[test]
fn median_heuristic_matches_theory() {
    // For x, x' ~ N(0, I₂), |x - x'| is √2 times a Rayleigh variable, whose median is
    // √(2 ln 2): the median distance is 2√(ln 2) = 1.665. The sample median of ~5·10⁵
    // (dependent) distances from 1000 points is within ~1% of it; tolerance 3%.
    let x = normals(2000, 2, 0.0, 7);
    let y = normals(2000, 2, 0.0, 8);
    let m = median_heuristic(&x, &y, 2, 1000, 0);
    let want = 2.0 * std::f64::consts::LN_2.sqrt();
    assert!((m / want - 1.0).abs() < 0.03, "median {m} vs {want}");
}

/// MMD² between `N(0, I_d)` and `N(Δ, I_d)` with kernel bandwidth σ:
/// `2 (σ²/(σ²+2))^(d/2) (1 - exp(-|Δ|²/(2(σ²+2))))`.
fn mmd2_gaussians(d: usize, delta: f64, sigma: f64) -> f64 {
    let s2 = sigma * sigma;
    2.0 * (s2 / (s2 + 2.0)).powf(d as f64 / 2.0)
        * (1.0 - (-delta * delta / (2.0 * (s2 + 2.0))).exp())
}

#[test]
fn mmd2_is_zero_for_one_distribution_and_matches_theory_otherwise() {
    let n = 2000;
    let cfg = MmdConfig {
        bandwidth: Some(1.5),
        ..MmdConfig::default()
    };
    let x = normals(n, 2, 0.0, 9);
    let same = mmd2_with(&x, &normals(n, 2, 0.0, 10), 2, &cfg)
        .unwrap()
        .mmd2;
    let shifted = mmd2_with(&x, &normals(n, 2, 1.0, 11), 2, &cfg)
        .unwrap()
        .mmd2;
    let want = mmd2_gaussians(2, 1.0, 1.5);
    // Under the null the unbiased estimate has mean 0 and (degenerate U-statistic) SD of
    // order √2·E[k²]^½/n ≈ 5e-4 at n = 2000; 5e-3 is ~10 SD. Under the alternative the
    // SD is ≈ 2√(ζ₁/n) with ζ₁ ≲ 0.01 for these kernels: ≲ 5e-3; the 0.02 tolerance
    // is 4 SD against a true value of 0.117.
    assert!(same.abs() < 5e-3, "null MMD² {same}");
    assert!((shifted - want).abs() < 0.02, "MMD² {shifted} vs {want}");
    // Default config: median-heuristic bandwidth, same qualitative answer.
    let r = mmd2_with(&x, &normals(n, 2, 1.0, 11), 2, &MmdConfig::default()).unwrap();
    assert!(r.bandwidth > 1.5 && r.bandwidth < 2.5, "{r:?}");
    assert!(r.mmd2 > 0.05, "{r:?}");
    assert!(mmd2(&x, &normals(n, 2, 0.0, 12), 2).unwrap().abs() < 5e-3);
    assert!(mmd2_with(
        &x,
        &x,
        2,
        &MmdConfig {
            bandwidth: Some(-1.0),
            ..cfg
        }
    )
    .is_err());
}

/// Coverage over 400 datasets of a conjugate model θ ~ N(0, 1), x ~ N(θ, 1) (posterior
/// N(x/2, 1/2)), with the posterior's draws scaled about its mean by `width`.
fn coverage_of_scaled_posterior(width: f32) -> Vec<f64> {
    let mut rng = PhiloxStream::new(9, streams::TEST, 0);
    let mut coverage = Coverage::new(1, &[0.5, 0.68, 0.95]).unwrap();
    for _ in 0..400 {
        let theta = rng.normal();
        let x = theta + rng.normal();
        let mut draws = vec![0.0f32; 500];
        rng.fill_normal(0.0, width * 0.5f32.sqrt(), &mut draws);
        draws.iter_mut().for_each(|d| *d += x / 2.0);
        coverage.add(&[theta], &draws).unwrap();
    }
    assert_eq!(coverage.datasets(), 400);
    coverage.shares().remove(0)
}

#[test]
fn coverage_is_nominal_for_the_exact_posterior_and_low_for_an_overconfident_one() {
    // 400 datasets: standard errors 0.025 (50%), 0.023 (68%), 0.011 (95%); 0.08 is > 3
    // of them, plus the quantile error of 500 draws.
    let exact = coverage_of_scaled_posterior(1.0);
    for (share, level) in exact.iter().zip([0.5, 0.68, 0.95]) {
        assert!((share - level).abs() < 0.08, "{exact:?}");
    }
    // Half as wide: the 95% interval spans ±0.98 sd, which covers 67%.
    let narrow = coverage_of_scaled_posterior(0.5);
    assert!((narrow[2] - 0.67).abs() < 0.08, "{narrow:?}");
    assert!(narrow[0] < 0.35, "{narrow:?}");
}

#[test]
fn coverage_rejects_bad_input() {
    assert!(Coverage::new(0, &[0.5]).is_err());
    assert!(Coverage::new(1, &[1.0]).is_err());
    let mut c = Coverage::new(2, &[0.5]).unwrap();
    assert!(c.add(&[0.0], &[0.0, 1.0]).is_err());
    assert!(c.add(&[0.0, 0.0], &[0.0, 1.0, 2.0]).is_err());
    assert!(c.add(&[0.0, f32::NAN], &[0.0, 1.0]).is_err());
    assert!(c.shares()[0][0].is_nan());
}
