// The interaction's molecule kernels: one block per (molecule, tile of W = 32 or 16 features) keeps
// every per-pair row on chip, so a pass reads Y (and v_Y), the pair vectors and their cotangents
// from global memory and writes its outputs, and nothing passes between kernels (docs/kernels.md,
// "Molecule kernels"). A molecule is an atom range that no pair crosses
// (pair_index.molecule_ranges); the launcher takes this path when nu <= 32 and the largest molecule
// fits in shared memory at W = 32, else at 16, else it runs the split kernels (split.cuh).
//
//   stage     the molecule's Y tile (atoms x nu x W; DOUBLE: v_Y's too), each pair's geometry (once
//             per block), each pair's sender in the molecule, and each sender's pairs as receiver slots
//   receiver  warp per receiver i, lane per feature (lanes >= W idle): per pair, lane nu computes
//             s_p[nu] into the warp's scratch, then t_p = sum_nu s_p[nu] Y_j[nu]; m_i = sum_p A_p t_p,
//             the invariants. Backward: dm_i, dt_p = A_p . dm_i (rows in shared memory) and the tile's
//             part of d_factors_p = dm_i . t_p (lane c sums the warp's products for component c);
//             DOUBLE also bar_dt_p, bar_dm_i, the invariants in reverse, bar_t_p and bar_factors_p
//   sender    warp per sender j (derivative levels): grad_Y_j = sum_p s_p (x) dt_p in registers
//             (DOUBLE: s_p (x) bar_t_p + bar_ds_p (x) dt_p), the tile's part of ds_p = Y_j . dt_p
//             (lane nu; DOUBLE: bar_s_p), and from them the tile's parts of each pair's
//             vector gradient and of j's mu and sigma partials
//
// The pair-vector gradient is linear in d_factors, d_dist (and bar_factors, bar_dist), the mu and
// sigma partials in ds (and bar_s): each tile writes its parts (the receiver phase the factors',
// the sender phase the distance's) and tile_sum_kernel adds them in a fixed order. No atomics,
// bitwise deterministic; grad_Y, out, lam*_part and grad_grad_out have one writer per element.
// Warps exchange values through shared scratch between __syncwarp()s rather than by shuffles.
#pragma once

#include "interaction.cuh"

namespace hipnnts {

// Tile shape and launch traits of the molecule kernels: the one place to change them.
struct MoleculeTraits {
    // Features per tile (a row's length): 32, the lanes of a warp, or 16 where a molecule's block
    // does not fit at 32 (half of each warp's lanes then idle in the feature loops).
    static constexpr int widths[2] = {32, 16};
    static constexpr int warps = 8;           // warps per block; receivers and senders go round them
    static constexpr int threads = 32 * warps;
    static constexpr int max_nu = 32;         // one sensitivity per lane
    static constexpr int max_components = 9;  // C at lmax 2
    // Per pair: ux, uy, uz, 1/r, cutoff phi, dphi/dr; the double backward adds d2phi/dr2, the pair's
    // cotangent v_coord (3) and v_radial = v_coord . u.
    static constexpr int geometry = 6, geometry_double = 11;
    // A warp's scratch: s (32), bar_ds (32), then max_components rows of 32 products.
    static constexpr int scratch = 64 + 32 * max_components;

    HIPNNTS_HD static unsigned tiles(int features, int width) { return unsigned((features + width - 1) / width); }
};

// The molecules' view: atom ranges and, per pair, its position in the receiver order; the launch's
// tile width.
struct MoleculeView {
    gptr<const index_t> ptr;            // (M + 1,) atom ranges no pair crosses
    gptr<const index_t> receiver_rank;  // (P,) position of each pair in the receiver order
    int width;                          // features per tile (MoleculeTraits::widths)
};

// What the molecule kernels stage, for a molecule of at most `atoms` atoms and `pairs` pairs.
// (`backward`: the derivative levels' arrays; `dbl`: the double backward's.) Rows hold the `width`
// features of a tile; a lane that walks a row reads it rotated by its lane, so that lanes on
// different rows read different banks (two lanes per bank at width 16).
template <class T>
struct MoleculeShared {
    sptr<T> y, v_y;                  // (atoms * nu, width): the molecule's Y (and v_Y) tile
    sptr<T> geometry;                // (pairs, geometry stride) by receiver slot
    int geometry_stride, width;
    sptr<T> inv_mu, sigma;           // (nu,)
    sptr<T> v_mu, v_sigma;           // (nu,) double backward
    sptr<int> sender;                // (pairs,) the sender of each receiver slot, in the molecule
    sptr<int> slot;                  // (pairs,) the receiver slot of each sender position
    sptr<index_t> pair;              // (pairs,) the pair id of each receiver slot (derivative levels)
    sptr<T> rows, rows2;             // (pairs, width): t, then dt (DOUBLE: bar_dt, then bar_t)
    sptr<T> scratch;                 // (warps, MoleculeTraits::scratch)

