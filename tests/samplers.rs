//! Algorithms 1 and 2 with the exact score of the gaussian10 task plugged in (no
//! network), for n = 1 and n = 4. This tests the composition math alone: the draws must
//! follow the exact output distribution of each algorithm (computed in closed form), and
//! with the corrector they must reproduce the analytic posterior.

use amortize::estimators::score::NoiseSchedule;
use amortize::rng::{streams, PhiloxStream};
use amortize::samplers::gauss::{GaussPrior, GaussScore, GaussWeights};
use amortize::samplers::{
    sample, Algorithm, ComposableScore, Corrector, PriorScore, SamplerConfig,
};

const D: usize = 10;

/// Σ = diag(linspace(0.6, 1.4, 10)).
fn sigma(i: usize) -> f64 {
    0.6 + 0.8 * i as f64 / 9.0
}

/// The exact diffused single-observation posteriors of gaussian10: with prior N(0, I)
/// and x ~ N(θ, Σ), p(θ | x_j) = N(m_j, C), C = (I + Σ⁻¹)⁻¹, m_j = C Σ⁻¹ x_j, and
/// p_t(θ | x_j) = N(√γ m_j, γ C + (1 − γ) I), whose score is linear in θ.
struct ExactScore {
    means: Vec<[f64; D]>,
    gammas: Vec<f64>,
}

impl ExactScore {
    fn new(obs: &[[f64; D]], gammas: Vec<f64>) -> Self {
        let means = obs
            .iter()
            .map(|x| std::array::from_fn(|i| x[i] / sigma(i) / (1.0 + 1.0 / sigma(i))))
            .collect();
        ExactScore { means, gammas }
    }
}

impl ComposableScore for ExactScore {
    type Scratch = ();
    fn dim(&self) -> usize {
        D
    }
    fn observations(&self) -> usize {
        self.means.len()
    }
    fn scratch(&self, _rows: usize) {}
    fn scores(&self, level: usize, theta: &[f32], _: &mut (), out: &mut [f32]) {
        let g = self.gammas[level];
        let rows = theta.len() / D;
        for (j, m) in self.means.iter().enumerate() {
            for r in 0..rows {
                for i in 0..D {
                    let c = 1.0 / (1.0 + 1.0 / sigma(i));
                    let var = g * c + (1.0 - g);
                    out[(j * rows + r) * D + i] =
                        (-(theta[r * D + i] as f64 - g.sqrt() * m[i]) / var) as f32;
                }
            }
        }
    }
}

/// Prior N(0, I): ∇log p(θ) = −θ.
struct StandardNormalPrior;

impl PriorScore for StandardNormalPrior {
    fn prior_score(&self, theta: &[f32], out: &mut [f32]) {
        for (o, t) in out.iter_mut().zip(theta) {
            *o = -t;
        }
    }
}

/// Posterior of n observations: precision I + nΣ⁻¹, mean = cov·Σ⁻¹·Σ_j x_j.
fn analytic_posterior(obs: &[[f64; D]]) -> ([f64; D], [f64; D]) {
    let n = obs.len() as f64;
    let var: [f64; D] = std::array::from_fn(|i| 1.0 / (1.0 + n / sigma(i)));
    let mean = std::array::from_fn(|i| var[i] * obs.iter().map(|x| x[i]).sum::<f64>() / sigma(i));
    (mean, var)
}

fn observations(n: usize) -> Vec<[f64; D]> {
    let mut rng = PhiloxStream::new(3, streams::TEST, 0);
    let theta: [f64; D] = std::array::from_fn(|_| rng.normal() as f64);
    (0..n)
        .map(|_| std::array::from_fn(|i| theta[i] + sigma(i).sqrt() * rng.normal() as f64))
        .collect()
}

