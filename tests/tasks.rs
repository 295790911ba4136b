//! Tasks: simulator moments against their definitions, two_moons geometry, exact
//! posteriors against direct computations, and the sbibm reference data.
//!
//! Moment checks use 5 standard errors estimated from the same draws (a correct
//! simulator fails one such check with probability ~6e-7; with < 200 checks in this file
//! the chance of any spurious failure is < 1e-4).

use amortize::priors::Prior;
use amortize::rng::{streams, PhiloxStream};
use amortize::tasks::gaussian::gaussian10_sigma;
use amortize::tasks::{load_reference, Task};
use nalgebra::{DMatrix, DVector};

/// Mean, variance and the standard errors of both, of column `i` of `[n, d]` rows.
fn column_stats(rows: &[f32], d: usize, i: usize) -> (f64, f64, f64, f64) {
    let x: Vec<f64> = rows.iter().skip(i).step_by(d).map(|&v| v as f64).collect();
    let n = x.len() as f64;
    let m = x.iter().sum::<f64>() / n;
    let v = x.iter().map(|a| (a - m).powi(2)).sum::<f64>() / (n - 1.0);
    let m4 = x.iter().map(|a| (a - m).powi(4)).sum::<f64>() / n;
    (m, v, (v / n).sqrt(), ((m4 - v * v) / n).sqrt())
}

/// `n` copies of one parameter row.
fn repeat(theta: &[f32], n: usize) -> Vec<f32> {
    theta
        .iter()
        .cycle()
        .take(theta.len() * n)
        .copied()
        .collect()
}

fn check_mean_var(task: Task, theta: &[f32], mean: &[f64], var: &[f64]) {
    const N: usize = 40_000;
    let mut rng = PhiloxStream::new(42, streams::TEST, 0);
    let x = task.simulate(&repeat(theta, N), &mut rng).unwrap();
    assert_eq!(x.len(), N * task.dim_x());
    for i in 0..task.dim_x() {
        let (m, v, se_m, se_v) = column_stats(&x, task.dim_x(), i);
        assert!(
            (m - mean[i]).abs() < 5.0 * se_m,
            "{task} x[{i}]: mean {m} vs {}",
            mean[i]
        );
        assert!(
            (v - var[i]).abs() < 5.0 * se_v,
            "{task} x[{i}]: var {v} vs {}",
            var[i]
        );
    }
}

#[test]
fn names_dims_and_priors() {
    for t in Task::ALL {
        assert_eq!(Task::by_name(t.name()).unwrap(), t);
        assert_eq!(t.prior().dim(), t.dim_theta());
        assert_eq!(t.to_string(), t.name());
    }
    assert_eq!(Task::by_name("Two-Moons").unwrap(), Task::TwoMoons);
    let e = Task::by_name("lotka_volterra").unwrap_err().to_string();
    assert!(
        e.contains("lotka_volterra") && e.contains("gaussian10") && e.contains("slcp"),
        "{e}"
    );
    let dims: Vec<(usize, usize)> = Task::ALL
        .iter()
        .map(|t| (t.dim_theta(), t.dim_x()))
        .collect();
    assert_eq!(
        dims,
        [(10, 10), (10, 10), (2, 2), (10, 10), (2, 2), (2, 2), (5, 8)]
    );
    let kinds: Vec<&str> = Task::ALL.iter().map(|t| t.prior().kind()).collect();
    assert_eq!(
        kinds,
        ["gaussian", "gaussian", "gaussian", "gaussian", "uniform", "uniform", "uniform"]
    );
    match Task::GaussianLinear.prior() {
        Prior::Gaussian(g) => assert!(g.cov()[0] == 0.1 && g.cov()[1] == 0.0),
        p => panic!("gaussian_linear prior {p:?}"),
    }
    match Task::Slcp.prior() {
        Prior::Uniform(u) => assert!(u.lo() == [-3.0; 5] && u.hi() == [3.0; 5]),
        p => panic!("slcp prior {p:?}"),
    }
}

