//! The score network prepared for sampling: weights as plain row-major slices, no tape,
//! and everything that does not depend on θ computed once per call (contract 4).
//!
//! The head's first layer acts on `[e(θ), e(x_j), e(t)]`, so it splits into
//! `W_θ·e(θ) + W_x·e(x_j) + W_t·e(t) + b`. Per call we precompute `W_x·e(x_j) + b` for
//! every observation and `W_t·e(t_k)` for every level. And since e(θ) is the θ-MLP's
//! output layer (linear, no activation) we fold it into the head:
//! `W_θ·(W_o·h + b_o) = (W_θ·W_o)·h + W_θ·b_o`, one `width × width` product per sample
//! and step instead of two. Per step the θ path then runs once per sample, and only the
//! head's residual blocks and output layer run once per (sample, observation).

use crate::autograd::{ParamStore, Tape};
use crate::backend::cpu;
use crate::backend::{MatLayout, MatmulDims};
use crate::error::{Error, Result};
use crate::estimators::gaussian_base::GaussianBase;
use crate::estimators::score::{
    NoiseSchedule, ScoreNet, ScoreNetConfig, XBatch, XPath, SCORE_ACTIVATION,
};
use crate::nn::{sinusoidal_embedding_into, Linear, ResidualMlp};
use crate::tensor::Tensor;

/// y = x·Wᵀ + b on slices.
#[derive(Clone, Debug)]
pub struct Dense {
    /// `[out, in]`, row-major.
    pub weight: Vec<f32>,
    /// `[out]`.
    pub bias: Vec<f32>,
    /// Input width.
    pub in_features: usize,
    /// Output width.
    pub out_features: usize,
}

impl Dense {
    fn from_linear(store: &ParamStore, layer: &Linear) -> Result<Self> {
        let weight = store.get(layer.weight).to_vec()?;
        let bias = match layer.bias {
            Some(b) => store.get(b).to_vec()?,
            None => vec![0.0; layer.out_features],
        };
        Ok(Dense {
            weight,
            bias,
            in_features: layer.in_features,
            out_features: layer.out_features,
        })
    }

    /// `y[rows, out] = x[rows, in]·Wᵀ + b`.
    pub fn apply(&self, x: &[f32], rows: usize, y: &mut [f32]) {
        let dims = MatmulDims {
            batch: 1,
            m: rows,
            k: self.in_features,
            n: self.out_features,
        };
        cpu::matmul(x, &self.weight, y, MatLayout::NT, dims);
        for row in y.chunks_exact_mut(self.out_features) {
            for (v, b) in row.iter_mut().zip(&self.bias) {
                *v += b;
            }
        }
    }
}

/// How K layers of equal shape become one layer of the ensemble network
/// ([`ScorePlan::average`]), whose hidden state is the members' hidden states side by side.
#[derive(Clone, Copy)]
enum Merge {
    /// Member inputs side by side → member outputs side by side: block-diagonal.
    BlockDiagonal,
    /// One shared input → member outputs side by side: the weights stacked by rows.
    SharedInput,
    /// Member inputs side by side → the mean of the members' outputs.
    MeanOutput,
}

impl Dense {
    fn merge(layers: &[&Dense], how: Merge) -> Dense {
        let (k, first) = (layers.len(), layers[0]);
        let (inp, out) = (first.in_features, first.out_features);
        let (in_features, out_features) = match how {
            Merge::BlockDiagonal => (k * inp, k * out),
            Merge::SharedInput => (inp, k * out),
            Merge::MeanOutput => (k * inp, out),
        };
        let mut weight = vec![0.0f32; in_features * out_features];
        let mut bias = vec![0.0f32; out_features];
        for (m, layer) in layers.iter().enumerate() {
            let (row0, col0) = match how {
                Merge::BlockDiagonal => (m * out, m * inp),
                Merge::SharedInput => (m * out, 0),
                Merge::MeanOutput => (0, m * inp),
            };
            let scale = match how {
                Merge::MeanOutput => 1.0 / k as f32,
                _ => 1.0,
            };
            for (r, w_row) in layer.weight.chunks_exact(inp).enumerate() {
                let dst = (row0 + r) * in_features + col0;
                for (d, &w) in weight[dst..dst + inp].iter_mut().zip(w_row) {
                    *d = scale * w;
                }
                bias[row0 + r] += scale * layer.bias[r];
            }
        }
        Dense {
            weight,
            bias,
            in_features,
            out_features,
        }
    }
}

/// [`Dense::merge`] of the `pick`ed layer of every member.
fn merge_each<'a, T: 'a>(members: &'a [T], how: Merge, pick: impl Fn(&'a T) -> &'a Dense) -> Dense {
    let layers: Vec<&Dense> = members.iter().map(pick).collect();
    Dense::merge(&layers, how)
}

