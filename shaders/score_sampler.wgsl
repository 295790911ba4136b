// score_sampler.wgsl: what the fused samplers (sample_diffusion.wgsl, sample_langevin.wgsl)
// share, the WGSL counterpart of kernels/score_sampler.cuh. WGSL has no #include: the host
// (src/samplers/wgpu.rs) compiles this file followed by one of the two entry files as one
// module, after rewriting the four `const` lines marked HOST below for the network's sizes
// and the workgroup shape.
//
// What it computes (the CPU functions named define it, DESIGN.md contract 2): the score
// network of src/samplers/score_plan.rs (ScorePlan::eps_hat, LearnedScore::scores) for one
// tile of samples, Σ_j s_ψ(θ, k, x_j) (TileState::evaluate), the prior's score in the
// sampler's space (StandardizedPrior::prior_score), the Philox noise of the sampler contract (PhiloxStream::at_step, on philox.wgsl compiled in front of this file), langevin_move and the
// corrector's step size of src/samplers/mod.rs. All arithmetic is f32 (src/samplers/wgpu.rs
// states the resulting tolerance against the CPU, which sums a few things in f64).
//
// Network (ScorePlan, W = width, d = dim θ, SiLU activation act(x) = x·σ(x)):
//   h = act(W_in·θ + b_in); nbt times h ← h + act(W_b·h + b_b)      (θ path, once per sample)
//   tp = (W_θ·W_o)·h + W_θ·b_o                                    (θ output folded into head)
//   for each observation j:                                       (once per (sample, j))
//     h = act((tp + x_part[j]) + t_part[k]);  nbh times h ← h + act(W_b·h + b_b)
//     ε̂_j = W_out·h + b_out;  Σ_j s_ψ += (−1/√(1 − γ_k))·ε̂_j
// with x_part[j] = W_x·e(x_j) + b and t_part[k] = W_t·e(t_k) precomputed by
// ScorePlan::condition.
//
// GAUSS (p.gauss = 1; GaussScore::scores of src/samplers/gauss.rs, Linhart et al. 2024):
// the n scores are not summed but combined by the level's weights (GaussWeights::table),
//   Σ_j s_ψ := −M_k·(θ − c_k) + Σ_j W_kj·s_ψ(θ, k, x_j)      (the prior part first, then j
//                                                              in order, each matrix-vector
//                                                              product summed over b in order)
// while each s_ψ(θ, k, x_j) passes through gT; the host then gives the chain one
// observation's coefficients and initial draw (w_k = 0, so the prior's score is not added).
//
// Prior (GpuPrior::tables): θ is the prior's unconstrained u = B⁻¹(θ_prior) standardized,
// u = m + s ⊙ θ, and, where the prior's weight w_k = (1 − n)(S − k)/S is not 0 (else 0),
//   ∇log p(θ) = s ⊙ g(u),  g(u) = −P·(u − c)   (p.prior_kind 0: Gaussian prior, log-normal
//                                               with P = diag(1/σ²), c = μ)
//                          g(u) = 1 − 2σ(u)      (p.prior_kind 1: uniform box, scaled logit)
// once per network pass into gT, in f32 (the CPU computes g in f64).
//
// Workgroup shape: THREADS invocations own TILE = 32 consecutive samples (lanes
// 32·tile .. 32·tile + 31), exactly one CORRECTOR_GROUP, so the corrector's mean ‖s‖² is a
// reduction inside the workgroup in a fixed order (lane order, one invocation).
// Dense layer y[r, o] = Σ_k x[r, k]·Wᵀ[k, o] + b[o]: invocation t owns the COLS output
// columns o = t + c·THREADS (c < COLS) for all 32 rows of the tile, each column's 32 sums
// in registers as 8 vec4 (rows 4q .. 4q+3), summed over k in order. The host picks
// (src/samplers/wgpu.rs, workgroup_shape): on a GPU COLS = 1 and THREADS = max(W, d)
// rounded up to 32; on a CPU adapter (lavapipe) THREADS = 8, one SIMD register, and
// COLS = ⌈max(W, d)/8⌉, because there every load inside a loop is a per-lane scalar loop
// and this cuts the loads per multiply-add from 1 + 1/32 to 1/COLS + 1/32. Same sums in the
// same order either way.
// Activations are stored column-major in workgroup memory (hT[k·8 + q] = rows 4q .. 4q+3
// of column k), so for each k every invocation reads the same 8 vec4 (a broadcast on a
// GPU, no bank conflicts) and, per column it owns, one weight Wᵀ[k, o] used 32 times from
// a register. Each weight is used by exactly one invocation of the workgroup, so it is
// read straight from `net` (consecutive invocations read consecutive weights): staging it
// through workgroup memory would add a copy and barriers and share nothing. The folded θ
// part `tp` stays in the registers of the invocation that owns its column.
//
// Workgroup memory (f32): hT[TILE·W] + thT[TILE·d] + sT[TILE·d] + gT[TILE·d] +
// norm2[TILE] + coef[2] (lavapipe's 32 KiB hold W = 128).
//
// Weights (`net`, uploaded by the host, every weight transposed to [in, out] row-major):
//   [Wᵀ_in (d·W), b_in (W)], then the W×W layers in order — nbt θ blocks, the folded θ
//   output, nbh head blocks — each [Wᵀ (W·W), b (W)], then [Wᵀ_out (W·d), b_out (d)].
//
// Per-level table `level` (stride 8, index k = level, filled by the host from run_tile's
// own expressions):
//   [0] −1/√(1 − γ_k) (ε̂ → s_ψ, f32 as on the CPU)   [1] w_k = (1 − n)(S − k)/S
//   diffusion: [2] σ_k  [3] 1/√α_k  [4] (1 − α_k)/(√α_k·(n − α_k(n − 1)))  [5] σ_k²·w_k
//   langevin:  [2] δ_k/2  [3] √δ_k
//
// The chain may be split into several dispatches of consecutive levels (the host's
// `levels_per_dispatch`): `state` holds every sample's θ between them (`p.init` = 1 on the
// first dispatch, which draws θ ~ N(0, I/n) instead of loading it). A dispatch runs the
// chain steps p.step_lo .. p.step_hi − 1 (global step numbers), which lie in levels p.k_hi
// down to p.k_lo; p.step0 is the number of the first step of level p.k_hi. A level's steps
// are its predictor steps (1 for Algorithm 2, L for Algorithm 1), then its corrector steps,
// and a dispatch may start or end inside a level (level_range). On lavapipe this is what
// keeps each dispatch under llvmpipe's loop limiter (src/samplers/wgpu.rs, "Dispatches").
//
// Gaussian base (p.base = 1; ScorePlan::with_base, src/estimators/gaussian_base.rs):
// ε̂ = ε̂_net + (c_k ⊙ θ − s_k ⊙ m_j), so the head's output goes to gT as ε̂_net and
// add_base forms s_j = (ε̂_net + (c_k·θ − s_k·m_j))·scale in the CPU's order before it is
// summed (or passed to GAUSS). Its table (BaseConditioning) follows the prior's in binding
// 6: m_j = A·x̃_j + b for j < n (n·d), then per level k = 0 … S: c_k (d), s_k (d).
//
// Bindings: 0 params, 1 net, 2 x_part [n, W], 3 t_part [S + 1, W], 4 level [(S + 1)·8],
// 5 state [tiles·TILE, d] (read-write: the chain state, and the draws at the end),
// 6 prior [m (d), s (d), c (d), P (d·d)] and the base's table when p.base = 1,
// 7 gauss [(S + 1)·GS] with GS = (n + 1)·d² + d:
// per level W_k0 … W_k,n−1, M_k (row-major d×d each), c_k (one unused float when
// p.gauss = 0).
// Barriers are reached in uniform control flow only: every loop bound is a constant or a
// field of `p`.

