// Fused tensor-sensitivity interaction: what its kernels (split.cuh) share: the inputs' view, the
// cotangents' view, the invariants and their first and second derivatives, and the shared-memory
// carver. See hipnnts_kernels/reference.py for the same math, docs/kernels.md for the kernels.
#pragma once

#include "geometry.cuh"
#include "launch.h"

namespace hipnnts {

// What the kernels read: the inputs with the pair segments unpacked and the constants in the
// kernel's precision.
template <class T>
struct InteractionView {
    gptr<const T> Y;              // (N, nu, F)
    gptr<const T> coord;          // (P, 3)
    gptr<const index_t> order;    // (P,) pair ids sorted by receiver
    gptr<const index_t> ptr;      // (N + 1,) receiver segments in order
    gptr<const index_t> sender_order, sender_ptr;  // the same by sender
    gptr<const T> mu;             // (nu,)
    gptr<const T> sigma;          // (nu,)
    gptr<const T> lam1;           // (F,) or null
    gptr<const T> lam2;           // (F,) or null
    index_t n_atoms, n_pairs;
    int nu, features;
    T k, rc, eps;            // pi / (2 r_c), r_c, cusp_reg

    static InteractionView from(const InteractionInputs<T>& in) {
        const double pi = 3.14159265358979323846;
        return {in.Y, in.coord, in.receivers.order, in.receivers.ptr, in.senders.order, in.senders.ptr,
                in.mu, in.sigma, in.lam1, in.lam2, in.n_atoms, in.n_pairs,
                in.nu, in.features, T(pi / (2.0 * in.cutoff)), T(in.cutoff), T(in.cusp_reg)};
    }
};

// The cotangents of the double backward as the kernels read them (v_Y, v_lam1, v_lam2 may be null).
template <class T>
struct CotangentView {
    gptr<const T> v_Y, v_coord, v_mu, v_sigma, v_lam1, v_lam2;

