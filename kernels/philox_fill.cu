// philox_fill: the test kernel of philox.cuh. For lane l in 0..lanes and block b in
// 0..blocks, with counter (stream, step, l, b), key (seed_lo, seed_hi) and o = 4 (l blocks + b):
//   w = philox4x32_10(counter, key)
//   words[o + i]    = w_i                                  i = 0..3
//   uniforms[o + i] = uniform_open01(w_i)
//   normals[o + 0, 1] = box_muller(w_0, w_1), normals[o + 2, 3] = box_muller(w_2, w_3)
// which is block b of rng::PhiloxStream::at_step(seed, stream, step, l), the words a
// sampler thread for sample l at chain step `step` draws. One thread per (lane, block).
#include "philox.cuh"

extern "C" __global__ void philox_fill(unsigned int* words, float* uniforms, float* normals,
                                       unsigned int seed_lo, unsigned int seed_hi,
                                       unsigned int stream, unsigned int step, int lanes,
                                       int blocks) {
    const long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= (long long)lanes * blocks) return;
    const long long lane = t / blocks;
    const long long block = t - lane * blocks;
    const uint4 w = philox4x32_10(
        make_uint4(stream, step, (unsigned int)lane, (unsigned int)block),
        philox_key(seed_lo, seed_hi));
    const long long o = 4 * t;
    words[o + 0] = w.x;
    words[o + 1] = w.y;
    words[o + 2] = w.z;
    words[o + 3] = w.w;
    uniforms[o + 0] = uniform_open01(w.x);
    uniforms[o + 1] = uniform_open01(w.y);
    uniforms[o + 2] = uniform_open01(w.z);
    uniforms[o + 3] = uniform_open01(w.w);
    const float2 z01 = box_muller(w.x, w.y);
    const float2 z23 = box_muller(w.z, w.w);
    normals[o + 0] = z01.x;
    normals[o + 1] = z01.y;
    normals[o + 2] = z23.x;
    normals[o + 3] = z23.y;
}
