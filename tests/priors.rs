//! Priors: normalization, score vs finite differences, bijections, JSON specs.
//!
//! Tolerances are derived in each comment. Finite differences are central,
//! `(f(x+h) - f(x-h)) / (x+h - (x-h))` with the step as actually represented in f32; the
//! log-densities are computed in f64 from f32 inputs.

use amortize::priors::{Bijection, Prior};
use amortize::rng::{streams, PhiloxStream};

fn priors() -> Vec<Prior> {
    vec![
        // A correlated 2-D Gaussian with non-zero mean.
        Prior::gaussian(&[0.5, -1.0], &[1.0, 0.6, 0.6, 2.0]).unwrap(),
        Prior::uniform(&[-1.0, 0.0], &[0.5, 1.0]).unwrap(),
        Prior::log_normal(&[0.3, -0.2], &[0.5, 0.8]).unwrap(),
    ]
}

/// Midpoint rule over a 2-D grid `[lo, hi]²` with `m` cells per side, of `exp(f)`.
fn integrate_2d(lo: f64, hi: f64, m: usize, f: impl Fn(&[f32]) -> Vec<f64>) -> f64 {
    let h = (hi - lo) / m as f64;
    let mut pts = Vec::with_capacity(2 * m * m);
    for i in 0..m {
        for j in 0..m {
            pts.push((lo + (i as f64 + 0.5) * h) as f32);
            pts.push((lo + (j as f64 + 0.5) * h) as f32);
        }
    }
    f(&pts).iter().map(|l| l.exp()).sum::<f64>() * h * h
}

#[test]
fn gaussian_density_normalizes() {
    let p = &priors()[0];
    // Largest std is √2; [-12, 12] covers > 8 std in every direction, so the mass
    // outside is < 1e-14. The midpoint rule on a Gaussian with h = 0.02 (≥ 50 cells per
    // std) is accurate to ~1e-10. f32 grid points add ~1e-7 relative. Tolerance 1e-5.
    let mass = integrate_2d(-12.0, 12.0, 1200, |t| p.log_density(t).unwrap());
    assert!((mass - 1.0).abs() < 1e-5, "mass {mass}");
}

#[test]
fn uniform_density_normalizes() {
    let p = &priors()[1];
    // Cells of width 0.01 from -2 align with the box edges (-1, 0.5, 0, 1), so exactly
    // the cells inside the box count: the mass is 1 up to the f32 placement of midpoints
    // (none near an edge). Tolerance 1e-9.
    let mass = integrate_2d(-2.0, 2.0, 400, |t| p.log_density(t).unwrap());
    assert!((mass - 1.0).abs() < 1e-9, "mass {mass}");
}

#[test]
fn log_normal_density_normalizes() {
    let p = &priors()[2];
    // Per dimension the mass above 40 is P(Z > (ln 40 - mu)/sigma) ≤ P(Z > 4.2) ≈ 1.3e-5
    // for (mu, sigma) = (-0.2, 0.8), so the box [0, 40]² misses < 2e-5. Near 0 the
    // density vanishes faster than any power. h = 0.01 midpoint error is ~1e-6.
    // Tolerance 1e-4.
    let mass = integrate_2d(0.0, 40.0, 4000, |t| p.log_density(t).unwrap());
    assert!((mass - 1.0).abs() < 1e-4, "mass {mass}");
}

#[test]
fn unconstrained_densities_normalize() {
    for p in priors() {
        // Standard logistic tails: mass beyond |u| = 30 is 2e-13; log-normal in u is a
        // Gaussian with std ≤ 0.8 around mu, and the Gaussian prior has std ≤ √2, so
        // [-30, 30] holds all but ~1e-13 of every one. Midpoint rule with h = 0.03
        // (≥ 16 cells per std, smooth integrands): error ≲ 1e-6. Tolerance 1e-4.
        let mass = integrate_2d(-30.0, 30.0, 2000, |u| {
            p.log_density_unconstrained(u).unwrap()
        });
        assert!((mass - 1.0).abs() < 1e-4, "{}: mass {mass}", p.kind());
    }
}

