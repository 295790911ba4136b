// mse:          out = (1/N) Σ_i (p[i] − t[i])²
// mse_backward: dp[i] = (2·dy / N) · (p[i] − t[i]), dy the rank-0 upstream gradient
// Reference: `mse` / `mse_backward` in src/backend/cpu.rs.
// Deterministic two-pass sum, no atomics: mse_partial gives workgroup w the elements
// [w·CHUNK, (w + 1)·CHUNK) with CHUNK = 4096 (thread t sums t, t + 256, ... in order, then
// a fixed halving tree) and writes partial[w]; mse_final sums the partials the same way
// in one workgroup and divides by N.
// Bindings: mse_partial 0 params, 1 p, 2 t, 3 partial; mse_final 0 params, 1 partial,
// 2 out; mse_backward 0 params, 1 p, 2 t, 3 dy, 4 dp. Workgroup: 256 threads.
// Compiled after workgroup_reduce.wgsl (`wg_sum`).

const CHUNK: u32 = 4096u;

struct Params {
    n: u32,
    total: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> in1: array<f32>;
@group(0) @binding(2) var<storage, read> in2: array<f32>;
@group(0) @binding(2) var<storage, read_write> out2: array<f32>;
@group(0) @binding(3) var<storage, read_write> out3: array<f32>;
@group(0) @binding(3) var<storage, read> in3: array<f32>;
@group(0) @binding(4) var<storage, read_write> out4: array<f32>;

@compute @workgroup_size(256)
fn mse_partial(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let w = wid.y * nwg.x + wid.x;
    let start = w * CHUNK;
    let end = min(start + CHUNK, p.n);
    var s = 0.0;
    for (var i = start + lid.x; i < end; i += 256u) {
        let d = in1[i] - in2[i];
        s += d * d;
    }
    let total = wg_sum(s, lid.x);
    if (lid.x == 0u && start < p.n) {
        out3[w] = total;
    }
}

@compute @workgroup_size(256)
fn mse_final(@builtin(local_invocation_id) lid: vec3<u32>) {
    var s = 0.0;
    for (var i = lid.x; i < p.n; i += 256u) {
        s += in1[i];
    }
    let total = wg_sum(s, lid.x);
    if (lid.x == 0u) {
        out2[0] = total / f32(p.total);
    }
}

@compute @workgroup_size(256)
fn mse_backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    if (i < p.n) {
        let s = 2.0 * in3[0] / f32(p.n);
        out4[i] = s * (in1[i] - in2[i]);
    }
}
