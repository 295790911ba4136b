// binary: out[i] = a[i] (op) b[i mod bn], op in {add, sub, mul, div}.
// `b` has a's length (bn = n) or is one row of the last axis broadcast over all rows
// (a bias). One thread per output element, grid-stride; IEEE f32 ops, so the result is
// bit-identical to src/backend/cpu.rs `binary`.
#define BINARY_KERNEL(NAME, EXPR)                                                      \
    extern "C" __global__ void binary_##NAME(const float* __restrict__ a,             \
                                             const float* __restrict__ b,             \
                                             float* __restrict__ out, int n, int bn) {\
        for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;    \
             i += (long long)blockDim.x * gridDim.x) {                                \
            const float x = a[i];                                                     \
            const float y = b[bn == n ? i : i % bn];                                  \
            out[i] = (EXPR);                                                          \
        }                                                                             \
    }

BINARY_KERNEL(add, x + y)
BINARY_KERNEL(sub, x - y)
BINARY_KERNEL(mul, x * y)
BINARY_KERNEL(div, x / y)
