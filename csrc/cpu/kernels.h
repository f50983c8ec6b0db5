// CPU kernels of the fused interaction (SPEC sections 4 and 4.1) and the envsum family (section 8):
// the math of hipnnts_kernels/reference.py, arranged as passes over the senders and the receivers
// of the pair list (docs/kernels.md, "CPU kernels").
//
// A kernels_<isa>.cpp file includes this header after choosing its instruction set, and defines
// HIPNNTS_CPU_TABLE, the name of the hipnnts_cpu_table it exports. Everything here has internal
// linkage and calls only C functions and compiler builtins, so code compiled for one instruction set
// never stands in for another's (an inline C++ library function instantiated in two such files
// could be merged by the linker into the version for the wider instruction set).
//
// Passes (each a parallel loop over atoms or pairs; every output element is written by one thread in a
// fixed order, so results are the same for any number of threads):
//   radial    per pair:     s_nu(r) and its partial derivatives (1, 4 or 10 rows of nu)
//   sender    per sender j: t_p = sum_nu s_nu(r_p) Y[j, nu] for j's pairs, and in the derivative
//                           levels grad_Y[j], ds_p, the pair's coordinate gradient
//   receiver  per receiver: m = sum_p Y_c(r_hat_p) t_p, the invariants, dm, dt_p and d(factors)_p
#pragma once

#include "api.h"

#include <stdint.h>

#ifndef HIPNNTS_CPU_TABLE
#error "define HIPNNTS_CPU_TABLE (the exported table's name) before including kernels.h"
#endif

