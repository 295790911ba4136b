//! The autodiff tape (contract 5).
//!
//! A [`Tape`] is a `Vec` of nodes in the order the ops ran; a [`Var`] is an index into
//! it. Each node keeps its value and an `Op` that names its inputs and whatever its
//! backward needs. [`Tape::backward`] walks the nodes in reverse, calls the same
//! backend's backward ops, and sums the gradients of inputs used more than once.
//! Parameters live outside the tape, in a named [`ParamStore`] whose names are the keys
//! of model files; a training step records `tape.param(..)` leaves, runs backward and
//! hands the resulting [`ParamGrads`] to an optimizer.
//!
//! A tape made with [`Tape::no_grad`] records no op history: every result is a plain
//! value that backward cannot walk through, so inference keeps no saved tensors.

use std::collections::{BTreeMap, HashMap};

use crate::backend::{self, BinaryOp, MatLayout, Reduction, UnaryOp};
use crate::error::{Error, Result};
use crate::ops;
use crate::tensor::Tensor;

/// A handle to a value on a [`Tape`]. Only meaningful for the tape that made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Var(usize);

/// A handle to a parameter in a [`ParamStore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParamId(usize);

impl ParamId {
    /// The position of the parameter in its store (the order it was added in).
    pub fn index(self) -> usize {
        self.0
    }
}

/// Named trainable tensors. Names are unique and become the keys of model files.
#[derive(Clone, Debug, Default)]
pub struct ParamStore {
    names: Vec<String>,
    values: Vec<Tensor>,
    by_name: HashMap<String, ParamId>,
}

impl ParamStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a parameter; errors if the name is taken.
    pub fn add(&mut self, name: impl Into<String>, value: Tensor) -> Result<ParamId> {
        let name = name.into();
        if self.by_name.contains_key(&name) {
            return Err(Error::invalid(
                "ParamStore::add",
                format!("a parameter named {name:?} already exists"),
            ));
        }
        let id = ParamId(self.values.len());
        self.by_name.insert(name.clone(), id);
        self.names.push(name);
        self.values.push(value);
        Ok(id)
    }

    /// The parameter's current value.
    pub fn get(&self, id: ParamId) -> &Tensor {
        &self.values[id.0]
    }

    /// The parameter's value, for in-place updates by an optimizer.
    pub fn get_mut(&mut self, id: ParamId) -> &mut Tensor {
        &mut self.values[id.0]
    }

    /// Replaces a parameter's value with one of the same shape.
    pub fn set(&mut self, id: ParamId, value: Tensor) -> Result<()> {
        let old = &self.values[id.0];
        if old.shape() != value.shape() {
            return Err(Error::shape_because(
                "ParamStore::set",
                old.shape(),
                value.shape(),
                &format!("parameter {:?} keeps its shape", self.names[id.0]),
            ));
        }
        self.values[id.0] = value;
        Ok(())
    }

    /// The parameter called `name`, if any.
    pub fn id(&self, name: &str) -> Option<ParamId> {
        self.by_name.get(name).copied()
    }

    /// The name of a parameter.
    pub fn name(&self, id: ParamId) -> &str {
        &self.names[id.0]
    }

    /// Number of parameters (tensors, not scalars).
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the store holds no parameters.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Total number of scalars over all parameters.
    pub fn num_scalars(&self) -> usize {
        self.values.iter().map(Tensor::numel).sum()
    }

    /// All parameters in the order they were added: (id, name, value).
    pub fn iter(&self) -> impl Iterator<Item = (ParamId, &str, &Tensor)> {
        self.values
            .iter()
            .enumerate()
            .map(|(i, v)| (ParamId(i), self.names[i].as_str(), v))
    }
}