#[test]
fn gaussian_family_moments() {
    let theta: Vec<f32> = (0..10).map(|i| 0.3 * i as f32 - 1.2).collect();
    let mean: Vec<f64> = theta.iter().map(|&v| v as f64).collect();
    let s = gaussian10_sigma();
    assert!((s[0] - 0.6).abs() < 1e-12 && (s[9] - 1.4).abs() < 1e-12);
    check_mean_var(Task::Gaussian10, &theta, &mean, &s);
    // mog10: variance 0.5·2.25 s + 0.5·s/9.
    let mog: Vec<f64> = s.iter().map(|v| 0.5 * 2.25 * v + 0.5 * v / 9.0).collect();
    check_mean_var(Task::Mog10, &theta, &mean, &mog);
    check_mean_var(Task::GaussianLinear, &theta, &mean, &[0.1; 10]);
    // gaussian_mixture: variance 0.5·1 + 0.5·0.01.
    check_mean_var(
        Task::GaussianMixture,
        &[3.0, -7.5],
        &[3.0, -7.5],
        &[0.505; 2],
    );
}

#[test]
fn mixture_components_have_their_weights() {
    // mog10 at theta = 0: the kurtosis of a 50/50 scale mixture of normals with
    // variances a·s and b·s is E x⁴ / (E x²)² = 3 (a² + b²) / (2 · ((a + b)/2)²)
    // = 5.46 for a = 2.25, b = 1/9, whatever s (a single Gaussian would give 3).
    const N: usize = 200_000;
    let mut rng = PhiloxStream::new(5, streams::TEST, 0);
    let x = Task::Mog10.simulate(&vec![0.0; 10 * N], &mut rng).unwrap();
    let col: Vec<f64> = x.iter().step_by(10).map(|&v| v as f64).collect();
    let m2 = col.iter().map(|v| v * v).sum::<f64>() / N as f64;
    let m4 = col.iter().map(|v| v.powi(4)).sum::<f64>() / N as f64;
    let (a, b) = (2.25f64, 1.0 / 9.0);
    let expected = 3.0 * (0.5 * a * a + 0.5 * b * b) / (0.5 * a + 0.5 * b).powi(2);
    // The estimate's SE at N = 2e5 is 0.030 by the delta method on (E x², E x⁴), with
    // E x^(2k) = (2k-1)!! · 0.5 (a^k + b^k) s^k; 0.3 is 10 SE.
    assert!(
        (m4 / (m2 * m2) - expected).abs() < 0.3,
        "kurtosis {}",
        m4 / (m2 * m2)
    );
}

#[test]
fn multimodal2_moments() {
    // x = ±theta + N(0, 0.5 I): E x = 0, E x_i² = theta_i² + 0.5, E x0 x1 = theta0 theta1.
    const N: usize = 40_000;
    let theta = [0.8f32, -1.5];
    let mut rng = PhiloxStream::new(9, streams::TEST, 0);
    let x = Task::Multimodal2
        .simulate(&repeat(&theta, N), &mut rng)
        .unwrap();
    for i in 0..2 {
        let (m, _, se_m, _) = column_stats(&x, 2, i);
        assert!(m.abs() < 5.0 * se_m, "mean {m}");
    }
    let prods: Vec<[f64; 3]> = x
        .chunks(2)
        .map(|r| {
            let (a, b) = (r[0] as f64, r[1] as f64);
            [a * a, b * b, a * b]
        })
        .collect();
    let t = [theta[0] as f64, theta[1] as f64];
    let expected = [t[0] * t[0] + 0.5, t[1] * t[1] + 0.5, t[0] * t[1]];
    for k in 0..3 {
        let v: Vec<f32> = prods.iter().map(|p| p[k] as f32).collect();
        let (m, _, se, _) = column_stats(&v, 1, 0);
        assert!(
            (m - expected[k]).abs() < 5.0 * se,
            "moment {k}: {m} vs {}",
            expected[k]
        );
    }
}

