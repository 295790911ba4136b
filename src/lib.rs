//! # amortize
//!
//! Amortized simulation-based inference on hand-written kernels: a small autodiff tape
//! ([`autograd`]) over our own ops ([`ops`], run by a [`backend`]: the rayon CPU
//! reference, and CUDA and WGSL backends that must match it), the layers and optimizers
//! that train neural estimators on simulations, and one counter-based RNG ([`rng`]) shared
//! by every backend so that GPU samplers can be checked draw for draw against the CPU.
//!
//! The architecture and the contracts are in `DESIGN.md` of the project's shared folder;
//! each module's docs say where it departs from it and why.

pub mod autograd;
pub mod backend;
pub mod devices;
pub mod diagnostics;
pub mod error;
pub mod estimators;
pub mod io;
pub mod nn;
pub mod ops;
pub mod optim;
pub mod priors;
pub mod rng;
pub mod samplers;
pub mod tasks;
pub mod tensor;
pub mod train;

pub use autograd::{Gradients, ParamGrads, ParamId, ParamStore, Tape, Var};
pub use error::{Error, Result};
pub use tensor::{Device, Tensor};
