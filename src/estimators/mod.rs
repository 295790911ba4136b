//! The estimators: networks, their losses and training, and what they need to sample.

pub mod score;
