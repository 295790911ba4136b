// concat: out[r, offset + j] = part[r, j]       for r < rows, j < width
// split:  part[r, j]         = x[r, offset + j]
// where out / x are `[rows, total]` and one dispatch moves one part (the host walks the
// parts left to right, so `offset` is the sum of the widths before this part).
// Reference: `concat` / `split` in src/backend/cpu.rs.
// Bindings: concat 0 params, 1 part, 2 out; split 0 params, 1 x, 2 part.
// Workgroup: 256 threads, one element of the part each.

struct Params {
    n: u32,
    width: u32,
    total: u32,
    offset: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(256)
fn concat(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    if (i < p.n) {
        let r = i / p.width;
        let j = i % p.width;
        dst[r * p.total + p.offset + j] = src[i];
    }
}

@compute @workgroup_size(256)
fn split(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    if (i < p.n) {
        let r = i / p.width;
        let j = i % p.width;
        dst[i] = src[r * p.total + p.offset + j];
    }
}
