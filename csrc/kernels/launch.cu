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
#include "molecule.cuh"
#include "split.cuh"

namespace hipnnts {

#ifdef HIPNNTS_EMULATE
size_t emulated_shared_limit = size_t(227) * 1024;
#endif

namespace {

constexpr int kChunkSender = 16;    // pairs staged per shared-memory round, envsum family
constexpr int kBlockNu = 16;        // sensitivities per block in the envsum kernel
constexpr int kSensesumThreads = 128;
constexpr int kTileSumThreads = 256;

unsigned threads_for(int features) {
    const int n = std::max(features, 1);
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
    // No register limit; the shared memory of an H100 / H200 block (227 KiB; tests may set another,
    // emulated_shared_limit), so that the emulator takes the molecule path (and the traffic model
    // counts it) where those GPUs would.
    limits = {kMaxThreads, 0, emulated_shared_limit};
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
const char* check_launch(Kernel kernel, KernelKind kind, int lmax, int nu, int features, Block block) {
#ifdef HIPNNTS_EMULATE  // the name the traffic model gives the launch that follows
    hipnnts_emu::traffic::recorder.kernel = std::string(kernel_name(kind)) +
                                            (std::is_same<T, double>::value ? " f64" : " f32") +
                                            " lmax " + std::to_string(lmax);
    hipnnts_emu::traffic::recorder.row_bytes = sizeof(T);
#endif
    KernelLimits limits;
    if (const char* err = kernel_limits(kernel, limits)) return err;
    return check_block(kind, std::is_same<T, double>::value, lmax, nu, features, block, limits);
}

}  // namespace

const char* kernel_name(KernelKind kind) {
    static const char* const names[kKernelKinds] = {
        "sender_contract", "receiver_forward", "receiver_backward", "sender_backward", "sender_contract_double",
        "receiver_double_backward", "sender_double_backward", "envsum", "sensesum", "featsum", "featsum_molecules",
        "molecule_forward", "molecule_backward", "molecule_double_backward", "tile_sum"};
    const int k = static_cast<int>(kind);
    return k >= 0 && k < kKernelKinds ? names[k] : "unknown kernel";
}

template <class T>
Block launch_block(KernelKind kind, int lmax, int nu, int features, int max_atoms, int max_pairs, int width) {
    const int C = n_components(lmax);
    SharedCarver carver{nullptr};
    const unsigned tile = SplitTraits::threads(features);
    switch (kind) {
        case KernelKind::sender_contract:
        case KernelKind::sender_contract_double:
        case KernelKind::sender_backward:
        case KernelKind::sender_double_backward:
            SenderShared<T>::carve(carver, nu, tile,
                                   kind == KernelKind::sender_backward || kind == KernelKind::sender_double_backward,
                                   kind == KernelKind::sender_contract_double ||
                                       kind == KernelKind::sender_double_backward);
            return {tile, carver.offset};
        case KernelKind::receiver_forward:
        case KernelKind::receiver_backward:
        case KernelKind::receiver_double_backward:
            ReceiverShared<T>::carve(carver, C, tile, kind != KernelKind::receiver_forward,
                                     kind == KernelKind::receiver_double_backward);
            return {tile, carver.offset};
        case KernelKind::featsum:
            carver.take<index_t>(kChunkSender);
            carver.take<T>(size_t(kChunkSender) * nu);
            return {threads_for(features), carver.offset};
        case KernelKind::sensesum:
            return {unsigned(kSensesumThreads), 0};
        case KernelKind::molecule_forward:
        case KernelKind::molecule_backward:
        case KernelKind::molecule_double_backward:
            MoleculeShared<T>::carve(carver, max_atoms, max_pairs, nu, width, kind != KernelKind::molecule_forward,
                                     kind == KernelKind::molecule_double_backward);
            return {unsigned(MoleculeTraits::threads), carver.offset};
        case KernelKind::tile_sum:
            return {unsigned(kTileSumThreads), 0};
        case KernelKind::envsum:
        case KernelKind::featsum_molecules:
            break;
    }
    return {threads_for(features), 0};
}

const char* check_block(KernelKind kind, bool is_double, int lmax, int nu, int features, Block block,
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
                      "%s (%s, lmax %d) needs %.1f KiB of shared memory per block at nu = %d and %d features, and "
                      "this GPU gives it at most %.1f KiB: too wide for the cuda backend (docs/kernels.md lists "
                      "its widths)",
                      what, dtype, lmax, block.shared_bytes / 1024.0, nu, features,
                      limits.max_dynamic_shared / 1024.0);
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
    if (const char* err = check_launch<T>(kernel, kind, in.lmax, in.nu, in.features, block)) return err;
    HIPNNTS_LAUNCH(kernel, dim3(unsigned(in.n_atoms), tiles), dim3(block.threads), block.shared_bytes, stream,
                   InteractionView<T>::from(in), args...);
    return launch_status();
}

// The tile width at which the molecule kernel `kernel` (of `kind`) takes this call: molecules given,
// nu <= 32, and the largest molecule's block fits this device at that width (the widest that
// does); 0 if none, and the split kernels run.
template <class T, class Kernel>
int molecule_width(Kernel kernel, KernelKind kind, const InteractionInputs<T>& in) {
    const Molecules& mol = in.molecules;
    if (mol.ptr == nullptr || in.nu > MoleculeTraits::max_nu) return 0;
    KernelLimits limits;
    if (kernel_limits(kernel, limits) != nullptr) return 0;  // the split kernels report it
    for (const int width : MoleculeTraits::widths) {
        const Block block = launch_block<T>(kind, in.lmax, in.nu, in.features, mol.max_atoms, mol.max_pairs, width);
        if (int(block.threads) <= limits.max_threads && block.shared_bytes <= limits.max_dynamic_shared) return width;
    }
    return 0;
}

// Launches molecule kernel `kernel` with one block per (molecule, tile of `width` features).
template <class T, class Kernel, class... Args>
const char* launch_molecules(Kernel kernel, KernelKind kind, const InteractionInputs<T>& in, int width,
                             cudaStream_t stream, Args... args) {
    const Molecules& mol = in.molecules;
    const Block block = launch_block<T>(kind, in.lmax, in.nu, in.features, mol.max_atoms, mol.max_pairs, width);
    if (const char* err = check_launch<T>(kernel, kind, in.lmax, in.nu, in.features, block)) return err;
    HIPNNTS_LAUNCH(kernel, dim3(unsigned(mol.count), MoleculeTraits::tiles(in.features, width)), dim3(block.threads),
                   block.shared_bytes, stream, InteractionView<T>::from(in),
                   MoleculeView{mol.ptr, mol.receiver_rank, width}, args...);
    return launch_status();
}

// out[x] = sum over the tiles of parts[tile * n + x].
template <class T>
const char* tile_sum(const T* parts, index_t n, int tiles, T* out, cudaStream_t stream) {
    if (n == 0) return nullptr;
    auto kernel = tile_sum_kernel<T>;
    const Block block = launch_block<T>(KernelKind::tile_sum, 0, 0, 0);
    if (const char* err = check_launch<T>(kernel, KernelKind::tile_sum, 0, 0, 0, block)) return err;
    HIPNNTS_LAUNCH(kernel, dim3(unsigned((n + block.threads - 1) / block.threads)), dim3(block.threads), 0, stream,
                   gptr<const T>(parts), n, tiles, gptr<T>(out));
    return launch_status();
}

// The backward (DOUBLE: the double backward) on the molecule path, if it takes this call (else
// `taken` is false and nothing runs): the molecule kernel, then the tile parts summed.
template <class T, int LMAX, bool DOUBLE>
const char* molecule_derivative(const InteractionInputs<T>& in, const Cotangents<T>& cotangents, const T* grad_out,
                                const Gradients<T>& out, T* workspace, cudaStream_t stream, bool& taken) {
    const auto kernel = molecule_backward_kernel<T, LMAX, DOUBLE>;
    const KernelKind kind = DOUBLE ? KernelKind::molecule_double_backward : KernelKind::molecule_backward;
    const int width = molecule_width<T>(kernel, kind, in);
    taken = width != 0;
    if (!taken) return nullptr;
    const int tiles = int(MoleculeTraits::tiles(in.features, width));
    const index_t coord_n = 3 * in.n_pairs, nu_n = in.n_atoms * in.nu;
    T* coord_parts = workspace;  // with one tile, mu and sigma's parts are their partials
    T* mu_parts = tiles == 1 ? out.mu_part : coord_parts + 2 * tiles * coord_n;
    T* sigma_parts = tiles == 1 ? out.sigma_part : mu_parts + tiles * nu_n;
    const MoleculeBackwardArgs<T> args{grad_out, out, coord_parts, mu_parts, sigma_parts};
    const CotangentView<T> cot = DOUBLE ? CotangentView<T>::from(cotangents) : CotangentView<T>{};
    if (const char* err = launch_molecules<T>(kernel, kind, in, width, stream, cot, args)) return err;
    if (const char* err = tile_sum(coord_parts, coord_n, 2 * tiles, out.grad_coord, stream)) return err;
    if (tiles == 1) return nullptr;
    if (const char* err = tile_sum(mu_parts, nu_n, tiles, out.mu_part, stream)) return err;
    return tile_sum(sigma_parts, nu_n, tiles, out.sigma_part, stream);
}

// The workspace of one level, carved in the order interaction_workspace sizes it.
template <class T>
struct Workspace {
    T *t, *dt, *d_factors, *bar_dt, *bar_t, *bar_factors;

