"""Fused tensor-sensitivity interaction in Triton: forward, backward and double backward, split
into sender and receiver kernels as the CUDA kernels are (csrc/kernels/split.cuh, docs/kernels.md).

The math and its derivation step by step are in :mod:`hipnnts_kernels.reference` (the analytic
``interaction_backward`` and ``interaction_double_backward``) and ``docs/math.md``. Per pair p
(receiver i, sender j): s_p (nu) sensitivities, A_p (C) angular factors, t_p = sum_nu s_p Y_j.

- ``_sender_contract_kernel``, a program per (sender j, feature block): Y_j's block is loaded once
  and t_p written for each of j's pairs (the double backward also bar_dt_p = bar_ds_p . Y_j +
  s_p . v_Y_j, bar_ds_p being the cotangent of ds_p).
- ``_receiver_forward_kernel``, a program per (receiver i, feature block): m_i = sum_p A_p t_p,
  then the invariants.
- ``_receiver_kernel``, a program per receiver looping over feature blocks: m_i and dm_i, per pair
  dt_p = A_p . dm_i and d_factors_p = dm_i . t_p (accumulated over the blocks); the double backward
  also bar_dm_i, the invariants in reverse (grad_grad_out, bar_m_i), bar_t_p and bar_factors_p.
- ``_sender_kernel``, a program per sender looping over feature blocks: grad_Y_j = sum_p s_p (x) dt_p
  (double backward: s_p (x) bar_t_p + bar_ds_p (x) dt_p) with Y_j's block loaded once, ds_p = Y_j .
  dt_p (and bar_s_p) accumulated over the blocks; then per pair the pair-vector gradient, and j's
  mu and sigma partials.

Every output element has one writer (no atomics). Per-pair rows (t, dt, bar_dt, bar_t) and
reductions (d_factors, bar_factors, ds, bar_s) pass between the kernels through buffers the
launchers allocate (:mod:`.launchers`).
"""
from __future__ import annotations

import triton
import triton.language as tl

from .. import reference
from ._common import (
    angular_factors,
    chain_to_coord,
    factor_jacobian,
    load_constants,
    load_sensitivity_params,
    load_unit,
    pow2,
    quad_jacobian,
    row,
    sensitivity_first,
    sensitivity_second,
    sensitivity_value,
    warps_for,
)


# ------------------------------------------------------------------------------------------------
# Device functions
# ------------------------------------------------------------------------------------------------
@triton.jit
def _load_rows(ptr, j, n, f, nu_mask, f_mask, NU, F):
    """The (len(n), BLOCK_F) tile [j, n, f] of a contiguous (N, NU, F) tensor, zero outside."""
    return tl.load(ptr + j * NU * F + n[:, None] * F + f[None, :], mask=nu_mask[:, None] & f_mask[None, :], other=0.0)


@triton.jit
def _invariants(m, c, eps):
    """a0, a1, a2 and the quadrupole diagonal entries m_xx, m_yy, each (BLOCK_F,). Rows a
    given lmax lacks are zero in m, so a1 (or a2) is then sqrt(eps) and unused."""
    vec = (c >= 1) & (c <= 3)
    quad = (c >= 4) & (c <= 8)
    mxx = row(m, c, 4)
    myy = row(m, c, 7)
    a1 = tl.sqrt(tl.sum(tl.where(vec[:, None], m * m, 0.0), axis=0) + eps)
    a2 = tl.sqrt(2.0 * (tl.sum(tl.where(quad[:, None], m * m, 0.0), axis=0) + mxx * myy) + eps)
    return row(m, c, 0), a1, a2, mxx, myy


@triton.jit
def _quad_metric(q, c, qxx, qyy):
    """K q on the quadrupole rows (K = 2 I + e_xx e_yy^T + e_yy e_xx^T); zero elsewhere."""
    quad = (c >= 4) & (c <= 8)
    kq = 2.0 * q + tl.where(c[:, None] == 4, qyy[None, :], 0.0) + tl.where(c[:, None] == 7, qxx[None, :], 0.0)
    return tl.where(quad[:, None], kq, 0.0)


