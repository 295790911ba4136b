//! Layers on the tape. Each layer owns [`ParamId`](crate::ParamId)s in a
//! [`ParamStore`](crate::ParamStore) under names `"{prefix}.{part}"`, and its `forward`
//! records ops on a [`Tape`](crate::Tape).

pub mod attention;
pub mod coupling;
pub mod deep_set;
pub mod flow;
pub mod layer_norm;
pub mod linear;
pub mod mlp;
pub mod set_encoder;
pub mod set_transformer;
pub mod sets;
pub mod time_embedding;

pub use attention::{BlockShape, FeedForward, MultiHeadAttention, TransformerBlock};
pub use coupling::{Conditioner, CouplingKind, CouplingLayer};
pub use deep_set::{DeepSet, DeepSetConfig};
pub use flow::{ActNorm, ConditionalFlow, FlowConfig, Permutation};
pub use layer_norm::LayerNorm;
pub use linear::Linear;
pub use mlp::{MlpShape, ResidualBlock, ResidualMlp};
pub use set_encoder::{SetEncoder, SetEncoderConfig, SetEncoderKind};
pub use set_transformer::{
    CausalTransformer, PoolingByAttention, SetTransformer, TransformerConfig,
};
pub use time_embedding::{sinusoidal_embedding, sinusoidal_embedding_into};