/// [`merge_each`] per block of a list of residual blocks.
fn merge_blocks<'a, T: 'a>(members: &'a [T], pick: impl Fn(&'a T) -> &'a [Dense]) -> Vec<Dense> {
    (0..pick(&members[0]).len())
        .map(|b| merge_each(members, Merge::BlockDiagonal, |m| &pick(m)[b]))
        .collect()
}

/// The layers of a [`ResidualMlp`] as [`Dense`] slices.
#[derive(Clone, Debug)]
struct MlpLayers {
    input: Dense,
    blocks: Vec<Dense>,
    output: Dense,
}

impl MlpLayers {
    fn from_mlp(store: &ParamStore, mlp: &ResidualMlp) -> Result<Self> {
        Ok(MlpLayers {
            input: Dense::from_linear(store, &mlp.input)?,
            blocks: mlp
                .blocks
                .iter()
                .map(|b| Dense::from_linear(store, &b.linear))
                .collect::<Result<_>>()?,
            output: Dense::from_linear(store, &mlp.output)?,
        })
    }
}

/// The x path, prepared for [`ScorePlan::condition`].
#[derive(Clone, Debug)]
enum XPathPlan {
    /// The x-MLP's layers.
    Mlp(MlpLayers),
    /// A set encoder with its parameters, run on a no-grad tape once per call on the
    /// call's set of draws, so the tape costs nothing next to the sampling loop.
    Set { path: XPath, store: ParamStore },
    /// An ensemble's: its members' e(x) side by side.
    Members,
}

/// In place: h ← act(h).
fn activate(h: &mut [f32]) {
    for v in h {
        *v = SCORE_ACTIVATION.apply(*v);
    }
}

/// h ← h + act(block(h)), with `tmp` as scratch of h's size.
fn residual(block: &Dense, h: &mut [f32], tmp: &mut [f32], rows: usize) {
    block.apply(h, rows, tmp);
    for (hv, &z) in h.iter_mut().zip(tmp.iter()) {
        *hv += SCORE_ACTIVATION.apply(z);
    }
}

/// The score network, ready for tapeless batched evaluation.
#[derive(Clone, Debug)]
pub struct ScorePlan {
    /// Sizes.
    pub config: ScoreNetConfig,
    /// θ-MLP input layer `[width, dim_theta]`, followed by the activation.
    pub theta_input: Dense,
    /// θ-MLP residual blocks `[width, width]`: h ← h + act(W·h + b).
    pub theta_blocks: Vec<Dense>,
    /// θ-MLP output folded into the head's θ columns: `[width, width]`.
    pub theta_to_head: Dense,
    x_path: XPathPlan,
    /// Head's first-layer columns for e(x): `[width, embedding]`, with the head bias.
    pub head_x: Dense,
    /// Head's first-layer columns for e(t): `[width, time_embedding]`, no bias.
    pub head_t: Dense,
    /// Head residual blocks `[width, width]`.
    pub head_blocks: Vec<Dense>,
    /// Head output layer `[dim_theta, width]`, giving ε̂.
    pub head_output: Dense,
    /// The members of an ensemble ([`ScorePlan::average`]), each evaluated on its own
    /// by the CPU's [`ScorePlan::eps_hat`]; empty for one network.
    members: Vec<ScorePlan>,
    /// A Gaussian base whose ε is added to the network's, with the schedule that gives
    /// each level's γ ([`ScorePlan::with_base`]).
    base: Option<(GaussianBase, NoiseSchedule)>,
}

/// Columns `from..to` of a row-major `[rows, cols]` matrix.
fn columns(w: &[f32], cols: usize, from: usize, to: usize) -> Vec<f32> {
    w.chunks_exact(cols)
        .flat_map(|row| row[from..to].iter().copied())
        .collect()
}

