//! What the set encoders ([`DeepSet`](crate::nn::DeepSet),
//! [`SetTransformer`](crate::nn::SetTransformer),
//! [`CausalTransformer`](crate::nn::CausalTransformer)) share: the check of a ragged
//! batch of sets, and applying a row-wise layer to every element of every set.
//!
//! A batch of B ragged sets is x `[B, S, F]` with a mask `[B, S]` of 0/1: element s of
//! set b is real when mask[b, s] = 1 and padding when it is 0. Padding may sit anywhere
//! (not only at the end). Every encoder's output for a set depends only on its real
//! elements, so any padding gives the same output (tested in `tests/set_encoders.rs`).
//!
//! Checks (contract 7, errors rather than NaN): x must be `[B, S, in_features]` and the
//! mask `[B, S]`; the mask holds only 0 and 1; every element of x is finite, padding
//! included (a masked NaN would still poison sums, since 0·NaN = NaN: pad with zeros); and
//! every set has at least one real element (an empty set has no posterior to encode).

use crate::autograd::{ParamStore, Tape, Var};
use crate::error::{Error, Result};
use crate::nn::Linear;
use crate::tensor::Tensor;

/// Checks a batch of sets x `[batch, set, feat]` with its mask `[batch, set]` for an
/// encoder that reads `in_features` features per element; `op` names the caller in the
/// error. See the module docs for what is checked.
pub fn check_set_batch(
    op: &'static str,
    x: &Tensor,
    mask: &Tensor,
    in_features: usize,
) -> Result<()> {
    if x.rank() != 3 {
        return Err(Error::shape_because(
            op,
            &[0, 0, in_features],
            x.shape(),
            "sets must be [batch, set, feat]",
        ));
    }
    let (batch, set, feat) = (x.shape()[0], x.shape()[1], x.shape()[2]);
    if feat != in_features {
        let why = format!(
            "each set element must have {in_features} features (the encoder's in_features), got {feat}"
        );
        return Err(Error::shape_because(
            op,
            &[batch, set, in_features],
            x.shape(),
            &why,
        ));
    }
    if mask.shape() != [batch, set] {
        return Err(Error::shape_because(
            op,
            &[batch, set],
            mask.shape(),
            "the mask must be [batch, set] for sets [batch, set, feat]",
        ));
    }
    if batch == 0 || set == 0 {
        return Err(Error::invalid(
            op,
            format!(
                "needs at least one set of at least one element, got x {:?}",
                x.shape()
            ),
        ));
    }
    if x.device() != mask.device() {
        return Err(Error::DeviceMismatch {
            op,
            lhs: x.device().to_string(),
            rhs: mask.device().to_string(),
        });
    }
    let m = mask.to_vec()?;
    if let Some(i) = m.iter().position(|&v| v != 0.0 && v != 1.0) {
        return Err(Error::invalid(
            op,
            format!(
                "mask[{}, {}] = {}: mask entries must be 0 (padding) or 1 (element)",
                i / set,
                i % set,
                m[i]
            ),
        ));
    }
    if let Some(b) = (0..batch).find(|&b| m[b * set..(b + 1) * set].iter().all(|&v| v == 0.0)) {
        return Err(Error::invalid(
            op,
            format!(
                "set {b} is empty (its mask is all zero): every set needs at least one element"
            ),
        ));
    }
    let xs = x.to_vec()?;
    if let Some(i) = xs.iter().position(|v| !v.is_finite()) {
        let (b, s, f) = (i / (set * feat), (i / feat) % set, i % feat);
        let what = if m[b * set + s] == 0.0 {
            "a padded element (padding must be finite too: pad with zeros)"
        } else {
            "a set element"
        };
        return Err(Error::invalid(
            op,
            format!("x[{b}, {s}, {f}] = {} in {what}", xs[i]),
        ));
    }
    Ok(())
}

/// Applies `layer` (a map on rows `[rows, in]`) to every element of x `[batch, set, in]`,
/// giving `[batch, set, out]`.
pub fn per_element(
    tape: &mut Tape,
    x: Var,
    layer: impl FnOnce(&mut Tape, Var) -> Result<Var>,
) -> Result<Var> {
    let shape = tape.shape(x).to_vec();
    if shape.len() != 3 {
        return Err(Error::shape_because(
            "per_element",
            &[0, 0, 0],
            &shape,
            "expects [batch, set, feat]",
        ));
    }
    let rows = tape.reshape(x, &[shape[0] * shape[1], shape[2]])?;
    let y = layer(tape, rows)?;
    let out = tape.value(y).cols();
    tape.reshape(y, &[shape[0], shape[1], out])
}

/// A [`Linear`] layer applied to every element of x `[batch, set, in]`.
pub fn linear_per_element(
    tape: &mut Tape,
    store: &ParamStore,
    linear: &Linear,
    x: Var,
) -> Result<Var> {
    per_element(tape, x, |tape, rows| linear.forward(tape, store, rows))
}
