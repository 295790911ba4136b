// The monotone rational-quadratic spline of Durkan et al. (2019), elementwise with
// identity tails. Element e has K bins: widths w[e, k] and heights h[e, k] (positive, each
// row summing to 2B) and knot derivatives δ[e, 0..K] (positive). Knot k sits at
// (x_k, y_k) = (−B + Σ_{j<k} w_j, −B + Σ_{j<k} h_j); the bin is found by a linear scan.
//   rq_spline, forward: for x in [−B, B] in bin k, with ξ = (x − x_k)/w_k, s = h_k/w_k,
//     t = ξ(1 − ξ), den = s + (δ_k + δ_{k+1} − 2s)·t:
//       y      = y_k + h_k(sξ² + δ_k t) / den
//       logdet = ln(s²(δ_{k+1}ξ² + 2st + δ_k(1 − ξ)²)) − 2 ln den      (= ln dy/dx)
//   rq_spline, inverse: the input is a y, its bin is found along the heights, and with
//     Δ = y − y_k, c1 = δ_k + δ_{k+1} − 2s, α = h_k(s − δ_k) + Δ·c1, β = h_k δ_k − Δ·c1,
//     c = −sΔ: ξ = 2c / (−β − √(β² − 4αc)), x = x_k + ξ w_k, logdet = −ln dy/dx at x.
//   Outside [−B, B] the output is the input and logdet = 0.
//   rq_spline_backward, given dy and dlogdet of the two outputs: reverse mode through the
//     forward formulas (rq_eval_backward) gives the partials with respect to
//     (x, x_k, w_k, y_k, h_k, δ_k, δ_{k+1}). x_k and y_k are running sums, so
//     dw[j] = ∂/∂x_k and dh[j] = ∂/∂y_k for j < k, dw[k] = ∂/∂w_k, dh[k] = ∂/∂h_k,
//     dδ[k] and dδ[k+1] from δ_k and δ_{k+1}, every other entry 0. For the inverse, with
//     x = f⁻¹(y) and G = dx_out − dlogdet·∂(ln f')/∂x: d input = G / f'(x), and the knot
//     gradients are the forward's at x with upstream (−G/f'(x), −dlogdet). In the tails
//     d input = dy and the knot gradients are 0.
// Reference: `rq_spline` / `rq_spline_backward` in src/backend/cpu.rs (which computes in
// f64; this file in f32). One thread per element; each thread writes its element's
// outputs and its own rows of the knot gradients, so nothing is shared.
// Bindings: 0 params, 1 x, 2 widths, 3 heights, 4 derivatives, then
// rq_spline 5 y, 6 logdet; rq_spline_backward 5 dy, 6 dlogdet, 7 dx, 8 dwidths,
// 9 dheights, 10 dderivatives. Workgroup: 256 threads.

