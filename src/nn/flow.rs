//! Conditional normalizing flows: q(θ | c) = N(f(θ; c); 0, I) · |det ∂f/∂θ|.
//!
//! The bijection f: ℝᵈ → ℝᵈ is the composition
//!
//! f = C_{L−1} ∘ P_{L−2} ∘ C_{L−2} ∘ … ∘ P_0 ∘ C_0 ∘ A,
//!
//! with A an ActNorm layer u = (θ − μ)·e^(−σ) (log-det −Σσ; μ, σ learned, initialized from
//! data by [`ConditionalFlow::initialize`] so u starts standardized), C_l conditional
//! coupling layers (affine or rational-quadratic spline, see [`crate::nn::coupling`]) and
//! P_l fixed permutations of the coordinates (log-det 0), the reversal or a Philox-seeded
//! random permutation. Then
//!
//! log q(θ | c) = −½‖z‖² − (d/2)·ln 2π + Σ_layers log |det J_layer|,  z = f(θ; c),
//!
//! and sampling draws z ~ N(0, I) and returns θ = f⁻¹(z; c) by running the layers'
//! exact inverses in reverse order. Both are exact: no approximation beyond f32.

use crate::autograd::{ParamId, ParamStore, Tape, Var};
use crate::backend::Reduction;
use crate::error::{Error, Result};
use crate::nn::coupling::{Conditioner, CouplingKind, CouplingLayer};
use crate::rng::PhiloxStream;
use crate::tensor::Tensor;

/// Rows pushed through the flow at once when sampling.
const SAMPLE_CHUNK: usize = 8192;

/// How coordinates are permuted between coupling layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permutation {
    /// Reverse the coordinates (with a half split, kept and transformed halves swap).
    Reverse,
    /// A fixed random permutation per layer, drawn from the construction RNG.
    Random,
}

/// The architecture of a [`ConditionalFlow`].
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FlowConfig {
    /// d, the dimension of θ.
    pub dim: usize,
    /// Features of the context c (0 for an unconditional flow).
    pub context_dim: usize,
    /// L, the number of coupling layers.
    pub layers: usize,
    /// The coupling layers' bijection.
    pub kind: CouplingKind,
    /// The coupling layers' conditioner networks.
    pub conditioner: Conditioner,
    /// Permutations between coupling layers.
    pub permutation: Permutation,
}

impl FlowConfig {
    /// `layers` affine coupling layers with reversals and the default conditioner.
    pub fn affine(dim: usize, context_dim: usize, layers: usize) -> Self {
        FlowConfig {
            dim,
            context_dim,
            layers,
            kind: CouplingKind::affine(),
            conditioner: Conditioner::default(),
            permutation: Permutation::Reverse,
        }
    }

    /// `layers` spline coupling layers (8 bins on [−5, 5]) with reversals.
    pub fn spline(dim: usize, context_dim: usize, layers: usize) -> Self {
        FlowConfig {
            kind: CouplingKind::spline(),
            ..Self::affine(dim, context_dim, layers)
        }
    }
}

/// u = (x − loc)·e^(−log_scale) per feature, log-det −Σ log_scale.
#[derive(Clone, Debug)]
pub struct ActNorm {
    /// μ, `[dim]`, initialized to 0.
    pub loc: ParamId,
    /// σ (the log of the scale), `[dim]`, initialized to 0.
    pub log_scale: ParamId,
    /// Features.
    pub dim: usize,
}

impl ActNorm {
    /// Adds `{name}.loc` and `{name}.log_scale` (the identity map until initialized).
    pub fn new(store: &mut ParamStore, name: &str, dim: usize) -> Result<Self> {
        Ok(ActNorm {
            loc: store.add(format!("{name}.loc"), Tensor::zeros(&[dim]))?,
            log_scale: store.add(format!("{name}.log_scale"), Tensor::zeros(&[dim]))?,
            dim,
        })
    }