namespace {

using index_t = hipnnts_index;

inline float sqrt_(float x) { return __builtin_sqrtf(x); }
inline double sqrt_(double x) { return __builtin_sqrt(x); }
inline float cos_(float x) { return __builtin_cosf(x); }
inline double cos_(double x) { return __builtin_cos(x); }
inline float sin_(float x) { return __builtin_sinf(x); }
inline double sin_(double x) { return __builtin_sin(x); }

constexpr int components(int lmax) { return lmax == 0 ? 1 : lmax == 1 ? 4 : 9; }

// An array of n T from malloc, freed on scope exit; ok() is false if the allocation failed.
template <class T>
struct Buffer {
    T* data;
    explicit Buffer(index_t n) : data(static_cast<T*>(__builtin_malloc(static_cast<unsigned long>(n > 0 ? n : 1) * sizeof(T)))) {}
    ~Buffer() { __builtin_free(data); }
    Buffer(const Buffer&) = delete;
    Buffer& operator=(const Buffer&) = delete;
    bool ok() const { return data != nullptr; }
    operator T*() const { return data; }
};

constexpr const char* kOutOfMemory = "out of memory for the CPU kernels' workspace";

// The most pairs of one atom among atoms [begin, end) of the segments `ptr`.
inline int largest_group(const index_t* ptr, index_t begin, index_t end) {
    index_t most = 0;
    for (index_t j = begin; j < end; ++j) most = ptr[j + 1] - ptr[j] > most ? ptr[j + 1] - ptr[j] : most;
    return static_cast<int>(most);
}

// Carves arrays out of one workspace; with a null base it only adds up their sizes.
struct Carver {
    char* base;
    index_t offset = 0;
    template <class U>
    U* take(index_t n) {
        U* p = base ? reinterpret_cast<U*>(base + offset) : nullptr;
        offset += (n * static_cast<index_t>(sizeof(U)) + 63) / 64 * 64;
        return p;
    }
};

// Points the arrays of layout(Carver&) into the call's workspace; false if out of memory.
template <class Layout>
bool carve(const hipnnts_cpu_context* par, Layout&& layout) {
    Carver size{nullptr};
    layout(size);
    Carver arrays{static_cast<char*>(par->workspace(par, size.offset))};
    if (!arrays.base) return false;
    layout(arrays);
    return true;
}

// body(b, e) over sub-ranges of [begin, end) on the context's threads (segments: pair counts to balance).
template <class F>
void parallel(const hipnnts_cpu_context* par, index_t begin, index_t end, const index_t* segments, double work,
              F& body) {
    struct Shifted {
        F& body;
        index_t begin;
    } shifted{body, begin};
    par->run(par, end - begin, segments ? segments + begin : nullptr, work,
             [](void* context, index_t b, index_t e) {
                 Shifted& s = *static_cast<Shifted*>(context);
                 s.body(s.begin + b, s.begin + e);
             },
             &shifted);
}

// The context of one tile's passes: serial, inside a thread of the enclosing loop.
void run_serial(const hipnnts_cpu_context*, index_t n, const index_t*, double,
                void (*body)(void*, index_t, index_t), void* context) {
    if (n > 0) body(context, 0, n);
}
const hipnnts_cpu_context kSerial = {run_serial, nullptr, 1};

// Sets a flag that several threads may set.
inline void raise_flag(bool& flag) { __atomic_store_n(&flag, true, __ATOMIC_RELAXED); }

// ---------------------------------------------------------------------------------------------------
// Feature loops over rows of F contiguous values, on vectors of GCC/Clang's vector extensions: one
// AVX2 register (32 bytes) or one SSE register (16 bytes, the baseline build). Every sum runs in a
// fixed order, the same for any number of threads.
// ---------------------------------------------------------------------------------------------------
// Vector bytes: 32 where the including file enables AVX2 (HIPNNTS_CPU_VECTOR_BYTES), else 16.
#ifndef HIPNNTS_CPU_VECTOR_BYTES
#define HIPNNTS_CPU_VECTOR_BYTES 16
#endif
constexpr int kVectorBytes = HIPNNTS_CPU_VECTOR_BYTES;

template <class T>
struct VectorOf {
    typedef T type __attribute__((vector_size(kVectorBytes)));
};
template <class T>
using vec = typename VectorOf<T>::type;
template <class T>
constexpr int kWidth = kVectorBytes / static_cast<int>(sizeof(T));

template <class T>
inline vec<T> load(const T* p) {
    vec<T> v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}
template <class T>
inline void store(T* p, vec<T> v) {
    __builtin_memcpy(p, &v, sizeof v);
}
template <class T>
inline vec<T> splat(T x) {
    return vec<T>{} + x;
}
template <class T>
inline T lanes_sum(vec<T> v) {
    T sum = T(0);
    for (int l = 0; l < kWidth<T>; ++l) sum += v[l];
    return sum;
}

// out[f] (+)= sum_k w[k] rows[k * stride + f], f < F: 8 vectors of features per pass over the rows.
template <bool ACCUMULATE, class T>
inline void combine(const T* w, const T* rows, int count, index_t stride, int F, T* out) {
    constexpr int W = kWidth<T>, B = 8;
    int f0 = 0;
    for (; f0 + B * W <= F; f0 += B * W) {
        vec<T> acc[B];
        for (int b = 0; b < B; ++b) acc[b] = ACCUMULATE ? load(out + f0 + b * W) : vec<T>{};
        for (int k = 0; k < count; ++k) {
            const vec<T> wk = splat(w[k]);
            const T* row = rows + k * stride + f0;
            for (int b = 0; b < B; ++b) acc[b] += wk * load(row + b * W);
        }
        for (int b = 0; b < B; ++b) store(out + f0 + b * W, acc[b]);
    }
    for (; f0 + W <= F; f0 += W) {
        vec<T> acc = ACCUMULATE ? load(out + f0) : vec<T>{};
        for (int k = 0; k < count; ++k) acc += splat(w[k]) * load(rows + k * stride + f0);
        store(out + f0, acc);
    }
    for (; f0 < F; ++f0) {
        T acc = ACCUMULATE ? out[f0] : T(0);
        for (int k = 0; k < count; ++k) acc += w[k] * rows[k * stride + f0];
        out[f0] = acc;
    }
}

// out[k] (+)= sum_f x[f] rows[k * F + f] for k < R (R rows at once: 2R independent sums).
template <bool ACCUMULATE, int R, class T>
inline void dot_rows(const T* x, const T* rows, int F, T* out) {
    constexpr int W = kWidth<T>;
    vec<T> acc[R][2] = {};
    int f = 0;
    for (; f + 2 * W <= F; f += 2 * W) {
        const vec<T> x0 = load(x + f), x1 = load(x + f + W);
        for (int r = 0; r < R; ++r) {
            acc[r][0] += x0 * load(rows + static_cast<index_t>(r) * F + f);
            acc[r][1] += x1 * load(rows + static_cast<index_t>(r) * F + f + W);
        }
    }
    for (int r = 0; r < R; ++r) {
        T sum = lanes_sum<T>(acc[r][0] + acc[r][1]);
        for (int g = f; g < F; ++g) sum += x[g] * rows[static_cast<index_t>(r) * F + g];
        out[r] = (ACCUMULATE ? out[r] : T(0)) + sum;
    }
}

// sum_f a[f] b[f].
template <class T>
inline T dot(const T* a, const T* b, int F) {
    T out;
    dot_rows<false, 1>(a, b, F, &out);
    return out;
}

// out[k] (+)= sum_f x[f] rows[k * F + f] for k < count.
template <bool ACCUMULATE, class T>
inline void dots(const T* x, const T* rows, int count, int F, T* out) {
    int k = 0;
    for (; k + 4 <= count; k += 4) dot_rows<ACCUMULATE, 4>(x, rows + static_cast<index_t>(k) * F, F, out + k);
    for (; k < count; ++k) dot_rows<ACCUMULATE, 1>(x, rows + static_cast<index_t>(k) * F, F, out + k);
}

// The per-pair rows of a group of pairs (one sender's): row q at base + ids[q] * stride, or at
// base + q * stride without ids (a scratch array in group order).
template <class T>
struct Rows {
    T* base;
    index_t stride;
    const index_t* ids;
    T* operator()(int q) const { return base + (ids ? ids[q] : q) * stride; }
};

// Small products over one sender's group of k pairs, register-blocked (R x V vector accumulators):
//   pairs_times      out_q[f] (+)= sum_n a_q[n] B[n][f]        (k x nu) (nu x F)
//   outer_sum        G[n][f]  (+)= sum_q a_q[n] x_q[f]         (nu x k) (k x F)
//   pair_dots        out_q[n] (+)= sum_f x_q[f] B[n][f]        (k x F) (F x nu)
// B and G are nu x F, row-major. Every sum runs in a fixed order.
template <bool ACCUMULATE, int R, int V, class T>
inline void pairs_times_block(const T* const* a, const T* B, int nu, int F, int f0, T* const* out) {
    constexpr int W = kWidth<T>;
    vec<T> acc[R][V];
    for (int r = 0; r < R; ++r)
        for (int v = 0; v < V; ++v) acc[r][v] = ACCUMULATE ? load(out[r] + f0 + v * W) : vec<T>{};
    for (int n = 0; n < nu; ++n) {
        vec<T> b[V];
        for (int v = 0; v < V; ++v) b[v] = load(B + static_cast<index_t>(n) * F + f0 + v * W);
        for (int r = 0; r < R; ++r) {
            const vec<T> w = splat(a[r][n]);
            for (int v = 0; v < V; ++v) acc[r][v] += w * b[v];
        }
    }
    for (int r = 0; r < R; ++r)
        for (int v = 0; v < V; ++v) store(out[r] + f0 + v * W, acc[r][v]);
}

template <bool ACCUMULATE, class T>
void pairs_times(Rows<const T> a, int k, const T* B, int nu, int F, Rows<T> out) {
    constexpr int W = kWidth<T>, R = 4;
    for (int q0 = 0; q0 < k; q0 += R) {
        const int rows = k - q0 < R ? k - q0 : R;
        const T* ar[R];
        T* outr[R];
        for (int r = 0; r < R; ++r) {
            ar[r] = a(q0 + (r < rows ? r : 0));
            outr[r] = out(q0 + (r < rows ? r : 0));
        }
        int f0 = 0;
        if (rows == R) {
            for (; f0 + 2 * W <= F; f0 += 2 * W) pairs_times_block<ACCUMULATE, R, 2>(ar, B, nu, F, f0, outr);
            for (; f0 + W <= F; f0 += W) pairs_times_block<ACCUMULATE, R, 1>(ar, B, nu, F, f0, outr);
        }
        for (int r = 0; r < rows; ++r) {
            int g = f0;
            for (; g + 4 * W <= F; g += 4 * W) pairs_times_block<ACCUMULATE, 1, 4>(ar + r, B, nu, F, g, outr + r);
            for (; g + W <= F; g += W) pairs_times_block<ACCUMULATE, 1, 1>(ar + r, B, nu, F, g, outr + r);
            for (; g < F; ++g) {
                T sum = ACCUMULATE ? outr[r][g] : T(0);
                for (int n = 0; n < nu; ++n) sum += ar[r][n] * B[static_cast<index_t>(n) * F + g];
                outr[r][g] = sum;
            }
        }
    }
}

template <bool ACCUMULATE, int R, int V, class T>
inline void outer_sum_block(Rows<const T> a, int k, Rows<const T> x, int n0, int F, int f0, T* G) {
    constexpr int W = kWidth<T>;
    vec<T> acc[R][V];
    for (int r = 0; r < R; ++r)
        for (int v = 0; v < V; ++v)
            acc[r][v] = ACCUMULATE ? load(G + static_cast<index_t>(n0 + r) * F + f0 + v * W) : vec<T>{};
    for (int q = 0; q < k; ++q) {
        const T* aq = a(q) + n0;
        const T* xq = x(q) + f0;
        vec<T> xv[V];
        for (int v = 0; v < V; ++v) xv[v] = load(xq + v * W);
        for (int r = 0; r < R; ++r) {
            const vec<T> w = splat(aq[r]);
            for (int v = 0; v < V; ++v) acc[r][v] += w * xv[v];
        }
    }
    for (int r = 0; r < R; ++r)
        for (int v = 0; v < V; ++v) store(G + static_cast<index_t>(n0 + r) * F + f0 + v * W, acc[r][v]);
}

template <bool ACCUMULATE, class T>
void outer_sum(Rows<const T> a, int k, Rows<const T> x, int nu, int F, T* G) {
    constexpr int W = kWidth<T>, R = 4;
    int n0 = 0;
    for (; n0 + R <= nu; n0 += R) {
        int f0 = 0;
        for (; f0 + 2 * W <= F; f0 += 2 * W) outer_sum_block<ACCUMULATE, R, 2>(a, k, x, n0, F, f0, G);
        for (; f0 + W <= F; f0 += W) outer_sum_block<ACCUMULATE, R, 1>(a, k, x, n0, F, f0, G);
        for (int r = 0; r < R; ++r)
            for (int f = f0; f < F; ++f) {
                T sum = ACCUMULATE ? G[static_cast<index_t>(n0 + r) * F + f] : T(0);
                for (int q = 0; q < k; ++q) sum += a(q)[n0 + r] * x(q)[f];
                G[static_cast<index_t>(n0 + r) * F + f] = sum;
            }
    }
    for (; n0 < nu; ++n0) {
        int f0 = 0;
        for (; f0 + 4 * W <= F; f0 += 4 * W) outer_sum_block<ACCUMULATE, 1, 4>(a, k, x, n0, F, f0, G);
        for (; f0 + W <= F; f0 += W) outer_sum_block<ACCUMULATE, 1, 1>(a, k, x, n0, F, f0, G);
        for (int f = f0; f < F; ++f) {
            T sum = ACCUMULATE ? G[static_cast<index_t>(n0) * F + f] : T(0);
            for (int q = 0; q < k; ++q) sum += a(q)[n0] * x(q)[f];
            G[static_cast<index_t>(n0) * F + f] = sum;
        }
    }
}

template <bool ACCUMULATE, int Q, int R, class T>
inline void pair_dots_block(const T* const* x, const T* B, int n0, int F, T* const* out) {
    constexpr int W = kWidth<T>;
    vec<T> acc[Q][R] = {};
    int f = 0;
    for (; f + W <= F; f += W) {
        vec<T> b[R];
        for (int r = 0; r < R; ++r) b[r] = load(B + static_cast<index_t>(n0 + r) * F + f);
        for (int q = 0; q < Q; ++q) {
            const vec<T> xv = load(x[q] + f);
            for (int r = 0; r < R; ++r) acc[q][r] += xv * b[r];
        }
    }
    for (int q = 0; q < Q; ++q)
        for (int r = 0; r < R; ++r) {
            T sum = lanes_sum<T>(acc[q][r]);
            for (int g = f; g < F; ++g) sum += x[q][g] * B[static_cast<index_t>(n0 + r) * F + g];
            out[q][n0 + r] = (ACCUMULATE ? out[q][n0 + r] : T(0)) + sum;
        }
}

template <bool ACCUMULATE, class T>
void pair_dots(Rows<const T> x, int k, const T* B, int nu, int F, Rows<T> out) {
    constexpr int Q = 2, R = 4;
    for (int q0 = 0; q0 < k; q0 += Q) {
        const int count = k - q0 < Q ? k - q0 : Q;
        const T* xq[Q];
        T* outq[Q];
        for (int q = 0; q < Q; ++q) {
            xq[q] = x(q0 + (q < count ? q : 0));
            outq[q] = out(q0 + (q < count ? q : 0));
        }
        int n0 = 0;
        if (count == Q) {
            for (; n0 + R <= nu; n0 += R) pair_dots_block<ACCUMULATE, Q, R>(xq, B, n0, F, outq);
            for (; n0 < nu; ++n0) pair_dots_block<ACCUMULATE, Q, 1>(xq, B, n0, F, outq);
        } else {
            for (; n0 + R <= nu; n0 += R) pair_dots_block<ACCUMULATE, 1, R>(xq, B, n0, F, outq);
            for (; n0 < nu; ++n0) pair_dots_block<ACCUMULATE, 1, 1>(xq, B, n0, F, outq);
        }
    }
}

template <class T>
inline void zero(T* x, index_t n) {
    for (index_t i = 0; i < n; ++i) x[i] = T(0);
}

// out[k] = sum over the n rows of `rows` (n x count), in row order (a deterministic reduction).
template <class T>
void sum_rows(const T* rows, index_t n, int count, T* out) {
    zero(out, count);
    for (index_t i = 0; i < n; ++i)
        for (int k = 0; k < count; ++k) out[k] += rows[i * count + k];
}

// ---------------------------------------------------------------------------------------------------
// Per-pair geometry and angular factors.
// ---------------------------------------------------------------------------------------------------
template <class T, int LMAX>
struct Pair {
    static constexpr int C = components(LMAX);
    T r, u[3], A[C];