@triton.jit
def _d_out_d_m(g, m, a1, a2, mxx, myy, lam1, lam2, c, LMAX: tl.constexpr):
    """d(loss)/dm over the tile's components c: rows g | g l1 m_v / a1 | g l2 K q / a2."""
    dm = tl.where(c[:, None] == 0, g[None, :], 0.0)
    if LMAX >= 1:
        vec = (c >= 1) & (c <= 3)
        dm += tl.where(vec[:, None], (g * lam1 / a1)[None, :] * m, 0.0)
    if LMAX >= 2:
        dm += (g * lam2 / a2)[None, :] * _quad_metric(m, c, mxx, myy)
    return dm


@triton.jit
def _accumulate(ptr, values, mask, first):
    """ptr[...] = values on the first feature block, ptr[...] + values on the others."""
    previous = tl.load(ptr, mask=mask & (first > 0), other=0.0)
    tl.store(ptr, previous + values, mask=mask)


@triton.jit
def _tangent_factors(v_coord, p, ux, uy, uz, inv_r, c, LMAX: tl.constexpr):
    """bar_A_p: the factors' derivative along (v_coord - v_radial r_hat) / r, the cotangent of
    d_factors_p, over the components c."""
    vcx = tl.load(v_coord + p * 3)
    vcy = tl.load(v_coord + p * 3 + 1)
    vcz = tl.load(v_coord + p * 3 + 2)
    v_radial = vcx * ux + vcy * uy + vcz * uz
    jx, jy, jz = factor_jacobian(ux, uy, uz, c, LMAX)
    return (jx * ((vcx - v_radial * ux) * inv_r) + jy * ((vcy - v_radial * uy) * inv_r)
            + jz * ((vcz - v_radial * uz) * inv_r))


# ------------------------------------------------------------------------------------------------
# Kernels
# ------------------------------------------------------------------------------------------------
@triton.jit
def _nu_block(mu, sigma, v_mu, v_sigma, n0, NU, NB: tl.constexpr):
    """Sensitivity indices n0 + [0, NB), their mask, 1/mu, sigma, v_mu and v_sigma: one of the two
    power-of-two blocks that ν is split into (see launch_config), so that ν = 20 pads nothing."""
    n = n0 + tl.arange(0, NB)
    nu_mask = n < NU
    inv_mu, sig = load_sensitivity_params(mu, sigma, n, nu_mask)
    return (n, nu_mask, inv_mu, sig, tl.load(v_mu + n, mask=nu_mask, other=0.0),
            tl.load(v_sigma + n, mask=nu_mask, other=0.0))


@triton.jit
def _contract_block(r, inv_r, inv_mu, sig, vmu, vsig, v_radial, nu_mask, y, vy, k, rc, DOUBLE: tl.constexpr,
                    HAS_VY: tl.constexpr):
    """One ν block's part of t_p = s_p . Y_j and (DOUBLE) of bar_dt_p = bar_ds_p . Y_j + s_p . v_Y_j."""
    if DOUBLE:
        s, s_r, s_mu, s_sigma = sensitivity_first(r, inv_r, inv_mu, sig, nu_mask, k, rc)
        bar_dt = tl.sum((v_radial * s_r + vmu * s_mu + vsig * s_sigma)[:, None] * y, axis=0)
        if HAS_VY:
            bar_dt += tl.sum(s[:, None] * vy, axis=0)
    else:
        s = sensitivity_value(r, inv_r, inv_mu, sig, nu_mask, k, rc)
        bar_dt = tl.zeros((y.shape[1],), dtype=y.dtype)
    return tl.sum(s[:, None] * y, axis=0), bar_dt


