// matmul: C[b, i, j] = Σ_{q = 0..k−1} A'[b, i, q] · B'[b, q, j], summed in order q = 0, 1, ...
// for `batch` independent products, row-major, with the layout folded into strides:
//   A'[b, i, q] = a[b·a_batch + i·a_row + q·a_col]
//   B'[b, q, j] = b[b·b_batch + q·b_row + j·b_col]
//   NN: a_row = k, a_col = 1, b_row = n, b_col = 1
//   NT: a_row = k, a_col = 1, b_row = 1, b_col = k      (B stored [n, k])
//   TN: a_row = 1, a_col = m, b_row = n, b_col = 1      (A stored [k, m])
// Reference: `matmul` in src/backend/cpu.rs (MatLayout in src/backend/mod.rs).
//
// Tiling: one workgroup of 16×16 threads computes a 64×64 tile of C; thread (tx, ty)
// holds the 4×4 block at rows 4ty.., columns 4tx.. in four vec4 accumulators. The
// contracted axis is walked in slabs of BK: a 64×BK slab of A' and a BK×64 slab of B'
// are staged in workgroup memory as vec4 of 4 rows (A') or 4 columns (B'), 2·64·BK·4
// bytes in all. The host rewrites the `const BK` line below from the adapter's
// `max_compute_workgroup_storage_size` (32 when 16 KiB are available, 16 otherwise).
// Out-of-range elements are staged as 0, so edges need no special case, and each C
// element still sums q = 0, 1, ... in order.
// Bindings: 0 params, 1 a, 2 b, 3 c. Dispatch: (⌈n/64⌉, ⌈m/64⌉, batch).

struct Params {
    m: u32,
    k: u32,
    n: u32,
    a_row: u32,
    a_col: u32,
    a_batch: u32,
    b_row: u32,
    b_col: u32,
    b_batch: u32,
}

const TILE: u32 = 64u;
const BK: u32 = 16u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

// a_tile[q·16 + g] = A'[row0 + 4g .. 4g + 3, q0 + q]; b_tile[q·16 + g] = B'[q0 + q, col0 + 4g .. 4g + 3].
var<workgroup> a_tile: array<vec4<f32>, 16 * BK>;
var<workgroup> b_tile: array<vec4<f32>, 16 * BK>;

/// A'[i, q] of this batch, 0 outside the matrix.
fn load_a(base: u32, i: u32, q: u32) -> f32 {
    if (i < p.m && q < p.k) {
        return a[base + i * p.a_row + q * p.a_col];
    }
    return 0.0;
}

/// B'[q, j] of this batch, 0 outside the matrix.
fn load_b(base: u32, q: u32, j: u32) -> f32 {
    if (q < p.k && j < p.n) {
        return b[base + q * p.b_row + j * p.b_col];
    }
    return 0.0;
}

@compute @workgroup_size(16, 16, 1)
fn matmul(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let t = lid.y * 16u + lid.x;
    let row0 = wid.y * TILE;
    let col0 = wid.x * TILE;
    let a_base = wid.z * p.a_batch;
    let b_base = wid.z * p.b_batch;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var q0 = 0u; q0 < p.k; q0 += BK) {
        for (var e = t; e < 16u * BK; e += 256u) {
            let g = e % 16u;
            let q = e / 16u;
            let i = row0 + 4u * g;
            let j = col0 + 4u * g;
            let gq = q0 + q;
            a_tile[e] = vec4<f32>(
                load_a(a_base, i, gq),
                load_a(a_base, i + 1u, gq),
                load_a(a_base, i + 2u, gq),
                load_a(a_base, i + 3u, gq),
            );
            b_tile[e] = vec4<f32>(
                load_b(b_base, gq, j),
                load_b(b_base, gq, j + 1u),
                load_b(b_base, gq, j + 2u),
                load_b(b_base, gq, j + 3u),
            );
        }
        workgroupBarrier();
        for (var q = 0u; q < BK; q++) {
            let av = a_tile[q * 16u + lid.y];
            let bv = b_tile[q * 16u + lid.x];
            acc0 = acc0 + av.x * bv;
            acc1 = acc1 + av.y * bv;
            acc2 = acc2 + av.z * bv;
            acc3 = acc3 + av.w * bv;
        }
        workgroupBarrier();
    }
    let c_base = wid.z * p.m * p.n;
    let gi = row0 + 4u * lid.y;
    let gj = col0 + 4u * lid.x;
    let rows = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
    for (var r = 0u; r < 4u; r++) {
        for (var s = 0u; s < 4u; s++) {
            if (gi + r < p.m && gj + s < p.n) {
                c[c_base + (gi + r) * p.n + gj + s] = rows[r][s];
            }
        }
    }
}
