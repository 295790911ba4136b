//! Conditional coupling layers (RealNVP, Dinh et al. 2017; neural spline flows, Durkan et
//! al. 2019) on the tape.
//!
//! A layer splits its input x ∈ ℝᵈ into a = x[..m] (kept) and b = x[m..] (transformed),
//! m = ⌊d/2⌋, and a conditioner network (a [`ResidualMlp`]) on [a, c] (c the context)
//! gives the parameters φ(a, c) of an elementwise bijection g_φ of b:
//!
//! y = [a, g_φ(b)],  log |det ∂y/∂x| = Σᵢ log g′_φ(bᵢ),
//!
//! since the Jacobian is block-triangular with identity on a. The inverse is
//! x = [a, g_φ⁻¹(y_b)] with the same φ, computed from the kept half. Permutations between
//! layers (see [`crate::nn::flow`]) make every coordinate transformed somewhere.
//!
//! * **Affine** ([`CouplingKind::Affine`]): g(b) = b·eˢ + t with the soft-clamped
//!   log-scale s = κ·tanh(ŝ/κ) ∈ (−κ, κ), so one layer scales by at most e^κ; log g′ = s.
//! * **Spline** ([`CouplingKind::Spline`]): g is the monotone rational-quadratic spline
//!   with K bins on [−B, B] and the identity outside (linear tails), evaluated by the
//!   `rq_spline` op (`backend/cpu.rs`). The conditioner's 3K − 1 outputs per feature are
//!   mapped to widths w = 2B·(ε_w + (1 − K·ε_w)·softmax(ŵ)), heights likewise, and
//!   interior knot derivatives δ = ε_δ + softplus(δ̂ + ln(e^(1−ε_δ) − 1)); the two
//!   boundary derivatives are 1 so the spline joins the identity tails smoothly.
//!
//! The conditioner's last layer starts at zero, so every layer starts as the identity:
//! s = t = 0 for the affine map, and uniform bins with all derivatives 1 (the spline
//! y = x) for the spline.

use crate::autograd::{ParamStore, Tape, Var};
use crate::backend::{Reduction, UnaryOp};
use crate::error::{Error, Result};
use crate::nn::{MlpShape, ResidualMlp};
use crate::rng::PhiloxStream;
use crate::tensor::Tensor;

/// Smallest spline bin width, as a fraction of the interval 2B (as in nflows).
pub const MIN_BIN_WIDTH: f32 = 1e-3;
/// Smallest spline bin height, as a fraction of 2B.
pub const MIN_BIN_HEIGHT: f32 = 1e-3;
/// Smallest derivative at an interior spline knot.
pub const MIN_DERIVATIVE: f32 = 1e-3;

/// The elementwise bijection a coupling layer applies to its transformed half.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CouplingKind {
    /// b ↦ b·eˢ + t with s = clamp·tanh(ŝ/clamp).
    Affine {
        /// κ: log-scales lie in (−κ, κ).
        clamp: f32,
    },
    /// The rational-quadratic spline with `bins` bins on [−bound, bound], identity outside.
    Spline {
        /// K, the number of bins (at least 2).
        bins: usize,
        /// B, the half-width of the interval the spline acts on.
        bound: f32,
    },
}

impl CouplingKind {
    /// Affine coupling with clamp κ = 3 (each layer scales by at most e³ ≈ 20).
    pub fn affine() -> Self {
        CouplingKind::Affine { clamp: 3.0 }
    }

    /// Spline coupling with 8 bins on [−5, 5], enough for standardized parameters.
    pub fn spline() -> Self {
        CouplingKind::Spline {
            bins: 8,
            bound: 5.0,
        }
    }

    /// Conditioner outputs per transformed feature: 2 (s, t), or 3K − 1 for a spline.
    pub fn params_per_feature(&self) -> usize {
        match *self {
            CouplingKind::Affine { .. } => 2,
            CouplingKind::Spline { bins, .. } => 3 * bins - 1,
        }
    }

    fn validate(&self, op: &'static str) -> Result<()> {
        match *self {
            CouplingKind::Affine { clamp } if !(clamp.is_finite() && clamp > 0.0) => Err(
                Error::invalid(op, format!("affine clamp must be positive, got {clamp}")),
            ),
            CouplingKind::Spline { bins, bound } => {
                if bins < 2 || bins as f32 * MIN_BIN_WIDTH.max(MIN_BIN_HEIGHT) >= 1.0 {
                    return Err(Error::invalid(
                        op,
                        format!("spline bins must be in 2..1000, got {bins}"),
                    ));
                }
                if !(bound.is_finite() && bound > 0.0) {
                    return Err(Error::invalid(
                        op,
                        format!("spline bound must be positive, got {bound}"),
                    ));
                }
                Ok(())
            }
            CouplingKind::Affine { .. } => Ok(()),
        }
    }
}

