// unary:          y[i]  = f(x[i])
// unary_backward: dx[i] = f'(x[i], y[i]) · dy[i]
// with f chosen by op (UnaryOp::ALL order):
//   0 relu      max(x, 0)                         f' = 1 if x > 0 else 0
//   1 gelu      0.5·x·(1 + tanh(u)) = x·σ(2u), u = √(2/π)(x + 0.044715x³)
//               f' = σ(2u) + 2x·σ(2u)(1 − σ(2u))·√(2/π)(1 + 3·0.044715x²)
//   2 silu      x·σ(x)                            f' = σ(x)(1 + x(1 − σ(x)))
//   3 tanh      tanh x                            f' = 1 − y²
//   4 sigmoid   σ(x) = 1/(1 + e^−x) (overflow-free for either sign)   f' = y(1 − y)
//   5 softplus  max(x, 0) + ln(1 + e^−|x|)        f' = σ(x)
//   6 exp       e^x                               f' = y
//   7 log       ln x                              f' = 1/x
// tanh is computed here as sign(x)(1 − e^−2|x|)/(1 + e^−2|x|), which never overflows,
// rather than trusting each driver's builtin; ln(1 + t) uses the log1p correction
// ln(u)·t/(u − 1), u = 1 + t, so softplus keeps its accuracy for large |x|.
// Reference: `UnaryOp::apply` / `UnaryOp::derivative` in src/backend/mod.rs (which reads
// SiLU's and GELU's gate back from the output, s = y/x; computed again here, the same
// value to a few ulps).
// Bindings: unary 0 params, 1 x, 2 y; unary_backward 0 params, 1 x, 2 y, 3 dy, 4 dx.
// Workgroup: 256 threads, one element each.

struct Params {
    n: u32,
    op: u32,
}

const SQRT_2_OVER_PI: f32 = 0.7978846;
const GELU_CUBIC: f32 = 0.044715;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y_out: array<f32>;
@group(0) @binding(2) var<storage, read> y_in: array<f32>;
@group(0) @binding(3) var<storage, read> dy: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;

fn tanh_safe(v: f32) -> f32 {
    let t = exp(-2.0 * abs(v));
    let r = (1.0 - t) / (1.0 + t);
    return select(r, -r, v < 0.0);
}

fn sigmoid(v: f32) -> f32 {
    if (v >= 0.0) {
        return 1.0 / (1.0 + exp(-v));
    }
    let e = exp(v);
    return e / (1.0 + e);
}

fn log1p_safe(t: f32) -> f32 {
    let u = 1.0 + t;
    if (u == 1.0) {
        return t;
    }
    return log(u) * t / (u - 1.0);
}

fn apply(op: u32, v: f32) -> f32 {
    switch op {
        case 0u: { return max(v, 0.0); }
        case 1u: {
            let u = SQRT_2_OVER_PI * (v + GELU_CUBIC * v * v * v);
            return v * sigmoid(2.0 * u);
        }
        case 2u: { return v * sigmoid(v); }
        case 3u: { return tanh_safe(v); }
        case 4u: { return sigmoid(v); }
        case 5u: { return max(v, 0.0) + log1p_safe(exp(-abs(v))); }
        case 6u: { return exp(v); }
        default: { return log(v); }
    }
}

fn derivative(op: u32, v: f32, w: f32) -> f32 {
    switch op {
        case 0u: { return select(0.0, 1.0, v > 0.0); }
        case 1u: {
            let u = SQRT_2_OVER_PI * (v + GELU_CUBIC * v * v * v);
            let s = sigmoid(2.0 * u);
            let du = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_CUBIC * v * v);
            return s + 2.0 * v * s * (1.0 - s) * du;
        }
        case 2u: {
            let s = sigmoid(v);
            return s * (1.0 + v * (1.0 - s));
        }
        case 3u: { return 1.0 - w * w; }
        case 4u: { return w * (1.0 - w); }
        case 5u: { return sigmoid(v); }
        case 6u: { return w; }
        default: { return 1.0 / v; }
    }
}

@compute @workgroup_size(256)
fn unary(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    if (i < p.n) {
        y_out[i] = apply(p.op, x[i]);
    }
}

@compute @workgroup_size(256)
fn unary_backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    if (i < p.n) {
        dx[i] = derivative(p.op, x[i], y_in[i]) * dy[i];
    }
}
