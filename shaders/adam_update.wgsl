// adam_update, one Adam(W) step per element, in place on param, m and v:
//   AdamW (decoupled): p ← p·(1 − lr·wd), g' = g;   Adam: g' = g + wd·p
//   m ← β1·m + (1 − β1)·g';   v ← β2·v + (1 − β2)·g'²
//   p ← p − lr·(m / bc1) / (√(v / bc2) + eps)
// with bc1 = 1 − β1^t, bc2 = 1 − β2^t computed on the host (AdamStep).
// Reference: `adam_update` in src/backend/cpu.rs.
// Bindings: 0 params, 1 grad, 2 param, 3 m, 4 v. Workgroup: 256 threads, one element each.

struct Params {
    n: u32,
    decoupled: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    bias_correction1: f32,
    bias_correction2: f32,
}

@group(0) @binding(0) var<uniform> s: Params;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> param: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;

@compute @workgroup_size(256)
fn adam_update(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    if (i >= s.n) {
        return;
    }
    var g = grad[i];
    var pv = param[i];
    if (s.decoupled != 0u) {
        pv = pv * (1.0 - s.lr * s.weight_decay);
    } else {
        g = g + s.weight_decay * pv;
    }
    let mi = s.beta1 * m[i] + (1.0 - s.beta1) * g;
    let vi = s.beta2 * v[i] + (1.0 - s.beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    let mhat = mi / s.bias_correction1;
    let vhat = vi / s.bias_correction2;
    param[i] = pv - s.lr * mhat / (sqrt(vhat) + s.eps);
}