    Pair(const T* coord, index_t p) {
        const T* d = coord + 3 * p;
        r = sqrt_(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]);
        for (int x = 0; x < 3; ++x) u[x] = d[x] / r;
        A[0] = T(1);
        if (LMAX >= 1)
            for (int x = 0; x < 3; ++x) A[1 + x] = u[x];
        if (LMAX >= 2) {
            const T third = T(1) / T(3);
            A[4] = u[0] * u[0] - third;
            A[5] = u[0] * u[1];
            A[6] = u[0] * u[2];
            A[7] = u[1] * u[1] - third;
            A[8] = u[1] * u[2];
        }
    }

    // d loss / d u from d loss / d A (the transposed Jacobian of the factors).
    void angular_backward(const T* dA, T* du) const {
        for (int x = 0; x < 3; ++x) du[x] = LMAX >= 1 ? dA[1 + x] : T(0);
        if (LMAX >= 2) quad_transpose(u, dA + 4, du);
    }

    // The factors' directional derivative along `tangent` of u.
    void angular_jvp(const T* tangent, T* out) const {
        out[0] = T(0);
        if (LMAX >= 1)
            for (int x = 0; x < 3; ++x) out[1 + x] = tangent[x];
        if (LMAX >= 2) {
            out[4] = T(2) * u[0] * tangent[0];
            out[5] = u[0] * tangent[1] + u[1] * tangent[0];
            out[6] = u[0] * tangent[2] + u[2] * tangent[0];
            out[7] = T(2) * u[1] * tangent[1];
            out[8] = u[1] * tangent[2] + u[2] * tangent[1];
        }
    }

    // out += sum_c dq[c] grad_u Q_c at u = v (Q_c quadratic: also its Hessian-vector product).
    static void quad_transpose(const T* v, const T* dq, T* out) {
        out[0] += T(2) * v[0] * dq[0] + v[1] * dq[1] + v[2] * dq[2];
        out[1] += v[0] * dq[1] + T(2) * v[1] * dq[3] + v[2] * dq[4];
        out[2] += v[0] * dq[2] + v[1] * dq[4];
    }

    // The gradient of the pair vector from those of u and r.
    void coordinate_gradient(const T* du, T dr, T* out) const {
        const T radial = du[0] * u[0] + du[1] * u[1] + du[2] * u[2];
        for (int x = 0; x < 3; ++x) out[x] = (du[x] - radial * u[x]) / r + dr * u[x];
    }
};

// K q for the quadrupole entries q[0..4] (stride `stride`): K = 2 I + e_xx e_yy^T + e_yy e_xx^T.
template <class T>
inline void quad_metric(const T* q, index_t stride, T* out, index_t out_stride) {
    out[0] = T(2) * q[0] + q[3 * stride];
    out[out_stride] = T(2) * q[stride];
    out[2 * out_stride] = T(2) * q[2 * stride];
    out[3 * out_stride] = T(2) * q[3 * stride] + q[0];
    out[4 * out_stride] = T(2) * q[4 * stride];
}

// ---------------------------------------------------------------------------------------------------
// Sensitivities s_nu(r) = exp(-sigma^2 (1/r - 1/mu)^2 / 2) cos^2(pi r / 2 r_c) [r <= r_c] and partials.
// ---------------------------------------------------------------------------------------------------
enum Row { S, S_R, S_MU, S_SIGMA, S_RR, S_RMU, S_RSIGMA, S_MUMU, S_MUSIGMA, S_SIGMASIGMA };

// Integer vectors of the floating vectors' lane width, and lane-wise selection.
template <class T>
struct IntegerOf;
template <>
struct IntegerOf<float> {
    typedef int32_t type __attribute__((vector_size(kVectorBytes)));
};
template <>
struct IntegerOf<double> {
    typedef int64_t type __attribute__((vector_size(kVectorBytes)));
};
template <class T>
using ivec = typename IntegerOf<T>::type;

// mask ? a : b, lane by lane (mask lanes all ones or all zeros, as vector comparisons give them).
template <class T>
inline vec<T> select(ivec<T> mask, vec<T> a, vec<T> b) {
    ivec<T> ia, ib;
    __builtin_memcpy(&ia, &a, sizeof a);
    __builtin_memcpy(&ib, &b, sizeof b);
    const ivec<T> bits = (mask & ia) | (~mask & ib);
    vec<T> out;
    __builtin_memcpy(&out, &bits, sizeof out);
    return out;
}

// exp of every lane, for the sensitivities' arguments (never above 0): Cephes' range reduction to
// |x| <= ln(2)/2 and polynomial (float) or rational function (double), about 1 ulp; results below the
// smallest normal number are 0. Plain lane arithmetic, so the compiler keeps it in vector registers
// (libm's exp is one call per value).
inline vec<float> exp_lanes(vec<float> x) {
    const ivec<float> under = x < -87.0f;
    x = select<float>(under, vec<float>{} - 87.0f, x);
    const vec<float> t = x * 1.44269504088896341f + 0.5f;
    ivec<float> n = __builtin_convertvector(t, ivec<float>);
    n += __builtin_convertvector(n, vec<float>) > t;  // trunc -> floor
    const vec<float> fn = __builtin_convertvector(n, vec<float>);
    x = x - fn * 0.693359375f + fn * 2.12194440e-4f;
    const vec<float> z = x * x;
    vec<float> y = vec<float>{} + 1.9875691500e-4f;
    y = y * x + 1.3981999507e-3f;
    y = y * x + 8.3334519073e-3f;
    y = y * x + 4.1665795894e-2f;
    y = y * x + 1.6666665459e-1f;
    y = y * x + 5.0000001201e-1f;
    y = y * z + x + 1.0f;
    const ivec<float> bits = (n + 127) << 23;
    vec<float> scale;
    __builtin_memcpy(&scale, &bits, sizeof scale);
    return select<float>(under, vec<float>{}, y * scale);
}

