// Kernels that test the CUDA emulator itself (tests/cuda_emulator_checks.rs): each one
// breaks or probes one rule the emulator claims to check. Compiled by NVRTC like the
// backend's kernels, and into the emulator like them.

// out[0] = sum of in[0..blockDim.x), gathered through the dynamic shared memory by thread 0,
// after a barrier or (barrier = 0) without one: a race the emulator must expose.
extern "C" __global__ void selftest_block_sum(float* out, const float* in, int barrier) {
    extern __shared__ float selftest_shared[];
    selftest_shared[threadIdx.x] = in[threadIdx.x];
    if (barrier) __syncthreads();
    if (threadIdx.x == 0) {
        float s = 0.0f;
        for (unsigned int i = 0; i < blockDim.x; ++i) s += selftest_shared[i];
        out[0] = s;
    }
}

// out[w] = sum of in over warp w's lanes, gathered through the dynamic shared memory by
// the warp's lane 0, after __syncwarp() or (sync = 0) without it.
extern "C" __global__ void selftest_warp_sum(float* out, const float* in, int sync) {
    extern __shared__ float selftest_lanes[];
    selftest_lanes[threadIdx.x] = in[threadIdx.x];
    if (sync) __syncwarp();
    if (threadIdx.x % 32 == 0) {
        float s = 0.0f;
        for (unsigned int i = 0; i < 32; ++i) s += selftest_lanes[threadIdx.x + i];
        out[threadIdx.x / 32] = s;
    }
}

// Thread 0 returns before a barrier the others wait at: the launch must fail.
extern "C" __global__ void selftest_early_return(float* out) {
    if (threadIdx.x == 0) return;
    __syncthreads();
    out[threadIdx.x] = 1.0f;
}

// Each thread writes its linear thread number within the grid, from the 3-D indices.
extern "C" __global__ void selftest_indices(unsigned int* out) {
    const unsigned int block = (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
    const unsigned int thread = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
    out[block * blockDim.x * blockDim.y * blockDim.z + thread] = block * 1000u + thread;
}

// Copies the dynamic shared memory as the block finds it: the emulator fills it with NaN.
extern "C" __global__ void selftest_read_shared(float* out) {
    extern __shared__ float selftest_unwritten[];
    out[threadIdx.x] = selftest_unwritten[threadIdx.x];
}

// Writes one element past the end of `out` (n elements).
extern "C" __global__ void selftest_overrun(float* out, int n) {
    if (threadIdx.x == 0) out[n] = 1.0f;
}