#[test]
fn slcp_moments() {
    // Pool the 4 draws: mean m, cov S; draws 1 and 2 uncorrelated.
    const N: usize = 20_000;
    let theta = [0.7f32, -1.1, 1.2, -0.9, 0.8];
    let mut rng = PhiloxStream::new(13, streams::TEST, 0);
    let x = Task::Slcp.simulate(&repeat(&theta, N), &mut rng).unwrap();
    let pairs: Vec<f32> = x.clone();
    let (s1, s2) = ((1.2f64).powi(2), (0.9f64).powi(2));
    let rho = (0.8f64).tanh();
    let (m0, v0, se_m0, se_v0) = column_stats(&pairs, 2, 0);
    let (m1, v1, se_m1, se_v1) = column_stats(&pairs, 2, 1);
    assert!((m0 - 0.7).abs() < 5.0 * se_m0 && (m1 + 1.1).abs() < 5.0 * se_m1);
    assert!(
        (v0 - s1 * s1).abs() < 5.0 * se_v0,
        "var0 {v0} vs {}",
        s1 * s1
    );
    assert!(
        (v1 - s2 * s2).abs() < 5.0 * se_v1,
        "var1 {v1} vs {}",
        s2 * s2
    );
    let c: Vec<f32> = pairs
        .chunks(2)
        .map(|r| ((r[0] as f64 - 0.7) * (r[1] as f64 + 1.1)) as f32)
        .collect();
    let (cm, _, se_c, _) = column_stats(&c, 1, 0);
    let want = rho * s1 * s2;
    assert!((cm - want).abs() < 5.0 * se_c, "cov {cm} vs {want}");
    // Independence of the first and second draw of one simulation.
    let cross: Vec<f32> = x
        .chunks(8)
        .map(|r| ((r[0] as f64 - 0.7) * (r[2] as f64 - 0.7)) as f32)
        .collect();
    let (xm, _, se_x, _) = column_stats(&cross, 1, 0);
    assert!(xm.abs() < 5.0 * se_x, "cross-draw covariance {xm}");
}

#[test]
fn two_moons_geometry() {
    // x - shift(theta) = (r cos a + 0.25, r sin a), r ~ N(0.1, 0.01²), a ~ U(-π/2, π/2):
    // the radius about (0.25, 0) has mean 0.1 and std 0.01, the first coordinate is ≥ 0.25
    // (r > 0 except with probability ~1e-23), E r cos a = 0.1·2/π, E r sin a = 0.
    const N: usize = 40_000;
    for theta in [[0.0f32, 0.0], [0.3, -0.1], [-0.6, 0.9]] {
        let mut rng = PhiloxStream::new(17, streams::TEST, 0);
        let x = Task::TwoMoons
            .simulate(&repeat(&theta, N), &mut rng)
            .unwrap();
        let (t0, t1) = (theta[0] as f64, theta[1] as f64);
        let shift = [
            -(t0 + t1).abs() / std::f64::consts::SQRT_2,
            (t1 - t0) / std::f64::consts::SQRT_2,
        ];
        let mut radius = Vec::with_capacity(N);
        let mut p = Vec::with_capacity(2 * N);
        for r in x.chunks(2) {
            let p0 = r[0] as f64 - shift[0] - 0.25;
            let p1 = r[1] as f64 - shift[1];
            assert!(p0 > -1e-6, "{theta:?}: r cos a = {p0}");
            radius.push((p0 * p0 + p1 * p1).sqrt() as f32);
            p.push(p0 as f32);
            p.push(p1 as f32);
        }
        let (rm, rv, se_rm, se_rv) = column_stats(&radius, 1, 0);
        assert!((rm - 0.1).abs() < 5.0 * se_rm, "radius mean {rm}");
        assert!((rv - 1e-4).abs() < 5.0 * se_rv, "radius var {rv}");
        let (c, _, se_c, _) = column_stats(&p, 2, 0);
        let (s, _, se_s, _) = column_stats(&p, 2, 1);
        assert!(
            (c - 0.2 / std::f64::consts::PI).abs() < 5.0 * se_c,
            "E r cos a = {c}"
        );
        assert!(s.abs() < 5.0 * se_s, "E r sin a = {s}");
    }
}

#[test]
fn datasets_are_deterministic_and_seeded() {
    for t in Task::ALL {
        let (a, xa) = t.simulate_dataset(100, 7);
        let (b, xb) = t.simulate_dataset(100, 7);
        let (c, _) = t.simulate_dataset(100, 8);
        assert_eq!((a.len(), xa.len()), (100 * t.dim_theta(), 100 * t.dim_x()));
        assert_eq!(a, b);
        assert_eq!(xa, xb);
        assert_ne!(a, c);
        assert!(xa.iter().all(|v| v.is_finite()));
        assert!(t
            .prior()
            .log_density(&a)
            .unwrap()
            .iter()
            .all(|l| l.is_finite()));
    }
}