const W: u32 = 16u; // HOST: width
const D: u32 = 4u; // HOST: dim θ
const THREADS: u32 = 32u; // HOST: invocations per workgroup
const COLS: u32 = 1u; // HOST: output columns per invocation, ⌈max(W, d)/THREADS⌉

const TILE: u32 = 32u;
const Q: u32 = 8u; // vec4 per column of the tile
const NB: u32 = (D + 3u) / 4u; // Philox blocks (4 normals each) per sample and step
const SAMPLER_STREAM: u32 = 3u; // rng::streams::SAMPLER
const F32_MIN_POSITIVE: f32 = 1.17549435e-38;
const PRIOR_LOGISTIC: u32 = 1u; // gpu::PRIOR_LOGISTIC

struct Params {
    nbt: u32,
    nbh: u32,
    n_obs: u32,
    num: u32,
    seed_lo: u32,
    seed_hi: u32,
    init_std: f32,
    corrector_steps: u32,
    corrector_levels: u32,
    corrector_numer: f32,
    steps_per_level: u32,
    k_hi: u32,
    k_lo: u32,
    step0: u32,
    step_lo: u32,
    step_hi: u32,
    init: u32,
    tiles: u32,
    prior_kind: u32,
    gauss: u32,
    base: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> net: array<f32>;
@group(0) @binding(2) var<storage, read> x_part: array<f32>;
@group(0) @binding(3) var<storage, read> t_part: array<f32>;
@group(0) @binding(4) var<storage, read> level: array<f32>;
@group(0) @binding(5) var<storage, read_write> state: array<f32>;
@group(0) @binding(6) var<storage, read> prior: array<f32>;
@group(0) @binding(7) var<storage, read> gauss: array<f32>;

var<workgroup> hT: array<vec4<f32>, W * Q>;
var<workgroup> thT: array<vec4<f32>, D * Q>;
var<workgroup> sT: array<vec4<f32>, D * Q>;
var<workgroup> gT: array<vec4<f32>, D * Q>;
var<workgroup> norm2: array<f32, TILE>;
var<workgroup> coef: array<f32, 2>;

/// One column of the tile: rows 4q .. 4q+3 in field q.
struct Column {
    q0: vec4<f32>,
    q1: vec4<f32>,
    q2: vec4<f32>,
    q3: vec4<f32>,
    q4: vec4<f32>,
    q5: vec4<f32>,
    q6: vec4<f32>,
    q7: vec4<f32>,
}

/// The sums of this invocation's columns tid + c·THREADS, c < COLS.
var<private> acc: array<Column, COLS>;
/// The folded θ part of the same columns.
var<private> tp: array<Column, COLS>;

// Philox4x32-10 and Box–Muller come from philox.wgsl, compiled in front of this file.

/// Normals 4b .. 4b+3 of sample `lane` at chain step `step`: block b of
/// PhiloxStream::at_step(seed, SAMPLER, step, lane), Box–Muller on words (0, 1), (2, 3).
fn noise4(step: u32, lane: u32, b: u32) -> vec4<f32> {
    let w = philox4x32_10(
        vec4<u32>(SAMPLER_STREAM, step, lane, b),
        vec2<u32>(p.seed_lo, p.seed_hi),
    );
    let z01 = box_muller(w.x, w.y);
    let z23 = box_muller(w.z, w.w);
    return vec4<f32>(z01.x, z01.y, z23.x, z23.y);
}

// ---- the network -----------------------------------------------------------------------

/// SiLU, the score network's activation (SCORE_ACTIVATION): x·σ(x) with σ in the
/// overflow-free form of the CPU (1/(1 + e^−x) for x ≥ 0, e^x/(1 + e^x) below).
fn silu(x: vec4<f32>) -> vec4<f32> {
    let e = exp(-abs(x));
    let s = select(e / (1.0 + e), 1.0 / (1.0 + e), x >= vec4<f32>(0.0));
    return x * s;
}

/// Offset in `net` of the l-th W×W layer (θ blocks, folded θ output, head blocks).
fn square_layer(l: u32) -> u32 {
    return D * W + W + l * (W * W + W);
}

/// Rows 4q .. 4q+3 of input column k: of θ when `from_theta`, else of h.
fn input(from_theta: bool, k: u32, q: u32) -> vec4<f32> {
    if (from_theta) {
        return thT[k * Q + q];
    }
    return hT[k * Q + q];
}

/// acc[c] = column o = tid + c·THREADS of in·Wᵀ over the tile, `in` being θ (k_in = d)
/// when `from_theta`, else h (k_in = W); Wᵀ at `wt` in `net`, [k_in, n_out] (columns
/// o ≥ n_out compute zeros). Each weight is read by exactly one invocation of the
/// workgroup, so it is read straight from `net` (top comment). Starts and ends with a
/// barrier, so the caller may overwrite `in`.
fn accumulate(wt: u32, k_in: u32, n_out: u32, from_theta: bool, tid: u32) {
    for (var c = 0u; c < COLS; c++) {
        acc[c] = Column();
    }
    // `in`, written by the previous step, is visible.
    workgroupBarrier();
    for (var k = 0u; k < k_in; k++) {
        let x0 = input(from_theta, k, 0u);
        let x1 = input(from_theta, k, 1u);
        let x2 = input(from_theta, k, 2u);
        let x3 = input(from_theta, k, 3u);
        let x4 = input(from_theta, k, 4u);
        let x5 = input(from_theta, k, 5u);
        let x6 = input(from_theta, k, 6u);
        let x7 = input(from_theta, k, 7u);
        let row = wt + k * n_out;
        for (var c = 0u; c < COLS; c++) {
            let o = tid + c * THREADS;
            let wv = vec4<f32>(select(0.0, net[row + min(o, n_out - 1u)], o < n_out));
            acc[c].q0 = fma(x0, wv, acc[c].q0);
            acc[c].q1 = fma(x1, wv, acc[c].q1);
            acc[c].q2 = fma(x2, wv, acc[c].q2);
            acc[c].q3 = fma(x3, wv, acc[c].q3);
            acc[c].q4 = fma(x4, wv, acc[c].q4);
            acc[c].q5 = fma(x5, wv, acc[c].q5);
            acc[c].q6 = fma(x6, wv, acc[c].q6);
            acc[c].q7 = fma(x7, wv, acc[c].q7);
        }
    }
    // Every read of `in` is done: the epilogue may write it.
    workgroupBarrier();
}

/// Epilogue h[:, o] = act(acc + b), or h[:, o] + act(acc + b) when `residual`, for this
/// invocation's columns o < W; b at `bias` in `net`.
fn store_hidden(bias: u32, residual: bool, tid: u32) {
    for (var c = 0u; c < COLS; c++) {
        let o = tid + c * THREADS;
        if (o < W) {
            let b = vec4<f32>(net[bias + o]);
            let a = acc[c];
            let i = o * Q;
            if (residual) {
                hT[i] = hT[i] + silu(a.q0 + b);
                hT[i + 1u] = hT[i + 1u] + silu(a.q1 + b);
                hT[i + 2u] = hT[i + 2u] + silu(a.q2 + b);
                hT[i + 3u] = hT[i + 3u] + silu(a.q3 + b);
                hT[i + 4u] = hT[i + 4u] + silu(a.q4 + b);
                hT[i + 5u] = hT[i + 5u] + silu(a.q5 + b);
                hT[i + 6u] = hT[i + 6u] + silu(a.q6 + b);
                hT[i + 7u] = hT[i + 7u] + silu(a.q7 + b);
            } else {
                hT[i] = silu(a.q0 + b);
                hT[i + 1u] = silu(a.q1 + b);
                hT[i + 2u] = silu(a.q2 + b);
                hT[i + 3u] = silu(a.q3 + b);
                hT[i + 4u] = silu(a.q4 + b);
                hT[i + 5u] = silu(a.q5 + b);
                hT[i + 6u] = silu(a.q6 + b);
                hT[i + 7u] = silu(a.q7 + b);
            }
        }
    }
    workgroupBarrier();
}

/// h ← h + act(W_b·h + b) for the W×W layer l.
fn residual_block(l: u32, tid: u32) {
    let off = square_layer(l);
    accumulate(off, W, W, false, tid);
    store_hidden(off + W * W, true, tid);
}

/// The θ path (once per sample): h = act(W_in·θ + b_in), the θ blocks, and the folded
/// θ output into this invocation's `tp` registers.
fn theta_path(tid: u32) {
    accumulate(0u, D, W, true, tid);
    store_hidden(D * W, false, tid);
    for (var b = 0u; b < p.nbt; b++) {
        residual_block(b, tid);
    }
    let off = square_layer(p.nbt);
    accumulate(off, W, W, false, tid);
    for (var c = 0u; c < COLS; c++) {
        let b = vec4<f32>(net[off + W * W + min(tid + c * THREADS, W - 1u)]);
        let a = acc[c];
        tp[c] = Column(a.q0 + b, a.q1 + b, a.q2 + b, a.q3 + b, a.q4 + b, a.q5 + b, a.q6 + b, a.q7 + b);
    }
}

/// sum_s[:, :] = Σ_j scale·ε̂(θ, t_k, x_j) for the tile (ScorePlan::eps_hat,
/// LearnedScore::scores and the Σ_j of TileState::evaluate), observations in order, or
/// GAUSS's weighted combination when p.gauss = 1; then g = ∇log p(θ) where the prior's
/// weight w_f is not 0.
fn evaluate(k: u32, scale: f32, w_f: f32, tid: u32) {
    theta_path(tid);
    if (p.gauss != 0u) {
        gauss_prior(k, tid);
    }
    let out_layer = square_layer(p.nbt + 1u + p.nbh);
    for (var j = 0u; j < p.n_obs; j++) {
        // Head input act((θ part + x part) + t part), in the CPU's order, from registers.
        for (var c = 0u; c < COLS; c++) {
            let o = tid + c * THREADS;
            if (o < W) {
                let xt = vec4<f32>(x_part[j * W + o]);
                let tt = vec4<f32>(t_part[k * W + o]);
                let t = tp[c];
                let i = o * Q;
                hT[i] = silu((t.q0 + xt) + tt);
                hT[i + 1u] = silu((t.q1 + xt) + tt);
                hT[i + 2u] = silu((t.q2 + xt) + tt);
                hT[i + 3u] = silu((t.q3 + xt) + tt);
                hT[i + 4u] = silu((t.q4 + xt) + tt);
                hT[i + 5u] = silu((t.q5 + xt) + tt);
                hT[i + 6u] = silu((t.q6 + xt) + tt);
                hT[i + 7u] = silu((t.q7 + xt) + tt);
            }
        }
        for (var b = 0u; b < p.nbh; b++) {
            residual_block(p.nbt + 1u + b, tid);
        }
        accumulate(out_layer, W, D, false, tid);
        for (var c = 0u; c < COLS; c++) {
            let o = tid + c * THREADS;
            if (o < D) {
                let b = vec4<f32>(net[out_layer + W * D + o]);
                let a = acc[c];
                let i = o * Q;
                if (p.base != 0u) {
                    // ε̂_net alone, into gT (free until prior_score below).
                    gT[i] = a.q0 + b;
                    gT[i + 1u] = a.q1 + b;
                    gT[i + 2u] = a.q2 + b;
                    gT[i + 3u] = a.q3 + b;
                    gT[i + 4u] = a.q4 + b;
                    gT[i + 5u] = a.q5 + b;
                    gT[i + 6u] = a.q6 + b;
                    gT[i + 7u] = a.q7 + b;
                } else if (p.gauss != 0u) {
                    // s_j alone, into gT (free until prior_score below).
                    gT[i] = (a.q0 + b) * scale;
                    gT[i + 1u] = (a.q1 + b) * scale;
                    gT[i + 2u] = (a.q2 + b) * scale;
                    gT[i + 3u] = (a.q3 + b) * scale;
                    gT[i + 4u] = (a.q4 + b) * scale;
                    gT[i + 5u] = (a.q5 + b) * scale;
                    gT[i + 6u] = (a.q6 + b) * scale;
                    gT[i + 7u] = (a.q7 + b) * scale;
                } else {
                    let first = j == 0u;
                    sT[i] = select(sT[i], vec4<f32>(0.0), first) + (a.q0 + b) * scale;
                    sT[i + 1u] = select(sT[i + 1u], vec4<f32>(0.0), first) + (a.q1 + b) * scale;
                    sT[i + 2u] = select(sT[i + 2u], vec4<f32>(0.0), first) + (a.q2 + b) * scale;
                    sT[i + 3u] = select(sT[i + 3u], vec4<f32>(0.0), first) + (a.q3 + b) * scale;
                    sT[i + 4u] = select(sT[i + 4u], vec4<f32>(0.0), first) + (a.q4 + b) * scale;
                    sT[i + 5u] = select(sT[i + 5u], vec4<f32>(0.0), first) + (a.q5 + b) * scale;
                    sT[i + 6u] = select(sT[i + 6u], vec4<f32>(0.0), first) + (a.q6 + b) * scale;
                    sT[i + 7u] = select(sT[i + 7u], vec4<f32>(0.0), first) + (a.q7 + b) * scale;
                }
            }
        }
        workgroupBarrier();
        if (p.base != 0u) {
            add_base(k, j, scale, tid);
        }
        if (p.gauss != 0u) {
            gauss_observation(k, j, tid);
        }
    }
    prior_score(w_f, tid);
}

/// The Gaussian base's share of observation j at level k (top comment): with ε̂_net in gT,
/// s_j = (ε̂_net + (c·θ − s·m_j))·scale goes to gT under GAUSS, else is summed into sT as
/// the output epilogue sums.
fn add_base(k: u32, j: u32, scale: f32, tid: u32) {
    let m = 3u * D + D * D + j * D;
    let c = 3u * D + D * D + p.n_obs * D + 2u * k * D;
    for (var idx = tid; idx < TILE * D; idx += THREADS) {
        let r = idx / D;
        let i = idx % D;
        let base_eps = prior[c + i] * theta_at(r, i) - prior[c + D + i] * prior[m + i];
        let s = (prior_at(r, i) + base_eps) * scale;
        if (p.gauss != 0u) {
            gT[i * Q + r / 4u][r % 4u] = s;
        } else if (j == 0u) {
            sT[i * Q + r / 4u][r % 4u] = s;
        } else {
            sT[i * Q + r / 4u][r % 4u] = score_at(r, i) + s;
        }
    }
    workgroupBarrier();
}

/// Offset in `gauss` of level k's weights (top comment).
fn gauss_level(k: u32) -> u32 {
    return k * ((p.n_obs + 1u) * D * D + D);
}

/// GAUSS, first part: sT[r, a] = −Σ_b M_k[a, b]·(θ[r, b] − c_k[b]).
fn gauss_prior(k: u32, tid: u32) {
    let m = gauss_level(k) + p.n_obs * D * D;
    let c = m + D * D;
    for (var idx = tid; idx < TILE * D; idx += THREADS) {
        let r = idx / D;
        let a = idx % D;
        var sum = 0.0;
        for (var b = 0u; b < D; b++) {
            sum = sum + gauss[m + a * D + b] * (theta_at(r, b) - gauss[c + b]);
        }
        sT[a * Q + r / 4u][r % 4u] = -sum;
    }
    workgroupBarrier();
}

/// GAUSS, observation j: sT[r, a] += Σ_b W_kj[a, b]·s_j[r, b], s_j in gT.
fn gauss_observation(k: u32, j: u32, tid: u32) {
    let wj = gauss_level(k) + j * D * D;
    for (var idx = tid; idx < TILE * D; idx += THREADS) {
        let r = idx / D;
        let a = idx % D;
        var sum = 0.0;
        for (var b = 0u; b < D; b++) {
            sum = sum + gauss[wj + a * D + b] * prior_at(r, b);
        }
        sT[a * Q + r / 4u][r % 4u] = score_at(r, a) + sum;
    }
    workgroupBarrier();
}

/// θ[r, i] of the tile.
fn theta_at(r: u32, i: u32) -> f32 {
    return thT[i * Q + r / 4u][r % 4u];
}

/// Σ_j s_j[r, i] of the tile.
fn score_at(r: u32, i: u32) -> f32 {
    return sT[i * Q + r / 4u][r % 4u];
}

/// θ[r, i] ← v.
fn set_theta(r: u32, i: u32, v: f32) {
    thT[i * Q + r / 4u][r % 4u] = v;
}

// ---- chain state, prior, moves ---------------------------------------------------------

/// ∇log p(θ)[r, i] of the tile from the last evaluation.
fn prior_at(r: u32, i: u32) -> f32 {
    return gT[i * Q + r / 4u][r % 4u];
}

/// gT = ∇log p(θ) for the tile where the CPU evaluates it (w_k ≠ 0), else 0: s_i·g_i(u),
/// u_j = m_j + s_j·θ_j (top comment), the Gaussian's sum over j in order.
fn prior_score(w_f: f32, tid: u32) {
    for (var idx = tid; idx < TILE * D; idx += THREADS) {
        let r = idx / D;
        let i = idx % D;
        var g = 0.0;
        if (w_f != 0.0) {
            if (p.prior_kind == PRIOR_LOGISTIC) {
                let u = prior[i] + prior[D + i] * theta_at(r, i);
                let e = exp(-abs(u));
                let sigma = select(e / (1.0 + e), 1.0 / (1.0 + e), u >= 0.0);
                g = 1.0 - 2.0 * sigma;
            } else {
                var sum = 0.0;
                for (var j = 0u; j < D; j++) {
                    let u = prior[j] + prior[D + j] * theta_at(r, j);
                    sum = sum + prior[3u * D + i * D + j] * (u - prior[2u * D + j]);
                }
                g = -sum;
            }
            g = g * prior[D + i];
        }
        gT[i * Q + r / 4u][r % 4u] = g;
    }
    workgroupBarrier();
}

/// θ of the tile: the initial draw θ = z·√(1/n) at step 0 on the first dispatch, else the
/// state the previous dispatch left.
fn load_or_init(tile: u32, first_lane: u32, tid: u32) {
    if (p.init != 0u) {
        for (var idx = tid; idx < TILE * NB; idx += THREADS) {
            let r = idx / NB;
            let b = idx % NB;
            let z = noise4(0u, first_lane + r, b);
            for (var e = 0u; e < 4u; e++) {
                let i = 4u * b + e;
                if (i < D) {
                    set_theta(r, i, z[e] * p.init_std);
                }
            }
        }
    } else if (tile < p.tiles) {
        for (var idx = tid; idx < TILE * D; idx += THREADS) {
            set_theta(idx / D, idx % D, state[tile * TILE * D + idx]);
        }
    }
    workgroupBarrier();
}

/// Writes the tile's θ back to `state`.
fn store_state(tile: u32, tid: u32) {
    workgroupBarrier();
    if (tile < p.tiles) {
        for (var idx = tid; idx < TILE * D; idx += THREADS) {
            state[tile * TILE * D + idx] = theta_at(idx / D, idx % D);
        }
    }
}

/// langevin_move: θ ← θ + (a·s + b·z), s = Σ_j s_j + w·g with g = ∇log p(θ) from the last
/// evaluation, z the row's normals at `step`; (a, b) = (a_all, b_all), or the corrector's `coef` when `use_coef`.
fn langevin_move(w_f: f32, step: u32, first_lane: u32, use_coef: bool, a_all: f32, b_all: f32, tid: u32) {
    var a = a_all;
    var bb = b_all;
    if (use_coef) {
        a = coef[0];
        bb = coef[1];
    }
    for (var idx = tid; idx < TILE * NB; idx += THREADS) {
        let r = idx / NB;
        let b = idx % NB;
        let z = noise4(step, first_lane + r, b);
        for (var e = 0u; e < 4u; e++) {
            let i = 4u * b + e;
            if (i < D) {
                let th = theta_at(r, i);
                let s = score_at(r, i) + w_f * prior_at(r, i);
                set_theta(r, i, th + (a * s + bb * z[e]));
            }
        }
    }
    workgroupBarrier();
}

/// The corrector's step size for the tile's lane group: norm2[r] = ‖Σ_j s_j + w·∇log p‖²,
/// the mean over the group's rows that are samples (lane < num), summed in lane order,
/// ε = 2r²d / max(mean, MIN_POSITIVE); coef = (ε, √(2ε)).
fn corrector_coefficients(w_f: f32, first_lane: u32, tid: u32) {
    for (var r = tid; r < TILE; r += THREADS) {
        var sq = 0.0;
        for (var i = 0u; i < D; i++) {
            let v = score_at(r, i) + w_f * prior_at(r, i);
            sq = sq + v * v;
        }
        norm2[r] = sq;
    }
    workgroupBarrier();
    if (tid == 0u) {
        var count = 0u;
        if (p.num > first_lane) {
            count = min(TILE, p.num - first_lane);
        }
        var total = 0.0;
        for (var r = 0u; r < count; r++) {
            total = total + norm2[r];
        }
        var eps = 0.0;
        if (count > 0u) {
            let mean = total / f32(count);
            eps = p.corrector_numer / max(mean, F32_MIN_POSITIVE);
        }
        coef[0] = eps;
        coef[1] = sqrt(2.0 * eps);
    }
    workgroupBarrier();
}

/// Chain steps of level k: `predictor` steps, then the corrector's where k is corrected.
fn level_steps(k: u32, predictor: u32) -> u32 {
    return predictor + select(0u, p.corrector_steps, k <= p.corrector_levels);
}

/// The part of level k's steps this dispatch runs, as (first, end) indices within the level
/// (top comment): the level's steps are numbers first_step .. first_step + count − 1.
fn level_range(first_step: u32, count: u32) -> vec2<u32> {
    let lo = max(p.step_lo, first_step);
    let hi = min(p.step_hi, first_step + count);
    return vec2<u32>(lo - first_step, max(hi, lo) - first_step);
}

/// One corrector step at level k (run_tile): evaluate, size the step, move, with the
/// normals of chain step `step`.
fn corrector_step(k: u32, first_lane: u32, step: u32, tid: u32) {
    let w_f = level[8u * k + 1u];
    evaluate(k, level[8u * k], w_f, tid);
    corrector_coefficients(w_f, first_lane, tid);
    langevin_move(w_f, step, first_lane, true, 0.0, 0.0, tid);
}