impl ScorePlan {
    /// Copies the weights out of `store` and folds the θ-MLP's output into the head.
    pub fn new(net: &ScoreNet, store: &ParamStore) -> Result<Self> {
        let c = net.config;
        if SCORE_ACTIVATION != net.theta_net.activation || SCORE_ACTIVATION != net.head.activation {
            return Err(Error::invalid(
                "ScorePlan",
                "the network's activation is not the one this plan evaluates",
            ));
        }
        let theta = MlpLayers::from_mlp(store, &net.theta_net)?;
        let head = MlpLayers::from_mlp(store, &net.head)?;
        let x_path = match &net.x_net {
            XPath::Mlp(mlp) => XPathPlan::Mlp(MlpLayers::from_mlp(store, mlp)?),
            set => XPathPlan::Set {
                path: set.clone(),
                store: store.clone(),
            },
        };
        let head_in = 2 * c.embedding + c.time_embedding;
        let w_theta = columns(&head.input.weight, head_in, 0, c.embedding);
        let w_x = columns(&head.input.weight, head_in, c.embedding, 2 * c.embedding);
        let w_t = columns(&head.input.weight, head_in, 2 * c.embedding, head_in);

        // (W_θ·W_o) [width, width] and W_θ·b_o [width], in f64 so folding adds no error.
        let (wo, bo) = (&theta.output.weight, &theta.output.bias);
        let mut fused = vec![0.0f32; c.width * c.width];
        let mut fused_bias = vec![0.0f32; c.width];
        for i in 0..c.width {
            for j in 0..c.width {
                let s: f64 = (0..c.embedding)
                    .map(|e| w_theta[i * c.embedding + e] as f64 * wo[e * c.width + j] as f64)
                    .sum();
                fused[i * c.width + j] = s as f32;
            }
            fused_bias[i] = (0..c.embedding)
                .map(|e| w_theta[i * c.embedding + e] as f64 * bo[e] as f64)
                .sum::<f64>() as f32;
        }
        Ok(ScorePlan {
            config: c,
            theta_input: theta.input,
            theta_blocks: theta.blocks,
            theta_to_head: Dense {
                weight: fused,
                bias: fused_bias,
                in_features: c.width,
                out_features: c.width,
            },
            x_path,
            head_x: Dense {
                weight: w_x,
                bias: head.input.bias.clone(),
                in_features: c.embedding,
                out_features: c.width,
            },
            head_t: Dense {
                weight: w_t,
                bias: vec![0.0; c.width],
                in_features: c.time_embedding,
                out_features: c.width,
            },
            head_blocks: head.blocks,
            head_output: head.output,
            members: Vec::new(),
            base: None,
        })
    }

    /// This plan with a [`GaussianBase`] under the network: ε̂ = ε̂_net + ε_base, γ of each
    /// level by `schedule`. An error if the base does not fit the network's sizes, or if
    /// the network reads sets (the base is linear in one observation).
    pub fn with_base(self, base: GaussianBase, schedule: NoiseSchedule) -> Result<Self> {
        base.validate("ScorePlan::with_base", &self.config)?;
        Ok(ScorePlan {
            base: Some((base, schedule)),
            ..self
        })
    }

    /// The Gaussian base under the network, if any.
    pub fn base(&self) -> Option<&GaussianBase> {
        self.base.as_ref().map(|(base, _)| base)
    }

    /// The plan of an ensemble of networks of one architecture whose ε̂ is the mean of
    /// the members' ε̂ (an ensemble of K score networks trained on the same simulations
    /// from different seeds: their mean averages out what each seed got wrong).
    ///
    /// Its layers are one network of K times the width, each layer block-diagonal over
    /// the members (the input layers stacked, the output layer averaging), so that the
    /// fused GPU samplers run it as they run one network, at K times the multiply-adds
    /// of K separate passes (the off-diagonal blocks are zeros). The CPU's
    /// [`ScorePlan::eps_hat`] evaluates the members one after another instead, on the
    /// same [`Conditioning`] (whose columns are the members' side by side). Members must
    /// share every size ([`ScoreNetConfig`]); one member is returned as it is.
    pub fn average(members: &[ScorePlan]) -> Result<ScorePlan> {
        let op = "ScorePlan::average";
        let Some(first) = members.first() else {
            return Err(Error::invalid(op, "an ensemble needs at least one member"));
        };
        if let Some(k) = members.iter().position(|m| m.config != first.config) {
            return Err(Error::invalid(
                op,
                format!(
                    "member {k} has sizes {:?}, member 0 {:?}",
                    members[k].config, first.config
                ),
            ));
        }
        if let Some(k) = members.iter().position(|m| m.base != first.base) {
            return Err(Error::invalid(
                op,
                format!("member {k} has another Gaussian base than member 0"),
            ));
        }
        if members.len() == 1 {
            return Ok(first.clone());
        }
        let k = members.len();
        use Merge::*;
        Ok(ScorePlan {
            config: ScoreNetConfig {
                width: k * first.config.width,
                embedding: k * first.config.embedding,
                ..first.config
            },
            theta_input: merge_each(members, SharedInput, |m| &m.theta_input),
            theta_blocks: merge_blocks(members, |m| &m.theta_blocks),
            theta_to_head: merge_each(members, BlockDiagonal, |m| &m.theta_to_head),
            x_path: XPathPlan::Members,
            head_x: merge_each(members, BlockDiagonal, |m| &m.head_x),
            head_t: merge_each(members, SharedInput, |m| &m.head_t),
            head_blocks: merge_blocks(members, |m| &m.head_blocks),
            head_output: merge_each(members, MeanOutput, |m| &m.head_output),
            // The mean of ε̂_net,k + ε_base is the mean of the networks' plus ε_base.
            base: first.base.clone(),
            members: members
                .iter()
                .map(|m| ScorePlan {
                    base: None,
                    ..m.clone()
                })
                .collect(),
        })
    }

