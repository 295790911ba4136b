// score_sampler.cuh: what the fused samplers (sample_diffusion.cu, sample_langevin.cu)
// share: the score network of src/samplers/score_plan.rs evaluated for one tile of
// samples held in shared memory, the prior's score in the sampler's space, the Philox noise
// of the sampler contract, the Langevin move and the corrector of src/samplers/mod.rs. The CPU functions named below define what
// each piece computes (DESIGN.md, contract 2); the arithmetic follows them operation by
// operation (no FMA contraction where the CPU rounds twice: __fadd_rn / __fmul_rn), except
// the dot products of the dense layers, whose summation order differs from the CPU's sgemm
// (f32 rounding only; see src/samplers/cuda.rs for the tolerance).
//
// Block shape: SAMPLER_THREADS = 256 threads own SAMPLER_TILE = 64 consecutive samples
// (lanes tile·64 .. tile·64+63), two whole CORRECTOR_GROUPs, so the corrector's group mean
// of ‖s‖² is a reduction inside the block in a fixed order.
//
// Dense layer y[r, o] = Σ_k x[r, k]·Wᵀ[k, o] + b[o] (ScorePlan's Dense::apply; the host
// uploads every weight transposed, [in, out] row-major): thread t computes rows
// r = t/32 + 8i (i = 0..7) and columns o = t%32 + 32c (c < NC), NC = ⌈out/32⌉ rounded up to
// a power of two (≤ 8, so widths ≤ 256), keeping the 8·NC sums in registers. Wᵀ streams
// through shared memory in slabs of SAMPLER_KC input rows × 32·NC columns (zero-padded past
// `out`); every warp reads one activation element per row (a broadcast) and 32
// consecutive weights (no bank conflicts) per k. Activations stay in shared memory.
//
// Shared memory (dynamic, see `sampler_smem_floats` and src/samplers/cuda.rs):
//   norm2  double[64]              ‖s‖² per row (corrector)
//   h      float[64·width]         θ-path hidden state, then the head's hidden state
//   tp     float[64·width]         (W_θ·W_o)·h + W_θ·b_o, the θ part of the head input
//   slab   float[KC·32·NC_max]     one slab of a transposed weight matrix
//   theta  float[64·d]             the chain state
//   sum_s  float[64·d]             Σ_j s_ψ(θ, k, x_j)
//   g      float[64·d]             ∇log p(θ) (0 where the prior's weight w_k is 0)
//   coef   float[2·2]              the corrector's (ε, √(2ε)) per lane group
//
// Layer table: `offsets[2l]`, `offsets[2l + 1]` are the offsets in `params` of layer l's
// transposed weight and bias: l = 0 the θ-MLP input layer (d → width), 1..=nbt its residual
// blocks, nbt + 1 the folded θ output (width → width), nbt + 2 .. nbt + 1 + nbh the head's
// residual blocks, nbt + nbh + 2 the head output (width → d).
//
// Prior (GpuPrior::tables, StandardizedPrior::prior_score): the sampler's θ̃ is the prior's
// unconstrained u = B⁻¹(θ) standardized, u = m + s ⊙ θ̃, and
//   ∇log p(θ̃) = s ⊙ g(u),  g(u) = −P·(u − c)     (SAMPLER_PRIOR_GAUSSIAN: Gaussian prior,
//                                                  log-normal with P = diag(1/σ²), c = μ)
//                          g(u) = 1 − 2σ(u)        (SAMPLER_PRIOR_LOGISTIC: uniform box
//                                                  through its scaled logit)
// u in f32, g in double rounded to f32, the product with s in f32, as on the CPU.
//
// GAUSS (GaussScore::scores of src/samplers/gauss.rs, Linhart et al. 2024), when the
// kernel's `gauss_stride` is not 0: the n scores are not summed but combined by level k's
// weights at gauss + k·gauss_stride (GaussWeights::table: W_k0 … W_k,n−1, M_k row-major
// d×d each, then c_k),
//   sum_s := −M_k·(θ − c_k) + Σ_j W_kj·s_ψ(θ, k, x_j)   (the prior part first, then j in
//                                                         order, each product summed over b
//                                                         in order, f32 without contraction)
// each s_ψ(θ, k, x_j) passing through g; the host gives the chain one observation's
// coefficients and initial draw (w_k = 0, so the prior's score is not added).
//
// Gaussian base (ScorePlan::with_base, src/estimators/gaussian_base.rs), when the kernel's
// `has_base` is not 0: ε̂ = ε̂_net + (c_k ⊙ θ − s_k ⊙ m_j), so the head's output goes to g
// as ε̂_net, and sampler_base_score adds the base's ε and scales it in the CPU's order,
//   s_j = (ε̂_net + (c_k·θ − s_k·m_j))·scale,
// before s_j is summed (or passed to GAUSS). Table `base` (BaseConditioning, f32):
// m_j = A·x̃_j + b for j < n (n·d), then per level k = 0 … S: c_k (d), s_k (d).
//
// Per-level tables (index k = level, stride 8), computed on the host exactly as
// run_tile computes them (so they agree bit for bit):
//   level_f[8k + 0] = −1/√(1 − γ_k) as f32 (ε̂ → s_ψ), [1] = w_k as f32 with
//   w_k = (1 − n)(S − k)/S, [2] = σ_k (diffusion) or δ_k/2 (Langevin), [3] = √δ_k (Langevin)
//   level_d[8k + 0] = √α_k, [1] = 1 − α_k, [2] = (n − 1)√α_k, [3] = n − α_k(n − 1),
//   [4] = σ_k²·w_k (diffusion)

