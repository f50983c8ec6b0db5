// Launchers of the CUDA kernels (see launch.h), instantiated for float and double.
#include <algorithm>
#include <type_traits>

#include "envsum.cuh"

namespace hipnnts {
namespace {

constexpr int kChunkForward = 16;   // pairs staged per shared-memory round, forward
constexpr int kChunkBackward = 8;   // backward (stages t and dt for every feature too)
constexpr int kChunkSender = 16;
constexpr int kBlockNu = 16;        // sensitivities per block in the sender and envsum kernels

int threads_for(int features, int nu = 0) {
    const int n = std::max(std::max(features, nu), 1);
    return (n + 31) / 32 * 32;
}

const char* check_sizes(int features, int nu) {
    if (features > kMaxFeatures || nu > kMaxFeatures)
        return "the cuda backend takes at most 1024 features and 1024 sensitivities";
    return nullptr;
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

// Kernels that need more than the default 48 KiB of dynamic shared memory must ask for it.
template <class Kernel>
const char* allow_shared(Kernel kernel, size_t bytes) {
#ifndef HIPNNTS_EMULATE
    if (bytes > 48 * 1024) {
        const cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes));
        if (err != cudaSuccess) return cudaGetErrorString(err);
    }
#else
    (void)kernel;
    (void)bytes;
#endif
    return nullptr;
}

template <class T>
size_t receiver_shared_bytes(int chunk, const InteractionInputs<T>& in, bool backward) {
    SharedCarver carver{nullptr};
    ReceiverShared<T>::carve(carver, chunk, in.nu, n_components(in.lmax), in.features, backward);
    return carver.offset;
}

template <class T, int LMAX>
const char* forward_lmax(const InteractionInputs<T>& in, T* out, cudaStream_t stream) {
    auto kernel = interaction_forward_kernel<T, LMAX, kChunkForward>;
    const size_t bytes = receiver_shared_bytes(kChunkForward, in, false);
    if (const char* err = allow_shared(kernel, bytes)) return err;
    HIPNNTS_LAUNCH(kernel, dim3(unsigned(in.n_atoms)), dim3(threads_for(in.features, in.nu)), bytes, stream,
                   InteractionView<T>::from(in), out);
    return launch_status();
}

template <class T, int LMAX>
const char* backward_lmax(const InteractionInputs<T>& in, const T* grad_out, T* dt, T* grad_coord, T* mu_part,
                          T* sigma_part, T* lam1_part, T* lam2_part, cudaStream_t stream) {
    auto kernel = interaction_backward_kernel<T, LMAX, kChunkBackward>;
    const size_t bytes = receiver_shared_bytes(kChunkBackward, in, true);
    if (const char* err = allow_shared(kernel, bytes)) return err;
    HIPNNTS_LAUNCH(kernel, dim3(unsigned(in.n_atoms)), dim3(threads_for(in.features, in.nu)), bytes, stream,
                   InteractionView<T>::from(in), grad_out, dt, grad_coord, mu_part, sigma_part, lam1_part, lam2_part);
    return launch_status();
}

template <class T, int LMAX>
const char* double_backward_lmax(const InteractionInputs<T>& in, const Cotangents<T>& cot, const T* grad_out, T* dt,
                                 T* bar_t, T* bar_ds, T* grad_coord, T* mu_part, T* sigma_part, T* grad_grad_out,
                                 T* lam1_part, T* lam2_part, cudaStream_t stream) {
    auto kernel = interaction_double_backward_kernel<T, LMAX, kChunkBackward>;
    SharedCarver carver{nullptr};
    DoubleShared<T>::carve(carver, kChunkBackward, in.nu, n_components(LMAX), in.features);
    if (const char* err = allow_shared(kernel, carver.offset)) return err;
    HIPNNTS_LAUNCH(kernel, dim3(unsigned(in.n_atoms)), dim3(threads_for(in.features, in.nu)), carver.offset, stream,
                   InteractionView<T>::from(in), cot, grad_out, dt, bar_t, bar_ds, grad_coord, mu_part, sigma_part,
                   grad_grad_out, lam1_part, lam2_part);
    return launch_status();
}

template <class T, int LMAX>
const char* backward_molecules_lmax(const InteractionInputs<T>& in, const index_t* molecule_ptr, index_t n_molecules,
                                    const T* grad_out, T* grad_Y, T* grad_coord, T* mu_part, T* sigma_part,
                                    T* lam1_part, T* lam2_part, cudaStream_t stream) {
    auto kernel = interaction_backward_molecule_kernel<T, LMAX, kChunkBackward>;
    const size_t bytes = receiver_shared_bytes(kChunkBackward, in, true);
    if (const char* err = allow_shared(kernel, bytes)) return err;
    HIPNNTS_LAUNCH(kernel, dim3(unsigned(n_molecules)), dim3(threads_for(in.features, in.nu)), bytes, stream,
                   InteractionView<T>::from(in), molecule_ptr, grad_out, grad_Y, grad_coord, mu_part, sigma_part,
                   lam1_part, lam2_part);
    return launch_status();
}

template <class T, int LMAX>
const char* double_backward_molecules_lmax(const InteractionInputs<T>& in, const Cotangents<T>& cot,
                                           const index_t* molecule_ptr, index_t n_molecules, const T* grad_out,
                                           T* grad_Y, T* grad_coord, T* mu_part, T* sigma_part, T* grad_grad_out,
                                           T* lam1_part, T* lam2_part, cudaStream_t stream) {
    auto kernel = interaction_double_backward_molecule_kernel<T, LMAX, kChunkBackward>;
    SharedCarver carver{nullptr};
    DoubleShared<T>::carve(carver, kChunkBackward, in.nu, n_components(LMAX), in.features);
    if (const char* err = allow_shared(kernel, carver.offset)) return err;
    HIPNNTS_LAUNCH(kernel, dim3(unsigned(n_molecules)), dim3(threads_for(in.features, in.nu)), carver.offset, stream,
                   InteractionView<T>::from(in), cot, molecule_ptr, grad_out, grad_Y, grad_coord, mu_part, sigma_part,
                   grad_grad_out, lam1_part, lam2_part);
    return launch_status();
}

}  // namespace

