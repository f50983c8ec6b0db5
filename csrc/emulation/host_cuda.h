// Host emulation of the CUDA subset the kernels use, so that the CPU test suite can run the CUDA
// kernels' logic without a GPU (g++ -DHIPNNTS_EMULATE). Each block runs as blockDim.x fibers on the
// calling thread, switched at __syncthreads() and at warp barriers (__shfl*_sync, __syncwarp: every
// lane of the warp must take part); blocks run one after another, and between two barriers the
// threads run in a seeded random order. Static __shared__ arrays become function statics (blocks do
// not overlap) and the dynamic shared buffer is refilled with NaN bytes before every block, so
// reading shared memory before it is written, a missing barrier included, shows up in the results.
//
// This checks indexing, synchronisation structure and arithmetic; it says nothing about speed. The
// memory traffic the kernels would cause is modelled, on request, by traffic.h, and racecheck.h
// checks, on request, that no two threads touch an element without a barrier between them.
#pragma once

#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <vector>

#include "traffic.h"

#define __global__
#define __launch_bounds__(...)
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__
#define __shared__ static

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

using cudaStream_t = void*;

namespace hipnnts_emu {

inline thread_local dim3 thread_idx, block_idx;
inline dim3 block_dim, grid_dim;
inline std::vector<unsigned char> shared_buffer;

inline void* dynamic_shared() { return shared_buffer.data(); }

// The threads of the block in flight, as fibers on the calling thread: each runs until it meets a
// barrier (or ends), then the scheduler runs the next; a barrier opens when every thread that has
// not ended waits at it. The order in which threads run between two barriers is a fresh seeded
// shuffle each time, so a missing barrier shows up as a read of memory not yet written (shared
// memory starts as NaN) whichever thread writes first.
struct Fiber {
    enum State { runnable, at_block_barrier, at_warp_barrier, ended };
    ucontext_t context;
    std::unique_ptr<char[]> stack;
    State state = ended;
};

struct Block {
    static constexpr size_t kStack = 256 * 1024;
    std::vector<Fiber> fibers;
    ucontext_t scheduler;
    unsigned running = 0;
    std::function<void(unsigned)> body;
    std::vector<unsigned> order;
    uint64_t rng = 0x9E3779B97F4A7C15ull;
    unsigned char shuffle_slots[1024][8] = {};
};
inline Block* block_in_flight = nullptr;

inline void fiber_entry(unsigned t) {
    block_in_flight->body(t);
    block_in_flight->fibers[t].state = Fiber::ended;  // uc_link returns to the scheduler
}

inline void wait_at(Fiber::State state) {
    Block& b = *block_in_flight;
    Fiber& f = b.fibers[b.running];
    f.state = state;
    swapcontext(&f.context, &b.scheduler);
}

inline void syncthreads() { wait_at(Fiber::at_block_barrier); }
inline void syncwarp() { wait_at(Fiber::at_warp_barrier); }

// The value of `v` held by lane `source` of this warp (1-D blocks; every lane takes part).
template <class T>
T shuffle(T v, unsigned source) {
    static_assert(sizeof(T) <= 8, "shuffles move at most 8 bytes");
    const unsigned t = thread_idx.x, warp_base = t / 32 * 32;
    std::memcpy(block_in_flight->shuffle_slots[t], &v, sizeof(T));
    syncwarp();
    T out;
    std::memcpy(&out, block_in_flight->shuffle_slots[warp_base + source % 32], sizeof(T));
    syncwarp();
    return out;
}

// Runs one block to its end; `prepare(t)` sets thread t's per-thread state before it runs.
template <class Prepare>
void run_block(Block& b, unsigned n_threads, Prepare prepare) {
    for (unsigned t = 0; t < n_threads; ++t) {
        Fiber& f = b.fibers[t];
        getcontext(&f.context);
        f.context.uc_stack.ss_sp = f.stack.get();
        f.context.uc_stack.ss_size = Block::kStack;
        f.context.uc_link = &b.scheduler;
        makecontext(&f.context, reinterpret_cast<void (*)()>(fiber_entry), 1, t);
        f.state = Fiber::runnable;
    }
    for (;;) {
        for (unsigned i = n_threads; i > 1; --i) {  // a seeded Fisher-Yates shuffle of the order
            b.rng ^= b.rng << 13, b.rng ^= b.rng >> 7, b.rng ^= b.rng << 17;
            std::swap(b.order[i - 1], b.order[b.rng % i]);
        }
        for (unsigned t : b.order) {
            if (b.fibers[t].state != Fiber::runnable) continue;
            b.running = t;
            prepare(t);
            swapcontext(&b.scheduler, &b.fibers[t].context);
        }
        bool all_ended = true, all_at_block = true, released = false;
        for (unsigned t = 0; t < n_threads; ++t) {
            all_ended = all_ended && b.fibers[t].state == Fiber::ended;
            all_at_block = all_at_block && (b.fibers[t].state == Fiber::ended ||
                                            b.fibers[t].state == Fiber::at_block_barrier);
        }
        if (all_ended) return;
        for (unsigned w = 0; w * 32 < n_threads; ++w) {  // warp barriers: every lane that has not ended
            const unsigned end = std::min(n_threads, 32 * w + 32);
            bool waiting = true, any = false;
            for (unsigned t = 32 * w; t < end; ++t) {
                const Fiber::State state = b.fibers[t].state;
                waiting = waiting && (state == Fiber::ended || state == Fiber::at_warp_barrier);
                any = any || b.fibers[t].state == Fiber::at_warp_barrier;
            }
            if (waiting && any) {
                for (unsigned t = 32 * w; t < end; ++t)
                    if (b.fibers[t].state == Fiber::at_warp_barrier) b.fibers[t].state = Fiber::runnable;
                if (racecheck::checker.enabled) ++racecheck::checker.warp_epochs[w];
                released = true;
            }
        }
        if (!released && all_at_block) {
            for (unsigned t = 0; t < n_threads; ++t)
                if (b.fibers[t].state == Fiber::at_block_barrier) b.fibers[t].state = Fiber::runnable;
            ++racecheck::checker.block_epoch;
            released = true;
        }
        if (!released) {
            std::fprintf(stderr, "hipnnts emulator: deadlock: the threads of block (%u, %u, %u) wait at different "
                         "barriers (a __syncthreads or warp operation that not every thread reaches)\n",
                         block_idx.x, block_idx.y, block_idx.z);
            std::abort();
        }
    }
}

template <class Kernel, class... Args>
void launch(dim3 grid, dim3 block, size_t shared_bytes, Kernel kernel, Args... args) {
    block_dim = block;
    grid_dim = grid;
    const unsigned n_threads = block.x * block.y * block.z;
    const unsigned long n_blocks = static_cast<unsigned long>(grid.x) * grid.y * grid.z;
    traffic::Recorder& recorder = traffic::recorder;
    if (recorder.enabled) recorder.begin_launch(n_threads);
    racecheck::Checker& checker = racecheck::checker;
    if (checker.enabled) checker.begin_launch(recorder.kernel, n_threads);
    auto b = std::make_unique<Block>();
    b->fibers.resize(n_threads);
    for (Fiber& f : b->fibers) f.stack.reset(new char[Block::kStack]);
    b->order.resize(n_threads);
    for (unsigned t = 0; t < n_threads; ++t) b->order[t] = t;
    b->body = [&](unsigned) { kernel(args...); };
    Block* outer = block_in_flight;
    block_in_flight = b.get();
    for (unsigned long i = 0; i < n_blocks; ++i) {
        shared_buffer.assign(shared_bytes + 16, 0xFF);  // NaN for floats and doubles
        traffic::ThreadLog* logs = recorder.enabled ? recorder.begin_block(n_threads).data() : nullptr;
        block_idx = dim3(unsigned(i % grid.x), unsigned(i / grid.x % grid.y), unsigned(i / grid.x / grid.y));
        checker.begin_block(uint32_t(i));
        run_block(*b, n_threads, [&](unsigned t) {
            thread_idx = dim3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
            traffic::current = logs != nullptr ? logs + t : nullptr;
            checker.thread = t;
        });
        traffic::current = nullptr;
        if (recorder.enabled) recorder.end_block();
    }
    block_in_flight = outer;
    if (recorder.enabled) traffic::launches.emplace_back(recorder.kernel, recorder.stats);
}

}  // namespace hipnnts_emu

#define threadIdx hipnnts_emu::thread_idx
#define blockIdx hipnnts_emu::block_idx
#define blockDim hipnnts_emu::block_dim
#define gridDim hipnnts_emu::grid_dim
#define __syncthreads() hipnnts_emu::syncthreads()
#define __syncwarp(...) hipnnts_emu::syncwarp()
#define __shfl_sync(mask, v, source) hipnnts_emu::shuffle(v, source)
#define __shfl_xor_sync(mask, v, lane_mask) hipnnts_emu::shuffle(v, (threadIdx.x % 32) ^ (lane_mask))
#define __shfl_down_sync(mask, v, delta) \
    hipnnts_emu::shuffle(v, threadIdx.x % 32 + (delta) < 32 ? threadIdx.x % 32 + (delta) : threadIdx.x % 32)
