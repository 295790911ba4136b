// The monotone rational-quadratic spline of Durkan et al. (2019), elementwise with identity
// tails. Element e has K bins: widths w_ek and heights h_ek (positive, each row summing to
// 2B) and knot derivatives d_e0..d_eK (positive). Knot k sits at
// (x_k, y_k) = (-B + sum_{j<k} w_j, -B + sum_{j<k} h_j); the bin is found by a linear scan.
//   rq_spline, forward: for x in [-B, B] in bin k, with xi = (x - x_k)/w_k, s = h_k/w_k,
//     t = xi (1 - xi), den = s + (d_k + d_{k+1} - 2s) t:
//       y      = y_k + h_k (s xi^2 + d_k t) / den
//       logdet = ln(s^2 (d_{k+1} xi^2 + 2 s t + d_k (1 - xi)^2)) - 2 ln den   (= ln dy/dx)
//   rq_spline, inverse: the input is a y, its bin is found along the heights, and with
//     D = y - y_k, c1 = d_k + d_{k+1} - 2s, a = h_k (s - d_k) + D c1, b = h_k d_k - D c1,
//     c = -s D: xi = 2c / (-b - sqrt(b^2 - 4ac)), x = x_k + xi w_k, logdet = -ln dy/dx at x.
//   Outside [-B, B] the output is the input and logdet = 0.
//   rq_spline_backward, given dy and dlogdet of the two outputs: reverse mode through the
//     forward formulas (rq_eval_backward) gives the partials with respect to
//     (x, x_k, w_k, y_k, h_k, d_k, d_{k+1}). x_k and y_k are running sums, so
//     dw_j = d/dx_k and dh_j = d/dy_k for j < k, dw_k = d/dw_k, dh_k = d/dh_k, dd_k and
//     dd_{k+1} from d_k and d_{k+1}, every other entry 0. For the inverse, with x = f^-1(y)
//     and G = dx_out - dlogdet d(ln f')/dx: d input = G / f'(x), and the knot gradients
//     are the forward's at x with upstream (-G/f'(x), -dlogdet). In the tails
//     d input = dy and the knot gradients are 0.
// Reference: rq_spline / rq_spline_backward in src/backend/cpu.rs (which computes in f64;
// this file in f32, as shaders/rq_spline.wgsl). One thread per element, grid-stride; each
// thread writes its element's outputs and its own rows of the knot gradients.

// The bin of one element that its input falls in.
struct RqBin {
    int k;
    float xk, yk, wk, hk, d0, d1;
};

// The partials of gy y + gl logdet with respect to the bin's variables.
struct RqGrad {
    float x, xk, wk, yk, hk, d0, d1;
};

// The bin of v (an x, or a y for the inverse) for one element's knots; values past the
// last knot (rounding) stay in the last bin.
__device__ RqBin rq_bin(float v, const float* w, const float* h, const float* d, int bins,
                        float bound, int inverse) {
    float xk = -bound, yk = -bound;
    int k = 0;
    for (; k + 1 < bins; ++k) {
        if (v < (inverse ? yk + h[k] : xk + w[k])) break;
        xk += w[k];
        yk += h[k];
    }
    return RqBin{k, xk, yk, w[k], h[k], d[k], d[k + 1]};
}

// (y, ln dy/dx) of the forward map inside bin b at x.
__device__ float2 rq_eval(const RqBin& b, float x) {
    const float xi = (x - b.xk) / b.wk;
    const float s = b.hk / b.wk;
    const float t = xi * (1.0f - xi);
    const float num = b.hk * (s * xi * xi + b.d0 * t);
    const float den = s + (b.d0 + b.d1 - 2.0f * s) * t;
    const float q = b.d1 * xi * xi + 2.0f * s * t + b.d0 * (1.0f - xi) * (1.0f - xi);
    return make_float2(b.yk + num / den, logf(s * s * q) - 2.0f * logf(den));
}

// The x in bin b that the forward map sends to y (the root xi in [0, 1] of a quadratic).
__device__ float rq_invert(const RqBin& b, float y) {
    const float s = b.hk / b.wk;
    const float dyk = y - b.yk;
    const float c1 = b.d0 + b.d1 - 2.0f * s;
    const float alpha = b.hk * (s - b.d0) + dyk * c1;
    const float beta = b.hk * b.d0 - dyk * c1;
    const float c = -s * dyk;
    const float disc = fmaxf(beta * beta - 4.0f * alpha * c, 0.0f);
    const float xi = 2.0f * c / (-beta - sqrtf(disc));
    return b.xk + xi * b.wk;
}

