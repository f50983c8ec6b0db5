// Launchers of the CUDA kernels (see launch.h), instantiated for float and double.
#include <algorithm>
#include <cstdio>
#include <type_traits>
#ifndef HIPNNTS_EMULATE
#include <map>
#include <mutex>
#include <utility>
#endif

#include "envsum.cuh"
#include "split.cuh"

namespace hipnnts {
namespace {

constexpr int kChunkBackward = 8;   // pairs staged per shared-memory round, molecule and double backward
constexpr int kChunkSender = 16;
constexpr int kBlockNu = 16;        // sensitivities per block in the sender and envsum kernels
constexpr int kSensesumThreads = 128;

unsigned threads_for(int features, int nu = 0) {
    const int n = std::max(std::max(features, nu), 1);
    return unsigned((n + 31) / 32 * 32);
}

// Calls f(std::integral_constant<int, lmax>{}), so that f can instantiate the kernel templates.
template <class F>
const char* with_lmax(int lmax, F&& f) {
    switch (lmax) {
        case 0: return f(std::integral_constant<int, 0>{});
        case 1: return f(std::integral_constant<int, 1>{});
        case 2: return f(std::integral_constant<int, 2>{});
        default: return "lmax must be 0, 1 or 2";
    }
}

const char* launch_status() {
#ifdef HIPNNTS_EMULATE
    return nullptr;
#else
    const cudaError_t err = cudaGetLastError();
    return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
#endif
}

#ifdef HIPNNTS_EMULATE
template <class Kernel>
const char* kernel_limits(Kernel, KernelLimits& limits) {
    limits = {kMaxThreads, 0, size_t(-1)};  // the emulator has no registers or shared-memory limit
    return nullptr;
}
#else
// The limits of `kernel` on the current device, queried once per (kernel, device); the first query
// also lets the kernel take the device's whole opt-in shared memory (above the default 48 KiB).
template <class Kernel>
const char* kernel_limits(Kernel kernel, KernelLimits& limits) {
    static std::mutex mutex;
    static std::map<std::pair<const void*, int>, KernelLimits> cache;
    int device = 0;
    if (cudaGetDevice(&device) != cudaSuccess) return cudaGetErrorString(cudaGetLastError());
    const std::pair<const void*, int> key{reinterpret_cast<const void*>(kernel), device};
    std::lock_guard<std::mutex> lock(mutex);
    const auto found = cache.find(key);
    if (found != cache.end()) {
        limits = found->second;
        return nullptr;
    }
    cudaFuncAttributes attributes;
    cudaError_t err = cudaFuncGetAttributes(&attributes, kernel);
    if (err == cudaErrorInvalidDeviceFunction || err == cudaErrorNoKernelImageForDevice) {
        cudaGetLastError();
        return "hipnnts_kernels._C holds no machine code for this GPU: rebuild it with TORCH_CUDA_ARCH_LIST set "
               "to the GPU's compute capability";
    }
    int optin = 0;
    if (err == cudaSuccess) err = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
    const size_t dynamic = size_t(optin) > attributes.sharedSizeBytes ? optin - attributes.sharedSizeBytes : 0;
    if (err == cudaSuccess && dynamic > 48 * 1024)
        err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(dynamic));
    if (err != cudaSuccess) {
        cudaGetLastError();
        return cudaGetErrorString(err);
    }
    limits = {attributes.maxThreadsPerBlock, attributes.numRegs, dynamic};
    cache.emplace(key, limits);
    return nullptr;
}
#endif

// Checks a launch of `kernel` (of `kind`, element type T) against its limits on this device.
template <class T, class Kernel>
const char* check_launch(Kernel kernel, KernelKind kind, int lmax, int features, Block block) {
#ifdef HIPNNTS_EMULATE  // the name the traffic model gives the launch that follows
    hipnnts_emu::traffic::recorder.kernel = std::string(kernel_name(kind)) +
                                            (std::is_same<T, double>::value ? " f64" : " f32") +
                                            " lmax " + std::to_string(lmax);
#endif
    KernelLimits limits;
    if (const char* err = kernel_limits(kernel, limits)) return err;
    return check_block(kind, std::is_same<T, double>::value, lmax, features, block, limits);
}

}  // namespace

