//! Score-based posterior estimation (Geffner et al. 2022, Appendix B): the network, the
//! noise schedule and denoising score matching.
//!
//! Everything here works in the *standardized unconstrained* parameter space: θ is
//! mapped through the prior's bijection to ℝᵈ and then standardized with training-set
//! statistics; x is standardized too. [`crate::estimators::ScoreModel`] holds those maps.
//!
//! Network: a θ-MLP and an x-MLP (each 3 hidden layers, residual) embed θ_t and x; a
//! head MLP (3 hidden layers, residual) maps `[e(θ_t), e(x), e(t)]` to ε̂, with e(t) the
//! sinusoidal embedding of the continuous level t ∈ [0, T]. The score is
//! `s(θ_t, t, x) = −ε̂ / √(1 − γ_t)`. Where x is a set of iid draws (slcp's four points),
//! a set encoder may take the x-MLP's place ([`XPath::Set`]): the network then learns
//! the posterior given a whole set, of any size, and n draws need no composition. The x
//! path runs once per call outside the samplers' loops (contract 4), so the samplers do
//! not depend on which. A linear-Gaussian base may sit under the network (ε̂ = ε̂_net +
//! ε_base, [`crate::estimators::gaussian_base`]); the loss then trains the network on
//! ε − ε_base ([`BaseTerms`]).
//!
//! Loss (ε form): θ_t = √γ_t θ₀ + √(1 − γ_t) ε, ε ~ N(0, I), L = mean ‖ε̂(θ_t, t, x) − ε‖²,
//! with the training levels drawn as t = T·u^p, u ~ U(0, 1] ([`LevelDraw`]). Geffner et
//! al. draw t ~ U(0, T] (p = 1); we default to p = 2, which spends more of the training
//! on the low-noise levels where narrow posterior structure is learned.

use serde::{Deserialize, Serialize};

use crate::autograd::{ParamStore, Tape, Var};
use crate::backend::UnaryOp;
use crate::error::{Error, Result};
use crate::estimators::gaussian_base::GaussianBase;
use crate::nn::sets::RaggedSets;
use crate::nn::{
    sinusoidal_embedding_into, MlpShape, ResidualMlp, SetEncoder, SetEncoderConfig, SetEncoderKind,
};
use crate::rng::{streams, PhiloxStream};
use crate::tensor::Tensor;

/// Offset of the cosine schedule (Nichol & Dhariwal 2021): keeps γ away from 1 at t = 0
/// so the first noise level is not vanishingly small.
const COSINE_OFFSET: f64 = 0.008;

/// The noise levels: γ(t) for continuous t ∈ [0, T], decreasing from γ(0) = 1 to
/// γ(T) = 0, by the cosine schedule γ(t) = f(t/T)/f(0), f(s) = cos²((s + c)/(1 + c)·π/2).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct NoiseSchedule {
    /// T, the number of levels the network was trained for (Appendix B: 400).
    pub levels: usize,
}

impl NoiseSchedule {
    /// γ at continuous level `t` (clamped to [0, T]).
    pub fn gamma(&self, t: f64) -> f64 {
        let f = |s: f64| {
            let angle = (s + COSINE_OFFSET) / (1.0 + COSINE_OFFSET) * std::f64::consts::FRAC_PI_2;
            angle.cos().powi(2)
        };
        let s = (t / self.levels as f64).clamp(0.0, 1.0);
        if s >= 1.0 {
            return 0.0;
        }
        (f(s) / f(0.0)).clamp(0.0, 1.0)
    }

    /// The sampling grid for `steps` levels: t_k = k·T/steps and γ_k = γ(t_k) for
    /// k = 0..=steps (γ_0 = 1 … γ_steps = 0). With `steps = T` this is the training grid.
    pub fn grid(&self, steps: usize) -> (Vec<f32>, Vec<f64>) {
        let t: Vec<f32> = (0..=steps)
            .map(|k| (k as f64 * self.levels as f64 / steps as f64) as f32)
            .collect();
        let gamma = t.iter().map(|&tk| self.gamma(tk as f64)).collect();
        (t, gamma)
    }
}