inline vec<double> exp_lanes(vec<double> x) {
    const ivec<double> under = x < -708.0;
    x = select<double>(under, vec<double>{} - 708.0, x);
    const vec<double> t = x * 1.4426950408889634073599 + 0.5;
    ivec<double> n = __builtin_convertvector(t, ivec<double>);
    n += __builtin_convertvector(n, vec<double>) > t;  // trunc -> floor
    const vec<double> fn = __builtin_convertvector(n, vec<double>);
    x = x - fn * 6.93145751953125e-1 - fn * 1.42860682030941723212e-6;
    const vec<double> xx = x * x;
    const vec<double> px = x * ((1.26177193074810590878e-4 * xx + 3.02994407707441961300e-2) * xx +
                                9.99999999999999999910e-1);
    const vec<double> qx = ((3.00198505138664455042e-6 * xx + 2.52448340349684104192e-3) * xx +
                            2.27265548208155028766e-1) * xx + 2.00000000000000000009e0;
    const vec<double> y = 1.0 + 2.0 * px / (qx - px);
    const ivec<double> bits = (n + 1023) << 52;
    vec<double> scale;
    __builtin_memcpy(&scale, &bits, sizeof scale);
    return select<double>(under, vec<double>{}, y * scale);
}

// Sensitivity rows of a pair: `rows` rows of nv = nu rounded up to whole vectors (padding lanes hold
// values for mu = 1, sigma = 0, which no kernel reads).
template <class T>
struct Radial {
    static constexpr int kPairs = 64;  // pairs per block: their vector chains overlap in the core
    const T* inv_mu;                   // (nv,) 1 / mu, padded with 1
    const T* sigma;                    // (nv,) padded with 0
    int nv;
    T k, rc;

    // Rows for `count` <= kPairs pairs at distances r[q], pair q's at out[q]: s only (1), with the first
    // partials (4), with all (10).
    void operator()(const T* r, int count, int rows, T* const* out) const {
        constexpr int W = kWidth<T>;
        T inv_r[kPairs], phi[kPairs], dphi[kPairs], ddphi[kPairs];
        for (int q = 0; q < count; ++q) {
            const T angle = r[q] * k;
            const bool inside = r[q] <= rc;
            const T cosine = cos_(angle), sine = rows > 1 ? sin_(angle) : T(0);
            inv_r[q] = T(1) / r[q];
            phi[q] = inside ? cosine * cosine : T(0);
            dphi[q] = inside ? -k * T(2) * sine * cosine : T(0);                       // -k sin(2 angle)
            ddphi[q] = inside ? T(-2) * k * k * (cosine - sine) * (cosine + sine) : T(0);  // -2 k^2 cos(2 angle)
        }
        for (int n0 = 0; n0 < nv; n0 += W) {
            const vec<T> im = load(inv_mu + n0), sg = load(sigma + n0), sig2 = sg * sg;
            for (int q = 0; q < count; ++q) {
                T* o = out[q] + n0;
                const T ir = inv_r[q];
                const vec<T> d = ir - im;
                const vec<T> x = d * sg;
                const vec<T> gauss = exp_lanes(T(-0.5) * x * x);
                store(o + S * nv, gauss * phi[q]);
                if (rows == 1) continue;
                const vec<T> g_r = gauss * sig2 * d * ir * ir;
                const vec<T> g_mu = -gauss * sig2 * d * im * im;
                const vec<T> g_sigma = -gauss * sg * d * d;
                store(o + S_R * nv, g_r * phi[q] + gauss * dphi[q]);
                store(o + S_MU * nv, g_mu * phi[q]);
                store(o + S_SIGMA * nv, g_sigma * phi[q]);
                if (rows == 4) continue;
                const vec<T> sd2 = sig2 * d * d;
                const vec<T> g_rr = gauss * sig2 * ir * ir * ir * ((sd2 - T(1)) * ir - T(2) * d);
                const vec<T> g_rmu = gauss * sig2 * (ir * im) * (ir * im) * (T(1) - sd2);
                const vec<T> g_rsigma = gauss * sg * d * ir * ir * (T(2) - sd2);
                store(o + S_RR * nv, g_rr * phi[q] + T(2) * g_r * dphi[q] + gauss * ddphi[q]);
                store(o + S_RMU * nv, g_rmu * phi[q] + g_mu * dphi[q]);
                store(o + S_RSIGMA * nv, g_rsigma * phi[q] + g_sigma * dphi[q]);
                store(o + S_MUMU * nv, gauss * sig2 * im * im * im * ((sd2 - T(1)) * im + T(2) * d) * phi[q]);
                store(o + S_MUSIGMA * nv, gauss * sg * d * im * im * (sd2 - T(2)) * phi[q]);
                store(o + S_SIGMASIGMA * nv, gauss * d * d * (sd2 - T(1)) * phi[q]);
            }
        }
    }
};

// ---------------------------------------------------------------------------------------------------
// The interaction: one call's inputs, workspaces and passes.
// ---------------------------------------------------------------------------------------------------
template <class T, int LMAX>
struct Interaction {
    static constexpr int C = components(LMAX);
    const hipnnts_cpu_inputs& in;
    const hipnnts_cpu_context* par;
    const T* Y;
    const T* coord;
    const T* lam1;
    const T* lam2;
    index_t N, P;
    int nu, F;
    int nv;  // the stride of a sensitivity row: nu rounded up to whole vectors
    T eps;
    Buffer<T> padded;  // 1 / mu and sigma, nv each
    Radial<T> radial;

    Interaction(const hipnnts_cpu_inputs& in, const hipnnts_cpu_context* par)
        : in(in), par(par), Y(static_cast<const T*>(in.Y)), coord(static_cast<const T*>(in.coord)),
          lam1(static_cast<const T*>(in.lam1)), lam2(static_cast<const T*>(in.lam2)), N(in.n_atoms), P(in.n_pairs),
          nu(in.nu), F(in.features), nv((in.nu + kWidth<T> - 1) / kWidth<T> * kWidth<T>), eps(T(in.cusp_reg)),
          padded(2 * nv) {
        const T* mu = static_cast<const T*>(in.mu);
        const T* sigma = static_cast<const T*>(in.sigma);
        if (padded.ok())
            for (int n = 0; n < nv; ++n) {
                padded[n] = n < nu ? T(1) / mu[n] : T(1);
                padded[nv + n] = n < nu ? sigma[n] : T(0);
            }
        radial = Radial<T>{padded, padded + nv, nv, T(3.14159265358979323846 / (2.0 * in.cutoff)), T(in.cutoff)};
    }

    double feature_work() const { return double(P) * nu * F; }

    // The atoms [begin, end) one run of a level's passes covers, and the context its passes run in.
    struct Span {
        const hipnnts_cpu_context* par;
        index_t begin, end;
    };

    // Index memory for find_tiles.
    index_t tile_memory_size() const { return P + 3 * N + 2; }

    // Splits the atoms into tiles, the smallest atom ranges that no pair leaves (molecules, for a batch
    // of molecules): their boundaries at mem + P + N (n + 1 values), then the receiver-segment start of
    // each boundary (n + 1 values). Returns n.
    index_t find_tiles(index_t* mem) const {
        index_t* second_of = mem;
        index_t* reach = mem + P;
        index_t* tiles = reach + N;
        for (index_t j = 0; j < N; ++j)
            for (index_t k = in.sender_ptr[j]; k < in.sender_ptr[j + 1]; ++k) second_of[in.sender_order[k]] = j;
        for (index_t a = 0; a < N; ++a) reach[a] = a;
        for (index_t i = 0; i < N; ++i)
            for (index_t k = in.receiver_ptr[i]; k < in.receiver_ptr[i + 1]; ++k) {
                const index_t j = second_of[in.receiver_order[k]];
                const index_t low = i < j ? i : j, high = i < j ? j : i;
                reach[low] = reach[low] > high ? reach[low] : high;
            }
        index_t n = 0, running = -1;
        tiles[0] = 0;
        for (index_t a = 0; a < N; ++a) {
            running = reach[a] > running ? reach[a] : running;
            if (running == a) tiles[++n] = a + 1;
        }
        index_t* tile_pairs = tiles + n + 1;
        for (index_t t = 0; t <= n; ++t) tile_pairs[t] = in.receiver_ptr[tiles[t]];
        return n;
    }