@triton.jit
def _sender_contract_kernel(Y, coord, order, ptr, mu, sigma, consts, v_Y, v_coord, v_mu, v_sigma, t_out, bar_dt_out,
                            NU, F, DOUBLE: tl.constexpr, HAS_VY: tl.constexpr, NU_A: tl.constexpr,
                            NU_B: tl.constexpr, BLOCK_F: tl.constexpr):
    j = tl.program_id(0).to(tl.int64)  # 64-bit row offsets
    f = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    f_mask = f < F
    k, rc, eps, third = load_constants(consts)
    n_a, mask_a, inv_mu_a, sig_a, vmu_a, vsig_a = _nu_block(mu, sigma, v_mu, v_sigma, 0, NU, NU_A)
    y_a = _load_rows(Y, j, n_a, f, mask_a, f_mask, NU, F)
    vy_a = y_a  # unused without v_Y
    if HAS_VY:
        vy_a = _load_rows(v_Y, j, n_a, f, mask_a, f_mask, NU, F)
    if NU_B > 0:
        n_b, mask_b, inv_mu_b, sig_b, vmu_b, vsig_b = _nu_block(mu, sigma, v_mu, v_sigma, NU_A, NU, NU_B)
        y_b = _load_rows(Y, j, n_b, f, mask_b, f_mask, NU, F)
        vy_b = y_b
        if HAS_VY:
            vy_b = _load_rows(v_Y, j, n_b, f, mask_b, f_mask, NU, F)
    for q in range(tl.load(ptr + j), tl.load(ptr + j + 1)):
        p = tl.load(order + q)
        ux, uy, uz, r, inv_r = load_unit(coord, p)
        v_radial = 0.0
        if DOUBLE:
            v_radial = (tl.load(v_coord + p * 3) * ux + tl.load(v_coord + p * 3 + 1) * uy
                        + tl.load(v_coord + p * 3 + 2) * uz)
        t, bar_dt = _contract_block(r, inv_r, inv_mu_a, sig_a, vmu_a, vsig_a, v_radial, mask_a, y_a, vy_a, k, rc,
                                    DOUBLE, HAS_VY)
        if NU_B > 0:
            t_b, bar_dt_b = _contract_block(r, inv_r, inv_mu_b, sig_b, vmu_b, vsig_b, v_radial, mask_b, y_b, vy_b, k,
                                            rc, DOUBLE, HAS_VY)
            t += t_b
            bar_dt += bar_dt_b
        tl.store(t_out + p * F + f, t, mask=f_mask)
        if DOUBLE:
            tl.store(bar_dt_out + p * F + f, bar_dt, mask=f_mask)


@triton.jit
def _receiver_m(t, coord, order, start, end, f, f_mask, c, third, F, LMAX: tl.constexpr, V_PAD: tl.constexpr,
                BLOCK_F: tl.constexpr):
    """m of a receiver's pairs [start, end) for one feature block: the scalar component m0 = sum_p t_p
    (BLOCK_F,) and the others, sum_p A_p[c] t_p over c (V_PAD, BLOCK_F)."""
    m0 = tl.zeros((BLOCK_F,), dtype=t.dtype.element_ty)
    m = tl.zeros((V_PAD, BLOCK_F), dtype=t.dtype.element_ty)
    for q in range(start, end):
        p = tl.load(order + q)
        tv = tl.load(t + p * F + f, mask=f_mask, other=0.0)
        m0 += tv
        if LMAX >= 1:
            ux, uy, uz, r, inv_r = load_unit(coord, p)
            m += angular_factors(ux, uy, uz, third, c, LMAX)[:, None] * tv[None, :]
    return m0, m


@triton.jit
def _receiver_forward_kernel(t, coord, order, ptr, lam1, lam2, consts, out, F, LMAX: tl.constexpr,
                             V_PAD: tl.constexpr, BLOCK_F: tl.constexpr):
    i = tl.program_id(0).to(tl.int64)
    f = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    f_mask = f < F
    c = tl.arange(0, V_PAD) + 1  # the components after the scalar one (see _receiver_kernel)
    k, rc, eps, third = load_constants(consts)
    m0, m = _receiver_m(t, coord, order, tl.load(ptr + i), tl.load(ptr + i + 1), f, f_mask, c, third, F, LMAX,
                        V_PAD, BLOCK_F)
    _, a1, a2, mxx, myy = _invariants(m, c, eps)
    result = m0
    if LMAX >= 1:
        result += tl.load(lam1 + f, mask=f_mask, other=0.0) * a1
    if LMAX >= 2:
        result += tl.load(lam2 + f, mask=f_mask, other=0.0) * a2
    tl.store(out + i * F + f, result, mask=f_mask)


