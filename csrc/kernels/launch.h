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

// The molecule path (molecule.cuh): atom ranges no pair crosses and the largest range's size. With
// ptr null, or a range too large for one block's shared memory, or nu > 32, the split kernels run.
struct Molecules {
    const index_t* ptr = nullptr;            // (M + 1,) atom ranges
    const index_t* receiver_rank = nullptr;  // (P,) position of each pair in receivers.order
    index_t count = 0;                       // M
    int max_atoms = 0, max_pairs = 0;        // of the largest range
};

// Inputs of one interaction call (device pointers; lam1 / lam2 are null when lmax is lower).
template <class T>
struct InteractionInputs {
    const T* Y;             // (N, nu, F)
    const T* coord;         // (P, 3)
    Segments receivers;
    Segments senders;
    const T* mu;            // (nu,)
    const T* sigma;         // (nu,)
    const T* lam1;          // (F,) or null
    const T* lam2;          // (F,) or null
    index_t n_atoms, n_pairs;
    int nu, features, lmax;
    double cutoff, cusp_reg;
    Molecules molecules = {};
};

// Largest thread block (the envsum-family kernels run one thread per feature).
constexpr int kMaxThreads = 1024;

// The kernels the launchers start (split.cuh: the interaction's; envsum.cuh: the envsum family's).
enum class KernelKind : int {
    sender_contract,
    receiver_forward,
    receiver_backward,
    sender_backward,
    sender_contract_double,
    receiver_double_backward,
    sender_double_backward,
    envsum,
    sensesum,
    featsum,
    featsum_molecules,
    molecule_forward,
    molecule_backward,
    molecule_double_backward,
    tile_sum,
};
constexpr int kKernelKinds = 15;
const char* kernel_name(KernelKind kind);

// The thread block one launch of a kernel takes: threads (one per feature of a tile) and dynamic
// shared memory. The one place the launchers and the launch-limit checks get a block's shape from.
struct Block {
    unsigned threads;
    size_t shared_bytes;
};
// (The molecule kernels' shared memory depends on the largest molecule, max_atoms and max_pairs, and
// on the tile width.)
#ifdef HIPNNTS_EMULATE
// The dynamic shared memory a block may take in the emulator (an H100 / H200's 227 KiB by default).
extern size_t emulated_shared_limit;
#endif

template <class T>
Block launch_block(KernelKind kind, int lmax, int nu, int features, int max_atoms = 0, int max_pairs = 0,
                   int width = 32);

// What a compiled kernel may launch with on a device: threads per block as its registers allow,
// and dynamic shared memory (the device's opt-in limit less the kernel's static shared memory).
struct KernelLimits {
    int max_threads;
    int registers;
    size_t max_dynamic_shared;
};

// nullptr if `block` fits `limits`, else a message naming the kernel, the width and the limit.
// (Thread-local storage: valid until the next call on this thread.)
const char* check_block(KernelKind kind, bool is_double, int lmax, int nu, int features, Block block,
                        const KernelLimits& limits);

// The interaction's derivative levels.
enum class Level : int { forward, backward, double_backward };

// Scratch of one level's launcher, in elements of T, which the caller allocates: the split kernels'
// t (P, F), the backward's dt (P, F) and d_factors (P, C), the double backward's bar_dt, bar_t (P, F)
// and bar_factors (P, C) on top; or the molecule kernels' per-tile parts, if larger.
size_t interaction_workspace(Level level, index_t n_atoms, index_t n_pairs, int nu, int features, int lmax);

// out (N, F).
template <class T>
const char* interaction_forward(const InteractionInputs<T>& in, T* out, T* workspace, cudaStream_t stream);

// What the derivative levels write: grad_Y (N, nu, F), grad_coord (P, 3), per-atom partial
// gradients mu_part, sigma_part (N, nu; by sender) and lam1_part, lam2_part (N, F; by receiver,
// unused below their lmax), which the caller sums over atoms; the double backward also
// grad_grad_out (N, F), the gradient with respect to the backward's grad_out.
template <class T>
struct Gradients {
    T *grad_Y, *grad_coord, *mu_part, *sigma_part, *lam1_part, *lam2_part, *grad_grad_out;

    static constexpr int count = 7;  // the fields, in order: the list the torch ops and the emulator pass
    // From `n` pointers in field order (n = count - 1 in the backward, which has no grad_grad_out).
    static Gradients from(T* const* p, int n) {
        T* q[count] = {};
        for (int k = 0; k < n && k < count; ++k) q[k] = p[k];
        return {q[0], q[1], q[2], q[3], q[4], q[5], q[6]};
    }
};

template <class T>
const char* interaction_backward(const InteractionInputs<T>& in, const T* grad_out, const Gradients<T>& out,
                                 T* workspace, cudaStream_t stream);

// Cotangents of the backward's outputs (device pointers). v_Y, v_lam1, v_lam2 may be null (zero);
// v_coord (P, 3), v_mu and v_sigma (nu,) are always given.
template <class T>
struct Cotangents {
    const T *v_Y, *v_coord, *v_mu, *v_sigma, *v_lam1, *v_lam2;
};

// The gradients of <cotangents, backward outputs> with respect to grad_out and the inputs.
template <class T>
const char* interaction_double_backward(const InteractionInputs<T>& in, const Cotangents<T>& cot, const T* grad_out,
                                        const Gradients<T>& out, T* workspace, cudaStream_t stream);

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