    /// Data-dependent initialization: loc = column means, log_scale = ln(column std) of
    /// `x` `[rows, dim]` (rows ≥ 2), so the layer's output starts standardized. Columns
    /// with zero spread keep scale 1.
    pub fn initialize(&self, store: &mut ParamStore, x: &Tensor) -> Result<()> {
        let op = "ActNorm::initialize";
        if x.rank() != 2 || x.cols() != self.dim || x.rows() < 2 {
            return Err(Error::shape_because(
                op,
                &[2, self.dim],
                x.shape(),
                "needs [rows >= 2, dim] data",
            ));
        }
        let data = x.to_vec()?;
        check_finite(op, &data, "data")?;
        let rows = x.rows() as f64;
        let mut mean = vec![0.0f64; self.dim];
        let mut var = vec![0.0f64; self.dim];
        for row in data.chunks_exact(self.dim) {
            for (m, &v) in mean.iter_mut().zip(row) {
                *m += v as f64 / rows;
            }
        }
        for row in data.chunks_exact(self.dim) {
            for ((s, &v), m) in var.iter_mut().zip(row).zip(&mean) {
                *s += (v as f64 - m).powi(2) / (rows - 1.0);
            }
        }
        let loc: Vec<f32> = mean.iter().map(|&m| m as f32).collect();
        let log_scale: Vec<f32> = var
            .iter()
            .map(|&v| if v > 1e-24 { 0.5 * v.ln() } else { 0.0 } as f32)
            .collect();
        // The new values go where the parameters live, so a store already on a device
        // stays there.
        let device = store.get(self.loc).device();
        store.set(
            self.loc,
            Tensor::from_vec(loc, &[self.dim])?.to_device(device)?,
        )?;
        let log_scale = Tensor::from_vec(log_scale, &[self.dim])?.to_device(device)?;
        store.set(self.log_scale, log_scale)
    }

    /// x `[rows, dim]` → (u, log-det `[rows]`), or the inverse map with `inverse`.
    pub fn forward(
        &self,
        tape: &mut Tape,
        store: &ParamStore,
        x: Var,
        inverse: bool,
    ) -> Result<(Var, Var)> {
        let rows = tape.shape(x)[0];
        let loc = tape.param(store, self.loc);
        let log_scale = tape.param(store, self.log_scale);
        let (y, signed) = if inverse {
            let e = tape.unary(crate::backend::UnaryOp::Exp, log_scale)?;
            let scaled = tape.mul(x, e)?;
            (tape.add(scaled, loc)?, log_scale)
        } else {
            let neg = tape.scale(log_scale, -1.0)?;
            let e = tape.unary(crate::backend::UnaryOp::Exp, neg)?;
            let centered = tape.sub(x, loc)?;
            (tape.mul(centered, e)?, neg)
        };
        // The per-row log-det: the same Σ ±σ for every row.
        let zeros = Tensor::full_on(tape.value(x).device(), &[rows, self.dim], 0.0)?;
        let zeros = tape.constant(zeros);
        let spread = tape.add(zeros, signed)?;
        Ok((y, tape.reduce_features(spread, Reduction::Sum)?))
    }
}

/// A conditional normalizing flow q(θ | c); see the module docs.
#[derive(Clone, Debug)]
pub struct ConditionalFlow {
    /// The architecture.
    pub config: FlowConfig,
    /// The first layer.
    pub actnorm: ActNorm,
    /// The coupling layers, in forward order.
    pub couplings: Vec<CouplingLayer>,
    /// `permutations[l]` follows coupling layer l: output column i is input column
    /// `permutations[l][i]`. One fewer than the coupling layers.
    pub permutations: Vec<Vec<usize>>,
}

fn check_finite(op: &'static str, data: &[f32], what: &str) -> Result<()> {
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        return Err(Error::invalid(
            op,
            format!(
                "{what} has a non-finite value ({}) at flat index {i}",
                data[i]
            ),
        ));
    }
    Ok(())
}

fn check_tensor_finite(op: &'static str, x: &Tensor, what: &str) -> Result<()> {
    match x.cpu_data(op) {
        Ok(data) => check_finite(op, data, what),
        Err(_) => check_finite(op, &x.to_vec()?, what),
    }
}

/// Columns of x reordered: output column i is input column `perm[i]`.
fn permute(tape: &mut Tape, x: Var, perm: &[usize]) -> Result<Var> {
    if perm.len() < 2 {
        return Ok(x);
    }
    let cols = tape.split(x, &vec![1; perm.len()])?;
    let ordered: Vec<Var> = perm.iter().map(|&i| cols[i]).collect();
    tape.concat(&ordered)
}

fn invert_permutation(perm: &[usize]) -> Vec<usize> {
    let mut inv = vec![0; perm.len()];
    for (i, &p) in perm.iter().enumerate() {
        inv[p] = i;
    }
    inv
}