    /// K, the number of networks whose mean this plan computes (1 for one network).
    pub fn ensemble_size(&self) -> usize {
        self.members.len().max(1)
    }

    /// Precomputes `W_x·e(x_j) + b` for the standardized observations `x` `[n, dim_x]`
    /// and `W_t·e(t_k)` for the levels `t`. With a set encoder the n rows are one set, and
    /// the conditioning is of one observation.
    pub fn condition(&self, x: &[f32], t: &[f32]) -> Result<Conditioning> {
        let c = self.config;
        if x.is_empty() || x.len() % c.dim_x != 0 {
            return Err(Error::invalid(
                "ScorePlan::condition",
                format!(
                    "observations must be [n ≥ 1, {}], got {} values",
                    c.dim_x,
                    x.len()
                ),
            ));
        }
        let (e_x, n) = self.embed_x(x)?;
        let mut x_part = vec![0.0; n * c.width];
        self.head_x.apply(&e_x, n, &mut x_part);

        let mut e_t = vec![0.0; t.len() * c.time_embedding];
        sinusoidal_embedding_into(t, c.time_embedding, &mut e_t);
        let mut t_part = vec![0.0; t.len() * c.width];
        self.head_t.apply(&e_t, t.len(), &mut t_part);
        let base = self.base.as_ref().map(|(base, schedule)| {
            let (theta_coef, mean_coef) = base.level_coefficients(schedule, t);
            BaseConditioning {
                means: base.means(x),
                theta_coef,
                mean_coef,
            }
        });
        Ok(Conditioning {
            observations: n,
            x_part,
            t_part,
            base,
        })
    }

    /// e(x_j) `[n, embedding]` of the standardized observations x `[n, dim_x]`, and n;
    /// a set encoder's e(x) of the one set x, and 1.
    fn embed_x(&self, x: &[f32]) -> Result<(Vec<f32>, usize)> {
        let c = self.config;
        let n = x.len() / c.dim_x;
        match &self.x_path {
            XPathPlan::Mlp(mlp) => {
                let mut h = vec![0.0; n * c.width];
                let mut tmp = vec![0.0; n * c.width];
                mlp.input.apply(x, n, &mut h);
                activate(&mut h);
                for block in &mlp.blocks {
                    residual(block, &mut h, &mut tmp, n);
                }
                let mut e_x = vec![0.0; n * c.embedding];
                mlp.output.apply(&h, n, &mut e_x);
                Ok((e_x, n))
            }
            XPathPlan::Set { path, store } => {
                let mut tape = Tape::no_grad();
                let set = tape.constant(Tensor::from_slice(x, &[1, n, c.dim_x])?);
                let mask = Tensor::full(&[1, n], 1.0);
                let e_x = path.forward(
                    &mut tape,
                    store,
                    XBatch::Sets {
                        x: set,
                        mask: &mask,
                    },
                )?;
                Ok((tape.value(e_x).to_vec()?, 1))
            }
            XPathPlan::Members => {
                let parts = self
                    .members
                    .iter()
                    .map(|m| m.embed_x(x))
                    .collect::<Result<Vec<_>>>()?;
                let rows = parts.first().map_or(0, |(_, rows)| *rows);
                let mut e_x = Vec::with_capacity(rows * c.embedding);
                for j in 0..rows {
                    for ((part, _), m) in parts.iter().zip(&self.members) {
                        let e = m.config.embedding;
                        e_x.extend_from_slice(&part[j * e..(j + 1) * e]);
                    }
                }
                Ok((e_x, rows))
            }
        }
    }

    /// A workspace for tiles of up to `rows` samples.
    pub fn workspace(&self, rows: usize) -> Workspace {
        // An ensemble's members run one at a time in buffers of one member's width.
        let w = self.members.first().unwrap_or(self).config.width;
        Workspace {
            rows,
            theta_h: vec![0.0; rows * w],
            theta_part: vec![0.0; rows * w],
            head_h: vec![0.0; rows * w],
            tmp: vec![0.0; rows * w],
            member_eps: Vec::new(),
        }
    }

