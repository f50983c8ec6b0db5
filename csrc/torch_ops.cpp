// torch registration of the CUDA kernels: the hipnnts_cuda operator namespace holds launch
// primitives that write into the tensors they are given (schemas in TORCH_LIBRARY, CUDA
// implementations in TORCH_LIBRARY_IMPL). hipnnts_kernels/cuda_backend.py allocates the outputs
// and calls them from the public ops, which own the autograd and fake kernels.
#include <ATen/ATen.h>
#include <Python.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>
#include <torch/version.h>

#include <optional>

#include "kernels/launch.h"

namespace {

using hipnnts::index_t;
using OptionalTensor = std::optional<at::Tensor>;

void check_float(const at::Tensor& t, const char* name, const at::Tensor& like) {
    TORCH_CHECK(t.is_cuda(), "hipnnts_cuda: ", name, " must be a CUDA tensor, got ", t.device());
    TORCH_CHECK(t.device() == like.device(), "hipnnts_cuda: ", name, " is on ", t.device(), " but Y is on ",
                like.device());
    TORCH_CHECK(t.scalar_type() == like.scalar_type(), "hipnnts_cuda: ", name, " has dtype ", t.scalar_type(),
                " but expected ", like.scalar_type());
    TORCH_CHECK(t.is_contiguous(), "hipnnts_cuda: ", name, " must be contiguous");
}

void check_index(const at::Tensor& t, const char* name, const at::Tensor& like) {
    TORCH_CHECK(t.is_cuda() && t.device() == like.device(), "hipnnts_cuda: ", name, " must be on ", like.device());
    TORCH_CHECK(t.scalar_type() == at::kLong, "hipnnts_cuda: ", name, " must be int64, got ", t.scalar_type());
    TORCH_CHECK(t.is_contiguous(), "hipnnts_cuda: ", name, " must be contiguous");
}

void raise_if(const char* error, const char* op) {
    TORCH_CHECK(error == nullptr, "hipnnts_cuda::", op, " failed: ", error);
}

template <class T>
const T* optional_ptr(const OptionalTensor& t) {
    return t.has_value() ? t->data_ptr<T>() : nullptr;
}

// The interaction's argument pack as the schemas spell it (INTERACTION_INPUTS below).
struct Inputs {
    const at::Tensor &Y, &coord, &order, &ptr, &sender_order, &sender_ptr, &mu, &sigma;
    const OptionalTensor &lam1, &lam2;
    double cutoff, cusp_reg;
    int64_t lmax;
    // The molecule path's arguments (MOLECULE_SCHEMA), or null.
    const at::Tensor* molecule_ptr = nullptr;
    const at::Tensor* receiver_rank = nullptr;
    int64_t max_atoms = 0, max_pairs = 0;

    template <class T>
    hipnnts::InteractionInputs<T> pointers() const {
        hipnnts::InteractionInputs<T> in{Y.data_ptr<T>(), coord.data_ptr<T>(),
                hipnnts::Segments{order.data_ptr<index_t>(), ptr.data_ptr<index_t>()},
                hipnnts::Segments{sender_order.data_ptr<index_t>(), sender_ptr.data_ptr<index_t>()},
                mu.data_ptr<T>(), sigma.data_ptr<T>(), optional_ptr<T>(lam1), optional_ptr<T>(lam2), Y.size(0),
                coord.size(0), int(Y.size(1)), int(Y.size(2)), int(lmax), cutoff, cusp_reg};
        if (molecule_ptr != nullptr)
            in.molecules = {molecule_ptr->data_ptr<index_t>(), receiver_rank->data_ptr<index_t>(),
                            molecule_ptr->numel() - 1, int(max_atoms), int(max_pairs)};
        return in;
    }

    // These inputs with the molecule path's arguments, checked.
    Inputs with_molecules(const at::Tensor& molecules, const at::Tensor& rank, int64_t atoms, int64_t pairs) const;
};

#define INTERACTION_ARGS                                                                                          \
    const at::Tensor &Y, const at::Tensor &coord, const at::Tensor &order,                                     \
        const at::Tensor &ptr, const at::Tensor &sender_order, const at::Tensor &sender_ptr, const at::Tensor &mu, \
        const at::Tensor &sigma, const OptionalTensor &lam1, const OptionalTensor &lam2, double cutoff,           \
        double cusp_reg, int64_t lmax
#define INTERACTION_INPUTS Inputs{Y, coord, order, ptr, sender_order, sender_ptr, mu, sigma, lam1, lam2, \
                                  cutoff, cusp_reg, lmax}
