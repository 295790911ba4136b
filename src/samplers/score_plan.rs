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

use crate::autograd::ParamStore;
use crate::backend::cpu;
use crate::backend::{MatLayout, MatmulDims};
use crate::error::{Error, Result};
use crate::estimators::score::{ScoreNet, ScoreNetConfig, SCORE_ACTIVATION};
use crate::nn::{sinusoidal_embedding_into, Linear, ResidualMlp};

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
    x_net: MlpLayers,
    /// Head's first-layer columns for e(x): `[width, embedding]`, with the head bias.
    pub head_x: Dense,
    /// Head's first-layer columns for e(t): `[width, time_embedding]`, no bias.
    pub head_t: Dense,
    /// Head residual blocks `[width, width]`.
    pub head_blocks: Vec<Dense>,
    /// Head output layer `[dim_theta, width]`, giving ε̂.
    pub head_output: Dense,
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
        let x_net = MlpLayers::from_mlp(store, &net.x_net)?;
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
            x_net,
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
        })
    }

    /// Precomputes `W_x·e(x_j) + b` for the standardized observations `x` `[n, dim_x]`
    /// and `W_t·e(t_k)` for the levels `t`.
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
        let n = x.len() / c.dim_x;
        let mut h = vec![0.0; n * c.width];
        let mut tmp = vec![0.0; n * c.width];
        self.x_net.input.apply(x, n, &mut h);
        activate(&mut h);
        for block in &self.x_net.blocks {
            residual(block, &mut h, &mut tmp, n);
        }
        let mut e_x = vec![0.0; n * c.embedding];
        self.x_net.output.apply(&h, n, &mut e_x);
        let mut x_part = vec![0.0; n * c.width];
        self.head_x.apply(&e_x, n, &mut x_part);

        let mut e_t = vec![0.0; t.len() * c.time_embedding];
        sinusoidal_embedding_into(t, c.time_embedding, &mut e_t);
        let mut t_part = vec![0.0; t.len() * c.width];
        self.head_t.apply(&e_t, t.len(), &mut t_part);
        Ok(Conditioning {
            observations: n,
            x_part,
            t_part,
        })
    }

    /// A workspace for tiles of up to `rows` samples.
    pub fn workspace(&self, rows: usize) -> Workspace {
        let w = self.config.width;
        Workspace {
            rows,
            theta_h: vec![0.0; rows * w],
            theta_part: vec![0.0; rows * w],
            head_h: vec![0.0; rows * w],
            tmp: vec![0.0; rows * w],
        }
    }

    /// ε̂(θ, t_k, x_j) for every observation j: `theta` is `[rows, dim_theta]`
    /// (standardized), `out` is `[n, rows, dim_theta]`.
    pub fn eps_hat(
        &self,
        cond: &Conditioning,
        level: usize,
        theta: &[f32],
        ws: &mut Workspace,
        out: &mut [f32],
    ) {
        let (w, d) = (self.config.width, self.config.dim_theta);
        let rows = theta.len() / d;
        debug_assert!(rows <= ws.rows && out.len() == cond.observations * rows * d);
        let (theta_h, theta_part) = (&mut ws.theta_h[..rows * w], &mut ws.theta_part[..rows * w]);
        let (head_h, tmp) = (&mut ws.head_h[..rows * w], &mut ws.tmp[..rows * w]);

        self.theta_input.apply(theta, rows, theta_h);
        activate(theta_h);
        for block in &self.theta_blocks {
            residual(block, theta_h, tmp, rows);
        }
        self.theta_to_head.apply(theta_h, rows, theta_part);
        let t_part = &cond.t_part[level * w..(level + 1) * w];
        for (j, out_j) in out.chunks_exact_mut(rows * d).enumerate() {
            let x_part = &cond.x_part[j * w..(j + 1) * w];
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

    /// Multiply-adds of one [`ScorePlan::eps_hat`] per sample with `n` observations.
    pub fn macs_per_step(&self, n: usize) -> usize {
        let (w, d) = (self.config.width, self.config.dim_theta);
        let theta_path = d * w + self.theta_blocks.len() * w * w + w * w;
        let head_path = self.head_blocks.len() * w * w + w * d;
        theta_path + n * head_path
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
}

/// Scratch buffers of one tile of samples, allocated once per tile.
#[derive(Clone, Debug)]
pub struct Workspace {
    rows: usize,
    theta_h: Vec<f32>,
    theta_part: Vec<f32>,
    head_h: Vec<f32>,
    tmp: Vec<f32>,
}
