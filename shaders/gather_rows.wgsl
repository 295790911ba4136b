// gather_rows:          out[i, :] = x[idx[i], :]                       rows of width `row`
// gather_rows_backward: dx[d, :]  = Σ_{i : idx[i] = d, i ascending} dy[i, :]  (0 if none)
// The backward runs without atomics: the host inverts the index list into CSR form
// (offsets[d] .. offsets[d + 1] index `list`, which holds the i with idx[i] = d in
// ascending order), so each output element is summed by one thread in the CPU's order.
// Reference: `gather_rows` / `gather_rows_backward` in src/backend/cpu.rs.
// Bindings: gather_rows 0 params, 1 x, 2 idx (u32), 3 out;
// gather_rows_backward 0 params, 1 dy, 2 offsets (u32), 3 list (u32), 4 dx.
// Workgroup: 256 threads, one output element each.

struct Params {
    n: u32,
    row: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> idx: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read> list: array<u32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;

@compute @workgroup_size(256)
fn gather_rows(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    if (i < p.n) {
        let r = i / p.row;
        let j = i % p.row;
        out[i] = src[idx[r] * p.row + j];
    }
}

@compute @workgroup_size(256)
fn gather_rows_backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    if (i < p.n) {
        let d = i / p.row;
        let j = i % p.row;
        var acc = 0.0;
        for (var e = idx[d]; e < idx[d + 1u]; e++) {
            acc += src[list[e] * p.row + j];
        }
        dx[i] = acc;
    }
}