fn moments(samples: &[f32]) -> ([f64; D], [f64; D], f64) {
    let rows = samples.len() / D;
    let mean: [f64; D] = std::array::from_fn(|i| {
        (0..rows).map(|r| samples[r * D + i] as f64).sum::<f64>() / rows as f64
    });
    let cov = |a: usize, b: usize| {
        (0..rows)
            .map(|r| (samples[r * D + a] as f64 - mean[a]) * (samples[r * D + b] as f64 - mean[b]))
            .sum::<f64>()
            / (rows - 1) as f64
    };
    let var = std::array::from_fn(|i| cov(i, i));
    let max_offdiag = (0..D)
        .flat_map(|a| (0..D).filter(move |&b| b != a).map(move |b| (a, b)))
        .map(|(a, b)| cov(a, b).abs())
        .fold(0.0, f64::max);
    (mean, var, max_offdiag)
}

/// The exact mean and variance, per dimension, of what `algorithm` (without corrector)
/// outputs with the exact score: every step is affine in θ plus Gaussian noise, so the
/// moments propagate in closed form. This is Geffner et al.'s math written a second way
/// (with `denoise_last`, Algorithm 2's last step adds no noise).
fn algorithm_moments(
    algorithm: Algorithm,
    denoise_last: bool,
    gammas: &[f64],
    obs: &[[f64; D]],
) -> ([f64; D], [f64; D]) {
    let n = obs.len() as f64;
    let levels = gammas.len() - 1;
    let mut mean = [0.0; D];
    let mut var = [1.0 / n; D];
    for i in 0..D {
        let c_post = 1.0 / (1.0 + 1.0 / sigma(i));
        let m_sum: f64 = obs.iter().map(|x| x[i] / sigma(i) * c_post).sum();
        for k in (1..levels).rev() {
            let (g, alpha) = (gammas[k], gammas[k] / gammas[k - 1]);
            let w = (1.0 - n) * (levels - k) as f64 / levels as f64;
            let lam = 1.0 / (g * c_post + 1.0 - g);
            // Σ_j s_j = −nλθ + λ√γ Σ_j m_j, and ∇log p(θ) = −θ.
            match algorithm {
                Algorithm::Diffusion => {
                    let denom = n - alpha * (n - 1.0);
                    let step_var = (1.0 - alpha) / denom;
                    let c = ((n - (1.0 - alpha) * n * lam) / alpha.sqrt()
                        - (n - 1.0) * alpha.sqrt())
                        / denom
                        - step_var * w;
                    let b = (1.0 - alpha) * lam * g.sqrt() * m_sum / (alpha.sqrt() * denom);
                    mean[i] = c * mean[i] + b;
                    let noise_var = if k == 1 && denoise_last {
                        0.0
                    } else {
                        step_var
                    };
                    var[i] = c * c * var[i] + noise_var;
                }
                Algorithm::Langevin { steps_per_level } => {
                    let delta = 0.05 * (1.0 - alpha) / alpha.sqrt();
                    let c = 1.0 - delta / 2.0 * (n * lam + w);
                    let b = delta / 2.0 * lam * g.sqrt() * m_sum;
                    for _ in 0..steps_per_level {
                        mean[i] = c * mean[i] + b;
                        var[i] = c * c * var[i] + delta;
                    }
                }
            }
        }
    }
    (mean, var)
}

/// Draws `num` samples and checks their moments against `(want_mean, want_var)`.
/// `extra_rel` is the relative bias allowed beyond sampling error (0 when the target is
/// the algorithm's own exact output distribution).
fn check_moments(
    label: &str,
    samples: &[f32],
    want_mean: &[f64; D],
    want_var: &[f64; D],
    extra_rel: f64,
) {
    let num = samples.len() / D;
    let (mean, var, offdiag) = moments(samples);
    for i in 0..D {
        let sd = want_var[i].sqrt();
        // 5 standard errors of a mean of `num` draws (sd/√num), plus the allowed bias:
        // a correct sampler fails with probability < 1e-5 per coordinate.
        let mean_tol = 5.0 * sd / (num as f64).sqrt() + extra_rel * sd;
        assert!(
            (mean[i] - want_mean[i]).abs() < mean_tol,
            "{label} dim {i}: mean {:.4} vs {:.4} (tol {mean_tol:.4})",
            mean[i],
            want_mean[i]
        );
        // 5 standard errors of a sample variance (√(2/num) relative) plus the allowed bias.
        let var_tol = 5.0 * (2.0 / num as f64).sqrt() + extra_rel;
        let rel = var[i] / want_var[i] - 1.0;
        assert!(
            rel.abs() < var_tol,
            "{label} dim {i}: variance {:.4} vs {:.4} (tol {var_tol:.3})",
            var[i],
            want_var[i]
        );
    }
    // Every target here is diagonal: off-diagonal sample covariances are noise of size
    // ≈ var/√num; 5 of them with the largest variance (< 0.6) bound it.
    assert!(
        offdiag < 5.0 * 0.6 / (num as f64).sqrt(),
        "{label}: off-diagonal covariance {offdiag}"
    );
}