#pragma once
#include "philox.cuh"

#define SAMPLER_THREADS 256
#define SAMPLER_TILE 64
#define SAMPLER_ROWS 8
#define SAMPLER_KC 32
#define SAMPLER_GROUP 32
#define SAMPLER_GROUPS (SAMPLER_TILE / SAMPLER_GROUP)
#define SAMPLER_STREAM 3u
#define SAMPLER_DBL_MIN 2.2250738585072014e-308

#define SAMPLER_PRIOR_GAUSSIAN 0
#define SAMPLER_PRIOR_LOGISTIC 1

#define EPI_SILU 0
#define EPI_RESIDUAL 1
#define EPI_LINEAR 2
#define EPI_SCORE 3

/// The network's weights: `params` holds every transposed weight and bias, `offsets` the
/// layer table above; `base` the Gaussian base's table (header comment), or null.
struct SamplerNet {
    const float* params;
    const int* offsets;
    int nbt;
    int nbh;
    int d;
    int w;
    const float* base;
};

/// The prior's tables (header comment): kind, m [d], s [d], c [d], P [d, d].
struct SamplerPrior {
    int kind;
    const float* shift;
    const float* scale;
    const double* center;
    const double* precision;
};

/// σ(x) without overflow for either sign (UnaryOp::Sigmoid on the CPU).
__device__ __forceinline__ float sampler_sigmoid(float x) {
    if (x >= 0.0f) {
        return 1.0f / (1.0f + expf(-x));
    }
    const float e = expf(x);
    return e / (1.0f + e);
}

/// σ(x) in double, the form of priors.rs's sigmoid.
__device__ __forceinline__ double sampler_sigmoid_d(double x) {
    if (x >= 0.0) {
        return 1.0 / (1.0 + exp(-x));
    }
    const double e = exp(x);
    return e / (1.0 + e);
}

/// SiLU, the score network's activation (SCORE_ACTIVATION): x·σ(x).
__device__ __forceinline__ float sampler_silu(float x) { return __fmul_rn(x, sampler_sigmoid(x)); }

/// Columns per thread for `out` outputs: ⌈out/32⌉ rounded up to a power of two.
__device__ __host__ __forceinline__ int sampler_nc(int out) {
    const int c = (out + 31) / 32;
    return c <= 1 ? 1 : c <= 2 ? 2 : c <= 4 ? 4 : 8;
}