// Reverse mode through rq_eval: the partials of gy y + gl ln y' at x.
__device__ RqGrad rq_eval_backward(const RqBin& b, float x, float gy, float gl) {
    const float xi = (x - b.xk) / b.wk;
    const float s = b.hk / b.wk;
    const float t = xi * (1.0f - xi);
    const float inner = s * xi * xi + b.d0 * t;
    const float num = b.hk * inner;
    const float c1 = b.d0 + b.d1 - 2.0f * s;
    const float den = s + c1 * t;
    const float q = b.d1 * xi * xi + 2.0f * s * t + b.d0 * (1.0f - xi) * (1.0f - xi);
    // ln y' = 2 ln s + ln q - 2 ln den.
    const float g_num = gy / den;
    const float g_den = -gy * num / (den * den) - 2.0f * gl / den;
    const float g_q = gl / q;
    const float g_inner = g_num * b.hk;
    const float g_t = g_inner * b.d0 + g_den * c1 + g_q * 2.0f * s;
    const float g_s = 2.0f * gl / s + g_inner * xi * xi + g_den * (1.0f - 2.0f * t) +
                      g_q * 2.0f * t;
    const float g_xi = g_inner * 2.0f * s * xi +
                       g_q * (2.0f * b.d1 * xi - 2.0f * b.d0 * (1.0f - xi)) +
                       g_t * (1.0f - 2.0f * xi);
    RqGrad g;
    g.x = g_xi / b.wk;
    g.xk = -g_xi / b.wk;
    g.wk = -g_s * s / b.wk - g_xi * xi / b.wk;
    g.yk = gy;
    g.hk = g_num * inner + g_s / b.wk;
    g.d0 = g_inner * t + g_den * t + g_q * (1.0f - xi) * (1.0f - xi);
    g.d1 = g_den * t + g_q * xi * xi;
    return g;
}

extern "C" __global__ void rq_spline(const float* __restrict__ x,
                                     const float* __restrict__ widths,
                                     const float* __restrict__ heights,
                                     const float* __restrict__ derivatives,
                                     float* __restrict__ y, float* __restrict__ logdet, int n,
                                     int bins, float bound, int inverse) {
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < n;
         e += (long long)blockDim.x * gridDim.x) {
        const float v = x[e];
        if (v < -bound || v > bound) {
            y[e] = v;
            logdet[e] = 0.0f;
            continue;
        }
        const RqBin b = rq_bin(v, widths + e * bins, heights + e * bins,
                               derivatives + e * (bins + 1), bins, bound, inverse);
        if (inverse) {
            const float xv = rq_invert(b, v);
            y[e] = xv;
            logdet[e] = -rq_eval(b, xv).y;
        } else {
            const float2 r = rq_eval(b, v);
            y[e] = r.x;
            logdet[e] = r.y;
        }
    }
}

extern "C" __global__ void rq_spline_backward(
    const float* __restrict__ x, const float* __restrict__ widths,
    const float* __restrict__ heights, const float* __restrict__ derivatives,
    const float* __restrict__ dy, const float* __restrict__ dlogdet, float* __restrict__ dx,
    float* __restrict__ dwidths, float* __restrict__ dheights,
    float* __restrict__ dderivatives, int n, int bins, float bound, int inverse) {
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < n;
         e += (long long)blockDim.x * gridDim.x) {
        const float v = x[e];
        const float gy = dy[e], gl = dlogdet[e];
        // Tails: the identity; g's knot partials stay 0, so every knot gradient below is 0.
        RqGrad g = {gy, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
        int k = bins;
        if (!(v < -bound || v > bound)) {
            const RqBin b = rq_bin(v, widths + e * bins, heights + e * bins,
                                   derivatives + e * (bins + 1), bins, bound, inverse);
            k = b.k;
            if (inverse) {
                const float xv = rq_invert(b, v);
                const float fprime = expf(rq_eval(b, xv).y);
                const float big_g = gy - gl * rq_eval_backward(b, xv, 0.0f, 1.0f).x;
                g = rq_eval_backward(b, xv, -big_g / fprime, -gl);
                g.x = big_g / fprime;
            } else {
                g = rq_eval_backward(b, v, gy, gl);
            }
        }
        dx[e] = g.x;
        for (int j = 0; j < bins; ++j) {
            dwidths[e * bins + j] = j < k ? g.xk : (j == k ? g.wk : 0.0f);
            dheights[e * bins + j] = j < k ? g.yk : (j == k ? g.hk : 0.0f);
        }
        for (int j = 0; j <= bins; ++j)
            dderivatives[e * (bins + 1) + j] = j == k ? g.d0 : (j == k + 1 ? g.d1 : 0.0f);
    }
}
