// The fused interaction's kernels, split into sender and receiver phases so that every feature row
// of Y, v_Y and the per-pair rows (t, dt, ...) is read once per pass (docs/kernels.md, "The CUDA
// kernels", sender/receiver split). Per pair p (receiver i, sender j): s_p (nu) sensitivities, A_p (C) angular factors,
// t_p = sum_nu s_p[nu] Y_j[nu] (F), m_i = sum_p A_p t_p (C x F).
//
//   sender_contract   block per sender j:   t_p for j's pairs; DOUBLE: bar_dt_p = bar_ds_p . Y_j + s_p . v_Y_j
//   receiver_forward  block per (receiver i, feature tile): m_i, out_i
//   receiver          block per receiver i: m_i, dm_i; dt_p = A_p . dm_i, d_factors_p = dm_i . t_p;
//                     DOUBLE: bar_dm_i, the invariants in reverse (grad_grad_out, bar_m_i),
//                     bar_t_p = bar_A_p . dm_i + A_p . bar_m_i, bar_factors_p = dm_i . bar_dt_p + bar_m_i . t_p
//   sender            block per sender j:   grad_Y_j = sum_p s_p (x) dt_p, ds_p = Y_j . dt_p;
//                     DOUBLE: grad_Y_j = sum_p s_p (x) bar_t_p + bar_ds_p (x) dt_p, and
//                     bar_s_p = Y_j . bar_t_p + v_Y_j . dt_p; then the pair-vector gradient of each
//                     pair and j's mu and sigma partials
//
// (bar_ds_p = v_radial s_r + v_mu s_mu + v_sigma s_sigma and bar_A_p, the factors' derivative along
// the cotangent's tangential part, are the cotangents of ds_p and d_factors_p.) Features run on the
// threads in tiles of SplitTraits::tile_features. Each pair's geometry (r, unit vector, cutoff) is
// computed once per kernel, its sensitivities once per (pair, nu) (the sender kernels compute them
// again, with their partials, when a chunk's reductions are complete, rather than hold them in
// shared memory through the tiles); a sender's Y_j tile is staged once per chunk of
// SplitTraits::pairs pairs. Reductions over features are small products out of
// shared memory whose rows have an odd stride (no bank conflicts). Every output element has one
// writer: no atomics, bitwise deterministic.
#pragma once

#include "interaction.cuh"

namespace hipnnts {

// Tile shape and launch traits of the kernels: the one place to change them.
struct SplitTraits {
    static constexpr int pairs = 32;           // pairs staged per shared-memory chunk
    static constexpr int tile_features = 128;  // features per tile = threads per block (at most)
    // Per pair: ux, uy, uz, r, 1/r, cutoff phi, dphi/dr, d2phi/dr2, v_radial (double backward).
    static constexpr int geometry = 9;

    // Threads of a block for `features` features: one per feature of a tile, whole warps.
    HIPNNTS_HD static unsigned threads(int features) {
        const int f = features < 1 ? 1 : (features > tile_features ? tile_features : features);
        return unsigned((f + 31) / 32 * 32);
    }
    // Row stride (in elements) of feature rows in shared memory: odd, so rows start in different banks.
    HIPNNTS_HD static int row_stride(unsigned threads) { return int(threads) + 1; }
    // Row stride of per-(pair, nu) arrays read one pair per thread: odd for the same reason.
    HIPNNTS_HD static int nu_stride(int nu) { return nu | 1; }
};

// What the sender kernels stage: `backward` the reductions and dt rows of sender_kernel, `dbl` the
// double backward's cotangent terms.
template <class T>
struct SenderShared {
    sptr<index_t> pair;                        // (K,) pair ids of the chunk
    sptr<T> geometry;                          // (K, SplitTraits::geometry)
    sptr<T> inv_mu, sigma, v_mu, v_sigma;      // (nu,); v_* in the double backward
    // (K, nu_stride): s and bar_ds (double) while the tiles run, the reductions ds and bar_s (double
    // backward); after the tiles the four hold the per-(pair, nu) terms of the finish (see
    // sender_finish_terms), the backward's third one in `terms`
    sptr<T> s, bar_ds, ds, bar_s, terms;
    sptr<T> y, v_y;                            // (nu, row_stride): Y_j's (and v_Y_j's) feature tile
    sptr<T> rows, rows2;                       // (K, row_stride): dt (and bar_t) rows of the chunk
    sptr<T> g_mu, g_sigma;                     // (nu,) the sender's partial gradients

