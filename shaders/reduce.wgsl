// reduce_rows:              out[j]   = (Σ_r x[r, j]) / div     x: [rows, cols] → [cols]
// reduce_rows_backward:     dx[r, j] = dy[j] · s
// reduce_features:          out[r]   = (Σ_j x[r, j]) / div     x: [rows, cols] → [rows]
// reduce_features_backward: dx[r, j] = dy[r] · s
// div is 1 for a sum and the count for a mean; s = 1/div, rounded on the host exactly as
// the CPU reference rounds it. Reference: the functions of the same names in
// src/backend/cpu.rs.
//
// Deterministic order, no atomics: reduce_rows gives each column 16 lanes (lane l sums
// rows l, l + 16, ... in order) and adds the lanes by a fixed tree; reduce_features
// gives each row one workgroup of 256 threads (thread t sums columns t, t + 256, ...)
// and a fixed tree.
// Bindings: 0 params, 1 input, 2 output.
// Workgroups: reduce_rows 16×16 (16 columns each), reduce_features 256 (one row),
// the backward kernels 256 (one element per thread).
// Compiled after workgroup_reduce.wgsl (`wg_sum`, and `red` for the column sums).

struct Params {
    rows: u32,
    cols: u32,
    div: f32,
    s: f32,
    n: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(16, 16, 1)
fn reduce_rows(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let col = (wid.y * nwg.x + wid.x) * 16u + lid.x;
    var s = 0.0;
    if (col < p.cols) {
        for (var r = lid.y; r < p.rows; r += 16u) {
            s += src[r * p.cols + col];
        }
    }
    red[lid.y * 16u + lid.x] = s;
    workgroupBarrier();
    for (var h = 8u; h > 0u; h >>= 1u) {
        if (lid.y < h) {
            red[lid.y * 16u + lid.x] = red[lid.y * 16u + lid.x] + red[(lid.y + h) * 16u + lid.x];
        }
        workgroupBarrier();
    }
    if (lid.y == 0u && col < p.cols) {
        dst[col] = red[lid.x] / p.div;
    }
}

@compute @workgroup_size(256)
fn reduce_rows_backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    if (i < p.n) {
        dst[i] = src[i % p.cols] * p.s;
    }
}

@compute @workgroup_size(256)
fn reduce_features(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let row = wid.y * nwg.x + wid.x;
    let valid = row < p.rows;
    let n = select(0u, p.cols, valid);
    var s = 0.0;
    for (var j = lid.x; j < n; j += 256u) {
        s += src[row * p.cols + j];
    }
    let total = wg_sum(s, lid.x);
    if (valid && lid.x == 0u) {
        dst[row] = total / p.div;
    }
}

@compute @workgroup_size(256)
fn reduce_features_backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    if (i < p.n) {
        dst[i] = src[i / p.cols] * p.s;
    }
}
