//! A deep set (Zaheer et al. 2017), the set encoder of the hierarchical SBI paper
//! (`hierarchical-sbi-event-ensembles.txt`, section 2.2 and figure 1).
//!
//! For a set {x_1, …, x_N} given as x `[B, S, F]` with a 0/1 mask m `[B, S]`:
//!
//! ```text
//! e_s   = φ(x_s)                              per-element encoder, a ResidualMlp F → E
//! pool  = Σ_s m_s·e_s            (sum)  or  Σ_s m_s·e_s / Σ_s m_s   (mean)
//! y     = ρ(pool)                             decoder, a ResidualMlp E → out
//! ```
//!
//! Pooling is a masked sum or mean ([`Tape::masked_set_reduce`]), so y is invariant under
//! permutations of the real elements and independent of the padding (its content and
//! its position). Mean pooling forgets N; sum pooling keeps it (useful when the posterior
//! width must shrink as 1/√N), at the price of a summary that grows with N. Inputs are
//! checked by [`check_set_batch`]: an all-zero mask (empty set), a feature count other
//! than `in_features`, a non-0/1 mask or a non-finite element is an error.

use crate::autograd::{ParamStore, Tape, Var};
use crate::backend::{Reduction, UnaryOp};
use crate::error::Result;
use crate::nn::sets::{check_set_batch, per_element};
use crate::nn::{MlpShape, ResidualMlp};
use crate::rng::PhiloxStream;
use crate::tensor::Tensor;

/// The sizes of a [`DeepSet`] (serializable: it is part of a model's config).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeepSetConfig {
    /// Features per set element (F).
    pub in_features: usize,
    /// Hidden width of φ and ρ.
    pub width: usize,
    /// Hidden layers of φ (at least 1).
    pub phi_layers: usize,
    /// Width of the per-element embedding e_s and of the pooled summary (E).
    pub embedding: usize,
    /// Hidden layers of ρ (at least 1).
    pub rho_layers: usize,
    /// Output features.
    pub out_features: usize,
    /// Masked sum or mean over the set (`"sum"` or `"mean"` in JSON).
    #[serde(with = "pooling_name")]
    pub pooling: Reduction,
    /// Activation inside φ and ρ.
    pub activation: UnaryOp,
}

impl DeepSetConfig {
    /// Width 64, embedding 64, two hidden layers in φ and ρ, mean pooling, GELU (close to
    /// the paper's appendix B.2 network, scaled down).
    pub fn new(in_features: usize, out_features: usize) -> Self {
        DeepSetConfig {
            in_features,
            width: 64,
            phi_layers: 2,
            embedding: 64,
            rho_layers: 2,
            out_features,
            pooling: Reduction::Mean,
            activation: UnaryOp::Gelu,
        }
    }
}

/// [`Reduction`] as `"sum"` or `"mean"`: the backend's op enum carries no serde, and a
/// model file should name the pooling rather than depend on the enum's layout.
mod pooling_name {
    use crate::backend::Reduction;

    /// Writes the pooling's name.
    pub fn serialize<S: serde::Serializer>(
        pooling: &Reduction,
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(match pooling {
            Reduction::Sum => "sum",
            Reduction::Mean => "mean",
        })
    }

    /// Reads a pooling name; anything but "sum" or "mean" is an error.
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<Reduction, D::Error> {
        let name = <String as serde::Deserialize>::deserialize(d)?;
        match name.as_str() {
            "sum" => Ok(Reduction::Sum),
            "mean" => Ok(Reduction::Mean),
            other => Err(serde::de::Error::unknown_variant(other, &["sum", "mean"])),
        }
    }
}

/// A deep set: per-element MLP φ, masked pooling, decoder MLP ρ (see the module docs).
#[derive(Clone, Debug)]
pub struct DeepSet {
    /// The per-element encoder φ: in_features → embedding.
    pub phi: ResidualMlp,
    /// The decoder ρ: embedding → out_features.
    pub rho: ResidualMlp,
    /// The sizes it was built with.
    pub config: DeepSetConfig,
}

impl DeepSet {
    /// Adds `{name}.phi.*` and `{name}.rho.*` to `store`.
    pub fn new(
        store: &mut ParamStore,
        name: &str,
        config: DeepSetConfig,
        rng: &mut PhiloxStream,
    ) -> Result<Self> {
        let phi = ResidualMlp::new(
            store,
            &format!("{name}.phi"),
            MlpShape {
                in_features: config.in_features,
                width: config.width,
                out_features: config.embedding,
                hidden_layers: config.phi_layers,
                activation: config.activation,
            },
            rng,
        )?;
        let rho = ResidualMlp::new(
            store,
            &format!("{name}.rho"),
            MlpShape {
                in_features: config.embedding,
                width: config.width,
                out_features: config.out_features,
                hidden_layers: config.rho_layers,
                activation: config.activation,
            },
            rng,
        )?;
        Ok(DeepSet { phi, rho, config })
    }

    /// The pooled summary `[batch, embedding]` of sets x `[batch, set, in_features]` with
    /// mask `[batch, set]`.
    pub fn summary(
        &self,
        tape: &mut Tape,
        store: &ParamStore,
        x: Var,
        mask: &Tensor,
    ) -> Result<Var> {
        check_set_batch(
            "DeepSet::forward",
            tape.value(x),
            mask,
            self.config.in_features,
        )?;
        let e = per_element(tape, x, |tape, rows| self.phi.forward(tape, store, rows))?;
        tape.masked_set_reduce(e, mask, self.config.pooling)
    }

    /// ρ(pool(φ(x))): `[batch, out_features]` for sets x `[batch, set, in_features]` with
    /// mask `[batch, set]`.
    pub fn forward(
        &self,
        tape: &mut Tape,
        store: &ParamStore,
        x: Var,
        mask: &Tensor,
    ) -> Result<Var> {
        let pooled = self.summary(tape, store, x, mask)?;
        self.rho.forward(tape, store, pooled)
    }
}
