//! The op set every backend implements, forward and backward.
//!
//! A backend receives operands whose shapes and devices `crate::ops` has already
//! checked, so a backend file contains only compute. Each method has the name of its
//! kernel in `src/backend/cpu.rs`, `kernels/NAME.cu` and `shaders/NAME.wgsl`, and the CPU
//! backend defines what every other backend must compute (contract 2). A new backend is
//! a new file implementing [`Backend`] plus one arm in [`for_device`].

pub mod cpu;
pub mod cuda;
pub mod wgpu;

use std::sync::Arc;

use crate::error::Result;
use crate::tensor::{Device, Tensor};

/// Which operands of a matrix product are transposed. Shapes are row-major:
/// `NN`: `C[m,n] = A[m,k]·B[k,n]`; `NT`: `C[m,n] = A[m,k]·B[n,k]ᵀ`; `TN`: `C[m,n] = A[k,m]ᵀ·B[k,n]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MatLayout {
    /// C = A·B.
    NN,
    /// C = A·Bᵀ (a linear layer with PyTorch's `[out, in]` weights).
    NT,
    /// C = Aᵀ·B (weight gradients).
    TN,
}

/// Sizes of a (batched) matrix product after layout is resolved: `batch` products of
/// `[m, k]·[k, n]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulDims {
    /// Number of independent products (1 for a plain matmul).
    pub batch: usize,
    /// Rows of C.
    pub m: usize,
    /// The contracted dimension.
    pub k: usize,
    /// Columns of C.
    pub n: usize,
}

/// Elementwise binary ops; the right operand has the left's shape or is one row that is
/// broadcast over all rows (a bias).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    /// a + b
    Add,
    /// a - b
    Sub,
    /// a * b
    Mul,
    /// a / b
    Div,
}

impl BinaryOp {
    /// The op on one pair of elements: the reference every kernel matches.
    #[inline(always)]
    pub fn apply(self, a: f32, b: f32) -> f32 {
        match self {
            BinaryOp::Add => a + b,
            BinaryOp::Sub => a - b,
            BinaryOp::Mul => a * b,
            BinaryOp::Div => a / b,
        }
    }

    /// The op's name in kernels and error messages.
    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
        }
    }
}

/// Elementwise activations and transcendental functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnaryOp {
    /// max(x, 0); its derivative at 0 is taken as 0.
    Relu,
    /// GELU in the tanh form, 0.5·x·(1 + tanh(u)) with u = √(2/π)·(x + 0.044715·x³),
    /// computed as x·σ(2u) (the same function: 0.5·(1 + tanh u) = σ(2u)), which needs one
    /// exponential where tanh costs two and has no cancellation for negative x. Chosen
    /// over the erf form because WGSL has no erf: every backend computes this one alike.
    Gelu,
    /// x·sigmoid(x).
    Silu,
    /// tanh(x).
    Tanh,
    /// 1 / (1 + e^-x), evaluated without overflow for either sign.
    Sigmoid,
    /// ln(1 + e^x) as max(x, 0) + ln(1 + e^-|x|), which never overflows.
    Softplus,
    /// e^x.
    Exp,
    /// ln x.
    Log,
}

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const GELU_CUBIC: f32 = 0.044_715;

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// The gate g of an activation y = x·g(x) with g(0) = 1/2 (SiLU's σ(x), GELU's σ(2u)),
/// read back from its output: g = y/x, without the exponential that computing g again
/// would cost (a fifth of a score network's training time). Where |x| ≤ 1e-30 (then
/// g = 1/2 to f32 precision) x·g may have lost bits to subnormal rounding, so 1/2 is used.
#[inline(always)]
fn gate_from_output(x: f32, y: f32) -> f32 {
    if x.abs() > 1e-30 {
        y / x
    } else {
        0.5
    }
}

impl UnaryOp {
    /// y = f(x): the reference every kernel matches.
    #[inline(always)]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            UnaryOp::Relu => x.max(0.0),
            UnaryOp::Gelu => {
                let u = SQRT_2_OVER_PI * (x + GELU_CUBIC * x * x * x);
                x * sigmoid(2.0 * u)
            }
            UnaryOp::Silu => x * sigmoid(x),
            UnaryOp::Tanh => x.tanh(),
            UnaryOp::Sigmoid => sigmoid(x),
            UnaryOp::Softplus => x.max(0.0) + (-x.abs()).exp().ln_1p(),
            UnaryOp::Exp => x.exp(),
            UnaryOp::Log => x.ln(),
        }
    }

    /// dy/dx given x and y = f(x) (each op uses whichever is cheaper; `y` must be
    /// `apply(x)`, as the tape passes it).
    #[inline(always)]
    pub fn derivative(self, x: f32, y: f32) -> f32 {
        match self {
            UnaryOp::Relu => {
                if x > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            UnaryOp::Gelu => {
                // d/dx x·σ(2u) = σ(2u) + 2x·σ(2u)(1 − σ(2u))·du/dx.
                let s = gate_from_output(x, y);
                let du = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_CUBIC * x * x);
                s + 2.0 * x * s * (1.0 - s) * du
            }
            UnaryOp::Silu => {
                let s = gate_from_output(x, y);
                s * (1.0 + x * (1.0 - s))
            }
            UnaryOp::Tanh => 1.0 - y * y,
            UnaryOp::Sigmoid => y * (1.0 - y),
            UnaryOp::Softplus => sigmoid(x),
            UnaryOp::Exp => y,
            UnaryOp::Log => 1.0 / x,
        }
    }

    /// The op's name in kernels and error messages.
    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Relu => "relu",
            UnaryOp::Gelu => "gelu",
            UnaryOp::Silu => "silu",
            UnaryOp::Tanh => "tanh",
            UnaryOp::Sigmoid => "sigmoid",
            UnaryOp::Softplus => "softplus",
            UnaryOp::Exp => "exp",
            UnaryOp::Log => "log",
        }
    }

    /// Every unary op, for tests and benchmarks that sweep them.
    pub const ALL: [UnaryOp; 8] = [
        UnaryOp::Relu,
        UnaryOp::Gelu,
        UnaryOp::Silu,
        UnaryOp::Tanh,
        UnaryOp::Sigmoid,
        UnaryOp::Softplus,
        UnaryOp::Exp,
        UnaryOp::Log,
    ];
}

