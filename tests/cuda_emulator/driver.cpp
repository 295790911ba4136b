// A stand-in for the CUDA driver library (libcuda.so) that runs kernels/*.cu on the CPU,
// so that the CUDA backend's tests run where there is no GPU.
//
// It is test equipment, not a device: tests/common/cuda_emulator.rs builds it (each kernel
// file compiled as C++ with emu.h in front, an EMU_KERNEL line per entry appended) and
// loads it before cudarc looks for libcuda.so, only when AMORTIZE_CUDA_EMULATOR=1. The
// backend above it is unchanged: NVRTC still compiles every module, cuModuleLoadData reads
// the entry names from the PTX, and cuLaunchKernel runs the C++ build of the same source.
//
// What it checks that compiling cannot:
// * the kernels' arithmetic and indexing, through the parity tests' comparisons;
// * the launch arguments, grid, block and shared-memory sizes the host code passes
//   (argument i is read as the kernel's parameter i, as the driver does);
// * barriers: each CUDA thread is a fiber, `__syncthreads()` parks it, and between two
//   barriers the threads run one after the other in a shuffled order that changes at every
//   barrier, so a missing barrier usually changes the result; a barrier that some threads
//   of a block skip (returned early) fails the launch; `__syncwarp()` parks a lane until
//   its warp's live lanes are all parked, so missing warp barriers show too;
// * the TF32 matmul: its tensor-core helpers (inline PTX) run as emu_wmma.h's C++, with a
//   fragment layout of the emulator's own (PTX leaves it unspecified);
// * memory: every allocation (and the dynamic shared memory) ends at an inaccessible
//   page, so a read or write past its end stops the process with the kernel and thread.
// What it cannot: timing, lockstep warp behaviour (shuffles, votes: no kernel uses them),
// races between blocks, resource limits beyond those listed in `attribute`, the tensor
// cores' own rounding, PTX or its assembly. Results are not GPU results.
//
// x86-64 Linux only (the fiber switch is a few lines of assembly).

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "emu.h"

#if !defined(__x86_64__) || !defined(__linux__)
#error "the CUDA emulator's fibers are written for x86-64 Linux"
#endif

namespace emu {

thread_local Indices current;

// ---------------------------------------------------------------------------------------
// Memory that ends at an inaccessible page.

struct Region {
    char* base;         // the mapping
    size_t map_bytes;   // its length, the guard page included
    size_t bytes;       // what the caller asked for
};

const size_t kPage = 4096;

// `bytes` (≥ 1) whose last byte is just below a PROT_NONE page. The start is aligned to 4
// bytes, or 8 when `bytes` is a multiple of 8 (f64 buffers), so a one-element overrun of an
// f32 or f64 buffer faults.
bool map_guarded(size_t bytes, Region* out, char** start) {
    const size_t body = (bytes + kPage - 1) / kPage * kPage;
    const size_t len = body + kPage;
    void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return false;
    char* base = static_cast<char*>(p);
    if (mprotect(base + body, kPage, PROT_NONE) != 0) {
        munmap(p, len);
        return false;
    }
    const size_t align = bytes % 8 == 0 ? 8 : 4;
    *start = reinterpret_cast<char*>(
        reinterpret_cast<uintptr_t>(base + body - bytes) & ~static_cast<uintptr_t>(align - 1));
    *out = Region{base, len, bytes};
    return true;
}

// ---------------------------------------------------------------------------------------
// Kernels: the table EMU_KERNEL fills, modules and functions.

struct Kernel {
    void* fn;
    Invoker invoker;
    int params;
};

std::map<std::string, Kernel>& kernel_table() {
    static std::map<std::string, Kernel> table;
    return table;
}

void register_kernel(const char* name, void* fn, Invoker invoker, int params) {
    kernel_table()[name] = Kernel{fn, invoker, params};
}

struct Module {
    std::vector<std::string> entries;
};

struct Function {
    std::string name;
    const Kernel* kernel;
    int max_dynamic_shared;
};

// ---------------------------------------------------------------------------------------
// Fibers: one per CUDA thread of the running block, switched by emu_switch.

extern "C" void emu_switch(void** save_sp, void* load_sp);
// Saves the callee-saved registers, MXCSR and the x87 control word on the current stack,
// stores the stack pointer in *save_sp, then restores the same from load_sp and returns
// into that fiber.
asm(R"(
    .text
    .globl emu_switch
    .type emu_switch, @function
emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_switch, .-emu_switch
)");

enum class State : unsigned char { Runnable, AtBarrier, AtWarpBarrier, Done };

struct Block {
    void* scheduler_sp = nullptr;
    std::vector<void*> sp;
    std::vector<State> state;
    unsigned running = 0;
    const Kernel* kernel = nullptr;
    void** args = nullptr;
    // One stack per thread, each above its own guard page.
    char* stacks = nullptr;
    size_t stack_count = 0;
    // Dynamic shared memory, ending at a guard page.
    Region shared{};
    char* shared_start = nullptr;
    size_t shared_bytes = 0;