    HIPNNTS_HD static MoleculeShared carve(SharedCarver& c, int atoms, int pairs, int nu, int width, bool backward,
                                           bool dbl) {
        const int W = width;
        MoleculeShared sh{};
        sh.width = width;
        sh.geometry_stride = dbl ? MoleculeTraits::geometry_double : MoleculeTraits::geometry;
        sh.y = c.take<T>(size_t(atoms) * nu * W);
        sh.geometry = c.take<T>(size_t(pairs) * sh.geometry_stride);
        sh.inv_mu = c.take<T>(nu);
        sh.sigma = c.take<T>(nu);
        sh.sender = c.take<int>(pairs);
        sh.slot = c.take<int>(pairs);
        sh.scratch = c.take<T>(size_t(MoleculeTraits::warps) * MoleculeTraits::scratch);
        if (backward) {
            sh.pair = c.take<index_t>(pairs);
            sh.rows = c.take<T>(size_t(pairs) * W);
        }
        if (dbl) {
            sh.v_y = c.take<T>(size_t(atoms) * nu * W);
            sh.v_mu = c.take<T>(nu);
            sh.v_sigma = c.take<T>(nu);
            sh.rows2 = c.take<T>(size_t(pairs) * W);
        }
        return sh;
    }

    // Carves the block's own molecule (its atoms and pairs) out of the dynamic shared buffer.
    template <class View>
    __device__ static MoleculeShared for_block(unsigned char* smem, const View& v, const MoleculeView& mol,
                                               bool backward, bool dbl) {
        SharedCarver carver{smem};
        const index_t a0 = mol.ptr[blockIdx.x], a1 = mol.ptr[blockIdx.x + 1];
        return carve(carver, int(a1 - a0), int(v.ptr[a1] - v.ptr[a0]), v.nu, mol.width, backward, dbl);
    }
};

// The block's molecule: atoms [a0, a0 + atoms), receiver slots [r0, r0 + pairs) of the receiver
// order, sender positions from s0 in the sender order, features [f0, f0 + width).
struct MoleculeSpan {
    index_t a0, r0, s0;
    int atoms, pairs, f0;
};

HIPNNTS_HD int lane_id() { return int(threadIdx.x) % 32; }
HIPNNTS_HD int warp_id() { return int(threadIdx.x) / 32; }

// This warp's scratch: s (32), bar_ds (32) and rows of 32 products.
template <class T>
struct WarpScratch {
    sptr<T> s, bar_ds, sums;