/// Sum or mean, for the reductions that offer both.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reduction {
    /// Σ
    Sum,
    /// Σ / count
    Mean,
}

/// One Adam(W) step's hyper-parameters, with the bias corrections precomputed on the
/// host so every backend's kernel is the same few lines.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamStep {
    /// Learning rate of this step.
    pub lr: f32,
    /// First-moment decay.
    pub beta1: f32,
    /// Second-moment decay.
    pub beta2: f32,
    /// Added to √v̂ in the denominator.
    pub eps: f32,
    /// Weight decay (L2 added to the gradient for Adam, decoupled for AdamW).
    pub weight_decay: f32,
    /// AdamW (decoupled decay: p ← p·(1 − lr·wd) before the Adam update) or Adam (g ← g + wd·p).
    pub decoupled: bool,
    /// 1 − beta1^t for this step t (t starts at 1).
    pub bias_correction1: f32,
    /// 1 − beta2^t for this step t.
    pub bias_correction2: f32,
}

/// The op set, forward and backward, that every backend implements. Inputs are
/// validated by `crate::ops` (shapes agree, all on this backend's device); outputs are
/// new tensors on the same device.
pub trait Backend: Send + Sync {
    /// The device this backend runs on.
    fn device(&self) -> Device;
    /// A human-readable description (device name, threads, ...).
    fn describe(&self) -> String;

    /// Copies host data to a new tensor on this device.
    fn upload(&self, data: &[f32], shape: &[usize]) -> Result<Tensor>;
    /// Copies a tensor of this device to host memory.
    fn download(&self, x: &Tensor) -> Result<Vec<f32>>;
    /// A new tensor with every element equal to `value`.
    fn fill(&self, shape: &[usize], value: f32) -> Result<Tensor>;

