// gather_rows:          out[i, j] = x[idx[i], j]                   for i < count, j < row
// gather_rows_backward: dx[r, j]  = sum over q in offsets[r]..offsets[r+1] of dy[order[q], j]
// The backward is a deterministic scatter-add: the host groups the positions i with
// idx[i] = r into `order` (ascending i within each r, CSR `offsets`), so every dx element
// is written by one thread that adds its contributions in index order starting from 0,
// exactly as src/backend/cpu.rs `gather_rows_backward` does; rows nobody gathered get 0.
// No atomics. One thread per output element, grid-stride.
extern "C" __global__ void gather_rows(const float* __restrict__ x,
                                       const unsigned int* __restrict__ idx,
                                       float* __restrict__ out, int count, int row) {
    const long long n = (long long)count * row;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        const long long r = i / row;
        const long long j = i - r * row;
        out[i] = x[(long long)idx[r] * row + j];
    }
}

extern "C" __global__ void gather_rows_backward(const float* __restrict__ dy,
                                                const unsigned int* __restrict__ offsets,
                                                const unsigned int* __restrict__ order,
                                                float* __restrict__ dx, int out_rows, int row) {
    const long long n = (long long)out_rows * row;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        const long long r = i / row;
        const long long j = i - r * row;
        float acc = 0.0f;
        for (unsigned int q = offsets[r]; q < offsets[r + 1]; ++q)
            acc += dy[(long long)order[q] * row + j];
        dx[i] = acc;
    }
}
