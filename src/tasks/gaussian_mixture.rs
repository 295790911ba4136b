//! sbibm's gaussian_mixture: prior `U(-10, 10)²`, `x ~ 0.5 N(theta, I) + 0.5 N(theta, 0.01 I)`.

use crate::tasks::posterior::LikelihoodComponent;

/// The two likelihood components (standard deviations 1 and 0.1).
pub fn gaussian_mixture_components() -> Vec<LikelihoodComponent> {
    vec![
        LikelihoodComponent {
            weight: 0.5,
            sign: 1.0,
            var: vec![1.0; 2],
        },
        LikelihoodComponent {
            weight: 0.5,
            sign: 1.0,
            var: vec![0.01; 2],
        },
    ]
}