struct Params {
    n: u32,
    bins: u32,
    bound: f32,
    inverse: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> widths: array<f32>;
@group(0) @binding(3) var<storage, read> heights: array<f32>;
@group(0) @binding(4) var<storage, read> derivatives: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;
@group(0) @binding(6) var<storage, read_write> logdet: array<f32>;
@group(0) @binding(5) var<storage, read> dy: array<f32>;
@group(0) @binding(6) var<storage, read> dlogdet: array<f32>;
@group(0) @binding(7) var<storage, read_write> dx: array<f32>;
@group(0) @binding(8) var<storage, read_write> dwidths: array<f32>;
@group(0) @binding(9) var<storage, read_write> dheights: array<f32>;
@group(0) @binding(10) var<storage, read_write> dderivatives: array<f32>;

/// The bin of one element that its input falls in.
struct Bin {
    k: u32,
    xk: f32,
    yk: f32,
    wk: f32,
    hk: f32,
    d0: f32,
    d1: f32,
}

/// The partials of gy·y + gl·logdet with respect to the bin's variables.
struct Grad {
    x: f32,
    xk: f32,
    wk: f32,
    yk: f32,
    hk: f32,
    d0: f32,
    d1: f32,
}

/// The bin of element e that v falls in (an x, or a y for the inverse); values past the
/// last knot (rounding) stay in the last bin.
fn find_bin(e: u32, v: f32) -> Bin {
    let base = e * p.bins;
    var xk = -p.bound;
    var yk = -p.bound;
    var k = 0u;
    for (; k + 1u < p.bins; k++) {
        let w = widths[base + k];
        let h = heights[base + k];
        if (v < select(xk + w, yk + h, p.inverse != 0u)) {
            break;
        }
        xk += w;
        yk += h;
    }
    let d = e * (p.bins + 1u) + k;
    return Bin(k, xk, yk, widths[base + k], heights[base + k], derivatives[d], derivatives[d + 1u]);
}

/// (y, ln dy/dx) of the forward map inside bin b at xv.
fn rq_eval(b: Bin, xv: f32) -> vec2<f32> {
    let xi = (xv - b.xk) / b.wk;
    let s = b.hk / b.wk;
    let t = xi * (1.0 - xi);
    let num = b.hk * (s * xi * xi + b.d0 * t);
    let den = s + (b.d0 + b.d1 - 2.0 * s) * t;
    let q = b.d1 * xi * xi + 2.0 * s * t + b.d0 * (1.0 - xi) * (1.0 - xi);
    return vec2<f32>(b.yk + num / den, log(s * s * q) - 2.0 * log(den));
}

/// The x in bin b that the forward map sends to yv (the root ξ in [0, 1] of a quadratic).
fn rq_invert(b: Bin, yv: f32) -> f32 {
    let s = b.hk / b.wk;
    let dyk = yv - b.yk;
    let c1 = b.d0 + b.d1 - 2.0 * s;
    let alpha = b.hk * (s - b.d0) + dyk * c1;
    let beta = b.hk * b.d0 - dyk * c1;
    let c = -s * dyk;
    let disc = max(beta * beta - 4.0 * alpha * c, 0.0);
    let xi = 2.0 * c / (-beta - sqrt(disc));
    return b.xk + xi * b.wk;
}

/// Reverse mode through rq_eval: the partials of gy·y + gl·ln y' at xv.
fn rq_eval_backward(b: Bin, xv: f32, gy: f32, gl: f32) -> Grad {
    let xi = (xv - b.xk) / b.wk;
    let s = b.hk / b.wk;
    let t = xi * (1.0 - xi);
    let inner = s * xi * xi + b.d0 * t;
    let num = b.hk * inner;
    let c1 = b.d0 + b.d1 - 2.0 * s;
    let den = s + c1 * t;
    let q = b.d1 * xi * xi + 2.0 * s * t + b.d0 * (1.0 - xi) * (1.0 - xi);
    // ln y' = 2 ln s + ln q − 2 ln den.
    let g_num = gy / den;
    let g_den = -gy * num / (den * den) - 2.0 * gl / den;
    let g_q = gl / q;
    let g_inner = g_num * b.hk;
    let g_t = g_inner * b.d0 + g_den * c1 + g_q * 2.0 * s;
    let g_s = 2.0 * gl / s + g_inner * xi * xi + g_den * (1.0 - 2.0 * t) + g_q * 2.0 * t;
    let g_xi = g_inner * 2.0 * s * xi + g_q * (2.0 * b.d1 * xi - 2.0 * b.d0 * (1.0 - xi))
        + g_t * (1.0 - 2.0 * xi);
    var g: Grad;
    g.x = g_xi / b.wk;
    g.xk = -g_xi / b.wk;
    g.wk = -g_s * s / b.wk - g_xi * xi / b.wk;
    g.yk = gy;
    g.hk = g_num * inner + g_s / b.wk;
    g.d0 = g_inner * t + g_den * t + g_q * (1.0 - xi) * (1.0 - xi);
    g.d1 = g_den * t + g_q * xi * xi;
    return g;
}

@compute @workgroup_size(256)
fn rq_spline(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let e = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    if (e >= p.n) {
        return;
    }
    let v = x[e];
    if (v < -p.bound || v > p.bound) {
        y[e] = v;
        logdet[e] = 0.0;
        return;
    }
    let b = find_bin(e, v);
    if (p.inverse != 0u) {
        let xv = rq_invert(b, v);
        y[e] = xv;
        logdet[e] = -rq_eval(b, xv).y;
    } else {
        let r = rq_eval(b, v);
        y[e] = r.x;
        logdet[e] = r.y;
    }
}

@compute @workgroup_size(256)
fn rq_spline_backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let e = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    if (e >= p.n) {
        return;
    }
    let v = x[e];
    let gy = dy[e];
    let gl = dlogdet[e];
    // Tails: the identity; g's knot partials stay 0, so every knot gradient below is 0.
    var g = Grad(gy, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    var k = p.bins;
    if (!(v < -p.bound || v > p.bound)) {
        let b = find_bin(e, v);
        k = b.k;
        if (p.inverse != 0u) {
            let xv = rq_invert(b, v);
            let fprime = exp(rq_eval(b, xv).y);
            let big_g = gy - gl * rq_eval_backward(b, xv, 0.0, 1.0).x;
            g = rq_eval_backward(b, xv, -big_g / fprime, -gl);
            g.x = big_g / fprime;
        } else {
            g = rq_eval_backward(b, v, gy, gl);
        }
    }
    dx[e] = g.x;
    for (var j = 0u; j < p.bins; j++) {
        let i = e * p.bins + j;
        dwidths[i] = select(select(0.0, g.wk, j == k), g.xk, j < k);
        dheights[i] = select(select(0.0, g.hk, j == k), g.yk, j < k);
    }
    for (var j = 0u; j <= p.bins; j++) {
        dderivatives[e * (p.bins + 1u) + j] = select(0.0, g.d0, j == k) + select(0.0, g.d1, j == k + 1u);
    }
}