impl ConditionalFlow {
    /// Adds `{name}.actnorm.*` and `{name}.coupling{l}.net.*` to `store`. Every coupling
    /// layer starts as the identity, so the fresh flow is N(0, I) after the ActNorm.
    pub fn new(
        store: &mut ParamStore,
        name: &str,
        config: FlowConfig,
        rng: &mut PhiloxStream,
    ) -> Result<Self> {
        if config.layers == 0 || config.dim == 0 {
            return Err(Error::invalid(
                "ConditionalFlow::new",
                format!("{name}: needs dim >= 1 and layers >= 1, got {config:?}"),
            ));
        }
        let actnorm = ActNorm::new(store, &format!("{name}.actnorm"), config.dim)?;
        let mut couplings = Vec::with_capacity(config.layers);
        let mut permutations = Vec::with_capacity(config.layers - 1);
        for l in 0..config.layers {
            couplings.push(CouplingLayer::new(
                store,
                &format!("{name}.coupling{l}"),
                config.dim,
                config.context_dim,
                config.kind,
                config.conditioner,
                rng,
            )?);
            if l + 1 < config.layers {
                let perm: Vec<usize> = match config.permutation {
                    Permutation::Reverse => (0..config.dim).rev().collect(),
                    Permutation::Random => {
                        let mut p: Vec<usize> = (0..config.dim).collect();
                        rng.shuffle(&mut p);
                        p
                    }
                };
                permutations.push(perm);
            }
        }
        Ok(ConditionalFlow {
            config,
            actnorm,
            couplings,
            permutations,
        })
    }

    /// Data-dependent initialization of the ActNorm layer from training θ `[rows, dim]`.
    pub fn initialize(&self, store: &mut ParamStore, theta: &Tensor) -> Result<()> {
        self.actnorm.initialize(store, theta)
    }

    /// Checks θ `[rows, dim]` and the context `[rows, context_dim]` (shapes and values).
    fn check(&self, tape: &Tape, theta: Var, context: Option<Var>) -> Result<()> {
        let op = "ConditionalFlow";
        let (dim, cdim) = (self.config.dim, self.config.context_dim);
        let ts = tape.shape(theta);
        if ts.len() != 2 || ts[1] != dim || ts[0] == 0 {
            return Err(Error::shape_because(
                op,
                &[ts.first().copied().unwrap_or(0), dim],
                ts,
                "theta must be [rows >= 1, dim]",
            ));
        }
        let rows = ts[0];
        check_tensor_finite(op, tape.value(theta), "theta")?;
        match context {
            Some(c) => {
                if tape.shape(c) != [rows, cdim] || cdim == 0 {
                    return Err(Error::shape_because(
                        op,
                        &[rows, cdim],
                        tape.shape(c),
                        "the context must be [rows, context_dim] (none for an unconditional flow)",
                    ));
                }
                check_tensor_finite(op, tape.value(c), "context")
            }
            None if cdim > 0 => Err(Error::invalid(
                op,
                format!("needs a context of {cdim} features"),
            )),
            None => Ok(()),
        }
    }

    /// z = f(θ; c) and log |det ∂z/∂θ| `[rows]`.
    pub fn forward(
        &self,
        tape: &mut Tape,
        store: &ParamStore,
        theta: Var,
        context: Option<Var>,
    ) -> Result<(Var, Var)> {
        self.check(tape, theta, context)?;
        let (mut x, mut logdet) = self.actnorm.forward(tape, store, theta, false)?;
        for (l, layer) in self.couplings.iter().enumerate() {
            let (y, ld) = layer.forward(tape, store, x, context)?;
            logdet = tape.add(logdet, ld)?;
            x = match self.permutations.get(l) {
                Some(perm) => permute(tape, y, perm)?,
                None => y,
            };
        }
        Ok((x, logdet))
    }

    /// θ = f⁻¹(z; c) and log |det ∂θ/∂z| `[rows]` (minus the forward log-det at θ).
    pub fn inverse(
        &self,
        tape: &mut Tape,
        store: &ParamStore,
        z: Var,
        context: Option<Var>,
    ) -> Result<(Var, Var)> {
        self.check(tape, z, context)?;
        let rows = tape.shape(z)[0];
        let mut x = z;
        let mut logdet = tape.constant(Tensor::full_on(tape.value(z).device(), &[rows], 0.0)?);
        for (l, layer) in self.couplings.iter().enumerate().rev() {
            if let Some(perm) = self.permutations.get(l) {
                x = permute(tape, x, &invert_permutation(perm))?;
            }
            let (y, ld) = layer.inverse(tape, store, x, context)?;
            logdet = tape.add(logdet, ld)?;
            x = y;
        }
        let (theta, ld) = self.actnorm.forward(tape, store, x, true)?;
        Ok((theta, tape.add(logdet, ld)?))
    }

