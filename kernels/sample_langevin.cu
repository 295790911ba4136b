// sample_langevin: Algorithm 1 of Geffner et al. (annealed Langevin on the composed
// score), the whole chain of every sample in one launch. The CPU reference is
// samplers::sample with Algorithm::Langevin (src/samplers/mod.rs, run_tile); same seed,
// same Philox stream, so whole trajectories compare.
//
// With levels γ_0 = 1 > γ_1 > … > γ_S = 0, α_1 = γ_1, α_k = γ_k/γ_{k−1}, the network ε̂ of
// src/samplers/score_plan.rs (s_ψ = −ε̂/√(1 − γ_k)) and the composed score
//   s(θ, k) = (1 − n)(S − k)/S · ∇log p(θ) + Σ_j s_ψ(θ, k, x_j):
//   θ ~ N(0, I/n)                                                      (step 0)
//   for k = S−1 … 1, L times (one step each):
//     θ ← θ + δ_k/2 · s(θ, k) + √δ_k · η,   δ_k = 0.05·(1 − α_k)/√α_k
//   then, if k ≤ corrector levels, `corrector steps` times (one step each):
//     θ ← θ + ε·s(θ, k) + √(2ε)·z,  ε = 2r²d / mean over the lane group (32 lanes) of ‖s‖²
// ∇log p(θ) is the prior's score in the sampler's standardized unconstrained space,
// s ⊙ g(m + s ⊙ θ) with g(u) = −P·(u − c) (Gaussian, log-normal) or 1 − 2σ(u) (uniform
// box), evaluated where w_k ≠ 0 (n > 1) once per network pass (score_sampler.cuh).
// A Gaussian base under the network (has_base ≠ 0, score_sampler.cuh) adds its ε to ε̂.
// GAUSS (gauss_stride ≠ 0, score_sampler.cuh): Σ_j s_ψ is GAUSS's composed score, the
// chain's n is 1 (w_k = 0, init_std = 1, from the host).
// Sample `lane` at chain step `step` draws its normals from Philox counter
// (3, step, lane, b), key = seed: normals 4b..4b+3 from block b (score_sampler.cuh).
//
// FLOPs per draw (2 per multiply-add, ScorePlan::macs_per_step):
//   2·[d·W + nbt·W² + W² + n·(nbh·W² + W·d)] per network pass (W = width, nbt = nbh =
//   hidden_layers − 1), L passes per level (S − 1 levels) plus one per corrector step;
//   activations, updates and noise are O(W·(1 + n) + d) per pass and not counted, nor is
//   the prior's score (n > 1 only: d² multiply-adds per sample and pass, d for a box).
//   gaussian10 (d = 10, W = 128), n = 1: ≈ 0.17 MFLOP per pass, L = 50, S = 400:
//   ≈ 3.4 GFLOP per draw.
//
// Launch: grid ⌈num/64⌉ blocks of 256 threads, block b owns lanes 64b .. 64b+63; dynamic
// shared memory sampler_smem_floats(d, width)·4 bytes (> 48 KiB: the host opts in).
#include "score_sampler.cuh"

extern "C" __global__ void __launch_bounds__(SAMPLER_THREADS)
    sample_langevin(float* out, const float* params, const int* offsets, int nbt, int nbh,
                    int d, int w, const float* x_part, int n_obs, const float* t_part,
                    int prior_kind, const float* prior_shift, const float* prior_scale,
                    const double* prior_center, const double* prior_precision,
                    const float* level_f, const double* level_d, const float* gauss,
                    int gauss_stride, const float* base, int has_base, int levels,
                    int num,
                    unsigned int seed_lo, unsigned int seed_hi, float init_std,
                    int corrector_steps, int corrector_levels, double corrector_numer,
                    int steps_per_level) {
    extern __shared__ double sampler_shared[];
    const SamplerNet net = {params, offsets, nbt, nbh, d, w, has_base ? base : nullptr};
    const SamplerPrior prior = {prior_kind, prior_shift, prior_scale, prior_center,
                                prior_precision};
    const SamplerSmem sm = sampler_smem(sampler_shared, d, w);
    const uint2 key = philox_key(seed_lo, seed_hi);
    const unsigned int first_lane = blockIdx.x * (unsigned int)SAMPLER_TILE;
    (void)level_d;

    sampler_init(sm.theta, d, key, first_lane, init_std);
    unsigned int step = 1;
    for (int k = levels - 1; k >= 1; --k) {
        const float* lf = level_f + 8 * k;
        const float* gauss_k = sampler_gauss_level(gauss, gauss_stride, k);
        for (int l = 0; l < steps_per_level; ++l) {
            sampler_evaluate(net, x_part, n_obs, t_part, k, lf[0], prior, lf[1], gauss_k, sm.theta,
                             sm.h, sm.tp, sm.sum_s, sm.g, sm.slab);
            sampler_langevin_move(sm.theta, sm.sum_s, sm.g, d, lf[1], key, step, first_lane, 0,
                                  lf[2], lf[3]);
            step += 1;
        }
        if (k <= corrector_levels) {
            sampler_corrector(net, x_part, n_obs, t_part, k, lf, prior, gauss_k, sm, key, first_lane,
                              num, corrector_steps, corrector_numer, &step);
        }
    }
    sampler_store(out, sm.theta, d, first_lane, num);
}