    // Runs level(span) once over all atoms, its passes spreading their loops over the threads; or, when
    // there are enough tiles (find_tiles), once per tile, the tiles spread over the threads and each
    // tile's passes serial: a tile's per-pair rows then stay in cache from one pass to the next.
    // Either way every output element is computed the same way.
    template <class Level>
    void run_level(index_t* tile_memory, double work, Level&& level) const {
        const index_t n_tiles = find_tiles(tile_memory);
        if (n_tiles > 1 && (par->threads == 1 || n_tiles >= 4 * par->threads)) {
            const index_t* tiles = tile_memory + P + N;
            auto body = [&](index_t t0, index_t t1) {
                for (index_t t = t0; t < t1; ++t) level(Span{&kSerial, tiles[t], tiles[t + 1]});
            };
            parallel(par, 0, n_tiles, tiles + n_tiles + 1, work, body);
        } else {
            level(Span{par, 0, N});
        }
    }

    // s and its partials (`rows` rows of nv) for the pairs of the span's receivers.
    void radial_pass(const Span& at, int rows, T* out) const {
        constexpr int B = Radial<T>::kPairs;
        auto body = [&](index_t begin, index_t end) {
            T r[B];
            T* to[B];
            const index_t last = in.receiver_ptr[end];
            for (index_t k0 = in.receiver_ptr[begin]; k0 < last; k0 += B) {
                const int count = static_cast<int>(last - k0 < B ? last - k0 : B);
                for (int q = 0; q < count; ++q) {
                    const index_t p = in.receiver_order[k0 + q];
                    r[q] = Pair<T, 0>(coord, p).r;
                    to[q] = out + p * rows * nv;
                }
                radial(r, count, rows, to);
            }
        };
        // an exp and a few products per value
        parallel(at.par, at.begin, at.end, in.receiver_ptr, double(P) * nu * rows * 20, body);
    }

    // Sender j's group of pairs: their ids and their rows of a per-pair array.
    const index_t* group(index_t j) const { return in.sender_order + in.sender_ptr[j]; }
    int group_size(index_t j) const { return static_cast<int>(in.sender_ptr[j + 1] - in.sender_ptr[j]); }
    Rows<const T> in_rows(const T* base, index_t stride, index_t j) const { return {base, stride, group(j)}; }
    Rows<T> out_rows(T* base, index_t stride, index_t j) const { return {base, stride, group(j)}; }

    // Per sender: t_p = sum_nu s_nu(r_p) Y[j, nu] for j's pairs (s: sens_rows rows of nv per pair).
    void sender_contract(const Span& at, const T* sens, int sens_rows, T* t) const {
        auto body = [&](index_t begin, index_t end) {
            for (index_t j = begin; j < end; ++j)
                pairs_times<false>(in_rows(sens, sens_rows * nv, j), group_size(j), Y + j * nu * F, nu, F, out_rows(t, F, j));
        };
        parallel(at.par, at.begin, at.end, in.sender_ptr, feature_work(), body);
    }

    // m[c][f] = sum over receiver i's pairs of A_c t_p[f].
    void contract_receiver(index_t i, const T* t, T* m) const {
        zero(m, C * F);
        for (index_t k = in.receiver_ptr[i]; k < in.receiver_ptr[i + 1]; ++k) {
            const index_t p = in.receiver_order[k];
            const Pair<T, LMAX> pair(coord, p);
            const T* tp = t + p * F;
            for (int c = 0; c < C; ++c) {
                const T a = pair.A[c];
                T* mc = m + c * F;
                for (int f = 0; f < F; ++f) mc[f] += a * tp[f];
            }
        }
    }

    void a1_a2(const T* m, int f, T& a1, T& a2) const {
        if (LMAX >= 1) a1 = sqrt_(m[F + f] * m[F + f] + m[2 * F + f] * m[2 * F + f] + m[3 * F + f] * m[3 * F + f] + eps);
        if (LMAX >= 2) {
            T q2 = T(0);
            for (int c = 4; c < 9; ++c) q2 += m[c * F + f] * m[c * F + f];
            a2 = sqrt_(T(2) * (q2 + m[4 * F + f] * m[7 * F + f]) + eps);
        }
    }

    const char* forward(T* out) const {
        T *sens, *t;
        index_t* tile_memory;
        if (!carve(par, [&](Carver& c) {
                sens = c.take<T>(P * nv), t = c.take<T>(P * F), tile_memory = c.take<index_t>(tile_memory_size());
            }))
            return kOutOfMemory;
        bool failed = false;
        run_level(tile_memory, 3 * feature_work(), [&](const Span& at) {
            radial_pass(at, 1, sens);
            sender_contract(at, sens, 1, t);
            auto body = [&](index_t begin, index_t end) {
                Buffer<T> m(C * F);
                if (!m.ok()) {
                    raise_flag(failed);
                    return;
                }
                for (index_t i = begin; i < end; ++i) {
                    contract_receiver(i, t, m);
                    T* o = out + i * F;
                    for (int f = 0; f < F; ++f) {
                        T a1 = T(0), a2 = T(0);
                        a1_a2(m, f, a1, a2);
                        T value = m[f];
                        if (LMAX >= 1) value += lam1[f] * a1;
                        if (LMAX >= 2) value += lam2[f] * a2;
                        o[f] = value;
                    }
                }
            };
            parallel(at.par, at.begin, at.end, in.receiver_ptr, feature_work(), body);
        });
        return failed ? kOutOfMemory : nullptr;
    }

    // Per receiver: m, dm = d out / d m (N, C, F), and for its pairs dt_p = sum_c A_c dm_c and
    // d(factors)_p = t_p . dm_c. `m_all`, `dm_all` keep m and dm (double backward), else lam_rows gets
    // g a1 and g a2 per receiver (2 x (N, F)). Sets `failed` if out of memory.
    void receiver_backward(const Span& at, bool& failed, const T* g, const T* t, T* dt, T* dfac, T* m_all, T* dm_all,
                           T* lam_rows) const {
        auto body = [&](index_t begin, index_t end) {
            Buffer<T> own(m_all ? 0 : 2 * C * F);
            if (!own.ok()) {
                raise_flag(failed);
                return;
            }
            for (index_t i = begin; i < end; ++i) {
                T* m = m_all ? m_all + i * C * F : own.data;
                T* dm = dm_all ? dm_all + i * C * F : own.data + C * F;
                contract_receiver(i, t, m);
                const T* gi = g + i * F;
                for (int f = 0; f < F; ++f) {
                    dm[f] = gi[f];
                    T a1 = T(0), a2 = T(0);
                    a1_a2(m, f, a1, a2);
                    if (LMAX >= 1) {
                        const T w = gi[f] * lam1[f] / a1;
                        for (int c = 1; c < 4; ++c) dm[c * F + f] = w * m[c * F + f];
                        if (lam_rows) lam_rows[i * F + f] = gi[f] * a1;
                    }
                    if (LMAX >= 2) {
                        const T w = gi[f] * lam2[f] / a2;
                        quad_metric(m + 4 * F + f, F, dm + 4 * F + f, F);
                        for (int c = 4; c < 9; ++c) dm[c * F + f] *= w;
                        if (lam_rows) lam_rows[(N + i) * F + f] = gi[f] * a2;
                    }
                }
                for (index_t k = in.receiver_ptr[i]; k < in.receiver_ptr[i + 1]; ++k) {
                    const index_t p = in.receiver_order[k];
                    const Pair<T, LMAX> pair(coord, p);
                    combine<false>(pair.A, dm, C, F, F, dt + p * F);
                    dots<false>(t + p * F, dm, C, F, dfac + p * C);
                }
            }
        };
        parallel(at.par, at.begin, at.end, in.receiver_ptr, feature_work() * 2 * C / nu + 1, body);
    }

