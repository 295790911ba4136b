//! Layer normalization with a learned scale and shift.

use crate::autograd::{ParamId, ParamStore, Tape, Var};
use crate::error::Result;
use crate::tensor::Tensor;

/// y = (x − mean)/√(var + eps)·γ + β over the last axis.
#[derive(Clone, Debug)]
pub struct LayerNorm {
    /// γ, `[width]`, initialized to 1.
    pub gamma: ParamId,
    /// β, `[width]`, initialized to 0.
    pub beta: ParamId,
    /// Added to the variance (PyTorch's default 1e-5).
    pub eps: f32,
}

impl LayerNorm {
    /// Adds `{name}.gamma` and `{name}.beta`.
    pub fn new(store: &mut ParamStore, name: &str, width: usize) -> Result<Self> {
        Ok(LayerNorm {
            gamma: store.add(format!("{name}.gamma"), Tensor::full(&[width], 1.0))?,
            beta: store.add(format!("{name}.beta"), Tensor::zeros(&[width]))?,
            eps: 1e-5,
        })
    }

    /// Normalizes x `[..., width]`.
    pub fn forward(&self, tape: &mut Tape, store: &ParamStore, x: Var) -> Result<Var> {
        let gamma = tape.param(store, self.gamma);
        let beta = tape.param(store, self.beta);
        tape.layer_norm(x, gamma, beta, self.eps)
    }
}
