// Forward and backward of the fused interaction, split into sender and receiver phases, so that
// every feature row of Y, t and dt is read once per pass (docs/kernels.md, "Kernel structure"):
//
//   sender_contract   block per sender j:    t_p = sum_nu s_p[nu] Y_j[nu] for j's pairs p
//   receiver_forward  block per (receiver i, feature tile):  m_i = sum_p A_p t_p, out_i
//   receiver_backward block per receiver i:  dm_i; dt_p = A_p . dm_i; dA_p = dm_i . t_p
//   sender_backward   block per sender j:    grad_Y_j = sum_p s_p (x) dt_p; ds_p = Y_j . dt_p; the
//                                            pair-vector gradient of p; j's mu and sigma partials
//
// Features run on the threads in tiles of SplitTraits::tile_features. Each pair's geometry (r, unit
// vector, cutoff) is computed once per kernel and its sensitivities once per (pair, nu); a
// sender's Y_j tile is staged once per chunk of SplitTraits::pairs pairs. Reductions over features
// are small products out of shared memory whose rows are padded to an odd stride (no bank
// conflicts). Every output element has one writer: no atomics, bitwise deterministic.
#pragma once

#include "interaction.cuh"

namespace hipnnts {

// Tile shape and launch traits of the split kernels: the one place to change them.
struct SplitTraits {
    static constexpr int pairs = 32;           // pairs staged per shared-memory chunk
    static constexpr int tile_features = 128;  // features per tile = threads per block (at most)
    static constexpr int geometry = 7;         // per pair: ux, uy, uz, r, 1/r, cutoff phi, dphi/dr

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

// FLOPs the traffic model counts for a pair's geometry (sqrt, division, cos, sin, products).
constexpr int kGeometryFlops = 20;

// Shared arrays of the sender kernels.
template <class T>
struct SenderShared {
    sptr<index_t> pair;                 // (K,) pair ids of the chunk
    sptr<T> geometry;                   // (K, SplitTraits::geometry)
    sptr<T> inv_mu, sigma;              // (nu,)
    sptr<T> s, s_r, s_mu, s_sigma, ds;  // (K, nu_stride); all but s in the backward only
    sptr<T> y;                          // (nu, row_stride): the sender's Y tile
    sptr<T> rows;                       // (K, row_stride): the chunk's dt rows (backward)
    sptr<T> g_mu, g_sigma;              // (nu,) the sender's partial gradients (backward)

    HIPNNTS_HD static SenderShared carve(SharedCarver& c, int nu, unsigned threads, bool backward) {
        constexpr int K = SplitTraits::pairs;
        const int per_pair = K * SplitTraits::nu_stride(nu), W = SplitTraits::row_stride(threads);
        SenderShared sh{};
        sh.pair = c.take<index_t>(K);
        sh.geometry = c.take<T>(K * SplitTraits::geometry);
        sh.inv_mu = c.take<T>(nu);
        sh.sigma = c.take<T>(nu);
        sh.s = c.take<T>(per_pair);
        sh.y = c.take<T>(size_t(nu) * W);
        if (backward) {
            sh.s_r = c.take<T>(per_pair);
            sh.s_mu = c.take<T>(per_pair);
            sh.s_sigma = c.take<T>(per_pair);
            sh.ds = c.take<T>(per_pair);
            sh.rows = c.take<T>(size_t(K) * W);
            sh.g_mu = c.take<T>(nu);
            sh.g_sigma = c.take<T>(nu);
        }
        return sh;
    }
};

// Shared arrays of the receiver kernels.
template <class T>
struct ReceiverTile {
    sptr<index_t> pair;  // (K,)
    sptr<T> factors;     // (K, C)
    sptr<T> rows;        // (K, row_stride): the chunk's t rows (backward)
    sptr<T> dm;          // (C, row_stride): d(loss)/dm of the tile (backward)