#define INTERACTION_SCHEMA                                                                                     \
    "Tensor Y, Tensor pair_coord, Tensor receiver_order, Tensor receiver_ptr, "            \
    "Tensor sender_order, Tensor sender_ptr, Tensor mu, Tensor sigma, Tensor? vecscales, Tensor? quadscales, " \
    "float cutoff, float cusp_reg, int lmax"
// The molecule path's arguments (pair_index.PairIndex.molecules and receiver_rank).
#define MOLECULE_ARGS \
    const at::Tensor &molecule_ptr, const at::Tensor &receiver_rank, int64_t max_atoms, int64_t max_pairs
#define MOLECULE_SCHEMA "Tensor molecule_ptr, Tensor receiver_rank, int max_atoms, int max_pairs"

void check_interaction(const Inputs& in) {
    const at::Tensor &Y = in.Y, &coord = in.coord, &order = in.order, &ptr = in.ptr, &mu = in.mu, &sigma = in.sigma;
    const at::Tensor &sender_order = in.sender_order, &sender_ptr = in.sender_ptr;
    const OptionalTensor &lam1 = in.lam1, &lam2 = in.lam2;
    const int64_t lmax = in.lmax;
    TORCH_CHECK(Y.dim() == 3, "hipnnts_cuda: Y must be (N, nu, F), got ", Y.sizes());
    TORCH_CHECK(Y.scalar_type() == at::kFloat || Y.scalar_type() == at::kDouble,
                "hipnnts_cuda: Y must be float32 or float64, got ", Y.scalar_type());
    check_float(Y, "Y", Y);
    check_float(coord, "pair_coord", Y);
    check_float(mu, "mu", Y);
    check_float(sigma, "sigma", Y);
    check_index(order, "receiver_order", Y);
    check_index(ptr, "receiver_ptr", Y);
    check_index(sender_order, "sender_order", Y);
    check_index(sender_ptr, "sender_ptr", Y);
    TORCH_CHECK(ptr.numel() == Y.size(0) + 1, "hipnnts_cuda: receiver_ptr must have N + 1 entries");
    TORCH_CHECK(sender_ptr.numel() == Y.size(0) + 1, "hipnnts_cuda: sender_ptr must have N + 1 entries");
    TORCH_CHECK(lmax >= 0 && lmax <= 2, "hipnnts_cuda: lmax must be 0, 1 or 2, got ", lmax);
    TORCH_CHECK(lam1.has_value() == (lmax >= 1), "hipnnts_cuda: vecscales must be given exactly when lmax >= 1");
    TORCH_CHECK(lam2.has_value() == (lmax >= 2), "hipnnts_cuda: quadscales must be given exactly when lmax == 2");
    if (lam1) check_float(*lam1, "vecscales", Y);
    if (lam2) check_float(*lam2, "quadscales", Y);
}

cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

// The derivative levels' outputs: `gradients` (Tensor(a!)[]) in hipnnts::Gradients' field order,
// `count` of them (the backward has no grad_grad_out).
void check_gradients(at::TensorList gradients, size_t count, const at::Tensor& Y) {
    static const char* const names[] = {"grad_Y",    "grad_coord", "mu_part",      "sigma_part",
                                        "lam1_part", "lam2_part",  "grad_grad_out"};
    TORCH_CHECK(gradients.size() == count, "hipnnts_cuda: expected ", count, " gradient tensors, got ",
                gradients.size());
    for (size_t k = 0; k < count; ++k) check_float(gradients[k], names[k], Y);
}

template <class T>
hipnnts::Gradients<T> gradient_pointers(at::TensorList gradients) {
    T* pointers[hipnnts::Gradients<T>::count] = {};
    for (size_t k = 0; k < gradients.size(); ++k) pointers[k] = gradients[k].data_ptr<T>();
    return hipnnts::Gradients<T>::from(pointers, int(gradients.size()));
}

at::Tensor workspace(hipnnts::Level level, const Inputs& in) {
    const size_t size = hipnnts::interaction_workspace(level, in.Y.size(0), in.coord.size(0), int(in.Y.size(1)),
                                                       int(in.Y.size(2)), int(in.lmax));
    return at::empty({int64_t(size)}, in.Y.options());
}

void check_molecules(const at::Tensor& molecule_ptr, const at::Tensor& Y) {
    check_index(molecule_ptr, "molecule_ptr", Y);
    TORCH_CHECK(molecule_ptr.dim() == 1 && molecule_ptr.numel() >= 1, "hipnnts_cuda: molecule_ptr must be (M + 1,)");
}