/// How a node's value was computed, with what its backward needs.
#[derive(Clone, Debug)]
enum Op {
    /// An input (constant or a leaf that wants its gradient).
    Leaf,
    /// A parameter's value read from a store.
    Param(ParamId),
    Matmul {
        a: Var,
        b: Var,
        layout: MatLayout,
    },
    Binary {
        op: BinaryOp,
        a: Var,
        b: Var,
        broadcast: bool,
    },
    Scale {
        x: Var,
        s: f32,
    },
    Unary {
        op: UnaryOp,
        x: Var,
    },
    Concat {
        parts: Vec<Var>,
    },
    /// Columns `offset .. offset + width` of x's last axis (one piece of a split).
    Slice {
        x: Var,
        offset: usize,
    },
    Reshape {
        x: Var,
    },
    ReduceRows {
        x: Var,
        how: Reduction,
    },
    ReduceFeatures {
        x: Var,
        how: Reduction,
    },
    Softmax {
        x: Var,
    },
    LogSoftmax {
        x: Var,
    },
    LayerNorm {
        x: Var,
        gamma: Var,
        beta: Var,
        mean: Tensor,
        rstd: Tensor,
    },
    LogSumExp {
        x: Var,
    },
    MaskedSetReduce {
        x: Var,
        mask: Tensor,
        how: Reduction,
    },
    GatherRows {
        x: Var,
        indices: Vec<u32>,
    },
    /// Softmax over visible keys; its backward is the plain softmax backward.
    MaskedSoftmax {
        x: Var,
    },
    Mse {
        prediction: Var,
        target: Var,
    },
    /// Value: [y, logdet] concatenated along the last axis (see `Tape::rq_spline`).
    RqSpline {
        x: Var,
        knots: [Var; 3],
        bound: f32,
        inverse: bool,
    },
}

#[derive(Debug)]
struct Node {
    value: Tensor,
    op: Op,
    requires_grad: bool,
}

/// The record of a forward pass; see the module docs.
#[derive(Debug)]
pub struct Tape {
    nodes: Vec<Node>,
    recording: bool,
}

impl Default for Tape {
    fn default() -> Self {
        Self::new()
    }
}

/// Gradients from one backward pass: those of leaves that asked for one and of parameters.
#[derive(Debug)]
pub struct Gradients {
    grads: Vec<Option<Tensor>>,
    params: Vec<(ParamId, Var)>,
}

/// Parameter gradients keyed by [`ParamId`]; a parameter read several times on one tape
/// gets the sum.
#[derive(Clone, Debug, Default)]
pub struct ParamGrads(BTreeMap<ParamId, Tensor>);

impl ParamGrads {
    /// The gradient of one parameter, if it received one.
    pub fn get(&self, id: ParamId) -> Option<&Tensor> {
        self.0.get(&id)
    }

    /// All (id, gradient) pairs in id order.
    pub fn iter(&self) -> impl Iterator<Item = (ParamId, &Tensor)> {
        self.0.iter().map(|(&id, g)| (id, g))
    }

    /// Number of parameters with a gradient.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no parameter received a gradient.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// √(Σ over all gradients of Σ g²), the global norm used for clipping.
    pub fn global_norm(&self) -> Result<f32> {
        let mut total = 0.0f64;
        for g in self.0.values() {
            total += ops::squared_norm(g)? as f64;
        }
        Ok(total.sqrt() as f32)
    }

    /// Multiplies every gradient by `s`.
    pub fn scale(&mut self, s: f32) -> Result<()> {
        for g in self.0.values_mut() {
            *g = ops::scale(g, s)?;
        }
        Ok(())
    }
}

impl Gradients {
    /// The gradient of a leaf made with [`Tape::leaf`] (requires_grad) or of a parameter
    /// node; `None` for constants and intermediate values, whose gradients are freed as
    /// soon as they have been propagated.
    pub fn get(&self, v: Var) -> Option<&Tensor> {
        self.grads.get(v.0).and_then(Option::as_ref)
    }

    /// The parameters' gradients, summed over every read of the same parameter.
    pub fn param_grads(&self) -> Result<ParamGrads> {
        let mut out: BTreeMap<ParamId, Tensor> = BTreeMap::new();
        for &(id, v) in &self.params {
            let Some(g) = self.get(v) else { continue };
            let summed = match out.remove(&id) {
                Some(prev) => ops::add(&prev, g)?,
                None => g.clone(),
            };
            out.insert(id, summed);
        }
        Ok(ParamGrads(out))
    }
}

impl Tape {
    /// A tape that records ops for backward.
    pub fn new() -> Self {
        Tape {
            nodes: Vec::new(),
            recording: true,
        }
    }

    /// A tape for inference: it computes values but records no op history.
    pub fn no_grad() -> Self {
        Tape {
            nodes: Vec::new(),
            recording: false,
        }
    }

    /// Whether ops are recorded for backward.
    pub fn is_recording(&self) -> bool {
        self.recording
    }

    /// Number of values on the tape.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the tape holds no values.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Number of recorded ops that backward can walk through (always 0 without grad).
    pub fn recorded_ops(&self) -> usize {
        self.nodes
            .iter()
            .filter(|n| !matches!(n.op, Op::Leaf | Op::Param(_)))
            .count()
    }