    ~Block();
};

const size_t kStackBytes = 256 * 1024;

Block::~Block() {
    if (stacks) munmap(stacks, stack_count * (kStackBytes + kPage));
    if (shared_start) munmap(shared.base, shared.map_bytes);
}

thread_local Block block;
// What the signal handler reports.
thread_local const char* running_kernel = nullptr;

// Parks the running fiber in `state` until the scheduler releases it.
void park(State state) {
    Block& b = block;
    const unsigned i = b.running;
    b.state[i] = state;
    emu_switch(&b.sp[i], b.scheduler_sp);
}

void syncthreads() { park(State::AtBarrier); }

void syncwarp() { park(State::AtWarpBarrier); }

thread_local char shared_anchor;

unsigned shared_offset(const void* p) {
    // Static shared arrays are thread-local storage of this library, as is the anchor:
    // one TLS block, so the distance fits in 32 bits, as a .shared address does.
    return static_cast<unsigned>(reinterpret_cast<uintptr_t>(p) -
                                 reinterpret_cast<uintptr_t>(&shared_anchor));
}

void* shared_pointer(unsigned offset) {
    return &shared_anchor + static_cast<int>(offset);
}

unsigned warp_lane() {
    const uint3 t = current.thread_idx, d = current.block_dim;
    return ((t.z * d.y + t.y) * d.x + t.x) % 32;
}

unsigned warp_index() {
    const uint3 t = current.thread_idx, d = current.block_dim;
    return ((t.z * d.y + t.y) * d.x + t.x) / 32;
}

void* dynamic_shared() { return block.shared_start; }

[[noreturn]] void fiber_main() {
    block.kernel->invoker(block.kernel->fn, block.args);
    block.state[block.running] = State::Done;
    emu_switch(&block.sp[block.running], block.scheduler_sp);
    std::abort();  // a finished fiber is never resumed
}

bool reserve_stacks(Block& b, size_t threads) {
    if (b.stack_count >= threads) return true;
    if (b.stacks) munmap(b.stacks, b.stack_count * (kStackBytes + kPage));
    b.stack_count = 0;
    const size_t len = threads * (kStackBytes + kPage);
    void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (p == MAP_FAILED) return false;
    b.stacks = static_cast<char*>(p);
    for (size_t i = 0; i < threads; ++i) {
        // Stacks grow down: each one's guard page sits below it.
        if (mprotect(b.stacks + i * (kStackBytes + kPage), kPage, PROT_NONE) != 0) return false;
    }
    b.stack_count = threads;
    b.sp.resize(threads);
    b.state.resize(threads);
    return true;
}

// A fresh fiber on stack i whose first switch-in enters fiber_main.
void* fresh_fiber(Block& b, size_t i) {
    char* top = b.stacks + (i + 1) * (kStackBytes + kPage);  // 16-byte aligned
    void** slot = reinterpret_cast<void**>(top);
    *--slot = nullptr;                                   // fiber_main's return address
    *--slot = reinterpret_cast<void*>(&fiber_main);      // emu_switch returns here
    for (int r = 0; r < 6; ++r) *--slot = nullptr;       // rbp rbx r12 r13 r14 r15
    --slot;                                              // MXCSR and x87 control word
    uint32_t mxcsr;
    uint16_t fcw;
    asm volatile("stmxcsr %0" : "=m"(mxcsr));
    asm volatile("fnstcw %0" : "=m"(fcw));
    std::memcpy(slot, &mxcsr, 4);
    std::memcpy(reinterpret_cast<char*>(slot) + 4, &fcw, 2);
    return slot;
}

uint64_t mix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    return x ^ (x >> 33);
}