    // The gradients of mu, sigma and the scales, each summed over atoms in atom order.
    void reduce_parameters(const T* mu_rows, const T* sigma_rows, const T* lam_rows,
                           const hipnnts_cpu_gradients& out) const {
        sum_rows(mu_rows, N, nu, static_cast<T*>(out.grad_mu));
        sum_rows(sigma_rows, N, nu, static_cast<T*>(out.grad_sigma));
        if (LMAX >= 1) sum_rows(lam_rows, N, F, static_cast<T*>(out.grad_lam1));
        if (LMAX >= 2) sum_rows(lam_rows + N * F, N, F, static_cast<T*>(out.grad_lam2));
    }

    const char* backward(const T* g, const hipnnts_cpu_gradients& out) const {
        T *sens, *t, *dt, *dfac, *mu_rows, *lam_rows;
        index_t* tile_memory;
        if (!carve(par, [&](Carver& c) {
                sens = c.take<T>(P * 4 * nv), t = c.take<T>(P * F), dt = c.take<T>(P * F), dfac = c.take<T>(P * C);
                mu_rows = c.take<T>(2 * N * nu), lam_rows = c.take<T>(2 * N * F);
                tile_memory = c.take<index_t>(tile_memory_size());
            }))
            return kOutOfMemory;
        T* grad_Y = static_cast<T*>(out.grad_Y);
        T* grad_coord = static_cast<T*>(out.grad_coord);
        bool failed = false;
        run_level(tile_memory, 5 * feature_work(), [&](const Span& at) {
            radial_pass(at, 4, sens);
            sender_contract(at, sens, 4, t);
            receiver_backward(at, failed, g, t, dt, dfac, nullptr, nullptr, lam_rows);
            auto body = [&](index_t begin, index_t end) {
                Buffer<T> ds(largest_group(in.sender_ptr, begin, end) * nu);
                if (!ds.ok()) {
                    raise_flag(failed);
                    return;
                }
                for (index_t j = begin; j < end; ++j) {
                    const T* Yj = Y + j * nu * F;
                    const int k = group_size(j);
                    T* mu_row = mu_rows + j * nu;
                    T* sigma_row = mu_rows + (N + j) * nu;
                    // ds_p = dt_p Y[j]^T; grad_Y[j] = sum_p s_p dt_p^T
                    pair_dots<false>(in_rows(dt, F, j), k, Yj, nu, F, Rows<T>{ds, nu, nullptr});
                    outer_sum<false>(in_rows(sens, 4 * nv, j), k, in_rows(dt, F, j), nu, F, grad_Y + j * nu * F);
                    zero(mu_row, nu);
                    zero(sigma_row, nu);
                    for (int q = 0; q < k; ++q) {
                        const index_t p = group(j)[q];
                        const Pair<T, LMAX> pair(coord, p);
                        const T* s = sens + p * 4 * nv;
                        const T* dsq = ds + q * nu;
                        T d_dist = T(0);
                        for (int n = 0; n < nu; ++n) {
                            d_dist += dsq[n] * s[S_R * nv + n];
                            mu_row[n] += dsq[n] * s[S_MU * nv + n];
                            sigma_row[n] += dsq[n] * s[S_SIGMA * nv + n];
                        }
                        T du[3];
                        pair.angular_backward(dfac + p * C, du);
                        pair.coordinate_gradient(du, d_dist, grad_coord + 3 * p);
                    }
                }
            };
            parallel(at.par, at.begin, at.end, in.sender_ptr, 2 * feature_work(), body);
        });
        if (failed) return kOutOfMemory;
        reduce_parameters(mu_rows, mu_rows + N * nu, lam_rows, out);
        return nullptr;
    }