fn draw(
    algorithm: Algorithm,
    denoise_last: bool,
    corrector: Corrector,
    n: usize,
    levels: usize,
    num: usize,
) -> (Vec<f32>, Vec<[f64; D]>, Vec<f64>) {
    let (_, gammas) = NoiseSchedule { levels: 400 }.grid(levels);
    let obs = observations(n);
    let score = ExactScore::new(&obs, gammas.clone());
    let config = SamplerConfig {
        algorithm,
        corrector,
        seed: 11,
        tile: 64,
        denoise_last,
    };
    let samples = sample(&score, &StandardNormalPrior, &gammas, num, &config, &|_| {}).unwrap();
    (samples, obs, gammas)
}

/// Our draws follow the exact output distribution of Geffner et al.'s algorithm.
fn check_algorithm(algorithm: Algorithm, n: usize, levels: usize, num: usize) {
    check_algorithm_with(algorithm, true, n, levels, num);
}

fn check_algorithm_with(
    algorithm: Algorithm,
    denoise_last: bool,
    n: usize,
    levels: usize,
    num: usize,
) {
    let (samples, obs, gammas) = draw(algorithm, denoise_last, Corrector::NONE, n, levels, num);
    let (mean, var) = algorithm_moments(algorithm, denoise_last, &gammas, &obs);
    let label = format!("{algorithm:?} denoise_last={denoise_last} n={n} levels={levels}");
    check_moments(&label, &samples, &mean, &var, 0.0);
}

#[test]
fn diffusion_follows_algorithm_2_exactly_for_one_and_four_observations() {
    check_algorithm(Algorithm::Diffusion, 1, 400, 4000);
    check_algorithm(Algorithm::Diffusion, 4, 400, 4000);
    check_algorithm_with(Algorithm::Diffusion, false, 4, 400, 4000);
}

#[test]
fn the_last_diffusion_step_adds_noise_only_when_asked() {
    // On a 4-level grid σ_1² is a large share of the output variance, so the two exact
    // output laws differ by far more than check_moments' 5-standard-error tolerance (the
    // assertion below makes sure): drawing with the wrong one fails.
    let gammas = NoiseSchedule { levels: 400 }.grid(4).1;
    let obs = observations(1);
    let (_, denoised) = algorithm_moments(Algorithm::Diffusion, true, &gammas, &obs);
    let (_, noisy) = algorithm_moments(Algorithm::Diffusion, false, &gammas, &obs);
    let tolerance = 5.0 * (2.0f64 / 4000.0).sqrt();
    assert!(
        noisy[0] / denoised[0] - 1.0 > 3.0 * tolerance,
        "{noisy:?} vs {denoised:?}"
    );
    for denoise_last in [true, false] {
        check_algorithm_with(Algorithm::Diffusion, denoise_last, 1, 4, 4000);
    }
}

#[test]
fn langevin_follows_algorithm_1_exactly_for_one_and_four_observations() {
    check_algorithm(
        Algorithm::Langevin {
            steps_per_level: 50,
        },
        1,
        100,
        2000,
    );
    check_algorithm(
        Algorithm::Langevin {
            steps_per_level: 50,
        },
        4,
        100,
        2000,
    );
}

#[test]
fn algorithm_2_alone_is_biased_at_four_observations() {
    // The reason the corrector exists: Algorithm 2's exact output has ~60% of the
    // posterior variance at n = 4 (module docs of `samplers`).
    let gammas = NoiseSchedule { levels: 400 }.grid(400).1;
    let obs = observations(4);
    let (_, var) = algorithm_moments(Algorithm::Diffusion, false, &gammas, &obs);
    let (_, true_var) = analytic_posterior(&obs);
    assert!(var[0] / true_var[0] < 0.7, "{} vs {}", var[0], true_var[0]);
}