// Runs every runnable thread of the block, in an order shuffled by (block, round), until
// each parks at a barrier or returns.
void run_round(Block& b, unsigned threads, uint64_t block_number, uint64_t round,
               std::vector<unsigned>& order) {
    // Fisher–Yates driven by SplitMix64.
    for (unsigned i = 0; i < threads; ++i) order[i] = i;
    uint64_t s = (block_number << 32) ^ round;
    for (unsigned i = threads; i > 1; --i) {
        s += 0x9E3779B97F4A7C15ULL;
        std::swap(order[i - 1], order[mix(s) % i]);
    }
    const uint3 dim = current.block_dim;
    for (unsigned i : order) {
        if (b.state[i] != State::Runnable) continue;
        b.running = i;
        current.thread_idx = uint3{i % dim.x, i / dim.x % dim.y, i / (dim.x * dim.y)};
        emu_switch(&b.scheduler_sp, b.sp[i]);
    }
}

// Releases every warp whose live lanes all wait at `__syncwarp()`; says whether any did.
bool release_warps(Block& b, unsigned threads) {
    bool released = false;
    for (unsigned w = 0; w * 32 < threads; ++w) {
        const unsigned end = std::min(threads, 32 * w + 32);
        bool waiting = false, all = true;
        for (unsigned i = 32 * w; i < end; ++i) {
            waiting |= b.state[i] == State::AtWarpBarrier;
            all &= b.state[i] == State::AtWarpBarrier || b.state[i] == State::Done;
        }
        if (!waiting || !all) continue;
        for (unsigned i = 32 * w; i < end; ++i) {
            if (b.state[i] == State::AtWarpBarrier) b.state[i] = State::Runnable;
        }
        released = true;
    }
    return released;
}

// Runs every thread of the block at blockIdx `current.block_idx` to completion: rounds of
// the runnable threads in shuffled orders, releasing warps at `__syncwarp()` as they
// gather, and the block at `__syncthreads()` once every live thread waits there. Returns
// an error message, or nullptr.
const char* run_block(Block& b, unsigned threads, uint64_t block_number) {
    for (unsigned i = 0; i < threads; ++i) {
        b.sp[i] = fresh_fiber(b, i);
        b.state[i] = State::Runnable;
    }
    std::vector<unsigned> order(threads);
    for (uint64_t round = 0;; ++round) {
        run_round(b, threads, block_number, round, order);
        if (release_warps(b, threads)) continue;
        unsigned done = 0, at_warp_barrier = 0;
        for (unsigned i = 0; i < threads; ++i) {
            done += b.state[i] == State::Done;
            at_warp_barrier += b.state[i] == State::AtWarpBarrier;
        }
        if (done == threads) return nullptr;
        if (at_warp_barrier != 0) {
            return "__syncwarp() waits for lanes that wait at __syncthreads()";
        }
        if (done != 0) {
            return "__syncthreads() reached by some threads of a block after others returned";
        }
        // Every thread waits at __syncthreads(): the next phase.
        for (unsigned i = 0; i < threads; ++i) b.state[i] = State::Runnable;
    }
}

void report_fault(int sig, siginfo_t* info, void*);
struct sigaction previous_segv, previous_bus;

void install_fault_report() {
    static std::once_flag once;
    std::call_once(once, [] {
        struct sigaction sa {};
        sa.sa_sigaction = report_fault;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGSEGV, &sa, &previous_segv);
        sigaction(SIGBUS, &sa, &previous_bus);
    });
    // A stack overflow of a fiber needs another stack to report it on.
    thread_local bool alt = false;
    if (!alt) {
        stack_t ss{};
        ss.ss_size = 64 * 1024;
        ss.ss_sp = std::malloc(ss.ss_size);
        sigaltstack(&ss, nullptr);
        alt = true;
    }
}

