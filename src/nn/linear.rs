//! y = x·Wᵀ + b with PyTorch's weight layout `[out, in]` (so weights export to and from
//! PyTorch unchanged) and PyTorch's default initialization.

use crate::autograd::{ParamId, ParamStore, Tape, Var};
use crate::backend::MatLayout;
use crate::error::{Error, Result};
use crate::rng::PhiloxStream;
use crate::tensor::Tensor;

/// A fully connected layer.
#[derive(Clone, Debug)]
pub struct Linear {
    /// `[out_features, in_features]`.
    pub weight: ParamId,
    /// `[out_features]`, if the layer has a bias.
    pub bias: Option<ParamId>,
    /// Input width.
    pub in_features: usize,
    /// Output width.
    pub out_features: usize,
}

impl Linear {
    /// Adds `{name}.weight` (and `{name}.bias`) to `store`, drawn from U(−1/√in, 1/√in) as
    /// PyTorch's `nn.Linear` does (its Kaiming-uniform with a = √5 reduces to that bound).
    pub fn new(
        store: &mut ParamStore,
        name: &str,
        in_features: usize,
        out_features: usize,
        bias: bool,
        rng: &mut PhiloxStream,
    ) -> Result<Self> {
        if in_features == 0 || out_features == 0 {
            return Err(Error::invalid(
                "Linear::new",
                format!("{name}: widths must be positive, got {in_features} -> {out_features}"),
            ));
        }
        let bound = 1.0 / (in_features as f32).sqrt();
        let mut w = vec![0.0; out_features * in_features];
        rng.fill_uniform(-bound, bound, &mut w);
        let weight = store.add(
            format!("{name}.weight"),
            Tensor::from_vec(w, &[out_features, in_features])?,
        )?;
        let bias = if bias {
            let mut b = vec![0.0; out_features];
            rng.fill_uniform(-bound, bound, &mut b);
            Some(store.add(
                format!("{name}.bias"),
                Tensor::from_vec(b, &[out_features])?,
            )?)
        } else {
            None
        };
        Ok(Linear {
            weight,
            bias,
            in_features,
            out_features,
        })
    }

    /// Sets every weight and bias to zero, on the device they live on (the last layer of
    /// a coupling block starts as the identity transform this way).
    pub fn zero(&self, store: &mut ParamStore) -> Result<()> {
        for id in std::iter::once(self.weight).chain(self.bias) {
            let old = store.get(id);
            let zeros = Tensor::full_on(old.device(), old.shape(), 0.0)?;
            store.set(id, zeros)?;
        }
        Ok(())
    }

    /// x `[rows, in]` → `[rows, out]`.
    pub fn forward(&self, tape: &mut Tape, store: &ParamStore, x: Var) -> Result<Var> {
        let w = tape.param(store, self.weight);
        let y = tape.matmul(x, w, MatLayout::NT)?;
        match self.bias {
            Some(b) => {
                let b = tape.param(store, b);
                tape.add(y, b)
            }
            None => Ok(y),
        }
    }
}
