// scale: out[i] = s · x[i] for i < n.
// Reference: `scale` in src/backend/cpu.rs.
// Bindings: 0 params, 1 x, 2 out. Workgroup: 256 threads, one element each.

struct Params {
    n: u32,
    s: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn scale(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    if (i < p.n) {
        out[i] = p.s * x[i];
    }
}
