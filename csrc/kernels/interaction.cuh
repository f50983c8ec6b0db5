// Fused tensor-sensitivity interaction: what all its kernels share (the inputs' view, the
// invariants and their derivatives), and the receiver-side kernels of the double backward and of
// the molecule path: one thread block per receiving atom (or molecule), one thread per output
// feature, pairs walked in chunks of K staged in shared memory. The forward and backward of the
// CSR path are in split.cuh. No atomics, every output row has one writer; see docs/kernels.md.
#pragma once

#include "geometry.cuh"
#include "launch.h"

namespace hipnnts {

// What the receiver kernels read: the inputs with the receiver segments unpacked and the
// constants in the kernel's precision.
template <class T>
struct InteractionView {
    gptr<const T> Y;              // (N, nu, F)
    gptr<const T> coord;          // (P, 3)
    gptr<const index_t> second;   // (P,) sender of each pair
    gptr<const index_t> order;    // (P,) pair ids sorted by receiver
    gptr<const index_t> ptr;      // (N + 1,) receiver segments in order
    gptr<const index_t> sender_order, sender_ptr;  // the same by sender
    gptr<const T> mu;             // (nu,)
    gptr<const T> sigma;          // (nu,)
    gptr<const T> lam1;           // (F,) or null
    gptr<const T> lam2;           // (F,) or null
    int nu, features;
    T k, rc, eps;            // pi / (2 r_c), r_c, cusp_reg

