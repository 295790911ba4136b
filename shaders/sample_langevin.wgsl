// sample_langevin.wgsl: Algorithm 1 of Geffner et al. (annealed Langevin on the composed
// score), every sample's whole chain in one dispatch (or a few, see score_sampler.wgsl).
// The CPU reference is samplers::sample with Algorithm::Langevin (src/samplers/mod.rs,
// run_tile); same seed, same Philox stream, so whole trajectories compare. Compiled after
// score_sampler.wgsl (network, noise, corrector, bindings, workgroup layout).
//
// With levels γ_0 = 1 > γ_1 > … > γ_S = 0, α_1 = γ_1, α_k = γ_k/γ_{k−1}, s_ψ = −ε̂/√(1 − γ_k)
// and the composed score s(θ, k) = (1 − n)(S − k)/S · ∇log p(θ) + Σ_j s_ψ(θ, k, x_j):
//   θ ~ N(0, I/n)                                                      (step 0)
//   for k = S−1 … 1, L times (one chain step each):
//     θ ← θ + δ_k/2 · s(θ, k) + √δ_k · η,   δ_k = 0.05·(1 − α_k)/√α_k
//   then, if k ≤ corrector levels, `corrector steps` times (one chain step each):
//     θ ← θ + ε·s(θ, k) + √(2ε)·z,  ε = 2r²d / mean over the lane group (32 lanes) of ‖s‖²
// ∇log p(θ) is the prior's score in the sampler's standardized unconstrained space,
// s ⊙ g(m + s ⊙ θ) with g(u) = −P·(u − c) (Gaussian, log-normal) or 1 − 2σ(u) (uniform
// box), evaluated where w_k ≠ 0 (n > 1) once per network pass (score_sampler.wgsl).
// Sample `lane` at chain step `step` draws its normals from Philox counter
// (3, step, lane, b), key = seed: normals 4b..4b+3 from block b.
//
// FLOPs per draw (2 per multiply-add, ScorePlan::macs_per_step):
//   2·[d·W + nbt·W² + W² + n·(nbh·W² + W·d)] per network pass (W = width, nbt = nbh =
//   hidden_layers − 1), L passes per level (S − 1 levels) plus one per corrector step;
//   activations, updates and noise are O(W·(1 + n) + d) per pass and not counted, nor is
//   the prior's score (n > 1 only: d² multiply-adds per sample and pass, d for a box).
//   d = 10, W = 64, n = 1: 43 520 FLOP per pass; gaussian10 (W = 128), L = 50, S = 400:
//   ≈ 3.4 GFLOP per draw.
//
// Dispatch: ⌈num/32⌉ workgroups of THREADS invocations (folded into y past 65 535), workgroup
// t owns lanes 32t .. 32t+31.

@compute @workgroup_size(THREADS)
fn sample_langevin(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
) {
    let tile = wid.y * nwg.x + wid.x;
    let first_lane = tile * TILE;
    load_or_init(tile, first_lane, tid);
    var first_step = p.step0;
    for (var k = p.k_hi; k >= p.k_lo; k--) {
        let count = level_steps(k, p.steps_per_level);
        let range = level_range(first_step, count);
        for (var sub = range.x; sub < range.y; sub++) {
            let step = first_step + sub;
            if (sub >= p.steps_per_level) {
                corrector_step(k, first_lane, step, tid);
                continue;
            }
            let lf = 8u * k;
            let w_f = level[lf + 1u];
            evaluate(k, level[lf], w_f, tid);
            langevin_move(w_f, step, first_lane, false, level[lf + 2u], level[lf + 3u], tid);
        }
        first_step += count;
    }
    store_state(tile, tid);
}
