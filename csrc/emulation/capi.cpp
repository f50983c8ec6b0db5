// C entry points of the host-emulated CUDA kernels, for the CPU test suite and the traffic model
// (loaded with ctypes by hipnnts_kernels/emulation.py). Floating arrays are float64 when
// `is_double`, else float32. Workspaces are allocated here, as the torch ops allocate theirs.
#include <cstdint>
#include <cstring>
#include <vector>

#include "../kernels/launch.h"
#include "host_cuda.h"

using hipnnts::index_t;
using hipnnts::InteractionInputs;
using hipnnts::Segments;

namespace {

template <class T>
InteractionInputs<T> inputs(const void* Y, const void* coord, const index_t* order,
                            const index_t* ptr, const index_t* sender_order, const index_t* sender_ptr,
                            const void* mu, const void* sigma, const void* lam1, const void* lam2, index_t n_atoms,
                            index_t n_pairs, int nu, int features, int lmax, double cutoff, double cusp_reg,
                            hipnnts::Molecules molecules) {
    return {static_cast<const T*>(Y), static_cast<const T*>(coord), Segments{order, ptr},
            Segments{sender_order, sender_ptr}, static_cast<const T*>(mu), static_cast<const T*>(sigma),
            static_cast<const T*>(lam1), static_cast<const T*>(lam2), n_atoms, n_pairs, nu, features, lmax, cutoff,
            cusp_reg, molecules};
}

// A buffer whose data() is 256-B aligned, as a GPU allocation is (so that the traffic model counts
// the sectors a GPU would).
template <class T>
class AlignedBuffer {
  public:
    explicit AlignedBuffer(size_t count) : storage_(count + 256 / sizeof(T)) {}
    T* data() {
        const uintptr_t p = reinterpret_cast<uintptr_t>(storage_.data());
        return reinterpret_cast<T*>((p + 255) / 256 * 256);
    }

  private:
    std::vector<T> storage_;
};

template <class T>
AlignedBuffer<T> workspace(hipnnts::Level level, index_t n_atoms, index_t n_pairs, int nu, int features, int lmax) {
    return AlignedBuffer<T>(hipnnts::interaction_workspace(level, n_atoms, n_pairs, nu, features, lmax));
}

}  // namespace

#define HIPNNTS_INPUT_ARGS                                                                                  \
    const void *Y, const void *coord, const index_t *order, const index_t *ptr,                            \
        const index_t *sender_order, const index_t *sender_ptr, const void *mu, const void *sigma,          \
        const void *lam1, const void *lam2, index_t n_atoms, index_t n_pairs, int nu, int features, int lmax, \
        double cutoff, double cusp_reg, const index_t *molecule_ptr, const index_t *receiver_rank,            \
        index_t n_molecules, int max_atoms, int max_pairs
// (molecule_ptr null: no molecule path.)
#define HIPNNTS_INPUTS(T)                                                                                   \
    inputs<T>(Y, coord, order, ptr, sender_order, sender_ptr, mu, sigma, lam1, lam2, n_atoms, n_pairs, \
              nu, features, lmax, cutoff, cusp_reg,                                                     \
              hipnnts::Molecules{molecule_ptr, receiver_rank, n_molecules, max_atoms, max_pairs})
#define HIPNNTS_DISPATCH(call_float, call_double) (is_double ? (call_double) : (call_float))
#define P(T, x) static_cast<T*>(x)
#define CP(T, x) static_cast<const T*>(x)