void forward(const Inputs& in, at::Tensor& out) {
    const at::Tensor& Y = in.Y;
    check_interaction(in);
    check_float(out, "out", Y);
    const c10::cuda::CUDAGuard guard(Y.device());
    at::Tensor scratch = workspace(hipnnts::Level::forward, in);
    AT_DISPATCH_FLOATING_TYPES(Y.scalar_type(), "interaction_forward", [&] {
        raise_if(hipnnts::interaction_forward<scalar_t>(in.pointers<scalar_t>(), out.data_ptr<scalar_t>(),
                                                        scratch.data_ptr<scalar_t>(), current_stream()),
                 "interaction_forward");
    });
}

void backward(const Inputs& in, const at::Tensor& grad_out, at::TensorList gradients) {
    const at::Tensor& Y = in.Y;
    check_interaction(in);
    check_float(grad_out, "grad_out", Y);
    check_gradients(gradients, hipnnts::Gradients<float>::count - 1, Y);
    const c10::cuda::CUDAGuard guard(Y.device());
    at::Tensor scratch = workspace(hipnnts::Level::backward, in);
    AT_DISPATCH_FLOATING_TYPES(Y.scalar_type(), "interaction_backward", [&] {
        raise_if(hipnnts::interaction_backward<scalar_t>(in.pointers<scalar_t>(), grad_out.data_ptr<scalar_t>(),
                                                         gradient_pointers<scalar_t>(gradients),
                                                         scratch.data_ptr<scalar_t>(), current_stream()),
                 "interaction_backward");
    });
}

#define COTANGENT_ARGS                                                                                          \
    const OptionalTensor &v_Y, const at::Tensor &v_coord, const at::Tensor &v_mu, const at::Tensor &v_sigma, \
        const OptionalTensor &v_lam1, const OptionalTensor &v_lam2
#define COTANGENT_SCHEMA \
    "Tensor? v_Y, Tensor v_coord, Tensor v_mu, Tensor v_sigma, Tensor? v_vecscales, Tensor? v_quadscales"

void double_backward(const Inputs& in, COTANGENT_ARGS, const at::Tensor& grad_out, at::TensorList gradients) {
    const at::Tensor& Y = in.Y;
    check_interaction(in);
    for (const auto& [t, name] :
         {std::pair{&v_coord, "v_coord"}, {&v_mu, "v_mu"}, {&v_sigma, "v_sigma"}, {&grad_out, "grad_out"}})
        check_float(*t, name, Y);
    for (const auto& [t, name] : {std::pair{&v_Y, "v_Y"}, {&v_lam1, "v_vecscales"}, {&v_lam2, "v_quadscales"}})
        if (t->has_value()) check_float(**t, name, Y);
    check_gradients(gradients, hipnnts::Gradients<float>::count, Y);
    const c10::cuda::CUDAGuard guard(Y.device());
    at::Tensor scratch = workspace(hipnnts::Level::double_backward, in);
    AT_DISPATCH_FLOATING_TYPES(Y.scalar_type(), "interaction_double_backward", [&] {
        const hipnnts::Cotangents<scalar_t> cot{optional_ptr<scalar_t>(v_Y), v_coord.data_ptr<scalar_t>(),
                                                v_mu.data_ptr<scalar_t>(), v_sigma.data_ptr<scalar_t>(),
                                                optional_ptr<scalar_t>(v_lam1), optional_ptr<scalar_t>(v_lam2)};
        raise_if(hipnnts::interaction_double_backward<scalar_t>(in.pointers<scalar_t>(), cot,
                                                                grad_out.data_ptr<scalar_t>(),
                                                                gradient_pointers<scalar_t>(gradients),
                                                                scratch.data_ptr<scalar_t>(), current_stream()),
                 "interaction_double_backward");
    });
}

void interaction_forward(INTERACTION_ARGS, at::Tensor& out) { forward(INTERACTION_INPUTS, out); }

void interaction_backward(INTERACTION_ARGS, const at::Tensor& grad_out, at::TensorList gradients) {
    backward(INTERACTION_INPUTS, grad_out, gradients);
}

void interaction_double_backward(INTERACTION_ARGS, COTANGENT_ARGS, const at::Tensor& grad_out,
                                 at::TensorList gradients) {
    double_backward(INTERACTION_INPUTS, v_Y, v_coord, v_mu, v_sigma, v_lam1, v_lam2, grad_out, gradients);
}

