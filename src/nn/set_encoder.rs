//! A set encoder chosen by configuration: a [`DeepSet`] or a [`SetTransformer`], both
//! reading a masked batch of sets `[batch, set, features]` (see [`crate::nn::sets`]) and
//! returning one summary row per set. Set NPE summarizes its sets with one; the score
//! network can embed a set of x's iid draws with one.

use serde::{Deserialize, Serialize};

use crate::autograd::{ParamStore, Tape, Var};
use crate::error::{Error, Result};
use crate::nn::{DeepSet, DeepSetConfig, SetTransformer, TransformerConfig};
use crate::rng::PhiloxStream;
use crate::tensor::Tensor;

/// Which kind of set encoder, without its sizes (the command line's `set_transformer`
/// or `deep_set`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetEncoderKind {
    /// [`DeepSet`]: a per-element MLP and mean pooling.
    DeepSet,
    /// [`SetTransformer`]: self-attention between the elements, pooling by attention.
    SetTransformer,
}

impl SetEncoderKind {
    /// The encoder of this kind with its default sizes ([`DeepSetConfig::new`],
    /// [`TransformerConfig::new`]) and hidden width `width`.
    pub fn config(self, in_features: usize, out_features: usize, width: usize) -> SetEncoderConfig {
        match self {
            SetEncoderKind::DeepSet => SetEncoderConfig::DeepSet(DeepSetConfig {
                width,
                ..DeepSetConfig::new(in_features, out_features)
            }),
            SetEncoderKind::SetTransformer => SetEncoderConfig::SetTransformer(TransformerConfig {
                width,
                ..TransformerConfig::new(in_features, out_features)
            }),
        }
    }
}

impl std::str::FromStr for SetEncoderKind {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self> {
        match name {
            "deep_set" => Ok(SetEncoderKind::DeepSet),
            "set_transformer" => Ok(SetEncoderKind::SetTransformer),
            other => Err(Error::invalid(
                "set encoder",
                format!("unknown set encoder {other:?} (known: deep_set, set_transformer)"),
            )),
        }
    }
}

/// Which set encoder summarizes the set, and its sizes.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SetEncoderConfig {
    /// A deep set (masked sum or mean pooling).
    DeepSet(DeepSetConfig),
    /// A set transformer (self-attention, pooling by attention).
    SetTransformer(TransformerConfig),
}

impl SetEncoderConfig {
    /// Features per set element.
    pub fn in_features(&self) -> usize {
        match self {
            SetEncoderConfig::DeepSet(c) => c.in_features,
            SetEncoderConfig::SetTransformer(c) => c.in_features,
        }
    }

    /// Features of the summary.
    pub fn out_features(&self) -> usize {
        match self {
            SetEncoderConfig::DeepSet(c) => c.out_features,
            SetEncoderConfig::SetTransformer(c) => c.out_features,
        }
    }
}

/// A set encoder built from a [`SetEncoderConfig`]. Both variants are boxed: the two
/// layers differ much in size, and a model holds only one.
#[derive(Clone, Debug)]
pub enum SetEncoder {
    /// See [`DeepSet`].
    DeepSet(Box<DeepSet>),
    /// See [`SetTransformer`].
    SetTransformer(Box<SetTransformer>),
}

impl SetEncoder {
    /// Adds the encoder's parameters under `{name}.*` to `store`.
    pub fn new(
        store: &mut ParamStore,
        name: &str,
        config: SetEncoderConfig,
        rng: &mut PhiloxStream,
    ) -> Result<Self> {
        Ok(match config {
            SetEncoderConfig::DeepSet(c) => {
                SetEncoder::DeepSet(Box::new(DeepSet::new(store, name, c, rng)?))
            }
            SetEncoderConfig::SetTransformer(c) => {
                SetEncoder::SetTransformer(Box::new(SetTransformer::new(store, name, c, rng)?))
            }
        })
    }

    /// The summary `[batch, out_features]` of sets x `[batch, set, in_features]` with
    /// mask `[batch, set]`.
    pub fn forward(
        &self,
        tape: &mut Tape,
        store: &ParamStore,
        x: Var,
        mask: &Tensor,
    ) -> Result<Var> {
        match self {
            SetEncoder::DeepSet(e) => e.forward(tape, store, x, mask),
            SetEncoder::SetTransformer(e) => e.forward(tape, store, x, mask),
        }
    }
}

impl SetEncoder {
    /// `[summary, ln N]` `[batch, out_features + 1]` of sets x `[batch, set, in_features]`
    /// with mask `[batch, set]` (on x's device), N each set's cardinality, mapped by
    /// `scale_log_n` in place first. Mean and attention pooling forget N, while a
    /// posterior's width depends on it, so the summary carries it beside.
    pub fn summary_and_log_n(
        &self,
        tape: &mut Tape,
        store: &ParamStore,
        x: Var,
        mask: &Tensor,
        scale_log_n: impl Fn(&mut [f32]),
    ) -> Result<Var> {
        // The encoder checks the batch first, so an empty set is an error, not ln 0.
        let summary = self.forward(tape, store, x, mask)?;
        let set = mask.shape()[1];
        let mut log_n: Vec<f32> = mask
            .to_vec()?
            .chunks_exact(set)
            .map(|m| m.iter().sum::<f32>().ln())
            .collect();
        scale_log_n(&mut log_n);
        let rows = log_n.len();
        let log_n = Tensor::from_vec(log_n, &[rows, 1])?.to_device(mask.device())?;
        let log_n = tape.constant(log_n);
        tape.concat(&[summary, log_n])
    }
}
