// matmul: C[b, i, j] = Σ_{q = 0..k−1} A'[b, i, q] · B'[b, q, j], summed in order q = 0, 1, ...
// for `batch` independent products, row-major, with the layout folded into strides:
//   A'[b, i, q] = a[b·a_batch + i·a_row + q·a_col]
//   B'[b, q, j] = b[b·b_batch + q·b_row + j·b_col]
//   NN: a_row = k, a_col = 1, b_row = n, b_col = 1
//   NT: a_row = k, a_col = 1, b_row = 1, b_col = k      (B stored [n, k])
//   TN: a_row = 1, a_col = m, b_row = n, b_col = 1      (A stored [k, m])
// Reference: `matmul` in src/backend/cpu.rs (MatLayout in src/backend/mod.rs).
//
// Tiling: one workgroup of 16×16 threads computes a 64×64 tile of C; each thread holds a
// 4×4 block of accumulators at rows ty + 16r and columns tx + 16c. The contracted axis
// is walked in slabs of BK: a 64×BK slab of A' and a BK×64 slab of B' are staged in
// workgroup memory (2·64·BK·4 bytes). The host rewrites the `const BK` line below from
// the adapter's `max_compute_workgroup_storage_size` (32 when 16 KiB are available, 16
// otherwise). Out-of-range elements are staged as 0, so edges need no special case.
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

// a_tile[q · TILE + i] = A'[row0 + i, q0 + q]; b_tile[q · TILE + j] = B'[q0 + q, col0 + j].
var<workgroup> a_tile: array<f32, 64 * BK>;
var<workgroup> b_tile: array<f32, 64 * BK>;

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
    var acc: array<f32, 16>;
    for (var e = 0u; e < 16u; e++) {
        acc[e] = 0.0;
    }
    for (var q0 = 0u; q0 < p.k; q0 += BK) {
        for (var e = t; e < TILE * BK; e += 256u) {
            // A: consecutive threads walk q, B: consecutive threads walk j.
            let i = e / BK;
            let q = e % BK;
            let gi = row0 + i;
            let gq = q0 + q;
            var v = 0.0;
            if (gi < p.m && gq < p.k) {
                v = a[a_base + gi * p.a_row + gq * p.a_col];
            }
            a_tile[q * TILE + i] = v;
            let qb = e / TILE;
            let j = e % TILE;
            let gj = col0 + j;
            let gqb = q0 + qb;
            var w = 0.0;
            if (gqb < p.k && gj < p.n) {
                w = b[b_base + gqb * p.b_row + gj * p.b_col];
            }
            b_tile[qb * TILE + j] = w;
        }
        workgroupBarrier();
        for (var q = 0u; q < BK; q++) {
            var av: array<f32, 4>;
            var bv: array<f32, 4>;
            for (var r = 0u; r < 4u; r++) {
                av[r] = a_tile[q * TILE + lid.y + 16u * r];
                bv[r] = b_tile[q * TILE + lid.x + 16u * r];
            }
            for (var r = 0u; r < 4u; r++) {
                for (var s = 0u; s < 4u; s++) {
                    acc[r * 4u + s] = acc[r * 4u + s] + av[r] * bv[s];
                }
            }
        }
        workgroupBarrier();
    }
    let c_base = wid.z * p.m * p.n;
    for (var r = 0u; r < 4u; r++) {
        let gi = row0 + lid.y + 16u * r;
        for (var s = 0u; s < 4u; s++) {
            let gj = col0 + lid.x + 16u * s;
            if (gi < p.m && gj < p.n) {
                c[c_base + gi * p.n + gj] = acc[r * 4u + s];
            }
        }
    }
}
