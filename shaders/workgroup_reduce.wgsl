// Deterministic reductions over the 256 threads of a workgroup, shared by the row and
// column kernels (softmax, masked_softmax, reduce, layer_norm, mse): the WGSL side of
// kernels/block_reduce.cuh. Functions only: the host compiles this file in front of
// each of those files (src/backend/wgpu.rs, `Shader::source`).
//   wg_sum(v, t) = Σ_t v_t,  wg_max(v, t) = max_t v_t  over threads t = 0..255
// Each call combines the 256 per-thread values by a fixed halving tree in `red`, so the
// result depends only on the values, never on scheduling; no atomics. Every thread of
// the workgroup must make the call (it holds barriers) and receives the result. Kernels
// that reduce 16 columns at once use `red` directly as a 16 × 16 grid.

var<workgroup> red: array<f32, 256>;

fn neg_inf() -> f32 {
    return bitcast<f32>(0xff800000u);
}

fn wg_sum(v: f32, t: u32) -> f32 {
    red[t] = v;
    workgroupBarrier();
    for (var h = 128u; h > 0u; h >>= 1u) {
        if (t < h) {
            red[t] = red[t] + red[t + h];
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn wg_max(v: f32, t: u32) -> f32 {
    red[t] = v;
    workgroupBarrier();
    for (var h = 128u; h > 0u; h >>= 1u) {
        if (t < h) {
            red[t] = max(red[t], red[t + h]);
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}