extern "C" {

const char* hipnnts_emu_interaction_forward(int is_double, HIPNNTS_INPUT_ARGS, void* out) {
#define HIPNNTS_FORWARD(T)                                                                                      \
    hipnnts::interaction_forward(HIPNNTS_INPUTS(T), P(T, out),                                                 \
                                 workspace<T>(hipnnts::Level::forward, n_atoms, n_pairs, nu, features, lmax).data(), nullptr)
    return HIPNNTS_DISPATCH(HIPNNTS_FORWARD(float), HIPNNTS_FORWARD(double));
}

#define HIPNNTS_GRADIENTS(T) hipnnts::Gradients<T>::from(reinterpret_cast<T* const*>(gradients), n_gradients)

// gradients: n_gradients pointers in hipnnts::Gradients' field order.
const char* hipnnts_emu_interaction_backward(int is_double, HIPNNTS_INPUT_ARGS, const void* grad_out,
                                             void* const* gradients, int n_gradients) {
#define HIPNNTS_BACKWARD(T)                                                                                    \
    hipnnts::interaction_backward(HIPNNTS_INPUTS(T), CP(T, grad_out), HIPNNTS_GRADIENTS(T),                    \
                                  workspace<T>(hipnnts::Level::backward, n_atoms, n_pairs, nu, features, lmax).data(), nullptr)
    return HIPNNTS_DISPATCH(HIPNNTS_BACKWARD(float), HIPNNTS_BACKWARD(double));
}

const char* hipnnts_emu_interaction_double_backward(int is_double, HIPNNTS_INPUT_ARGS, const void* v_Y,
                                                    const void* v_coord, const void* v_mu, const void* v_sigma,
                                                    const void* v_lam1, const void* v_lam2, const void* grad_out,
                                                    void* const* gradients, int n_gradients) {
#define HIPNNTS_DOUBLE_BACKWARD(T)                                                                                \
    hipnnts::interaction_double_backward(                                                                        \
        HIPNNTS_INPUTS(T),                                                                                       \
        hipnnts::Cotangents<T>{CP(T, v_Y), CP(T, v_coord), CP(T, v_mu), CP(T, v_sigma), CP(T, v_lam1),         \
                               CP(T, v_lam2)},                                                                   \
        CP(T, grad_out), HIPNNTS_GRADIENTS(T),                                                                   \
        workspace<T>(hipnnts::Level::double_backward, n_atoms, n_pairs, nu, features, lmax).data(), nullptr)
    return HIPNNTS_DISPATCH(HIPNNTS_DOUBLE_BACKWARD(float), HIPNNTS_DOUBLE_BACKWARD(double));
}

#define HIPNNTS_FAMILY(name)                                                                                       \
    const char* hipnnts_emu_##name(int is_double, const void* a, const void* b, const index_t* atom,              \
                                   const index_t* order, const index_t* ptr, index_t n_atoms, int nu, int features, \
                                   void* out) {                                                                    \
        return HIPNNTS_DISPATCH(hipnnts::name(CP(float, a), CP(float, b), atom, Segments{order, ptr}, n_atoms, nu, \
                                              features, P(float, out), nullptr),                                  \
                                hipnnts::name(CP(double, a), CP(double, b), atom, Segments{order, ptr}, n_atoms,  \
                                              nu, features, P(double, out), nullptr));                            \
    }

const char* hipnnts_emu_featsum_molecules(int is_double, const void* env, const void* sens, const index_t* second,
                                          const index_t* order, const index_t* ptr, const index_t* molecule_ptr,
                                          index_t n_molecules, int nu, int features, void* out) {
    return HIPNNTS_DISPATCH(hipnnts::featsum_molecules(CP(float, env), CP(float, sens), second, Segments{order, ptr},
                                                       molecule_ptr, n_molecules, nu, features, P(float, out), nullptr),
                            hipnnts::featsum_molecules(CP(double, env), CP(double, sens), second,
                                                       Segments{order, ptr}, molecule_ptr, n_molecules, nu, features,
                                                       P(double, out), nullptr));
}

HIPNNTS_FAMILY(envsum)
HIPNNTS_FAMILY(sensesum)
HIPNNTS_FAMILY(featsum)

// The launch geometry, for the launch-limit tests: the block one launch of kernel `kind` takes
// (threads, returned dynamic shared bytes), and the check of a block against given limits.
// The dynamic shared memory a block may take (hipnnts::emulated_shared_limit); returns the old value.
size_t hipnnts_emu_shared_limit(size_t bytes) {
    const size_t old = hipnnts::emulated_shared_limit;
    hipnnts::emulated_shared_limit = bytes;
    return old;
}

