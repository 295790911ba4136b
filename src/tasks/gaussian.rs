//! The Gaussian family: the papers' `gaussian10` and `mog10` (Geffner et al. 2022,
//! section 3) and sbibm's `gaussian_linear`. All three have exact posteriors.

use crate::rng::PhiloxStream;
use crate::tasks::posterior::LikelihoodComponent;

/// `Sigma = diag(linspace(0.6, 1.4, 10))`: the *variances* of the papers' likelihoods.
pub fn gaussian10_sigma() -> [f64; 10] {
    std::array::from_fn(|i| 0.6 + 0.8 * i as f64 / 9.0)
}

/// gaussian10: `x ~ N(theta, Sigma)`.
pub fn gaussian10_components() -> Vec<LikelihoodComponent> {
    vec![LikelihoodComponent {
        weight: 1.0,
        sign: 1.0,
        var: gaussian10_sigma().to_vec(),
    }]
}

/// mog10: `x ~ 0.5 N(theta, 2.25 Sigma) + 0.5 N(theta, Sigma / 9)`.
pub fn mog10_components() -> Vec<LikelihoodComponent> {
    let s = gaussian10_sigma();
    vec![
        LikelihoodComponent {
            weight: 0.5,
            sign: 1.0,
            var: s.iter().map(|v| 2.25 * v).collect(),
        },
        LikelihoodComponent {
            weight: 0.5,
            sign: 1.0,
            var: s.iter().map(|v| v / 9.0).collect(),
        },
    ]
}

/// gaussian_linear: `x ~ N(theta, 0.1 I)` in 10 dimensions.
pub fn gaussian_linear_components() -> Vec<LikelihoodComponent> {
    vec![LikelihoodComponent {
        weight: 1.0,
        sign: 1.0,
        var: vec![0.1; 10],
    }]
}

/// One row of a diagonal Gaussian-mixture likelihood: picks a component by one uniform
/// draw (skipped when there is one component), then one normal per dimension.
pub(crate) fn simulate_mixture_row(
    components: &[LikelihoodComponent],
    theta: &[f32],
    rng: &mut PhiloxStream,
    x: &mut [f32],
) {
    let comp = if components.len() == 1 {
        &components[0]
    } else {
        let u = rng.uniform() as f64;
        let mut acc = 0.0;
        let mut chosen = components.last().expect("non-empty");
        for c in components {
            acc += c.weight;
            if u < acc {
                chosen = c;
                break;
            }
        }
        chosen
    };
    for (i, (xi, &t)) in x.iter_mut().zip(theta).enumerate() {
        *xi = (comp.sign * t as f64 + comp.var[i].sqrt() * rng.normal() as f64) as f32;
    }
}