    HIPNNTS_HD static SenderShared carve(SharedCarver& c, int nu, unsigned threads, bool backward, bool dbl) {
        constexpr int K = SplitTraits::pairs;
        const size_t per_pair = size_t(K) * SplitTraits::nu_stride(nu), W = SplitTraits::row_stride(threads);
        SenderShared sh{};
        sh.pair = c.take<index_t>(K);
        sh.geometry = c.take<T>(K * SplitTraits::geometry);
        sh.inv_mu = c.take<T>(nu);
        sh.sigma = c.take<T>(nu);
        sh.s = c.take<T>(per_pair);
        sh.y = c.take<T>(nu * W);
        if (dbl) {
            sh.v_mu = c.take<T>(nu);
            sh.v_sigma = c.take<T>(nu);
            sh.bar_ds = c.take<T>(per_pair);
            sh.v_y = c.take<T>(nu * W);
        }
        if (backward) {
            sh.ds = c.take<T>(per_pair);
            sh.rows = c.take<T>(K * W);
            sh.g_mu = c.take<T>(nu);
            sh.g_sigma = c.take<T>(nu);
            if (!dbl) sh.terms = c.take<T>(per_pair);
        }
        if (backward && dbl) {
            sh.bar_s = c.take<T>(per_pair);
            sh.rows2 = c.take<T>(K * W);
        }
        return sh;
    }
};

// What the receiver kernels stage: `backward` the rows and dm of receiver_kernel, `dbl` the double
// backward's bar_A, bar_dt rows and bar_m.
template <class T>
struct ReceiverShared {
    sptr<index_t> pair;     // (K,)
    sptr<T> factors;        // (K, C): A_p
    sptr<T> bar_factors;    // (K, C): bar_A_p
    sptr<T> rows, rows2;    // (K, row_stride): t (and bar_dt) rows of the chunk
    sptr<T> dm, bar_m;      // (C, row_stride) of the tile

