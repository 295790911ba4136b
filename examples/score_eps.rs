//! Prints ε̂(θ̃, t_k, x_j) of a score model's `ScorePlan` for fixed inputs, as JSON (the
//! inputs included), so that another implementation of the network — e.g.
//! `benches/torch_reference.py` — can be checked against ours value for value.
//!
//! θ̃ (4 rows) and the standardized x_j (3 observations) are fixed smooth sequences;
//! t_k is level `LEVEL` of the sampling grid of `LEVELS` levels.
//!
//! Run: `cargo run --release --example score_eps -- MODEL_DIR [LEVELS] [LEVEL]`

use amortize::estimators::ScoreModel;

const ROWS: usize = 4;
const OBSERVATIONS: usize = 3;

fn main() -> amortize::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .expect("usage: score_eps MODEL_DIR [LEVELS] [LEVEL]");
    let levels: usize = args.next().map_or(100, |v| v.parse().expect("LEVELS"));
    let level: usize = args
        .next()
        .map_or(levels / 2, |v| v.parse().expect("LEVEL"));
    let model = ScoreModel::load(std::path::Path::new(&dir))?;
    let c = model.config.network;
    let theta: Vec<f32> = (0..ROWS * c.dim_theta)
        .map(|i| 1.5 * (0.37 * i as f32).sin())
        .collect();
    let x: Vec<f32> = (0..OBSERVATIONS * c.dim_x)
        .map(|i| (0.53 * i as f32).cos())
        .collect();
    let plan = model.plan()?;
    let (t, _) = model.config.schedule.grid(levels);
    let cond = plan.condition(&x, &t)?;
    let mut eps = vec![0.0f32; OBSERVATIONS * ROWS * c.dim_theta];
    plan.eps_hat(&cond, level, &theta, &mut plan.workspace(ROWS), &mut eps);
    let report = serde_json::json!({
        "levels": levels,
        "level": level,
        "theta": theta,
        "x_std": x,
        "eps": eps,
    });
    println!("{report}");
    Ok(())
}
