// Softmax over the keys each query may see, x: [batch, queries, keys], mask: [batch, keys]:
//   visible(b, i, j) = mask[b, j] ≠ 0  and, when causal, j ≤ i
//   m = max_{visible j} x[b, i, j]
//   y[b, i, j] = exp(x[b, i, j] − m) / Σ_{visible j'} exp(x[b, i, j'] − m)  if visible, else 0
// A query that sees no key gets a row of zeros; hidden keys are never read into the
// arithmetic (x may hold ±∞ there). The backward is softmax_backward (softmax.wgsl):
// y = 0 at hidden keys makes their gradient 0.
// Reference: `masked_softmax` in src/backend/cpu.rs.
// Deterministic: one workgroup per row (b, i); thread t walks keys t, t + 256, ... in
// order and the 256 partial max / sums meet in the fixed trees of workgroup_reduce.wgsl,
// which is compiled in front of this file.
// Bindings: 0 params, 1 x, 2 mask, 3 y. Workgroup: 256 threads.

struct Params {
    rows: u32,
    queries: u32,
    keys: u32,
    causal: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> mask: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(256)
fn masked_softmax(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let row = wid.y * nwg.x + wid.x;
    let valid = row < p.rows;
    let b = row / max(p.queries, 1u);
    let i = row % max(p.queries, 1u);
    // Keys 0..seen may be visible; keys past the query are hidden when causal.
    let n = select(0u, p.keys, valid);
    let seen = select(n, min(i + 1u, n), p.causal != 0u);
    let t = lid.x;
    var m = neg_inf();
    for (var j = t; j < seen; j += 256u) {
        if (mask[b * p.keys + j] != 0.0) {
            m = max(m, x[row * p.keys + j]);
        }
    }
    m = wg_max(m, t);
    var s = 0.0;
    if (m != neg_inf()) {
        for (var j = t; j < seen; j += 256u) {
            if (mask[b * p.keys + j] != 0.0) {
                s += exp(x[row * p.keys + j] - m);
            }
        }
    }
    s = wg_sum(s, t);
    for (var j = t; j < n; j += 256u) {
        var v = 0.0;
        if (j < seen && s > 0.0 && mask[b * p.keys + j] != 0.0) {
            v = exp(x[row * p.keys + j] - m) / s;
        }
        y[row * p.keys + j] = v;
    }
}