void report_fault(int sig, siginfo_t* info, void*) {
    if (!running_kernel) {
        // Not ours: hand the signal back to whoever had it (Rust's stack-overflow check).
        sigaction(sig, sig == SIGSEGV ? &previous_segv : &previous_bus, nullptr);
        return;
    }
    char msg[512];
    const int n = snprintf(msg, sizeof msg,
                           "CUDA emulator: kernel %s, block (%u, %u, %u), thread (%u, %u, %u): "
                           "invalid access at %p (past the end of a buffer, of the dynamic shared "
                           "memory, or of a fiber's stack)\n",
                           running_kernel, current.block_idx.x, current.block_idx.y,
                           current.block_idx.z, current.thread_idx.x, current.thread_idx.y,
                           current.thread_idx.z, info->si_addr);
    if (n > 0) (void)!write(2, msg, static_cast<size_t>(n));
    _exit(134);
}

}  // namespace emu

// ---------------------------------------------------------------------------------------
// The driver API, as cudarc calls it. Every call is synchronous: a stream is the order of
// the calls, an event is always complete.

using namespace emu;

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef void* CUcontext;
typedef void* CUstream;
typedef void* CUevent;
typedef Module* CUmodule;
typedef Function* CUfunction;

enum : CUresult {
    CUDA_SUCCESS = 0,
    CUDA_ERROR_INVALID_VALUE = 1,
    CUDA_ERROR_OUT_OF_MEMORY = 2,
    CUDA_ERROR_INVALID_DEVICE = 101,
    CUDA_ERROR_INVALID_IMAGE = 200,
    CUDA_ERROR_NOT_FOUND = 500,
    CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES = 701,
    CUDA_ERROR_LAUNCH_FAILED = 719,
    CUDA_ERROR_NOT_SUPPORTED = 801,
};

namespace {

// The emulated device: an H100's limits where the backend asks for them.
const char kDeviceName[] = "CUDA emulator (kernels/*.cu as C++ on the CPU; not a GPU)";
const int kSharedPerBlock = 48 * 1024;
const int kSharedOptin = 227 * 1024;

std::mutex memory_lock;
std::map<uintptr_t, Region> allocations;  // by start address
std::atomic<unsigned long long> allocation_count{0};

int context_token, stream_token, event_token;

CUresult fail(CUresult code, const std::string& why) {
    fprintf(stderr, "CUDA emulator: %s\n", why.c_str());
    return code;
}

// Whether [p, p + bytes) lies inside one allocation.
bool device_range(uintptr_t p, size_t bytes) {
    std::lock_guard<std::mutex> guard(memory_lock);
    auto it = allocations.upper_bound(p);
    if (it == allocations.begin()) return false;
    --it;
    return p + bytes <= it->first + it->second.bytes;
}

CUresult copy(void* dst, const void* src, size_t bytes, bool dst_device, bool src_device) {
    if (dst_device && !device_range(reinterpret_cast<uintptr_t>(dst), bytes)) {
        return fail(CUDA_ERROR_INVALID_VALUE, "copy of " + std::to_string(bytes) +
                                                  " bytes past the end of a device buffer");
    }
    if (src_device && !device_range(reinterpret_cast<uintptr_t>(src), bytes)) {
        return fail(CUDA_ERROR_INVALID_VALUE, "copy of " + std::to_string(bytes) +
                                                  " bytes from past the end of a device buffer");
    }
    std::memmove(dst, src, bytes);
    return CUDA_SUCCESS;
}

CUresult attribute(int attrib, int* value) {
    switch (attrib) {
        case 1: *value = 1024; return CUDA_SUCCESS;            // MAX_THREADS_PER_BLOCK
        case 2: case 3: *value = 1024; return CUDA_SUCCESS;    // MAX_BLOCK_DIM_X, _Y
        case 4: *value = 64; return CUDA_SUCCESS;              // MAX_BLOCK_DIM_Z
        case 5: *value = 2147483647; return CUDA_SUCCESS;      // MAX_GRID_DIM_X
        case 6: case 7: *value = 65535; return CUDA_SUCCESS;   // MAX_GRID_DIM_Y, _Z
        case 8: *value = kSharedPerBlock; return CUDA_SUCCESS; // MAX_SHARED_MEMORY_PER_BLOCK
        case 10: *value = 32; return CUDA_SUCCESS;             // WARP_SIZE
        case 16: *value = 1; return CUDA_SUCCESS;              // MULTIPROCESSOR_COUNT
        case 75: *value = 9; return CUDA_SUCCESS;              // COMPUTE_CAPABILITY_MAJOR
        case 76: *value = 0; return CUDA_SUCCESS;              // COMPUTE_CAPABILITY_MINOR
        case 97: *value = kSharedOptin; return CUDA_SUCCESS;   // MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
        case 115: *value = 0; return CUDA_SUCCESS;             // MEMORY_POOLS_SUPPORTED
        default:
            return fail(CUDA_ERROR_INVALID_VALUE,
                        "device attribute " + std::to_string(attrib) + " is not emulated");
    }
}

}  // namespace

