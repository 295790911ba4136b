//! Layers on the tape. Each layer owns [`ParamId`](crate::ParamId)s in a
//! [`ParamStore`](crate::ParamStore) under names `"{prefix}.{part}"`, and its `forward`
//! records ops on a [`Tape`](crate::Tape).

pub mod layer_norm;
pub mod linear;
pub mod mlp;
pub mod time_embedding;

pub use layer_norm::LayerNorm;
pub use linear::Linear;
pub use mlp::{MlpShape, ResidualBlock, ResidualMlp};
pub use time_embedding::{sinusoidal_embedding, sinusoidal_embedding_into};
