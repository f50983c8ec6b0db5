// Portability layer: the kernels in this folder compile with nvcc for NVIDIA GPUs and, with
// HIPNNTS_EMULATE defined, as plain C++ for the host emulator in ../emulation (used by the CPU
// test suite to run the CUDA kernels' logic without a GPU).
//
// Kernels use a restricted CUDA subset so that emulation is faithful: threadIdx.x, blockIdx.x/y,
// blockDim.x, static and dynamic shared memory, __syncthreads(), and full-warp __shfl*_sync /
// __syncwarp; no atomics.
#pragma once

#include <cstdint>

#ifdef HIPNNTS_EMULATE
#include "../emulation/host_cuda.h"
#define HIPNNTS_DYNAMIC_SHARED(type, name) type* name = reinterpret_cast<type*>(hipnnts_emu::dynamic_shared())
#else
#include <cuda_runtime.h>
#define HIPNNTS_DYNAMIC_SHARED(type, name) extern __shared__ unsigned char hipnnts_smem_[]; \
    type* name = reinterpret_cast<type*>(hipnnts_smem_)
#endif

#define HIPNNTS_HD __host__ __device__ __forceinline__

// Unroll the next loop (nvcc; the host compiler of the emulator decides itself).
#ifdef HIPNNTS_EMULATE
#define HIPNNTS_UNROLL
#else
#define HIPNNTS_UNROLL _Pragma("unroll")
#endif

// Kernels reach global memory through gptr<T> and shared memory through sptr<T>: plain pointers on
// the GPU; in the emulator, pointer wrappers whose loads and stores feed the traffic model
// (emulation/traffic.h). HIPNNTS_FLOPS(n) counts n floating-point operations there (nothing on the GPU).
namespace hipnnts {
#ifdef HIPNNTS_EMULATE
template <class T>
using gptr = hipnnts_emu::traffic::Ptr<T, hipnnts_emu::traffic::kGlobal>;
template <class T>
using sptr = hipnnts_emu::traffic::Ptr<T, hipnnts_emu::traffic::kShared>;
#define HIPNNTS_FLOPS(n) hipnnts_emu::traffic::count_flops(n)
#else
template <class T>
using gptr = T*;
template <class T>
using sptr = T*;
#define HIPNNTS_FLOPS(n) ((void)0)
#endif
}  // namespace hipnnts

// Launch a kernel (a function pointer, so template arguments need no macro escaping).
#ifdef HIPNNTS_EMULATE
#define HIPNNTS_LAUNCH(kernel, grid, block, shared_bytes, stream, ...) \
    ((void)(stream), hipnnts_emu::launch(grid, block, shared_bytes, kernel, __VA_ARGS__))
#else
#define HIPNNTS_LAUNCH(kernel, grid, block, shared_bytes, stream, ...) \
    kernel<<<grid, block, shared_bytes, stream>>>(__VA_ARGS__)
#endif

namespace hipnnts {

#ifdef HIPNNTS_EMULATE
using std::cos;
using std::exp;
using std::sin;
using std::sqrt;
#endif

using index_t = int64_t;  // every offset that is a product of sizes is 64-bit

// Number of angular components for lmax 0, 1, 2.
HIPNNTS_HD constexpr int n_components(int lmax) { return lmax == 0 ? 1 : (lmax == 1 ? 4 : 9); }

// Bytes of dynamic shared memory, rounded up so the next array stays aligned for 8-byte types.
HIPNNTS_HD constexpr size_t aligned_bytes(size_t bytes) { return (bytes + 15) / 16 * 16; }

}  // namespace hipnnts
