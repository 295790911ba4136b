// The softmax family over the last axis of x: [rows, cols], one workgroup per row.
//   softmax:              y[r, j]  = exp(x[r, j] − m_r) / Σ_j' exp(x[r, j'] − m_r), m_r = max_j x[r, j]
//   softmax_backward:     dx[r, j] = y[r, j] · (dy[r, j] − Σ_j' dy[r, j'] · y[r, j'])
//   logsumexp:            out[r]   = m_r + ln Σ_j exp(x[r, j] − m_r)   (−∞ for an all −∞ row)
//   log_softmax:          y[r, j]  = x[r, j] − logsumexp_r
//   log_softmax_backward: dx[r, j] = dy[r, j] − exp(y[r, j]) · Σ_j' dy[r, j']
//   logsumexp_backward:   dx[r, j] = dy[r] · exp(x[r, j] − lse[r])   (one thread per element)
// Reference: the functions of the same names in src/backend/cpu.rs.
// Deterministic: thread t of a row's workgroup walks columns t, t + 256, ... in order and
// the 256 partial results meet in a fixed halving tree (max or sum).
// Bindings: 0 params, then the inputs in the order of the formula's arguments
// (softmax: 1 x, 2 y; softmax_backward / log_softmax_backward: 1 y, 2 dy, 3 dx;
// logsumexp: 1 x, 2 out; log_softmax: 1 x, 2 y; logsumexp_backward: 1 x, 2 lse, 3 dy, 4 dx).
// Workgroup: 256 threads.
// Compiled after workgroup_reduce.wgsl (`wg_sum`, `wg_max`, `neg_inf`).

struct Params {
    rows: u32,
    cols: u32,
    n: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> in1: array<f32>;
@group(0) @binding(2) var<storage, read_write> out2: array<f32>;
@group(0) @binding(2) var<storage, read> in2: array<f32>;
@group(0) @binding(3) var<storage, read_write> out3: array<f32>;
@group(0) @binding(3) var<storage, read> in3: array<f32>;
@group(0) @binding(4) var<storage, read_write> out4: array<f32>;

/// (max, Σ exp(x − max)) of row `row` of in1, `n` columns (0 for an idle workgroup).
fn row_max_sumexp(row: u32, n: u32, t: u32) -> vec2<f32> {
    var m = neg_inf();
    for (var j = t; j < n; j += 256u) {
        m = max(m, in1[row * p.cols + j]);
    }
    m = wg_max(m, t);
    var s = 0.0;
    if (m != neg_inf()) {
        for (var j = t; j < n; j += 256u) {
            s += exp(in1[row * p.cols + j] - m);
        }
    }
    s = wg_sum(s, t);
    return vec2<f32>(m, s);
}

@compute @workgroup_size(256)
fn softmax(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let row = wid.y * nwg.x + wid.x;
    let n = select(0u, p.cols, row < p.rows);
    let ms = row_max_sumexp(row, n, lid.x);
    for (var j = lid.x; j < n; j += 256u) {
        let i = row * p.cols + j;
        out2[i] = exp(in1[i] - ms.x) / ms.y;
    }
}

@compute @workgroup_size(256)
fn softmax_backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let row = wid.y * nwg.x + wid.x;
    let n = select(0u, p.cols, row < p.rows);
    var d = 0.0;
    for (var j = lid.x; j < n; j += 256u) {
        let i = row * p.cols + j;
        d += in1[i] * in2[i];
    }
    d = wg_sum(d, lid.x);
    for (var j = lid.x; j < n; j += 256u) {
        let i = row * p.cols + j;
        out3[i] = in1[i] * (in2[i] - d);
    }
}

fn lse_of(ms: vec2<f32>) -> f32 {
    if (ms.x == neg_inf()) {
        return neg_inf();
    }
    return ms.x + log(ms.y);
}

@compute @workgroup_size(256)
fn logsumexp(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let row = wid.y * nwg.x + wid.x;
    let valid = row < p.rows;
    let n = select(0u, p.cols, valid);
    let lse = lse_of(row_max_sumexp(row, n, lid.x));
    if (valid && lid.x == 0u) {
        out2[row] = lse;
    }
}

@compute @workgroup_size(256)
fn log_softmax(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let row = wid.y * nwg.x + wid.x;
    let n = select(0u, p.cols, row < p.rows);
    let lse = lse_of(row_max_sumexp(row, n, lid.x));
    for (var j = lid.x; j < n; j += 256u) {
        let i = row * p.cols + j;
        out2[i] = in1[i] - lse;
    }
}

@compute @workgroup_size(256)
fn log_softmax_backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let row = wid.y * nwg.x + wid.x;
    let n = select(0u, p.cols, row < p.rows);
    var total = 0.0;
    for (var j = lid.x; j < n; j += 256u) {
        total += in2[row * p.cols + j];
    }
    total = wg_sum(total, lid.x);
    for (var j = lid.x; j < n; j += 256u) {
        let i = row * p.cols + j;
        out3[i] = in2[i] - exp(in1[i]) * total;
    }
}

@compute @workgroup_size(256)
fn logsumexp_backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    if (i < p.n) {
        let r = i / p.cols;
        out4[i] = in3[r] * exp(in1[i] - in2[r]);
    }
}
