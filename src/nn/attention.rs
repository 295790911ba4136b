//! Multi-head attention over ragged sets, and the pre-norm transformer block built on it
//! (Vaswani et al. 2017; the set transformer of Lee et al. 2019; the causal transformer
//! of the hierarchical SBI paper, section 2.2).
//!
//! Multi-head attention of queries X `[B, Q, W]` over keys Y `[B, K, W]` with a key mask
//! m `[B, K]` (1 = element, 0 = padding), H heads of width d = W/H:
//!
//! ```text
//! q = X·W_qᵀ + b_q,  k = Y·W_kᵀ + b_k,  v = Y·W_vᵀ + b_v      split into H heads of width d
//! A_h[b, i, j] = softmax over visible j of  q_h[b, i]·k_h[b, j] / √d
//! o_h = A_h·v_h,  MHA(X, Y) = concat_h(o_h)·W_oᵀ + b_o
//! ```
//!
//! Key j is visible to query i when m[b, j] = 1 and, for causal self-attention, j ≤ i.
//! Padded keys get weight exactly 0 ([`Tape::masked_softmax`]), so the output at every
//! query is independent of the padding's content and position. A query that sees no key
//! at all gets zero weights, so its attention output is just the output bias b_o: that
//! happens only to a padded query before every real element in causal attention (the
//! set encoders reject empty sets), and such outputs are never read.
//!
//! Heads are taken apart with `split` along the feature axis and put back with `concat`,
//! so attention needs only one op beyond the existing set (`masked_softmax`, whose
//! backward is the plain softmax backward): no reshape/transpose op between
//! `[B, S, H·d]` and `[B·H, S, d]`. The cost is H batched matmuls of `[B, Q, d]·[B, K, d]ᵀ`
//! per attention instead of one, which is the same arithmetic.
//!
//! The block is pre-norm (Xiong et al. 2020), which trains without learning-rate warmup:
//!
//! ```text
//! h = x + MHA(LN₁(x), LN₁(x))          (self-attention, key mask m, optionally causal)
//! y = h + FF(LN₂(h)),   FF(u) = W₂·act(W₁·u + b₁) + b₂
//! ```
//!
//! The residual stream is not normalized at the end of a block: the encoders put a final
//! layer norm after their last block.

use crate::autograd::{ParamStore, Tape, Var};
use crate::backend::{MatLayout, UnaryOp};
use crate::error::{Error, Result};
use crate::nn::sets::linear_per_element;
use crate::nn::{LayerNorm, Linear};
use crate::rng::PhiloxStream;
use crate::tensor::Tensor;

/// Multi-head (scaled dot-product) attention with key masks; see the module docs.
#[derive(Clone, Debug)]
pub struct MultiHeadAttention {
    /// W_q, b_q: width → width.
    pub query: Linear,
    /// W_k, b_k: width → width.
    pub key: Linear,
    /// W_v, b_v: width → width.
    pub value: Linear,
    /// W_o, b_o: width → width.
    pub output: Linear,
    /// Number of heads H.
    pub heads: usize,
    /// Width of each head, d = width / H.
    pub head_dim: usize,
}

impl MultiHeadAttention {
    /// Adds `{name}.query`, `{name}.key`, `{name}.value` and `{name}.output` (each
    /// `width × width` with a bias); `width` must be a positive multiple of `heads`.
    pub fn new(
        store: &mut ParamStore,
        name: &str,
        width: usize,
        heads: usize,
        rng: &mut PhiloxStream,
    ) -> Result<Self> {
        if heads == 0 || width == 0 || width % heads != 0 {
            return Err(Error::invalid(
                "MultiHeadAttention::new",
                format!("{name}: width {width} must be a positive multiple of heads {heads}"),
            ));
        }
        let mut layer =
            |part: &str| Linear::new(store, &format!("{name}.{part}"), width, width, true, rng);
        Ok(MultiHeadAttention {
            query: layer("query")?,
            key: layer("key")?,
            value: layer("value")?,
            output: layer("output")?,
            heads,
            head_dim: width / heads,
        })
    }

    /// The model width W = H·d.
    pub fn width(&self) -> usize {
        self.heads * self.head_dim
    }

