// Layer norm over the last axis of x: [rows, cols] (population variance, as PyTorch):
//   layer_norm:                 μ_r = mean_j x[r, j], σ²_r = mean_j (x[r, j] − μ_r)²,
//                               rstd_r = 1/√(σ²_r + eps),
//                               y[r, j] = (x[r, j] − μ_r)·rstd_r·γ_j + β_j
//   layer_norm_backward:        with x̂ = (x − μ)·rstd and g = dy·γ,
//                               dx[r, j] = rstd_r·(g − mean_j g − x̂·mean_j(g·x̂))
//   layer_norm_backward_params: dγ_j = Σ_r dy[r, j]·x̂[r, j],  dβ_j = Σ_r dy[r, j]
// Reference: `layer_norm` / `layer_norm_backward` in src/backend/cpu.rs (the CPU does
// both backward parts in one function; here dγ, dβ are a second, column-wise kernel).
// Deterministic: row statistics use one 256-thread workgroup per row (strided partial
// sums, fixed halving tree); dγ, dβ use 16 lanes per column (lane l sums rows l, l + 16,
// ... in order) and a fixed tree.
// Bindings: layer_norm 0 params, 1 x, 2 γ, 3 β, 4 y, 5 μ, 6 rstd;
// layer_norm_backward 0 params, 1 x, 2 γ, 3 μ, 4 rstd, 5 dy, 6 dx;
// layer_norm_backward_params the same inputs, 6 dγ, 7 dβ (γ bound but unused).
// Compiled after workgroup_reduce.wgsl (`wg_sum`, and `red` for the column sums).

struct Params {
    rows: u32,
    cols: u32,
    eps: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> in3: array<f32>;
@group(0) @binding(4) var<storage, read_write> y_out: array<f32>;
@group(0) @binding(4) var<storage, read> rstd_in: array<f32>;
@group(0) @binding(5) var<storage, read_write> mean_out: array<f32>;
@group(0) @binding(5) var<storage, read> dy: array<f32>;
@group(0) @binding(6) var<storage, read_write> out6: array<f32>;
@group(0) @binding(7) var<storage, read_write> out7: array<f32>;

@compute @workgroup_size(256)
fn layer_norm(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let row = wid.y * nwg.x + wid.x;
    let valid = row < p.rows;
    let n = select(0u, p.cols, valid);
    let t = lid.x;
    let base = row * p.cols;
    var s = 0.0;
    for (var j = t; j < n; j += 256u) {
        s += x[base + j];
    }
    let mu = wg_sum(s, t) / f32(p.cols);
    var v = 0.0;
    for (var j = t; j < n; j += 256u) {
        let d = x[base + j] - mu;
        v += d * d;
    }
    let rstd = 1.0 / sqrt(wg_sum(v, t) / f32(p.cols) + p.eps);
    for (var j = t; j < n; j += 256u) {
        y_out[base + j] = (x[base + j] - mu) * rstd * gamma[j] + in3[j];
    }
    if (valid && t == 0u) {
        mean_out[row] = mu;
        out6[row] = rstd;
    }
}

@compute @workgroup_size(256)
fn layer_norm_backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let row = wid.y * nwg.x + wid.x;
    let valid = row < p.rows;
    let n = select(0u, p.cols, valid);
    let t = lid.x;
    let base = row * p.cols;
    var mu = 0.0;
    var rs = 0.0;
    if (valid) {
        mu = in3[row];
        rs = rstd_in[row];
    }
    var sg = 0.0;
    var sgx = 0.0;
    for (var j = t; j < n; j += 256u) {
        let g = dy[base + j] * gamma[j];
        sg += g;
        sgx += g * ((x[base + j] - mu) * rs);
    }
    let mean_g = wg_sum(sg, t) / f32(p.cols);
    let mean_gx = wg_sum(sgx, t) / f32(p.cols);
    for (var j = t; j < n; j += 256u) {
        let g = dy[base + j] * gamma[j];
        let xhat = (x[base + j] - mu) * rs;
        out6[base + j] = rs * (g - mean_g - xhat * mean_gx);
    }
}

@compute @workgroup_size(16, 16, 1)
fn layer_norm_backward_params(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let col = (wid.y * nwg.x + wid.x) * 16u + lid.x;
    var sg = 0.0;
    var sb = 0.0;
    if (col < p.cols) {
        for (var r = lid.y; r < p.rows; r += 16u) {
            let g = dy[r * p.cols + col];
            sg += g * ((x[r * p.cols + col] - in3[r]) * rstd_in[r]);
            sb += g;
        }
    }
    let t = lid.y * 16u + lid.x;
    red[t] = sg;
    workgroupBarrier();
    for (var h = 8u; h > 0u; h >>= 1u) {
        if (lid.y < h) {
            red[t] = red[t] + red[t + h * 16u];
        }
        workgroupBarrier();
    }
    let dgamma = red[lid.x];
    workgroupBarrier();
    red[t] = sb;
    workgroupBarrier();
    for (var h = 8u; h > 0u; h >>= 1u) {
        if (lid.y < h) {
            red[t] = red[t] + red[t + h * 16u];
        }
        workgroupBarrier();
    }
    if (lid.y == 0u && col < p.cols) {
        out6[col] = dgamma;
        out7[col] = red[lid.x];
    }
}