/// The hidden layers of a coupling layer's conditioner network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Conditioner {
    /// Width of every hidden layer.
    pub width: usize,
    /// Hidden layers (the input layer plus `hidden_layers − 1` residual blocks).
    pub hidden_layers: usize,
    /// Activation of the hidden layers.
    pub activation: UnaryOp,
}

impl Default for Conditioner {
    /// Two hidden layers of 64 with SiLU.
    fn default() -> Self {
        Conditioner {
            width: 64,
            hidden_layers: 2,
            activation: UnaryOp::Silu,
        }
    }
}

/// One conditional coupling layer: keeps the first `split` features, transforms the rest.
#[derive(Clone, Debug)]
pub struct CouplingLayer {
    /// Features of the input.
    pub dim: usize,
    /// Features of the context (0 for an unconditional layer).
    pub context_dim: usize,
    /// Number of leading features that are kept and condition the rest (⌊dim/2⌋).
    pub split: usize,
    /// The elementwise bijection.
    pub kind: CouplingKind,
    /// [kept features, context] → parameters of the bijection; last layer zero-initialized.
    pub net: ResidualMlp,
}

impl CouplingLayer {
    /// Adds the conditioner `{name}.net.*` to `store` and zeroes its output layer, so the
    /// layer starts as the identity. Needs dim ≥ 2, or dim = 1 with a context (the one
    /// feature is then conditioned on the context only).
    pub fn new(
        store: &mut ParamStore,
        name: &str,
        dim: usize,
        context_dim: usize,
        kind: CouplingKind,
        conditioner: Conditioner,
        rng: &mut PhiloxStream,
    ) -> Result<Self> {
        let op = "CouplingLayer::new";
        kind.validate(op)?;
        let split = dim / 2;
        if dim == 0 || split + context_dim == 0 {
            return Err(Error::invalid(
                op,
                format!(
                    "{name}: needs dim >= 2, or dim = 1 with a context; got dim {dim}, context {context_dim}"
                ),
            ));
        }
        let shape = MlpShape {
            in_features: split + context_dim,
            width: conditioner.width,
            out_features: (dim - split) * kind.params_per_feature(),
            hidden_layers: conditioner.hidden_layers,
            activation: conditioner.activation,
        };
        let net = ResidualMlp::new(store, &format!("{name}.net"), shape, rng)?;
        net.output.zero(store)?;
        Ok(CouplingLayer {
            dim,
            context_dim,
            split,
            kind,
            net,
        })
    }

    /// x `[rows, dim]` (and context `[rows, context_dim]`) → (y `[rows, dim]`,
    /// log |det ∂y/∂x| `[rows]`).
    pub fn forward(
        &self,
        tape: &mut Tape,
        store: &ParamStore,
        x: Var,
        context: Option<Var>,
    ) -> Result<(Var, Var)> {
        self.transform(tape, store, x, context, false)
    }

    /// The inverse map: y `[rows, dim]` → (x `[rows, dim]`, log |det ∂x/∂y| `[rows]`),
    /// which is minus the forward log-determinant at x.
    pub fn inverse(
        &self,
        tape: &mut Tape,
        store: &ParamStore,
        y: Var,
        context: Option<Var>,
    ) -> Result<(Var, Var)> {
        self.transform(tape, store, y, context, true)
    }

    fn check(&self, tape: &Tape, x: Var, context: Option<Var>) -> Result<usize> {
        let op = "CouplingLayer";
        let xs = tape.shape(x);
        if xs.len() != 2 || xs[1] != self.dim {
            return Err(Error::shape_because(
                op,
                &[xs.first().copied().unwrap_or(0), self.dim],
                xs,
                "the input must be [rows, dim]",
            ));
        }
        let rows = xs[0];
        match context {
            Some(c) if tape.shape(c) != [rows, self.context_dim] || self.context_dim == 0 => {
                Err(Error::shape_because(
                    op,
                    &[rows, self.context_dim],
                    tape.shape(c),
                    "the context must be [rows, context_dim] (none for an unconditional layer)",
                ))
            }
            None if self.context_dim > 0 => Err(Error::invalid(
                op,
                format!("needs a context of {} features", self.context_dim),
            )),
            _ => Ok(rows),
        }
    }

