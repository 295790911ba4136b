//! Two attention-based set encoders over ragged sets x `[B, S, F]` with a 0/1 mask
//! `[B, S]` (built from [`TransformerBlock`]s, see [`crate::nn::attention`]).
//!
//! **Set transformer** (Lee et al. 2019), permutation invariant:
//!
//! ```text
//! z⁰   = φ(x_s)                                  per-element embedding, ResidualMlp F → W
//! zˡ   = Blockˡ(zˡ⁻¹, mask)                       L self-attention blocks (no causal mask)
//! PMA:  h = S + MHA(S, LN_k(z^L)),  p = h + FF(LN_f(h))      k learned seeds S `[k, W]`
//! y    = ρ(flatten(LN_o(p)))                     decoder, a ResidualMlp k·W → out
//! ```
//!
//! The seeds attend only to real elements, so y is independent of the padding; self-
//! attention is permutation equivariant and PMA permutation invariant, so y is invariant
//! under permutations of the real elements.
//!
//! **Causal transformer** (the hierarchical SBI paper's decoder-only transformer,
//! section 2.2), one output per prefix:
//!
//! ```text
//! z⁰ = φ(x_s),  zˡ = Blockˡ(zˡ⁻¹, mask, causal),  y_s = ρ(LN_o(z^L_s))·m_s
//! ```
//!
//! Element i attends to real elements j ≤ i only, so y_i is a function of the real
//! elements among x_1..x_i: a posterior embedding after each event. There is no positional
//! encoding: order enters only through the causal mask, so padding anywhere leaves the
//! outputs at real positions unchanged. (With two or more blocks y_i still depends on the
//! order of x_1..x_i, because each earlier element's representation saw only its own
//! prefix; the training loss over all prefixes is what asks for order-free posteriors.)
//! Outputs at padded positions are set to 0.
//!
//! Both encoders check their input with [`check_set_batch`]: an empty set (all-zero mask),
//! a feature count other than `in_features`, a non-0/1 mask or a non-finite element is an
//! error.

use crate::autograd::{ParamId, ParamStore, Tape, Var};
use crate::backend::UnaryOp;
use crate::error::{Error, Result};
use crate::nn::attention::{BlockShape, FeedForward, MultiHeadAttention, TransformerBlock};
use crate::nn::sets::{check_set_batch, per_element};
use crate::nn::{LayerNorm, MlpShape, ResidualMlp};
use crate::rng::PhiloxStream;
use crate::tensor::Tensor;

/// The sizes of a [`SetTransformer`] or [`CausalTransformer`] (serializable: it is part
/// of a model's config).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TransformerConfig {
    /// Features per set element (F).
    pub in_features: usize,
    /// Model width W (a multiple of `heads`).
    pub width: usize,
    /// Attention heads.
    pub heads: usize,
    /// Hidden width of every feed-forward network.
    pub ff_width: usize,
    /// Self-attention blocks L.
    pub blocks: usize,
    /// Hidden layers of the per-element embedding φ (at least 1).
    pub embed_layers: usize,
    /// Hidden layers of the decoder ρ (at least 1).
    pub decoder_layers: usize,
    /// Learned seed vectors of the pooling (set transformer only; at least 1).
    pub seeds: usize,
    /// Output features.
    pub out_features: usize,
    /// Activation of φ, ρ and the feed-forward networks.
    pub activation: UnaryOp,
}

impl TransformerConfig {
    /// Width 64, 4 heads, feed-forward width 128, 2 blocks, one hidden layer in φ and ρ,
    /// one seed, GELU.
    pub fn new(in_features: usize, out_features: usize) -> Self {
        TransformerConfig {
            in_features,
            width: 64,
            heads: 4,
            ff_width: 128,
            blocks: 2,
            embed_layers: 1,
            decoder_layers: 1,
            seeds: 1,
            out_features,
            activation: UnaryOp::Gelu,
        }
    }

    fn block_shape(&self) -> BlockShape {
        BlockShape {
            width: self.width,
            heads: self.heads,
            ff_width: self.ff_width,
            activation: self.activation,
        }
    }
}