    static Workspace carve(T* base, Level level, index_t n_pairs, int features, int lmax) {
        const index_t pf = n_pairs * features, pc = n_pairs * n_components(lmax);
        Workspace w{};
        w.t = base;
        if (level == Level::forward) return w;
        w.dt = w.t + pf;
        w.d_factors = w.dt + pf;
        if (level == Level::backward) return w;
        w.bar_dt = w.d_factors + pc;
        w.bar_t = w.bar_dt + pf;
        w.bar_factors = w.bar_t + pf;
        return w;
    }
};

template <class T, int LMAX>
const char* forward_lmax(const InteractionInputs<T>& in, T* out, T* workspace, cudaStream_t stream) {
    const auto molecule_kernel = molecule_forward_kernel<T, LMAX>;
    if (const int width = molecule_width<T>(molecule_kernel, KernelKind::molecule_forward, in))
        return launch_molecules<T>(molecule_kernel, KernelKind::molecule_forward, in, width, stream, gptr<T>(out));
    const Workspace<T> w = Workspace<T>::carve(workspace, Level::forward, in.n_pairs, in.features, LMAX);
    if (const char* err = launch_split<T>(sender_contract_kernel<T, false>, KernelKind::sender_contract, in, 1, stream,
                                          CotangentView<T>{}, ContractArgs<T>{w.t, nullptr}))
        return err;
    const unsigned tile = SplitTraits::threads(in.features);
    return launch_split<T>(receiver_forward_kernel<T, LMAX>, KernelKind::receiver_forward, in,
                           unsigned((in.features + tile - 1) / tile), stream, gptr<const T>(w.t), gptr<T>(out));
}

// The backward (DOUBLE = false: cot is unused) or the double backward: t (and bar_dt) by sender,
// the receiver kernel, then the sender kernel.
template <class T, int LMAX, bool DOUBLE>
const char* derivative_lmax(const InteractionInputs<T>& in, const Cotangents<T>& cotangents, const T* grad_out,
                            const Gradients<T>& out, T* workspace, cudaStream_t stream) {
    const Level level = DOUBLE ? Level::double_backward : Level::backward;
    const Workspace<T> w = Workspace<T>::carve(workspace, level, in.n_pairs, in.features, LMAX);
    const CotangentView<T> cot = DOUBLE ? CotangentView<T>::from(cotangents) : CotangentView<T>{};
    if (const char* err = launch_split<T>(sender_contract_kernel<T, DOUBLE>,
                                          DOUBLE ? KernelKind::sender_contract_double : KernelKind::sender_contract,
                                          in, 1, stream, cot, ContractArgs<T>{w.t, w.bar_dt}))
        return err;
    const ReceiverArgs<T> receiver{w.t, w.bar_dt, grad_out, w.dt, w.d_factors, w.bar_t, w.bar_factors, out};
    if (const char* err = launch_split<T>(receiver_kernel<T, LMAX, DOUBLE>,
                                          DOUBLE ? KernelKind::receiver_double_backward : KernelKind::receiver_backward,
                                          in, 1, stream, cot, receiver))
        return err;
    const SenderArgs<T> sender{w.dt, w.d_factors, w.bar_t, w.bar_factors, out};
    return launch_split<T>(sender_kernel<T, LMAX, DOUBLE>,
                           DOUBLE ? KernelKind::sender_double_backward : KernelKind::sender_backward, in, 1, stream,
                           cot, sender);
}

}  // namespace

