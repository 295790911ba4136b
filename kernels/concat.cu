// concat / split along the last axis, one part per launch.
//   concat_part: out[r, offset + j] = part[r, j]      for r < rows, j < width
//   split_part:  out[r, j] = x[r, offset + j]          (the inverse)
// where rows of `out` (concat) or `x` (split) are `total` wide. One thread per element of
// the part, grid-stride; pure copies, bit-identical to src/backend/cpu.rs concat/split.
extern "C" __global__ void concat_part(const float* __restrict__ part, float* __restrict__ out,
                                       int rows, int width, int total, int offset) {
    const long long n = (long long)rows * width;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        const long long r = i / width;
        const long long j = i - r * width;
        out[r * total + offset + j] = part[i];
    }
}

extern "C" __global__ void split_part(const float* __restrict__ x, float* __restrict__ out,
                                      int rows, int width, int total, int offset) {
    const long long n = (long long)rows * width;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        const long long r = i / width;
        const long long j = i - r * width;
        out[i] = x[r * total + offset + j];
    }
}
