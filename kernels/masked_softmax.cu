// Softmax over the keys each query may see, x = [batch, queries, keys], mask = [batch, keys]:
//   visible(b, i, j) = mask_bj != 0  and, when causal, j <= i
//   m = max_{visible j} x_bij
//   y_bij = exp(x_bij - m) / sum_{visible j'} exp(x_bij' - m)  if visible, else 0
// A query that sees no key gets a row of zeros; hidden keys never enter the arithmetic (x
// may hold +-inf there). The backward is softmax_backward (softmax.cu): y = 0 at hidden
// keys makes their gradient 0. Reference: masked_softmax in src/backend/cpu.rs.
// One block of REDUCE_THREADS per row (b, i), grid-stride over rows; deterministic block
// reductions (block_reduce.cuh).
#include "block_reduce.cuh"

extern "C" __global__ void masked_softmax(const float* __restrict__ x,
                                          const float* __restrict__ mask,
                                          float* __restrict__ y, int rows, int queries,
                                          int keys, int causal) {
    __shared__ float scratch[REDUCE_THREADS];
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const float* xr = x + r * keys;
        const float* mr = mask + (r / queries) * keys;
        float* yr = y + r * keys;
        // Keys 0..seen may be visible; keys past the query are hidden when causal.
        const long long i = r % queries;
        const int seen = causal ? (int)(i + 1 < keys ? i + 1 : keys) : keys;
        float m = NEG_INF_F;
        for (int j = threadIdx.x; j < seen; j += REDUCE_THREADS)
            if (mr[j] != 0.0f) m = fmaxf(m, xr[j]);
        m = block_max(m, scratch);
        float s = 0.0f;
        if (m != NEG_INF_F)
            for (int j = threadIdx.x; j < seen; j += REDUCE_THREADS)
                if (mr[j] != 0.0f) s += expf(xr[j] - m);
        s = block_sum(s, scratch);
        for (int j = threadIdx.x; j < keys; j += REDUCE_THREADS)
            yr[j] = (j < seen && s > 0.0f && mr[j] != 0.0f) ? expf(xr[j] - m) / s : 0.0f;
    }
}