@triton.jit
def _receiver_kernel(t, bar_dt, grad_out, coord, order, ptr, lam1, lam2, consts, v_coord, v_lam1, v_lam2,
                     dt_out, bar_t_out, d_factors, bar_factors, grad_g, lam1_part, lam2_part, F, C,
                     LMAX: tl.constexpr, DOUBLE: tl.constexpr, V_PAD: tl.constexpr, BLOCK_F: tl.constexpr):
    # Component 0 (the scalar factor 1) is kept apart as (BLOCK_F,) vectors (m0, dm0, ...); the
    # others are (V_PAD, BLOCK_F) tiles over c = 1 .. V_PAD: at lmax 2 the 8 rows fit exactly.
    i = tl.program_id(0).to(tl.int64)
    c = tl.arange(0, V_PAD) + 1
    c_mask = c < C
    k, rc, eps, third = load_constants(consts)
    start = tl.load(ptr + i)
    end = tl.load(ptr + i + 1)
    for f0 in range(0, F, BLOCK_F):
        f = f0 + tl.arange(0, BLOCK_F)
        f_mask = f < F
        m0, m = _receiver_m(t, coord, order, start, end, f, f_mask, c, third, F, LMAX, V_PAD, BLOCK_F)
        _, a1, a2, mxx, myy = _invariants(m, c, eps)
        g = tl.load(grad_out + i * F + f, mask=f_mask, other=0.0)
        l1 = tl.load(lam1 + f, mask=f_mask, other=0.0)
        l2 = tl.load(lam2 + f, mask=f_mask, other=0.0)
        dm = _d_out_d_m(g, m, a1, a2, mxx, myy, l1, l2, c, LMAX)  # dm0 = g
        bar_m = tl.zeros((V_PAD, BLOCK_F), dtype=m.dtype)  # bar_m0 = 0
        if DOUBLE:
            gg = tl.zeros((BLOCK_F,), dtype=m.dtype)  # bar_dm0 = sum_p bar_dt_p (A_0 = 1, bar_A_0 = 0)
            bar_dm = tl.zeros((V_PAD, BLOCK_F), dtype=m.dtype)
            for q in range(start, end):  # bar_dm = sum_p A_p bar_dt_p + bar_A_p t_p
                p = tl.load(order + q)
                btv = tl.load(bar_dt + p * F + f, mask=f_mask, other=0.0)
                gg += btv
                if LMAX >= 1:
                    ux, uy, uz, r, inv_r = load_unit(coord, p)
                    a = angular_factors(ux, uy, uz, third, c, LMAX)
                    bar_a = _tangent_factors(v_coord, p, ux, uy, uz, inv_r, c, LMAX)
                    bar_dm += (a[:, None] * btv[None, :]
                               + bar_a[:, None] * tl.load(t + p * F + f, mask=f_mask, other=0.0)[None, :])
            # the invariants in reverse: gradient of grad_out and of the scales, cotangent bar_m of m
            if LMAX >= 1:
                vec = (c >= 1) & (c <= 3)
                v1 = tl.load(v_lam1 + f, mask=f_mask, other=0.0)
                proj = tl.sum(tl.where(vec[:, None], bar_dm * m, 0.0), axis=0)
                gg += l1 * proj / a1 + v1 * a1
                tl.store(lam1_part + i * F + f, g * proj / a1, mask=f_mask)
                coef = -g * l1 * proj / (a1 * a1 * a1) + v1 * g / a1
                bar_m += tl.where(vec[:, None], (g * l1 / a1)[None, :] * bar_dm + coef[None, :] * m, 0.0)
            if LMAX >= 2:
                v2 = tl.load(v_lam2 + f, mask=f_mask, other=0.0)
                km = _quad_metric(m, c, mxx, myy)
                proj = tl.sum(bar_dm * km, axis=0)
                gg += l2 * proj / a2 + v2 * a2
                tl.store(lam2_part + i * F + f, g * proj / a2, mask=f_mask)
                coef = -g * l2 * proj / (a2 * a2 * a2) + v2 * g / a2
                bar_k = _quad_metric(bar_dm, c, row(bar_dm, c, 4), row(bar_dm, c, 7))
                bar_m += (g * l2 / a2)[None, :] * bar_k + coef[None, :] * km
            tl.store(grad_g + i * F + f, gg, mask=f_mask)
        else:
            if LMAX >= 1:
                tl.store(lam1_part + i * F + f, g * a1, mask=f_mask)
            if LMAX >= 2:
                tl.store(lam2_part + i * F + f, g * a2, mask=f_mask)
        for q in range(start, end):  # per pair: dt, d_factors (and bar_t, bar_factors)
            p = tl.load(order + q)
            tv = tl.load(t + p * F + f, mask=f_mask, other=0.0)
            dt = g
            _accumulate(d_factors + p * C, tl.sum(g * tv, axis=0), p >= 0, f0)
            if DOUBLE:
                btv = tl.load(bar_dt + p * F + f, mask=f_mask, other=0.0)
                bar_t = tl.zeros((BLOCK_F,), dtype=m.dtype)
                _accumulate(bar_factors + p * C, tl.sum(g * btv, axis=0), p >= 0, f0)
            if LMAX >= 1:
                ux, uy, uz, r, inv_r = load_unit(coord, p)
                a = angular_factors(ux, uy, uz, third, c, LMAX)
                dt += tl.sum(a[:, None] * dm, axis=0)
                _accumulate(d_factors + p * C + c, tl.sum(dm * tv[None, :], axis=1), c_mask, f0)
                if DOUBLE:
                    bar_a = _tangent_factors(v_coord, p, ux, uy, uz, inv_r, c, LMAX)
                    bar_t += tl.sum(bar_a[:, None] * dm, axis=0) + tl.sum(a[:, None] * bar_m, axis=0)
                    _accumulate(bar_factors + p * C + c,
                                tl.sum(dm * btv[None, :], axis=1) + tl.sum(bar_m * tv[None, :], axis=1), c_mask, f0)
            tl.store(dt_out + p * F + f, dt, mask=f_mask)
            if DOUBLE:
                tl.store(bar_t_out + p * F + f, bar_t, mask=f_mask)
        tl.debug_barrier()  # the next block's accumulation reads what this one wrote


