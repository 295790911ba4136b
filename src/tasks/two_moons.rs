//! sbibm's two_moons: prior `U(-1, 1)²`; `a ~ U(-π/2, π/2)`, `r ~ N(0.1, 0.01²)`,
//! `p = (r cos a + 0.25, r sin a)`, `x = p + (-|theta0 + theta1|/√2, (theta1 - theta0)/√2)`.

use crate::rng::PhiloxStream;

/// One simulation: one uniform (the angle), then one normal (the radius).
pub fn simulate_row(theta: &[f32], rng: &mut PhiloxStream, x: &mut [f32]) {
    let (t0, t1) = (theta[0] as f64, theta[1] as f64);
    let a = std::f64::consts::PI * (rng.uniform() as f64 - 0.5);
    let r = 0.1 + 0.01 * rng.normal() as f64;
    let p0 = r * a.cos() + 0.25;
    let p1 = r * a.sin();
    x[0] = (p0 - (t0 + t1).abs() / std::f64::consts::SQRT_2) as f32;
    x[1] = (p1 + (t1 - t0) / std::f64::consts::SQRT_2) as f32;
}