size_t interaction_workspace(Level level, index_t n_atoms, index_t n_pairs, int nu, int features, int lmax) {
    const size_t pf = size_t(n_pairs) * size_t(features), pc = size_t(n_pairs) * n_components(lmax);
    const size_t parts =  // at the narrowest tile width, the most tiles
        MoleculeTraits::tiles(features, MoleculeTraits::widths[1]) * (6 * size_t(n_pairs) + 2 * size_t(n_atoms) * nu);
    switch (level) {
        case Level::forward: return pf;
        case Level::backward: return std::max(2 * pf + pc, parts);
        case Level::double_backward: return std::max(4 * pf + 2 * pc, parts);
    }
    return 0;
}

template <class T>
const char* interaction_forward(const InteractionInputs<T>& in, T* out, T* workspace, cudaStream_t stream) {
    if (in.n_atoms == 0 || in.features == 0) return nullptr;
    return with_lmax(in.lmax, [&](auto L) { return forward_lmax<T, decltype(L)::value>(in, out, workspace, stream); });
}

template <class T>
const char* interaction_backward(const InteractionInputs<T>& in, const T* grad_out, const Gradients<T>& out,
                                 T* workspace, cudaStream_t stream) {
    if (in.n_atoms == 0 || in.features == 0) return nullptr;
    return with_lmax(in.lmax, [&](auto L) {
        constexpr int LMAX = decltype(L)::value;
        bool taken;
        const char* err = molecule_derivative<T, LMAX, false>(in, Cotangents<T>{}, grad_out, out, workspace, stream,
                                                             taken);
        return taken ? err : derivative_lmax<T, LMAX, false>(in, Cotangents<T>{}, grad_out, out, workspace, stream);
    });
}

