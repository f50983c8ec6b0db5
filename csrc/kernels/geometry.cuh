// Per-pair geometry shared by the kernels: unit vector, sensitivities and their partials, and the
// angular factors with their Jacobian (see hipnnts_kernels/reference.py for the same math).
#pragma once

#include "portable.cuh"

namespace hipnnts {

template <class T>
struct Pair {
    T ux, uy, uz, r, inv_r;
};

// r_hat, r and 1/r of pair p from its (P, 3) pair vector.
template <class T>
HIPNNTS_HD Pair<T> load_pair(gptr<const T> __restrict__ coord, index_t p) {
    const T x = coord[3 * p], y = coord[3 * p + 1], z = coord[3 * p + 2];
    const T r = sqrt(x * x + y * y + z * z);
    const T inv_r = T(1) / r;
    return {x * inv_r, y * inv_r, z * inv_r, r, inv_r};
}

// Cutoff function pieces: phi = cos^2(k r), dphi/dr, d2phi/dr2, zero beyond r_c.
template <class T>
struct Cutoff {
    T phi, dphi, ddphi;
};

template <class T>
HIPNNTS_HD Cutoff<T> cutoff_terms(T r, T k, T rc) {
    if (r > rc) return {T(0), T(0), T(0)};
    const T c = cos(k * r), s = sin(k * r);
    return {c * c, T(-2) * k * s * c, T(-2) * k * k * (c * c - s * s)};
}

// s = G phi with G = exp(-sigma^2 d^2 / 2), d = 1/r - 1/mu; first partials in r, mu, sigma.
template <class T>
struct Sensitivity {
    T s, s_r, s_mu, s_sigma;
};

template <class T>
HIPNNTS_HD Sensitivity<T> sensitivity(T inv_r, T inv_mu, T sigma, Cutoff<T> cut) {
    const T d = inv_r - inv_mu, sig2 = sigma * sigma;
    const T gauss = exp(T(-0.5) * sig2 * d * d);
    const T g_r = gauss * sig2 * d * inv_r * inv_r;
    const T g_mu = -gauss * sig2 * d * inv_mu * inv_mu;
    const T g_sigma = -gauss * sigma * d * d;
    return {gauss * cut.phi, g_r * cut.phi + gauss * cut.dphi, g_mu * cut.phi, g_sigma * cut.phi};
}

// Second partials of s: rr, r mu, r sigma, mu mu, mu sigma, sigma sigma.
template <class T>
struct SensitivitySecond {
    T rr, rmu, rsigma, mumu, musigma, sigmasigma;
};

template <class T>
HIPNNTS_HD SensitivitySecond<T> sensitivity_second(T inv_r, T inv_mu, T sigma, Cutoff<T> cut) {
    const T d = inv_r - inv_mu, sig2 = sigma * sigma, sd2 = sig2 * d * d;
    const T gauss = exp(T(-0.5) * sd2);
    const T g_r = gauss * sig2 * d * inv_r * inv_r;
    const T g_mu = -gauss * sig2 * d * inv_mu * inv_mu;
    const T g_sigma = -gauss * sigma * d * d;
    const T g_rr = gauss * sig2 * inv_r * inv_r * inv_r * ((sd2 - T(1)) * inv_r - T(2) * d);
    const T g_rmu = gauss * sig2 * inv_r * inv_r * inv_mu * inv_mu * (T(1) - sd2);
    const T g_rsigma = gauss * sigma * d * inv_r * inv_r * (T(2) - sd2);
    const T g_mumu = gauss * sig2 * inv_mu * inv_mu * inv_mu * ((sd2 - T(1)) * inv_mu + T(2) * d);
    const T g_musigma = gauss * sigma * d * inv_mu * inv_mu * (sd2 - T(2));
    const T g_sigmasigma = gauss * d * d * (sd2 - T(1));
    return {g_rr * cut.phi + T(2) * g_r * cut.dphi + gauss * cut.ddphi, g_rmu * cut.phi + g_mu * cut.dphi,
            g_rsigma * cut.phi + g_sigma * cut.dphi, g_mumu * cut.phi, g_musigma * cut.phi,
            g_sigmasigma * cut.phi};
}

// Angular factors [1 | x, y, z | Qxx, Qxy, Qxz, Qyy, Qyz], Q = u u^T - I/3, first n_components(LMAX).
// (Out-arrays are any pointer type: registers, or shared memory.)
template <class T, int LMAX, class A>
HIPNNTS_HD void angular_factors(T ux, T uy, T uz, A a) {
    a[0] = T(1);
    if (LMAX >= 1) {
        a[1] = ux;
        a[2] = uy;
        a[3] = uz;
    }
    if (LMAX >= 2) {
        const T third = T(1) / T(3);
        a[4] = ux * ux - third;
        a[5] = ux * uy;
        a[6] = ux * uz;
        a[7] = uy * uy - third;
        a[8] = uy * uz;
    }
}

// sum_c g[c] d(factor_c)/du at u, for the quadrupole rows only; linear in u, so at u = t it is
// the Hessian of the factors applied to t, contracted with g.
template <class T, class G, class O>
HIPNNTS_HD void quad_transpose(T x, T y, T z, G g, O out) {
    out[0] = T(2) * x * g[4] + y * g[5] + z * g[6];
    out[1] = x * g[5] + T(2) * y * g[7] + z * g[8];
    out[2] = x * g[6] + y * g[8];
}

// Gradient with respect to the unit vector from a gradient g of the factors.
template <class T, int LMAX, class G, class O>
HIPNNTS_HD void unit_gradient(T ux, T uy, T uz, G g, O out) {
    out[0] = out[1] = out[2] = T(0);
    if (LMAX >= 1) {
        out[0] = g[1];
        out[1] = g[2];
        out[2] = g[3];
    }
    if (LMAX >= 2) {
        T q[3];
        quad_transpose(ux, uy, uz, g, q);
        out[0] += q[0];
        out[1] += q[1];
        out[2] += q[2];
    }
}

// Directional derivative of the factors along t.
template <class T, int LMAX, class O>
HIPNNTS_HD void angular_jvp(T ux, T uy, T uz, T tx, T ty, T tz, O out) {
    out[0] = T(0);
    if (LMAX >= 1) {
        out[1] = tx;
        out[2] = ty;
        out[3] = tz;
    }
    if (LMAX >= 2) {
        out[4] = T(2) * ux * tx;
        out[5] = ux * ty + uy * tx;
        out[6] = ux * tz + uz * tx;
        out[7] = T(2) * uy * ty;
        out[8] = uy * tz + uz * ty;
    }
}

// Gradient with respect to the pair vector from gradients with respect to r_hat (g) and r.
template <class T, class G, class O>
HIPNNTS_HD void chain_to_coord(const Pair<T>& pr, G g, T g_dist, O out) {
    const T radial = g[0] * pr.ux + g[1] * pr.uy + g[2] * pr.uz;
    out[0] = (g[0] - radial * pr.ux) * pr.inv_r + g_dist * pr.ux;
    out[1] = (g[1] - radial * pr.uy) * pr.inv_r + g_dist * pr.uy;
    out[2] = (g[2] - radial * pr.uz) * pr.inv_r + g_dist * pr.uz;
}

}  // namespace hipnnts