/// One dense layer over the tile: acc[r, o] = Σ_k in[r, k]·wt[k, o], then the epilogue
///   EPI_SILU      out[r, o] = silu(acc + b)
///   EPI_RESIDUAL  out[r, o] = out[r, o] + silu(acc + b)     (out == in, in place)
///   EPI_LINEAR    out[r, o] = acc + b
///   EPI_SCORE     s = (acc + b)·scale; out[r, o] = first ? s : out[r, o] + s
/// Called by every thread of the block; starts and ends with a barrier.
template <int NC, int EPI>
__device__ __noinline__ void sampler_dense(const float* __restrict__ wt, const float* __restrict__ bias,
                              int k_in, int n_out, const float* in, int ld_in, float* out,
                              int ld_out, float* slab, float scale, bool first) {
    const int tid = threadIdx.x;
    const int lane = tid & 31;
    const int rg = tid >> 5;
    const int cols = 32 * NC;
    float acc[SAMPLER_ROWS][NC];
#pragma unroll
    for (int i = 0; i < SAMPLER_ROWS; ++i) {
#pragma unroll
        for (int c = 0; c < NC; ++c) acc[i][c] = 0.0f;
    }
    for (int k0 = 0; k0 < k_in; k0 += SAMPLER_KC) {
        const int kc = min(SAMPLER_KC, k_in - k0);
        // The previous slab is consumed and `in` (written by the previous step) visible.
        __syncthreads();
        for (int idx = tid; idx < SAMPLER_KC * cols; idx += SAMPLER_THREADS) {
            const int kk = idx / cols;
            const int o = idx - kk * cols;
            slab[idx] = (kk < kc && o < n_out) ? wt[(long long)(k0 + kk) * n_out + o] : 0.0f;
        }
        __syncthreads();
#pragma unroll 4
        for (int kk = 0; kk < kc; ++kk) {
            float a[SAMPLER_ROWS];
#pragma unroll
            for (int i = 0; i < SAMPLER_ROWS; ++i) a[i] = in[(rg + 8 * i) * ld_in + k0 + kk];
#pragma unroll
            for (int c = 0; c < NC; ++c) {
                const float wv = slab[kk * cols + lane + 32 * c];
#pragma unroll
                for (int i = 0; i < SAMPLER_ROWS; ++i) acc[i][c] = fmaf(a[i], wv, acc[i][c]);
            }
        }
    }
    // Every read of `in` is done: the in-place epilogue may write.
    __syncthreads();
#pragma unroll
    for (int i = 0; i < SAMPLER_ROWS; ++i) {
        const int r = rg + 8 * i;
#pragma unroll
        for (int c = 0; c < NC; ++c) {
            const int o = lane + 32 * c;
            if (o < n_out) {
                const float y = __fadd_rn(acc[i][c], bias[o]);
                float* dst = out + r * ld_out + o;
                if (EPI == EPI_SILU) {
                    *dst = sampler_silu(y);
                } else if (EPI == EPI_RESIDUAL) {
                    *dst = __fadd_rn(*dst, sampler_silu(y));
                } else if (EPI == EPI_LINEAR) {
                    *dst = y;
                } else {
                    const float s = __fmul_rn(y, scale);
                    *dst = first ? s : __fadd_rn(*dst, s);
                }
            }
        }
    }
    __syncthreads();
}

/// sampler_dense with NC chosen for `n_out` (≤ 256).
template <int EPI>
__device__ void sampler_dense_any(const float* wt, const float* bias, int k_in, int n_out,
                                  const float* in, int ld_in, float* out, int ld_out,
                                  float* slab, float scale, bool first) {
    switch (sampler_nc(n_out)) {
        case 1:
            sampler_dense<1, EPI>(wt, bias, k_in, n_out, in, ld_in, out, ld_out, slab, scale, first);
            break;
        case 2:
            sampler_dense<2, EPI>(wt, bias, k_in, n_out, in, ld_in, out, ld_out, slab, scale, first);
            break;
        case 4:
            sampler_dense<4, EPI>(wt, bias, k_in, n_out, in, ld_in, out, ld_out, slab, scale, first);
            break;
        default:
            sampler_dense<8, EPI>(wt, bias, k_in, n_out, in, ld_in, out, ld_out, slab, scale, first);
            break;
    }
}

