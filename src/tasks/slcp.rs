//! sbibm's slcp ("simple likelihood, complex posterior"): prior `U(-3, 3)⁵`;
//! `m = (theta0, theta1)`, `s1 = theta2²`, `s2 = theta3²`, `rho = tanh(theta4)`,
//! `S = [[s1², rho s1 s2], [rho s1 s2, s2²]] + 1e-6 I`; `x` is 4 iid draws from
//! `N(m, S)`, flattened to `(x1_0, x1_1, x2_0, ..., x4_1)` ∈ R⁸.

use crate::rng::PhiloxStream;

/// Number of iid 2-D draws per simulation.
pub const DRAWS: usize = 4;

/// One simulation: 8 normals, transformed by the 2×2 Cholesky factor of `S`.
pub fn simulate_row(theta: &[f32], rng: &mut PhiloxStream, x: &mut [f32]) {
    let t: Vec<f64> = theta.iter().map(|&v| v as f64).collect();
    let (s1, s2) = (t[2] * t[2], t[3] * t[3]);
    let rho = t[4].tanh();
    let (c00, c01, c11) = (s1 * s1 + 1e-6, rho * s1 * s2, s2 * s2 + 1e-6);
    let l00 = c00.sqrt();
    let l10 = c01 / l00;
    let l11 = (c11 - l10 * l10).max(0.0).sqrt();
    for k in 0..DRAWS {
        let z0 = rng.normal() as f64;
        let z1 = rng.normal() as f64;
        x[2 * k] = (t[0] + l00 * z0) as f32;
        x[2 * k + 1] = (t[1] + l10 * z0 + l11 * z1) as f32;
    }
}