@triton.jit
def _sender_block(p, f0, r, inv_r, inv_mu, sig, vmu, vsig, v_radial, n, nu_mask, y, vy, dtv, btv, ds_buf, bar_s_buf,
                  NU, k, rc, DOUBLE: tl.constexpr, HAS_VY: tl.constexpr):
    """One ν block of pair p over one feature block: its part of grad_Y_j (returned), and ds_p (and
    bar_s_p) accumulated into their buffers."""
    if DOUBLE:
        s, s_r, s_mu, s_sigma = sensitivity_first(r, inv_r, inv_mu, sig, nu_mask, k, rc)
        bar_ds = v_radial * s_r + vmu * s_mu + vsig * s_sigma
        gy = s[:, None] * btv[None, :] + bar_ds[:, None] * dtv[None, :]
        bar_s = tl.sum(y * btv[None, :], axis=1)
        if HAS_VY:
            bar_s += tl.sum(vy * dtv[None, :], axis=1)
        _accumulate(bar_s_buf + p * NU + n, bar_s, nu_mask, f0)
    else:
        s = sensitivity_value(r, inv_r, inv_mu, sig, nu_mask, k, rc)
        gy = s[:, None] * dtv[None, :]
    _accumulate(ds_buf + p * NU + n, tl.sum(y * dtv[None, :], axis=1), nu_mask, f0)
    return gy


