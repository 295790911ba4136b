// fill: out[i] = value for every i < n.
//
// The value arrives as its IEEE-754 bit pattern (`bits`) so that the NaN used to poison
// fresh output buffers in tests survives the trip unchanged.
// Bindings: 0 params, 1 out (read_write). Workgroup: 256 threads, one element each.

struct Params {
    n: u32,
    bits: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn fill(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    if (i < p.n) {
        out[i] = bitcast<f32>(p.bits);
    }
}
