// Masked reduction over the set axis of x: [batch, set, feat] with mask: [batch, set]:
//   masked_set_reduce:          out[b, f]   = w_b · Σ_s mask[b, s] · x[b, s, f]
//   masked_set_reduce_backward: dx[b, s, f] = (w_b · mask[b, s]) · dy[b, f]
// w_b = 1 for a sum; for a mean w_b = 1/Σ_s mask[b, s], and 0 when that count is 0 (an
// empty set reduces to 0). Sums run over s in order, one thread per output element.
// Reference: `masked_set_reduce` / `masked_set_reduce_backward` in src/backend/cpu.rs
// (the CPU family is named after the Rust function; the file is `set_reduce`).
// Bindings: forward 0 params, 1 x, 2 mask, 3 out; backward 0 params, 1 dy, 2 mask, 3 dx.
// Workgroup: 256 threads, one output element each.

struct Params {
    batch: u32,
    set_size: u32,
    feat: u32,
    mean: u32,
    n: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> mask: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;

fn weight(b: u32) -> f32 {
    if (p.mean == 0u) {
        return 1.0;
    }
    var count = 0.0;
    for (var s = 0u; s < p.set_size; s++) {
        count += mask[b * p.set_size + s];
    }
    if (count == 0.0) {
        return 0.0;
    }
    return 1.0 / count;
}

@compute @workgroup_size(256)
fn masked_set_reduce(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    if (i >= p.n) {
        return;
    }
    let b = i / p.feat;
    let f = i % p.feat;
    var acc = 0.0;
    for (var s = 0u; s < p.set_size; s++) {
        acc += mask[b * p.set_size + s] * src[(b * p.set_size + s) * p.feat + f];
    }
    dst[i] = acc * weight(b);
}

@compute @workgroup_size(256)
fn masked_set_reduce_backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    if (i >= p.n) {
        return;
    }
    let f = i % p.feat;
    let bs = i / p.feat;
    let b = bs / p.set_size;
    let coef = weight(b) * mask[bs];
    dst[i] = coef * src[b * p.feat + f];
}
