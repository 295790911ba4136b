// sample_diffusion: Algorithm 2 of Geffner et al. (composed Gaussian transitions), the
// whole chain of every sample in one launch. The CPU reference is samplers::sample with
// Algorithm::Diffusion (src/samplers/mod.rs, run_tile); same seed, same Philox stream,
// so whole trajectories compare.
//
// With levels γ_0 = 1 > γ_1 > … > γ_S = 0, α_k = γ_k/γ_{k−1}, β_k = 1 − α_k, the network
// ε̂ of src/samplers/score_plan.rs (s_ψ = −ε̂/√(1 − γ_k)) and w_k = (1 − n)(S − k)/S:
//   θ ~ N(0, I/n)                                                      (step 0)
//   for k = S−1 … 1:                                                   (steps 1, 2, …)
//     μ_jk = (θ + (1 − α_k) s_ψ(θ, k, x_j))/√α_k,   σ_k² = β_k/(n − α_k(n − 1)),
//     μ_k = (Σ_j μ_jk − (n − 1)√α_k θ)/(n − α_k(n − 1)) + σ_k² w_k ∇log p(θ),
//     θ ~ N(μ_k, σ_k² I)
//     if k ≤ corrector levels, `corrector steps` times (one step each):
//       θ ← θ + ε·s(θ, k) + √(2ε)·z,  s = Σ_j s_ψ + w_k ∇log p,
//       ε = 2r²d / mean over the lane group (32 lanes) of ‖s‖²
// ∇log p(θ) is the prior's score in the sampler's standardized unconstrained space,
// s ⊙ g(m + s ⊙ θ) with g(u) = −P·(u − c) (Gaussian, log-normal) or 1 − 2σ(u) (uniform
// box), evaluated where w_k ≠ 0 (n > 1) once per network pass (score_sampler.cuh).
// Sample `lane` at chain step `step` draws its normals from Philox counter
// (3, step, lane, b), key = seed: normals 4b..4b+3 from block b (score_sampler.cuh).
// The mean is computed in double as on the CPU: Σ_j μ_jk = (nθ + (1 − α)Σ_j s_j)/√α.
// A Gaussian base under the network (has_base ≠ 0, score_sampler.cuh) adds its ε to ε̂.
// GAUSS (gauss_stride ≠ 0, score_sampler.cuh): Σ_j s_j is GAUSS's composed score and the
// chain's n is 1 (the host's level tables and init_std say the same).
//
// FLOPs per draw (2 per multiply-add, ScorePlan::macs_per_step):
//   2·[d·W + nbt·W² + W² + n·(nbh·W² + W·d)] per network pass (W = width, nbt = nbh =
//   hidden_layers − 1), one pass per level (S − 1) plus one per corrector step; the
//   activations (SiLU: one expf), the sampler update and the noise are O((W·(1 + n) + d))
//   per pass and not counted, nor is the prior's score (n > 1 only: d² multiply-adds per
//   sample and pass for a Gaussian or log-normal prior, d sigmoids for a box). gaussian10 (d = 10, W = 128, 2 + 2 blocks), n = 1:
//   2·(1280 + 2·16384 + 16384 + 2·16384 + 1280) = 2·84480 ≈ 0.17 MFLOP per level,
//   ≈ 67 MFLOP per draw at S = 400.
//
// Launch: grid ⌈num/64⌉ blocks of 256 threads, block b owns lanes 64b .. 64b+63; dynamic
// shared memory sampler_smem_floats(d, width)·4 bytes (> 48 KiB: the host opts in).
#include "score_sampler.cuh"

extern "C" __global__ void __launch_bounds__(SAMPLER_THREADS)
    sample_diffusion(float* out, const float* params, const int* offsets, int nbt, int nbh,
                     int d, int w, const float* x_part, int n_obs, const float* t_part,
                     int prior_kind, const float* prior_shift, const float* prior_scale,
                     const double* prior_center, const double* prior_precision,
                     const float* level_f, const double* level_d, const float* gauss,
                     int gauss_stride, const float* base, int has_base, int levels,
                     int num,
                     unsigned int seed_lo, unsigned int seed_hi, float init_std,
                     int corrector_steps, int corrector_levels, double corrector_numer) {
    extern __shared__ double sampler_shared[];
    const SamplerNet net = {params, offsets, nbt, nbh, d, w, has_base ? base : nullptr};
    const SamplerPrior prior = {prior_kind, prior_shift, prior_scale, prior_center,
                                prior_precision};
    const SamplerSmem sm = sampler_smem(sampler_shared, d, w);
    const uint2 key = philox_key(seed_lo, seed_hi);
    const unsigned int first_lane = blockIdx.x * (unsigned int)SAMPLER_TILE;
    // GAUSS composes the n scores into one: the chain is one observation's.
    const double nf = gauss_stride ? 1.0 : (double)n_obs;
    const int nb = (d + 3) / 4;

    sampler_init(sm.theta, d, key, first_lane, init_std);
    unsigned int step = 1;
    for (int k = levels - 1; k >= 1; --k) {
        const float* lf = level_f + 8 * k;
        const float* gauss_k = sampler_gauss_level(gauss, gauss_stride, k);
        const double* ld = level_d + 8 * k;
        sampler_evaluate(net, x_part, n_obs, t_part, k, lf[0], prior, lf[1], gauss_k, sm.theta,
                         sm.h, sm.tp, sm.sum_s, sm.g, sm.slab);
        const float sigma = lf[2];
        const double sqrt_alpha = ld[0], one_minus_alpha = ld[1], c1 = ld[2], denom = ld[3],
                     var_w = ld[4];
        for (int idx = threadIdx.x; idx < SAMPLER_TILE * nb; idx += SAMPLER_THREADS) {
            const int r = idx / nb;
            const int b = idx - r * nb;
            float z[4];
            sampler_noise4(key, step, first_lane + (unsigned int)r, b, z);
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int i = 4 * b + e;
                if (i < d) {
                    const double th = (double)sm.theta[r * d + i];
                    const double sum_mu =
                        __ddiv_rn(__dadd_rn(__dmul_rn(nf, th),
                                            __dmul_rn(one_minus_alpha, (double)sm.sum_s[r * d + i])),
                                  sqrt_alpha);
                    const double mean =
                        __dadd_rn(__ddiv_rn(__dsub_rn(sum_mu, __dmul_rn(c1, th)), denom),
                                  __dmul_rn(var_w, (double)sm.g[r * d + i]));
                    sm.theta[r * d + i] = __fadd_rn((float)mean, __fmul_rn(sigma, z[e]));
                }
            }
        }
        __syncthreads();
        step += 1;
        if (k <= corrector_levels) {
            sampler_corrector(net, x_part, n_obs, t_part, k, lf, prior, gauss_k, sm, key, first_lane,
                              num, corrector_steps, corrector_numer, &step);
        }
    }
    sampler_store(out, sm.theta, d, first_lane, num);
}
