//! The estimators: networks, their losses and training, and what they need to sample.

pub mod gaussian_base;
pub mod score;
pub mod score_model;

pub use score_model::{
    Composition, SamplingOptions, ScoreModel, ScoreModelConfig, ScoreTrainOptions, Standardization,
};
pub mod ensemble;
pub mod flow_model;
pub mod nle;
pub mod npe;
pub mod nre;
pub mod pairs;
pub mod set_npe;