    static InteractionView from(const InteractionInputs<T>& in) {
        const double pi = 3.14159265358979323846;
        return {in.Y, in.coord, in.second, in.receivers.order, in.receivers.ptr, in.senders.order, in.senders.ptr,
                in.mu, in.sigma, in.lam1, in.lam2,
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

// Shared arrays of the receiver kernels for chunks of K pairs.
template <class T>
struct ReceiverShared {
    sptr<index_t> pair, partner;
    sptr<T> s, s_r, s_mu, s_sigma;  // (K, nu)
    sptr<T> factors;                // (K, C)
    sptr<T> t, dt;                  // (K, F)
    sptr<T> ds;                     // (K, nu)
    sptr<T> d_factors;              // (K, C)
    sptr<T> dm;                     // (C, F)

    // backward = false: only what the forward contraction needs.
    HIPNNTS_HD static ReceiverShared carve(SharedCarver& c, int K, int nu, int n_comp, int features, bool backward) {
        ReceiverShared sh{};
        sh.pair = c.take<index_t>(K);
        sh.partner = c.take<index_t>(K);
        sh.s = c.take<T>(K * nu);
        sh.factors = c.take<T>(K * n_comp);
        if (backward) {
            sh.s_r = c.take<T>(K * nu);
            sh.s_mu = c.take<T>(K * nu);
            sh.s_sigma = c.take<T>(K * nu);
            sh.t = c.take<T>(K * features);
            sh.dt = c.take<T>(K * features);
            sh.ds = c.take<T>(K * nu);
            sh.d_factors = c.take<T>(K * n_comp);
            sh.dm = c.take<T>(n_comp * features);
        }
        return sh;
    }
};

// m[c] = sum over receiver i's pairs of Y_c(r_hat) sum_nu s_nu(r) Y[j, nu, f] for this thread's
// feature f (threads with f >= F take part in staging only).
template <class T, int LMAX, int K>
__device__ void contract_segment(const InteractionView<T>& v, index_t start, index_t end, ReceiverShared<T>& sh,
                                 T* m) {
    constexpr int C = n_components(LMAX);
    const int f = threadIdx.x;
    for (int c = 0; c < C; ++c) m[c] = T(0);
    for (index_t c0 = start; c0 < end; c0 += K) {
        const int count = int(min_index(K, end - c0));
        for (int item = threadIdx.x; item < count * v.nu; item += blockDim.x) {
            const int kk = item / v.nu, n = item - kk * v.nu;
            const Pair<T> pr = load_pair(v.coord, v.order[c0 + kk]);
            sh.s[item] = sensitivity<T>(pr.inv_r, T(1) / v.mu[n], v.sigma[n], cutoff_terms(pr.r, v.k, v.rc)).s;
            HIPNNTS_FLOPS(kSensitivityFlops);
        }
        for (int kk = threadIdx.x; kk < count; kk += blockDim.x) {
            const index_t p = v.order[c0 + kk];
            const Pair<T> pr = load_pair(v.coord, p);
            angular_factors<T, LMAX>(pr.ux, pr.uy, pr.uz, sh.factors + kk * C);
            sh.partner[kk] = v.second[p];
        }
        __syncthreads();
        if (f < v.features) {
            for (int kk = 0; kk < count; ++kk) {
                gptr<const T> y = v.Y + sh.partner[kk] * v.nu * v.features + f;
                T t = T(0);
                for (int n = 0; n < v.nu; ++n) t += sh.s[kk * v.nu + n] * y[index_t(n) * v.features];
                for (int c = 0; c < C; ++c) m[c] += sh.factors[kk * C + c] * t;
                HIPNNTS_FLOPS(2 * v.nu + 2 * C);
            }
        }
        __syncthreads();
    }
}

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

// Zero grad_Y[j, :, f] for the atoms of [a0, a1): the molecule path's per-thread columns.
template <class T>
__device__ void zero_columns(gptr<T> grad_Y, index_t a0, index_t a1, int nu, int features) {
    const int f = threadIdx.x;
    if (f >= features) return;
    for (index_t j = a0; j < a1; ++j)
        for (int n = 0; n < nu; ++n) grad_Y[(j * nu + n) * features + f] = T(0);
}

// Shared arrays of the double-backward receiver kernel for chunks of K pairs.
template <class T>
struct DoubleShared {
    sptr<index_t> pair, partner;
    // (K, nu): s and partials, bar_ds, the second partials contracted with (v_radial, v_mu, v_sigma),
    // and the reductions ds = Y[j] . dt, bar_s = Y[j] . bar_t + v_Y[j] . dt
    sptr<T> s, s_r, s_mu, s_sigma, bar_ds, second_r, second_mu, second_sigma, ds, bar_s;
    // (K, C): factors, bar_d_factors, d_factors = dm . t, bar_factors = dm . bar_dt + bar_m . t
    sptr<T> factors, bar_d_factors, d_factors, bar_factors;
    sptr<T> t, dt, bar_dt, bar_t;  // (K, F)
    sptr<T> dm, bar_m;             // (C, F)

    HIPNNTS_HD static DoubleShared carve(SharedCarver& c, int K, int nu, int n_comp, int features) {
        DoubleShared sh{};
        sh.pair = c.take<index_t>(K);
        sh.partner = c.take<index_t>(K);
        sptr<T>* per_nu[] = {&sh.s, &sh.s_r, &sh.s_mu, &sh.s_sigma, &sh.bar_ds, &sh.second_r, &sh.second_mu,
                        &sh.second_sigma, &sh.ds, &sh.bar_s};
        for (sptr<T>* array : per_nu) *array = c.take<T>(K * nu);
        sptr<T>* per_comp[] = {&sh.factors, &sh.bar_d_factors, &sh.d_factors, &sh.bar_factors};
        for (sptr<T>* array : per_comp) *array = c.take<T>(K * n_comp);
        sptr<T>* per_feature[] = {&sh.t, &sh.dt, &sh.bar_dt, &sh.bar_t};
        for (sptr<T>* array : per_feature) *array = c.take<T>(K * features);
        sh.dm = c.take<T>(n_comp * features);
        sh.bar_m = c.take<T>(n_comp * features);
        return sh;
    }
};

// Stage a chunk of pairs for the double backward: per (pair, n) the sensitivity, its partials,
// bar_ds = v_radial s_r + v_mu s_mu + v_sigma s_sigma and (with `second`) the second partials
// contracted with the same cotangents; per pair the factors, bar_d_factors (the factors'
// directional derivative along bar_d_unit = (v_coord - v_radial r_hat) / r) and the atoms.
template <class T, int LMAX>
__device__ void stage_double(const InteractionView<T>& v, const CotangentView<T>& cot, index_t c0, int count,
                             DoubleShared<T>& sh, bool second) {
    constexpr int C = n_components(LMAX);
    const int nu = v.nu;
    for (int item = threadIdx.x; item < count * nu; item += blockDim.x) {
        const int kk = item / nu, n = item - kk * nu;
        const index_t p = v.order[c0 + kk];
        const Pair<T> pr = load_pair(v.coord, p);
        const T v_radial = cot.v_coord[3 * p] * pr.ux + cot.v_coord[3 * p + 1] * pr.uy + cot.v_coord[3 * p + 2] * pr.uz;
        const T inv_mu = T(1) / v.mu[n], vmu = cot.v_mu[n], vsig = cot.v_sigma[n];
        const Cutoff<T> cut = cutoff_terms(pr.r, v.k, v.rc);
        const Sensitivity<T> s = sensitivity<T>(pr.inv_r, inv_mu, v.sigma[n], cut);
        HIPNNTS_FLOPS(kSensitivityFlops);
        sh.s[item] = s.s;
        sh.s_r[item] = s.s_r;
        sh.s_mu[item] = s.s_mu;
        sh.s_sigma[item] = s.s_sigma;
        sh.bar_ds[item] = v_radial * s.s_r + vmu * s.s_mu + vsig * s.s_sigma;
        if (second) {
            const SensitivitySecond<T> s2 = sensitivity_second<T>(pr.inv_r, inv_mu, v.sigma[n], cut);
            HIPNNTS_FLOPS(kSecondPartialFlops);
            sh.second_r[item] = v_radial * s2.rr + vmu * s2.rmu + vsig * s2.rsigma;
            sh.second_mu[item] = v_radial * s2.rmu + vmu * s2.mumu + vsig * s2.musigma;
            sh.second_sigma[item] = v_radial * s2.rsigma + vmu * s2.musigma + vsig * s2.sigmasigma;
        }
    }
    for (int kk = threadIdx.x; kk < count; kk += blockDim.x) {
        const index_t p = v.order[c0 + kk];
        const Pair<T> pr = load_pair(v.coord, p);
        const T vc[3] = {cot.v_coord[3 * p], cot.v_coord[3 * p + 1], cot.v_coord[3 * p + 2]};
        const T v_radial = vc[0] * pr.ux + vc[1] * pr.uy + vc[2] * pr.uz;
        angular_factors<T, LMAX>(pr.ux, pr.uy, pr.uz, sh.factors + kk * C);
        angular_jvp<T, LMAX>(pr.ux, pr.uy, pr.uz, (vc[0] - v_radial * pr.ux) * pr.inv_r,
                             (vc[1] - v_radial * pr.uy) * pr.inv_r, (vc[2] - v_radial * pr.uz) * pr.inv_r,
                             sh.bar_d_factors + kk * C);
        sh.pair[kk] = p;
        sh.partner[kk] = v.second[p];
    }
}

// Double backward, receiver side (see reference.interaction_double_backward for the steps):
// pass 1 recomputes m and dm; pass 2 accumulates bar_dm; the invariants in reverse give
// grad_grad_out, the scales' partial gradients and bar_m; pass 3 writes per pair dt, bar_t,
// bar_ds (for the sender kernel) and the pair-vector gradient, and accumulates mu and sigma.
// On the molecule path (grad_Y not null) the sender terms s (x) bar_t + bar_ds (x) dt go straight
// into grad_Y instead of dt_out, bar_t_out and bar_ds_out.
template <class T, int LMAX, int K>
__device__ void double_backward_receiver(const InteractionView<T>& v, const CotangentView<T>& cot, index_t i,
                                         DoubleShared<T>& sh, gptr<const T> __restrict__ grad_out,
                                         gptr<T> __restrict__ dt_out,
                                         gptr<T> __restrict__ bar_t_out, gptr<T> __restrict__ bar_ds_out,
                                         gptr<T> __restrict__ grad_Y, gptr<T> __restrict__ grad_coord,
                                         gptr<T> __restrict__ mu_part, gptr<T> __restrict__ sigma_part,
                                         gptr<T> __restrict__ grad_grad_out, gptr<T> __restrict__ lam1_part,
                                         gptr<T> __restrict__ lam2_part) {
    constexpr int C = n_components(LMAX);
    ReceiverShared<T> contract_sh{sh.pair, sh.partner, sh.s, nullptr, nullptr, nullptr, sh.factors};
    const int tid = threadIdx.x, f = tid, F = v.features, nu = v.nu;
    const bool active = f < F;
    const index_t start = v.ptr[i], end = v.ptr[i + 1];

    // pass 1: m and d(loss)/dm of this feature
    T m[C], dm[C] = {}, a1 = T(0), a2 = T(0), g = T(0), l1 = T(0), l2 = T(0);
    contract_segment<T, LMAX, K>(v, start, end, contract_sh, m);
    if (active) {
        invariants<T, LMAX>(m, v.eps, a1, a2);
        g = grad_out[i * F + f];
        l1 = LMAX >= 1 ? v.lam1[f] : T(0);
        l2 = LMAX >= 2 ? v.lam2[f] : T(0);
        d_out_d_m<T, LMAX>(m, g, l1, l2, a1, a2, dm);
    }

    // pass 2: bar_dm = sum over pairs of A bar_dt + bar_d_factors t
    T bar_dm[C];
    for (int c = 0; c < C; ++c) bar_dm[c] = T(0);
    for (index_t c0 = start; c0 < end; c0 += K) {
        const int count = int(min_index(K, end - c0));
        stage_double<T, LMAX>(v, cot, c0, count, sh, false);
        __syncthreads();
        if (active) {
            for (int kk = 0; kk < count; ++kk) {
                gptr<const T> y = v.Y + sh.partner[kk] * nu * F + f;
                gptr<const T> vy = cot.v_Y != nullptr ? cot.v_Y + sh.partner[kk] * nu * F + f : nullptr;
                T t = T(0), bar_dt = T(0);
                for (int n = 0; n < nu; ++n) {
                    const T yn = y[index_t(n) * F], sn = sh.s[kk * nu + n];
                    t += sn * yn;
                    bar_dt += sh.bar_ds[kk * nu + n] * yn;
                    if (vy != nullptr) bar_dt += sn * vy[index_t(n) * F];
                }
                for (int c = 0; c < C; ++c) bar_dm[c] += sh.factors[kk * C + c] * bar_dt + sh.bar_d_factors[kk * C + c] * t;
                HIPNNTS_FLOPS((vy != nullptr ? 6 : 4) * nu + 4 * C);
            }
        }
        __syncthreads();
    }

    // the invariants in reverse
    T bar_m[C];
    for (int c = 0; c < C; ++c) bar_m[c] = T(0);
    if (active) {
        T gg = bar_dm[0];
        if (LMAX >= 1) {
            const T v1 = cot.v_lam1 != nullptr ? cot.v_lam1[f] : T(0);
            T proj = T(0);
            for (int c = 1; c < 4; ++c) proj += bar_dm[c] * m[c];
            gg += l1 * proj / a1 + v1 * a1;
            lam1_part[i * F + f] = g * proj / a1;
            const T coef = -g * l1 * proj / (a1 * a1 * a1) + v1 * g / a1;
            for (int c = 1; c < 4; ++c) bar_m[c] = g * l1 / a1 * bar_dm[c] + coef * m[c];
        }
        if (LMAX >= 2) {
            const T v2 = cot.v_lam2 != nullptr ? cot.v_lam2[f] : T(0);
            T km[C], kbar[C], proj = T(0);
            quad_metric(m, km);
            quad_metric(bar_dm, kbar);
            for (int c = 4; c < 9; ++c) proj += bar_dm[c] * km[c];
            gg += l2 * proj / a2 + v2 * a2;
            lam2_part[i * F + f] = g * proj / a2;
            const T coef = -g * l2 * proj / (a2 * a2 * a2) + v2 * g / a2;
            for (int c = 4; c < 9; ++c) bar_m[c] = g * l2 / a2 * kbar[c] + coef * km[c];
        }
        grad_grad_out[i * F + f] = gg;
        for (int c = 0; c < C; ++c) {
            sh.dm[c * F + f] = dm[c];
            sh.bar_m[c * F + f] = bar_m[c];
        }
    }

    // pass 3: per pair
    T g_mu = T(0), g_sigma = T(0);  // thread tid < nu owns sensitivity tid
    for (index_t c0 = start; c0 < end; c0 += K) {
        const int count = int(min_index(K, end - c0));
        stage_double<T, LMAX>(v, cot, c0, count, sh, true);
        if (grad_Y == nullptr)
            for (int item = tid; item < count * nu; item += blockDim.x)
                bar_ds_out[v.order[c0 + item / nu] * nu + item % nu] = sh.bar_ds[item];
        __syncthreads();
        if (active) {
            for (int kk = 0; kk < count; ++kk) {
                const index_t p = sh.pair[kk];
                gptr<const T> y = v.Y + sh.partner[kk] * nu * F + f;
                gptr<const T> vy = cot.v_Y != nullptr ? cot.v_Y + sh.partner[kk] * nu * F + f : nullptr;
                T t = T(0), dt = T(0), bar_dt = T(0), bar_t = T(0);
                for (int n = 0; n < nu; ++n) {
                    const T yn = y[index_t(n) * F], sn = sh.s[kk * nu + n];
                    t += sn * yn;
                    bar_dt += sh.bar_ds[kk * nu + n] * yn;
                    if (vy != nullptr) bar_dt += sn * vy[index_t(n) * F];
                }
                for (int c = 0; c < C; ++c) {
                    const T a = sh.factors[kk * C + c];
                    dt += a * dm[c];
                    bar_t += sh.bar_d_factors[kk * C + c] * dm[c] + a * bar_m[c];
                }
                HIPNNTS_FLOPS((vy != nullptr ? 6 : 4) * nu + 6 * C + (grad_Y == nullptr ? 0 : 4 * nu));
                sh.t[kk * F + f] = t;
                sh.dt[kk * F + f] = dt;
                sh.bar_dt[kk * F + f] = bar_dt;
                sh.bar_t[kk * F + f] = bar_t;
                if (grad_Y == nullptr) {
                    dt_out[p * F + f] = dt;
                    bar_t_out[p * F + f] = bar_t;
                } else {
                    gptr<T> gy = grad_Y + sh.partner[kk] * nu * F + f;
                    for (int n = 0; n < nu; ++n)
                        gy[index_t(n) * F] += sh.s[kk * nu + n] * bar_t + sh.bar_ds[kk * nu + n] * dt;
                }
            }
        }
        __syncthreads();
        // reductions over features
        for (int item = tid; item < count * (nu + C); item += blockDim.x) {
            const int kk = item / (nu + C), x = item - kk * (nu + C);
            if (x < nu) {
                gptr<const T> y = v.Y + (sh.partner[kk] * nu + x) * F;
                gptr<const T> vy = cot.v_Y != nullptr ? cot.v_Y + (sh.partner[kk] * nu + x) * F : nullptr;
                T ds = T(0), bar_s = T(0);
                for (int ff = 0; ff < F; ++ff) {
                    const T yf = y[ff], dtf = sh.dt[kk * F + ff];
                    ds += yf * dtf;
                    bar_s += yf * sh.bar_t[kk * F + ff];
                    if (vy != nullptr) bar_s += vy[ff] * dtf;
                }
                HIPNNTS_FLOPS((vy != nullptr ? 6 : 4) * F);
                sh.ds[kk * nu + x] = ds;
                sh.bar_s[kk * nu + x] = bar_s;
            } else {
                const int c = x - nu;
                T d_factor = T(0), bar_factor = T(0);
                for (int ff = 0; ff < F; ++ff) {
                    const T dmf = sh.dm[c * F + ff], tf = sh.t[kk * F + ff];
                    d_factor += dmf * tf;
                    bar_factor += dmf * sh.bar_dt[kk * F + ff] + sh.bar_m[c * F + ff] * tf;
                }
                HIPNNTS_FLOPS(6 * F);
                sh.d_factors[kk * C + c] = d_factor;
                sh.bar_factors[kk * C + c] = bar_factor;
            }
        }
        __syncthreads();
        if (tid < count) {  // geometry of pair tid
            const int kk = tid;
            const index_t p = sh.pair[kk];
            const Pair<T> pr = load_pair(v.coord, p);
            const T u[3] = {pr.ux, pr.uy, pr.uz};
            const T vc[3] = {cot.v_coord[3 * p], cot.v_coord[3 * p + 1], cot.v_coord[3 * p + 2]};
            T d_dist = T(0), bar_dist = T(0), d_unit[3], bar_unit[3], gu[3];
            for (int n = 0; n < nu; ++n) {
                d_dist += sh.ds[kk * nu + n] * sh.s_r[kk * nu + n];
                bar_dist += sh.ds[kk * nu + n] * sh.second_r[kk * nu + n] + sh.bar_s[kk * nu + n] * sh.s_r[kk * nu + n];
            }
            unit_gradient<T, LMAX>(pr.ux, pr.uy, pr.uz, sh.d_factors + kk * C, d_unit);
            const T v_radial = vc[0] * u[0] + vc[1] * u[1] + vc[2] * u[2];
            const T u_dot_du = u[0] * d_unit[0] + u[1] * d_unit[1] + u[2] * d_unit[2];
            T bdu[3];
            for (int x = 0; x < 3; ++x) {
                bdu[x] = (vc[x] - v_radial * u[x]) * pr.inv_r;
                bar_unit[x] = (-u_dot_du * vc[x] - v_radial * d_unit[x]) * pr.inv_r + d_dist * vc[x];
                bar_dist -= vc[x] * (d_unit[x] - u_dot_du * u[x]) * pr.inv_r * pr.inv_r;
            }
            if (LMAX >= 2) {  // Hessian of the factors along bar_d_unit, contracted with d_factors
                T q[3];
                quad_transpose(bdu[0], bdu[1], bdu[2], sh.d_factors + kk * C, q);
                for (int x = 0; x < 3; ++x) bar_unit[x] += q[x];
            }
            unit_gradient<T, LMAX>(pr.ux, pr.uy, pr.uz, sh.bar_factors + kk * C, gu);
            for (int x = 0; x < 3; ++x) bar_unit[x] += gu[x];
            T out[3];
            chain_to_coord(pr, bar_unit, bar_dist, out);
            for (int x = 0; x < 3; ++x) grad_coord[3 * p + x] = out[x];
        }
        if (tid < nu) {
            for (int kk = 0; kk < count; ++kk) {
                const int q = kk * nu + tid;
                g_mu += sh.ds[q] * sh.second_mu[q] + sh.bar_s[q] * sh.s_mu[q];
                g_sigma += sh.ds[q] * sh.second_sigma[q] + sh.bar_s[q] * sh.s_sigma[q];
            }
        }
        __syncthreads();
    }
    if (tid < nu) {
        mu_part[i * nu + tid] = g_mu;
        sigma_part[i * nu + tid] = g_sigma;
    }
}

template <class T, int LMAX, int K>
__global__ void interaction_double_backward_kernel(InteractionView<T> v, CotangentView<T> cot,
                                                   gptr<const T> __restrict__ grad_out, gptr<T> __restrict__ dt_out,
                                                   gptr<T> __restrict__ bar_t_out, gptr<T> __restrict__ bar_ds_out,
                                                   gptr<T> __restrict__ grad_coord, gptr<T> __restrict__ mu_part,
                                                   gptr<T> __restrict__ sigma_part, gptr<T> __restrict__ grad_grad_out,
                                                   gptr<T> __restrict__ lam1_part, gptr<T> __restrict__ lam2_part) {
    HIPNNTS_DYNAMIC_SHARED(unsigned char, smem);
    SharedCarver carver{smem};
    DoubleShared<T> sh = DoubleShared<T>::carve(carver, K, v.nu, n_components(LMAX), v.features);
    double_backward_receiver<T, LMAX, K>(v, cot, blockIdx.x, sh, grad_out, dt_out, bar_t_out, bar_ds_out, nullptr,
                                         grad_coord, mu_part, sigma_part, grad_grad_out, lam1_part, lam2_part);
}

template <class T, int LMAX, int K>
__global__ void interaction_double_backward_molecule_kernel(InteractionView<T> v, CotangentView<T> cot,
                                                            gptr<const index_t> __restrict__ molecule_ptr,
                                                            gptr<const T> __restrict__ grad_out,
                                                            gptr<T> __restrict__ grad_Y,
                                                            gptr<T> __restrict__ grad_coord,
                                                            gptr<T> __restrict__ mu_part,
                                                            gptr<T> __restrict__ sigma_part,
                                                            gptr<T> __restrict__ grad_grad_out,
                                                            gptr<T> __restrict__ lam1_part,
                                                            gptr<T> __restrict__ lam2_part) {
    HIPNNTS_DYNAMIC_SHARED(unsigned char, smem);
    SharedCarver carver{smem};
    DoubleShared<T> sh = DoubleShared<T>::carve(carver, K, v.nu, n_components(LMAX), v.features);
    const index_t a0 = molecule_ptr[blockIdx.x], a1 = molecule_ptr[blockIdx.x + 1];
    zero_columns(grad_Y, a0, a1, v.nu, v.features);
    for (index_t i = a0; i < a1; ++i)
        double_backward_receiver<T, LMAX, K>(v, cot, i, sh, grad_out, nullptr, nullptr, nullptr, grad_Y, grad_coord,
                                             mu_part, sigma_part, grad_grad_out, lam1_part, lam2_part);
}

// Sender side: out[j, n, f] = sum over j's pairs p of s_p[n] X_p[f] (+ B_p[n] Z_p[f]). One block
// per (sender, block of NB sensitivities), one thread per feature.
template <class T, int K, int NB>
__global__ void sender_sum_kernel(gptr<const T> __restrict__ coord, gptr<const index_t> __restrict__ order,
                                  gptr<const index_t> __restrict__ ptr, gptr<const T> __restrict__ mu,
                                  gptr<const T> __restrict__ sigma, int nu, int features, T k, T rc,
                                  gptr<const T> __restrict__ X, gptr<const T> __restrict__ B,
                                  gptr<const T> __restrict__ Z, gptr<T> __restrict__ out) {
    __shared__ index_t pair_storage[K];
    __shared__ T s_storage[K * NB], b_storage[K * NB];
    const sptr<index_t> pair_sh(pair_storage);
    const sptr<T> s_sh(s_storage), b_sh(b_storage);
    const index_t j = blockIdx.x;
    const int n0 = blockIdx.y * NB, nb = nu - n0 < NB ? nu - n0 : NB, f = threadIdx.x;
    const index_t start = ptr[j], end = ptr[j + 1];
    T acc[NB];
    for (int n = 0; n < NB; ++n) acc[n] = T(0);
    for (index_t c0 = start; c0 < end; c0 += K) {
        const int count = int(min_index(K, end - c0));
        for (int item = threadIdx.x; item < count * nb; item += blockDim.x) {
            const int kk = item / nb, n = item - kk * nb;
            const index_t p = order[c0 + kk];
            const Pair<T> pr = load_pair(coord, p);
            s_sh[kk * NB + n] = sensitivity<T>(pr.inv_r, T(1) / mu[n0 + n], sigma[n0 + n], cutoff_terms(pr.r, k, rc)).s;
            HIPNNTS_FLOPS(kSensitivityFlops);
            if (B != nullptr) b_sh[kk * NB + n] = B[p * nu + n0 + n];
        }
        for (int kk = threadIdx.x; kk < count; kk += blockDim.x) pair_sh[kk] = order[c0 + kk];
        __syncthreads();
        if (f < features) {
            for (int kk = 0; kk < count; ++kk) {
                const index_t p = pair_sh[kk];
                const T x = X[p * features + f];
                const T z = B != nullptr ? Z[p * features + f] : T(0);
                for (int n = 0; n < NB; ++n)
                    if (n < nb) acc[n] += s_sh[kk * NB + n] * x + (B != nullptr ? b_sh[kk * NB + n] * z : T(0));
                HIPNNTS_FLOPS((B != nullptr ? 4 : 2) * nb);
            }
        }
        __syncthreads();
    }
    if (f < features)
        for (int n = 0; n < nb; ++n) out[(j * nu + n0 + n) * features + f] = acc[n];
}

}  // namespace hipnnts