__device__ __forceinline__ const float* sampler_w(const SamplerNet& net, int layer) {
    return net.params + net.offsets[2 * layer];
}

__device__ __forceinline__ const float* sampler_b(const SamplerNet& net, int layer) {
    return net.params + net.offsets[2 * layer + 1];
}

/// g[r, i] = ∇log p(θ_r)_i for the tile where the prior's weight w_f is not 0 (where the
/// CPU evaluates it), else 0: s_i·g_i(u) with u_j = m_j + s_j·θ_j (header comment), the
/// Gaussian's sum over j in order.
__device__ __noinline__ void sampler_prior_score(const SamplerPrior& prior, float w_f,
                                                 const float* theta, int d, float* g) {
    for (int idx = threadIdx.x; idx < SAMPLER_TILE * d; idx += SAMPLER_THREADS) {
        const int r = idx / d;
        const int i = idx - r * d;
        float gi = 0.0f;
        if (w_f != 0.0f) {
            double gu;
            if (prior.kind == SAMPLER_PRIOR_LOGISTIC) {
                const float u = __fadd_rn(prior.shift[i], __fmul_rn(prior.scale[i], theta[idx]));
                gu = __dsub_rn(1.0, __dmul_rn(2.0, sampler_sigmoid_d((double)u)));
            } else {
                double sum = 0.0;
                for (int j = 0; j < d; ++j) {
                    const float u =
                        __fadd_rn(prior.shift[j], __fmul_rn(prior.scale[j], theta[r * d + j]));
                    sum = __dadd_rn(sum, __dmul_rn(prior.precision[(long long)i * d + j],
                                                   __dsub_rn((double)u, prior.center[j])));
                }
                gu = -sum;
            }
            gi = __fmul_rn((float)gu, prior.scale[i]);
        }
        g[idx] = gi;
    }
    __syncthreads();
}

/// GAUSS, first part (header comment): sum_s[r, a] = −Σ_b M[a, b]·(θ[r, b] − c[b]).
__device__ __noinline__ void sampler_gauss_prior(const float* m, const float* c, const float* theta,
                                                 int d, float* sum_s) {
    for (int idx = threadIdx.x; idx < SAMPLER_TILE * d; idx += SAMPLER_THREADS) {
        const int r = idx / d;
        const int a = idx - r * d;
        float sum = 0.0f;
        for (int b = 0; b < d; ++b) {
            sum = __fadd_rn(sum, __fmul_rn(m[a * d + b], __fsub_rn(theta[r * d + b], c[b])));
        }
        sum_s[idx] = -sum;
    }
    __syncthreads();
}

/// GAUSS, observation j: sum_s[r, a] += Σ_b W_j[a, b]·s_j[r, b].
__device__ __noinline__ void sampler_gauss_observation(const float* wj, const float* s_j, int d,
                                                       float* sum_s) {
    for (int idx = threadIdx.x; idx < SAMPLER_TILE * d; idx += SAMPLER_THREADS) {
        const int r = idx / d;
        const int a = idx - r * d;
        float sum = 0.0f;
        for (int b = 0; b < d; ++b) sum = __fadd_rn(sum, __fmul_rn(wj[a * d + b], s_j[r * d + b]));
        sum_s[idx] = __fadd_rn(sum_s[idx], sum);
    }
    __syncthreads();
}

/// The Gaussian base's share of observation j at `level` (header comment): with ε̂_net in
/// g, s_j = (ε̂_net + (c·θ − s·m_j))·scale goes to g under GAUSS (`to_g`), else is summed
/// into sum_s (replacing it when `first`).
__device__ __noinline__ void sampler_base_score(const SamplerNet& net, int n_obs, int level, int j,
                                                const float* theta, float scale, bool to_g,
                                                bool first, float* g, float* sum_s) {
    const int d = net.d;
    const float* m = net.base + (long long)j * d;
    const float* c = net.base + (long long)n_obs * d + 2LL * level * d;
    for (int idx = threadIdx.x; idx < SAMPLER_TILE * d; idx += SAMPLER_THREADS) {
        const int i = idx % d;
        const float base_eps = __fsub_rn(__fmul_rn(c[i], theta[idx]), __fmul_rn(c[d + i], m[i]));
        const float s = __fmul_rn(__fadd_rn(g[idx], base_eps), scale);
        if (to_g) {
            g[idx] = s;
        } else {
            sum_s[idx] = first ? s : __fadd_rn(sum_s[idx], s);
        }
    }
    __syncthreads();
}