    fn transform(
        &self,
        tape: &mut Tape,
        store: &ParamStore,
        x: Var,
        context: Option<Var>,
        inverse: bool,
    ) -> Result<(Var, Var)> {
        let rows = self.check(tape, x, context)?;
        let db = self.dim - self.split;
        let (a, b) = if self.split > 0 {
            let parts = tape.split(x, &[self.split, db])?;
            (Some(parts[0]), parts[1])
        } else {
            (None, x)
        };
        let input = match (a, context) {
            (Some(a), Some(c)) => tape.concat(&[a, c])?,
            (Some(a), None) => a,
            (None, Some(c)) => c,
            (None, None) => {
                return Err(Error::invalid(
                    "CouplingLayer",
                    "a one-feature layer needs a context to condition on",
                ))
            }
        };
        let params = self.net.forward(tape, store, input)?;
        let (out_b, logdet) = match self.kind {
            CouplingKind::Affine { clamp } => affine(tape, b, params, db, clamp, inverse)?,
            CouplingKind::Spline { bins, bound } => {
                spline(tape, b, params, [rows, db, bins], bound, inverse)?
            }
        };
        let out = match a {
            Some(a) => tape.concat(&[a, out_b])?,
            None => out_b,
        };
        Ok((out, logdet))
    }
}

/// y = b·eˢ + t (or its inverse (b − t)·e⁻ˢ) with s = κ·tanh(ŝ/κ); log-det Σ ±s.
fn affine(
    tape: &mut Tape,
    b: Var,
    params: Var,
    db: usize,
    clamp: f32,
    inverse: bool,
) -> Result<(Var, Var)> {
    let p = tape.split(params, &[db, db])?;
    let (raw, shift) = (p[0], p[1]);
    let s = tape.scale(raw, 1.0 / clamp)?;
    let s = tape.unary(UnaryOp::Tanh, s)?;
    let s = tape.scale(s, clamp)?;
    if inverse {
        let neg = tape.scale(s, -1.0)?;
        let e = tape.unary(UnaryOp::Exp, neg)?;
        let centered = tape.sub(b, shift)?;
        let y = tape.mul(centered, e)?;
        Ok((y, tape.reduce_features(neg, Reduction::Sum)?))
    } else {
        let e = tape.unary(UnaryOp::Exp, s)?;
        let scaled = tape.mul(b, e)?;
        let y = tape.add(scaled, shift)?;
        Ok((y, tape.reduce_features(s, Reduction::Sum)?))
    }
}

/// 2B·(ε + (1 − K·ε)·softmax(raw)) over the last axis: bin sizes that sum to 2B.
fn bin_sizes(tape: &mut Tape, raw: Var, bins: usize, bound: f32, min: f32) -> Result<Var> {
    let sm = tape.softmax(raw)?;
    let scaled = tape.scale(sm, 2.0 * bound * (1.0 - bins as f32 * min))?;
    let floor = Tensor::full_on(tape.value(raw).device(), &[bins], 2.0 * bound * min)?;
    let floor = tape.constant(floor);
    tape.add(scaled, floor)
}

/// The spline coupling transform of b `[rows, db]` with `params` `[rows, db·(3K − 1)]`.
fn spline(
    tape: &mut Tape,
    b: Var,
    params: Var,
    [rows, db, bins]: [usize; 3],
    bound: f32,
    inverse: bool,
) -> Result<(Var, Var)> {
    let p = tape.reshape(params, &[rows, db, 3 * bins - 1])?;
    let p = tape.split(p, &[bins, bins, bins - 1])?;
    let widths = bin_sizes(tape, p[0], bins, bound, MIN_BIN_WIDTH)?;
    let heights = bin_sizes(tape, p[1], bins, bound, MIN_BIN_HEIGHT)?;
    // The constants are filled on the input's device (no upload per call).
    let device = tape.value(b).device();
    // softplus(0 + c) = 1 − ε_δ, so a zero conditioner output gives derivative 1.
    let offset = ((1.0 - MIN_DERIVATIVE as f64).exp() - 1.0).ln() as f32;
    let offset = tape.constant(Tensor::full_on(device, &[bins - 1], offset)?);
    let shifted = tape.add(p[2], offset)?;
    let soft = tape.unary(UnaryOp::Softplus, shifted)?;
    let floor = tape.constant(Tensor::full_on(device, &[bins - 1], MIN_DERIVATIVE)?);
    let interior = tape.add(soft, floor)?;
    let ones = tape.constant(Tensor::full_on(device, &[rows, db, 1], 1.0)?);
    let derivatives = tape.concat(&[ones, interior, ones])?;
    let (y, logdet) = tape.rq_spline(b, [widths, heights, derivatives], bound, inverse)?;
    Ok((y, tape.reduce_features(logdet, Reduction::Sum)?))
}
