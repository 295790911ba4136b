//! What the set encoders ([`DeepSet`](crate::nn::DeepSet),
//! [`SetTransformer`](crate::nn::SetTransformer),
//! [`CausalTransformer`](crate::nn::CausalTransformer)) share: the check of a ragged
//! batch of sets, applying a row-wise layer to every element of every set, and
//! [`RaggedSets`], a collection of sets of varying size that pads any selection of them
//! into such a batch.
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

/// Sets of varying cardinality stored without padding: every element of every set, row
/// by row (`features` values per element), and where each set starts. Training data of
/// the set estimators; [`RaggedSets::padded`] turns a minibatch into x `[B, S, F]` and
/// its mask, padding only up to the largest set of that minibatch.
#[derive(Clone, Debug, PartialEq)]
pub struct RaggedSets {
    features: usize,
    values: Vec<f32>,
    /// `offsets[i]..offsets[i + 1]` are the elements of set i; `offsets[0] = 0`.
    offsets: Vec<usize>,
}

impl RaggedSets {
    /// No sets yet, of elements with `features` values each (at least 1).
    pub fn new(features: usize) -> Result<Self> {
        if features == 0 {
            return Err(Error::invalid(
                "RaggedSets::new",
                "set elements need at least one feature",
            ));
        }
        Ok(RaggedSets {
            features,
            values: Vec::new(),
            offsets: vec![0],
        })
    }

    /// Appends one set given as its elements' rows `[n, features]`. A set of no elements,
    /// a length that is not whole rows or a non-finite value is an error.
    pub fn push(&mut self, set: &[f32]) -> Result<()> {
        let op = "RaggedSets::push";
        let f = self.features;
        if set.is_empty() || set.len() % f != 0 {
            return Err(Error::invalid(
                op,
                format!(
                    "set {} has {} values: a set is n >= 1 elements of {f} features",
                    self.len(),
                    set.len()
                ),
            ));
        }
        if let Some(i) = set.iter().position(|v| !v.is_finite()) {
            return Err(Error::invalid(
                op,
                format!(
                    "set {}, element {}, feature {} is {}",
                    self.len(),
                    i / f,
                    i % f,
                    set[i]
                ),
            ));
        }
        self.values.extend_from_slice(set);
        self.offsets.push(self.values.len() / f);
        Ok(())
    }

    /// Number of sets.
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Whether there are no sets.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Features per element.
    pub fn features(&self) -> usize {
        self.features
    }

    /// The elements of set `i`, `[cardinality(i), features]`.
    pub fn set(&self, i: usize) -> &[f32] {
        &self.values[self.offsets[i] * self.features..self.offsets[i + 1] * self.features]
    }

    /// Number of elements of set `i`.
    pub fn cardinality(&self, i: usize) -> usize {
        self.offsets[i + 1] - self.offsets[i]
    }

    /// Every element of every set, `[total elements, features]`.
    pub fn elements(&self) -> &[f32] {
        &self.values
    }

    /// Every element of every set, to transform in place (e.g. to standardize).
    pub fn elements_mut(&mut self) -> &mut [f32] {
        &mut self.values
    }

    /// Σ of `loss(tape, group)` over the sets `batch` taken in order of cardinality, in
    /// groups of `group_size`: each group pads only to its own largest set, where the
    /// whole batch padded to its largest would, with sizes spread over 1..N, run an
    /// encoder on about twice the real elements. A loss that is a mean over sets weighs
    /// each group by its share of the batch.
    pub fn sum_over_size_groups(
        &self,
        tape: &mut Tape,
        batch: &[u32],
        group_size: usize,
        mut loss: impl FnMut(&mut Tape, &[u32]) -> Result<Var>,
    ) -> Result<Var> {
        let mut by_size = batch.to_vec();
        by_size.sort_by_key(|&i| self.cardinality(i as usize));
        let mut total: Option<Var> = None;
        for group in by_size.chunks(group_size.max(1)) {
            let part = loss(tape, group)?;
            total = Some(match total {
                Some(sum) => tape.add(sum, part)?,
                None => part,
            });
        }
        total.ok_or_else(|| Error::invalid("RaggedSets::sum_over_size_groups", "an empty batch"))
    }

    /// The sets `indices` as one batch: x `[B, S, features]` with S the largest of their
    /// cardinalities, each set's elements first and zeros after, and the mask `[B, S]`.
    pub fn padded(&self, indices: &[u32]) -> Result<(Tensor, Tensor)> {
        let op = "RaggedSets::padded";
        if indices.is_empty() {
            return Err(Error::invalid(op, "needs at least one set"));
        }
        if let Some(&i) = indices.iter().find(|&&i| i as usize >= self.len()) {
            return Err(Error::invalid(
                op,
                format!("set index {i} out of range for {} sets", self.len()),
            ));
        }
        let f = self.features;
        let size = indices
            .iter()
            .map(|&i| self.cardinality(i as usize))
            .max()
            .unwrap_or(0);
        let mut x = vec![0.0f32; indices.len() * size * f];
        let mut mask = vec![0.0f32; indices.len() * size];
        for (b, &i) in indices.iter().enumerate() {
            let set = self.set(i as usize);
            x[b * size * f..b * size * f + set.len()].copy_from_slice(set);
            mask[b * size..b * size + set.len() / f].fill(1.0);
        }
        Ok((
            Tensor::from_vec(x, &[indices.len(), size, f])?,
            Tensor::from_vec(mask, &[indices.len(), size])?,
        ))
    }
}