#[test]
fn samples_match_moments_and_support() {
    const N: usize = 100_000;
    // Sample mean and variance checked to 5 standard errors (estimated from the same
    // samples): a correct sampler fails one check with probability ~6e-7.
    for (k, p) in priors().into_iter().enumerate() {
        let mut rng = PhiloxStream::new(100 + k as u64, streams::TEST, 0);
        let s = p.sample(&mut rng, N);
        assert_eq!(s.len(), 2 * N);
        assert!(p.log_density(&s).unwrap().iter().all(|l| l.is_finite()));
        let (mean, var): (Vec<f64>, Vec<f64>) = match &p {
            Prior::Gaussian(g) => (g.mean().to_vec(), vec![g.cov()[0], g.cov()[3]]),
            Prior::Uniform(u) => (
                (0..2).map(|i| 0.5 * (u.lo()[i] + u.hi()[i])).collect(),
                (0..2)
                    .map(|i| (u.hi()[i] - u.lo()[i]).powi(2) / 12.0)
                    .collect(),
            ),
            Prior::LogNormal(l) => (
                (0..2)
                    .map(|i| (l.mu()[i] + 0.5 * l.sigma()[i].powi(2)).exp())
                    .collect(),
                (0..2)
                    .map(|i| {
                        let s2 = l.sigma()[i].powi(2);
                        (s2.exp() - 1.0) * (2.0 * l.mu()[i] + s2).exp()
                    })
                    .collect(),
            ),
        };
        for i in 0..2 {
            let x: Vec<f64> = s.iter().skip(i).step_by(2).map(|&v| v as f64).collect();
            let m = x.iter().sum::<f64>() / N as f64;
            let v = x.iter().map(|a| (a - m).powi(2)).sum::<f64>() / (N - 1) as f64;
            let m4 = x.iter().map(|a| (a - m).powi(4)).sum::<f64>() / N as f64;
            let se_m = (v / N as f64).sqrt();
            let se_v = ((m4 - v * v) / N as f64).sqrt();
            assert!(
                (m - mean[i]).abs() < 5.0 * se_m,
                "{} dim {i}: mean {m} vs {}",
                p.kind(),
                mean[i]
            );
            assert!(
                (v - var[i]).abs() < 5.0 * se_v,
                "{} dim {i}: var {v} vs {}",
                p.kind(),
                var[i]
            );
        }
        if let Prior::Gaussian(g) = &p {
            // Covariance: SE of the sample covariance ≈ √((c² + v0 v1)/N) ≈ 0.005.
            let c = s
                .chunks(2)
                .map(|r| (r[0] as f64 - g.mean()[0]) * (r[1] as f64 - g.mean()[1]))
                .sum::<f64>()
                / N as f64;
            let se = ((0.36 + 2.0) / N as f64).sqrt();
            assert!((c - 0.6).abs() < 5.0 * se, "cov {c}");
        }
    }
}

/// Central finite-difference gradient of `f` (one row) at `x`, step `h`.
fn fd_grad(f: impl Fn(&[f32]) -> f64, x: &[f32], h: f32) -> Vec<f64> {
    (0..x.len())
        .map(|i| {
            let (mut a, mut b) = (x.to_vec(), x.to_vec());
            a[i] += h;
            b[i] -= h;
            (f(&a) - f(&b)) / (a[i] as f64 - b[i] as f64)
        })
        .collect()
}

#[test]
fn score_matches_finite_differences() {
    for (k, p) in priors().into_iter().enumerate() {
        let mut rng = PhiloxStream::new(7 + k as u64, streams::TEST, 0);
        let pts = p.sample(&mut rng, 50);
        let score = p.score(&pts).unwrap();
        for (row, s) in pts.chunks(2).zip(score.chunks(2)) {
            let fd = fd_grad(|t| p.log_density(t).unwrap()[0], row, 1e-3);
            // Central differences with h = 1e-3: truncation h²/6·|f'''|. Gaussian: exact
            // (quadratic). Log-normal: f''' ≈ 2/theta³ with theta ≥ 0.13 in 50 draws
            // (e^(mu - 2.3 sigma)), so ≤ 1.5e-4 against scores of size ~1/theta ≈ 8.
            // Uniform: both are 0. Tolerance 1e-3·(1 + |fd|).
            for i in 0..2 {
                assert!(
                    (fd[i] - s[i] as f64).abs() < 1e-3 * (1.0 + fd[i].abs()),
                    "{} at {row:?}: score {s:?} vs fd {fd:?}",
                    p.kind()
                );
            }
        }
    }
}

#[test]
fn bijection_round_trips() {
    for (k, p) in priors().into_iter().enumerate() {
        let mut rng = PhiloxStream::new(11 + k as u64, streams::TEST, 0);
        let theta = p.sample(&mut rng, 1000);
        let u = p.to_unconstrained(&theta).unwrap();
        let back = p.from_unconstrained(&u).unwrap();
        // theta -> u -> theta through f32: a few ulps of the larger of |theta| and the
        // box width; 1e-5 relative to (1 + |theta|) bounds it.
        for (a, b) in theta.iter().zip(&back) {
            assert!(
                (a - b).abs() <= 1e-5 * (1.0 + a.abs()),
                "{}: {a} -> {b}",
                p.kind()
            );
        }
        // u -> theta -> u on a grid of u in [-6, 6]: logit loses relative precision as
        // sigmoid(u) nears 1 (slope 1/(σ(1-σ)) ≈ 400 at |u| = 6 times f32 eps 6e-8 · box
        // width ≈ 1e-4 relative); 1e-3 absolute bounds it.
        let grid: Vec<f32> = (0..240).map(|i| -6.0 + 0.05 * i as f32).collect();
        let t = p.from_unconstrained(&grid).unwrap();
        let u2 = p.to_unconstrained(&t).unwrap();
        for (a, b) in grid.iter().zip(&u2) {
            assert!((a - b).abs() < 1e-3, "{}: {a} -> {b}", p.kind());
        }
    }
}

