// sample_diffusion.wgsl: Algorithm 2 of Geffner et al. (composed Gaussian transitions),
// every sample's whole chain in one dispatch (or a few, see score_sampler.wgsl). The CPU
// reference is samplers::sample with Algorithm::Diffusion (src/samplers/mod.rs, run_tile);
// same seed, same Philox stream, so whole trajectories compare. Compiled after
// score_sampler.wgsl (network, noise, corrector, bindings, workgroup layout).
//
// With levels γ_0 = 1 > γ_1 > … > γ_S = 0, α_1 = γ_1, α_k = γ_k/γ_{k−1}, β_k = 1 − α_k,
// s_ψ = −ε̂/√(1 − γ_k) and w_k = (1 − n)(S − k)/S:
//   θ ~ N(0, I/n)                                                      (step 0)
//   for k = S−1 … 1:                                                   (steps 1, 2, …)
//     μ_jk = (θ + (1 − α_k) s_ψ(θ, k, x_j))/√α_k,   σ_k² = β_k/(n − α_k(n − 1)),
//     μ_k = (Σ_j μ_jk − (n − 1)√α_k θ)/(n − α_k(n − 1)) + σ_k² w_k ∇log p(θ),
//     θ ~ N(μ_k, σ_k² I)
//     if k ≤ corrector levels, `corrector steps` times (one chain step each):
//       θ ← θ + ε·s(θ, k) + √(2ε)·z,  s = Σ_j s_ψ + w_k ∇log p,
//       ε = 2r²d / mean over the lane group (32 lanes) of ‖s‖²
// ∇log p(θ) is the prior's score in the sampler's standardized unconstrained space,
// s ⊙ g(m + s ⊙ θ) with g(u) = −P·(u − c) (Gaussian, log-normal) or 1 − 2σ(u) (uniform
// box), evaluated where w_k ≠ 0 (n > 1) once per network pass (score_sampler.wgsl).
// In f32 the mean is evaluated in the algebraically equal form without cancellation
//   μ_k = θ/√α_k + (1 − α_k)/(√α_k (n − α_k(n − 1)))·Σ_j s_ψ + σ_k² w_k ∇log p(θ)
// (since (n − (n − 1)α_k)/(√α_k (n − α_k(n − 1))) = 1/√α_k), the three coefficients
// computed per level by the host in f64 and rounded once; the CPU computes the first form
// in f64.
// Sample `lane` at chain step `step` draws its normals from Philox counter
// (3, step, lane, b), key = seed: normals 4b..4b+3 from block b.
//
// FLOPs per draw (2 per multiply-add, ScorePlan::macs_per_step):
//   2·[d·W + nbt·W² + W² + n·(nbh·W² + W·d)] per network pass (W = width, nbt = nbh =
//   hidden_layers − 1), one pass per level (S − 1 levels) plus one per corrector step;
//   SiLU (one exp each), the update and the noise (one Philox block per 4 coordinates) are
//   O(W·(1 + n) + d) per pass and not counted, nor is the prior's score (n > 1 only: d²
//   multiply-adds per sample and pass for a Gaussian or log-normal prior, d for a box). The bench's network (d = 10, W = 64, 2 + 2
//   blocks), n = 1: 2·(640 + 2·4096 + 4096 + 2·4096 + 640) = 43 520 FLOP per level,
//   ≈ 2.1 MFLOP per draw at S = 50; gaussian10 (W = 128, S = 400): ≈ 67 MFLOP per draw.
//
// Dispatch: ⌈num/32⌉ workgroups of THREADS invocations (folded into y past 65 535), workgroup
// t owns lanes 32t .. 32t+31.

@compute @workgroup_size(THREADS)
fn sample_diffusion(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
) {
    let tile = wid.y * nwg.x + wid.x;
    let first_lane = tile * TILE;
    load_or_init(tile, first_lane, tid);
    var first_step = p.step0;
    for (var k = p.k_hi; k >= p.k_lo; k--) {
        let count = level_steps(k, 1u);
        let range = level_range(first_step, count);
        for (var sub = range.x; sub < range.y; sub++) {
            let step = first_step + sub;
            if (sub > 0u) {
                corrector_step(k, first_lane, step, tid);
                continue;
            }
            let lf = 8u * k;
            let w_f = level[lf + 1u];
            evaluate(k, level[lf], w_f, tid);
            let sigma = level[lf + 2u];
            let c_theta = level[lf + 3u];
            let c_score = level[lf + 4u];
            let c_prior = level[lf + 5u];
            for (var idx = tid; idx < TILE * NB; idx += THREADS) {
                let r = idx / NB;
                let b = idx % NB;
                let z = noise4(step, first_lane + r, b);
                for (var e = 0u; e < 4u; e++) {
                    let i = 4u * b + e;
                    if (i < D) {
                        let th = theta_at(r, i);
                        let mean = c_theta * th + c_score * score_at(r, i) + c_prior * prior_at(r, i);
                        set_theta(r, i, mean + sigma * z[e]);
                    }
                }
            }
            workgroupBarrier();
        }
        first_step += count;
    }
    store_state(tile, tid);
}