    HIPNNTS_HD static ReceiverTile carve(SharedCarver& c, int n_comp, unsigned threads, bool backward) {
        constexpr int K = SplitTraits::pairs;
        const int W = SplitTraits::row_stride(threads);
        ReceiverTile sh{};
        sh.pair = c.take<index_t>(K);
        sh.factors = c.take<T>(K * n_comp);
        if (backward) {
            sh.rows = c.take<T>(size_t(K) * W);
            sh.dm = c.take<T>(size_t(n_comp) * W);
        }
        return sh;
    }
};

// 1/mu and sigma into shared memory, once per block.
template <class T>
__device__ void stage_constants(const InteractionView<T>& v, SenderShared<T>& sh) {
    for (int n = threadIdx.x; n < v.nu; n += blockDim.x) {
        sh.inv_mu[n] = T(1) / v.mu[n];
        sh.sigma[n] = v.sigma[n];
    }
}

// Geometry of the chunk's pairs (one thread per pair), then their sensitivities (one thread per
// (pair, nu)), with the partials in r, mu and sigma when `partials`. Ends with the chunk visible.
template <class T>
__device__ void stage_sender_chunk(const InteractionView<T>& v, index_t c0, int count, SenderShared<T>& sh,
                                   bool partials) {
    constexpr int G = SplitTraits::geometry;
    const int nu = v.nu, NS = SplitTraits::nu_stride(nu);
    for (int kk = threadIdx.x; kk < count; kk += blockDim.x) {
        const index_t p = v.sender_order[c0 + kk];
        const Pair<T> pr = load_pair(v.coord, p);
        const Cutoff<T> cut = cutoff_terms(pr.r, v.k, v.rc);
        HIPNNTS_FLOPS(kGeometryFlops);
        sh.pair[kk] = p;
        const T values[G] = {pr.ux, pr.uy, pr.uz, pr.r, pr.inv_r, cut.phi, cut.dphi};
        for (int x = 0; x < G; ++x) sh.geometry[kk * G + x] = values[x];
    }
    __syncthreads();
    for (int item = threadIdx.x; item < count * nu; item += blockDim.x) {
        const int kk = item / nu, n = item - kk * nu;
        const Cutoff<T> cut{sh.geometry[kk * G + 5], sh.geometry[kk * G + 6], T(0)};
        const Sensitivity<T> s = sensitivity<T>(sh.geometry[kk * G + 4], sh.inv_mu[n], sh.sigma[n], cut);
        HIPNNTS_FLOPS(kSensitivityFlops);
        const int q = kk * NS + n;
        sh.s[q] = s.s;
        if (partials) {
            sh.s_r[q] = s.s_r;
            sh.s_mu[q] = s.s_mu;
            sh.s_sigma[q] = s.s_sigma;
            sh.ds[q] = T(0);
        }
    }
    __syncthreads();
}

// Y_j[:, f0 : f0 + tile] into sh.y (zero beyond the last feature); the caller synchronises.
template <class T>
__device__ void stage_sender_tile(const InteractionView<T>& v, index_t j, int f0, SenderShared<T>& sh) {
    const int W = SplitTraits::row_stride(blockDim.x), f = f0 + int(threadIdx.x);
    gptr<const T> y = v.Y + j * v.nu * v.features + f;
    for (int n = 0; n < v.nu; ++n) sh.y[n * W + threadIdx.x] = f < v.features ? y[index_t(n) * v.features] : T(0);
}

// t[p, :] = sum_nu s_p[nu] Y[j, nu, :] for every pair p whose sender is block j.
template <class T>
__global__ void sender_contract_kernel(InteractionView<T> v, gptr<T> __restrict__ t) {
    HIPNNTS_DYNAMIC_SHARED(unsigned char, smem);
    SharedCarver carver{smem};
    SenderShared<T> sh = SenderShared<T>::carve(carver, v.nu, blockDim.x, false);
    const index_t j = blockIdx.x, start = v.sender_ptr[j], end = v.sender_ptr[j + 1];
    if (start == end) return;
    const int tid = threadIdx.x, F = v.features, nu = v.nu;
    const int W = SplitTraits::row_stride(blockDim.x), NS = SplitTraits::nu_stride(nu);
    stage_constants(v, sh);
    int staged_f0 = -1;
    for (index_t c0 = start; c0 < end; c0 += SplitTraits::pairs) {
        const int count = int(min_index(SplitTraits::pairs, end - c0));
        __syncthreads();  // the previous chunk is consumed (and the constants are staged)
        stage_sender_chunk(v, c0, count, sh, false);
        for (int f0 = 0; f0 < F; f0 += blockDim.x) {
            if (f0 != staged_f0) {
                __syncthreads();
                stage_sender_tile(v, j, f0, sh);
                staged_f0 = f0;
                __syncthreads();
            }
            const int f = f0 + tid;
            if (f >= F) continue;
            for (int kk = 0; kk < count; ++kk) {
                T acc = T(0);
                for (int n = 0; n < nu; ++n) acc += sh.s[kk * NS + n] * sh.y[n * W + tid];
                HIPNNTS_FLOPS(2 * nu);
                t[sh.pair[kk] * F + f] = acc;
            }
        }
    }
}

// Pair ids and angular factors of receiver chunk c0 into sh (one thread per pair).
template <class T, int LMAX>
__device__ void stage_receiver_factors(const InteractionView<T>& v, index_t c0, int count, ReceiverTile<T>& sh) {
    constexpr int C = n_components(LMAX);
    for (int kk = threadIdx.x; kk < count; kk += blockDim.x) {
        const index_t p = v.order[c0 + kk];
        const Pair<T> pr = load_pair(v.coord, p);
        HIPNNTS_FLOPS(kGeometryFlops);
        sh.pair[kk] = p;
        angular_factors<T, LMAX>(pr.ux, pr.uy, pr.uz, sh.factors + kk * C);
    }
}

// out[i, f] for one feature tile: m_i = sum over i's pairs of A_p t_p, then the invariants.
template <class T, int LMAX>
__global__ void receiver_forward_kernel(InteractionView<T> v, gptr<const T> __restrict__ t, gptr<T> __restrict__ out) {
    constexpr int C = n_components(LMAX);
    HIPNNTS_DYNAMIC_SHARED(unsigned char, smem);
    SharedCarver carver{smem};
    ReceiverTile<T> sh = ReceiverTile<T>::carve(carver, C, blockDim.x, false);
    const index_t i = blockIdx.x, start = v.ptr[i], end = v.ptr[i + 1];
    const int F = v.features, f = int(blockIdx.y * blockDim.x + threadIdx.x);
    T m[C];
    for (int c = 0; c < C; ++c) m[c] = T(0);
    for (index_t c0 = start; c0 < end; c0 += SplitTraits::pairs) {
        const int count = int(min_index(SplitTraits::pairs, end - c0));
        __syncthreads();
        stage_receiver_factors<T, LMAX>(v, c0, count, sh);
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

// What receiver_backward_kernel reads and writes besides the inputs.
template <class T>
struct ReceiverBackwardArgs {
    gptr<const T> t, grad_out;  // (P, F), (N, F)
    gptr<T> dt, d_factors;      // (P, F), (P, C)
    gptr<T> lam1_part, lam2_part;  // (N, F), written below their lmax only
};

// Receiver side of the backward, one block per receiver looping over feature tiles: m and dm per
// feature; per pair dt = A . dm and d_factors = dm . t (accumulated over the tiles).
template <class T, int LMAX>
__global__ void receiver_backward_kernel(InteractionView<T> v, ReceiverBackwardArgs<T> a) {
    constexpr int C = n_components(LMAX), K = SplitTraits::pairs;
    HIPNNTS_DYNAMIC_SHARED(unsigned char, smem);
    SharedCarver carver{smem};
    ReceiverTile<T> sh = ReceiverTile<T>::carve(carver, C, blockDim.x, true);
    const index_t i = blockIdx.x, start = v.ptr[i], end = v.ptr[i + 1];
    const int tid = threadIdx.x, F = v.features, W = SplitTraits::row_stride(blockDim.x);
    index_t staged_c0 = -1;  // the chunk whose factors are in sh, and the tile of its rows
    int staged_f0 = -1;
    // Brings chunk c0's factors and the rows of tile f0 into sh (each only when not already there).
    auto stage = [&](index_t c0, int count, int f0) {
        __syncthreads();
        if (c0 != staged_c0) {
            stage_receiver_factors<T, LMAX>(v, c0, count, sh);
            staged_c0 = c0;
            staged_f0 = -1;
        }
        if (f0 != staged_f0) {
            const int f = f0 + tid;
            for (int kk = 0; kk < count; ++kk)
                sh.rows[kk * W + tid] = f < F ? a.t[v.order[c0 + kk] * F + f] : T(0);
            staged_f0 = f0;
        }
        __syncthreads();
    };
    for (int f0 = 0; f0 < F; f0 += blockDim.x) {
        const int f = f0 + tid, width = F - f0 < int(blockDim.x) ? F - f0 : int(blockDim.x);
        const bool active = f < F;
        T m[C], dm[C];
        for (int c = 0; c < C; ++c) m[c] = dm[c] = T(0);
        for (index_t c0 = start; c0 < end; c0 += K) {
            const int count = int(min_index(K, end - c0));
            stage(c0, count, f0);
            if (!active) continue;
            for (int kk = 0; kk < count; ++kk)
                for (int c = 0; c < C; ++c) m[c] += sh.factors[kk * C + c] * sh.rows[kk * W + tid];
            HIPNNTS_FLOPS(2 * C * count);
        }
        if (active) {
            T a1, a2;
            invariants<T, LMAX>(m, v.eps, a1, a2);
            const T g = a.grad_out[i * F + f];
            d_out_d_m<T, LMAX>(m, g, LMAX >= 1 ? v.lam1[f] : T(0), LMAX >= 2 ? v.lam2[f] : T(0), a1, a2, dm);
            if (LMAX >= 1) a.lam1_part[i * F + f] = g * a1;
            if (LMAX >= 2) a.lam2_part[i * F + f] = g * a2;
        }
        __syncthreads();  // the previous tile's dm is consumed
        for (int c = 0; c < C; ++c) sh.dm[c * W + tid] = dm[c];
        for (index_t c0 = start; c0 < end; c0 += K) {
            const int count = int(min_index(K, end - c0));
            stage(c0, count, f0);
            if (active) {
                for (int kk = 0; kk < count; ++kk) {
                    T dt = T(0);
                    for (int c = 0; c < C; ++c) dt += sh.factors[kk * C + c] * dm[c];
                    a.dt[sh.pair[kk] * F + f] = dt;
                }
                HIPNNTS_FLOPS(2 * C * count);
            }
            for (int item = tid; item < count * C; item += blockDim.x) {  // d_factors = dm . t over the tile
                const int kk = item / C, c = item - kk * C;
                T acc = T(0);
                for (int x = 0; x < width; ++x) acc += sh.dm[c * W + x] * sh.rows[kk * W + x];
                HIPNNTS_FLOPS(2 * width);
                gptr<T> out = a.d_factors + sh.pair[kk] * C + c;
                *out = f0 == 0 ? acc : *out + acc;
            }
        }
    }
}

// What sender_backward_kernel reads and writes besides the inputs.
template <class T>
struct SenderBackwardArgs {
    gptr<const T> dt, d_factors;         // (P, F), (P, C)
    gptr<T> grad_Y, grad_coord;          // (N, nu, F), (P, 3)
    gptr<T> mu_part, sigma_part;         // (N, nu) per sender
};

// Sender side of the backward, one block per sender j: grad_Y_j = sum_p s_p (x) dt_p and
// ds_p = Y_j . dt_p over the feature tiles, then per pair the pair-vector gradient from ds_p and
// d_factors_p, and j's partial gradients of mu and sigma.
template <class T, int LMAX>
__global__ void sender_backward_kernel(InteractionView<T> v, SenderBackwardArgs<T> a) {
    constexpr int C = n_components(LMAX), G = SplitTraits::geometry;
    HIPNNTS_DYNAMIC_SHARED(unsigned char, smem);
    SharedCarver carver{smem};
    SenderShared<T> sh = SenderShared<T>::carve(carver, v.nu, blockDim.x, true);
    const index_t j = blockIdx.x, start = v.sender_ptr[j], end = v.sender_ptr[j + 1];
    const int tid = threadIdx.x, F = v.features, nu = v.nu;
    const int W = SplitTraits::row_stride(blockDim.x), NS = SplitTraits::nu_stride(nu);
    gptr<T> grad_Y = a.grad_Y + j * nu * F;
    if (start == end) {  // no pairs: zero gradients
        for (int f = tid; f < F; f += blockDim.x)
            for (int n = 0; n < nu; ++n) grad_Y[index_t(n) * F + f] = T(0);
        for (int n = tid; n < nu; n += blockDim.x) a.mu_part[j * nu + n] = a.sigma_part[j * nu + n] = T(0);
        return;
    }
    stage_constants(v, sh);
    for (int n = tid; n < nu; n += blockDim.x) sh.g_mu[n] = sh.g_sigma[n] = T(0);
    int staged_f0 = -1;
    for (index_t c0 = start; c0 < end; c0 += SplitTraits::pairs) {
        const int count = int(min_index(SplitTraits::pairs, end - c0));
        __syncthreads();
        stage_sender_chunk(v, c0, count, sh, true);
        for (int f0 = 0; f0 < F; f0 += blockDim.x) {
            const int f = f0 + tid, width = F - f0 < int(blockDim.x) ? F - f0 : int(blockDim.x);
            __syncthreads();  // the previous tile is consumed
            if (f0 != staged_f0) {
                stage_sender_tile(v, j, f0, sh);
                staged_f0 = f0;
            }
            for (int kk = 0; kk < count; ++kk) sh.rows[kk * W + tid] = f < F ? a.dt[sh.pair[kk] * F + f] : T(0);
            __syncthreads();
            if (f < F) {
                for (int n = 0; n < nu; ++n) {
                    T g = c0 == start ? T(0) : grad_Y[index_t(n) * F + f];
                    for (int kk = 0; kk < count; ++kk) g += sh.s[kk * NS + n] * sh.rows[kk * W + tid];
                    grad_Y[index_t(n) * F + f] = g;
                }
                HIPNNTS_FLOPS(2 * nu * count);
            }
            for (int item = tid; item < count * nu; item += blockDim.x) {  // ds = Y_j . dt over the tile
                const int kk = item / nu, n = item - kk * nu;
                T acc = T(0);
                for (int x = 0; x < width; ++x) acc += sh.y[n * W + x] * sh.rows[kk * W + x];
                HIPNNTS_FLOPS(2 * width);
                sh.ds[kk * NS + n] += acc;
            }
        }
        __syncthreads();  // ds is complete
        for (int kk = tid; kk < count; kk += blockDim.x) {
            const index_t p = sh.pair[kk];
            sptr<T> geo = sh.geometry + kk * G;
            const Pair<T> pr{geo[0], geo[1], geo[2], geo[3], geo[4]};
            T d_dist = T(0), d_factors[C], d_unit[3], g[3];
            for (int n = 0; n < nu; ++n) d_dist += sh.ds[kk * NS + n] * sh.s_r[kk * NS + n];
            for (int c = 0; c < C; ++c) d_factors[c] = a.d_factors[p * C + c];
            unit_gradient<T, LMAX>(pr.ux, pr.uy, pr.uz, d_factors, d_unit);
            chain_to_coord(pr, d_unit, d_dist, g);
            HIPNNTS_FLOPS(2 * nu + 40);
            for (int x = 0; x < 3; ++x) a.grad_coord[3 * p + x] = g[x];
        }
        for (int n = tid; n < nu; n += blockDim.x) {
            T g_mu = sh.g_mu[n], g_sigma = sh.g_sigma[n];
            for (int kk = 0; kk < count; ++kk) {
                g_mu += sh.ds[kk * NS + n] * sh.s_mu[kk * NS + n];
                g_sigma += sh.ds[kk * NS + n] * sh.s_sigma[kk * NS + n];
            }
            HIPNNTS_FLOPS(4 * count);
            sh.g_mu[n] = g_mu;
            sh.g_sigma[n] = g_sigma;
        }
    }
    __syncthreads();
    for (int n = tid; n < nu; n += blockDim.x) {
        a.mu_part[j * nu + n] = sh.g_mu[n];
        a.sigma_part[j * nu + n] = sh.g_sigma[n];
    }
}

}  // namespace hipnnts
