//! Residual MLPs, the building block of the score network (Geffner et al., Appendix B).

use crate::autograd::{ParamStore, Tape, Var};
use crate::backend::UnaryOp;
use crate::error::{Error, Result};
use crate::nn::Linear;
use crate::rng::PhiloxStream;

/// h ↦ h + act(W·h + b): a width-preserving block whose identity path keeps gradients
/// flowing through deep stacks.
#[derive(Clone, Debug)]
pub struct ResidualBlock {
    /// The block's square layer.
    pub linear: Linear,
    /// Its activation.
    pub activation: UnaryOp,
}

impl ResidualBlock {
    /// Adds `{name}.weight` and `{name}.bias` of a `width × width` layer.
    pub fn new(
        store: &mut ParamStore,
        name: &str,
        width: usize,
        activation: UnaryOp,
        rng: &mut PhiloxStream,
    ) -> Result<Self> {
        Ok(ResidualBlock {
            linear: Linear::new(store, name, width, width, true, rng)?,
            activation,
        })
    }

    /// h + act(linear(h)).
    pub fn forward(&self, tape: &mut Tape, store: &ParamStore, h: Var) -> Result<Var> {
        let z = self.linear.forward(tape, store, h)?;
        let a = tape.unary(self.activation, z)?;
        tape.add(h, a)
    }
}

/// An MLP with `hidden_layers` hidden layers of one width: an input layer with its
/// activation, then `hidden_layers − 1` residual blocks, then a linear output layer.
/// Geffner et al.'s "3 hidden layers, residual" is `hidden_layers = 3`.
#[derive(Clone, Debug)]
pub struct ResidualMlp {
    /// in → width.
    pub input: Linear,
    /// width → width, residual.
    pub blocks: Vec<ResidualBlock>,
    /// width → out, no activation.
    pub output: Linear,
    /// Activation after the input layer and inside every block.
    pub activation: UnaryOp,
}

/// The sizes and activation of a [`ResidualMlp`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MlpShape {
    /// Input features.
    pub in_features: usize,
    /// Width of every hidden layer.
    pub width: usize,
    /// Output features.
    pub out_features: usize,
    /// Hidden layers (at least 1): the input layer plus `hidden_layers − 1` blocks.
    pub hidden_layers: usize,
    /// Activation after the input layer and inside every block.
    pub activation: UnaryOp,
}

impl ResidualMlp {
    /// Adds `{name}.input`, `{name}.block{i}` and `{name}.output` layers to `store`.
    pub fn new(
        store: &mut ParamStore,
        name: &str,
        shape: MlpShape,
        rng: &mut PhiloxStream,
    ) -> Result<Self> {
        let MlpShape {
            in_features,
            width,
            out_features,
            hidden_layers,
            activation,
        } = shape;
        if hidden_layers == 0 || width == 0 {
            return Err(Error::invalid(
                "ResidualMlp::new",
                format!("{name}: needs at least one hidden layer of positive width, got {shape:?}"),
            ));
        }
        let input = Linear::new(
            store,
            &format!("{name}.input"),
            in_features,
            width,
            true,
            rng,
        )?;
        let blocks = (1..hidden_layers)
            .map(|i| ResidualBlock::new(store, &format!("{name}.block{i}"), width, activation, rng))
            .collect::<Result<Vec<_>>>()?;
        let output = Linear::new(
            store,
            &format!("{name}.output"),
            width,
            out_features,
            true,
            rng,
        )?;
        Ok(ResidualMlp {
            input,
            blocks,
            output,
            activation,
        })
    }

    /// x `[rows, in]` → `[rows, out]`.
    pub fn forward(&self, tape: &mut Tape, store: &ParamStore, x: Var) -> Result<Var> {
        let z = self.input.forward(tape, store, x)?;
        let mut h = tape.unary(self.activation, z)?;
        for block in &self.blocks {
            h = block.forward(tape, store, h)?;
        }
        self.output.forward(tape, store, h)
    }
}