const char* kernel_name(KernelKind kind) {
    static const char* const names[kKernelKinds] = {
        "sender_contract", "receiver_forward", "receiver_backward", "sender_backward", "interaction_double_backward",
        "interaction_double_backward_molecules", "sender_sum", "envsum",
        "sensesum", "featsum", "featsum_molecules"};
    const int k = static_cast<int>(kind);
    return k >= 0 && k < kKernelKinds ? names[k] : "unknown kernel";
}

template <class T>
Block launch_block(KernelKind kind, int lmax, int nu, int features) {
    const int C = n_components(lmax);
    SharedCarver carver{nullptr};
    const unsigned tile = SplitTraits::threads(features);
    switch (kind) {
        case KernelKind::sender_contract:
        case KernelKind::sender_backward:
            SenderShared<T>::carve(carver, nu, tile, kind == KernelKind::sender_backward);
            return {tile, carver.offset};
        case KernelKind::receiver_forward:
        case KernelKind::receiver_backward:
            ReceiverTile<T>::carve(carver, C, tile, kind == KernelKind::receiver_backward);
            return {tile, carver.offset};
            ReceiverShared<T>::carve(carver, kChunkBackward, nu, C, features, true);
            return {threads_for(features, nu), carver.offset};
        case KernelKind::double_backward:
        case KernelKind::double_backward_molecules:
            DoubleShared<T>::carve(carver, kChunkBackward, nu, C, features);
            return {threads_for(features, nu), carver.offset};
        case KernelKind::featsum:
            carver.take<index_t>(kChunkSender);
            carver.take<T>(size_t(kChunkSender) * nu);
            return {threads_for(features), carver.offset};
        case KernelKind::sensesum:
            return {unsigned(kSensesumThreads), 0};
        case KernelKind::sender_sum:
        case KernelKind::envsum:
        case KernelKind::featsum_molecules:
            break;
    }
    return {threads_for(features), 0};
}

const char* check_block(KernelKind kind, bool is_double, int lmax, int features, Block block,
                        const KernelLimits& limits) {
    thread_local char message[640];
    const char* what = kernel_name(kind);
    const char* dtype = is_double ? "float64" : "float32";
    if (int(block.threads) > limits.max_threads) {
        if (limits.registers > 0)
            std::snprintf(message, sizeof message,
                          "%s (%s, lmax %d) runs one thread per feature, and with its %d registers per thread this "
                          "GPU launches at most %d threads per block: %d features is too wide for the cuda backend "
                          "(docs/kernels.md lists its widths)",
                          what, dtype, lmax, limits.registers, limits.max_threads, features);
        else
            std::snprintf(message, sizeof message,
                          "%s (%s, lmax %d) runs one thread per feature and takes at most %d: %d features is too "
                          "wide for the cuda backend (docs/kernels.md lists its widths)",
                          what, dtype, lmax, limits.max_threads, features);
        return message;
    }
    if (block.shared_bytes > limits.max_dynamic_shared) {
        std::snprintf(message, sizeof message,
                      "%s (%s, lmax %d) needs %.1f KiB of shared memory per block at %d features, and this GPU gives "
                      "it at most %.1f KiB: too wide for the cuda backend (docs/kernels.md lists its widths)",
                      what, dtype, lmax, block.shared_bytes / 1024.0, features, limits.max_dynamic_shared / 1024.0);
        return message;
    }
    return nullptr;
}