/// sum_s[r, :] = Σ_j s_ψ(θ_r, level, x_j) = Σ_j scale·ε̂(θ_r, t_level, x_j) for the tile
/// (ScorePlan::eps_hat, LearnedScore::scores and the Σ_j of TileState::evaluate): the θ
/// path once per sample, the head's blocks and output once per (sample, observation),
/// observations summed in order j = 0, 1, …, or combined by GAUSS's weights `gauss` of
/// this level when it is not null; then g = ∇log p(θ) (sampler_prior_score).
__device__ __noinline__ void sampler_evaluate(const SamplerNet& net, const float* x_part, int n_obs,
                                 const float* t_part, int level, float scale,
                                 const SamplerPrior& prior, float w_f, const float* gauss,
                                 const float* theta, float* h, float* tp, float* sum_s, float* g,
                                 float* slab) {
    const int d = net.d;
    const int w = net.w;
    sampler_dense_any<EPI_SILU>(sampler_w(net, 0), sampler_b(net, 0), d, w, theta, d, h, w,
                                slab, 0.0f, false);
    for (int b = 0; b < net.nbt; ++b) {
        sampler_dense_any<EPI_RESIDUAL>(sampler_w(net, 1 + b), sampler_b(net, 1 + b), w, w, h,
                                        w, h, w, slab, 0.0f, false);
    }
    sampler_dense_any<EPI_LINEAR>(sampler_w(net, net.nbt + 1), sampler_b(net, net.nbt + 1), w,
                                  w, h, w, tp, w, slab, 0.0f, false);
    const float* tk = t_part + (long long)level * w;
    const int out_layer = net.nbt + net.nbh + 2;
    if (gauss) {
        sampler_gauss_prior(gauss + (long long)n_obs * d * d,
                            gauss + (long long)(n_obs + 1) * d * d, theta, d, sum_s);
    }
    for (int j = 0; j < n_obs; ++j) {
        const float* xj = x_part + (long long)j * w;
        // Head input: silu((θ part + x part) + t part), in the CPU's order.
        for (int idx = threadIdx.x; idx < SAMPLER_TILE * w; idx += SAMPLER_THREADS) {
            const int i = idx % w;
            h[idx] = sampler_silu(__fadd_rn(__fadd_rn(tp[idx], xj[i]), tk[i]));
        }
        for (int b = 0; b < net.nbh; ++b) {
            const int l = net.nbt + 2 + b;
            sampler_dense_any<EPI_RESIDUAL>(sampler_w(net, l), sampler_b(net, l), w, w, h, w, h,
                                            w, slab, 0.0f, false);
        }
        if (net.base) {
            // ε̂_net alone, into g (free until sampler_prior_score below).
            sampler_dense_any<EPI_LINEAR>(sampler_w(net, out_layer), sampler_b(net, out_layer), w,
                                          d, h, w, g, d, slab, 0.0f, false);
            sampler_base_score(net, n_obs, level, j, theta, scale, gauss != nullptr, j == 0, g,
                               sum_s);
            if (gauss) sampler_gauss_observation(gauss + (long long)j * d * d, g, d, sum_s);
        } else if (gauss) {
            // s_j alone, into g (free until sampler_prior_score below).
            sampler_dense_any<EPI_SCORE>(sampler_w(net, out_layer), sampler_b(net, out_layer), w,
                                         d, h, w, g, d, slab, scale, true);
            sampler_gauss_observation(gauss + (long long)j * d * d, g, d, sum_s);
        } else {
            sampler_dense_any<EPI_SCORE>(sampler_w(net, out_layer), sampler_b(net, out_layer), w,
                                         d, h, w, sum_s, d, slab, scale, j == 0);
        }
    }
    sampler_prior_score(prior, w_f, theta, d, g);
}