// (max_atoms, max_pairs: the largest molecule, width: the tile width, for the molecule kernels.)
size_t hipnnts_emu_launch_block(int kind, int is_double, int lmax, int nu, int features, int max_atoms,
                                int max_pairs, int width, unsigned* threads) {
    const auto k = static_cast<hipnnts::KernelKind>(kind);
    const hipnnts::Block block =
        is_double ? hipnnts::launch_block<double>(k, lmax, nu, features, max_atoms, max_pairs, width)
                  : hipnnts::launch_block<float>(k, lmax, nu, features, max_atoms, max_pairs, width);
    *threads = block.threads;
    return block.shared_bytes;
}

const char* hipnnts_emu_kernel_name(int kind) { return hipnnts::kernel_name(static_cast<hipnnts::KernelKind>(kind)); }

const char* hipnnts_emu_check_block(int kind, int is_double, int lmax, int nu, int features, unsigned threads,
                                    size_t shared_bytes, int max_threads, int registers, size_t max_dynamic_shared) {
    return hipnnts::check_block(static_cast<hipnnts::KernelKind>(kind), is_double != 0, lmax, nu, features,
                                hipnnts::Block{threads, shared_bytes},
                                hipnnts::KernelLimits{max_threads, registers, max_dynamic_shared});
}

// The hazard check (racecheck.h): switch it on or off (and forget earlier hazards), then read the
// number of hazards found and the first one, described ("" if none).
void hipnnts_emu_racecheck(int on) {
    hipnnts_emu::racecheck::checker.enabled = on != 0;
    hipnnts_emu::racecheck::checker.reset();
}

uint64_t hipnnts_emu_racecheck_hazards() { return hipnnts_emu::racecheck::checker.hazards; }

const char* hipnnts_emu_racecheck_first() { return hipnnts_emu::racecheck::checker.first.c_str(); }

// The traffic model (traffic.h): switch recording on or off (and forget earlier launches), then
// read each recorded launch's kernel name and totals. The totals come in TRAFFIC_FIELDS order.
void hipnnts_emu_traffic_record(int on) {
    hipnnts_emu::traffic::recorder.enabled = on != 0;
    hipnnts_emu::traffic::launches.clear();
}

int hipnnts_emu_traffic_launches() { return int(hipnnts_emu::traffic::launches.size()); }

const char* hipnnts_emu_traffic_kernel(int i) { return hipnnts_emu::traffic::launches.at(size_t(i)).first.c_str(); }

// blocks, threads_per_block, warps, global load / store requests, global load / store bytes,
// shared load / store requests, shared load / store bytes, global load / store sectors, global load /
// store distinct bytes, shared load / store wavefronts, shared load / store ideal wavefronts, flops,
// global row requests, the most sectors per 128 B requested of a row request (x 1000)
constexpr int kTrafficFields = 22;

int hipnnts_emu_traffic_fields() { return kTrafficFields; }

void hipnnts_emu_traffic_stats(int i, uint64_t* out) {
    const hipnnts_emu::traffic::Stats& s = hipnnts_emu::traffic::launches.at(size_t(i)).second;
    const uint64_t fields[kTrafficFields] = {
        s.blocks, s.threads_per_block, s.warps, s.requests[0][0], s.requests[0][1], s.bytes[0][0], s.bytes[0][1],
        s.requests[1][0], s.requests[1][1], s.bytes[1][0], s.bytes[1][1], s.sectors[0], s.sectors[1],
        s.distinct_bytes[0], s.distinct_bytes[1], s.wavefronts[0], s.wavefronts[1], s.ideal_wavefronts[0],
        s.ideal_wavefronts[1], s.flops, s.row_requests, s.row_worst_milli_sectors};
    std::memcpy(out, fields, sizeof fields);
}

}  // extern "C"