#[test]
fn simulate_rejects_bad_input() {
    let mut rng = PhiloxStream::new(0, streams::TEST, 0);
    assert!(Task::Slcp.simulate(&[0.0; 7], &mut rng).is_err());
    let mut theta = vec![0.0f32; 20];
    theta[13] = f32::NAN;
    let e = Task::Multimodal2
        .simulate(&theta, &mut rng)
        .unwrap_err()
        .to_string();
    assert!(e.contains("row 6"), "{e}");
    assert!(Task::TwoMoons.analytic_posterior(&[0.0, 0.0]).is_err());
    assert!(Task::Gaussian10.analytic_posterior(&[0.0; 15]).is_err());
    assert!(Task::Gaussian10.analytic_posterior(&[]).is_err());
    // 2^17 components is over the limit.
    assert!(Task::Multimodal2.analytic_posterior(&[0.1; 34]).is_err());
}

#[test]
fn gaussian10_posterior_matches_direct_computation() {
    let s = gaussian10_sigma();
    for n in [1usize, 2, 4, 8] {
        let (_, obs) = Task::Gaussian10.simulate_dataset(n, 100 + n as u64);
        let post = Task::Gaussian10.analytic_posterior(&obs).unwrap();
        assert_eq!(post.num_components(), 1);
        // Direct: precision I + n Sigma⁻¹, mean = cov Sigma⁻¹ Σ_j x_j, with nalgebra.
        let sigma_inv =
            DMatrix::from_diagonal(&DVector::from_iterator(10, s.iter().map(|v| 1.0 / v)));
        let precision = DMatrix::identity(10, 10) + sigma_inv.clone() * n as f64;
        let cov = precision.try_inverse().unwrap();
        let sum = DVector::from_iterator(
            10,
            (0..10).map(|i| (0..n).map(|j| obs[j * 10 + i] as f64).sum::<f64>()),
        );
        let mean = &cov * (&sigma_inv * sum);
        let (m, c) = (post.mean(), post.cov());
        for i in 0..10 {
            assert!((m[i] - mean[i]).abs() < 1e-12, "n {n} mean[{i}]");
            for j in 0..10 {
                assert!(
                    (c[i * 10 + j] - cov[(i, j)]).abs() < 1e-12,
                    "n {n} cov[{i}][{j}]"
                );
            }
        }
    }
}

#[test]
fn gaussian_linear_posterior_matches_direct_computation() {
    // Prior N(0, 0.1 I), x ~ N(theta, 0.1 I): precision 10 + 10 n, mean 10 Σx / (10 + 10n).
    let (_, obs) = Task::GaussianLinear.simulate_dataset(3, 1);
    let post = Task::GaussianLinear.analytic_posterior(&obs).unwrap();
    let (m, c) = (post.mean(), post.cov());
    for i in 0..10 {
        let sum: f64 = (0..3).map(|j| obs[j * 10 + i] as f64).sum();
        assert!((m[i] - 10.0 * sum / 40.0).abs() < 1e-12);
        assert!((c[i * 11] - 1.0 / 40.0).abs() < 1e-12);
    }
}

/// `ln p(theta) + Σ_j ln p(x_j | theta)` straight from the task definitions.
fn unnormalized_log_posterior(task: Task, theta: &[f32], obs: &[f32]) -> f64 {
    let d = task.dim_theta();
    let lp = task.prior().log_density(theta).unwrap()[0];
    let norm =
        |x: f64, m: f64, v: f64| -0.5 * ((std::f64::consts::TAU * v).ln() + (x - m).powi(2) / v);
    let s = gaussian10_sigma();
    let mut ll = 0.0;
    for x in obs.chunks(d) {
        let comp = |sign: f64, var: &dyn Fn(usize) -> f64| -> f64 {
            (0..d)
                .map(|i| norm(x[i] as f64, sign * theta[i] as f64, var(i)))
                .sum()
        };
        let (a, b) = match task {
            Task::Mog10 => (comp(1.0, &|i| 2.25 * s[i]), comp(1.0, &|i| s[i] / 9.0)),
            Task::Multimodal2 => (comp(1.0, &|_| 0.5), comp(-1.0, &|_| 0.5)),
            _ => unreachable!(),
        };
        let m = a.max(b);
        ll += m + (0.5 * (a - m).exp() + 0.5 * (b - m).exp()).ln();
    }
    lp + ll
}