Inputs Inputs::with_molecules(const at::Tensor& molecules, const at::Tensor& rank, int64_t atoms,
                              int64_t pairs) const {
    check_molecules(molecules, Y);
    check_index(rank, "receiver_rank", Y);
    TORCH_CHECK(rank.numel() == coord.size(0), "hipnnts_cuda: receiver_rank must have one entry per pair");
    TORCH_CHECK(atoms >= 0 && pairs >= 0, "hipnnts_cuda: max_atoms and max_pairs must not be negative");
    Inputs in = *this;
    in.molecule_ptr = &molecules;
    in.receiver_rank = &rank;
    in.max_atoms = atoms;
    in.max_pairs = pairs;
    return in;
}

void interaction_forward_molecules(INTERACTION_ARGS, MOLECULE_ARGS, at::Tensor& out) {
    forward(INTERACTION_INPUTS.with_molecules(molecule_ptr, receiver_rank, max_atoms, max_pairs), out);
}

void interaction_backward_molecules(INTERACTION_ARGS, MOLECULE_ARGS, const at::Tensor& grad_out,
                                    at::TensorList gradients) {
    backward(INTERACTION_INPUTS.with_molecules(molecule_ptr, receiver_rank, max_atoms, max_pairs), grad_out,
             gradients);
}

void interaction_double_backward_molecules(INTERACTION_ARGS, MOLECULE_ARGS, COTANGENT_ARGS, const at::Tensor& grad_out,
                                           at::TensorList gradients) {
    double_backward(INTERACTION_INPUTS.with_molecules(molecule_ptr, receiver_rank, max_atoms, max_pairs), v_Y,
                    v_coord, v_mu, v_sigma, v_lam1, v_lam2, grad_out, gradients);
}


template <class T>
const char* launch_featsum_molecules(const at::Tensor& molecule_ptr, const T* env, const T* sens, const index_t* second,
                                     hipnnts::Segments receivers, index_t, int nu, int features, T* feat,
                                     cudaStream_t stream) {
    return hipnnts::featsum_molecules(env, sens, second, receivers, molecule_ptr.data_ptr<index_t>(),
                                      molecule_ptr.numel() - 1, nu, features, feat, stream);
}

// envsum / sensesum / featsum: (a, b) are (sens, feat), (env, feat), (env, sens); `atom` is the
// partner index (pair_second for the first two, pair_first for featsum); `shape_of` holds (N, nu, F).
template <class Launch>
void family(const char* op, const at::Tensor& a, const at::Tensor& b, const at::Tensor& atom, const at::Tensor& order,
            const at::Tensor& ptr, const at::Tensor& shape_of, at::Tensor& out, Launch launch) {
    TORCH_CHECK(shape_of.dim() == 3, "hipnnts_cuda::", op, ": expected an (N, nu, F) tensor, got ", shape_of.sizes());
    TORCH_CHECK(a.scalar_type() == at::kFloat || a.scalar_type() == at::kDouble, "hipnnts_cuda::", op,
                ": float32 or float64 inputs expected, got ", a.scalar_type());
    check_float(a, "a", a);
    check_float(b, "b", a);
    check_float(out, "out", a);
    check_index(atom, "pair index", a);
    check_index(order, "order", a);
    check_index(ptr, "ptr", a);
    const c10::cuda::CUDAGuard guard(a.device());
    AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "hipnnts_cuda_envsum_family", [&] {
        raise_if(launch(a.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(), atom.data_ptr<index_t>(),
                        hipnnts::Segments{order.data_ptr<index_t>(), ptr.data_ptr<index_t>()}, shape_of.size(0),
                        int(shape_of.size(1)), int(shape_of.size(2)), out.data_ptr<scalar_t>(), current_stream()),
                 op);
    });
}

void envsum(const at::Tensor& sens, const at::Tensor& feat, const at::Tensor& second, const at::Tensor& order,
            const at::Tensor& ptr, at::Tensor& out) {
    family("envsum", sens, feat, second, order, ptr, out, out, [](auto... args) { return hipnnts::envsum(args...); });
}

void sensesum(const at::Tensor& env, const at::Tensor& feat, const at::Tensor& second, const at::Tensor& order,
              const at::Tensor& ptr, at::Tensor& out) {
    family("sensesum", env, feat, second, order, ptr, env, out, [](auto... args) { return hipnnts::sensesum(args...); });
}

void featsum(const at::Tensor& env, const at::Tensor& sens, const at::Tensor& first, const at::Tensor& order,
             const at::Tensor& ptr, at::Tensor& out) {
    family("featsum", env, sens, first, order, ptr, env, out, [](auto... args) { return hipnnts::featsum(args...); });
}