/// How denoising score matching draws its noise levels: t = T·u^p with u ~ U(0, 1], so
/// t/T has density (1/p)·(t/T)^(1/p − 1) and P(t ≤ τ) = (τ/T)^(1/p).
///
/// p = 1 is Geffner et al.'s uniform t. Why p > 1: on the cosine schedule only the first
/// ~2.5% of levels have noise √(1 − γ_t) below 0.05 (in standardized units), and only
/// there can the loss see posterior structure that narrow; with uniform t the network
/// smooths it out. gaussian_mixture's σ = 0.1 spike is the example: p = 1 put 14% of the
/// draws within 0.2 of the observation where the reference posterior has 52%
/// (`benches/RESULTS.md`, session 6, C2ST 0.65 → 0.60 at p = 2).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LevelDraw {
    /// The exponent p (> 0); 1 draws t uniformly.
    pub power: f32,
}

impl LevelDraw {
    /// Geffner et al.'s t ~ U(0, T].
    pub const UNIFORM: LevelDraw = LevelDraw { power: 1.0 };

    /// Checks that the exponent is positive and finite.
    pub fn validate(&self, op: &'static str) -> Result<()> {
        if self.power > 0.0 && self.power.is_finite() {
            Ok(())
        } else {
            Err(Error::invalid(
                op,
                format!(
                    "the level-draw exponent must be positive and finite, got {}",
                    self.power
                ),
            ))
        }
    }

    /// The level t ∈ (0, T] for a uniform `u` ∈ (0, 1].
    pub fn level(&self, schedule: &NoiseSchedule, u: f32) -> f32 {
        u.powf(self.power) * schedule.levels as f32
    }
}

impl Default for LevelDraw {
    fn default() -> Self {
        LevelDraw { power: 2.0 }
    }
}

/// Sizes of the score network.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoreNetConfig {
    /// Dimension of θ.
    pub dim_theta: usize,
    /// Dimension of one observation x.
    pub dim_x: usize,
    /// Width of every hidden layer.
    pub width: usize,
    /// Width of e(θ) and of e(x).
    pub embedding: usize,
    /// Width of the sinusoidal e(t) (even).
    pub time_embedding: usize,
    /// Hidden layers of each of the three MLPs (Appendix B: 3).
    pub hidden_layers: usize,
    /// A set encoder in the x-MLP's place: x is a set of any size of elements of `dim_x`
    /// values (iid draws), and e(x) is the encoder's summary (`out_features` =
    /// `embedding` − 1) with ln N appended. Absent (model files omit it) for the x-MLP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x_encoder: Option<SetEncoderConfig>,
}

impl ScoreNetConfig {
    /// Appendix B's architecture at the given width, with embeddings of the same width.
    pub fn new(dim_theta: usize, dim_x: usize, width: usize) -> Self {
        ScoreNetConfig {
            dim_theta,
            dim_x,
            width,
            embedding: width,
            time_embedding: width.max(2) & !1,
            hidden_layers: 3,
            x_encoder: None,
        }
    }

    /// These sizes with a set encoder of `kind` (hidden width `encoder_width`) in the
    /// x-MLP's place, its elements of `dim_x` values.
    pub fn with_set_encoder(self, kind: SetEncoderKind, encoder_width: usize) -> Self {
        let summary = self.embedding.saturating_sub(1);
        ScoreNetConfig {
            x_encoder: Some(kind.config(self.dim_x, summary, encoder_width)),
            ..self
        }
    }

