// Host emulation of the CUDA subset the kernels use, so that the CPU test suite can run the CUDA
// kernels' logic without a GPU (g++ -DHIPNNTS_EMULATE). Each block runs as blockDim.x std::threads
// that meet at __syncthreads() on a barrier; blocks run one after another. Static __shared__
// arrays become function statics (shared by the block's threads; blocks do not overlap) and the
// dynamic shared buffer is refilled with NaN bytes before every block, so reading shared memory
// before writing it shows up in the results.
//
// This checks indexing, synchronisation structure and arithmetic; it is no model of the GPU's
// memory system or scheduling and says nothing about speed.
#pragma once

#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#define __global__
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

// Reusable barrier for the threads of one block.
class Barrier {
  public:
    explicit Barrier(unsigned count) : count_(count) {}
    void wait() {
        std::unique_lock<std::mutex> lock(mutex_);
        const unsigned generation = generation_;
        if (++arrived_ == count_) {
            arrived_ = 0;
            ++generation_;
            cv_.notify_all();
        } else {
            cv_.wait(lock, [&] { return generation != generation_; });
        }
    }

  private:
    std::mutex mutex_;
    std::condition_variable cv_;
    unsigned count_, arrived_ = 0, generation_ = 0;
};

inline Barrier* barrier = nullptr;
inline std::vector<unsigned char> shared_buffer;

inline void* dynamic_shared() { return shared_buffer.data(); }
inline void syncthreads() { barrier->wait(); }

template <class Kernel, class... Args>
void launch(dim3 grid, dim3 block, size_t shared_bytes, Kernel kernel, Args... args) {
    block_dim = block;
    grid_dim = grid;
    const unsigned n_threads = block.x * block.y * block.z;
    for (unsigned bz = 0; bz < grid.z; ++bz)
        for (unsigned by = 0; by < grid.y; ++by)
            for (unsigned bx = 0; bx < grid.x; ++bx) {
                shared_buffer.assign(shared_bytes + 16, 0xFF);  // NaN for floats and doubles
                Barrier block_barrier(n_threads);
                barrier = &block_barrier;
                std::vector<std::thread> threads;
                threads.reserve(n_threads);
                for (unsigned t = 0; t < n_threads; ++t)
                    threads.emplace_back([=] {
                        thread_idx = dim3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
                        block_idx = dim3(bx, by, bz);
                        kernel(args...);
                    });
                for (auto& thread : threads) thread.join();
            }
}

}  // namespace hipnnts_emu

#define threadIdx hipnnts_emu::thread_idx
#define blockIdx hipnnts_emu::block_idx
#define blockDim hipnnts_emu::block_dim
#define gridDim hipnnts_emu::grid_dim
#define __syncthreads() hipnnts_emu::syncthreads()