/// The embedding φ and the L blocks both encoders share.
fn embed_and_blocks(
    store: &mut ParamStore,
    name: &str,
    config: &TransformerConfig,
    rng: &mut PhiloxStream,
) -> Result<(ResidualMlp, Vec<TransformerBlock>)> {
    let embed = ResidualMlp::new(
        store,
        &format!("{name}.embed"),
        MlpShape {
            in_features: config.in_features,
            width: config.width,
            out_features: config.width,
            hidden_layers: config.embed_layers,
            activation: config.activation,
        },
        rng,
    )?;
    let blocks = (0..config.blocks)
        .map(|i| {
            TransformerBlock::new(
                store,
                &format!("{name}.block{i}"),
                config.block_shape(),
                rng,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((embed, blocks))
}

/// Runs φ and the blocks on a checked batch of sets.
#[allow(clippy::too_many_arguments)]
fn run_blocks(
    tape: &mut Tape,
    store: &ParamStore,
    embed: &ResidualMlp,
    blocks: &[TransformerBlock],
    x: Var,
    mask: &Tensor,
    causal: bool,
) -> Result<Var> {
    let mut z = per_element(tape, x, |tape, rows| embed.forward(tape, store, rows))?;
    for block in blocks {
        z = block.forward(tape, store, z, mask, causal)?;
    }
    Ok(z)
}

/// Pooling by multi-head attention (PMA, Lee et al. 2019) in pre-norm form: k learned
/// seeds S attend to the (normalized) set elements; h = S + MHA(S, LN_k(z)),
/// p = h + FF(LN_f(h)), `[B, k, W]`.
#[derive(Clone, Debug)]
pub struct PoolingByAttention {
    /// The seeds S, `[k, W]`, initialized from U(−1/√W, 1/√W) like a linear layer's weights.
    pub seeds: ParamId,
    /// LN_k, applied to the elements before they serve as keys and values.
    pub norm_keys: LayerNorm,
    /// The seeds' attention over the elements.
    pub attention: MultiHeadAttention,
    /// LN_f, before the feed-forward network.
    pub norm_ff: LayerNorm,
    /// The feed-forward network.
    pub feed_forward: FeedForward,
    /// Number of seeds k.
    pub num_seeds: usize,
}

impl PoolingByAttention {
    /// Adds `{name}.seeds` (U(−1/√W, 1/√W)), `{name}.norm_keys`, `{name}.attention.*`,
    /// `{name}.norm_ff` and `{name}.ff.*`.
    pub fn new(
        store: &mut ParamStore,
        name: &str,
        seeds: usize,
        shape: BlockShape,
        rng: &mut PhiloxStream,
    ) -> Result<Self> {
        if seeds == 0 {
            return Err(Error::invalid(
                "PoolingByAttention::new",
                format!("{name}: needs at least one seed"),
            ));
        }
        let bound = 1.0 / (shape.width as f32).sqrt();
        let mut s = vec![0.0; seeds * shape.width];
        rng.fill_uniform(-bound, bound, &mut s);
        let seeds_id = store.add(
            format!("{name}.seeds"),
            Tensor::from_vec(s, &[seeds, shape.width])?,
        )?;
        Ok(PoolingByAttention {
            seeds: seeds_id,
            norm_keys: LayerNorm::new(store, &format!("{name}.norm_keys"), shape.width)?,
            attention: MultiHeadAttention::new(
                store,
                &format!("{name}.attention"),
                shape.width,
                shape.heads,
                rng,
            )?,
            norm_ff: LayerNorm::new(store, &format!("{name}.norm_ff"), shape.width)?,
            feed_forward: FeedForward::new(
                store,
                &format!("{name}.ff"),
                shape.width,
                shape.ff_width,
                shape.activation,
                rng,
            )?,
            num_seeds: seeds,
        })
    }

    /// Pools z `[B, S, W]` with mask `[B, S]` into `[B, k, W]`.
    pub fn forward(
        &self,
        tape: &mut Tape,
        store: &ParamStore,
        z: Var,
        mask: &Tensor,
    ) -> Result<Var> {
        let batch = tape.shape(z)[0];
        let width = self.attention.width();
        let seeds = tape.param(store, self.seeds);
        let seeds = tape.reshape(seeds, &[1, self.num_seeds, width])?;
        // One copy of the seeds per set; the gradient sums over the copies.
        let seeds = tape.gather_rows(seeds, &vec![0; batch])?;
        let keys = self.norm_keys.forward(tape, store, z)?;
        let a = self
            .attention
            .forward(tape, store, seeds, keys, mask, false)?;
        let h = tape.add(seeds, a)?;
        let n = self.norm_ff.forward(tape, store, h)?;
        let f = self.feed_forward.forward(tape, store, n)?;
        tape.add(h, f)
    }
}

/// A set transformer: per-element embedding, self-attention blocks, pooling by attention
/// and a decoder (see the module docs). Output `[B, out_features]`.
#[derive(Clone, Debug)]
pub struct SetTransformer {
    /// φ: in_features → W per element.
    pub embed: ResidualMlp,
    /// The self-attention blocks.
    pub blocks: Vec<TransformerBlock>,
    /// The pooling.
    pub pool: PoolingByAttention,
    /// LN_o, on each pooled seed.
    pub norm_out: LayerNorm,
    /// ρ: k·W → out_features.
    pub decoder: ResidualMlp,
    /// The sizes it was built with.
    pub config: TransformerConfig,
}

impl SetTransformer {
    /// Adds `{name}.embed.*`, `{name}.block{i}.*`, `{name}.pool.*`, `{name}.norm_out` and
    /// `{name}.decoder.*` to `store`.
    pub fn new(
        store: &mut ParamStore,
        name: &str,
        config: TransformerConfig,
        rng: &mut PhiloxStream,
    ) -> Result<Self> {
        let (embed, blocks) = embed_and_blocks(store, name, &config, rng)?;
        let pool = PoolingByAttention::new(
            store,
            &format!("{name}.pool"),
            config.seeds,
            config.block_shape(),
            rng,
        )?;
        let norm_out = LayerNorm::new(store, &format!("{name}.norm_out"), config.width)?;
        let decoder = ResidualMlp::new(
            store,
            &format!("{name}.decoder"),
            MlpShape {
                in_features: config.seeds * config.width,
                width: config.width,
                out_features: config.out_features,
                hidden_layers: config.decoder_layers,
                activation: config.activation,
            },
            rng,
        )?;
        Ok(SetTransformer {
            embed,
            blocks,
            pool,
            norm_out,
            decoder,
            config,
        })
    }

    /// `[B, out_features]` for sets x `[B, S, in_features]` with mask `[B, S]`.
    pub fn forward(
        &self,
        tape: &mut Tape,
        store: &ParamStore,
        x: Var,
        mask: &Tensor,
    ) -> Result<Var> {
        let c = &self.config;
        check_set_batch(
            "SetTransformer::forward",
            tape.value(x),
            mask,
            c.in_features,
        )?;
        let batch = tape.shape(x)[0];
        let z = run_blocks(tape, store, &self.embed, &self.blocks, x, mask, false)?;
        let p = self.pool.forward(tape, store, z, mask)?;
        let p = self.norm_out.forward(tape, store, p)?;
        let flat = tape.reshape(p, &[batch, c.seeds * c.width])?;
        self.decoder.forward(tape, store, flat)
    }
}

/// A causal transformer: one output per prefix of the set (see the module docs). Output
/// `[B, S, out_features]`, zero at padded positions.
#[derive(Clone, Debug)]
pub struct CausalTransformer {
    /// φ: in_features → W per element.
    pub embed: ResidualMlp,
    /// The causal self-attention blocks.
    pub blocks: Vec<TransformerBlock>,
    /// LN_o, after the last block.
    pub norm_out: LayerNorm,
    /// ρ: W → out_features per element.
    pub decoder: ResidualMlp,
    /// The sizes it was built with (`seeds` is unused).
    pub config: TransformerConfig,
}

impl CausalTransformer {
    /// Adds `{name}.embed.*`, `{name}.block{i}.*`, `{name}.norm_out` and
    /// `{name}.decoder.*` to `store`.
    pub fn new(
        store: &mut ParamStore,
        name: &str,
        config: TransformerConfig,
        rng: &mut PhiloxStream,
    ) -> Result<Self> {
        let (embed, blocks) = embed_and_blocks(store, name, &config, rng)?;
        let norm_out = LayerNorm::new(store, &format!("{name}.norm_out"), config.width)?;
        let decoder = ResidualMlp::new(
            store,
            &format!("{name}.decoder"),
            MlpShape {
                in_features: config.width,
                width: config.width,
                out_features: config.out_features,
                hidden_layers: config.decoder_layers,
                activation: config.activation,
            },
            rng,
        )?;
        Ok(CausalTransformer {
            embed,
            blocks,
            norm_out,
            decoder,
            config,
        })
    }

    /// `[B, S, out_features]` for sets x `[B, S, in_features]` with mask `[B, S]`: output s
    /// encodes the real elements among 1..=s; 0 at padded positions.
    pub fn forward(
        &self,
        tape: &mut Tape,
        store: &ParamStore,
        x: Var,
        mask: &Tensor,
    ) -> Result<Var> {
        let c = &self.config;
        check_set_batch(
            "CausalTransformer::forward",
            tape.value(x),
            mask,
            c.in_features,
        )?;
        let z = run_blocks(tape, store, &self.embed, &self.blocks, x, mask, true)?;
        let z = self.norm_out.forward(tape, store, z)?;
        let y = per_element(tape, z, |tape, rows| {
            self.decoder.forward(tape, store, rows)
        })?;
        // Zero the padded positions: the mask repeated over the output features.
        let out = c.out_features;
        let m = mask.to_vec()?;
        let expanded: Vec<f32> = m
            .iter()
            .flat_map(|&v| std::iter::repeat_n(v, out))
            .collect();
        let shape = tape.shape(y).to_vec();
        let keep = Tensor::from_vec(expanded, &shape)?.to_device(mask.device())?;
        let keep = tape.constant(keep);
        tape.mul(y, keep)
    }
}