    /// Matrix product in `layout`, batched over `dims.batch`; output `[m, n]` or `[batch, m, n]`.
    fn matmul(
        &self,
        a: &Tensor,
        b: &Tensor,
        layout: MatLayout,
        dims: MatmulDims,
        out_shape: &[usize],
    ) -> Result<Tensor>;
    /// a ∘ b elementwise; `b` has a's shape or is one row of a's last dimension (broadcast).
    fn binary(&self, op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor>;
    /// s·x.
    fn scale(&self, x: &Tensor, s: f32) -> Result<Tensor>;
    /// y = f(x) elementwise.
    fn unary(&self, op: UnaryOp, x: &Tensor) -> Result<Tensor>;
    /// dx = f'(x)·dy, given x and y = f(x).
    fn unary_backward(&self, op: UnaryOp, x: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Tensor>;
    /// Concatenation along the last axis of tensors with equal leading shapes.
    fn concat(&self, parts: &[&Tensor]) -> Result<Tensor>;
    /// Splits along the last axis into pieces of the given widths (the inverse of concat).
    fn split(&self, x: &Tensor, widths: &[usize]) -> Result<Vec<Tensor>>;
    /// Reduces `[rows, n]` (leading axes flattened) over the rows to `[n]`.
    fn reduce_rows(&self, x: &Tensor, how: Reduction) -> Result<Tensor>;
    /// The backward of `reduce_rows`: `[n]` repeated over rows into `out_shape` (÷ rows for a mean).
    fn reduce_rows_backward(
        &self,
        dy: &Tensor,
        how: Reduction,
        out_shape: &[usize],
    ) -> Result<Tensor>;
    /// Reduces the last axis: `[..., n]` to `[...]`.
    fn reduce_features(&self, x: &Tensor, how: Reduction) -> Result<Tensor>;
    /// The backward of `reduce_features`: each value repeated over the last axis of `out_shape`.
    fn reduce_features_backward(
        &self,
        dy: &Tensor,
        how: Reduction,
        out_shape: &[usize],
    ) -> Result<Tensor>;
    /// Softmax over the last axis (max-subtracted).
    fn softmax(&self, x: &Tensor) -> Result<Tensor>;
    /// dx = y·(dy − Σ dy·y) per row.
    fn softmax_backward(&self, y: &Tensor, dy: &Tensor) -> Result<Tensor>;
    /// Log-softmax over the last axis: x − logsumexp(x).
    fn log_softmax(&self, x: &Tensor) -> Result<Tensor>;
    /// dx = dy − exp(y)·Σ dy per row.
    fn log_softmax_backward(&self, y: &Tensor, dy: &Tensor) -> Result<Tensor>;
    /// Layer norm over the last axis: returns (y, mean, rstd), the last two `[rows]` for backward.
    fn layer_norm(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        eps: f32,
    ) -> Result<(Tensor, Tensor, Tensor)>;
    /// Returns (dx, dgamma, dbeta).
    fn layer_norm_backward(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        mean: &Tensor,
        rstd: &Tensor,
        dy: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)>;
    /// log Σ exp over the last axis (max-subtracted): `[..., n]` to `[...]`.
    fn logsumexp(&self, x: &Tensor) -> Result<Tensor>;
    /// dx = dy·exp(x − lse).
    fn logsumexp_backward(&self, x: &Tensor, lse: &Tensor, dy: &Tensor) -> Result<Tensor>;
    /// `Σ_s mask[b,s]·x[b,s,f]` over the set axis of `[batch, set, feat]` (÷ Σ_s mask for a
    /// mean; a set whose mask sums to 0 gives 0).
    fn masked_set_reduce(&self, x: &Tensor, mask: &Tensor, how: Reduction) -> Result<Tensor>;
    /// `dx[b,s,f] = dy[b,f]·mask[b,s]` (÷ Σ_s mask for a mean).
    fn masked_set_reduce_backward(
        &self,
        dy: &Tensor,
        mask: &Tensor,
        how: Reduction,
        set_size: usize,
    ) -> Result<Tensor>;
    /// Softmax over the last axis of x `[batch, queries, keys]` restricted to the keys each
    /// query may see: key j is visible to query i when mask[b, j] ≠ 0 (mask `[batch, keys]`)
    /// and, with `causal`, j ≤ i. Hidden keys get weight exactly 0; a query that sees no
    /// key gets a row of zeros. Its backward is `softmax_backward`.
    fn masked_softmax(&self, x: &Tensor, mask: &Tensor, causal: bool) -> Result<Tensor>;
    /// Rows of x (along axis 0) picked by index; indices are in range.
    fn gather_rows(&self, x: &Tensor, indices: &[u32]) -> Result<Tensor>;
    /// `dx[indices[i]] += dy[i]` into zeros of `out_shape`, summing in index order (deterministic).
    fn gather_rows_backward(
        &self,
        dy: &Tensor,
        indices: &[u32],
        out_shape: &[usize],
    ) -> Result<Tensor>;
    /// mean((p − t)²) over all elements, as a rank-0 tensor.
    fn mse(&self, prediction: &Tensor, target: &Tensor) -> Result<Tensor>;
    /// dp = 2·(p − t)·dy / numel, with dy the rank-0 upstream gradient.
    fn mse_backward(&self, prediction: &Tensor, target: &Tensor, dy: &Tensor) -> Result<Tensor>;
    /// The monotone rational-quadratic spline with identity tails outside [−bound, bound]
    /// (Durkan et al. 2019), elementwise: x `[...]`, widths and heights `[..., K]` (positive,
    /// each row summing to 2·bound), derivatives `[..., K + 1]` (positive). Returns
    /// (y, ln |dy/dx|), both x's shape; with `inverse` the input is a y and the output the
    /// x that maps to it, with ln |dx/dy|.
    fn rq_spline(
        &self,
        x: &Tensor,
        widths: &Tensor,
        heights: &Tensor,
        derivatives: &Tensor,
        bound: f32,
        inverse: bool,
    ) -> Result<(Tensor, Tensor)>;
    /// The backward of `rq_spline` given the gradients of both outputs: returns
    /// [dx, dwidths, dheights, dderivatives] for `knots` = [widths, heights, derivatives].
    fn rq_spline_backward(
        &self,
        x: &Tensor,
        knots: [&Tensor; 3],
        bound: f32,
        inverse: bool,
        dy: &Tensor,
        dlogdet: &Tensor,
    ) -> Result<[Tensor; 4]>;
    /// One Adam(W) step in place on `param`, `m` and `v`.
    fn adam_update(
        &self,
        param: &mut Tensor,
        grad: &Tensor,
        m: &mut Tensor,
        v: &mut Tensor,
        step: &AdamStep,
    ) -> Result<()>;
}

/// The backend that runs ops for `device`, or why there is none. Never falls back to
/// another device.
pub fn for_device(device: Device) -> Result<Arc<dyn Backend>> {
    match device {
        Device::Cpu => Ok(cpu::CpuBackend::shared()),
        Device::Cuda(n) => Ok(cuda::CudaBackend::shared(n)?),
        Device::Wgpu(index) => Ok(self::wgpu::WgpuBackend::shared(index)?),
    }
}