    /// MHA(queries, keys): queries `[B, Q, W]` attend to keys `[B, K, W]` whose mask is
    /// `key_mask` `[B, K]` (nonzero = present); with `causal` (needs Q = K) query i sees
    /// only keys j ≤ i. Returns `[B, Q, W]`.
    pub fn forward(
        &self,
        tape: &mut Tape,
        store: &ParamStore,
        queries: Var,
        keys: Var,
        key_mask: &Tensor,
        causal: bool,
    ) -> Result<Var> {
        let op = "MultiHeadAttention::forward";
        let (qs, ks) = (tape.shape(queries).to_vec(), tape.shape(keys).to_vec());
        let w = self.width();
        if qs.len() != 3 || ks.len() != 3 || qs[2] != w || ks[2] != w || qs[0] != ks[0] {
            let why = format!("queries [B, Q, {w}] and keys [B, K, {w}] expected");
            return Err(Error::shape_because(op, &qs, &ks, &why));
        }
        if key_mask.shape() != [ks[0], ks[1]] {
            return Err(Error::shape_because(
                op,
                &ks[..2],
                key_mask.shape(),
                "the key mask must be [B, K] for keys [B, K, W]",
            ));
        }
        let q = linear_per_element(tape, store, &self.query, queries)?;
        let k = linear_per_element(tape, store, &self.key, keys)?;
        let v = linear_per_element(tape, store, &self.value, keys)?;
        let (qh, kh, vh) = if self.heads == 1 {
            (vec![q], vec![k], vec![v])
        } else {
            let widths = vec![self.head_dim; self.heads];
            (
                tape.split(q, &widths)?,
                tape.split(k, &widths)?,
                tape.split(v, &widths)?,
            )
        };
        let scale = 1.0 / (self.head_dim as f32).sqrt();
        let mut outs = Vec::with_capacity(self.heads);
        for h in 0..self.heads {
            let scores = tape.matmul(qh[h], kh[h], MatLayout::NT)?;
            let scores = tape.scale(scores, scale)?;
            let weights = tape.masked_softmax(scores, key_mask, causal)?;
            outs.push(tape.matmul(weights, vh[h], MatLayout::NN)?);
        }
        let o = if outs.len() == 1 {
            outs[0]
        } else {
            tape.concat(&outs)?
        };
        linear_per_element(tape, store, &self.output, o)
    }
}

/// The position-wise feed-forward network FF(u) = W₂·act(W₁·u + b₁) + b₂, applied to every
/// element of `[B, S, width]`.
#[derive(Clone, Debug)]
pub struct FeedForward {
    /// W₁, b₁: width → hidden.
    pub hidden: Linear,
    /// W₂, b₂: hidden → width.
    pub output: Linear,
    /// The activation between them.
    pub activation: UnaryOp,
}

impl FeedForward {
    /// Adds `{name}.hidden` and `{name}.output`.
    pub fn new(
        store: &mut ParamStore,
        name: &str,
        width: usize,
        hidden: usize,
        activation: UnaryOp,
        rng: &mut PhiloxStream,
    ) -> Result<Self> {
        Ok(FeedForward {
            hidden: Linear::new(store, &format!("{name}.hidden"), width, hidden, true, rng)?,
            output: Linear::new(store, &format!("{name}.output"), hidden, width, true, rng)?,
            activation,
        })
    }

    /// FF applied to every element of x `[B, S, width]`.
    pub fn forward(&self, tape: &mut Tape, store: &ParamStore, x: Var) -> Result<Var> {
        let z = linear_per_element(tape, store, &self.hidden, x)?;
        let a = tape.unary(self.activation, z)?;
        linear_per_element(tape, store, &self.output, a)
    }
}

/// The sizes of a [`TransformerBlock`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockShape {
    /// Model width W (a multiple of `heads`).
    pub width: usize,
    /// Attention heads H.
    pub heads: usize,
    /// Hidden width of the feed-forward network.
    pub ff_width: usize,
    /// Activation of the feed-forward network.
    pub activation: UnaryOp,
}

/// A pre-norm transformer block: self-attention and feed-forward, each residual; see the
/// module docs.
#[derive(Clone, Debug)]
pub struct TransformerBlock {
    /// LN₁, before attention.
    pub norm_attention: LayerNorm,
    /// The self-attention.
    pub attention: MultiHeadAttention,
    /// LN₂, before the feed-forward network.
    pub norm_ff: LayerNorm,
    /// The feed-forward network.
    pub feed_forward: FeedForward,
}

impl TransformerBlock {
    /// Adds `{name}.norm_attention`, `{name}.attention.*`, `{name}.norm_ff` and
    /// `{name}.ff.*`.
    pub fn new(
        store: &mut ParamStore,
        name: &str,
        shape: BlockShape,
        rng: &mut PhiloxStream,
    ) -> Result<Self> {
        let BlockShape {
            width,
            heads,
            ff_width,
            activation,
        } = shape;
        Ok(TransformerBlock {
            norm_attention: LayerNorm::new(store, &format!("{name}.norm_attention"), width)?,
            attention: MultiHeadAttention::new(
                store,
                &format!("{name}.attention"),
                width,
                heads,
                rng,
            )?,
            norm_ff: LayerNorm::new(store, &format!("{name}.norm_ff"), width)?,
            feed_forward: FeedForward::new(
                store,
                &format!("{name}.ff"),
                width,
                ff_width,
                activation,
                rng,
            )?,
        })
    }

    /// y = h + FF(LN₂(h)), h = x + MHA(LN₁(x), LN₁(x)) for x `[B, S, W]` with mask `[B, S]`;
    /// `causal` restricts element i to elements j ≤ i.
    pub fn forward(
        &self,
        tape: &mut Tape,
        store: &ParamStore,
        x: Var,
        mask: &Tensor,
        causal: bool,
    ) -> Result<Var> {
        let n = self.norm_attention.forward(tape, store, x)?;
        let a = self.attention.forward(tape, store, n, n, mask, causal)?;
        let h = tape.add(x, a)?;
        let n = self.norm_ff.forward(tape, store, h)?;
        let f = self.feed_forward.forward(tape, store, n)?;
        tape.add(h, f)
    }
}