@triton.jit
def _finish_block(p, r, inv_r, inv_mu, sig, vmu, vsig, v_radial, n, nu_mask, ds_buf, bar_s_buf, NU, k, rc,
                  DOUBLE: tl.constexpr):
    """One ν block's part of pair p's d(loss)/dr (d_dist), of the double backward's bar_dist, and of
    the sender's mu and sigma partials."""
    s, s_r, s_mu, s_sigma = sensitivity_first(r, inv_r, inv_mu, sig, nu_mask, k, rc)
    ds = tl.load(ds_buf + p * NU + n, mask=nu_mask, other=0.0)
    d_dist = tl.sum(ds * s_r, axis=0)
    if DOUBLE:
        bar_s = tl.load(bar_s_buf + p * NU + n, mask=nu_mask, other=0.0)
        s_rr, s_rmu, s_rsigma, s_mumu, s_musigma, s_sigmasigma = sensitivity_second(r, inv_r, inv_mu, sig, nu_mask,
                                                                                    k, rc)
        bar_dist = tl.sum(ds * (v_radial * s_rr + vmu * s_rmu + vsig * s_rsigma) + bar_s * s_r, axis=0)
        g_mu = ds * (v_radial * s_rmu + vmu * s_mumu + vsig * s_musigma) + bar_s * s_mu
        g_sigma = ds * (v_radial * s_rsigma + vmu * s_musigma + vsig * s_sigmasigma) + bar_s * s_sigma
    else:
        bar_dist = d_dist * 0.0
        g_mu = ds * s_mu
        g_sigma = ds * s_sigma
    return d_dist, bar_dist, g_mu, g_sigma