    /// The value of a variable.
    pub fn value(&self, v: Var) -> &Tensor {
        &self.nodes[v.0].value
    }

    /// The shape of a variable's value.
    pub fn shape(&self, v: Var) -> &[usize] {
        self.nodes[v.0].value.shape()
    }

    fn push(&mut self, value: Tensor, op: Op, requires_grad: bool) -> Var {
        let (op, requires_grad) = if self.recording {
            (op, requires_grad)
        } else {
            (Op::Leaf, false)
        };
        self.nodes.push(Node {
            value,
            op,
            requires_grad,
        });
        Var(self.nodes.len() - 1)
    }

    fn needs(&self, inputs: &[Var]) -> bool {
        inputs.iter().any(|v| self.nodes[v.0].requires_grad)
    }

    /// A value that needs no gradient (data, targets, masks).
    pub fn constant(&mut self, value: Tensor) -> Var {
        self.push(value, Op::Leaf, false)
    }

    /// An input whose gradient backward should compute.
    pub fn leaf(&mut self, value: Tensor) -> Var {
        self.push(value, Op::Leaf, true)
    }

    /// Reads a parameter from `store` onto the tape (shares its data; no copy on the CPU).
    pub fn param(&mut self, store: &ParamStore, id: ParamId) -> Var {
        self.push(store.get(id).clone(), Op::Param(id), true)
    }

    /// Matrix product in `layout` (rank-3 operands are batched).
    pub fn matmul(&mut self, a: Var, b: Var, layout: MatLayout) -> Result<Var> {
        let y = ops::matmul(self.value(a), self.value(b), layout)?;
        Ok(self.push(y, Op::Matmul { a, b, layout }, self.needs(&[a, b])))
    }

    /// a ∘ b, with b of a's shape or a row broadcast over a's rows.
    pub fn binary(&mut self, op: BinaryOp, a: Var, b: Var) -> Result<Var> {
        let broadcast = ops::is_row_broadcast(op.name(), self.value(a), self.value(b))?;
        let y = ops::binary(op, self.value(a), self.value(b))?;
        let node = Op::Binary {
            op,
            a,
            b,
            broadcast,
        };
        Ok(self.push(y, node, self.needs(&[a, b])))
    }

    /// a + b.
    pub fn add(&mut self, a: Var, b: Var) -> Result<Var> {
        self.binary(BinaryOp::Add, a, b)
    }

    /// a − b.
    pub fn sub(&mut self, a: Var, b: Var) -> Result<Var> {
        self.binary(BinaryOp::Sub, a, b)
    }

    /// a·b elementwise.
    pub fn mul(&mut self, a: Var, b: Var) -> Result<Var> {
        self.binary(BinaryOp::Mul, a, b)
    }

    /// a / b elementwise.
    pub fn div(&mut self, a: Var, b: Var) -> Result<Var> {
        self.binary(BinaryOp::Div, a, b)
    }

    /// s·x.
    pub fn scale(&mut self, x: Var, s: f32) -> Result<Var> {
        let y = ops::scale(self.value(x), s)?;
        Ok(self.push(y, Op::Scale { x, s }, self.needs(&[x])))
    }

    /// f(x) elementwise.
    pub fn unary(&mut self, op: UnaryOp, x: Var) -> Result<Var> {
        let y = ops::unary(op, self.value(x))?;
        Ok(self.push(y, Op::Unary { op, x }, self.needs(&[x])))
    }

    /// Concatenation along the last axis.
    pub fn concat(&mut self, parts: &[Var]) -> Result<Var> {
        let values: Vec<&Tensor> = parts.iter().map(|&p| self.value(p)).collect();
        let y = ops::concat(&values)?;
        let parts = parts.to_vec();
        let needs = self.needs(&parts);
        Ok(self.push(y, Op::Concat { parts }, needs))
    }

    /// Splits the last axis into pieces of `widths`.
    pub fn split(&mut self, x: Var, widths: &[usize]) -> Result<Vec<Var>> {
        let pieces = ops::split(self.value(x), widths)?;
        let needs = self.needs(&[x]);
        let mut offset = 0;
        let mut out = Vec::with_capacity(pieces.len());
        for (piece, &w) in pieces.into_iter().zip(widths) {
            out.push(self.push(piece, Op::Slice { x, offset }, needs));
            offset += w;
        }
        Ok(out)
    }