    __device__ static WarpScratch of(const sptr<T>& scratch) {
        const sptr<T> base = scratch + warp_id() * MoleculeTraits::scratch;
        return {base, base + 32, base + 64};
    }
    // Lane c < count: sum over the warp's lanes of row c of sums (read rotated: no bank conflicts).
    __device__ T row_sum(int count) const {
        const int c = lane_id();
        T sum = T(0);
        if (c < count)
            for (int x = 0; x < 32; ++x) sum += sums[c * 32 + ((x + c) & 31)];
        HIPNNTS_FLOPS(c < count ? 32 : 0);
        return sum;
    }
};

// Stages the block's molecule into sh and returns its span. Ends with a barrier. `cot` is read only
// when sh has the double backward's arrays (v_Y when given, else zeros).
template <class T>
__device__ __forceinline__ MoleculeSpan stage_molecule(const InteractionView<T>& v, const CotangentView<T>& cot,
                                                       const MoleculeView& mol, MoleculeShared<T>& sh) {
    const int G = sh.geometry_stride, W = sh.width;
    const bool dbl = G == MoleculeTraits::geometry_double;
    MoleculeSpan s;
    s.a0 = mol.ptr[blockIdx.x];
    s.atoms = int(mol.ptr[blockIdx.x + 1] - s.a0);
    s.r0 = v.ptr[s.a0];
    s.s0 = v.sender_ptr[s.a0];
    s.pairs = int(v.ptr[s.a0 + s.atoms] - s.r0);
    s.f0 = int(blockIdx.y) * W;
    const int tid = threadIdx.x, nu = v.nu, F = v.features;
    for (int n = tid; n < nu; n += blockDim.x) {
        sh.inv_mu[n] = T(1) / v.mu[n];
        sh.sigma[n] = v.sigma[n];
        if (dbl) {
            sh.v_mu[n] = cot.v_mu[n];
            sh.v_sigma[n] = cot.v_sigma[n];
        }
    }
    for (int item = tid; item < s.atoms * nu * W; item += blockDim.x) {  // 128-B rows of 32 floats: 4 sectors
        const int row = item / W, x = item - row * W, f = s.f0 + x;
        const index_t at = (s.a0 * nu + row) * F + f;
        sh.y[item] = f < F ? v.Y[at] : T(0);
        if (dbl) sh.v_y[item] = f < F && cot.v_Y != nullptr ? cot.v_Y[at] : T(0);
    }
    for (int r = tid; r < s.pairs; r += blockDim.x) {
        const index_t p = v.order[s.r0 + r];
        const Pair<T> pr = load_pair(v.coord, p);
        const Cutoff<T> cut = cutoff_terms(pr.r, v.k, v.rc);
        HIPNNTS_FLOPS(kGeometryFlops);
        const sptr<T> geo = sh.geometry + r * G;
        geo[0] = pr.ux;
        geo[1] = pr.uy;
        geo[2] = pr.uz;
        geo[3] = pr.inv_r;
        geo[4] = cut.phi;
        geo[5] = cut.dphi;
        if (sh.pair != nullptr) sh.pair[r] = p;
        if (!dbl) continue;
        const T vx = cot.v_coord[3 * p], vy = cot.v_coord[3 * p + 1], vz = cot.v_coord[3 * p + 2];
        geo[6] = cut.ddphi;
        geo[7] = vx;
        geo[8] = vy;
        geo[9] = vz;
        geo[10] = vx * pr.ux + vy * pr.uy + vz * pr.uz;
    }
    for (int a = warp_id(); a < s.atoms; a += MoleculeTraits::warps) {  // senders: warp per atom, lane per pair
        const index_t k0 = v.sender_ptr[s.a0 + a], k1 = v.sender_ptr[s.a0 + a + 1];
        for (index_t k = k0 + lane_id(); k < k1; k += 32) {
            const int r = int(mol.receiver_rank[v.sender_order[k]] - s.r0);
            sh.sender[r] = a;
            sh.slot[k - s.s0] = r;
        }
    }
    __syncthreads();
    return s;
}

// Sensitivity `lane` (zero at lane >= nu) of receiver slot r, with its first partials.
template <class T>
__device__ Sensitivity<T> lane_sensitivity(const MoleculeShared<T>& sh, int r, int nu) {
    const int n = lane_id();
    if (n >= nu) return {T(0), T(0), T(0), T(0)};
    const sptr<T> geo = sh.geometry + r * sh.geometry_stride;
    HIPNNTS_FLOPS(kSensitivityFlops);
    return sensitivity<T>(geo[3], sh.inv_mu[n], sh.sigma[n], Cutoff<T>{geo[4], geo[5], T(0)});
}

// bar_ds of receiver slot r at lane n (zero at n >= nu): the sensitivity's partials along the
// cotangents v_radial, v_mu, v_sigma (double backward).
template <class T>
__device__ T lane_bar_ds(const MoleculeShared<T>& sh, int r, const Sensitivity<T>& st, int nu) {
    const int n = lane_id();
    if (n >= nu) return T(0);
    const T v_radial = sh.geometry[r * sh.geometry_stride + 10];
    return v_radial * st.s_r + sh.v_mu[n] * st.s_mu + sh.v_sigma[n] * st.s_sigma;
}

template <class T, int LMAX>
__device__ void slot_factors(const MoleculeShared<T>& sh, int r, T* A) {
    const sptr<T> geo = sh.geometry + r * sh.geometry_stride;
    angular_factors<T, LMAX>(geo[0], geo[1], geo[2], A);
}

// bar_A of receiver slot r: the factors' derivative along the tangential part of v_coord / r.
template <class T, int LMAX>
__device__ void slot_factor_jvp(const MoleculeShared<T>& sh, int r, T* bar_A) {
    const sptr<T> geo = sh.geometry + r * sh.geometry_stride;
    const T ux = geo[0], uy = geo[1], uz = geo[2], inv_r = geo[3], v_radial = geo[10];
    angular_jvp<T, LMAX>(ux, uy, uz, (geo[7] - v_radial * ux) * inv_r, (geo[8] - v_radial * uy) * inv_r,
                         (geo[9] - v_radial * uz) * inv_r, bar_A);
}

// t (and, DOUBLE, bar_dt = bar_ds . Y_j + s . v_Y_j) of receiver slot r at this lane's feature, the
// sensitivities computed one per lane and read back from the warp's scratch.
template <class T, bool DOUBLE>
__device__ void contract(const MoleculeShared<T>& sh, const WarpScratch<T>& ws, int r, int nu, bool has_vy, T& t,
                         T& bar_dt) {
    const int W = sh.width;
    const Sensitivity<T> st = lane_sensitivity(sh, r, nu);
    ws.s[lane_id()] = st.s;
    if (DOUBLE) ws.bar_ds[lane_id()] = lane_bar_ds(sh, r, st, nu);
    __syncwarp();
    const int row0 = sh.sender[r] * nu * W + lane_id();
    t = bar_dt = T(0);
    for (int n = 0; n < nu && lane_id() < W; ++n) {
        const T sn = ws.s[n], y = sh.y[row0 + n * W];
        t += sn * y;
        if (DOUBLE) bar_dt += ws.bar_ds[n] * y;
        if (has_vy) bar_dt += sn * sh.v_y[row0 + n * W];
    }
    HIPNNTS_FLOPS((DOUBLE ? (has_vy ? 6 : 4) : 2) * nu);
    __syncwarp();  // the scratch is read
}

// out[i, f0 : f0 + 32] for every receiver i of the block's molecule.
template <class T, int LMAX>
__global__ void __launch_bounds__(MoleculeTraits::threads)
    molecule_forward_kernel(InteractionView<T> v, MoleculeView mol, gptr<T> out) {
    constexpr int C = n_components(LMAX);
    HIPNNTS_DYNAMIC_SHARED(unsigned char, smem);
    MoleculeShared<T> sh = MoleculeShared<T>::for_block(smem, v, mol, false, false);
    const MoleculeSpan s = stage_molecule(v, CotangentView<T>{}, mol, sh);
    const WarpScratch<T> ws = WarpScratch<T>::of(sh.scratch);
    const int f = s.f0 + lane_id();
    for (int a = warp_id(); a < s.atoms; a += MoleculeTraits::warps) {
        const index_t i = s.a0 + a;
        T m[C], a1, a2;
        for (int c = 0; c < C; ++c) m[c] = T(0);
        for (int r = int(v.ptr[i] - s.r0); r < int(v.ptr[i + 1] - s.r0); ++r) {
            T t, unused, A[C];
            contract<T, false>(sh, ws, r, v.nu, false, t, unused);
            slot_factors<T, LMAX>(sh, r, A);
            for (int c = 0; c < C; ++c) m[c] += A[c] * t;
            HIPNNTS_FLOPS(2 * C);
        }
        if (lane_id() >= sh.width || f >= v.features) continue;
        invariants<T, LMAX>(m, v.eps, a1, a2);
        T result = m[0];
        if (LMAX >= 1) result += v.lam1[f] * a1;
        if (LMAX >= 2) result += v.lam2[f] * a2;
        out[i * v.features + f] = result;
    }
}

// What molecule_backward_kernel writes: grad_Y, lam*_part and (DOUBLE) grad_grad_out directly, the
// per-tile parts of the pair-vector gradient (2 tiles, P, 3: the factors' parts, then the distance's)
// and of mu and sigma (tiles, N, nu), which tile_sum_kernel adds.
template <class T>
struct MoleculeBackwardArgs {
    gptr<const T> grad_out;                      // (N, F)
    Gradients<T> out;                            // writes grad_Y, lam1_part, lam2_part (at and above
                                                 // their lmax) and the double backward's grad_grad_out
    gptr<T> coord_parts, mu_parts, sigma_parts;  // (2 tiles, P, 3), (tiles, N, nu) x 2
};

// A tile's part of receiver slot r's pair-vector gradient, from parts of the factor gradients
// d_factors, bar_factors (DOUBLE) and of d_dist, bar_dist (DOUBLE); lanes 0 to 2 write
// parts[pair * 3 + lane].
template <class T, int LMAX, bool DOUBLE>
__device__ void write_pair_part(const MoleculeShared<T>& sh, int r, const T* d_factors, T d_dist,
                                const T* bar_factors, T bar_dist, gptr<T> parts) {
    const int lane = lane_id();
    const sptr<T> geo = sh.geometry + r * sh.geometry_stride;
    const Pair<T> pr{geo[0], geo[1], geo[2], T(1) / geo[3], geo[3]};
    T vc[3] = {}, g[3];
    if (DOUBLE)
        for (int x = 0; x < 3; ++x) vc[x] = geo[7 + x];
    pair_vector_gradient<T, LMAX, DOUBLE>(pr, d_factors, d_dist, bar_factors, bar_dist, vc,
                                          DOUBLE ? geo[10] : T(0), g);
    HIPNNTS_FLOPS(lane == 0 ? (DOUBLE ? 120 : 40) : 0);  // the lanes compute it alike: counted once
    if (lane < 3) parts[sh.pair[r] * 3 + lane] = lane == 0 ? g[0] : (lane == 1 ? g[1] : g[2]);
}

// The backward (DOUBLE: the double backward) of one (molecule, feature tile).
template <class T, int LMAX, bool DOUBLE>
__global__ void __launch_bounds__(MoleculeTraits::threads)
    molecule_backward_kernel(InteractionView<T> v, MoleculeView mol, CotangentView<T> cot, MoleculeBackwardArgs<T> a) {
    constexpr int C = n_components(LMAX), NU = MoleculeTraits::max_nu;
    HIPNNTS_DYNAMIC_SHARED(unsigned char, smem);
    MoleculeShared<T> sh = MoleculeShared<T>::for_block(smem, v, mol, true, DOUBLE);
    const MoleculeSpan s = stage_molecule(v, cot, mol, sh);
    const WarpScratch<T> ws = WarpScratch<T>::of(sh.scratch);
    const int lane = lane_id(), f = s.f0 + lane, F = v.features, nu = v.nu, W = sh.width;
    // (feature: this lane has a feature of the tile, zero rows beyond the last one; active: a real one)
    const bool feature = lane < W, active = feature && f < F, has_vy = DOUBLE && cot.v_Y != nullptr;
    const index_t tile = blockIdx.y, tiles = gridDim.y;
    const gptr<T> factor_parts = a.coord_parts + tile * v.n_pairs * 3;
    const gptr<T> dist_parts = a.coord_parts + (tiles + tile) * v.n_pairs * 3;
    // Receivers: m (DOUBLE: bar_dm), dm (bar_m), dt (bar_t) rows and the factors' parts.
    for (int ra = warp_id(); ra < s.atoms; ra += MoleculeTraits::warps) {
        const index_t i = s.a0 + ra;
        const int q0 = int(v.ptr[i] - s.r0), q1 = int(v.ptr[i + 1] - s.r0);
        T m[C], dm[C], bar_dm[C], bar_m[C];
        for (int c = 0; c < C; ++c) m[c] = dm[c] = bar_dm[c] = bar_m[c] = T(0);
        for (int r = q0; r < q1; ++r) {
            T t, bar_dt, A[C], bar_A[C];
            contract<T, DOUBLE>(sh, ws, r, nu, has_vy, t, bar_dt);
            slot_factors<T, LMAX>(sh, r, A);
            for (int c = 0; c < C; ++c) m[c] += A[c] * t;
            if (DOUBLE) {
                slot_factor_jvp<T, LMAX>(sh, r, bar_A);
                for (int c = 0; c < C; ++c) bar_dm[c] += A[c] * bar_dt + bar_A[c] * t;
                if (feature) sh.rows2[r * W + lane] = bar_dt;
            }
            HIPNNTS_FLOPS((DOUBLE ? 6 : 2) * C);
            if (feature) sh.rows[r * W + lane] = t;
        }
        if (active) {
            T a1, a2;
            invariants<T, LMAX>(m, v.eps, a1, a2);
            const T g = a.grad_out[i * F + f];
            const T l1 = LMAX >= 1 ? v.lam1[f] : T(0), l2 = LMAX >= 2 ? v.lam2[f] : T(0);
            d_out_d_m<T, LMAX>(m, g, l1, l2, a1, a2, dm);
            T lam1_part = g * a1, lam2_part = g * a2;
            if (DOUBLE) {
                const T v1 = LMAX >= 1 && cot.v_lam1 != nullptr ? cot.v_lam1[f] : T(0);
                const T v2 = LMAX >= 2 && cot.v_lam2 != nullptr ? cot.v_lam2[f] : T(0);
                T gg;
                invariants_reverse<T, LMAX>(m, bar_dm, g, l1, l2, a1, a2, v1, v2, bar_m, gg, lam1_part, lam2_part);
                gptr<T>(a.out.grad_grad_out)[i * F + f] = gg;
            }
            if (LMAX >= 1) gptr<T>(a.out.lam1_part)[i * F + f] = lam1_part;
            if (LMAX >= 2) gptr<T>(a.out.lam2_part)[i * F + f] = lam2_part;
        }
        for (int r = q0; r < q1; ++r) {  // dt = A . dm; DOUBLE: bar_t = bar_A . dm + A . bar_m
            T A[C], bar_A[C], dt = T(0), bar_t = T(0), d_factors[C], bar_factors[C] = {};
            slot_factors<T, LMAX>(sh, r, A);
            if (DOUBLE) slot_factor_jvp<T, LMAX>(sh, r, bar_A);
            const T t = feature ? sh.rows[r * W + lane] : T(0);
            const T bar_dt = DOUBLE && feature ? sh.rows2[r * W + lane] : T(0);
            for (int c = 0; c < C; ++c) {
                dt += A[c] * dm[c];
                if (DOUBLE) bar_t += bar_A[c] * dm[c] + A[c] * bar_m[c];
                ws.sums[c * 32 + lane] = dm[c] * t;
            }
            HIPNNTS_FLOPS((DOUBLE ? 7 : 3) * C);
            if (feature) sh.rows[r * W + lane] = dt;
            if (DOUBLE && feature) sh.rows2[r * W + lane] = bar_t;
            __syncwarp();
            const T d_factor = ws.row_sum(C);  // lane c: the tile's part of d_factors[c]
            if (lane < C) ws.s[lane] = d_factor;
            if (DOUBLE) {
                __syncwarp();  // the products are read
                for (int c = 0; c < C; ++c) ws.sums[c * 32 + lane] = dm[c] * bar_dt + bar_m[c] * t;
                HIPNNTS_FLOPS(3 * C);
                __syncwarp();
                const T bar_factor = ws.row_sum(C);
                if (lane < C) ws.bar_ds[lane] = bar_factor;
            }
            __syncwarp();
            for (int c = 0; c < C; ++c) {
                d_factors[c] = ws.s[c];
                if (DOUBLE) bar_factors[c] = ws.bar_ds[c];
            }
            write_pair_part<T, LMAX, DOUBLE>(sh, r, d_factors, T(0), bar_factors, T(0), factor_parts);
            __syncwarp();  // the scratch is read
        }
    }
    __syncthreads();  // every row is written
    // Senders: grad_Y_j, ds (DOUBLE: bar_s), the distance's part of each pair's gradient, and
    // mu / sigma's tile parts.
    for (int sa = warp_id(); sa < s.atoms; sa += MoleculeTraits::warps) {
        const index_t j = s.a0 + sa;
        const int k0 = int(v.sender_ptr[j] - s.s0), k1 = int(v.sender_ptr[j + 1] - s.s0);
        const int row0 = (sa * nu + lane) * W;  // lane n's row of Y_j (v_Y_j)
        T gY[NU], mu_part = T(0), sigma_part = T(0);
        HIPNNTS_UNROLL
        for (int n = 0; n < NU; ++n) gY[n] = T(0);
        for (int k = k0; k < k1; ++k) {
            const int r = sh.slot[k];
            const Sensitivity<T> st = lane_sensitivity(sh, r, nu);
            ws.s[lane] = st.s;
            if (DOUBLE) ws.bar_ds[lane] = lane_bar_ds(sh, r, st, nu);
            __syncwarp();
            const sptr<T> dt_row = sh.rows + r * W, bar_t_row = DOUBLE ? sh.rows2 + r * W : sh.rows;
            const T dt = feature ? dt_row[lane] : T(0), bar_t = DOUBLE && feature ? bar_t_row[lane] : T(0);
            HIPNNTS_UNROLL
            for (int n = 0; n < NU; ++n) {
                if (n >= nu) continue;
                gY[n] += DOUBLE ? ws.s[n] * bar_t + ws.bar_ds[n] * dt : ws.s[n] * dt;
            }
            T ds = T(0), bar_s = T(0);  // lane n: Y_j[n] . dt (DOUBLE: Y_j[n] . bar_t + v_Y_j[n] . dt)
            if (lane < nu)
                for (int x0 = 0; x0 < W; ++x0) {
                    const int x = (x0 + lane) & (W - 1);
                    const T y = sh.y[row0 + x];
                    ds += y * dt_row[x];
                    if (DOUBLE) bar_s += y * bar_t_row[x];
                    if (has_vy) bar_s += sh.v_y[row0 + x] * dt_row[x];
                }
            HIPNNTS_FLOPS((DOUBLE ? 4 : 2) * nu + (lane < nu ? (DOUBLE ? (has_vy ? 6 : 4) : 2) * W : 0));
            T dist_term = ds * st.s_r, bar_dist_term = T(0);
            if (DOUBLE) {  // the sensitivity's second partials along (v_radial, v_mu, v_sigma)
                T rr = T(0), rmu = T(0), rsigma = T(0);
                if (lane < nu) {
                    const sptr<T> geo = sh.geometry + r * sh.geometry_stride;
                    const SensitivitySecond<T> s2 =
                        sensitivity_second<T>(geo[3], sh.inv_mu[lane], sh.sigma[lane], Cutoff<T>{geo[4], geo[5], geo[6]});
                    const T v_radial = geo[10], vmu = sh.v_mu[lane], vsig = sh.v_sigma[lane];
                    rr = v_radial * s2.rr + vmu * s2.rmu + vsig * s2.rsigma;
                    rmu = v_radial * s2.rmu + vmu * s2.mumu + vsig * s2.musigma;
                    rsigma = v_radial * s2.rsigma + vmu * s2.musigma + vsig * s2.sigmasigma;
                    HIPNNTS_FLOPS(kSecondPartialFlops + 15);
                }
                bar_dist_term = ds * rr + bar_s * st.s_r;
                mu_part += ds * rmu + bar_s * st.s_mu;
                sigma_part += ds * rsigma + bar_s * st.s_sigma;
            } else {
                mu_part += ds * st.s_mu;
                sigma_part += ds * st.s_sigma;
            }
            ws.sums[lane] = dist_term;  // the distance's terms, summed over nu by every lane
            if (DOUBLE) ws.sums[32 + lane] = bar_dist_term;
            __syncwarp();
            T d_dist = T(0), bar_dist = T(0);
            for (int n = 0; n < nu; ++n) {
                d_dist += ws.sums[n];
                if (DOUBLE) bar_dist += ws.sums[32 + n];
            }
            HIPNNTS_FLOPS(lane == 0 ? (DOUBLE ? 2 : 1) * nu : 0);
            const T zeros[C] = {};
            write_pair_part<T, LMAX, DOUBLE>(sh, r, zeros, d_dist, zeros, bar_dist, dist_parts);
            __syncwarp();  // the scratch is read
        }
        HIPNNTS_UNROLL
        for (int n = 0; n < NU; ++n)  // (unrolled, so that gY stays in registers)
            if (active && n < nu) gptr<T>(a.out.grad_Y)[(j * nu + n) * F + f] = gY[n];
        if (lane < nu) {
            const index_t out = (tile * v.n_atoms + j) * nu + lane;
            a.mu_parts[out] = mu_part;
            a.sigma_parts[out] = sigma_part;
        }
    }
}

// out[x] = sum over k < tiles of parts[k * n + x], in order of k.
template <class T>
__global__ void tile_sum_kernel(gptr<const T> parts, index_t n, int tiles, gptr<T> out) {
    const index_t x = index_t(blockIdx.x) * blockDim.x + threadIdx.x;
    if (x >= n) return;
    T sum = parts[x];
    for (int k = 1; k < tiles; ++k) sum += parts[index_t(k) * n + x];
    HIPNNTS_FLOPS(tiles - 1);
    out[x] = sum;
}

}  // namespace hipnnts
