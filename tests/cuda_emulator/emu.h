// CUDA's device language, as much of it as kernels/*.cu use, for a host C++ compiler.
//
// The CUDA emulator (driver.cpp) compiles every kernel file with this header in front:
// each CUDA thread of a block is a fiber on one CPU thread, `__syncthreads()` switches to
// the block's scheduler, and `__shared__` memory is storage of that CPU thread, so a block
// sees one copy of it. Arithmetic is IEEE f32/f64 as on the GPU (no flush to zero); the
// `__fadd_rn`-style intrinsics are plain operations because the build turns contraction
// off (-ffp-contract=off), which is what they ask NVCC for. `expf`, `logf` and friends
// are glibc's, within the kernels' tolerances of CUDA's (≤ 2 ulp).
//
// Not here, so a kernel that needs them does not build: warp shuffles and votes, atomics,
// inline PTX, textures. (The tensor-core helpers of matmul_tf32.cu, which are inline PTX,
// are replaced by emu_wmma.h's.)
//
// The emulated device is compute capability 9.0.
#define __CUDA_ARCH__ 900
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>

struct uint2 {
    unsigned int x, y;
};
struct uint3 {
    unsigned int x, y, z;
};
struct uint4 {
    unsigned int x, y, z, w;
};
struct float2 {
    float x, y;
};
using dim3 = uint3;

inline uint2 make_uint2(unsigned int x, unsigned int y) { return {x, y}; }
inline uint4 make_uint4(unsigned int x, unsigned int y, unsigned int z, unsigned int w) {
    return {x, y, z, w};
}
inline float2 make_float2(float x, float y) { return {x, y}; }

namespace emu {

/// The indices CUDA gives the running thread; the block scheduler rewrites `thread_idx`
/// before it switches to a thread's fiber.
struct Indices {
    uint3 thread_idx, block_idx, block_dim, grid_dim;
};
extern thread_local Indices current;

/// `__syncthreads()`: parks the calling fiber until every live thread of the block is
/// parked, then the scheduler resumes them all.
void syncthreads();

/// `__syncwarp()`: parks the calling fiber until every live lane of its warp is parked.
void syncwarp();

/// `__cvta_generic_to_shared`: a 32-bit address of shared memory (an offset from a
/// thread-local anchor), and back.
unsigned shared_offset(const void* p);
void* shared_pointer(unsigned offset);

/// The calling thread's lane and warp within its block.
unsigned warp_lane();
unsigned warp_index();

/// The block's dynamic shared memory (`extern __shared__ T name[]`), as many bytes as
/// the launch asked for, filled with 0xFF bytes (NaN) before the block starts.
void* dynamic_shared();

template <class To, class From>
inline To bit_cast(From from) {
    static_assert(sizeof(To) == sizeof(From), "bit_cast between sizes");
    To to;
    std::memcpy(&to, &from, sizeof(To));
    return to;
}

}  // namespace emu

#define threadIdx (emu::current.thread_idx)
#define blockIdx (emu::current.block_idx)
#define blockDim (emu::current.block_dim)
#define gridDim (emu::current.grid_dim)

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
// One copy per CPU thread, which runs one block at a time: per block, as on the GPU.
#define __shared__ static thread_local

inline void __syncthreads() { emu::syncthreads(); }
inline void __syncwarp() { emu::syncwarp(); }
inline unsigned long long __cvta_generic_to_shared(const void* p) { return emu::shared_offset(p); }

inline float __int_as_float(int v) { return emu::bit_cast<float>(v); }
inline float __uint_as_float(unsigned int v) { return emu::bit_cast<float>(v); }
inline int __float_as_int(float v) { return emu::bit_cast<int>(v); }
inline unsigned int __float_as_uint(float v) { return emu::bit_cast<unsigned int>(v); }
inline float __uint2float_rn(unsigned int v) { return static_cast<float>(v); }
inline unsigned int __umulhi(unsigned int a, unsigned int b) {
    return static_cast<unsigned int>((static_cast<unsigned long long>(a) * b) >> 32);
}

inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline double __dsqrt_rn(double a) { return std::sqrt(a); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }

inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned int min(unsigned int a, unsigned int b) { return a < b ? a : b; }
inline unsigned int max(unsigned int a, unsigned int b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }

namespace emu {

/// A kernel entry behind one signature: calls `fn` with the arguments cuLaunchKernel
/// passes (`args[i]` points at argument i, as the driver API specifies).
using Invoker = void (*)(void* fn, void** args);

template <class... A, unsigned long... I>
void invoke_with(void (*fn)(A...), void** args, std::integer_sequence<unsigned long, I...>) {
    fn(*static_cast<A*>(args[I])...);
}

template <class... A>
void invoke(void* fn, void** args) {
    invoke_with(reinterpret_cast<void (*)(A...)>(fn), args,
                std::make_integer_sequence<unsigned long, sizeof...(A)>{});
}

/// Adds entry `name` to the emulator's kernel table (driver.cpp).
void register_kernel(const char* name, void* fn, Invoker invoker, int params);

template <class... A>
bool register_entry(const char* name, void (*fn)(A...)) {
    register_kernel(name, reinterpret_cast<void*>(fn), &invoke<A...>, sizeof...(A));
    return true;
}

}  // namespace emu

/// Registers `extern "C"` kernel NAME of the file above it (appended by the test harness).
#define EMU_KERNEL(NAME) static const bool emu_registered_##NAME = emu::register_entry(#NAME, &NAME);