    /// The same values under another shape.
    pub fn reshape(&mut self, x: Var, shape: &[usize]) -> Result<Var> {
        let y = self.value(x).reshape(shape)?;
        Ok(self.push(y, Op::Reshape { x }, self.needs(&[x])))
    }

    /// Sum or mean over rows: `[..., n]` → `[n]`.
    pub fn reduce_rows(&mut self, x: Var, how: Reduction) -> Result<Var> {
        let y = ops::reduce_rows(self.value(x), how)?;
        Ok(self.push(y, Op::ReduceRows { x, how }, self.needs(&[x])))
    }

    /// Sum or mean over the last axis: `[..., n]` → `[...]`.
    pub fn reduce_features(&mut self, x: Var, how: Reduction) -> Result<Var> {
        let y = ops::reduce_features(self.value(x), how)?;
        Ok(self.push(y, Op::ReduceFeatures { x, how }, self.needs(&[x])))
    }

    /// Sum or mean of every element, as a rank-0 value.
    pub fn reduce_all(&mut self, x: Var, how: Reduction) -> Result<Var> {
        let flat = self.reshape(x, &[self.value(x).numel()])?;
        self.reduce_features(flat, how)
    }

    /// Softmax over the last axis.
    pub fn softmax(&mut self, x: Var) -> Result<Var> {
        let y = ops::softmax(self.value(x))?;
        Ok(self.push(y, Op::Softmax { x }, self.needs(&[x])))
    }

    /// Log-softmax over the last axis.
    pub fn log_softmax(&mut self, x: Var) -> Result<Var> {
        let y = ops::log_softmax(self.value(x))?;
        Ok(self.push(y, Op::LogSoftmax { x }, self.needs(&[x])))
    }

    /// Layer norm over the last axis with scale `gamma` and shift `beta` (both `[n]`).
    pub fn layer_norm(&mut self, x: Var, gamma: Var, beta: Var, eps: f32) -> Result<Var> {
        let (y, mean, rstd) =
            ops::layer_norm(self.value(x), self.value(gamma), self.value(beta), eps)?;
        let node = Op::LayerNorm {
            x,
            gamma,
            beta,
            mean,
            rstd,
        };
        Ok(self.push(y, node, self.needs(&[x, gamma, beta])))
    }

    /// log Σ exp over the last axis.
    pub fn logsumexp(&mut self, x: Var) -> Result<Var> {
        let y = ops::logsumexp(self.value(x))?;
        Ok(self.push(y, Op::LogSumExp { x }, self.needs(&[x])))
    }

    /// Masked sum or mean over the set axis of `[batch, set, feat]`.
    pub fn masked_set_reduce(&mut self, x: Var, mask: &Tensor, how: Reduction) -> Result<Var> {
        let y = ops::masked_set_reduce(self.value(x), mask, how)?;
        let node = Op::MaskedSetReduce {
            x,
            mask: mask.clone(),
            how,
        };
        Ok(self.push(y, node, self.needs(&[x])))
    }

    /// Softmax over the keys each query may see (see [`ops::masked_softmax`]): scores
    /// `[batch, queries, keys]`, key mask `[batch, keys]`, optionally causal (key j ≤ query i).
    pub fn masked_softmax(&mut self, x: Var, mask: &Tensor, causal: bool) -> Result<Var> {
        let y = ops::masked_softmax(self.value(x), mask, causal)?;
        Ok(self.push(y, Op::MaskedSoftmax { x }, self.needs(&[x])))
    }

    /// Rows of x along axis 0 picked by `indices`.
    pub fn gather_rows(&mut self, x: Var, indices: &[u32]) -> Result<Var> {
        let y = ops::gather_rows(self.value(x), indices)?;
        let node = Op::GatherRows {
            x,
            indices: indices.to_vec(),
        };
        Ok(self.push(y, node, self.needs(&[x])))
    }

    /// Mean squared error, a rank-0 value.
    pub fn mse(&mut self, prediction: Var, target: Var) -> Result<Var> {
        let y = ops::mse(self.value(prediction), self.value(target))?;
        let node = Op::Mse { prediction, target };
        Ok(self.push(y, node, self.needs(&[prediction, target])))
    }