    fn validate(&self) -> Result<()> {
        let c = self;
        if c.dim_theta == 0
            || c.dim_x == 0
            || c.width == 0
            || c.embedding == 0
            || c.hidden_layers == 0
        {
            return Err(Error::invalid(
                "ScoreNet",
                format!("every size must be positive, got {c:?}"),
            ));
        }
        if c.time_embedding == 0 || c.time_embedding % 2 != 0 {
            return Err(Error::invalid(
                "ScoreNet",
                format!(
                    "time_embedding must be even and positive, got {}",
                    c.time_embedding
                ),
            ));
        }
        if let Some(e) = c.x_encoder {
            if e.in_features() != c.dim_x || e.out_features() + 1 != c.embedding {
                return Err(Error::invalid(
                    "ScoreNet",
                    format!(
                        "the x encoder must read elements of {} values and return {} features (ln N completes the embedding), got {e:?}",
                        c.dim_x,
                        c.embedding.saturating_sub(1)
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The activation of every hidden layer.
pub const SCORE_ACTIVATION: UnaryOp = UnaryOp::Silu;

/// A batch of the score network's x, as its x path reads it.
#[derive(Clone, Copy, Debug)]
pub enum XBatch<'a> {
    /// Rows x `[rows, dim_x]`, for the x-MLP.
    Rows(Var),
    /// Sets x `[rows, set, dim_x]` with their 0/1 mask `[rows, set]` (on x's device),
    /// for a set encoder.
    Sets {
        /// The padded elements.
        x: Var,
        /// Which elements are real.
        mask: &'a Tensor,
    },
}

/// The x path of the score network: x → e(x) `[rows, embedding]`.
#[derive(Clone, Debug)]
pub enum XPath {
    /// Appendix B's x-MLP.
    Mlp(ResidualMlp),
    /// A set encoder, its summary and ln N side by side.
    Set(SetEncoder),
}

impl XPath {
    /// e(x) for a batch of x; an error if the batch is not what this path reads.
    pub fn forward(&self, tape: &mut Tape, store: &ParamStore, x: XBatch) -> Result<Var> {
        match (self, x) {
            (XPath::Mlp(mlp), XBatch::Rows(x)) => mlp.forward(tape, store, x),
            (XPath::Set(encoder), XBatch::Sets { x, mask }) => {
                encoder.summary_and_log_n(tape, store, x, mask, |_| {})
            }
            (XPath::Mlp(_), XBatch::Sets { .. }) => Err(Error::invalid(
                "ScoreNet",
                "the x-MLP reads rows of x, not sets",
            )),
            (XPath::Set(_), XBatch::Rows(_)) => Err(Error::invalid(
                "ScoreNet",
                "a set encoder reads sets of x, not rows",
            )),
        }
    }
}

/// The score network: the θ-MLP, the x path and the head, with parameters
/// `theta_net.*`, `x_net.*` and `head.*` in a [`ParamStore`].
#[derive(Clone, Debug)]
pub struct ScoreNet {
    /// Sizes.
    pub config: ScoreNetConfig,
    /// θ_t → e(θ).
    pub theta_net: ResidualMlp,
    /// x → e(x).
    pub x_net: XPath,
    /// [e(θ), e(x), e(t)] → ε̂.
    pub head: ResidualMlp,
}

impl ScoreNet {
    /// Adds freshly initialized parameters to `store`.
    pub fn new(
        store: &mut ParamStore,
        config: ScoreNetConfig,
        rng: &mut PhiloxStream,
    ) -> Result<Self> {
        config.validate()?;
        let c = config;
        let shape = |in_features, out_features| MlpShape {
            in_features,
            width: c.width,
            out_features,
            hidden_layers: c.hidden_layers,
            activation: SCORE_ACTIVATION,
        };
        let theta_net = ResidualMlp::new(store, "theta_net", shape(c.dim_theta, c.embedding), rng)?;
        let x_net = match c.x_encoder {
            None => XPath::Mlp(ResidualMlp::new(
                store,
                "x_net",
                shape(c.dim_x, c.embedding),
                rng,
            )?),
            Some(config) => XPath::Set(SetEncoder::new(store, "x_net", config, rng)?),
        };
        let head_in = 2 * c.embedding + c.time_embedding;
        let head = ResidualMlp::new(store, "head", shape(head_in, c.dim_theta), rng)?;
        Ok(ScoreNet {
            config,
            theta_net,
            x_net,
            head,
        })
    }

    /// ε̂ for rows of θ_t `[rows, dim_theta]`, x (one row or set per row) and e(t)
    /// `[rows, time_embedding]`.
    pub fn forward(
        &self,
        tape: &mut Tape,
        store: &ParamStore,
        theta_t: Var,
        x: XBatch,
        t_emb: Var,
    ) -> Result<Var> {
        let e_theta = self.theta_net.forward(tape, store, theta_t)?;
        let e_x = self.x_net.forward(tape, store, x)?;
        let h = tape.concat(&[e_theta, e_x, t_emb])?;
        self.head.forward(tape, store, h)
    }
}

/// One training minibatch of denoising score matching, row-major buffers.
pub struct NoisyBatch {
    /// θ_t = √γ_t θ₀ + √(1 − γ_t) ε, `[rows, dim θ]`.
    pub theta_t: Vec<f32>,
    /// e(t), `[rows, time_embedding]`.
    pub t_emb: Vec<f32>,
    /// ε, `[rows, dim θ]`.
    pub eps: Vec<f32>,
    /// γ_t of each row.
    pub gamma: Vec<f64>,
}

/// One training minibatch of denoising score matching: for each row r of `batch`, a
/// level t ∈ (0, T] drawn by `levels` and noise ε ~ N(0, I) from Philox counter (DATA, `step`, r, ·),
/// then θ_t = √γ_t θ₀ + √(1 − γ_t) ε.
#[allow(clippy::too_many_arguments)]
pub fn noisy_batch(
    theta: &[f32],
    dim_theta: usize,
    batch: &[u32],
    schedule: &NoiseSchedule,
    levels: LevelDraw,
    time_embedding: usize,
    seed: u64,
    step: u32,
) -> NoisyBatch {
    let rows = batch.len();
    let mut theta_t = vec![0.0; rows * dim_theta];
    let mut eps = vec![0.0; rows * dim_theta];
    let mut t = vec![0.0; rows];
    let mut gammas = vec![0.0; rows];
    for (i, &r) in batch.iter().enumerate() {
        let mut rng = PhiloxStream::at_step(seed, streams::DATA, step, r);
        // U(0, 1) is open at 0, so t > 0: γ_t < 1 and the target is never noise-free.
        let level = levels.level(schedule, rng.uniform());
        let gamma = schedule.gamma(level as f64);
        let (a, b) = (gamma.sqrt() as f32, (1.0 - gamma).sqrt() as f32);
        let e = &mut eps[i * dim_theta..(i + 1) * dim_theta];
        rng.fill_normal(0.0, 1.0, e);
        let theta0 = &theta[r as usize * dim_theta..(r as usize + 1) * dim_theta];
        for ((out, &th), &ev) in theta_t[i * dim_theta..(i + 1) * dim_theta]
            .iter_mut()
            .zip(theta0)
            .zip(e.iter())
        {
            *out = a * th + b * ev;
        }
        t[i] = level;
        gammas[i] = gamma;
    }
    let mut t_emb = vec![0.0; rows * time_embedding];
    sinusoidal_embedding_into(&t, time_embedding, &mut t_emb);
    NoisyBatch {
        theta_t,
        t_emb,
        eps,
        gamma: gammas,
    }
}

/// Rows `batch` of a row-major `[_, cols]` buffer as a tensor.
pub fn gather(data: &[f32], cols: usize, batch: &[u32]) -> Result<Tensor> {
    let mut out = Vec::with_capacity(batch.len() * cols);
    for &r in batch {
        out.extend_from_slice(&data[r as usize * cols..(r as usize + 1) * cols]);
    }
    Tensor::from_vec(out, &[batch.len(), cols])
}

/// The standardized x that denoising score matching pairs with θ: a row per θ row, or a
/// set per θ row (for a set encoder).
#[derive(Clone, Copy, Debug)]
pub enum XData<'a> {
    /// x `[rows, dim_x]`, row-major.
    Rows(&'a [f32]),
    /// One set per row of θ.
    Sets(&'a RaggedSets),
}

/// Sets per padded group of a minibatch's x (see `dsm_loss`).
const SET_GROUP: usize = 32;

/// A [`GaussianBase`] under the network, as denoising score matching sees it.
#[derive(Clone, Copy, Debug)]
pub struct BaseTerms<'a> {
    /// The base.
    pub base: &'a GaussianBase,
    /// Its mean m = A·x̃ + b for every training row, `[rows, dim θ]`.
    pub means: &'a [f32],
}

impl BaseTerms<'_> {
    /// In place: ε ← ε − ε_base(θ_t, m_r) for the rows `group` of a [`NoisyBatch`], so
    /// the network, whose ε̂ the base's is added to, learns the rest.
    fn subtract(&self, group: &[u32], batch: &mut NoisyBatch) {
        let d = self.base.dim_theta();
        for (i, &r) in group.iter().enumerate() {
            let (c, s) = self.base.coefficients(batch.gamma[i]);
            let m = &self.means[r as usize * d..(r as usize + 1) * d];
            let theta_t = &batch.theta_t[i * d..(i + 1) * d];
            for (k, e) in batch.eps[i * d..(i + 1) * d].iter_mut().enumerate() {
                *e -= c[k] * theta_t[k] - s[k] * m[k];
            }
        }
    }
}

/// The denoising score matching loss of the rows `batch` (standardized θ and x), of the
/// network alone or, with `base`, of ε̂_net + ε_base.
/// Training steps draw fresh noise per call (`step` counts calls); pass a fixed `step`
/// for validation so the validation loss of every epoch sees the same noise.
#[allow(clippy::too_many_arguments)]
pub fn dsm_loss(
    tape: &mut Tape,
    store: &ParamStore,
    net: &ScoreNet,
    schedule: &NoiseSchedule,
    levels: LevelDraw,
    theta: &[f32],
    x: XData,
    base: Option<BaseTerms>,
    batch: &[u32],
    seed: u64,
    step: u32,
) -> Result<Var> {
    let c = net.config;
    // The batch goes where the parameters are (the CPU, or a GPU backend).
    let device = store.get(net.head.output.weight).device();
    let rows = batch.len();
    // The mean over the rows of ‖ε̂ − ε‖²/dim θ, as a sum over groups of rows.
    let group_loss = |tape: &mut Tape, group: &[u32]| -> Result<Var> {
        let mut noisy = noisy_batch(
            theta,
            c.dim_theta,
            group,
            schedule,
            levels,
            c.time_embedding,
            seed,
            step,
        );
        if let Some(base) = base {
            base.subtract(group, &mut noisy);
        }
        let NoisyBatch {
            theta_t,
            t_emb,
            eps,
            ..
        } = noisy;
        let n = group.len();
        let constant = |tape: &mut Tape, v: Vec<f32>, cols: usize| -> Result<Var> {
            Ok(tape.constant(Tensor::from_vec(v, &[n, cols])?.to_device(device)?))
        };
        let theta_t = constant(tape, theta_t, c.dim_theta)?;
        let t_emb = constant(tape, t_emb, c.time_embedding)?;
        let eps = constant(tape, eps, c.dim_theta)?;
        let eps_hat = match x {
            XData::Rows(x) => {
                let xb = tape.constant(gather(x, c.dim_x, group)?.to_device(device)?);
                net.forward(tape, store, theta_t, XBatch::Rows(xb), t_emb)?
            }
            XData::Sets(sets) => {
                let (xb, mask) = sets.padded(group)?;
                let (xb, mask) = (xb.to_device(device)?, mask.to_device(device)?);
                let xb = tape.constant(xb);
                let sets = XBatch::Sets { x: xb, mask: &mask };
                net.forward(tape, store, theta_t, sets, t_emb)?
            }
        };
        let mse = tape.mse(eps_hat, eps)?;
        tape.scale(mse, n as f32 / rows as f32)
    };
    match x {
        XData::Rows(_) => group_loss(tape, batch),
        // Each row's noise depends on its index alone, so the groups' order changes
        // nothing else.
        XData::Sets(sets) => sets.sum_over_size_groups(tape, batch, SET_GROUP, group_loss),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loss_of_sets_in_groups_of_their_size_is_the_loss_of_the_batch_padded_whole() {
        let config = ScoreNetConfig::new(2, 3, 8).with_set_encoder(SetEncoderKind::DeepSet, 8);
        let mut store = ParamStore::new();
        let mut rng = PhiloxStream::new(1, streams::INIT, 0);
        let net = ScoreNet::new(&mut store, config, &mut rng).unwrap();
        // 80 sets of 1 to 4 elements, so that 70 rows make three groups of mixed sizes.
        let mut sets = RaggedSets::new(3).unwrap();
        let mut values = vec![0.0f32; 12];
        for i in 0..80 {
            rng.fill_normal(0.0, 1.0, &mut values);
            sets.push(&values[..3 * (1 + i % 4)]).unwrap();
        }
        let mut theta = vec![0.0f32; 80 * 2];
        rng.fill_normal(0.0, 1.0, &mut theta);
        let batch: Vec<u32> = (0..70).map(|i| (i * 37 % 80) as u32).collect();
        let (schedule, levels) = (NoiseSchedule { levels: 100 }, LevelDraw::default());

        let mut tape = Tape::no_grad();
        let data = XData::Sets(&sets);
        let grouped = dsm_loss(
            &mut tape, &store, &net, &schedule, levels, &theta, data, None, &batch, 3, 5,
        );
        let grouped = tape.value(grouped.unwrap()).to_vec().unwrap()[0];

        let mut tape = Tape::no_grad();
        let NoisyBatch {
            theta_t,
            t_emb,
            eps,
            ..
        } = noisy_batch(&theta, 2, &batch, &schedule, levels, 8, 3, 5);
        let theta_t = tape.constant(Tensor::from_vec(theta_t, &[70, 2]).unwrap());
        let t_emb = tape.constant(Tensor::from_vec(t_emb, &[70, 8]).unwrap());
        let eps = tape.constant(Tensor::from_vec(eps, &[70, 2]).unwrap());
        let (x, mask) = sets.padded(&batch).unwrap();
        let x = XBatch::Sets {
            x: tape.constant(x),
            mask: &mask,
        };
        let eps_hat = net.forward(&mut tape, &store, theta_t, x, t_emb).unwrap();
        let whole = tape.mse(eps_hat, eps).unwrap();
        let whole = tape.value(whole).to_vec().unwrap()[0];
        assert!(
            (grouped - whole).abs() <= 1e-5 * whole.abs(),
            "{grouped} vs {whole}"
        );
    }

    #[test]
    fn cosine_schedule_runs_from_one_to_zero_monotonically() {
        let s = NoiseSchedule { levels: 400 };
        assert!((s.gamma(0.0) - 1.0).abs() < 1e-12);
        assert_eq!(s.gamma(400.0), 0.0);
        let (t, g) = s.grid(50);
        assert_eq!(t.len(), 51);
        assert_eq!(t[50], 400.0);
        assert!(g.windows(2).all(|w| w[1] < w[0]), "strictly decreasing");
        // Halfway, cos²(π/4) up to the offset: γ ≈ 0.49.
        assert!((s.gamma(200.0) - 0.4937).abs() < 1e-3, "{}", s.gamma(200.0));
    }

    #[test]
    fn noisy_batch_mixes_signal_and_noise_by_gamma() {
        let s = NoiseSchedule { levels: 400 };
        let (zeros, ones) = (vec![0.0f32; 4 * 3], vec![1.0f32; 4 * 3]);
        let rows = [0, 1, 2, 3];
        let uniform = LevelDraw::UNIFORM;
        let (noisy_zeros, noisy_ones) = (
            noisy_batch(&zeros, 3, &rows, &s, uniform, 8, 5, 0),
            noisy_batch(&ones, 3, &rows, &s, uniform, 8, 5, 0),
        );
        let (noise_only, t_emb, eps) = (noisy_zeros.theta_t, noisy_zeros.t_emb, noisy_zeros.eps);
        let (mixed, eps_again) = (noisy_ones.theta_t, noisy_ones.eps);
        assert_eq!(t_emb.len(), 4 * 8);
        assert_eq!(eps, eps_again, "noise depends on (seed, step, row) only");
        for r in 0..4 {
            // θ₀ = 0 gives θ_t = b·ε and θ₀ = 1 gives a + b·ε, with a² + b² = γ + (1 − γ) = 1.
            let b = noise_only[r * 3] / eps[r * 3];
            let a = mixed[r * 3] - b * eps[r * 3];
            assert!((a * a + b * b - 1.0).abs() < 1e-4, "row {r}: a {a}, b {b}");
            let gamma = noisy_zeros.gamma[r] as f32;
            assert!((a - gamma.sqrt()).abs() < 1e-4, "row {r}: a {a}, γ {gamma}");
            for j in 1..3 {
                assert!(
                    (noise_only[r * 3 + j] - b * eps[r * 3 + j]).abs() < 1e-5,
                    "one γ per row"
                );
            }
        }
        let other = noisy_batch(&zeros, 3, &rows, &s, uniform, 8, 5, 1);
        assert_ne!(other.eps, eps, "another step draws new noise");
    }

    #[test]
    fn level_draws_follow_their_power_law() {
        // The share of rows whose noise variance 1 − γ_t is below 0.0025 (t below τ,
        // about 10 of 400 levels) must be (τ/T)^(1/p): ~0.025 for p = 1, ~0.16 for p = 2.
        let s = NoiseSchedule { levels: 400 };
        let threshold = 0.0025;
        let (mut lo, mut hi) = (0.0, 400.0);
        for _ in 0..60 {
            let mid = 0.5 * (lo + hi);
            if 1.0 - s.gamma(mid) < threshold {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let tau = lo;
        let rows: Vec<u32> = (0..4000).collect();
        let zeros = vec![0.0f32; rows.len()];
        for power in [1.0f32, 2.0, 3.0] {
            let draw = LevelDraw { power };
            let NoisyBatch { theta_t, eps, .. } = noisy_batch(&zeros, 1, &rows, &s, draw, 8, 9, 0);
            // θ₀ = 0, so θ_t = √(1 − γ_t)·ε.
            let low = theta_t
                .iter()
                .zip(&eps)
                .filter(|(th, e)| (*th / *e).powi(2) < threshold as f32)
                .count() as f64
                / rows.len() as f64;
            let expected = (tau / 400.0).powf(1.0 / power as f64);
            // Four binomial standard errors: a seeded draw misses this ~1 time in 16 000.
            let tolerance = 4.0 * (expected * (1.0 - expected) / rows.len() as f64).sqrt();
            assert!(
                (low - expected).abs() < tolerance,
                "p = {power}: {low} of the levels below τ, expected {expected} ± {tolerance}"
            );
        }
        assert!(LevelDraw { power: 0.0 }.validate("test").is_err());
        assert!(LevelDraw { power: f32::NAN }.validate("test").is_err());
    }
}
