//! Diagnostics that compare two sample sets: the classifier two-sample test ([`mod@c2st`],
//! as sbibm computes it) and the squared maximum mean discrepancy ([`mod@mmd`], Gaussian
//! kernel, median-heuristic bandwidth). Both take rows of `dim` values (`[n, dim]`
//! row-major) and validate them (whole rows, finite values, enough rows). [`mod@mcmc`] has
//! the convergence diagnostics of parallel MCMC chains (split R̂, effective sample size),
//! [`mod@coverage`] the calibration of posteriors by the coverage of central intervals.

pub mod c2st;
pub mod mmd;

pub use c2st::{c2st, c2st_with, C2stConfig, C2stReport};
pub use mmd::{median_heuristic, mmd2, mmd2_with, MmdConfig, MmdReport};
pub mod coverage;
pub mod mcmc;
pub use coverage::Coverage;
pub use mcmc::{chain_diagnostics, ChainDiagnostics};