    /// The rational-quadratic spline with identity tails outside [−bound, bound],
    /// elementwise (see [`ops::rq_spline`]): x `[..., n]`, knots = [widths `[..., n, K]`,
    /// heights `[..., n, K]`, derivatives `[..., n, K + 1]`]. Returns (y, ln |dy/dx|), both
    /// x's shape; with `inverse`, the x that maps to the input and ln |dx/dy|. Both
    /// directions are differentiable in every input.
    pub fn rq_spline(
        &mut self,
        x: Var,
        knots: [Var; 3],
        bound: f32,
        inverse: bool,
    ) -> Result<(Var, Var)> {
        let [w, h, d] = knots.map(|v| self.value(v));
        let (y, logdet) = ops::rq_spline(self.value(x), w, h, d, bound, inverse)?;
        let both = ops::concat(&[&y, &logdet])?;
        let node = Op::RqSpline {
            x,
            knots,
            bound,
            inverse,
        };
        let needs = self.needs(&[x, knots[0], knots[1], knots[2]]);
        let both = self.push(both, node, needs);
        let n = self.value(x).cols();
        let parts = self.split(both, &[n, n])?;
        Ok((parts[0], parts[1]))
    }

    /// Gradients of a one-element `loss` with respect to every leaf and parameter.
    pub fn backward(&self, loss: Var) -> Result<Gradients> {
        let value = self.value(loss);
        if value.numel() != 1 {
            return Err(Error::shape_because(
                "backward",
                value.shape(),
                &[],
                "the loss must have one element (use backward_with for other outputs)",
            ));
        }
        let seed = backend::for_device(value.device())?.fill(value.shape(), 1.0)?;
        self.backward_with(loss, seed)
    }

    /// Gradients of Σ seed·output (a vector-Jacobian product).
    pub fn backward_with(&self, output: Var, seed: Tensor) -> Result<Gradients> {
        if !self.recording {
            return Err(Error::invalid(
                "backward",
                "this tape was made with Tape::no_grad and recorded no ops",
            ));
        }
        if seed.shape() != self.shape(output) {
            return Err(Error::shape_because(
                "backward",
                self.shape(output),
                seed.shape(),
                "the seed must have the output's shape",
            ));
        }
        let mut grads: Vec<Option<Tensor>> = vec![None; self.nodes.len()];
        grads[output.0] = Some(seed);
        let mut params = Vec::new();
        for i in (0..=output.0).rev() {
            let node = &self.nodes[i];
            match node.op {
                Op::Leaf => continue,
                Op::Param(id) => {
                    params.push((id, Var(i)));
                    continue;
                }
                _ => {}
            }
            let Some(g) = grads[i].take() else { continue };
            if !node.requires_grad {
                continue;
            }
            for (input, dx) in self.input_grads(node, &g)? {
                if !self.nodes[input.0].requires_grad {
                    continue;
                }
                let slot = &mut grads[input.0];
                *slot = Some(match slot.take() {
                    Some(prev) => ops::add(&prev, &dx)?,
                    None => dx,
                });
            }
        }
        Ok(Gradients { grads, params })
    }