template <class T>
const char* interaction_double_backward(const InteractionInputs<T>& in, const Cotangents<T>& cot, const T* grad_out,
                                        const Gradients<T>& out, T* workspace, cudaStream_t stream) {
    if (in.n_atoms == 0 || in.features == 0) return nullptr;
    return with_lmax(in.lmax, [&](auto L) {
        constexpr int LMAX = decltype(L)::value;
        bool taken;
        const char* err = molecule_derivative<T, LMAX, true>(in, cot, grad_out, out, workspace, stream, taken);
        return taken ? err : derivative_lmax<T, LMAX, true>(in, cot, grad_out, out, workspace, stream);
    });
}

template <class T>
const char* envsum(const T* sens, const T* feat, const index_t* second, Segments receivers, index_t n_atoms, int nu,
                   int features, T* env, cudaStream_t stream) {
    if (n_atoms == 0 || nu == 0) return nullptr;
    auto kernel = envsum_kernel<T, kChunkSender, kBlockNu>;
    const Block block = launch_block<T>(KernelKind::envsum, 0, nu, features);
    if (const char* err = check_launch<T>(kernel, KernelKind::envsum, 0, nu, features, block)) return err;
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
    if (const char* err = check_launch<T>(kernel, KernelKind::sensesum, 0, nu, features, block)) return err;
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
    if (const char* err = check_launch<T>(kernel, KernelKind::featsum, 0, nu, features, block)) return err;
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
    if (const char* err = check_launch<T>(kernel, KernelKind::featsum_molecules, 0, nu, features, block)) return err;
    HIPNNTS_LAUNCH(kernel, dim3(unsigned(n_molecules)), dim3(block.threads), block.shared_bytes, stream, env, sens,
                   second, receivers.order, receivers.ptr, molecule_ptr, nu, features, feat);
    return launch_status();
}

#define HIPNNTS_INSTANTIATE(T)                                                                                       \
    template const char* interaction_forward<T>(const InteractionInputs<T>&, T*, T*, cudaStream_t);                  \
    template const char* interaction_backward<T>(const InteractionInputs<T>&, const T*, const Gradients<T>&, T*,     \
                                                 cudaStream_t);                                                      \
    template const char* interaction_double_backward<T>(const InteractionInputs<T>&, const Cotangents<T>&, const T*, \
                                                        const Gradients<T>&, T*, cudaStream_t);                      \
    template const char* envsum<T>(const T*, const T*, const index_t*, Segments, index_t, int, int, T*, cudaStream_t); \
    template const char* sensesum<T>(const T*, const T*, const index_t*, Segments, index_t, int, int, T*,            \
                                     cudaStream_t);                                                                  \
    template const char* featsum<T>(const T*, const T*, const index_t*, Segments, index_t, int, int, T*, cudaStream_t); \
    template const char* featsum_molecules<T>(const T*, const T*, const index_t*, Segments, const index_t*, index_t,  \
                                              int, int, T*, cudaStream_t);                                       \
    template Block launch_block<T>(KernelKind, int, int, int, int, int, int);

HIPNNTS_INSTANTIATE(float)
HIPNNTS_INSTANTIATE(double)

}  // namespace hipnnts