template <class T>
const char* interaction_forward(const InteractionInputs<T>& in, T* out, cudaStream_t stream) {
    if (const char* err = check_sizes(in.features, in.nu)) return err;
    if (in.n_atoms == 0) return nullptr;
    return with_lmax(in.lmax, [&](auto L) { return forward_lmax<T, decltype(L)::value>(in, out, stream); });
}

template <class T>
const char* interaction_backward(const InteractionInputs<T>& in, const T* grad_out, T* dt, T* grad_coord, T* mu_part,
                                 T* sigma_part, T* lam1_part, T* lam2_part, cudaStream_t stream) {
    if (const char* err = check_sizes(in.features, in.nu)) return err;
    if (in.n_atoms == 0) return nullptr;
    return with_lmax(in.lmax, [&](auto L) {
        return backward_lmax<T, decltype(L)::value>(in, grad_out, dt, grad_coord, mu_part, sigma_part, lam1_part,
                                                    lam2_part, stream);
    });
}

template <class T>
const char* interaction_double_backward(const InteractionInputs<T>& in, const Cotangents<T>& cot, const T* grad_out,
                                        T* dt, T* bar_t, T* bar_ds, T* grad_coord, T* mu_part, T* sigma_part,
                                        T* grad_grad_out, T* lam1_part, T* lam2_part, cudaStream_t stream) {
    if (const char* err = check_sizes(in.features, in.nu)) return err;
    if (in.n_atoms == 0) return nullptr;
    return with_lmax(in.lmax, [&](auto L) {
        return double_backward_lmax<T, decltype(L)::value>(in, cot, grad_out, dt, bar_t, bar_ds, grad_coord, mu_part,
                                                           sigma_part, grad_grad_out, lam1_part, lam2_part, stream);
    });
}

template <class T>
const char* interaction_backward_molecules(const InteractionInputs<T>& in, const index_t* molecule_ptr,
                                           index_t n_molecules, const T* grad_out, T* grad_Y, T* grad_coord,
                                           T* mu_part, T* sigma_part, T* lam1_part, T* lam2_part,
                                           cudaStream_t stream) {
    if (const char* err = check_sizes(in.features, in.nu)) return err;
    if (n_molecules == 0) return nullptr;
    return with_lmax(in.lmax, [&](auto L) {
        return backward_molecules_lmax<T, decltype(L)::value>(in, molecule_ptr, n_molecules, grad_out, grad_Y,
                                                              grad_coord, mu_part, sigma_part, lam1_part, lam2_part,
                                                              stream);
    });
}