namespace {

// Launches `kernel` of `kind` with one block per atom (times `tiles` feature tiles).
template <class T, class Kernel, class... Args>
const char* launch_split(Kernel kernel, KernelKind kind, const InteractionInputs<T>& in, unsigned tiles,
                         cudaStream_t stream, Args... args) {
    const Block block = launch_block<T>(kind, in.lmax, in.nu, in.features);
    if (const char* err = check_launch<T>(kernel, kind, in.lmax, in.features, block)) return err;
    HIPNNTS_LAUNCH(kernel, dim3(unsigned(in.n_atoms), tiles), dim3(block.threads), block.shared_bytes, stream,
                   InteractionView<T>::from(in), args...);
    return launch_status();
}

template <class T, int LMAX>
const char* forward_lmax(const InteractionInputs<T>& in, T* out, T* workspace, cudaStream_t stream) {
    T* t = workspace;
    if (const char* err = launch_split<T>(sender_contract_kernel<T>, KernelKind::sender_contract, in, 1, stream,
                                          gptr<T>(t)))
        return err;
    const unsigned tile = SplitTraits::threads(in.features);
    return launch_split<T>(receiver_forward_kernel<T, LMAX>, KernelKind::receiver_forward, in,
                           unsigned((in.features + tile - 1) / tile), stream, gptr<const T>(t), gptr<T>(out));
}

template <class T, int LMAX>
const char* backward_lmax(const InteractionInputs<T>& in, const T* grad_out, const BackwardOutputs<T>& out,
                          T* workspace, cudaStream_t stream) {
    const index_t pf = in.n_pairs * in.features;
    T *t = workspace, *dt = workspace + pf, *d_factors = workspace + 2 * pf;
    if (const char* err = launch_split<T>(sender_contract_kernel<T>, KernelKind::sender_contract, in, 1, stream,
                                          gptr<T>(t)))
        return err;
    const ReceiverBackwardArgs<T> receiver{t, grad_out, dt, d_factors, out.lam1_part, out.lam2_part};
    if (const char* err = launch_split<T>(receiver_backward_kernel<T, LMAX>, KernelKind::receiver_backward, in, 1,
                                          stream, receiver))
        return err;
    const SenderBackwardArgs<T> sender{dt, d_factors, out.grad_Y, out.grad_coord, out.mu_part, out.sigma_part};
    return launch_split<T>(sender_backward_kernel<T, LMAX>, KernelKind::sender_backward, in, 1, stream, sender);
}

template <class T, int LMAX>
const char* double_backward_lmax(const InteractionInputs<T>& in, const Cotangents<T>& cot, const T* grad_out, T* dt,
                                 T* bar_t, T* bar_ds, T* grad_coord, T* mu_part, T* sigma_part, T* grad_grad_out,
                                 T* lam1_part, T* lam2_part, cudaStream_t stream) {
    auto kernel = interaction_double_backward_kernel<T, LMAX, kChunkBackward>;
    const Block block = launch_block<T>(KernelKind::double_backward, LMAX, in.nu, in.features);
    if (const char* err = check_launch<T>(kernel, KernelKind::double_backward, LMAX, in.features, block)) return err;
    HIPNNTS_LAUNCH(kernel, dim3(unsigned(in.n_atoms)), dim3(block.threads), block.shared_bytes, stream,
                   InteractionView<T>::from(in), CotangentView<T>::from(cot), grad_out, dt, bar_t, bar_ds, grad_coord,
                   mu_part, sigma_part,
                   grad_grad_out, lam1_part, lam2_part);
    return launch_status();
}

template <class T, int LMAX>
const char* double_backward_molecules_lmax(const InteractionInputs<T>& in, const Cotangents<T>& cot,
                                           const index_t* molecule_ptr, index_t n_molecules, const T* grad_out,
                                           T* grad_Y, T* grad_coord, T* mu_part, T* sigma_part, T* grad_grad_out,
                                           T* lam1_part, T* lam2_part, cudaStream_t stream) {
    auto kernel = interaction_double_backward_molecule_kernel<T, LMAX, kChunkBackward>;
    const Block block = launch_block<T>(KernelKind::double_backward_molecules, LMAX, in.nu, in.features);
    if (const char* err = check_launch<T>(kernel, KernelKind::double_backward_molecules, LMAX, in.features, block))
        return err;
    HIPNNTS_LAUNCH(kernel, dim3(unsigned(n_molecules)), dim3(block.threads), block.shared_bytes, stream,
                   InteractionView<T>::from(in), CotangentView<T>::from(cot), molecule_ptr, grad_out, grad_Y,
                   grad_coord, mu_part, sigma_part,
                   grad_grad_out, lam1_part, lam2_part);
    return launch_status();
}

}  // namespace

size_t interaction_workspace(bool backward, index_t n_pairs, int features, int lmax) {
    const size_t pf = size_t(n_pairs) * size_t(features);
    return backward ? 2 * pf + size_t(n_pairs) * n_components(lmax) : pf;
}