    /// The gradient contribution of `node` to each of its inputs, given its output gradient.
    fn input_grads(&self, node: &Node, g: &Tensor) -> Result<Vec<(Var, Tensor)>> {
        let val = |v: Var| self.value(v);
        let wants = |v: Var| self.nodes[v.0].requires_grad;
        let y = &node.value;
        Ok(match &node.op {
            Op::Leaf | Op::Param(_) => Vec::new(),
            Op::Matmul { a, b, layout } => {
                let (a, b) = (*a, *b);
                let (va, vb) = (val(a), val(b));
                // Each operand's gradient is one matmul in another layout (see MatLayout).
                let (da, db) = match layout {
                    MatLayout::NN => ((g, vb, MatLayout::NT), (va, g, MatLayout::TN)),
                    MatLayout::NT => ((g, vb, MatLayout::NN), (g, va, MatLayout::TN)),
                    MatLayout::TN => ((vb, g, MatLayout::NT), (va, g, MatLayout::NN)),
                };
                let mut out = Vec::with_capacity(2);
                for (v, (l, r, lay)) in [(a, da), (b, db)] {
                    if wants(v) {
                        out.push((v, ops::matmul(l, r, lay)?));
                    }
                }
                out
            }
            Op::Binary {
                op,
                a,
                b,
                broadcast,
            } => {
                let (a, b) = (*a, *b);
                let (va, vb) = (val(a), val(b));
                let (da, db_full) = match op {
                    BinaryOp::Add => (g.clone(), g.clone()),
                    BinaryOp::Sub => (g.clone(), ops::scale(g, -1.0)?),
                    BinaryOp::Mul => (ops::mul(g, vb)?, ops::mul(g, va)?),
                    // d(a/b)/db = −a/b² = −y/b.
                    BinaryOp::Div => (
                        ops::div(g, vb)?,
                        ops::scale(&ops::div(&ops::mul(g, y)?, vb)?, -1.0)?,
                    ),
                };
                let mut out = vec![(a, da)];
                if wants(b) {
                    let db = if *broadcast {
                        ops::reduce_rows(&db_full, Reduction::Sum)?.reshape(vb.shape())?
                    } else {
                        db_full
                    };
                    out.push((b, db));
                }
                out
            }
            Op::Scale { x, s } => vec![(*x, ops::scale(g, *s)?)],
            Op::Unary { op, x } => vec![(*x, ops::unary_backward(*op, val(*x), y, g)?)],
            Op::Concat { parts } => {
                let widths: Vec<usize> = parts.iter().map(|&p| val(p).cols()).collect();
                parts.iter().copied().zip(ops::split(g, &widths)?).collect()
            }
            Op::Slice { x, offset } => vec![(*x, self.unslice(val(*x), g, *offset)?)],
            Op::Reshape { x } => vec![(*x, g.reshape(val(*x).shape())?)],
            Op::ReduceRows { x, how } => {
                vec![(*x, ops::reduce_rows_backward(g, *how, val(*x).shape())?)]
            }
            Op::ReduceFeatures { x, how } => {
                vec![(*x, ops::reduce_features_backward(g, *how, val(*x).shape())?)]
            }
            Op::Softmax { x } => vec![(*x, ops::softmax_backward(y, g)?)],
            Op::LogSoftmax { x } => vec![(*x, ops::log_softmax_backward(y, g)?)],
            Op::LayerNorm {
                x,
                gamma,
                beta,
                mean,
                rstd,
            } => {
                let (dx, dgamma, dbeta) =
                    ops::layer_norm_backward(val(*x), val(*gamma), mean, rstd, g)?;
                vec![(*x, dx), (*gamma, dgamma), (*beta, dbeta)]
            }
            Op::LogSumExp { x } => vec![(*x, ops::logsumexp_backward(val(*x), y, g)?)],
            Op::MaskedSetReduce { x, mask, how } => {
                let set = val(*x).shape()[1];
                vec![(*x, ops::masked_set_reduce_backward(g, mask, *how, set)?)]
            }
            Op::MaskedSoftmax { x } => vec![(*x, ops::softmax_backward(y, g)?)],
            Op::GatherRows { x, indices } => {
                vec![(*x, ops::gather_rows_backward(g, indices, val(*x).shape())?)]
            }
            Op::Mse { prediction, target } => {
                let dp = ops::mse_backward(val(*prediction), val(*target), g)?;
                let mut out = Vec::with_capacity(2);
                if wants(*target) {
                    out.push((*target, ops::scale(&dp, -1.0)?));
                }
                out.push((*prediction, dp));
                out
            }
            Op::RqSpline {
                x,
                knots,
                bound,
                inverse,
            } => {
                let n = val(*x).cols();
                let g = ops::split(g, &[n, n])?;
                let grads = ops::rq_spline_backward(
                    val(*x),
                    knots.map(val),
                    *bound,
                    *inverse,
                    &g[0],
                    &g[1],
                )?;
                let inputs = [*x, knots[0], knots[1], knots[2]];
                inputs.into_iter().zip(grads).collect()
            }
        })
    }

    /// The gradient of a slice at `offset` of x's last axis, as a tensor of x's shape:
    /// zeros left and right of `g`.
    fn unslice(&self, x: &Tensor, g: &Tensor, offset: usize) -> Result<Tensor> {
        let backend = backend::for_device(g.device())?;
        let lead = &x.shape()[..x.rank() - 1];
        let zeros = |width: usize| -> Result<Tensor> {
            let mut shape = lead.to_vec();
            shape.push(width);
            backend.fill(&shape, 0.0)
        };
        let right = x.cols() - offset - g.cols();
        let left_pad = if offset > 0 {
            Some(zeros(offset)?)
        } else {
            None
        };
        let right_pad = if right > 0 { Some(zeros(right)?) } else { None };
        let parts: Vec<&Tensor> = left_pad
            .iter()
            .chain(std::iter::once(g))
            .chain(right_pad.iter())
            .collect();
        ops::concat(&parts)
    }
}