#[test]
fn diffusion_with_corrector_reproduces_the_analytic_posterior() {
    // 2 corrector steps at each of the last 40 of 400 levels; in closed form (exact score,
    // the step rule with ‖s‖² replaced by its mean) that leaves the variance within 2% at
    // n = 4; 5% is allowed on top of sampling error for the rule's randomness.
    let corrector = Corrector {
        steps: 2,
        levels: 40,
        snr: 0.16,
    };
    for n in [1, 4] {
        let (samples, obs, _) = draw(Algorithm::Diffusion, true, corrector, n, 400, 4000);
        let (mean, var) = analytic_posterior(&obs);
        check_moments(
            &format!("diffusion+corrector n={n}"),
            &samples,
            &mean,
            &var,
            0.05,
        );
    }
}

#[test]
fn the_same_seed_gives_the_same_draws_whatever_the_tile() {
    let (_, gammas) = NoiseSchedule { levels: 400 }.grid(50);
    let score = ExactScore::new(&observations(2), gammas.clone());
    let run = |tile| {
        let config = SamplerConfig {
            seed: 5,
            tile,
            ..SamplerConfig::default()
        };
        sample(&score, &StandardNormalPrior, &gammas, 100, &config, &|_| {}).unwrap()
    };
    assert_eq!(
        run(32),
        run(96),
        "each sample's noise depends on its lane, not its tile"
    );
}

#[test]
fn bad_sampler_input_is_an_error() {
    let (_, gammas) = NoiseSchedule { levels: 400 }.grid(50);
    let empty = ExactScore::new(&[], gammas.clone());
    let cfg = SamplerConfig::default();
    let err = sample(&empty, &StandardNormalPrior, &gammas, 10, &cfg, &|_| {}).unwrap_err();
    assert!(err.to_string().contains("empty"), "{err}");
    let score = ExactScore::new(&observations(1), gammas.clone());
    assert!(sample(
        &score,
        &StandardNormalPrior,
        &gammas[..1],
        10,
        &cfg,
        &|_| {}
    )
    .is_err());
    let zero_l = SamplerConfig {
        algorithm: Algorithm::Langevin { steps_per_level: 0 },
        ..cfg
    };
    assert!(sample(&score, &StandardNormalPrior, &gammas, 10, &zero_l, &|_| {}).is_err());
    assert!("gibbs".parse::<Algorithm>().is_err());
}

#[test]
fn gauss_composition_reproduces_the_analytic_posterior_for_four_and_eight_observations() {
    // With the exact per-observation scores and covariances, GAUSS's composed score is
    // the exact diffused tall posterior's score, so Algorithm 2 with n = 1 on it has
    // only discretization error: 5% on top of sampling error bounds it (the closed-form
    // n = 1 recursion at 400 levels is off by 0.3%).
    for n in [4, 8] {
        let (_, gammas) = NoiseSchedule { levels: 400 }.grid(400);
        let obs = observations(n);
        let exact = ExactScore::new(&obs, gammas.clone());
        let single_cov: Vec<f64> = (0..D * D)
            .map(|e| {
                if e / D == e % D {
                    1.0 / (1.0 + 1.0 / sigma(e / D))
                } else {
                    0.0
                }
            })
            .collect();
        let identity: Vec<f64> = (0..D * D)
            .map(|e| if e / D == e % D { 1.0 } else { 0.0 })
            .collect();
        let prior = GaussPrior::Gaussian {
            mean: &[0.0; D],
            cov: &identity,
        };
        let weights = GaussWeights::new(D, &gammas, &vec![single_cov; n], prior).unwrap();
        let composed = GaussScore::new(&exact, &weights).unwrap();
        let config = SamplerConfig {
            seed: 13,
            ..SamplerConfig::default()
        };
        let samples = sample(
            &composed,
            &StandardNormalPrior,
            &gammas,
            4000,
            &config,
            &|_| {},
        )
        .unwrap();
        let (mean, var) = analytic_posterior(&obs);
        check_moments(&format!("gauss n={n}"), &samples, &mean, &var, 0.05);
    }
}