template <class T>
const char* interaction_forward(const InteractionInputs<T>& in, T* out, T* workspace, cudaStream_t stream) {
    if (in.n_atoms == 0 || in.features == 0) return nullptr;
    return with_lmax(in.lmax, [&](auto L) { return forward_lmax<T, decltype(L)::value>(in, out, workspace, stream); });
}

template <class T>
const char* interaction_backward(const InteractionInputs<T>& in, const T* grad_out, const BackwardOutputs<T>& out,
                                 T* workspace, cudaStream_t stream) {
    if (in.n_atoms == 0 || in.features == 0) return nullptr;
    return with_lmax(in.lmax, [&](auto L) {
        return backward_lmax<T, decltype(L)::value>(in, grad_out, out, workspace, stream);
    });
}

template <class T>
const char* interaction_double_backward(const InteractionInputs<T>& in, const Cotangents<T>& cot, const T* grad_out,
                                        T* dt, T* bar_t, T* bar_ds, T* grad_coord, T* mu_part, T* sigma_part,
                                        T* grad_grad_out, T* lam1_part, T* lam2_part, cudaStream_t stream) {
    if (in.n_atoms == 0) return nullptr;
    return with_lmax(in.lmax, [&](auto L) {
        return double_backward_lmax<T, decltype(L)::value>(in, cot, grad_out, dt, bar_t, bar_ds, grad_coord, mu_part,
                                                           sigma_part, grad_grad_out, lam1_part, lam2_part, stream);
    });
}

template <class T>
const char* interaction_double_backward_molecules(const InteractionInputs<T>& in, const Cotangents<T>& cot,
                                                  const index_t* molecule_ptr, index_t n_molecules, const T* grad_out,
                                                  T* grad_Y, T* grad_coord, T* mu_part, T* sigma_part,
                                                  T* grad_grad_out, T* lam1_part, T* lam2_part, cudaStream_t stream) {
    if (n_molecules == 0) return nullptr;
    return with_lmax(in.lmax, [&](auto L) {
        return double_backward_molecules_lmax<T, decltype(L)::value>(in, cot, molecule_ptr, n_molecules, grad_out,
                                                                     grad_Y, grad_coord, mu_part, sigma_part,
                                                                     grad_grad_out, lam1_part, lam2_part, stream);
    });
}

template <class T>
const char* sender_sum(const InteractionInputs<T>& in, Segments senders, const T* X, const T* B, const T* Z, T* out,
                       cudaStream_t stream) {
    if (in.n_atoms == 0 || in.nu == 0) return nullptr;
    const InteractionView<T> v = InteractionView<T>::from(in);
    auto kernel = sender_sum_kernel<T, kChunkSender, kBlockNu>;
    const Block block = launch_block<T>(KernelKind::sender_sum, in.lmax, in.nu, in.features);
    if (const char* err = check_launch<T>(kernel, KernelKind::sender_sum, in.lmax, in.features, block)) return err;
    const dim3 grid(unsigned(in.n_atoms), unsigned((in.nu + kBlockNu - 1) / kBlockNu));
    HIPNNTS_LAUNCH(kernel, grid, dim3(block.threads), block.shared_bytes, stream, in.coord, senders.order, senders.ptr,
                   in.mu, in.sigma, in.nu, in.features, v.k, v.rc, X, B, Z, out);
    return launch_status();
}

template <class T>
const char* envsum(const T* sens, const T* feat, const index_t* second, Segments receivers, index_t n_atoms, int nu,
                   int features, T* env, cudaStream_t stream) {
    if (n_atoms == 0 || nu == 0) return nullptr;
    auto kernel = envsum_kernel<T, kChunkSender, kBlockNu>;
    const Block block = launch_block<T>(KernelKind::envsum, 0, nu, features);
    if (const char* err = check_launch<T>(kernel, KernelKind::envsum, 0, features, block)) return err;
    const dim3 grid(unsigned(n_atoms), unsigned((nu + kBlockNu - 1) / kBlockNu));
    HIPNNTS_LAUNCH(kernel, grid, dim3(block.threads), block.shared_bytes, stream, sens, feat, second, receivers.order,
                   receivers.ptr, nu, features, env);
    return launch_status();
}