#[test]
fn log_jacobian_matches_finite_differences() {
    for p in priors() {
        let grid: Vec<f32> = (0..80).map(|i| -4.0 + 0.1 * i as f32).collect();
        let lj = p.log_abs_det_jacobian(&grid).unwrap();
        for (row, l) in grid.chunks(2).zip(&lj) {
            // T acts elementwise, so ln|det T'| = Σ_i ln|dT_i/du_i|.
            let h = 1e-2f32;
            let (mut up, mut dn) = (row.to_vec(), row.to_vec());
            for i in 0..2 {
                up[i] += h;
                dn[i] -= h;
            }
            let (tu, td) = (
                p.from_unconstrained(&up).unwrap(),
                p.from_unconstrained(&dn).unwrap(),
            );
            let fd: f64 = (0..2)
                .map(|i| ((tu[i] as f64 - td[i] as f64) / (up[i] as f64 - dn[i] as f64)).ln())
                .sum();
            // Truncation h²/6·T'''/T' ≤ 2e-5 for logistic and exp with |u| ≤ 4; f32
            // rounding of T (values ≤ 74) over a 0.02 step is ≤ 3e-4 relative to T' ≥
            // 0.35 (box) and ~3e-6 for exp. Tolerance 1e-3.
            assert!(
                (fd - l).abs() < 1e-3,
                "{} at {row:?}: {l} vs fd {fd}",
                p.kind()
            );
        }
    }
}

#[test]
fn unconstrained_density_is_density_times_jacobian() {
    for p in priors() {
        let grid: Vec<f32> = (0..80).map(|i| -4.0 + 0.1 * i as f32).collect();
        let lu = p.log_density_unconstrained(&grid).unwrap();
        let t = p.from_unconstrained(&grid).unwrap();
        let lp = p.log_density(&t).unwrap();
        let lj = p.log_abs_det_jacobian(&grid).unwrap();
        for k in 0..lu.len() {
            // The direct formula vs log p(T(u)) + log|T'|: they differ only by rounding
            // T(u) to f32 (relative 6e-8 in theta; the log-normal log-density moves by
            // ≲ 1e-6). Tolerance 1e-5.
            assert!(
                (lu[k] - (lp[k] + lj[k])).abs() < 1e-5,
                "{} row {k}: {} vs {} + {}",
                p.kind(),
                lu[k],
                lp[k],
                lj[k]
            );
        }
    }
}

#[test]
fn unconstrained_score_matches_finite_differences() {
    for p in priors() {
        let grid: Vec<f32> = (0..60).map(|i| -3.0 + 0.1 * i as f32).collect();
        let s = p.score_unconstrained(&grid).unwrap();
        for (row, sr) in grid.chunks(2).zip(s.chunks(2)) {
            let fd = fd_grad(|u| p.log_density_unconstrained(u).unwrap()[0], row, 1e-3);
            // Smooth f64 log-densities of f32 inputs: truncation ≤ 1e-7, rounding of the
            // f32 step handled exactly. Tolerance 1e-4·(1 + |score|).
            for i in 0..2 {
                assert!(
                    (fd[i] - sr[i] as f64).abs() < 1e-4 * (1.0 + fd[i].abs()),
                    "{} at {row:?}: {sr:?} vs fd {fd:?}",
                    p.kind()
                );
            }
        }
    }
}

#[test]
fn sample_unconstrained_matches_the_pushed_forward_prior() {
    // Draws of u mapped through T must be prior draws: compare means of theta to 5 SE.
    const N: usize = 50_000;
    for p in priors() {
        let mut rng = PhiloxStream::new(3, streams::TEST, 0);
        let u = p.sample_unconstrained(&mut rng, N);
        let t = p.from_unconstrained(&u).unwrap();
        let direct = p.sample(&mut PhiloxStream::new(4, streams::TEST, 0), N);
        for i in 0..2 {
            let a: Vec<f64> = t.iter().skip(i).step_by(2).map(|&v| v as f64).collect();
            let b: Vec<f64> = direct
                .iter()
                .skip(i)
                .step_by(2)
                .map(|&v| v as f64)
                .collect();
            let mean = |x: &[f64]| x.iter().sum::<f64>() / x.len() as f64;
            let var = |x: &[f64]| {
                let m = mean(x);
                x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (x.len() - 1) as f64
            };
            // Two independent sample means: SE of the difference √((va + vb)/N).
            let se = ((var(&a) + var(&b)) / N as f64).sqrt();
            assert!(
                (mean(&a) - mean(&b)).abs() < 5.0 * se,
                "{} dim {i}: {} vs {}",
                p.kind(),
                mean(&a),
                mean(&b)
            );
        }
    }
}