@triton.jit
def _sender_kernel(Y, coord, order, ptr, mu, sigma, consts, v_Y, v_coord, v_mu, v_sigma, dt, bar_t, d_factors,
                   bar_factors, ds_buf, bar_s_buf, grad_Y, grad_coord, mu_part, sigma_part, NU, F, C,
                   LMAX: tl.constexpr, DOUBLE: tl.constexpr, HAS_VY: tl.constexpr, NU_A: tl.constexpr,
                   NU_B: tl.constexpr, C_PAD: tl.constexpr, BLOCK_F: tl.constexpr):
    j = tl.program_id(0).to(tl.int64)
    c = tl.arange(0, C_PAD)
    c_mask = c < C
    k, rc, eps, third = load_constants(consts)
    n_a, mask_a, inv_mu_a, sig_a, vmu_a, vsig_a = _nu_block(mu, sigma, v_mu, v_sigma, 0, NU, NU_A)
    if NU_B > 0:
        n_b, mask_b, inv_mu_b, sig_b, vmu_b, vsig_b = _nu_block(mu, sigma, v_mu, v_sigma, NU_A, NU, NU_B)
    start = tl.load(ptr + j)
    end = tl.load(ptr + j + 1)
    for f0 in range(0, F, BLOCK_F):  # grad_Y_j and the reductions over this block of features
        f = f0 + tl.arange(0, BLOCK_F)
        f_mask = f < F
        y_a = _load_rows(Y, j, n_a, f, mask_a, f_mask, NU, F)
        vy_a = y_a  # unused without v_Y
        if HAS_VY:
            vy_a = _load_rows(v_Y, j, n_a, f, mask_a, f_mask, NU, F)
        gy_a = tl.zeros((NU_A, BLOCK_F), dtype=y_a.dtype)
        if NU_B > 0:
            y_b = _load_rows(Y, j, n_b, f, mask_b, f_mask, NU, F)
            vy_b = y_b
            if HAS_VY:
                vy_b = _load_rows(v_Y, j, n_b, f, mask_b, f_mask, NU, F)
            gy_b = tl.zeros((NU_B, BLOCK_F), dtype=y_a.dtype)
        for q in range(start, end):
            p = tl.load(order + q)
            ux, uy, uz, r, inv_r = load_unit(coord, p)
            dtv = tl.load(dt + p * F + f, mask=f_mask, other=0.0)
            btv = dtv
            v_radial = 0.0
            if DOUBLE:
                btv = tl.load(bar_t + p * F + f, mask=f_mask, other=0.0)
                v_radial = (tl.load(v_coord + p * 3) * ux + tl.load(v_coord + p * 3 + 1) * uy
                            + tl.load(v_coord + p * 3 + 2) * uz)
            gy_a += _sender_block(p, f0, r, inv_r, inv_mu_a, sig_a, vmu_a, vsig_a, v_radial, n_a, mask_a, y_a, vy_a,
                                  dtv, btv, ds_buf, bar_s_buf, NU, k, rc, DOUBLE, HAS_VY)
            if NU_B > 0:
                gy_b += _sender_block(p, f0, r, inv_r, inv_mu_b, sig_b, vmu_b, vsig_b, v_radial, n_b, mask_b, y_b,
                                      vy_b, dtv, btv, ds_buf, bar_s_buf, NU, k, rc, DOUBLE, HAS_VY)
        tl.store(grad_Y + j * NU * F + n_a[:, None] * F + f[None, :], gy_a, mask=mask_a[:, None] & f_mask[None, :])
        if NU_B > 0:
            tl.store(grad_Y + j * NU * F + n_b[:, None] * F + f[None, :], gy_b,
                     mask=mask_b[:, None] & f_mask[None, :])
        tl.debug_barrier()  # the reductions are read back below and by the next block
    g_mu_a = tl.zeros((NU_A,), dtype=inv_mu_a.dtype)
    g_sigma_a = tl.zeros((NU_A,), dtype=inv_mu_a.dtype)
    if NU_B > 0:
        g_mu_b = tl.zeros((NU_B,), dtype=inv_mu_a.dtype)
        g_sigma_b = tl.zeros((NU_B,), dtype=inv_mu_a.dtype)
    for q in range(start, end):  # per pair: the pair-vector gradient; j's mu and sigma partials
        p = tl.load(order + q)
        ux, uy, uz, r, inv_r = load_unit(coord, p)
        v_radial = 0.0
        if DOUBLE:
            vcx = tl.load(v_coord + p * 3)
            vcy = tl.load(v_coord + p * 3 + 1)
            vcz = tl.load(v_coord + p * 3 + 2)
            v_radial = vcx * ux + vcy * uy + vcz * uz
        d_dist, bar_dist, g_mu, g_sigma = _finish_block(p, r, inv_r, inv_mu_a, sig_a, vmu_a, vsig_a, v_radial, n_a,
                                                        mask_a, ds_buf, bar_s_buf, NU, k, rc, DOUBLE)
        g_mu_a += g_mu
        g_sigma_a += g_sigma
        if NU_B > 0:
            d_dist_b, bar_dist_b, g_mu, g_sigma = _finish_block(p, r, inv_r, inv_mu_b, sig_b, vmu_b, vsig_b, v_radial,
                                                                n_b, mask_b, ds_buf, bar_s_buf, NU, k, rc, DOUBLE)
            d_dist += d_dist_b
            bar_dist += bar_dist_b
            g_mu_b += g_mu
            g_sigma_b += g_sigma
        d_fac = tl.load(d_factors + p * C + c, mask=c_mask, other=0.0)
        jx, jy, jz = factor_jacobian(ux, uy, uz, c, LMAX)
        dux = tl.sum(d_fac * jx, axis=0)
        duy = tl.sum(d_fac * jy, axis=0)
        duz = tl.sum(d_fac * jz, axis=0)
        if DOUBLE:
            bar_fac = tl.load(bar_factors + p * C + c, mask=c_mask, other=0.0)
            u_dot_du = ux * dux + uy * duy + uz * duz
            bux = (-u_dot_du * vcx - v_radial * dux) * inv_r + d_dist * vcx
            buy = (-u_dot_du * vcy - v_radial * duy) * inv_r + d_dist * vcy
            buz = (-u_dot_du * vcz - v_radial * duz) * inv_r + d_dist * vcz
            if LMAX >= 2:  # Hessian of the factors along bar_d_unit, contracted with d_factors
                hx, hy, hz = quad_jacobian((vcx - v_radial * ux) * inv_r, (vcy - v_radial * uy) * inv_r,
                                           (vcz - v_radial * uz) * inv_r, c)
                bux += tl.sum(d_fac * hx, axis=0)
                buy += tl.sum(d_fac * hy, axis=0)
                buz += tl.sum(d_fac * hz, axis=0)
            bar_dist += (-(vcx * (dux - u_dot_du * ux) + vcy * (duy - u_dot_du * uy) + vcz * (duz - u_dot_du * uz))
                         * inv_r * inv_r)
            gx, gy_, gz = chain_to_coord(bux + tl.sum(bar_fac * jx, axis=0), buy + tl.sum(bar_fac * jy, axis=0),
                                         buz + tl.sum(bar_fac * jz, axis=0), bar_dist, ux, uy, uz, inv_r)
        else:
            gx, gy_, gz = chain_to_coord(dux, duy, duz, d_dist, ux, uy, uz, inv_r)
        tl.store(grad_coord + p * 3, gx)
        tl.store(grad_coord + p * 3 + 1, gy_)
        tl.store(grad_coord + p * 3 + 2, gz)
    tl.store(mu_part + j * NU + n_a, g_mu_a, mask=mask_a)
    tl.store(sigma_part + j * NU + n_a, g_sigma_a, mask=mask_a)
    if NU_B > 0:
        tl.store(mu_part + j * NU + n_b, g_mu_b, mask=mask_b)
        tl.store(sigma_part + j * NU + n_b, g_sigma_b, mask=mask_b)