    const char* double_backward(const hipnnts_cpu_cotangents& v, const T* g, const hipnnts_cpu_gradients& out) const {
        const T* v_Y = static_cast<const T*>(v.v_Y);
        const T* v_coord = static_cast<const T*>(v.v_coord);
        const T* v_mu = static_cast<const T*>(v.v_mu);
        const T* v_sigma = static_cast<const T*>(v.v_sigma);
        const T* v_lam1 = static_cast<const T*>(v.v_lam1);
        const T* v_lam2 = static_cast<const T*>(v.v_lam2);
        T *sens, *t, *dt, *bar_dt, *bar_t, *dfac, *bar_df, *bar_fac, *bar_geo, *bar_s, *m_all, *dm_all, *mu_rows,
            *lam_rows;
        index_t* tile_memory;
        if (!carve(par, [&](Carver& c) {
                sens = c.take<T>(P * 10 * nv), t = c.take<T>(P * F), dt = c.take<T>(P * F);
                bar_dt = c.take<T>(P * F), bar_t = c.take<T>(P * F), dfac = c.take<T>(P * C);
                bar_df = c.take<T>(P * C), bar_fac = c.take<T>(P * C), bar_geo = c.take<T>(P * 4);
                bar_s = c.take<T>(P * nu), m_all = c.take<T>(N * C * F), dm_all = c.take<T>(N * C * F);
                mu_rows = c.take<T>(2 * N * nu), lam_rows = c.take<T>(2 * N * F);
                tile_memory = c.take<index_t>(tile_memory_size());
            }))
            return kOutOfMemory;
        T* grad_Y = static_cast<T*>(out.grad_Y);
        T* grad_coord = static_cast<T*>(out.grad_coord);
        T* grad_g = static_cast<T*>(out.grad_grad_out);
        bool failed = false;
        run_level(tile_memory, 12 * feature_work(), [&](const Span& at) {
            radial_pass(at, 10, sens);
            sender_contract(at, sens, 10, t);
            receiver_backward(at, failed, g, t, dt, dfac, m_all, dm_all, nullptr);

            // Senders: reverse the backward's geometry, sensitivity and radial steps. Per pair: bar_dt,
            // bar_s (from v_Y), bar_df (the cotangent of d(factors)), and bar_u, bar_r so far (bar_geo).
            auto reverse_senders = [&](index_t begin, index_t end) {
                const int most = largest_group(in.sender_ptr, begin, end);
                Buffer<T> scratch(2 * most * nu);
                if (!scratch.ok()) {
                    raise_flag(failed);
                    return;
                }
                T* ds = scratch.data;
                T* bar_ds = scratch.data + most * nu;
                for (index_t j = begin; j < end; ++j) {
                    const T* Yj = Y + j * nu * F;
                    const T* vYj = v_Y ? v_Y + j * nu * F : nullptr;
                    const int k = group_size(j);
                    T* mu_row = mu_rows + j * nu;
                    T* sigma_row = mu_rows + (N + j) * nu;
                    zero(mu_row, nu);
                    zero(sigma_row, nu);
                    pair_dots<false>(in_rows(dt, F, j), k, Yj, nu, F, Rows<T>{ds, nu, nullptr});
                    for (int q = 0; q < k; ++q) {
                        const index_t p = group(j)[q];
                        const Pair<T, LMAX> pair(coord, p);
                        const T* s = sens + p * 10 * nv;
                        const T* df = dfac + p * C;
                        const T* dsq = ds + q * nu;
                        T d_dist = T(0);
                        for (int n = 0; n < nu; ++n) d_dist += dsq[n] * s[S_R * nv + n];
                        T du[3];
                        pair.angular_backward(df, du);
                        // geometry: grad_coord = (du - (u.du) u) / r + d_dist u
                        const T* vc = v_coord + 3 * p;
                        const T v_radial = vc[0] * pair.u[0] + vc[1] * pair.u[1] + vc[2] * pair.u[2];
                        const T u_du = du[0] * pair.u[0] + du[1] * pair.u[1] + du[2] * pair.u[2];
                        T bar_du[3];
                        T* bar_u = bar_geo + 4 * p;
                        T bar_r = T(0);
                        for (int x = 0; x < 3; ++x) {
                            bar_du[x] = (vc[x] - v_radial * pair.u[x]) / pair.r;
                            bar_u[x] = (-u_du * vc[x] - v_radial * du[x]) / pair.r + d_dist * vc[x];
                            bar_r -= vc[x] * (du[x] - u_du * pair.u[x]);
                        }
                        bar_r /= pair.r * pair.r;
                        // angular: du = J_A(u)^T d(factors)
                        pair.angular_jvp(bar_du, bar_df + p * C);
                        if (LMAX >= 2) Pair<T, LMAX>::quad_transpose(bar_du, df + 4, bar_u);
                        // sensitivities: d_dist = ds . s_r; grad_mu, grad_sigma = sums of ds s_mu, ds s_sigma
                        T* bdsq = bar_ds + q * nu;
                        for (int n = 0; n < nu; ++n) {
                            const T vm = v_mu[n], vs = v_sigma[n];
                            bdsq[n] = v_radial * s[S_R * nv + n] + vm * s[S_MU * nv + n] + vs * s[S_SIGMA * nv + n];
                            const T second_r = v_radial * s[S_RR * nv + n] + vm * s[S_RMU * nv + n] + vs * s[S_RSIGMA * nv + n];
                            const T second_mu =
                                v_radial * s[S_RMU * nv + n] + vm * s[S_MUMU * nv + n] + vs * s[S_MUSIGMA * nv + n];
                            const T second_sigma = v_radial * s[S_RSIGMA * nv + n] + vm * s[S_MUSIGMA * nv + n] +
                                                   vs * s[S_SIGMASIGMA * nv + n];
                            bar_r += dsq[n] * second_r;
                            mu_row[n] += dsq[n] * second_mu;
                            sigma_row[n] += dsq[n] * second_sigma;
                        }
                        bar_u[3] = bar_r;
                    }
                    // radial: grad_Y = sum_p bar_ds dt^T; bar_dt = bar_ds Y (+ s v_Y); bar_s = dt . v_Y
                    const Rows<const T> bar_ds_rows{bar_ds, nu, nullptr};
                    outer_sum<false>(bar_ds_rows, k, in_rows(dt, F, j), nu, F, grad_Y + j * nu * F);
                    pairs_times<false>(bar_ds_rows, k, Yj, nu, F, out_rows(bar_dt, F, j));
                    if (vYj) {
                        pairs_times<true>(in_rows(sens, 10 * nv, j), k, vYj, nu, F, out_rows(bar_dt, F, j));
                        pair_dots<false>(in_rows(dt, F, j), k, vYj, nu, F, out_rows(bar_s, nu, j));
                    } else {
                        for (int q = 0; q < k; ++q) zero(bar_s + group(j)[q] * nu, nu);
                    }
                }
            };
            parallel(at.par, at.begin, at.end, in.sender_ptr, 4 * feature_work(), reverse_senders);

            // Receivers: bar_dm, the invariants in reverse (grad_g, the scales, bar_m), then per pair the
            // cotangents of the factors and of t.
            auto reverse_receivers = [&](index_t begin, index_t end) {
                Buffer<T> scratch(2 * C * F + 2 * C);
                if (!scratch.ok()) {
                    raise_flag(failed);
                    return;
                }
                T* bar_dm = scratch.data;
                T* bar_m = scratch.data + C * F;
                T* weights = scratch.data + 2 * C * F;
                for (index_t i = begin; i < end; ++i) {
                    const T* m = m_all + i * C * F;
                    const T* dm = dm_all + i * C * F;
                    const T* gi = g + i * F;
                    zero(bar_dm, C * F);
                    for (index_t k = in.receiver_ptr[i]; k < in.receiver_ptr[i + 1]; ++k) {
                        const index_t p = in.receiver_order[k];
                        const Pair<T, LMAX> pair(coord, p);
                        const T* bdt = bar_dt + p * F;
                        const T* tp = t + p * F;
                        const T* bdf = bar_df + p * C;
                        for (int c = 0; c < C; ++c) {
                            const T a = pair.A[c], b = bdf[c];
                            T* row = bar_dm + c * F;
                            for (int f = 0; f < F; ++f) row[f] += a * bdt[f] + b * tp[f];
                        }
                    }
                    T* gg = grad_g + i * F;
                    for (int f = 0; f < F; ++f) {
                        T a1 = T(0), a2 = T(0);
                        a1_a2(m, f, a1, a2);
                        T grad = bar_dm[f];
                        bar_m[f] = T(0);
                        if (LMAX >= 1) {
                            T proj = T(0);
                            for (int c = 1; c < 4; ++c) proj += bar_dm[c * F + f] * m[c * F + f];
                            grad += lam1[f] * proj / a1;
                            lam_rows[i * F + f] = gi[f] * proj / a1;
                            T coef = -gi[f] * lam1[f] * proj / (a1 * a1 * a1);
                            if (v_lam1) {
                                grad += v_lam1[f] * a1;
                                coef += v_lam1[f] * gi[f] / a1;
                            }
                            const T w = gi[f] * lam1[f] / a1;
                            for (int c = 1; c < 4; ++c) bar_m[c * F + f] = w * bar_dm[c * F + f] + coef * m[c * F + f];
                        }
                        if (LMAX >= 2) {
                            T km[5], kb[5];
                            quad_metric(m + 4 * F + f, F, km, 1);
                            quad_metric(bar_dm + 4 * F + f, F, kb, 1);
                            T proj = T(0);
                            for (int c = 0; c < 5; ++c) proj += bar_dm[(4 + c) * F + f] * km[c];
                            grad += lam2[f] * proj / a2;
                            lam_rows[(N + i) * F + f] = gi[f] * proj / a2;
                            T coef = -gi[f] * lam2[f] * proj / (a2 * a2 * a2);
                            if (v_lam2) {
                                grad += v_lam2[f] * a2;
                                coef += v_lam2[f] * gi[f] / a2;
                            }
                            const T w = gi[f] * lam2[f] / a2;
                            for (int c = 0; c < 5; ++c) bar_m[(4 + c) * F + f] = w * kb[c] + coef * km[c];
                        }
                        gg[f] = grad;
                    }
                    for (index_t k = in.receiver_ptr[i]; k < in.receiver_ptr[i + 1]; ++k) {
                        const index_t p = in.receiver_order[k];
                        const Pair<T, LMAX> pair(coord, p);
                        const T* bdt = bar_dt + p * F;
                        const T* tp = t + p * F;
                        T* bf = bar_fac + p * C;
                        for (int c = 0; c < C; ++c) bf[c] = dot(bdt, dm + c * F, F) + dot(tp, bar_m + c * F, F);
                        for (int c = 0; c < C; ++c) {
                            weights[c] = bar_df[p * C + c];
                            weights[C + c] = pair.A[c];
                        }
                        combine<false>(weights, dm, C, F, F, bar_t + p * F);
                        combine<true>(weights + C, bar_m, C, F, F, bar_t + p * F);
                    }
                }
            };
            parallel(at.par, at.begin, at.end, in.receiver_ptr, feature_work() * 6 * C / nu + 1, reverse_receivers);

            // Senders again: push bar_t and bar_factors back through the forward.
            auto forward_senders = [&](index_t begin, index_t end) {
                for (index_t j = begin; j < end; ++j) {
                    const int k = group_size(j);
                    T* mu_row = mu_rows + j * nu;
                    T* sigma_row = mu_rows + (N + j) * nu;
                    pair_dots<true>(in_rows(bar_t, F, j), k, Y + j * nu * F, nu, F, out_rows(bar_s, nu, j));
                    outer_sum<true>(in_rows(sens, 10 * nv, j), k, in_rows(bar_t, F, j), nu, F, grad_Y + j * nu * F);
                    for (int q = 0; q < k; ++q) {
                        const index_t p = group(j)[q];
                        const Pair<T, LMAX> pair(coord, p);
                        const T* s = sens + p * 10 * nv;
                        const T* bs = bar_s + p * nu;
                        const T* bar_u = bar_geo + 4 * p;
                        T bar_r = bar_u[3];
                        T du[3];
                        pair.angular_backward(bar_fac + p * C, du);
                        for (int x = 0; x < 3; ++x) du[x] += bar_u[x];
                        for (int n = 0; n < nu; ++n) {
                            bar_r += bs[n] * s[S_R * nv + n];
                            mu_row[n] += bs[n] * s[S_MU * nv + n];
                            sigma_row[n] += bs[n] * s[S_SIGMA * nv + n];
                        }
                        pair.coordinate_gradient(du, bar_r, grad_coord + 3 * p);
                    }
                }
            };
            parallel(at.par, at.begin, at.end, in.sender_ptr, 2 * feature_work(), forward_senders);
        });
        if (failed) return kOutOfMemory;
        reduce_parameters(mu_rows, mu_rows + N * nu, lam_rows, out);
        return nullptr;
    }
};