template <class T>
const char* interaction_double_backward_molecules(const InteractionInputs<T>& in, const Cotangents<T>& cot,
                                                  const index_t* molecule_ptr, index_t n_molecules, const T* grad_out,
                                                  T* grad_Y, T* grad_coord, T* mu_part, T* sigma_part,
                                                  T* grad_grad_out, T* lam1_part, T* lam2_part, cudaStream_t stream) {
    if (const char* err = check_sizes(in.features, in.nu)) return err;
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
    if (const char* err = check_sizes(in.features, in.nu)) return err;
    if (in.n_atoms == 0 || in.nu == 0) return nullptr;
    const InteractionView<T> v = InteractionView<T>::from(in);
    auto kernel = sender_sum_kernel<T, kChunkSender, kBlockNu>;
    const dim3 grid(unsigned(in.n_atoms), unsigned((in.nu + kBlockNu - 1) / kBlockNu));
    HIPNNTS_LAUNCH(kernel, grid, dim3(threads_for(in.features)), 0, stream, in.coord, senders.order, senders.ptr, in.mu,
                   in.sigma, in.nu, in.features, v.k, v.rc, X, B, Z, out);
    return launch_status();
}

template <class T>
const char* envsum(const T* sens, const T* feat, const index_t* second, Segments receivers, index_t n_atoms, int nu,
                   int features, T* env, cudaStream_t stream) {
    if (const char* err = check_sizes(features, 0)) return err;
    if (n_atoms == 0 || nu == 0) return nullptr;
    auto kernel = envsum_kernel<T, kChunkSender, kBlockNu>;
    const dim3 grid(unsigned(n_atoms), unsigned((nu + kBlockNu - 1) / kBlockNu));
    HIPNNTS_LAUNCH(kernel, grid, dim3(threads_for(features)), 0, stream, sens, feat, second, receivers.order,
                   receivers.ptr, nu, features, env);
    return launch_status();
}

template <class T>
const char* sensesum(const T* env, const T* feat, const index_t* second, Segments receivers, index_t n_atoms, int nu,
                     int features, T* sens, cudaStream_t stream) {
    if (n_atoms == 0 || nu == 0) return nullptr;
    auto kernel = sensesum_kernel<T>;
    HIPNNTS_LAUNCH(kernel, dim3(unsigned(n_atoms)), dim3(128), 0, stream, env, feat, second, receivers.order,
                   receivers.ptr, nu, features, sens);
    return launch_status();
}

template <class T>
const char* featsum(const T* env, const T* sens, const index_t* first, Segments senders, index_t n_atoms, int nu,
                    int features, T* feat, cudaStream_t stream) {
    if (const char* err = check_sizes(features, 0)) return err;
    if (n_atoms == 0) return nullptr;
    SharedCarver carver{nullptr};
    carver.take<index_t>(kChunkSender);
    carver.take<T>(size_t(kChunkSender) * nu);
    auto kernel = featsum_kernel<T, kChunkSender>;
    if (const char* err = allow_shared(kernel, carver.offset)) return err;
    HIPNNTS_LAUNCH(kernel, dim3(unsigned(n_atoms)), dim3(threads_for(features)), carver.offset, stream, env, sens, first,
                   senders.order, senders.ptr, nu, features, feat);
    return launch_status();
}

template <class T>
const char* featsum_molecules(const T* env, const T* sens, const index_t* second, Segments receivers,
                              const index_t* molecule_ptr, index_t n_molecules, int nu, int features, T* feat,
                              cudaStream_t stream) {
    if (const char* err = check_sizes(features, 0)) return err;
    if (n_molecules == 0) return nullptr;
    auto kernel = featsum_molecule_kernel<T>;
    HIPNNTS_LAUNCH(kernel, dim3(unsigned(n_molecules)), dim3(threads_for(features)), 0, stream, env, sens, second,
                   receivers.order, receivers.ptr, molecule_ptr, nu, features, feat);
    return launch_status();
}

#define HIPNNTS_INSTANTIATE(T)                                                                                       \
    template const char* interaction_forward<T>(const InteractionInputs<T>&, T*, cudaStream_t);                      \
    template const char* interaction_backward<T>(const InteractionInputs<T>&, const T*, T*, T*, T*, T*, T*, T*,      \
                                                 cudaStream_t);                                                      \
    template const char* interaction_double_backward<T>(const InteractionInputs<T>&, const Cotangents<T>&, const T*, \
                                                        T*, T*, T*, T*, T*, T*, T*, T*, T*, cudaStream_t);           \
    template const char* interaction_backward_molecules<T>(const InteractionInputs<T>&, const index_t*, index_t,      \
                                                           const T*, T*, T*, T*, T*, T*, T*, cudaStream_t);          \
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
                                              int, int, T*, cudaStream_t);

HIPNNTS_INSTANTIATE(float)
HIPNNTS_INSTANTIATE(double)

}  // namespace hipnnts