    /// ε̂(θ, t_k, x_j) for every observation j: `theta` is `[rows, dim_theta]`
    /// (standardized), `out` is `[n, rows, dim_theta]`. An ensemble's ε̂ is the mean of
    /// its members'.
    pub fn eps_hat(
        &self,
        cond: &Conditioning,
        level: usize,
        theta: &[f32],
        ws: &mut Workspace,
        out: &mut [f32],
    ) {
        let d = self.config.dim_theta;
        let rows = theta.len() / d;
        debug_assert!(rows <= ws.rows && out.len() == cond.observations * rows * d);
        if self.members.is_empty() {
            self.member_eps_hat(cond, 0, self.config.width, level, theta, ws, out);
            return add_base(cond, level, theta, out);
        }
        // Member 0 writes `out`, the others a buffer added to it: grown once per tile
        // (the first call tells n), then reused.
        let mut member_eps = std::mem::take(&mut ws.member_eps);
        member_eps.resize(out.len(), 0.0);
        let stride = self.config.width;
        for (m, member) in self.members.iter().enumerate() {
            let first = member.config.width * m;
            if m == 0 {
                member.member_eps_hat(cond, first, stride, level, theta, ws, out);
            } else {
                member.member_eps_hat(cond, first, stride, level, theta, ws, &mut member_eps);
                out.iter_mut().zip(&member_eps).for_each(|(o, e)| *o += e);
            }
        }
        ws.member_eps = member_eps;
        let scale = 1.0 / self.members.len() as f32;
        out.iter_mut().for_each(|o| *o *= scale);
        add_base(cond, level, theta, out);
    }

    /// ε̂ of one network whose columns of the conditioning `cond` are
    /// `first..first + width` of rows `stride` wide (a plan of its own: 0 and its width;
    /// member m of an ensemble: m·width and the ensemble's width).
    #[allow(clippy::too_many_arguments)]
    fn member_eps_hat(
        &self,
        cond: &Conditioning,
        first: usize,
        stride: usize,
        level: usize,
        theta: &[f32],
        ws: &mut Workspace,
        out: &mut [f32],
    ) {
        let (w, d) = (self.config.width, self.config.dim_theta);
        let rows = theta.len() / d;
        let (theta_h, theta_part) = (&mut ws.theta_h[..rows * w], &mut ws.theta_part[..rows * w]);
        let (head_h, tmp) = (&mut ws.head_h[..rows * w], &mut ws.tmp[..rows * w]);

        self.theta_input.apply(theta, rows, theta_h);
        activate(theta_h);
        for block in &self.theta_blocks {
            residual(block, theta_h, tmp, rows);
        }
        self.theta_to_head.apply(theta_h, rows, theta_part);
        let t_part = &cond.t_part[level * stride + first..][..w];
        for (j, out_j) in out.chunks_exact_mut(rows * d).enumerate() {
            let x_part = &cond.x_part[j * stride + first..][..w];
            for (h_row, th_row) in head_h.chunks_exact_mut(w).zip(theta_part.chunks_exact(w)) {
                for i in 0..w {
                    h_row[i] = SCORE_ACTIVATION.apply(th_row[i] + x_part[i] + t_part[i]);
                }
            }
            for block in &self.head_blocks {
                residual(block, head_h, tmp, rows);
            }
            self.head_output.apply(head_h, rows, out_j);
        }
    }

    /// Multiply-adds of one network pass per sample with `n` observations, as the fused
    /// GPU samplers run it (for an ensemble: its block-diagonal layers, zeros included;
    /// the CPU's member-by-member [`ScorePlan::eps_hat`] does 1/K of that).
    pub fn macs_per_step(&self, n: usize) -> usize {
        let (w, d) = (self.config.width, self.config.dim_theta);
        let theta_path = d * w + self.theta_blocks.len() * w * w + w * w;
        let head_path = self.head_blocks.len() * w * w + w * d;
        theta_path + n * head_path
    }
}

/// In place: `out` `[n, rows, dim θ]` += ε_base(θ, t_k, x_j) = c_k ⊙ θ − s_k ⊙ m_j
/// ([`GaussianBase::coefficients`]), if the conditioning has a base.
fn add_base(cond: &Conditioning, level: usize, theta: &[f32], out: &mut [f32]) {
    let Some(base) = &cond.base else { return };
    let d = base.means.len() / cond.observations;
    let c = &base.theta_coef[level * d..(level + 1) * d];
    let s = &base.mean_coef[level * d..(level + 1) * d];
    for (out_j, m) in out
        .chunks_exact_mut(theta.len())
        .zip(base.means.chunks_exact(d))
    {
        for (o_row, th_row) in out_j.chunks_exact_mut(d).zip(theta.chunks_exact(d)) {
            for k in 0..d {
                o_row[k] += c[k] * th_row[k] - s[k] * m[k];
            }
        }
    }
}