#[test]
fn mixture_posteriors_match_prior_times_likelihood() {
    // ln p(theta | x) - [ln p(theta) + Σ ln p(x_j|theta)] = -ln p(x) is the same at every
    // theta: checked to 1e-8 (f64 sums of ≤ 2^5 · 10 terms).
    for (task, n) in [
        (Task::Multimodal2, 5usize),
        (Task::Mog10, 4),
        (Task::Multimodal2, 1),
    ] {
        let (_, obs) = task.simulate_dataset(n, 33);
        let post = task.analytic_posterior(&obs).unwrap();
        assert_eq!(post.num_components(), 1 << n);
        let mut rng = PhiloxStream::new(1, streams::TEST, 0);
        let pts = task.prior().sample(&mut rng, 20);
        let lpost = post.log_density(&pts).unwrap();
        let diffs: Vec<f64> = pts
            .chunks(task.dim_theta())
            .zip(&lpost)
            .map(|(t, l)| l - unnormalized_log_posterior(task, t, &obs))
            .collect();
        for d in &diffs {
            assert!((d - diffs[0]).abs() < 1e-8, "{task} n {n}: {diffs:?}");
        }
    }
}

#[test]
fn multimodal2_posterior_normalizes_and_is_symmetric() {
    let (_, obs) = Task::Multimodal2.simulate_dataset(3, 2);
    let post = Task::Multimodal2.analytic_posterior(&obs).unwrap();
    // Midpoint rule on [-6, 6]² (posterior std ≤ 1, mean inside the prior's bulk), h =
    // 0.01: error ≲ 1e-8. Tolerance 1e-6.
    let m = 1200;
    let h = 12.0 / m as f64;
    let mut pts = Vec::with_capacity(2 * m * m);
    for i in 0..m {
        for j in 0..m {
            pts.push((-6.0 + (i as f64 + 0.5) * h) as f32);
            pts.push((-6.0 + (j as f64 + 0.5) * h) as f32);
        }
    }
    let mass: f64 = post
        .log_density(&pts)
        .unwrap()
        .iter()
        .map(|l| l.exp())
        .sum::<f64>()
        * h
        * h;
    assert!((mass - 1.0).abs() < 1e-6, "mass {mass}");
    // p(theta|x) = p(-theta|x): the mean is 0.
    assert!(
        post.mean().iter().all(|v| v.abs() < 1e-12),
        "{:?}",
        post.mean()
    );
}

#[test]
fn posterior_samples_match_posterior_moments() {
    const N: usize = 50_000;
    for task in [Task::Gaussian10, Task::Mog10, Task::Multimodal2] {
        let (_, obs) = task.simulate_dataset(4, 21);
        let post = task.analytic_posterior(&obs).unwrap();
        let s = post.sample(&mut PhiloxStream::new(3, streams::TEST, 0), N);
        let d = task.dim_theta();
        let (m, c) = (post.mean(), post.cov());
        for i in 0..d {
            let (sm, sv, se_m, se_v) = column_stats(&s, d, i);
            assert!(
                (sm - m[i]).abs() < 5.0 * se_m,
                "{task} mean[{i}] {sm} vs {}",
                m[i]
            );
            assert!(
                (sv - c[i * d + i]).abs() < 5.0 * se_v,
                "{task} var[{i}] {sv} vs {}",
                c[i * d + i]
            );
        }
    }
}