extern "C" {

CUresult cuInit(unsigned int) { return CUDA_SUCCESS; }

CUresult cuDriverGetVersion(int* version) {
    *version = 12090;
    return CUDA_SUCCESS;
}

CUresult cuDeviceGetCount(int* count) {
    *count = 1;
    return CUDA_SUCCESS;
}

CUresult cuDeviceGet(CUdevice* device, int ordinal) {
    if (ordinal != 0) return CUDA_ERROR_INVALID_DEVICE;
    *device = 0;
    return CUDA_SUCCESS;
}

CUresult cuDeviceGetName(char* name, int len, CUdevice) {
    if (len <= 0) return CUDA_ERROR_INVALID_VALUE;
    snprintf(name, static_cast<size_t>(len), "%s", kDeviceName);
    return CUDA_SUCCESS;
}

CUresult cuDeviceTotalMem_v2(size_t* bytes, CUdevice) {
    *bytes = size_t{4} << 30;
    return CUDA_SUCCESS;
}

CUresult cuDeviceGetAttribute(int* value, int attrib, CUdevice) { return attribute(attrib, value); }

CUresult cuDevicePrimaryCtxRetain(CUcontext* ctx, CUdevice) {
    *ctx = &context_token;
    return CUDA_SUCCESS;
}
CUresult cuDevicePrimaryCtxRelease_v2(CUdevice) { return CUDA_SUCCESS; }
CUresult cuCtxSetCurrent(CUcontext) { return CUDA_SUCCESS; }
CUresult cuCtxGetCurrent(CUcontext* ctx) {
    *ctx = &context_token;
    return CUDA_SUCCESS;
}
CUresult cuCtxSynchronize() { return CUDA_SUCCESS; }

CUresult cuStreamCreate(CUstream* stream, unsigned int) {
    *stream = &stream_token;
    return CUDA_SUCCESS;
}
CUresult cuStreamDestroy_v2(CUstream) { return CUDA_SUCCESS; }
CUresult cuStreamSynchronize(CUstream) { return CUDA_SUCCESS; }
CUresult cuStreamWaitEvent(CUstream, CUevent, unsigned int) { return CUDA_SUCCESS; }

CUresult cuEventCreate(CUevent* event, unsigned int) {
    *event = &event_token;
    return CUDA_SUCCESS;
}
CUresult cuEventDestroy_v2(CUevent) { return CUDA_SUCCESS; }
CUresult cuEventRecord(CUevent, CUstream) { return CUDA_SUCCESS; }
CUresult cuEventSynchronize(CUevent) { return CUDA_SUCCESS; }

CUresult cuMemAlloc_v2(CUdeviceptr* ptr, size_t bytes) {
    Region region;
    char* start;
    if (!map_guarded(bytes == 0 ? 1 : bytes, &region, &start)) return CUDA_ERROR_OUT_OF_MEMORY;
    region.bytes = bytes;
    std::lock_guard<std::mutex> guard(memory_lock);
    allocations[reinterpret_cast<uintptr_t>(start)] = region;
    *ptr = reinterpret_cast<uintptr_t>(start);
    ++allocation_count;
    return CUDA_SUCCESS;
}

// Not the driver's: how many cuMemAlloc calls succeeded so far, so that tests can check
// that a loop allocates nothing after its first iteration.
unsigned long long emu_allocation_count() { return allocation_count.load(); }

CUresult cuMemFree_v2(CUdeviceptr ptr) {
    std::lock_guard<std::mutex> guard(memory_lock);
    auto it = allocations.find(ptr);
    if (it == allocations.end()) {
        return fail(CUDA_ERROR_INVALID_VALUE, "cuMemFree of an address no allocation starts at");
    }
    munmap(it->second.base, it->second.map_bytes);
    allocations.erase(it);
    return CUDA_SUCCESS;
}

CUresult cuMemGetInfo_v2(size_t* free, size_t* total) {
    *free = *total = size_t{4} << 30;
    return CUDA_SUCCESS;
}

CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void* src, size_t bytes) {
    return copy(reinterpret_cast<void*>(dst), src, bytes, true, false);
}
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void* src, size_t bytes, CUstream) {
    return cuMemcpyHtoD_v2(dst, src, bytes);
}
CUresult cuMemcpyDtoH_v2(void* dst, CUdeviceptr src, size_t bytes) {
    return copy(dst, reinterpret_cast<const void*>(src), bytes, false, true);
}
CUresult cuMemcpyDtoHAsync_v2(void* dst, CUdeviceptr src, size_t bytes, CUstream) {
    return cuMemcpyDtoH_v2(dst, src, bytes);
}
CUresult cuMemcpyDtoD_v2(CUdeviceptr dst, CUdeviceptr src, size_t bytes) {
    return copy(reinterpret_cast<void*>(dst), reinterpret_cast<const void*>(src), bytes, true, true);
}
CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t bytes, CUstream) {
    return cuMemcpyDtoD_v2(dst, src, bytes);
}
CUresult cuMemsetD8_v2(CUdeviceptr dst, unsigned char value, size_t n) {
    if (!device_range(dst, n)) return fail(CUDA_ERROR_INVALID_VALUE, "memset past a buffer's end");
    std::memset(reinterpret_cast<void*>(dst), value, n);
    return CUDA_SUCCESS;
}
CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char value, size_t n, CUstream) {
    return cuMemsetD8_v2(dst, value, n);
}

