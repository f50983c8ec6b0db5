// hippynn's kernel family, CSR path (SPEC section 8): one thread block per atom, one thread per
// feature; each output row has one writer (no atomics, deterministic).
#pragma once

#include "interaction.cuh"

namespace hipnnts {

// env[i, n, f] = sum over receiver i's pairs p of sens[p, n] feat[second(p), f]; block (i, n-block).
template <class T, int K, int NB>
__global__ void envsum_kernel(gptr<const T> __restrict__ sens, gptr<const T> __restrict__ feat,
                              gptr<const index_t> __restrict__ second,
                              gptr<const index_t> __restrict__ order, gptr<const index_t> __restrict__ ptr, int nu,
                              int features,
                              gptr<T> __restrict__ env) {
    __shared__ index_t partner_storage[K];
    __shared__ T s_storage[K * NB];
    const sptr<index_t> partner_sh(partner_storage);
    const sptr<T> s_sh(s_storage);
    const index_t i = blockIdx.x;
    const int n0 = blockIdx.y * NB, nb = nu - n0 < NB ? nu - n0 : NB, f = threadIdx.x;
    const index_t start = ptr[i], end = ptr[i + 1];
    T acc[NB];
    for (int n = 0; n < NB; ++n) acc[n] = T(0);
    for (index_t c0 = start; c0 < end; c0 += K) {
        const int count = int(min_index(K, end - c0));
        for (int item = threadIdx.x; item < count * nb; item += blockDim.x) {
            const int kk = item / nb, n = item - kk * nb;
            s_sh[kk * NB + n] = sens[order[c0 + kk] * nu + n0 + n];
        }
        for (int kk = threadIdx.x; kk < count; kk += blockDim.x) partner_sh[kk] = second[order[c0 + kk]];
        __syncthreads();
        if (f < features) {
            for (int kk = 0; kk < count; ++kk) {
                const T x = feat[partner_sh[kk] * features + f];
                for (int n = 0; n < NB; ++n)
                    if (n < nb) acc[n] += s_sh[kk * NB + n] * x;
                HIPNNTS_FLOPS(2 * nb);
            }
        }
        __syncthreads();
    }
    if (f < features)
        for (int n = 0; n < nb; ++n) env[(i * nu + n0 + n) * features + f] = acc[n];
}

// sens[p, n] = sum_f env[first(p), n, f] feat[second(p), f]; block per receiver i, its pairs in
// order, one thread per (pair, n) item.
template <class T>
__global__ void sensesum_kernel(gptr<const T> __restrict__ env, gptr<const T> __restrict__ feat,
                                gptr<const index_t> __restrict__ second, gptr<const index_t> __restrict__ order,
                                gptr<const index_t> __restrict__ ptr, int nu, int features, gptr<T> __restrict__ sens) {
    const index_t i = blockIdx.x;
    const index_t start = ptr[i], end = ptr[i + 1];
    gptr<const T> env_i = env + i * nu * features;
    for (index_t item = start * nu + threadIdx.x; item < end * nu; item += blockDim.x) {
        const index_t q = item / nu;
        const int n = int(item - q * nu);
        const index_t p = order[q];
        gptr<const T> e = env_i + index_t(n) * features;
        gptr<const T> x = feat + second[p] * features;
        T acc = T(0);
        for (int f = 0; f < features; ++f) acc += e[f] * x[f];
        HIPNNTS_FLOPS(2 * features);
        sens[p * nu + n] = acc;
    }
}

// feat[j, f] = sum over sender j's pairs p of sum_n env[first(p), n, f] sens[p, n].
template <class T, int K>
__global__ void featsum_kernel(gptr<const T> __restrict__ env, gptr<const T> __restrict__ sens,
                               gptr<const index_t> __restrict__ first,
                               gptr<const index_t> __restrict__ order, gptr<const index_t> __restrict__ ptr, int nu,
                               int features,
                               gptr<T> __restrict__ feat) {
    HIPNNTS_DYNAMIC_SHARED(unsigned char, smem);
    SharedCarver carver{smem};
    const sptr<index_t> partner_sh = carver.take<index_t>(K);
    const sptr<T> s_sh = carver.take<T>(K * nu);
    const index_t j = blockIdx.x;
    const int f = threadIdx.x;
    const index_t start = ptr[j], end = ptr[j + 1];
    T acc = T(0);
    for (index_t c0 = start; c0 < end; c0 += K) {
        const int count = int(min_index(K, end - c0));
        for (int item = threadIdx.x; item < count * nu; item += blockDim.x) {
            const int kk = item / nu, n = item - kk * nu;
            s_sh[item] = sens[order[c0 + kk] * nu + n];
        }
        for (int kk = threadIdx.x; kk < count; kk += blockDim.x) partner_sh[kk] = first[order[c0 + kk]];
        __syncthreads();
        if (f < features) {
            for (int kk = 0; kk < count; ++kk) {
                gptr<const T> e = env + partner_sh[kk] * nu * features + f;
                for (int n = 0; n < nu; ++n) acc += e[index_t(n) * features] * s_sh[kk * nu + n];
                HIPNNTS_FLOPS(2 * nu);
            }
        }
        __syncthreads();
    }
    if (f < features) feat[j * features + f] = acc;
}

// Molecule path of featsum: one block per atom range that no pair crosses (molecule_ptr), its
// receivers' pairs in turn; thread f owns column f of feat for the range's atoms, so the scatter by
// sender needs neither atomics nor the sender sort.
template <class T>
__global__ void featsum_molecule_kernel(gptr<const T> __restrict__ env, gptr<const T> __restrict__ sens,
                                        gptr<const index_t> __restrict__ second, gptr<const index_t> __restrict__ order,
                                        gptr<const index_t> __restrict__ ptr,
                                        gptr<const index_t> __restrict__ molecule_ptr,
                                        int nu, int features, gptr<T> __restrict__ feat) {
    const int f = threadIdx.x;
    if (f >= features) return;  // no block-wide synchronisation below
    const index_t a0 = molecule_ptr[blockIdx.x], a1 = molecule_ptr[blockIdx.x + 1];
    for (index_t j = a0; j < a1; ++j) feat[j * features + f] = T(0);
    for (index_t i = a0; i < a1; ++i) {
        gptr<const T> e = env + i * nu * features + f;
        for (index_t q = ptr[i]; q < ptr[i + 1]; ++q) {
            const index_t p = order[q];
            T acc = T(0);
            for (int n = 0; n < nu; ++n) acc += e[index_t(n) * features] * sens[p * nu + n];
            HIPNNTS_FLOPS(2 * nu);
            feat[second[p] * features + f] += acc;
        }
    }
}

}  // namespace hipnnts