#[test]
fn bijection_kinds() {
    let kinds: Vec<Bijection> = priors().iter().map(Prior::bijection).collect();
    assert_eq!(
        kinds,
        [Bijection::Identity, Bijection::ScaledLogit, Bijection::Log]
    );
    assert!(!priors()[0].is_bounded() && priors()[1].is_bounded() && priors()[2].is_bounded());
    assert_eq!(Bijection::ScaledLogit.name(), "scaled_logit");
}

#[test]
fn out_of_support_and_bad_shapes() {
    let ps = priors();
    assert_eq!(
        ps[1].log_density(&[2.0, 0.5]).unwrap()[0],
        f64::NEG_INFINITY
    );
    assert_eq!(
        ps[2].log_density(&[-1.0, 0.5]).unwrap()[0],
        f64::NEG_INFINITY
    );
    let e = ps[1].to_unconstrained(&[0.0, 0.5, 0.0, 1.5]).unwrap_err();
    assert!(e.to_string().contains("theta[1][1]"), "{e}");
    assert!(ps[2].to_unconstrained(&[0.0, 1.0]).is_err());
    assert!(ps[0].to_unconstrained(&[f32::NAN, 1.0]).is_err());
    for p in &ps {
        assert!(p.log_density(&[1.0, 2.0, 3.0]).is_err());
        assert!(p.score(&[1.0]).is_err());
        assert!(p.from_unconstrained(&[1.0, 2.0, 3.0]).is_err());
        let mut out = [0.0f32; 3];
        assert!(p.score_into(&[0.5, 0.5], &mut out).is_err());
    }
    // Boundary points map to finite u.
    let u = ps[1].to_unconstrained(&[-1.0, 1.0]).unwrap();
    assert!(u.iter().all(|v| v.is_finite()), "{u:?}");
}

#[test]
fn json_specs_round_trip_and_validate() {
    for p in priors() {
        let text = p.to_json_string();
        let back = Prior::from_json_str(&text).unwrap();
        assert_eq!(back, p, "{text}");
    }
    let g =
        Prior::from_json_str(r#"{"kind": "gaussian", "mean": [0, 1], "cov": [[2, 0], [0, 3]]}"#)
            .unwrap();
    assert_eq!(g.dim(), 2);
    let bad = [
        (
            r#"{"kind": "gaussian", "mean": [0, 0], "cov": [[1, 2], [2, 1]]}"#,
            "positive definite",
        ),
        (
            r#"{"kind": "gaussian", "mean": [0, 0], "cov": [[1, 0.5], [0, 1]]}"#,
            "symmetric",
        ),
        (
            r#"{"kind": "gaussian", "mean": [0, 0], "cov": [[1, 0]]}"#,
            "2×2",
        ),
        (
            r#"{"kind": "uniform", "lo": [0, 1], "hi": [1, 1]}"#,
            "lo < hi",
        ),
        (
            r#"{"kind": "uniform", "lo": [0], "hi": [1, 1]}"#,
            "equal length",
        ),
        (
            r#"{"kind": "log_normal", "mu": [0], "sigma": [0]}"#,
            "sigma > 0",
        ),
        (r#"{"kind": "cauchy", "loc": [0]}"#, "cauchy"),
        (
            r#"{"kind": "uniform", "lo": [0], "hi": [1], "extra": 1}"#,
            "extra",
        ),
        (r#"{"lo": [0], "hi": [1]}"#, "kind"),
        ("not json", "expected"),
    ];
    for (text, needle) in bad {
        let e = Prior::from_json_str(text).unwrap_err().to_string();
        assert!(e.contains(needle), "{text}: {e}");
    }
}

#[test]
fn json_files_name_the_path() {
    let dir = std::env::temp_dir().join(format!("amortize-priors-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("prior.json");
    let p = priors().remove(1);
    p.to_json_file(&path).unwrap();
    assert_eq!(Prior::from_json_file(&path).unwrap(), p);
    let missing = dir.join("missing.json");
    let e = Prior::from_json_file(&missing).unwrap_err().to_string();
    assert!(e.contains("missing.json"), "{e}");
    std::fs::write(&path, r#"{"kind": "uniform", "lo": [1], "hi": [0]}"#).unwrap();
    let e = Prior::from_json_file(&path).unwrap_err().to_string();
    assert!(e.contains("prior.json") && e.contains("lo < hi"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