// A module is the list of `.entry` names in its PTX; the code run is the C++ build.
CUresult cuModuleLoadData(CUmodule* module, const void* image) {
    const std::string ptx(static_cast<const char*>(image));
    auto* m = new Module;
    for (size_t at = ptx.find(".entry "); at != std::string::npos; at = ptx.find(".entry ", at)) {
        at += 7;
        const size_t end = ptx.find_first_of("( \n", at);
        m->entries.push_back(ptx.substr(at, end - at));
    }
    if (m->entries.empty()) {
        delete m;
        return fail(CUDA_ERROR_INVALID_IMAGE, "a module without one .entry");
    }
    *module = m;
    return CUDA_SUCCESS;
}

CUresult cuModuleUnload(CUmodule module) {
    delete module;
    return CUDA_SUCCESS;
}

CUresult cuModuleGetFunction(CUfunction* function, CUmodule module, const char* name) {
    bool listed = false;
    for (const auto& e : module->entries) listed |= e == name;
    if (!listed) return CUDA_ERROR_NOT_FOUND;
    auto it = kernel_table().find(name);
    if (it == kernel_table().end()) {
        return fail(CUDA_ERROR_NOT_SUPPORTED,
                    std::string("kernel ") + name + " has no C++ build in the emulator");
    }
    *function = new Function{name, &it->second, kSharedPerBlock};
    return CUDA_SUCCESS;
}

CUresult cuFuncSetAttribute(CUfunction f, int attrib, int value) {
    if (attrib != 8) {  // MAX_DYNAMIC_SHARED_SIZE_BYTES
        return fail(CUDA_ERROR_NOT_SUPPORTED,
                    "function attribute " + std::to_string(attrib) + " is not emulated");
    }
    if (value < 0 || value > kSharedOptin) {
        return fail(CUDA_ERROR_INVALID_VALUE, "dynamic shared memory of " + std::to_string(value) +
                                                  " bytes is past the device's opt-in limit");
    }
    f->max_dynamic_shared = value;
    return CUDA_SUCCESS;
}

