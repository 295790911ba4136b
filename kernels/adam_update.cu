// adam_update: one Adam(W) step in place, per element i:
//   Adam:  g' = g + wd * p          AdamW: p <- p * (1 - lr * wd), g' = g
//   m <- beta1 m + (1 - beta1) g'
//   v <- beta2 v + (1 - beta2) g'^2
//   p <- p - lr * (m / bc1) / (sqrt(v / bc2) + eps)
// with bc1 = 1 - beta1^t and bc2 = 1 - beta2^t computed on the host (AdamStep). One
// thread per element, grid-stride; the same expression order as src/backend/cpu.rs.
extern "C" __global__ void adam_update(float* __restrict__ p, const float* __restrict__ g,
                                       float* __restrict__ m, float* __restrict__ v, int n,
                                       float lr, float beta1, float beta2, float eps,
                                       float weight_decay, int decoupled, float bc1, float bc2) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        float pi = p[i];
        float grad = g[i];
        if (decoupled) {
            pi *= 1.0f - lr * weight_decay;
        } else {
            grad += weight_decay * pi;
        }
        const float mi = beta1 * m[i] + (1.0f - beta1) * grad;
        const float vi = beta2 * v[i] + (1.0f - beta2) * grad * grad;
        m[i] = mi;
        v[i] = vi;
        const float mhat = mi / bc1;
        const float vhat = vi / bc2;
        p[i] = pi - lr * mhat / (sqrtf(vhat) + eps);
    }
}
