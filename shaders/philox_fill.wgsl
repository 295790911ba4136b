// Fill kernels over Philox4x32-10 (compiled after philox.wgsl, which defines the
// generator), used by the parity tests:
//   philox_fill_u32:    out[4·i + w] = word w of block first + i of (seed, stream, step, lane)
//   philox_fill_normal: out[4·i + w] = the normals of block first + i, Box–Muller on words
//                       (0, 1) and (2, 3): the order of PhiloxStream::fill_normal.
// Bindings: 0 params, 1 out (u32 or f32 words). Workgroup: 256 threads, one block each.

struct Params {
    seed_lo: u32,
    seed_hi: u32,
    stream: u32,
    step: u32,
    lane: u32,
    // First block index (low, high word) and number of blocks to write.
    first_lo: u32,
    first_hi: u32,
    blocks: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out_u32: array<u32>;
@group(0) @binding(1) var<storage, read_write> out_f32: array<f32>;

/// Block `first + i` of (stream, step, lane): counter (stream, step + carry, lane, block lo).
fn stream_block(i: u32) -> vec4<u32> {
    let lo = p.first_lo + i;
    let carry = select(0u, 1u, lo < p.first_lo);
    let step = p.step + p.first_hi + carry;
    return philox4x32_10(vec4<u32>(p.stream, step, p.lane, lo), vec2<u32>(p.seed_lo, p.seed_hi));
}

@compute @workgroup_size(256)
fn philox_fill_u32(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    if (i >= p.blocks) {
        return;
    }
    let w = stream_block(i);
    out_u32[4u * i] = w.x;
    out_u32[4u * i + 1u] = w.y;
    out_u32[4u * i + 2u] = w.z;
    out_u32[4u * i + 3u] = w.w;
}

@compute @workgroup_size(256)
fn philox_fill_normal(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    if (i >= p.blocks) {
        return;
    }
    let w = stream_block(i);
    let z01 = box_muller(w.x, w.y);
    let z23 = box_muller(w.z, w.w);
    out_f32[4u * i] = z01.x;
    out_f32[4u * i + 1u] = z01.y;
    out_f32[4u * i + 2u] = z23.x;
    out_f32[4u * i + 3u] = z23.y;
}