    HIPNNTS_HD static ReceiverShared carve(SharedCarver& c, int n_comp, unsigned threads, bool backward, bool dbl) {
        constexpr int K = SplitTraits::pairs;
        const size_t W = SplitTraits::row_stride(threads);
        ReceiverShared sh{};
        sh.pair = c.take<index_t>(K);
        sh.factors = c.take<T>(K * n_comp);
        if (backward) {
            sh.rows = c.take<T>(K * W);
            sh.dm = c.take<T>(n_comp * W);
        }
        if (dbl) {
            sh.bar_factors = c.take<T>(K * n_comp);
            sh.rows2 = c.take<T>(K * W);
            sh.bar_m = c.take<T>(n_comp * W);
        }
        return sh;
    }
};

// --- sender side -------------------------------------------------------------------------------

// 1/mu and sigma (and v_mu, v_sigma) into shared memory, once per block.
template <class T, bool DOUBLE>
__device__ void stage_constants(const InteractionView<T>& v, const CotangentView<T>& cot, SenderShared<T>& sh) {
    for (int n = threadIdx.x; n < v.nu; n += blockDim.x) {
        sh.inv_mu[n] = T(1) / v.mu[n];
        sh.sigma[n] = v.sigma[n];
        if (DOUBLE) {
            sh.v_mu[n] = cot.v_mu[n];
            sh.v_sigma[n] = cot.v_sigma[n];
        }
    }
}

// Sensitivity n of staged pair kk with its first partials, and what its second partials need.
template <class T>
struct StagedSensitivity {
    Sensitivity<T> s;
    T inv_r, inv_mu, sigma, v_radial;
    Cutoff<T> cut;
};

template <class T>
__device__ StagedSensitivity<T> staged_sensitivity(const SenderShared<T>& sh, int kk, int n) {
    const sptr<T> geo = sh.geometry + kk * SplitTraits::geometry;
    const T inv_r = geo[4], inv_mu = sh.inv_mu[n], sigma = sh.sigma[n];
    const Cutoff<T> cut{geo[5], geo[6], geo[7]};
    HIPNNTS_FLOPS(kSensitivityFlops);
    return {sensitivity<T>(inv_r, inv_mu, sigma, cut), inv_r, inv_mu, sigma, geo[8], cut};
}

// Geometry of the chunk's pairs (one thread per pair), then their sensitivities (one thread per
// (pair, nu)) and, in the double backward, bar_ds; with `partials` the reductions zeroed. Ends with
// a barrier.
template <class T, bool DOUBLE>
__device__ void stage_sender_chunk(const InteractionView<T>& v, const CotangentView<T>& cot, index_t c0, int count,
                                   SenderShared<T>& sh, bool partials) {
    constexpr int G = SplitTraits::geometry;
    const int nu = v.nu, NS = SplitTraits::nu_stride(nu);
    for (int kk = threadIdx.x; kk < count; kk += blockDim.x) {
        const index_t p = v.sender_order[c0 + kk];
        const Pair<T> pr = load_pair(v.coord, p);
        const Cutoff<T> cut = cutoff_terms(pr.r, v.k, v.rc);
        const T v_radial = DOUBLE ? cot.v_coord[3 * p] * pr.ux + cot.v_coord[3 * p + 1] * pr.uy +
                                        cot.v_coord[3 * p + 2] * pr.uz
                                  : T(0);
        HIPNNTS_FLOPS(kGeometryFlops);
        sh.pair[kk] = p;
        const T values[G] = {pr.ux, pr.uy, pr.uz, pr.r, pr.inv_r, cut.phi, cut.dphi, cut.ddphi, v_radial};
        for (int x = 0; x < G; ++x) sh.geometry[kk * G + x] = values[x];
    }
    __syncthreads();
    for (int item = threadIdx.x; item < count * nu; item += blockDim.x) {
        const int kk = item / nu, n = item - kk * nu, q = kk * NS + n;
        const StagedSensitivity<T> st = staged_sensitivity(sh, kk, n);
        sh.s[q] = st.s.s;
        if (DOUBLE) sh.bar_ds[q] = st.v_radial * st.s.s_r + sh.v_mu[n] * st.s.s_mu + sh.v_sigma[n] * st.s.s_sigma;
        if (!partials) continue;
        sh.ds[q] = T(0);
        if (DOUBLE) sh.bar_s[q] = T(0);
    }
    __syncthreads();
}

// After the tiles of a chunk, one thread per (pair, nu): the partials of s in r, mu and sigma (and,
// in the double backward, the second partials contracted with the cotangents) recomputed from the
// staged geometry, and the terms the finish sums written over the arrays the tiles no longer need:
// ds <- ds s_r (summed over nu: d(loss)/dr), s <- the mu term, bar_ds (double) or terms <- the sigma
// term, bar_s (double) <- ds second_r + bar_s s_r (summed over nu: the radial part of bar_dist).
// Ends with a barrier.
template <class T, bool DOUBLE>
__device__ void sender_finish_terms(int count, int nu, SenderShared<T>& sh) {
    const int NS = SplitTraits::nu_stride(nu);
    for (int item = threadIdx.x; item < count * nu; item += blockDim.x) {
        const int kk = item / nu, n = item - kk * nu, q = kk * NS + n;
        const StagedSensitivity<T> st = staged_sensitivity(sh, kk, n);
        const Sensitivity<T>& s = st.s;
        const T v_radial = st.v_radial;
        const T ds = sh.ds[q];
        sh.ds[q] = ds * s.s_r;
        if (!DOUBLE) {
            sh.s[q] = ds * s.s_mu;
            sh.terms[q] = ds * s.s_sigma;
            continue;
        }
        const SensitivitySecond<T> s2 = sensitivity_second<T>(st.inv_r, st.inv_mu, st.sigma, st.cut);
        HIPNNTS_FLOPS(kSecondPartialFlops);
        const T vmu = sh.v_mu[n], vsig = sh.v_sigma[n], bar_s = sh.bar_s[q];
        sh.bar_s[q] = ds * (v_radial * s2.rr + vmu * s2.rmu + vsig * s2.rsigma) + bar_s * s.s_r;
        sh.s[q] = ds * (v_radial * s2.rmu + vmu * s2.mumu + vsig * s2.musigma) + bar_s * s.s_mu;
        sh.bar_ds[q] = ds * (v_radial * s2.rsigma + vmu * s2.musigma + vsig * s2.sigmasigma) + bar_s * s.s_sigma;
    }
    __syncthreads();
}

// Rows [:, f0 : f0 + tile] of the (nu, F) block `src` into `dst` (zero beyond the last feature).
template <class T>
__device__ void stage_tile(gptr<const T> src, int nu, int features, int f0, sptr<T> dst) {
    const int W = SplitTraits::row_stride(blockDim.x), f = f0 + int(threadIdx.x);
    for (int n = 0; n < nu; ++n) dst[n * W + threadIdx.x] = f < features ? src[index_t(n) * features + f] : T(0);
}

// What sender_contract_kernel writes: t (P, F); DOUBLE: bar_dt (P, F).
template <class T>
struct ContractArgs {
    gptr<T> t, bar_dt;
};

// t[p, :] = sum_nu s_p[nu] Y[j, nu, :] for every pair p whose sender is block j; DOUBLE also
// bar_dt[p, :] = sum_nu bar_ds_p[nu] Y[j, nu, :] + s_p[nu] v_Y[j, nu, :].
template <class T, bool DOUBLE>
__global__ void sender_contract_kernel(InteractionView<T> v, CotangentView<T> cot, ContractArgs<T> a) {
    HIPNNTS_DYNAMIC_SHARED(unsigned char, smem);
    SharedCarver carver{smem};
    SenderShared<T> sh = SenderShared<T>::carve(carver, v.nu, blockDim.x, false, DOUBLE);
    const index_t j = blockIdx.x, start = v.sender_ptr[j], end = v.sender_ptr[j + 1];
    if (start == end) return;
    const int tid = threadIdx.x, F = v.features, nu = v.nu;
    const int W = SplitTraits::row_stride(blockDim.x), NS = SplitTraits::nu_stride(nu);
    const bool has_vy = DOUBLE && cot.v_Y != nullptr;
    stage_constants<T, DOUBLE>(v, cot, sh);
    int staged_f0 = -1;
    for (index_t c0 = start; c0 < end; c0 += SplitTraits::pairs) {
        const int count = int(min_index(SplitTraits::pairs, end - c0));
        __syncthreads();  // the previous chunk is consumed (and the constants are staged)
        stage_sender_chunk<T, DOUBLE>(v, cot, c0, count, sh, false);
        for (int f0 = 0; f0 < F; f0 += blockDim.x) {
            if (f0 != staged_f0) {
                __syncthreads();
                stage_tile<T>(v.Y + j * nu * F, nu, F, f0, sh.y);
                if (has_vy) stage_tile<T>(cot.v_Y + j * nu * F, nu, F, f0, sh.v_y);
                staged_f0 = f0;
                __syncthreads();
            }
            const int f = f0 + tid;
            if (f >= F) continue;
            for (int kk = 0; kk < count; ++kk) {
                T t = T(0), bar_dt = T(0);
                for (int n = 0; n < nu; ++n) {
                    const T y = sh.y[n * W + tid];
                    t += sh.s[kk * NS + n] * y;
                    if (DOUBLE) bar_dt += sh.bar_ds[kk * NS + n] * y;
                    if (has_vy) bar_dt += sh.s[kk * NS + n] * sh.v_y[n * W + tid];
                }
                HIPNNTS_FLOPS((DOUBLE ? (has_vy ? 6 : 4) : 2) * nu);
                a.t[sh.pair[kk] * F + f] = t;
                if (DOUBLE) a.bar_dt[sh.pair[kk] * F + f] = bar_dt;
            }
        }
    }
}

// What sender_kernel reads and writes besides the inputs.
template <class T>
struct SenderArgs {
    gptr<const T> dt, d_factors;        // (P, F), (P, C)
    gptr<const T> bar_t, bar_factors;   // double backward: (P, F), (P, C)
    Gradients<T> out;                   // writes grad_Y, grad_coord, mu_part and sigma_part (per sender)
};

// The pair-vector gradient of pair kk of the chunk (after sender_finish_terms): backward from
// d(loss)/dr and d_factors; DOUBLE also from the radial part of bar_dist, bar_factors and v_coord.
template <class T, int LMAX, bool DOUBLE>
__device__ void pair_gradient(const SenderShared<T>& sh, const SenderArgs<T>& a, const CotangentView<T>& cot, int kk,
                              int nu, T* out) {
    constexpr int C = n_components(LMAX), G = SplitTraits::geometry;
    const int NS = SplitTraits::nu_stride(nu);
    const index_t p = sh.pair[kk];
    const sptr<T> geo = sh.geometry + kk * G;
    const Pair<T> pr{geo[0], geo[1], geo[2], geo[3], geo[4]};
    T d_factors[C], bar_factors[C], vc[3] = {}, d_dist = T(0), bar_dist = T(0);
    for (int c = 0; c < C; ++c) d_factors[c] = a.d_factors[p * C + c];
    for (int n = 0; n < nu; ++n) d_dist += sh.ds[kk * NS + n];
    HIPNNTS_FLOPS(nu + 40);
    if (DOUBLE) {
        for (int c = 0; c < C; ++c) bar_factors[c] = a.bar_factors[p * C + c];
        for (int x = 0; x < 3; ++x) vc[x] = cot.v_coord[3 * p + x];
        for (int n = 0; n < nu; ++n) bar_dist += sh.bar_s[kk * NS + n];
        HIPNNTS_FLOPS(nu + 80);
    }
    pair_vector_gradient<T, LMAX, DOUBLE>(pr, d_factors, d_dist, bar_factors, bar_dist, vc, geo[8], out);
}

// Sender side of the backward (DOUBLE: of the double backward), one block per sender j: grad_Y_j
// and the per-pair reductions over the feature tiles, then each pair's gradient and j's mu and
// sigma partials.
template <class T, int LMAX, bool DOUBLE>
__global__ void sender_kernel(InteractionView<T> v, CotangentView<T> cot, SenderArgs<T> a) {
    HIPNNTS_DYNAMIC_SHARED(unsigned char, smem);
    SharedCarver carver{smem};
    SenderShared<T> sh = SenderShared<T>::carve(carver, v.nu, blockDim.x, true, DOUBLE);
    const index_t j = blockIdx.x, start = v.sender_ptr[j], end = v.sender_ptr[j + 1];
    const int tid = threadIdx.x, F = v.features, nu = v.nu;
    const int W = SplitTraits::row_stride(blockDim.x), NS = SplitTraits::nu_stride(nu);
    const bool has_vy = DOUBLE && cot.v_Y != nullptr;
    const gptr<T> grad_Y = gptr<T>(a.out.grad_Y) + j * nu * F, grad_coord = a.out.grad_coord;
    const gptr<T> mu_part = a.out.mu_part, sigma_part = a.out.sigma_part;
    if (start == end) {  // no pairs: zero gradients
        for (int f = tid; f < F; f += blockDim.x)
            for (int n = 0; n < nu; ++n) grad_Y[index_t(n) * F + f] = T(0);
        for (int n = tid; n < nu; n += blockDim.x) mu_part[j * nu + n] = sigma_part[j * nu + n] = T(0);
        return;
    }
    stage_constants<T, DOUBLE>(v, cot, sh);
    for (int n = tid; n < nu; n += blockDim.x) sh.g_mu[n] = sh.g_sigma[n] = T(0);
    int staged_f0 = -1;
    for (index_t c0 = start; c0 < end; c0 += SplitTraits::pairs) {
        const int count = int(min_index(SplitTraits::pairs, end - c0));
        __syncthreads();
        stage_sender_chunk<T, DOUBLE>(v, cot, c0, count, sh, true);
        for (int f0 = 0; f0 < F; f0 += blockDim.x) {
            const int f = f0 + tid, width = F - f0 < int(blockDim.x) ? F - f0 : int(blockDim.x);
            __syncthreads();  // the previous tile is consumed
            if (f0 != staged_f0) {
                stage_tile<T>(v.Y + j * nu * F, nu, F, f0, sh.y);
                if (has_vy) stage_tile<T>(cot.v_Y + j * nu * F, nu, F, f0, sh.v_y);
                staged_f0 = f0;
            }
            for (int kk = 0; kk < count; ++kk) {
                const index_t row = sh.pair[kk] * F + f;
                sh.rows[kk * W + tid] = f < F ? a.dt[row] : T(0);
                if (DOUBLE) sh.rows2[kk * W + tid] = f < F ? a.bar_t[row] : T(0);
            }
            __syncthreads();
            if (f < F) {  // grad_Y_j[:, f], accumulated over the chunks in place
                for (int n = 0; n < nu; ++n) {
                    T g = c0 == start ? T(0) : grad_Y[index_t(n) * F + f];
                    for (int kk = 0; kk < count; ++kk) {
                        const int q = kk * NS + n;
                        g += DOUBLE ? sh.s[q] * sh.rows2[kk * W + tid] + sh.bar_ds[q] * sh.rows[kk * W + tid]
                                    : sh.s[q] * sh.rows[kk * W + tid];
                    }
                    grad_Y[index_t(n) * F + f] = g;
                }
                HIPNNTS_FLOPS((DOUBLE ? 4 : 2) * nu * count);
            }
            for (int item = tid; item < count * nu; item += blockDim.x) {  // over the tile: ds, bar_s
                const int kk = item / nu, n = item - kk * nu, q = kk * NS + n;
                T ds = T(0), bar_s = T(0);
                for (int x = 0; x < width; ++x) {
                    const T y = sh.y[n * W + x], dt = sh.rows[kk * W + x];
                    ds += y * dt;
                    if (DOUBLE) bar_s += y * sh.rows2[kk * W + x];
                    if (has_vy) bar_s += sh.v_y[n * W + x] * dt;
                }
                HIPNNTS_FLOPS((DOUBLE ? (has_vy ? 6 : 4) : 2) * width);
                sh.ds[q] += ds;
                if (DOUBLE) sh.bar_s[q] += bar_s;
            }
        }
        __syncthreads();  // the reductions are complete
        sender_finish_terms<T, DOUBLE>(count, nu, sh);
        for (int kk = tid; kk < count; kk += blockDim.x) {
            T g[3];
            pair_gradient<T, LMAX, DOUBLE>(sh, a, cot, kk, nu, g);
            for (int x = 0; x < 3; ++x) grad_coord[3 * sh.pair[kk] + x] = g[x];
        }
        for (int n = tid; n < nu; n += blockDim.x) {
            T g_mu = sh.g_mu[n], g_sigma = sh.g_sigma[n];
            const sptr<T> sigma_terms = DOUBLE ? sh.bar_ds : sh.terms;
            for (int kk = 0; kk < count; ++kk) {
                g_mu += sh.s[kk * NS + n];
                g_sigma += sigma_terms[kk * NS + n];
            }
            HIPNNTS_FLOPS(2 * count);
            sh.g_mu[n] = g_mu;
            sh.g_sigma[n] = g_sigma;
        }
    }
    __syncthreads();
    for (int n = tid; n < nu; n += blockDim.x) {
        mu_part[j * nu + n] = sh.g_mu[n];
        sigma_part[j * nu + n] = sh.g_sigma[n];
    }
}

// --- receiver side -----------------------------------------------------------------------------

// Pair ids and angular factors (DOUBLE: and bar_A, the factors' derivative along the tangential part
// of v_coord / r) of receiver chunk c0 into sh, one thread per pair.
template <class T, int LMAX, bool DOUBLE>
__device__ void stage_receiver_factors(const InteractionView<T>& v, const CotangentView<T>& cot, index_t c0,
                                       int count, ReceiverShared<T>& sh) {
    constexpr int C = n_components(LMAX);
    for (int kk = threadIdx.x; kk < count; kk += blockDim.x) {
        const index_t p = v.order[c0 + kk];
        const Pair<T> pr = load_pair(v.coord, p);
        HIPNNTS_FLOPS(kGeometryFlops);
        sh.pair[kk] = p;
        angular_factors<T, LMAX>(pr.ux, pr.uy, pr.uz, sh.factors + kk * C);
        if (DOUBLE) {
            const T vc[3] = {cot.v_coord[3 * p], cot.v_coord[3 * p + 1], cot.v_coord[3 * p + 2]};
            const T v_radial = vc[0] * pr.ux + vc[1] * pr.uy + vc[2] * pr.uz;
            angular_jvp<T, LMAX>(pr.ux, pr.uy, pr.uz, (vc[0] - v_radial * pr.ux) * pr.inv_r,
                                 (vc[1] - v_radial * pr.uy) * pr.inv_r, (vc[2] - v_radial * pr.uz) * pr.inv_r,
                                 sh.bar_factors + kk * C);
        }
    }
}

// out[i, f] for one feature tile: m_i = sum over i's pairs of A_p t_p, then the invariants.
template <class T, int LMAX>
__global__ void receiver_forward_kernel(InteractionView<T> v, gptr<const T> __restrict__ t, gptr<T> __restrict__ out) {
    constexpr int C = n_components(LMAX);
    HIPNNTS_DYNAMIC_SHARED(unsigned char, smem);
    SharedCarver carver{smem};
    ReceiverShared<T> sh = ReceiverShared<T>::carve(carver, C, blockDim.x, false, false);
    const index_t i = blockIdx.x, start = v.ptr[i], end = v.ptr[i + 1];
    const int F = v.features, f = int(blockIdx.y * blockDim.x + threadIdx.x);
    T m[C];
    for (int c = 0; c < C; ++c) m[c] = T(0);
    for (index_t c0 = start; c0 < end; c0 += SplitTraits::pairs) {
        const int count = int(min_index(SplitTraits::pairs, end - c0));
        __syncthreads();
        stage_receiver_factors<T, LMAX, false>(v, CotangentView<T>{}, c0, count, sh);
        __syncthreads();
        if (f >= F) continue;
        for (int kk = 0; kk < count; ++kk) {
            const T tv = t[sh.pair[kk] * F + f];
            for (int c = 0; c < C; ++c) m[c] += sh.factors[kk * C + c] * tv;
            HIPNNTS_FLOPS(2 * C);
        }
    }
    if (f >= F) return;
    T a1, a2;
    invariants<T, LMAX>(m, v.eps, a1, a2);
    T result = m[0];
    if (LMAX >= 1) result += v.lam1[f] * a1;
    if (LMAX >= 2) result += v.lam2[f] * a2;
    out[i * F + f] = result;
}

// What receiver_kernel reads and writes besides the inputs.
template <class T>
struct ReceiverArgs {
    gptr<const T> t, bar_dt, grad_out;  // (P, F), double backward: (P, F), (N, F)
    gptr<T> dt, d_factors;              // (P, F), (P, C)
    gptr<T> bar_t, bar_factors;         // double backward: (P, F), (P, C)
    Gradients<T> out;                   // writes lam1_part, lam2_part (at and above their lmax) and
                                        // the double backward's grad_grad_out
};

// Receiver side of the backward (DOUBLE: of the double backward), one block per receiver looping
// over feature tiles; per-pair outputs are accumulated over the tiles.
template <class T, int LMAX, bool DOUBLE>
__global__ void receiver_kernel(InteractionView<T> v, CotangentView<T> cot, ReceiverArgs<T> a) {
    constexpr int C = n_components(LMAX), K = SplitTraits::pairs;
    HIPNNTS_DYNAMIC_SHARED(unsigned char, smem);
    SharedCarver carver{smem};
    ReceiverShared<T> sh = ReceiverShared<T>::carve(carver, C, blockDim.x, true, DOUBLE);
    const index_t i = blockIdx.x, start = v.ptr[i], end = v.ptr[i + 1];
    const gptr<T> lam1_out = a.out.lam1_part, lam2_out = a.out.lam2_part;
    const int tid = threadIdx.x, F = v.features, W = SplitTraits::row_stride(blockDim.x);
    index_t staged_c0 = -1;  // the chunk whose factors are in sh, and the tile of its rows
    int staged_f0 = -1;
    // Brings chunk c0's factors and the rows of tile f0 into sh (each only when not already there).
    auto stage = [&](index_t c0, int count, int f0) {
        __syncthreads();
        if (c0 != staged_c0) {
            stage_receiver_factors<T, LMAX, DOUBLE>(v, cot, c0, count, sh);
            staged_c0 = c0;
            staged_f0 = -1;
        }
        if (f0 != staged_f0) {
            const int f = f0 + tid;
            for (int kk = 0; kk < count; ++kk) {
                const index_t row = v.order[c0 + kk] * F + f;
                sh.rows[kk * W + tid] = f < F ? a.t[row] : T(0);
                if (DOUBLE) sh.rows2[kk * W + tid] = f < F ? a.bar_dt[row] : T(0);
            }
            staged_f0 = f0;
        }
        __syncthreads();
    };
    for (int f0 = 0; f0 < F; f0 += blockDim.x) {
        const int f = f0 + tid, width = F - f0 < int(blockDim.x) ? F - f0 : int(blockDim.x);
        const bool active = f < F;
        T m[C], dm[C], bar_dm[C], bar_m[C];
        for (int c = 0; c < C; ++c) m[c] = dm[c] = bar_dm[c] = bar_m[c] = T(0);
        for (index_t c0 = start; c0 < end; c0 += K) {  // m
            const int count = int(min_index(K, end - c0));
            stage(c0, count, f0);
            if (!active) continue;
            for (int kk = 0; kk < count; ++kk)
                for (int c = 0; c < C; ++c) m[c] += sh.factors[kk * C + c] * sh.rows[kk * W + tid];
            HIPNNTS_FLOPS(2 * C * count);
        }
        T a1 = T(0), a2 = T(0), g = T(0), l1 = T(0), l2 = T(0);
        if (active) {
            invariants<T, LMAX>(m, v.eps, a1, a2);
            g = a.grad_out[i * F + f];
            l1 = LMAX >= 1 ? v.lam1[f] : T(0);
            l2 = LMAX >= 2 ? v.lam2[f] : T(0);
            d_out_d_m<T, LMAX>(m, g, l1, l2, a1, a2, dm);
            if (!DOUBLE && LMAX >= 1) lam1_out[i * F + f] = g * a1;
            if (!DOUBLE && LMAX >= 2) lam2_out[i * F + f] = g * a2;
        }
        if (DOUBLE) {
            for (index_t c0 = start; c0 < end; c0 += K) {  // bar_dm = sum_p A_p bar_dt_p + bar_A_p t_p
                const int count = int(min_index(K, end - c0));
                stage(c0, count, f0);
                if (!active) continue;
                for (int kk = 0; kk < count; ++kk)
                    for (int c = 0; c < C; ++c)
                        bar_dm[c] += sh.factors[kk * C + c] * sh.rows2[kk * W + tid] +
                                     sh.bar_factors[kk * C + c] * sh.rows[kk * W + tid];
                HIPNNTS_FLOPS(4 * C * count);
            }
            if (active) {
                const T v1 = LMAX >= 1 && cot.v_lam1 != nullptr ? cot.v_lam1[f] : T(0);
                const T v2 = LMAX >= 2 && cot.v_lam2 != nullptr ? cot.v_lam2[f] : T(0);
                T gg, lam1_part, lam2_part;
                invariants_reverse<T, LMAX>(m, bar_dm, g, l1, l2, a1, a2, v1, v2, bar_m, gg, lam1_part, lam2_part);
                gptr<T>(a.out.grad_grad_out)[i * F + f] = gg;
                if (LMAX >= 1) lam1_out[i * F + f] = lam1_part;
                if (LMAX >= 2) lam2_out[i * F + f] = lam2_part;
            }
        }
        __syncthreads();  // the previous tile's dm and bar_m are consumed
        for (int c = 0; c < C; ++c) {
            sh.dm[c * W + tid] = dm[c];
            if (DOUBLE) sh.bar_m[c * W + tid] = bar_m[c];
        }
        for (index_t c0 = start; c0 < end; c0 += K) {
            const int count = int(min_index(K, end - c0));
            stage(c0, count, f0);
            if (active) {  // dt = A . dm; bar_t = bar_A . dm + A . bar_m
                for (int kk = 0; kk < count; ++kk) {
                    T dt = T(0), bar_t = T(0);
                    for (int c = 0; c < C; ++c) {
                        dt += sh.factors[kk * C + c] * dm[c];
                        if (DOUBLE) bar_t += sh.bar_factors[kk * C + c] * dm[c] + sh.factors[kk * C + c] * bar_m[c];
                    }
                    a.dt[sh.pair[kk] * F + f] = dt;
                    if (DOUBLE) a.bar_t[sh.pair[kk] * F + f] = bar_t;
                }
                HIPNNTS_FLOPS((DOUBLE ? 6 : 2) * C * count);
            }
            for (int item = tid; item < count * C; item += blockDim.x) {  // over the tile: d_factors, bar_factors
                const int kk = item / C, c = item - kk * C;
                T d_factor = T(0), bar_factor = T(0);
                for (int x = 0; x < width; ++x) {
                    const T dmx = sh.dm[c * W + x], tx = sh.rows[kk * W + x];
                    d_factor += dmx * tx;
                    if (DOUBLE) bar_factor += dmx * sh.rows2[kk * W + x] + sh.bar_m[c * W + x] * tx;
                }
                HIPNNTS_FLOPS((DOUBLE ? 6 : 2) * width);
                const index_t out = sh.pair[kk] * C + c;
                a.d_factors[out] = f0 == 0 ? d_factor : a.d_factors[out] + d_factor;
                if (DOUBLE) a.bar_factors[out] = f0 == 0 ? bar_factor : a.bar_factors[out] + bar_factor;
            }
        }
    }
}

}  // namespace hipnnts
