// fill: out[i] = value for i in 0..n. One thread per element, grid-stride. Also used to
// poison fresh outputs with NaN in parity tests.
extern "C" __global__ void fill(float* __restrict__ out, float value, int n) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        out[i] = value;
    }
}