    /// log q(θ | c) `[rows]` for θ `[rows, dim]` and context `[rows, context_dim]`
    /// (`None` for an unconditional flow). Errors on wrong shapes and non-finite values.
    pub fn log_prob(
        &self,
        tape: &mut Tape,
        store: &ParamStore,
        theta: Var,
        context: Option<Var>,
    ) -> Result<Var> {
        let (z, logdet) = self.forward(tape, store, theta, context)?;
        let rows = tape.shape(z)[0];
        let base = self.standard_normal_log_density(tape, z, rows)?;
        tape.add(base, logdet)
    }

    fn standard_normal_log_density(&self, tape: &mut Tape, z: Var, rows: usize) -> Result<Var> {
        let sq = tape.mul(z, z)?;
        let ss = tape.reduce_features(sq, Reduction::Sum)?;
        let half = tape.scale(ss, -0.5)?;
        let norm = -0.5 * self.config.dim as f64 * (2.0 * std::f64::consts::PI).ln();
        let norm = Tensor::full_on(tape.value(z).device(), &[rows], norm as f32)?;
        let norm = tape.constant(norm);
        tape.add(half, norm)
    }

    /// `num` draws θ ~ q(θ | c) per context row: `context` holds m rows of `context_dim`
    /// values (m ≥ 1; empty for an unconditional flow, which counts as one row). Returns
    /// `[m, num, dim]` row-major. Records nothing (a [`Tape::no_grad`] per chunk); the
    /// base draws are read in order from `rng`.
    pub fn sample(
        &self,
        store: &ParamStore,
        context: &[f32],
        num: usize,
        rng: &mut PhiloxStream,
    ) -> Result<Vec<f32>> {
        Ok(self.sample_with_log_prob(store, context, num, rng)?.0)
    }

    /// As [`ConditionalFlow::sample`], also returning log q(θ | c) of every draw
    /// (`[m, num]`), computed on the way at no extra cost.
    pub fn sample_with_log_prob(
        &self,
        store: &ParamStore,
        context: &[f32],
        num: usize,
        rng: &mut PhiloxStream,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let op = "ConditionalFlow::sample";
        let (dim, cdim) = (self.config.dim, self.config.context_dim);
        let m = if cdim == 0 {
            if !context.is_empty() {
                return Err(Error::invalid(
                    op,
                    "an unconditional flow takes an empty context",
                ));
            }
            1
        } else {
            if context.is_empty() || context.len() % cdim != 0 {
                return Err(Error::invalid(
                    op,
                    format!(
                        "context has {} values, not a positive multiple of context_dim {cdim}",
                        context.len()
                    ),
                ));
            }
            context.len() / cdim
        };
        if num == 0 {
            return Err(Error::invalid(op, "num must be positive"));
        }
        check_finite(op, context, "context")?;
        let total = m * num;
        let mut samples = Vec::with_capacity(total * dim);
        let mut log_probs = Vec::with_capacity(total);
        let mut start = 0;
        while start < total {
            let rows = SAMPLE_CHUNK.min(total - start);
            let mut z = vec![0.0f32; rows * dim];
            rng.fill_normal(0.0, 1.0, &mut z);
            let mut tape = Tape::no_grad();
            let zv = tape.constant(Tensor::from_vec(z, &[rows, dim])?);
            let ctx = if cdim > 0 {
                let mut c = Vec::with_capacity(rows * cdim);
                for r in start..start + rows {
                    let row = r / num;
                    c.extend_from_slice(&context[row * cdim..(row + 1) * cdim]);
                }
                Some(tape.constant(Tensor::from_vec(c, &[rows, cdim])?))
            } else {
                None
            };
            let (theta, logdet) = self.inverse(&mut tape, store, zv, ctx)?;
            let base = self.standard_normal_log_density(&mut tape, zv, rows)?;
            let lp = tape.sub(base, logdet)?;
            samples.extend(tape.value(theta).to_vec()?);
            log_probs.extend(tape.value(lp).to_vec()?);
            start += rows;
        }
        Ok((samples, log_probs))
    }
}