/// Normals 4b .. 4b+3 of sample `lane` at chain step `step`: block b of
/// PhiloxStream::at_step(seed, streams::SAMPLER, step, lane), Box–Muller on words (0, 1)
/// then (2, 3).
__device__ __forceinline__ void sampler_noise4(uint2 key, unsigned int step, unsigned int lane,
                                               int block, float z[4]) {
    const uint4 wv =
        philox4x32_10(make_uint4(SAMPLER_STREAM, step, lane, (unsigned int)block), key);
    const float2 z01 = box_muller(wv.x, wv.y);
    const float2 z23 = box_muller(wv.z, wv.w);
    z[0] = z01.x;
    z[1] = z01.y;
    z[2] = z23.x;
    z[3] = z23.y;
}

/// The initial draw θ ~ N(0, I/n) at step 0: θ = z·init_std.
__device__ __noinline__ void sampler_init(float* theta, int d, uint2 key, unsigned int first_lane,
                             float init_std) {
    const int nb = (d + 3) / 4;
    for (int idx = threadIdx.x; idx < SAMPLER_TILE * nb; idx += SAMPLER_THREADS) {
        const int r = idx / nb;
        const int b = idx - r * nb;
        float z[4];
        sampler_noise4(key, 0u, first_lane + (unsigned int)r, b, z);
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int i = 4 * b + e;
            if (i < d) theta[r * d + i] = __fmul_rn(z[e], init_std);
        }
    }
    __syncthreads();
}

/// langevin_move: θ ← θ + a·s + b·z, s = Σ_j s_j + w·g with g = ∇log p(θ) from the last
/// evaluation, z the row's normals at `step`; (a, b) = (a_all, b_all), or the row's lane
/// group's coefficients when `group` is not null.
__device__ __noinline__ void sampler_langevin_move(float* theta, const float* sum_s,
                                      const float* g, int d, float w_f,
                                      uint2 key, unsigned int step, unsigned int first_lane,
                                      const float* group, float a_all, float b_all) {
    const int nb = (d + 3) / 4;
    for (int idx = threadIdx.x; idx < SAMPLER_TILE * nb; idx += SAMPLER_THREADS) {
        const int r = idx / nb;
        const int b = idx - r * nb;
        float z[4];
        sampler_noise4(key, step, first_lane + (unsigned int)r, b, z);
        const float a = group ? group[2 * (r / SAMPLER_GROUP)] : a_all;
        const float bb = group ? group[2 * (r / SAMPLER_GROUP) + 1] : b_all;
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int i = 4 * b + e;
            if (i < d) {
                const float th = theta[r * d + i];
                const float s = __fadd_rn(sum_s[r * d + i], __fmul_rn(w_f, g[r * d + i]));
                theta[r * d + i] = __fadd_rn(th, __fadd_rn(__fmul_rn(a, s), __fmul_rn(bb, z[e])));
            }
        }
    }
    __syncthreads();
}

/// The corrector's step sizes: norm2[r] = ‖Σ_j s_j + w·g‖² (in double, i in order),
/// then for each lane group of SAMPLER_GROUP rows the mean over its rows that are samples
/// (lane < num), ε = numer/max(mean, DBL_MIN) with numer = 2r²d, and
/// group[2g] = ε as f32, group[2g + 1] = √(2ε) as f32 (run_tile's corrector).
__device__ __noinline__ void sampler_corrector_coefficients(const float* sum_s, const float* g, int d,
                                               float w_f, unsigned int first_lane, int num,
                                               double numer, double* norm2, float* group) {
    for (int r = threadIdx.x; r < SAMPLER_TILE; r += SAMPLER_THREADS) {
        double acc = 0.0;
        for (int i = 0; i < d; ++i) {
            const float v = __fadd_rn(sum_s[r * d + i], __fmul_rn(w_f, g[r * d + i]));
            acc = __dadd_rn(acc, __dmul_rn((double)v, (double)v));
        }
        norm2[r] = acc;
    }
    __syncthreads();
    if (threadIdx.x < SAMPLER_GROUPS) {
        const int g = threadIdx.x;
        double sum = 0.0;
        int count = 0;
        for (int q = 0; q < SAMPLER_GROUP; ++q) {
            const int r = g * SAMPLER_GROUP + q;
            if ((long long)first_lane + r < (long long)num) {
                sum = __dadd_rn(sum, norm2[r]);
                ++count;
            }
        }
        float eps_f = 0.0f;
        float noise_f = 0.0f;
        if (count > 0) {
            const double mean = __ddiv_rn(sum, (double)count);
            const double eps = __ddiv_rn(numer, fmax(mean, SAMPLER_DBL_MIN));
            eps_f = (float)eps;
            noise_f = (float)__dsqrt_rn(__dmul_rn(2.0, eps));
        }
        group[2 * g] = eps_f;
        group[2 * g + 1] = noise_f;
    }
    __syncthreads();
}