template <class T>
const char* sensesum(const T* env, const T* feat, const index_t* second, Segments receivers, index_t n_atoms, int nu,
                     int features, T* sens, cudaStream_t stream) {
    if (n_atoms == 0 || nu == 0) return nullptr;
    auto kernel = sensesum_kernel<T>;
    const Block block = launch_block<T>(KernelKind::sensesum, 0, nu, features);
    if (const char* err = check_launch<T>(kernel, KernelKind::sensesum, 0, features, block)) return err;
    HIPNNTS_LAUNCH(kernel, dim3(unsigned(n_atoms)), dim3(block.threads), block.shared_bytes, stream, env, feat, second,
                   receivers.order, receivers.ptr, nu, features, sens);
    return launch_status();
}

template <class T>
const char* featsum(const T* env, const T* sens, const index_t* first, Segments senders, index_t n_atoms, int nu,
                    int features, T* feat, cudaStream_t stream) {
    if (n_atoms == 0) return nullptr;
    auto kernel = featsum_kernel<T, kChunkSender>;
    const Block block = launch_block<T>(KernelKind::featsum, 0, nu, features);
    if (const char* err = check_launch<T>(kernel, KernelKind::featsum, 0, features, block)) return err;
    HIPNNTS_LAUNCH(kernel, dim3(unsigned(n_atoms)), dim3(block.threads), block.shared_bytes, stream, env, sens, first,
                   senders.order, senders.ptr, nu, features, feat);
    return launch_status();
}

template <class T>
const char* featsum_molecules(const T* env, const T* sens, const index_t* second, Segments receivers,
                              const index_t* molecule_ptr, index_t n_molecules, int nu, int features, T* feat,
                              cudaStream_t stream) {
    if (n_molecules == 0) return nullptr;
    auto kernel = featsum_molecule_kernel<T>;
    const Block block = launch_block<T>(KernelKind::featsum_molecules, 0, nu, features);
    if (const char* err = check_launch<T>(kernel, KernelKind::featsum_molecules, 0, features, block)) return err;
    HIPNNTS_LAUNCH(kernel, dim3(unsigned(n_molecules)), dim3(block.threads), block.shared_bytes, stream, env, sens,
                   second, receivers.order, receivers.ptr, molecule_ptr, nu, features, feat);
    return launch_status();
}

#define HIPNNTS_INSTANTIATE(T)                                                                                       \
    template const char* interaction_forward<T>(const InteractionInputs<T>&, T*, T*, cudaStream_t);                  \
    template const char* interaction_backward<T>(const InteractionInputs<T>&, const T*, const BackwardOutputs<T>&,   \
                                                 T*, cudaStream_t);                                                  \
    template const char* interaction_double_backward<T>(const InteractionInputs<T>&, const Cotangents<T>&, const T*, \
                                                        T*, T*, T*, T*, T*, T*, T*, T*, T*, cudaStream_t);           \
    template const char* interaction_double_backward_molecules<T>(const InteractionInputs<T>&, const Cotangents<T>&, \
                                                                  const index_t*, index_t, const T*, T*, T*, T*, T*, \
                                                                  T*, T*, T*, cudaStream_t);                         \
    template const char* sender_sum<T>(const InteractionInputs<T>&, Segments, const T*, const T*, const T*, T*,      \
                                       cudaStream_t);                                                                \
    template const char* envsum<T>(const T*, const T*, const index_t*, Segments, index_t, int, int, T*, cudaStream_t); \
    template const char* sensesum<T>(const T*, const T*, const index_t*, Segments, index_t, int, int, T*,            \
                                     cudaStream_t);                                                                  \
    template const char* featsum<T>(const T*, const T*, const index_t*, Segments, index_t, int, int, T*, cudaStream_t); \
    template const char* featsum_molecules<T>(const T*, const T*, const index_t*, Segments, const index_t*, index_t,  \
                                              int, int, T*, cudaStream_t);                                       \
    template Block launch_block<T>(KernelKind, int, int, int);

HIPNNTS_INSTANTIATE(float)
HIPNNTS_INSTANTIATE(double)

}  // namespace hipnnts
