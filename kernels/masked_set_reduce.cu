// Masked reduction over the set axis of x = [batch, set, feat] with mask = [batch, set]:
//   w_b = 1 (sum) or 1 / sum_s mask_bs (mean; 0 when the set is empty)
//   masked_set_reduce:          out_bf = w_b sum_s mask_bs x_bsf        (s in order)
//   masked_set_reduce_backward: dx_bsf = (w_b mask_bs) dy_bf
// masked_set_weight computes w (one thread per set, mask summed in order) into a scratch
// buffer that the other two read. All kernels: one thread per output element, grid-stride.
extern "C" __global__ void masked_set_weight(const float* __restrict__ mask,
                                             float* __restrict__ w, int batch, int set,
                                             int mean) {
    for (long long b = (long long)blockIdx.x * blockDim.x + threadIdx.x; b < batch;
         b += (long long)blockDim.x * gridDim.x) {
        if (!mean) {
            w[b] = 1.0f;
            continue;
        }
        float count = 0.0f;
        for (int s = 0; s < set; ++s) count += mask[b * set + s];
        w[b] = count == 0.0f ? 0.0f : 1.0f / count;
    }
}

extern "C" __global__ void masked_set_reduce(const float* __restrict__ x,
                                             const float* __restrict__ mask,
                                             const float* __restrict__ w,
                                             float* __restrict__ out, int batch, int set,
                                             int feat) {
    const long long n = (long long)batch * feat;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        const long long b = i / feat;
        const long long f = i - b * feat;
        float s = 0.0f;
        for (int q = 0; q < set; ++q) s += mask[b * set + q] * x[(b * set + q) * feat + f];
        out[i] = s * w[b];
    }
}

extern "C" __global__ void masked_set_reduce_backward(const float* __restrict__ dy,
                                                      const float* __restrict__ mask,
                                                      const float* __restrict__ w,
                                                      float* __restrict__ dx, int batch,
                                                      int set, int feat) {
    const long long n = (long long)batch * set * feat;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        const long long bs = i / feat;
        const long long f = i - bs * feat;
        const long long b = bs / set;
        const float coef = w[b] * mask[bs];
        dx[i] = coef * dy[b * feat + f];
    }
}