# ------------------------------------------------------------------------------------------------
# Launch configuration (the launchers are in .launchers)
# ------------------------------------------------------------------------------------------------
def launch_config(kernel: str, nu: int, features: int, lmax: int) -> dict:
    """Compile-time meta-parameters and ``num_warps`` of one kernel for a problem shape.

    ``kernel`` is "sender_contract", "receiver_forward", "receiver" or "sender". Every kernel takes
    the features in blocks (the receiver and sender kernels loop over them), so every width runs.
    The sender kernels hold (NU_A, BLOCK_F) and (NU_B, BLOCK_F) tiles of Y (and v_Y, grad_Y), ν split
    into two power-of-two blocks (20 = 16 + 4: no padding; 37 = 32 + 8): blocks of 64 features
    and about 4 tile entries per thread keep them within 128 registers without spills in float32
    (``tests/test_triton_compile.py`` checks it, under Triton 3.6 and the newest); the receivers hold
    the scalar component apart and the others as (V_PAD, BLOCK_F) tiles (8 rows at lmax 2, no
    padding): blocks of 64 in 1 or 4 warps for ``receiver`` (the counts that compiled without spills
    under both Triton versions; others spilled 8 to 20 bytes under one of them), of 128 with about
    16 entries per thread for ``receiver_forward``.
    """
    sender = kernel in ("sender_contract", "sender")
    block_f = min(pow2(features), 128 if kernel == "receiver_forward" else 64)
    config = dict(BLOCK_F=block_f)
    if sender:  # ν in two power-of-two blocks, NU_A + NU_B >= ν with little padding (20 = 16 + 4)
        nu_a = 1 << (max(nu, 1).bit_length() - 1)
        config.update(NU_A=nu_a, NU_B=pow2(nu - nu_a, minimum=1) if nu > nu_a else 0)
    if kernel == "sender":
        config.update(LMAX=lmax, C_PAD=pow2(reference.N_COMPONENTS[lmax]))
    if kernel in ("receiver_forward", "receiver"):  # the components after the scalar one, unpadded at lmax 2
        config.update(LMAX=lmax, V_PAD=pow2(reference.N_COMPONENTS[lmax] - 1, minimum=1))
    if kernel == "receiver":  # measured: the warps that compile without spills under Triton 3.6 and 3.9
        return dict(config, num_warps=1 if lmax == 1 else 4)
    rows = config["NU_A"] + config["NU_B"] if sender else config["V_PAD"]
    return dict(config, num_warps=warps_for(rows * block_f, 4 if sender else 16))
