// Kernels of known memory behaviour for tests/test_traffic_model.py: the traffic model must count
// what the GPU's memory system would see for each (emulator build only).
#include <string>

#include "kernels/portable.cuh"

using hipnnts::gptr;
using hipnnts::sptr;

namespace {

// out[i] = in[i * stride] + 1 for i = the global thread index: stride 1 is a coalesced row (4 sectors
// per warp request of floats), stride 32 puts each lane in its own sector.
__global__ void copy_kernel(gptr<const float> in, gptr<float> out, int stride) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    out[i] = in[i * stride] + 1.0f;
    HIPNNTS_FLOPS(1);
}

// Each warp writes a 32 x 32 tile by rows and reads it by columns, with rows `pitch` words apart:
// pitch 32 puts a column in one bank (32-way conflicts), pitch 33 spreads it over all banks.
__global__ void transpose_kernel(gptr<float> out, int pitch) {
    __shared__ float storage[32 * 33];
    const sptr<float> tile(storage);
    const int lane = threadIdx.x;
    for (int row = 0; row < 32; ++row) tile[row * pitch + lane] = float(row * 32 + lane);
    __syncthreads();
    float sum = 0.0f;
    for (int col = 0; col < 32; ++col) sum += tile[lane * pitch + col];
    out[lane] = sum;
}

// A sum over the warp by butterfly shuffles; every lane ends with the total.
__global__ void warp_sum_kernel(gptr<const double> in, gptr<double> out) {
    double v = in[threadIdx.x];
    for (int mask = 16; mask > 0; mask /= 2) v += __shfl_xor_sync(0xffffffffu, v, mask);
    out[threadIdx.x] = v;
}

// Thread t writes its slot of dynamic shared memory and reads its neighbour's, with or without a
// barrier between: without one, the emulator must let some thread read before its neighbour writes.
__global__ void neighbour_kernel(gptr<float> out, int with_barrier) {
    HIPNNTS_DYNAMIC_SHARED(float, storage);
    const sptr<float> slots(storage);
    const unsigned t = threadIdx.x;
    slots[t] = float(t);
    if (with_barrier) __syncthreads();
    out[blockIdx.x * blockDim.x + t] = slots[(t + 1) % blockDim.x];
}

// Every thread of every block adds to out[t] (one writer per element when blocks == 1; with more
// blocks, several blocks write one element: a global hazard).
__global__ void accumulate_kernel(gptr<float> out) { out[threadIdx.x] += 1.0f; }

// Lanes of one warp exchange through shared memory with __syncwarp between write and read: ordered.
__global__ void warp_exchange_kernel(gptr<float> out) {
    __shared__ float storage[32];
    const sptr<float> slots(storage);
    slots[threadIdx.x] = float(threadIdx.x);
    __syncwarp();
    out[threadIdx.x] = slots[31 - threadIdx.x];
}

}  // namespace

extern "C" {

void probe_accumulate(float* out, int blocks) {
    HIPNNTS_LAUNCH(accumulate_kernel, dim3(unsigned(blocks)), dim3(32), 0, nullptr, gptr<float>(out));
}

void probe_warp_exchange(float* out) {
    HIPNNTS_LAUNCH(warp_exchange_kernel, dim3(1), dim3(32), 0, nullptr, gptr<float>(out));
}

void probe_neighbour(float* out, int blocks, int with_barrier) {
    HIPNNTS_LAUNCH(neighbour_kernel, dim3(unsigned(blocks)), dim3(64), 64 * sizeof(float), nullptr, gptr<float>(out),
                   with_barrier);
}

void probe_copy(const float* in, float* out, int n, int stride) {
    hipnnts_emu::traffic::recorder.kernel = "copy stride " + std::to_string(stride);
    hipnnts_emu::traffic::recorder.row_bytes = sizeof(float);
    HIPNNTS_LAUNCH(copy_kernel, dim3(unsigned(n / 64)), dim3(64), 0, nullptr, gptr<const float>(in), gptr<float>(out),
                   stride);
}

void probe_transpose(float* out, int pitch) {
    hipnnts_emu::traffic::recorder.kernel = "transpose pitch " + std::to_string(pitch);
    HIPNNTS_LAUNCH(transpose_kernel, dim3(1), dim3(32), 0, nullptr, gptr<float>(out), pitch);
}

void probe_warp_sum(const double* in, double* out) {
    hipnnts_emu::traffic::recorder.kernel = "warp sum";
    HIPNNTS_LAUNCH(warp_sum_kernel, dim3(1), dim3(32), 0, nullptr, gptr<const double>(in), gptr<double>(out));
}

}  // extern "C"
