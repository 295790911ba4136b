//! The crate's one error type: every failure says what was wrong and where (contract 7).

use std::path::PathBuf;

/// Everything that can go wrong in `amortize`. Ops never panic on bad input: they return
/// one of these, naming the op and the shapes involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Two tensors (or a tensor and an expectation) have incompatible shapes.
    #[error("{op}: shape mismatch: {lhs:?} vs {rhs:?}{detail}")]
    Shape {
        /// The op that rejected its inputs.
        op: &'static str,
        /// Shape of the first operand (or the expected shape).
        lhs: Vec<usize>,
        /// Shape of the second operand (or the shape received).
        rhs: Vec<usize>,
        /// Extra context, empty or starting with ": ".
        detail: String,
    },
    /// An argument that is not about shapes is out of range or inconsistent.
    #[error("{op}: {msg}")]
    Invalid {
        /// Where the argument was rejected.
        op: &'static str,
        /// What was wrong with it.
        msg: String,
    },
    /// The requested device cannot be used (no driver, no such index, backend not built).
    #[error("device {device}: {msg}")]
    Device {
        /// The device as the user named it, e.g. `cuda:0`.
        device: String,
        /// Why it cannot be used.
        msg: String,
    },
    /// Tensors given to one op live on different devices.
    #[error("{op}: operands on different devices ({lhs} and {rhs}); move them explicitly with Tensor::to_device")]
    DeviceMismatch {
        /// The op that received them.
        op: &'static str,
        /// Device of the first operand.
        lhs: String,
        /// Device of the second operand.
        rhs: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Shorthand for results in this crate.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A shape error naming the op and both shapes.
    pub fn shape(op: &'static str, lhs: &[usize], rhs: &[usize]) -> Self {
        Error::Shape {
            op,
            lhs: lhs.to_vec(),
            rhs: rhs.to_vec(),
            detail: String::new(),
        }
    }

    /// A shape error with an explanation of what was expected.
    pub fn shape_because(op: &'static str, lhs: &[usize], rhs: &[usize], why: &str) -> Self {
        Error::Shape {
            op,
            lhs: lhs.to_vec(),
            rhs: rhs.to_vec(),
            detail: format!(": {why}"),
        }
    }

    /// An invalid-argument error.
    pub fn invalid(op: &'static str, msg: impl Into<String>) -> Self {
        Error::Invalid {
            op,
            msg: msg.into(),
        }
    }
}