/// What [`ScorePlan::condition`] precomputes for one call.
#[derive(Clone, Debug)]
pub struct Conditioning {
    /// n, the number of observations composed.
    pub observations: usize,
    /// `W_x·e(x_j) + b`, `[n, width]`.
    pub x_part: Vec<f32>,
    /// `W_t·e(t_k)`, `[levels, width]`.
    pub t_part: Vec<f32>,
    /// The Gaussian base's terms, if the plan has one.
    pub base: Option<BaseConditioning>,
}

/// A [`GaussianBase`]'s share of one call: ε_base(θ, t_k, x_j) = c_k ⊙ θ − s_k ⊙ m_j.
#[derive(Clone, Debug)]
pub struct BaseConditioning {
    /// m_j = A·x̃_j + b, `[n, dim θ]`.
    pub means: Vec<f32>,
    /// c_k, `[levels, dim θ]`.
    pub theta_coef: Vec<f32>,
    /// s_k, `[levels, dim θ]`.
    pub mean_coef: Vec<f32>,
}

/// Scratch buffers of one tile of samples, allocated once per tile.
#[derive(Clone, Debug)]
pub struct Workspace {
    rows: usize,
    theta_h: Vec<f32>,
    theta_part: Vec<f32>,
    head_h: Vec<f32>,
    tmp: Vec<f32>,
    /// An ensemble's ε̂ of one member, `[n, rows, dim θ]`.
    member_eps: Vec<f32>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::estimators::score::NoiseSchedule;
    use crate::nn::{sinusoidal_embedding, SetEncoderKind};
    use crate::rng::{streams, PhiloxStream};
    use crate::tensor::Tensor;

    /// A fresh network of `config` with every weight perturbed, and its parameters.
    fn random_net(config: ScoreNetConfig, seed: u64) -> (ScoreNet, ParamStore) {
        let mut store = ParamStore::new();
        let mut rng = PhiloxStream::new(seed, streams::INIT, 0);
        let net = ScoreNet::new(&mut store, config, &mut rng).unwrap();
        // Fresh networks have zero-initialized last layers in places; perturb every
        // weight so that each member's ε̂ differs from the others' everywhere.
        let ids: Vec<_> = store.iter().map(|(id, _, _)| id).collect();
        for id in ids {
            let value = store.get(id);
            let shape = value.shape().to_vec();
            let mut v = value.to_vec().unwrap();
            let mut noise = vec![0.0f32; v.len()];
            rng.fill_normal(0.0, 0.2, &mut noise);
            v.iter_mut().zip(&noise).for_each(|(a, b)| *a += b);
            store.set(id, Tensor::from_vec(v, &shape).unwrap()).unwrap();
        }
        (net, store)
    }

    fn random_plan(config: ScoreNetConfig, seed: u64) -> ScorePlan {
        let (net, store) = random_net(config, seed);
        ScorePlan::new(&net, &store).unwrap()
    }

    /// The sizes of the tests' networks, with the x-MLP and with either set encoder.
    fn configs() -> [ScoreNetConfig; 3] {
        let mlp = ScoreNetConfig::new(3, 2, 8);
        let set = |kind| mlp.with_set_encoder(kind, 8);
        [
            mlp,
            set(SetEncoderKind::SetTransformer),
            set(SetEncoderKind::DeepSet),
        ]
    }

