// binary: out[i] = a[i] ∘ b[i mod bn] for i < n, with ∘ one of
//   op 0: a + b, op 1: a − b, op 2: a · b, op 3: a / b      (BinaryOp order)
// bn = len(b): either n (same shape) or one row of the last axis broadcast over rows.
// Reference: `binary` in src/backend/cpu.rs.
// Bindings: 0 params, 1 a, 2 b, 3 out. Workgroup: 256 threads, one element each.

struct Params {
    n: u32,
    bn: u32,
    op: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn binary(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    if (i >= p.n) {
        return;
    }
    let x = a[i];
    let y = b[i % p.bn];
    var r: f32;
    switch p.op {
        case 0u: { r = x + y; }
        case 1u: { r = x - y; }
        case 2u: { r = x * y; }
        default: { r = x / y; }
    }
    out[i] = r;
}