// The segments cover every pair exactly when every index lies in [0, N) (searchsorted bounds): the
// kernels' own check, which also holds when the ops' value checks are off.
inline const char* check_segments(const hipnnts_cpu_inputs* in) {
    if (in->receiver_ptr[0] != 0 || in->receiver_ptr[in->n_atoms] != in->n_pairs)
        return "pair_first holds atom indices outside [0, n_atoms)";
    if (in->sender_ptr[0] != 0 || in->sender_ptr[in->n_atoms] != in->n_pairs)
        return "pair_second holds atom indices outside [0, n_atoms)";
    return nullptr;
}

template <class T, int LMAX>
const char* forward_as(const hipnnts_cpu_inputs* in, void* out, const hipnnts_cpu_context* par) {
    if (const char* error = check_segments(in)) return error;
    const Interaction<T, LMAX> op(*in, par);
    if (!op.padded.ok()) return kOutOfMemory;
    return op.forward(static_cast<T*>(out));
}

template <class T, int LMAX>
const char* backward_as(const hipnnts_cpu_inputs* in, const void* g, const hipnnts_cpu_gradients* out,
                        const hipnnts_cpu_context* par) {
    if (const char* error = check_segments(in)) return error;
    const Interaction<T, LMAX> op(*in, par);
    if (!op.padded.ok()) return kOutOfMemory;
    return op.backward(static_cast<const T*>(g), *out);
}

template <class T, int LMAX>
const char* double_backward_as(const hipnnts_cpu_inputs* in, const hipnnts_cpu_cotangents* v, const void* g,
                               const hipnnts_cpu_gradients* out, const hipnnts_cpu_context* par) {
    if (const char* error = check_segments(in)) return error;
    const Interaction<T, LMAX> op(*in, par);
    if (!op.padded.ok()) return kOutOfMemory;
    return op.double_backward(*v, static_cast<const T*>(g), *out);
}

// The call for the inputs' dtype and lmax.
#define HIPNNTS_CPU_DISPATCH(in, function, ...)                                                          \
    ((in)->lmax == 0   ? ((in)->is_double ? function<double, 0>(__VA_ARGS__) : function<float, 0>(__VA_ARGS__)) \
     : (in)->lmax == 1 ? ((in)->is_double ? function<double, 1>(__VA_ARGS__) : function<float, 1>(__VA_ARGS__)) \
     : (in)->lmax == 2 ? ((in)->is_double ? function<double, 2>(__VA_ARGS__) : function<float, 2>(__VA_ARGS__)) \
                       : "lmax must be 0, 1 or 2")

const char* interaction_forward(const hipnnts_cpu_inputs* in, void* out, const hipnnts_cpu_context* par) {
    return HIPNNTS_CPU_DISPATCH(in, forward_as, in, out, par);
}

const char* interaction_backward(const hipnnts_cpu_inputs* in, const void* g, const hipnnts_cpu_gradients* out,
                                 const hipnnts_cpu_context* par) {
    return HIPNNTS_CPU_DISPATCH(in, backward_as, in, g, out, par);
}

const char* interaction_double_backward(const hipnnts_cpu_inputs* in, const hipnnts_cpu_cotangents* v,
                                        const void* g, const hipnnts_cpu_gradients* out,
                                        const hipnnts_cpu_context* par) {
    return HIPNNTS_CPU_DISPATCH(in, double_backward_as, in, v, g, out, par);
}

// ---------------------------------------------------------------------------------------------------
// The envsum family (SPEC section 8); `out` arrives zeroed where it is accumulated.
// ---------------------------------------------------------------------------------------------------
// The family's pairs: segments over n_atoms covering all of them, the other atom in [0, n_atoms).
inline const char* check_family(const hipnnts_cpu_family* a, const char* segment_error, const char* atom_error) {
    if (a->ptr[0] != 0 || a->ptr[a->n_atoms] != a->n_pairs) return segment_error;
    bool bad = false;
    for (index_t p = 0; p < a->n_pairs; ++p) bad |= a->atom[p] < 0 || a->atom[p] >= a->n_atoms;
    return bad ? atom_error : nullptr;
}

template <class T>
const char* envsum_as(const hipnnts_cpu_family* a, const hipnnts_cpu_context* par) {
    const T* sens = static_cast<const T*>(a->a);
    const T* feat = static_cast<const T*>(a->b);
    T* env = static_cast<T*>(a->out);
    const int nu = a->nu, F = a->features;
    bool failed = false;
    // per receiver: env[i] = S^T X over its pairs (S: their sens rows, X: their other atoms' feat rows)
    auto body = [&](index_t begin, index_t end) {
        Buffer<index_t> others(largest_group(a->ptr, begin, end));
        if (!others.ok()) {
            raise_flag(failed);
            return;
        }
        for (index_t i = begin; i < end; ++i) {
            const index_t* pairs = a->order + a->ptr[i];
            const int k = static_cast<int>(a->ptr[i + 1] - a->ptr[i]);
            for (int q = 0; q < k; ++q) others[q] = a->atom[pairs[q]];
            outer_sum<false>(Rows<const T>{sens, nu, pairs}, k, Rows<const T>{feat, F, others}, nu, F, env + i * nu * F);
        }
    };
    parallel(par, 0, a->n_atoms, a->ptr, double(a->n_pairs) * nu * F, body);
    return failed ? kOutOfMemory : nullptr;
}

template <class T>
const char* sensesum_as(const hipnnts_cpu_family* a, const hipnnts_cpu_context* par) {
    const T* env = static_cast<const T*>(a->a);
    const T* feat = static_cast<const T*>(a->b);
    T* sens = static_cast<T*>(a->out);
    const int nu = a->nu, F = a->features;
    auto body = [&](index_t begin, index_t end) {
        for (index_t i = begin; i < end; ++i)
            for (index_t k = a->ptr[i]; k < a->ptr[i + 1]; ++k) {
                const index_t p = a->order[k];
                dots<false>(feat + a->atom[p] * F, env + i * nu * F, nu, F, sens + p * nu);
            }
    };
    parallel(par, 0, a->n_atoms, a->ptr, double(a->n_pairs) * nu * F, body);
    return nullptr;
}

template <class T>
const char* featsum_as(const hipnnts_cpu_family* a, const hipnnts_cpu_context* par) {
    const T* env = static_cast<const T*>(a->a);
    const T* sens = static_cast<const T*>(a->b);
    T* feat = static_cast<T*>(a->out);
    const int nu = a->nu, F = a->features;
    auto body = [&](index_t begin, index_t end) {
        for (index_t j = begin; j < end; ++j)
            for (index_t k = a->ptr[j]; k < a->ptr[j + 1]; ++k) {
                const index_t p = a->order[k];
                combine<true>(sens + p * nu, env + a->atom[p] * nu * F, nu, F, F, feat + j * F);
            }
    };
    parallel(par, 0, a->n_atoms, a->ptr, double(a->n_pairs) * nu * F, body);
    return nullptr;
}

constexpr const char* kFirst = "pair_first holds atom indices outside [0, n_atoms)";
constexpr const char* kSecond = "pair_second holds atom indices outside [0, n_atoms)";

const char* envsum(const hipnnts_cpu_family* a, const hipnnts_cpu_context* par) {
    if (const char* error = check_family(a, kFirst, kSecond)) return error;
    return a->is_double ? envsum_as<double>(a, par) : envsum_as<float>(a, par);
}
const char* sensesum(const hipnnts_cpu_family* a, const hipnnts_cpu_context* par) {
    if (const char* error = check_family(a, kFirst, kSecond)) return error;
    return a->is_double ? sensesum_as<double>(a, par) : sensesum_as<float>(a, par);
}
const char* featsum(const hipnnts_cpu_family* a, const hipnnts_cpu_context* par) {
    if (const char* error = check_family(a, kSecond, kFirst)) return error;
    return a->is_double ? featsum_as<double>(a, par) : featsum_as<float>(a, par);
}

}  // namespace

extern "C" const hipnnts_cpu_table HIPNNTS_CPU_TABLE = {
    HIPNNTS_CPU_TABLE_NAME, interaction_forward, interaction_backward, interaction_double_backward,
    envsum, sensesum, featsum,
};