    /// Fixed standardized inputs: θ rows `[7, dim θ]`, observations `[3, dim x]` (a set
    /// of 3 draws, to a set encoder) and the levels of a 10-level grid.
    fn inputs(config: ScoreNetConfig) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let (rows, n) = (7, 3);
        let mut x = vec![0.0f32; n * config.dim_x];
        PhiloxStream::new(5, streams::TEST, 0).fill_normal(0.0, 1.0, &mut x);
        let mut theta = vec![0.0f32; rows * config.dim_theta];
        PhiloxStream::new(6, streams::TEST, 0).fill_normal(0.0, 1.0, &mut theta);
        let (t, _) = NoiseSchedule { levels: 400 }.grid(10);
        (theta, x, t)
    }

    /// ε̂ `[n, rows, dim θ]` of `plan` at `level` on [`inputs`], conditioned by
    /// `conditioner` (the plan itself, or the ensemble whose layers it holds).
    fn eps_conditioned_by(conditioner: &ScorePlan, plan: &ScorePlan, level: usize) -> Vec<f32> {
        let (theta, x, t) = inputs(conditioner.config);
        let cond = conditioner.condition(&x, &t).unwrap();
        let mut out = vec![0.0f32; cond.observations * theta.len()];
        let rows = theta.len() / plan.config.dim_theta;
        plan.eps_hat(&cond, level, &theta, &mut plan.workspace(rows), &mut out);
        out
    }

    fn eps(plan: &ScorePlan, level: usize) -> Vec<f32> {
        eps_conditioned_by(plan, plan, level)
    }

    #[test]
    fn the_plan_computes_the_networks_eps_hat_with_either_x_path() {
        let level = 4;
        for config in configs() {
            let (net, store) = random_net(config, 3);
            let got = eps(&ScorePlan::new(&net, &store).unwrap(), level);
            let (theta, x, t) = inputs(config);
            let (d, dx) = (config.dim_theta, config.dim_x);
            let rows = theta.len() / d;
            // The x-MLP conditions on each of the 3 observations, a set encoder on the set.
            let sets = config.x_encoder.is_some();
            assert_eq!(got.len(), if sets { 1 } else { 3 } * rows * d);
            for (j, got_j) in got.chunks_exact(rows * d).enumerate() {
                let mut tape = Tape::no_grad();
                let th = tape.constant(Tensor::from_slice(&theta, &[rows, d]).unwrap());
                let t_emb = sinusoidal_embedding(&vec![t[level]; rows], config.time_embedding);
                let t_emb = tape.constant(t_emb.unwrap());
                let mask = Tensor::full(&[rows, 3], 1.0);
                let xb = if sets {
                    let set = Tensor::from_vec(x.repeat(rows), &[rows, 3, dx]).unwrap();
                    XBatch::Sets {
                        x: tape.constant(set),
                        mask: &mask,
                    }
                } else {
                    let xj = x[j * dx..(j + 1) * dx].repeat(rows);
                    XBatch::Rows(tape.constant(Tensor::from_vec(xj, &[rows, dx]).unwrap()))
                };
                let want = net.forward(&mut tape, &store, th, xb, t_emb).unwrap();
                let want = tape.value(want).to_vec().unwrap();
                // The plan folds the θ-MLP's output layer into the head in f64 and sums
                // in another order: a few ulps of the activations.
                let err = got_j
                    .iter()
                    .zip(&want)
                    .map(|(g, w)| (g - w).abs() / (1.0 + w.abs()))
                    .fold(0.0f32, f32::max);
                assert!(err < 1e-5, "{:?}, observation {j}: {err}", config.x_encoder);
            }
        }
    }

    #[test]
    fn a_set_encoder_reads_the_draws_in_any_order_and_counts_them() {
        let [_, set_transformer, deep_set] = configs();
        let (_, x, t) = inputs(set_transformer);
        let reversed: Vec<f32> = x.chunks_exact(2).rev().flatten().copied().collect();
        for config in [set_transformer, deep_set] {
            let plan = random_plan(config, 9);
            let x_part = |x: &[f32]| plan.condition(x, &t).unwrap().x_part;
            let (a, b) = (x_part(&x), x_part(&reversed));
            let err = a
                .iter()
                .zip(&b)
                .map(|(u, v)| (u - v).abs())
                .fold(0.0f32, f32::max);
            // The same sums over the elements in another order.
            assert!(err < 1e-5, "{:?}: {err}", config.x_encoder);
            // The draw x₀ twice is another set than x₀ once: ln N tells them apart even
            // where the pooling averages.
            let once = x_part(&x[..2]);
            let twice = x_part(&x[..2].repeat(2));
            assert!(
                once.iter().zip(&twice).any(|(u, v)| (u - v).abs() > 1e-3),
                "{:?}",
                config.x_encoder
            );
        }
    }

    #[test]
    fn a_set_encoder_must_read_x_and_fill_the_embedding() {
        let c = ScoreNetConfig::new(3, 2, 8);
        for (features, out) in [(3, 7), (2, 8)] {
            let config = ScoreNetConfig {
                x_encoder: Some(SetEncoderKind::DeepSet.config(features, out, 8)),
                ..c
            };
            let mut store = ParamStore::new();
            let mut rng = PhiloxStream::new(0, streams::INIT, 0);
            let err = ScoreNet::new(&mut store, config, &mut rng)
                .unwrap_err()
                .to_string();
            assert!(err.contains("ln N completes the embedding"), "{err}");
        }
    }

    #[test]
    fn an_averaged_plan_computes_the_mean_of_its_members() {
        for config in configs() {
            let members: Vec<ScorePlan> = (0..3).map(|s| random_plan(config, 40 + s)).collect();
            let ensemble = ScorePlan::average(&members).unwrap();
            assert_eq!(ensemble.config.width, 24);
            // The block-diagonal layers alone, as the fused GPU samplers run them on the
            // ensemble's conditioning.
            let wide = ScorePlan {
                members: Vec::new(),
                ..ensemble.clone()
            };
            for level in [0, 4, 9] {
                let per_member: Vec<Vec<f32>> = members.iter().map(|m| eps(m, level)).collect();
                let got = eps(&ensemble, level);
                let got_wide = eps_conditioned_by(&ensemble, &wide, level);
                let mut spread = 0.0f32;
                for (i, (&g, &gw)) in got.iter().zip(&got_wide).enumerate() {
                    let mean = per_member.iter().map(|e| e[i]).sum::<f32>() / 3.0;
                    spread = spread.max((per_member[0][i] - mean).abs());
                    // f32 sums of the same terms in another order (the wide layers add
                    // zeros too): a few ulps.
                    let tol = 1e-5 * (1.0 + mean.abs());
                    assert!(
                        (g - mean).abs() <= tol,
                        "level {level} [{i}]: {g} vs {mean}"
                    );
                    assert!(
                        (gw - mean).abs() <= tol,
                        "wide, level {level} [{i}]: {gw} vs {mean}"
                    );
                }
                assert!(
                    spread > 1e-2,
                    "the members must differ for the test to mean anything"
                );
            }
            // One member is itself.
            let one = ScorePlan::average(&members[..1]).unwrap();
            assert_eq!(eps(&one, 3), eps(&members[0], 3));
        }
    }

    /// A base for [`configs`]' sizes (dim θ 3, dim x 2) whose ε is O(1).
    fn base() -> GaussianBase {
        GaussianBase {
            weight: vec![0.5, -1.0, 2.0, 0.3, 0.0, 1.5],
            bias: vec![0.2, -0.4, 1.0],
            variance: vec![0.05, 0.3, 1.2],
        }
    }

    #[test]
    fn a_gaussian_base_adds_its_epsilon_to_the_networks_and_to_an_ensembles_mean() {
        let schedule = NoiseSchedule { levels: 400 };
        let config = configs()[0];
        let members: Vec<ScorePlan> = (0..2).map(|s| random_plan(config, 20 + s)).collect();
        let ensemble = ScorePlan::average(&members).unwrap();
        let (theta, x, t) = inputs(config);
        let d = config.dim_theta;
        for plan in [&members[0], &ensemble] {
            let with_base = plan.clone().with_base(base(), schedule).unwrap();
            assert_eq!(with_base.base(), Some(&base()));
            for level in [1, 4, 10] {
                let (without, with) = (eps(plan, level), eps(&with_base, level));
                let gamma = schedule.gamma(t[level] as f64);
                let (c, s) = base().coefficients(gamma);
                let means = base().means(&x);
                for (i, (&a, &b)) in without.iter().zip(&with).enumerate() {
                    let (j, r, k) = (i / theta.len(), (i % theta.len()) / d, i % d);
                    let want = a + (c[k] * theta[r * d + k] - s[k] * means[j * d + k]);
                    assert!(
                        (b - want).abs() <= 1e-6 * (1.0 + want.abs()),
                        "{b} vs {want}"
                    );
                }
                // The base term is O(1) (at t = T, where γ = 0, it is θ itself).
                assert!(without.iter().zip(&with).any(|(a, b)| (a - b).abs() > 0.1));
            }
        }
        // An ensemble of a base's members has that base; members of different bases, or
        // a base that does not fit the network, are refused.
        let based: Vec<ScorePlan> = members
            .iter()
            .map(|m| m.clone().with_base(base(), schedule).unwrap())
            .collect();
        assert_eq!(ScorePlan::average(&based).unwrap().base(), Some(&base()));
        let mixed = [based[0].clone(), members[1].clone()];
        let err = ScorePlan::average(&mixed).unwrap_err().to_string();
        assert!(err.contains("Gaussian base"), "{err}");
        let wrong = GaussianBase {
            bias: vec![0.0; 2],
            ..base()
        };
        assert!(members[0].clone().with_base(wrong, schedule).is_err());
        // A set encoder's x is a set, not one observation the base is linear in.
        let set = random_plan(configs()[1], 3).with_base(base(), schedule);
        let err = set.unwrap_err().to_string();
        assert!(err.contains("set encoder"), "{err}");
    }

    #[test]
    fn averaging_plans_of_other_sizes_or_none_is_an_error() {
        let a = random_plan(ScoreNetConfig::new(3, 2, 8), 1);
        let b = random_plan(ScoreNetConfig::new(3, 2, 16), 2);
        let err = ScorePlan::average(&[a, b]).unwrap_err().to_string();
        assert!(err.contains("member 1"), "{err}");
        assert!(ScorePlan::average(&[]).is_err());
    }
}