#[test]
fn sbibm_reference_data_loads_and_agrees_with_the_definitions() {
    for task in [
        Task::GaussianLinear,
        Task::TwoMoons,
        Task::GaussianMixture,
        Task::Slcp,
    ] {
        for k in 1..=5 {
            let r = load_reference(task, k, None).unwrap();
            assert_eq!(r.observation.len(), task.dim_x());
            assert_eq!(r.num_samples, 10_000);
            assert_eq!(r.reference_samples.len(), 10_000 * task.dim_theta());
            assert_eq!(
                r.true_parameters.as_ref().map(Vec::len),
                Some(task.dim_theta())
            );
            // Reference samples lie in the prior's support.
            let lp = task.prior().log_density(&r.reference_samples).unwrap();
            assert!(lp.iter().all(|l| l.is_finite()), "{task} obs {k}");
        }
    }
    // gaussian_linear's exact posterior N(x/2, 0.05 I) vs sbibm's samples: 5 SE.
    for k in 1..=5 {
        let r = load_reference(Task::GaussianLinear, k, None).unwrap();
        let post = Task::GaussianLinear
            .analytic_posterior(&r.observation)
            .unwrap();
        for i in 0..10 {
            let (m, v, se_m, se_v) = column_stats(&r.reference_samples, 10, i);
            assert!((m - post.mean()[i]).abs() < 5.0 * se_m, "obs {k} mean[{i}]");
            assert!((v - 0.05).abs() < 5.0 * se_v, "obs {k} var[{i}] {v}");
        }
    }
    // two_moons: for reference theta, x_obs - shift(theta) - (0.25, 0) lies on the circle
    // of radius r ~ N(0.1, 0.01²): the radius' median is 0.1 ± 0.003 (the posterior
    // reweights r only mildly) and 99% of radii are within 0.1 ± 0.04 (4 std).
    for k in 1..=5 {
        let r = load_reference(Task::TwoMoons, k, None).unwrap();
        let x = &r.observation;
        let mut radius: Vec<f64> = r
            .reference_samples
            .chunks(2)
            .map(|t| {
                let (t0, t1) = (t[0] as f64, t[1] as f64);
                let p0 = x[0] as f64 + (t0 + t1).abs() / std::f64::consts::SQRT_2 - 0.25;
                let p1 = x[1] as f64 - (t1 - t0) / std::f64::consts::SQRT_2;
                (p0 * p0 + p1 * p1).sqrt()
            })
            .collect();
        radius.sort_by(f64::total_cmp);
        let median = radius[radius.len() / 2];
        let inside = radius.iter().filter(|&&v| (v - 0.1).abs() < 0.04).count();
        assert!(
            (median - 0.1).abs() < 0.003,
            "obs {k}: median radius {median}"
        );
        assert!(
            inside as f64 > 0.99 * radius.len() as f64,
            "obs {k}: {inside} inside"
        );
    }
    // gaussian_mixture: the posterior is [0.5 N(x, I) + 0.5 N(x, 0.01 I)] truncated to the
    // box [-10, 10]² (the observations lie near the edges, so the truncation matters).
    // Component k's mass and moments factor over dimensions; compute them by the
    // midpoint rule (h = 1e-4, error ~1e-9) and compare mean and variance to 5 SE.
    for k in 1..=5 {
        let r = load_reference(Task::GaussianMixture, k, None).unwrap();
        let vars = [1.0f64, 0.01];
        // [component][dim] -> (mass, first moment, second moment) over [-10, 10].
        let mut mom = [[(0.0f64, 0.0f64, 0.0f64); 2]; 2];
        let h = 1e-4;
        for (c, &v) in vars.iter().enumerate() {
            for (i, slot) in mom[c].iter_mut().enumerate() {
                let x = r.observation[i] as f64;
                let (mut z, mut m1, mut m2) = (0.0, 0.0, 0.0);
                for step in 0..200_000 {
                    let t = -10.0 + (step as f64 + 0.5) * h;
                    let p = (-(t - x).powi(2) / (2.0 * v)).exp()
                        / (std::f64::consts::TAU * v).sqrt()
                        * h;
                    z += p;
                    m1 += p * t;
                    m2 += p * t * t;
                }
                *slot = (z, m1, m2);
            }
        }
        let w: Vec<f64> = (0..2).map(|c| 0.5 * mom[c][0].0 * mom[c][1].0).collect();
        let wsum: f64 = w.iter().sum();
        #[allow(clippy::needless_range_loop)]
        for i in 0..2 {
            let mean: f64 = (0..2)
                .map(|c| w[c] / wsum * mom[c][i].1 / mom[c][i].0)
                .sum();
            let second: f64 = (0..2)
                .map(|c| w[c] / wsum * mom[c][i].2 / mom[c][i].0)
                .sum();
            let var = second - mean * mean;
            let (m, v, se_m, se_v) = column_stats(&r.reference_samples, 2, i);
            assert!(
                (m - mean).abs() < 5.0 * se_m,
                "obs {k} mean[{i}] {m} vs {mean}"
            );
            assert!(
                (v - var).abs() < 5.0 * se_v,
                "obs {k} var[{i}] {v} vs {var}"
            );
        }
    }
}

#[test]
fn reference_loading_errors_name_what_is_missing() {
    let e = load_reference(Task::TwoMoons, 6, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("obs6"), "{e}");
    let e = load_reference(Task::Gaussian10, 1, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("gaussian10"), "{e}");
    let dir = std::env::temp_dir().join(format!("amortize-ref-{}", std::process::id()));
    let obs = dir.join("sbibm/slcp/obs1");
    std::fs::create_dir_all(&obs).unwrap();
    amortize::io::npy::write_npy(obs.join("observation.npy"), &[0.0; 6], &[1, 6]).unwrap();
    let e = load_reference(Task::Slcp, 1, Some(&dir))
        .unwrap_err()
        .to_string();
    assert!(e.contains("observation.npy") && e.contains("8"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