/// Floats of dynamic shared memory a sampler block needs (norm2 counted as 2·64 floats);
/// src/samplers/cuda.rs computes the same.
__device__ __host__ __forceinline__ long long sampler_smem_floats(int d, int w) {
    const int nc = sampler_nc(w > d ? w : d);
    return 2LL * SAMPLER_TILE + 2LL * SAMPLER_TILE * w + (long long)SAMPLER_KC * 32 * nc +
           3LL * SAMPLER_TILE * d + 2 * SAMPLER_GROUPS;
}

/// Pointers into the dynamic shared memory, in the order of the header comment.
struct SamplerSmem {
    double* norm2;
    float* h;
    float* tp;
    float* slab;
    float* theta;
    float* sum_s;
    float* g;
    float* group;
};

__device__ __forceinline__ SamplerSmem sampler_smem(double* base, int d, int w) {
    SamplerSmem s;
    s.norm2 = base;
    s.h = (float*)(base + SAMPLER_TILE);
    s.tp = s.h + SAMPLER_TILE * w;
    s.slab = s.tp + SAMPLER_TILE * w;
    s.theta = s.slab + SAMPLER_KC * 32 * sampler_nc(w > d ? w : d);
    s.sum_s = s.theta + SAMPLER_TILE * d;
    s.g = s.sum_s + SAMPLER_TILE * d;
    s.group = s.g + SAMPLER_TILE * d;
    return s;
}

/// GAUSS's weights of level k (header comment), or null when `stride` is 0.
__device__ __forceinline__ const float* sampler_gauss_level(const float* gauss, int stride, int k) {
    return stride ? gauss + (long long)k * stride : nullptr;
}

/// The corrector after the predictor at level k (run_tile): `steps` times, evaluate the
/// score, size the step per lane group, move. Advances `step` by `steps`.
__device__ void sampler_corrector(const SamplerNet& net, const float* x_part, int n_obs,
                                  const float* t_part, int level, const float* lf,
                                  const SamplerPrior& prior, const float* gauss,
                                  const SamplerSmem& sm, uint2 key, unsigned int first_lane,
                                  int num, int steps, double numer, unsigned int* step) {
    for (int c = 0; c < steps; ++c) {
        sampler_evaluate(net, x_part, n_obs, t_part, level, lf[0], prior, lf[1], gauss, sm.theta,
                         sm.h, sm.tp, sm.sum_s, sm.g, sm.slab);
        sampler_corrector_coefficients(sm.sum_s, sm.g, net.d, lf[1], first_lane, num, numer,
                                       sm.norm2, sm.group);
        sampler_langevin_move(sm.theta, sm.sum_s, sm.g, net.d, lf[1], key, *step, first_lane,
                              sm.group, 0.0f, 0.0f);
        *step += 1;
    }
}

/// Writes the tile's samples (lanes < num) to out [num, d].
__device__ void sampler_store(float* out, const float* theta, int d, unsigned int first_lane,
                              int num) {
    for (int idx = threadIdx.x; idx < SAMPLER_TILE * d; idx += SAMPLER_THREADS) {
        const long long g = (long long)first_lane * d + idx;
        if (g < (long long)num * d) out[g] = theta[idx];
    }
}
