// Host API of the CUDA kernels: plain pointers and sizes, no torch. Compiled by nvcc for the GPU
// and by a host C++ compiler with HIPNNTS_EMULATE for the emulator. Every function launches on
// `stream` and returns nullptr on success or a message saying what failed.
#pragma once

#include <cstddef>
#include <cstdint>

#ifdef HIPNNTS_EMULATE
using cudaStream_t = void*;
#else
#include <cuda_runtime.h>
#endif

namespace hipnnts {

using index_t = int64_t;

// Pairs grouped by atom: order (P,) pair ids, ptr (N + 1,) segment starts (see pair_index.py).
struct Segments {
    const index_t* order;
    const index_t* ptr;
};

// Inputs of one interaction call (device pointers; lam1 / lam2 are null when lmax is lower).
template <class T>
struct InteractionInputs {
    const T* Y;             // (N, nu, F)
    const T* coord;         // (P, 3)
    const index_t* second;  // (P,) sender of each pair
    Segments receivers;
    Segments senders;
    const T* mu;            // (nu,)
    const T* sigma;         // (nu,)
    const T* lam1;          // (F,) or null
    const T* lam2;          // (F,) or null
    index_t n_atoms, n_pairs;
    int nu, features, lmax;
    double cutoff, cusp_reg;
};

// Largest thread block (the CSR kernels run one thread per feature).
constexpr int kMaxThreads = 1024;

// The kernels the launchers start (split.cuh: the forward and backward of the CSR path).
enum class KernelKind : int {
    sender_contract,
    receiver_forward,
    receiver_backward,
    sender_backward,
    double_backward,
    double_backward_molecules,
    sender_sum,
    envsum,
    sensesum,
    featsum,
    featsum_molecules,
};
constexpr int kKernelKinds = 11;
const char* kernel_name(KernelKind kind);

// The thread block one launch of a kernel takes: threads (one per feature, and in the interaction
// kernels at least one per sensitivity) and dynamic shared memory. The one place the launchers and
// the launch-limit checks get a block's shape from.
struct Block {
    unsigned threads;
    size_t shared_bytes;
};
template <class T>
Block launch_block(KernelKind kind, int lmax, int nu, int features);

// What a compiled kernel may launch with on a device: threads per block as its registers allow,
// and dynamic shared memory (the device's opt-in limit less the kernel's static shared memory).
struct KernelLimits {
    int max_threads;
    int registers;
    size_t max_dynamic_shared;
};

// nullptr if `block` fits `limits`, else a message naming the kernel, the width and the limit.
// (Thread-local storage: valid until the next call on this thread.)
const char* check_block(KernelKind kind, bool is_double, int lmax, int features, Block block,
                        const KernelLimits& limits);

// Scratch of interaction_forward (backward = false) and interaction_backward, in elements of T,
// which the caller allocates: t (P, F), and for the backward dt (P, F) and d_factors (P, C).
size_t interaction_workspace(bool backward, index_t n_pairs, int features, int lmax);

// out (N, F); workspace as interaction_workspace(false, ...) says.
template <class T>
const char* interaction_forward(const InteractionInputs<T>& in, T* out, T* workspace, cudaStream_t stream);

// What the backward writes: grad_Y (N, nu, F), grad_coord (P, 3), per-atom partial gradients
// mu_part, sigma_part (N, nu; by sender) and lam1_part, lam2_part (N, F; by receiver, unused below
// their lmax), which the caller sums over atoms.
template <class T>
struct BackwardOutputs {
    T *grad_Y, *grad_coord, *mu_part, *sigma_part, *lam1_part, *lam2_part;
};

template <class T>
const char* interaction_backward(const InteractionInputs<T>& in, const T* grad_out, const BackwardOutputs<T>& out,
                                 T* workspace, cudaStream_t stream);

// Cotangents of the backward's outputs (device pointers). v_Y, v_lam1, v_lam2 may be null (zero);
// v_coord (P, 3), v_mu and v_sigma (nu,) are always given.
template <class T>
struct Cotangents {
    const T *v_Y, *v_coord, *v_mu, *v_sigma, *v_lam1, *v_lam2;
};

// Receiver part of the double backward: dt, bar_t (P, F) and bar_ds (P, nu) for sender_sum (grad_Y =
// sum s (x) bar_t + bar_ds (x) dt), grad_coord (P, 3), grad_grad_out (N, F), and per-atom partial
// gradients mu_part, sigma_part (N, nu), lam1_part, lam2_part (N, F).
template <class T>
const char* interaction_double_backward(const InteractionInputs<T>& in, const Cotangents<T>& cot, const T* grad_out,
                                        T* dt, T* bar_t, T* bar_ds, T* grad_coord, T* mu_part, T* sigma_part,
                                        T* grad_grad_out, T* lam1_part, T* lam2_part, cudaStream_t stream);

// Molecule path of the two derivative levels: one block per atom range of molecule_ptr (M + 1,; no
// pair crosses a range, see pair_index.molecule_ranges), grad_Y (N, nu, F) written directly, so
// no sender_sum and no dt / bar_t / bar_ds buffers. Other outputs as above.
template <class T>
const char* interaction_double_backward_molecules(const InteractionInputs<T>& in, const Cotangents<T>& cot,
                                                  const index_t* molecule_ptr, index_t n_molecules, const T* grad_out,
                                                  T* grad_Y, T* grad_coord, T* mu_part, T* sigma_part,
                                                  T* grad_grad_out, T* lam1_part, T* lam2_part, cudaStream_t stream);

// out[j] = sum over sender j's pairs p of s_p (x) X_p (+ B_p (x) Z_p when B is not null): (N, nu, F).
template <class T>
const char* sender_sum(const InteractionInputs<T>& in, Segments senders, const T* X, const T* B, const T* Z, T* out,
                       cudaStream_t stream);

template <class T>
const char* envsum(const T* sens, const T* feat, const index_t* second, Segments receivers, index_t n_atoms, int nu,
                   int features, T* env, cudaStream_t stream);

template <class T>
const char* sensesum(const T* env, const T* feat, const index_t* second, Segments receivers, index_t n_atoms, int nu,
                     int features, T* sens, cudaStream_t stream);

template <class T>
const char* featsum(const T* env, const T* sens, const index_t* first, Segments senders, index_t n_atoms, int nu,
                    int features, T* feat, cudaStream_t stream);

// Molecule path of featsum: walks the receiver segments of each atom range of molecule_ptr (M + 1,)
// and scatters to the senders in place (`second` is the sender of each pair).
template <class T>
const char* featsum_molecules(const T* env, const T* sens, const index_t* second, Segments receivers,
                              const index_t* molecule_ptr, index_t n_molecules, int nu, int features, T* feat,
                              cudaStream_t stream);

}  // namespace hipnnts
