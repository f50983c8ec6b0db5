// The CPU kernels' C ABI: argument packs shared by the dispatcher (capi.cpp), the per-instruction-set
// builds of the kernels (kernels_*.cpp) and the Python glue (hipnnts_kernels/cpu_backend.py, which
// mirrors these structs with ctypes). Plain C types only: this header is compiled for several
// instruction sets and must not instantiate C++ library templates (see kernels.h).
#pragma once

#include <stdint.h>

extern "C" {

typedef int64_t hipnnts_index;

// The interaction's inputs (floating arrays are float64 when is_double, else float32; contiguous).
struct hipnnts_cpu_inputs {
    const void* Y;                       // (N, nu, F)
    const void* coord;                   // (P, 3) pair vectors
    const hipnnts_index* receiver_order;  // (P,) pair ids grouped by receiver (pair_first)
    const hipnnts_index* receiver_ptr;    // (N + 1,) segment starts in receiver_order
    const hipnnts_index* sender_order;    // (P,) pair ids grouped by sender (pair_second)
    const hipnnts_index* sender_ptr;      // (N + 1,)
    const void* mu;                      // (nu,)
    const void* sigma;                   // (nu,)
    const void* lam1;                    // (F,) or null (lmax < 1)
    const void* lam2;                    // (F,) or null (lmax < 2)
    hipnnts_index n_atoms, n_pairs;
    int32_t nu, features, lmax, is_double;
    double cutoff, cusp_reg;
};

// The double backward's cotangents of the backward's outputs; v_Y, v_lam1, v_lam2 may be null (zero).
struct hipnnts_cpu_cotangents {
    const void *v_Y, *v_coord, *v_mu, *v_sigma, *v_lam1, *v_lam2;
};

// Outputs of the derivative levels, every one written in full. The parameter gradients are summed
// over atoms in a fixed order. grad_grad_out only in the double backward.
struct hipnnts_cpu_gradients {
    void* grad_Y;         // (N, nu, F)
    void* grad_coord;     // (P, 3)
    void* grad_mu;        // (nu,)
    void* grad_sigma;     // (nu,)
    void* grad_lam1;      // (F,), written when lmax >= 1
    void* grad_lam2;      // (F,), written when lmax >= 2
    void* grad_grad_out;  // (N, F)
};

// The envsum family: out = op(a, b) over the pairs grouped by `order`/`ptr` (see reference.py).
struct hipnnts_cpu_family {
    const void* a;               // envsum: sens (P, nu); sensesum: env (N, nu, F); featsum: env
    const void* b;               // envsum, sensesum: feat (N, F); featsum: sens (P, nu)
    const hipnnts_index* atom;   // the pair's other atom: second (envsum, sensesum), first (featsum)
    const hipnnts_index* order;  // receiver segments (envsum, sensesum), sender segments (featsum)
    const hipnnts_index* ptr;
    void* out;                   // envsum (N, nu, F); sensesum (P, nu); featsum (N, F)
    hipnnts_index n_atoms, n_pairs;
    int32_t nu, features, is_double;
};

// What the dispatcher gives the kernels of one call.
// run: body(context, begin, end) over [0, n) split into contiguous chunks, one per thread, with
//   about equal numbers of pairs when `segments` (n + 1 starts) is given; `work` is the call's size
//   in multiply-adds, which decides whether threads are worth starting. Every item is computed by
//   one thread, so results do not depend on the number of threads.
// workspace: `bytes` of scratch memory, valid until the call returns (null if out of memory); kept
//   between calls of a thread so that its pages are not faulted in again.
struct hipnnts_cpu_context {
    void (*run)(const struct hipnnts_cpu_context* self, hipnnts_index n, const hipnnts_index* segments,
                double work, void (*body)(void* context, hipnnts_index begin, hipnnts_index end), void* context);
    void* (*workspace)(const struct hipnnts_cpu_context* self, hipnnts_index bytes);
    int32_t threads;
};

// One instruction set's kernels. Each returns null, or a message (a static string) on failure.
struct hipnnts_cpu_table {
    const char* name;
    const char* (*interaction_forward)(const struct hipnnts_cpu_inputs*, void* out,
                                       const struct hipnnts_cpu_context*);
    const char* (*interaction_backward)(const struct hipnnts_cpu_inputs*, const void* grad_out,
                                        const struct hipnnts_cpu_gradients*, const struct hipnnts_cpu_context*);
    const char* (*interaction_double_backward)(const struct hipnnts_cpu_inputs*,
                                               const struct hipnnts_cpu_cotangents*, const void* grad_out,
                                               const struct hipnnts_cpu_gradients*,
                                               const struct hipnnts_cpu_context*);
    const char* (*envsum)(const struct hipnnts_cpu_family*, const struct hipnnts_cpu_context*);
    const char* (*sensesum)(const struct hipnnts_cpu_family*, const struct hipnnts_cpu_context*);
    const char* (*featsum)(const struct hipnnts_cpu_family*, const struct hipnnts_cpu_context*);
};

}  // extern "C"