    static CotangentView from(const Cotangents<T>& c) {
        return {c.v_Y, c.v_coord, c.v_mu, c.v_sigma, c.v_lam1, c.v_lam2};
    }
};

HIPNNTS_HD index_t min_index(index_t a, index_t b) { return a < b ? a : b; }

// FLOPs the traffic model counts for one sensitivity with its partials (exp, cos, sin and about
// twenty products) and for its second partials; the feature loops count theirs where they run.
constexpr int kSensitivityFlops = 25;
// ... and for a pair's geometry (sqrt, division, cos, sin, products).
constexpr int kGeometryFlops = 20;
constexpr int kSecondPartialFlops = 60;

// Carves typed arrays out of the dynamic shared buffer; with a null base it only sums sizes, so
// the host computes the launch's shared-memory size with the same code the kernel uses.
struct SharedCarver {
    unsigned char* base;
    size_t offset = 0;
    template <class U>
    HIPNNTS_HD sptr<U> take(size_t count) {
        U* ptr = reinterpret_cast<U*>(base + offset);
        offset += aligned_bytes(count * sizeof(U));
        return sptr<U>(ptr);
    }
};

// Invariants of one feature: a1 = |m_vec| (regularised), a2 = |Q(m)|_F (regularised).
template <class T, int LMAX>
HIPNNTS_HD void invariants(const T* m, T eps, T& a1, T& a2) {
    a1 = a2 = T(0);
    if (LMAX >= 1) a1 = sqrt(m[1] * m[1] + m[2] * m[2] + m[3] * m[3] + eps);
    if (LMAX >= 2) {
        T q2 = T(0);
        for (int c = 4; c < 9; ++c) q2 += m[c] * m[c];
        a2 = sqrt(T(2) * (q2 + m[4] * m[7]) + eps);
    }
}

// K q on the 5 quadrupole entries (K = 2 I + e_xx e_yy^T + e_yy e_xx^T), written to out[4..8].
template <class T>
HIPNNTS_HD void quad_metric(const T* q, T* out) {
    out[4] = T(2) * q[4] + q[7];
    out[5] = T(2) * q[5];
    out[6] = T(2) * q[6];
    out[7] = T(2) * q[7] + q[4];
    out[8] = T(2) * q[8];
}

// d(loss)/dm of one feature: g | g l1 m_v / a1 | g l2 K q / a2.
template <class T, int LMAX>
HIPNNTS_HD void d_out_d_m(const T* m, T g, T l1, T l2, T a1, T a2, T* dm) {
    dm[0] = g;
    if (LMAX >= 1)
        for (int c = 1; c < 4; ++c) dm[c] = g * l1 / a1 * m[c];
    if (LMAX >= 2) {
        quad_metric(m, dm);
        for (int c = 4; c < 9; ++c) dm[c] *= g * l2 / a2;
    }
}

// The invariants in reverse, for one feature (double backward): from bar_dm, the cotangent of dm,
// and v1, v2, the cotangents of the scales' gradients, give bar_m (the cotangent of m), gg (the
// gradient with respect to grad_out) and the scales' gradient terms lam1_part, lam2_part.
template <class T, int LMAX>
HIPNNTS_HD void invariants_reverse(const T* m, const T* bar_dm, T g, T l1, T l2, T a1, T a2, T v1, T v2, T* bar_m,
                                   T& gg, T& lam1_part, T& lam2_part) {
    constexpr int C = n_components(LMAX);
    for (int c = 0; c < C; ++c) bar_m[c] = T(0);
    gg = bar_dm[0];
    lam1_part = lam2_part = T(0);
    if (LMAX >= 1) {
        T proj = T(0);
        for (int c = 1; c < 4; ++c) proj += bar_dm[c] * m[c];
        gg += l1 * proj / a1 + v1 * a1;
        lam1_part = g * proj / a1;
        const T coef = -g * l1 * proj / (a1 * a1 * a1) + v1 * g / a1;
        for (int c = 1; c < 4; ++c) bar_m[c] = g * l1 / a1 * bar_dm[c] + coef * m[c];
    }
    if (LMAX >= 2) {
        T km[9], kbar[9], proj = T(0);
        quad_metric(m, km);
        quad_metric(bar_dm, kbar);
        for (int c = 4; c < 9; ++c) proj += bar_dm[c] * km[c];
        gg += l2 * proj / a2 + v2 * a2;
        lam2_part = g * proj / a2;
        const T coef = -g * l2 * proj / (a2 * a2 * a2) + v2 * g / a2;
        for (int c = 4; c < 9; ++c) bar_m[c] = g * l2 / a2 * kbar[c] + coef * km[c];
    }
}

// The pair-vector gradient of one pair from the gradients of its angular factors (d_factors) and of
// its length (d_dist); DOUBLE (the gradient of <v, backward outputs>) also from bar_factors, the
// radial part of bar_dist, the pair's cotangent vc and v_radial = vc . u. Linear in d_factors,
// d_dist, bar_factors and bar_dist, so parts of them give parts of the gradient.
template <class T, int LMAX, bool DOUBLE>
HIPNNTS_HD void pair_vector_gradient(const Pair<T>& pr, const T* d_factors, T d_dist, const T* bar_factors,
                                     T bar_dist, const T* vc, T v_radial, T* out) {
    T d_unit[3];
    unit_gradient<T, LMAX>(pr.ux, pr.uy, pr.uz, d_factors, d_unit);
    if (!DOUBLE) {
        chain_to_coord(pr, d_unit, d_dist, out);
        return;
    }
    const T u[3] = {pr.ux, pr.uy, pr.uz};
    const T u_dot_du = u[0] * d_unit[0] + u[1] * d_unit[1] + u[2] * d_unit[2];
    T bar_unit[3], bdu[3], gu[3];
    for (int x = 0; x < 3; ++x) {
        bdu[x] = (vc[x] - v_radial * u[x]) * pr.inv_r;
        bar_unit[x] = (-u_dot_du * vc[x] - v_radial * d_unit[x]) * pr.inv_r + d_dist * vc[x];
        bar_dist -= vc[x] * (d_unit[x] - u_dot_du * u[x]) * pr.inv_r * pr.inv_r;
    }
    if (LMAX >= 2) {  // Hessian of the factors along bar_d_unit, contracted with d_factors
        T q[3];
        quad_transpose(bdu[0], bdu[1], bdu[2], d_factors, q);
        for (int x = 0; x < 3; ++x) bar_unit[x] += q[x];
    }
    unit_gradient<T, LMAX>(pr.ux, pr.uy, pr.uz, bar_factors, gu);
    for (int x = 0; x < 3; ++x) bar_unit[x] += gu[x];
    chain_to_coord(pr, bar_unit, bar_dist, out);
}

}  // namespace hipnnts
