// unary: y = f(x) and its backward dx = f'(x, y) * dy, elementwise, for
//   relu      max(x, 0);                      f' = 1 if x > 0 else 0
//   gelu      0.5 x (1 + tanh(u)) = x sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3)
//             f' = s + 2 x s (1 - s) sqrt(2/pi) (1 + 3*0.044715 x^2), s = sigmoid(2u)
//   silu      x sigmoid(x);                   f' = s (1 + x (1 - s)), s = sigmoid(x)
//   tanh      tanh x;                         f' = 1 - y^2
//   sigmoid   1/(1 + e^-x) (no overflow for either sign);  f' = y (1 - y)
//   softplus  max(x, 0) + log1p(e^-|x|);      f' = sigmoid(x)
//   exp       e^x;                            f' = y
//   log       ln x;                           f' = 1/x
// exactly as UnaryOp::apply / UnaryOp::derivative in src/backend/mod.rs, except that the
// CPU reads SiLU's and GELU's gate s back from the output (s = y/x, saving an exponential
// on a CPU), where these kernels compute it again: the same value to a few ulps. Kernels are
// unary_NAME(x, y, n) and unary_backward_NAME(x, y, dy, dx, n); one thread per element.
#define SQRT_2_OVER_PI 0.7978846f
#define GELU_CUBIC 0.044715f

__device__ __forceinline__ float sigmoid_f(float x) {
    if (x >= 0.0f) {
        return 1.0f / (1.0f + expf(-x));
    }
    const float e = expf(x);
    return e / (1.0f + e);
}

__device__ __forceinline__ float f_relu(float x) { return fmaxf(x, 0.0f); }
__device__ __forceinline__ float f_gelu(float x) {
    const float u = SQRT_2_OVER_PI * (x + GELU_CUBIC * x * x * x);
    return x * sigmoid_f(2.0f * u);
}
__device__ __forceinline__ float f_silu(float x) { return x * sigmoid_f(x); }
__device__ __forceinline__ float f_tanh(float x) { return tanhf(x); }
__device__ __forceinline__ float f_sigmoid(float x) { return sigmoid_f(x); }
__device__ __forceinline__ float f_softplus(float x) {
    return fmaxf(x, 0.0f) + log1pf(expf(-fabsf(x)));
}
__device__ __forceinline__ float f_exp(float x) { return expf(x); }
__device__ __forceinline__ float f_log(float x) { return logf(x); }

__device__ __forceinline__ float d_relu(float x, float) { return x > 0.0f ? 1.0f : 0.0f; }
__device__ __forceinline__ float d_gelu(float x, float) {
    const float u = SQRT_2_OVER_PI * (x + GELU_CUBIC * x * x * x);
    const float s = sigmoid_f(2.0f * u);
    const float du = SQRT_2_OVER_PI * (1.0f + 3.0f * GELU_CUBIC * x * x);
    return s + 2.0f * x * s * (1.0f - s) * du;
}
__device__ __forceinline__ float d_silu(float x, float) {
    const float s = sigmoid_f(x);
    return s * (1.0f + x * (1.0f - s));
}
__device__ __forceinline__ float d_tanh(float, float y) { return 1.0f - y * y; }
__device__ __forceinline__ float d_sigmoid(float, float y) { return y * (1.0f - y); }
__device__ __forceinline__ float d_softplus(float x, float) { return sigmoid_f(x); }
__device__ __forceinline__ float d_exp(float, float y) { return y; }
__device__ __forceinline__ float d_log(float x, float) { return 1.0f / x; }

#define UNARY_KERNELS(NAME)                                                            \
    extern "C" __global__ void unary_##NAME(const float* __restrict__ x,              \
                                            float* __restrict__ y, int n) {           \
        for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;    \
             i += (long long)blockDim.x * gridDim.x) {                                \
            y[i] = f_##NAME(x[i]);                                                    \
        }                                                                             \
    }                                                                                 \
    extern "C" __global__ void unary_backward_##NAME(                                  \
        const float* __restrict__ x, const float* __restrict__ y,                     \
        const float* __restrict__ dy, float* __restrict__ dx, int n) {                \
        for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;    \
             i += (long long)blockDim.x * gridDim.x) {                                \
            dx[i] = d_##NAME(x[i], y[i]) * dy[i];                                     \
        }                                                                             \
    }

UNARY_KERNELS(relu)
UNARY_KERNELS(gelu)
UNARY_KERNELS(silu)
UNARY_KERNELS(tanh)
UNARY_KERNELS(sigmoid)
UNARY_KERNELS(softplus)
UNARY_KERNELS(exp)
UNARY_KERNELS(log)