void featsum_molecules(const at::Tensor& env, const at::Tensor& sens, const at::Tensor& second,
                       const at::Tensor& order, const at::Tensor& ptr, const at::Tensor& molecule_ptr,
                       at::Tensor& out) {
    check_molecules(molecule_ptr, env);
    family("featsum_molecules", env, sens, second, order, ptr, env, out, [&](auto... args) {
        return launch_featsum_molecules(molecule_ptr, args...);
    });
}

}  // namespace

TORCH_LIBRARY(hipnnts_cuda, m) {
    m.def("interaction_forward(" INTERACTION_SCHEMA ", Tensor(a!) out) -> ()");
    // gradients: grad_Y, grad_coord, mu_part, sigma_part, lam1_part, lam2_part (and grad_grad_out), as
    // hipnnts::Gradients orders them
    m.def("interaction_backward(" INTERACTION_SCHEMA ", Tensor grad_out, Tensor(a!)[] gradients) -> ()");
    m.def("interaction_double_backward(" INTERACTION_SCHEMA ", " COTANGENT_SCHEMA
          ", Tensor grad_out, Tensor(a!)[] gradients) -> ()");
    // the same on the molecule path where it applies (the launcher falls back to the split kernels)
    m.def("interaction_forward_molecules(" INTERACTION_SCHEMA ", " MOLECULE_SCHEMA ", Tensor(a!) out) -> ()");
    m.def("interaction_backward_molecules(" INTERACTION_SCHEMA ", " MOLECULE_SCHEMA
          ", Tensor grad_out, Tensor(a!)[] gradients) -> ()");
    m.def("interaction_double_backward_molecules(" INTERACTION_SCHEMA ", " MOLECULE_SCHEMA ", " COTANGENT_SCHEMA
          ", Tensor grad_out, Tensor(a!)[] gradients) -> ()");
    m.def("envsum(Tensor sens, Tensor feat, Tensor pair_second, Tensor order, Tensor ptr, Tensor(a!) out) -> ()");
    m.def("sensesum(Tensor env, Tensor feat, Tensor pair_second, Tensor order, Tensor ptr, Tensor(a!) out) -> ()");
    m.def("featsum(Tensor env, Tensor sens, Tensor pair_first, Tensor order, Tensor ptr, Tensor(a!) out) -> ()");
    m.def("featsum_molecules(Tensor env, Tensor sens, Tensor pair_second, Tensor receiver_order, Tensor receiver_ptr, "
          "Tensor molecule_ptr, Tensor(a!) out) -> ()");
}

TORCH_LIBRARY_IMPL(hipnnts_cuda, CUDA, m) {
    m.impl("interaction_forward", &interaction_forward);
    m.impl("interaction_backward", &interaction_backward);
    m.impl("interaction_double_backward", &interaction_double_backward);
    m.impl("interaction_forward_molecules", &interaction_forward_molecules);
    m.impl("interaction_backward_molecules", &interaction_backward_molecules);
    m.impl("interaction_double_backward_molecules", &interaction_double_backward_molecules);
    m.impl("envsum", &envsum);
    m.impl("sensesum", &sensesum);
    m.impl("featsum", &featsum);
    m.impl("featsum_molecules", &featsum_molecules);
}

// What the extension was built against, read by hipnnts_kernels.cuda_backend at import: setup.py
// passes TORCH_CUDA_ARCH_LIST as HIPNNTS_CUDA_ARCHS (comma-separated).
#ifndef HIPNNTS_CUDA_ARCHS
#define HIPNNTS_CUDA_ARCHS unknown
#endif
#define HIPNNTS_STRING_(...) #__VA_ARGS__
#define HIPNNTS_STRING(...) HIPNNTS_STRING_(__VA_ARGS__)

// Importable as hipnnts_kernels._C; importing it runs the registrations above.
extern "C" PyObject* PyInit__C(void) {
    static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
    PyObject* m = PyModule_Create(&module);
    if (m == nullptr) return nullptr;
    const char* torch_version = HIPNNTS_STRING(TORCH_VERSION_MAJOR) "." HIPNNTS_STRING(TORCH_VERSION_MINOR) "."
        HIPNNTS_STRING(TORCH_VERSION_PATCH);
    if (PyModule_AddStringConstant(m, "torch_version", torch_version) < 0 ||
        PyModule_AddIntConstant(m, "cuda_runtime_version", CUDART_VERSION) < 0 ||
        PyModule_AddStringConstant(m, "cuda_archs", HIPNNTS_STRING(HIPNNTS_CUDA_ARCHS)) < 0) {
        Py_DECREF(m);
        return nullptr;
    }
    return m;
}