CUresult cuLaunchKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                        unsigned by, unsigned bz, unsigned shared_bytes, CUstream, void** params,
                        void** extra) {
    const unsigned long long threads = 1ULL * bx * by * bz;
    if (extra != nullptr) return fail(CUDA_ERROR_NOT_SUPPORTED, "launch with `extra`");
    if (threads == 0 || threads > 1024 || bx > 1024 || by > 1024 || bz > 64 || gx == 0 ||
        gy == 0 || gz == 0 || gy > 65535 || gz > 65535 || gx > 2147483647u) {
        return fail(CUDA_ERROR_INVALID_VALUE,
                    f->name + ": grid (" + std::to_string(gx) + ", " + std::to_string(gy) + ", " +
                        std::to_string(gz) + ") × block (" + std::to_string(bx) + ", " +
                        std::to_string(by) + ", " + std::to_string(bz) + ") is not launchable");
    }
    if (shared_bytes > static_cast<unsigned>(f->max_dynamic_shared)) {
        return fail(CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES,
                    f->name + ": " + std::to_string(shared_bytes) +
                        " bytes of dynamic shared memory, more than the function allows (" +
                        std::to_string(f->max_dynamic_shared) + ")");
    }
    if (f->kernel->params > 0 && params == nullptr) {
        return fail(CUDA_ERROR_INVALID_VALUE, f->name + ": no arguments");
    }
    // AMORTIZE_CUDA_EMULATOR_LOG=1: one line per launch, so a test of a whole program can
    // see that its kernels ran here and not on the CPU.
    static const bool log = getenv("AMORTIZE_CUDA_EMULATOR_LOG") != nullptr;
    if (log) {
        fprintf(stderr, "CUDA emulator: launch %s grid (%u, %u, %u) block (%u, %u, %u)\n",
                f->name.c_str(), gx, gy, gz, bx, by, bz);
    }
    install_fault_report();
    Block& b = block;
    if (!reserve_stacks(b, threads)) return CUDA_ERROR_OUT_OF_MEMORY;
    if (shared_bytes != b.shared_bytes || (shared_bytes > 0 && b.shared_start == nullptr)) {
        if (b.shared_start) munmap(b.shared.base, b.shared.map_bytes);
        b.shared_start = nullptr;
        b.shared_bytes = 0;
        if (shared_bytes > 0) {
            if (!map_guarded(shared_bytes, &b.shared, &b.shared_start)) {
                return CUDA_ERROR_OUT_OF_MEMORY;
            }
            b.shared_bytes = shared_bytes;
        }
    }
    b.kernel = f->kernel;
    b.args = params;
    current.block_dim = uint3{bx, by, bz};
    current.grid_dim = uint3{gx, gy, gz};
    running_kernel = f->name.c_str();
    const char* error = nullptr;
    uint64_t number = 0;
    for (unsigned z = 0; z < gz && !error; ++z) {
        for (unsigned y = 0; y < gy && !error; ++y) {
            for (unsigned x = 0; x < gx && !error; ++x, ++number) {
                current.block_idx = uint3{x, y, z};
                if (b.shared_start) std::memset(b.shared_start, 0xFF, shared_bytes);
                error = run_block(b, static_cast<unsigned>(threads), number);
            }
        }
    }
    running_kernel = nullptr;
    if (error) return fail(CUDA_ERROR_LAUNCH_FAILED, f->name + ": " + error);
    return CUDA_SUCCESS;
}

CUresult cuGetErrorName(CUresult error, const char** name) {
    switch (error) {
        case CUDA_SUCCESS: *name = "CUDA_SUCCESS"; break;
        case CUDA_ERROR_INVALID_VALUE: *name = "CUDA_ERROR_INVALID_VALUE"; break;
        case CUDA_ERROR_OUT_OF_MEMORY: *name = "CUDA_ERROR_OUT_OF_MEMORY"; break;
        case CUDA_ERROR_INVALID_DEVICE: *name = "CUDA_ERROR_INVALID_DEVICE"; break;
        case CUDA_ERROR_INVALID_IMAGE: *name = "CUDA_ERROR_INVALID_IMAGE"; break;
        case CUDA_ERROR_NOT_FOUND: *name = "CUDA_ERROR_NOT_FOUND"; break;
        case CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES: *name = "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES"; break;
        case CUDA_ERROR_LAUNCH_FAILED: *name = "CUDA_ERROR_LAUNCH_FAILED"; break;
        case CUDA_ERROR_NOT_SUPPORTED: *name = "CUDA_ERROR_NOT_SUPPORTED"; break;
        default: return CUDA_ERROR_INVALID_VALUE;
    }
    return CUDA_SUCCESS;
}

CUresult cuGetErrorString(CUresult error, const char** text) {
    // The emulator prints the details to stderr when it returns an error.
    return cuGetErrorName(error, text);
}

}  // extern "C"
