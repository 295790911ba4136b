// scale: out[i] = s * x[i]. One thread per element, grid-stride; bit-identical to
// src/backend/cpu.rs `scale`.
extern "C" __global__ void scale(const float* __restrict__ x, float s, float* __restrict__ out,
                                 int n) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        out[i] = s * x[i];
    }
}
