//! multimodal2 (Geffner et al. 2022, section 3, "Multimodal posterior"): prior
//! `N(0, I)` on `theta ∈ R²`, `x ~ 0.5 N(theta, 0.5 I) + 0.5 N(-theta, 0.5 I)`. The
//! posterior given `n` observations is a mixture of `2^n` Gaussians (one per sign
//! assignment), symmetric under `theta -> -theta`.

use crate::tasks::posterior::LikelihoodComponent;

/// The two likelihood components.
pub fn multimodal2_components() -> Vec<LikelihoodComponent> {
    vec![
        LikelihoodComponent {
            weight: 0.5,
            sign: 1.0,
            var: vec![0.5; 2],
        },
        LikelihoodComponent {
            weight: 0.5,
            sign: -1.0,
            var: vec![0.5; 2],
        },
    ]
}
