"""Fused tensor-sensitivity interaction in Triton: forward, backward and double backward.

The math and its derivation step by step are in :mod:`hipnnts_kernels.reference` (the analytic
``interaction_backward`` and ``interaction_double_backward``) and ``docs/math.md``. Here:

- **Receiver kernels** run one program per receiving atom i over i's pairs (a CSR segment of the
  cached :func:`~hipnnts_kernels.pair_index.pair_index`). Per pair they compute r, r_hat, the
  sensitivities s_nu(r) and the angular factors in registers, gather Y[j] (nu, F) and contract
  t = sum_nu s_nu Y[j, nu], then accumulate m[i, c] += Y_c(r_hat) t. The invariants
  a0 + l1 a1 + l2 a2 are the epilogue. Neither the (P, C nu) sensitivity stack nor the
  (N, C, nu, F) environment exists, and there are no atomics: every output row has one writer.
- The backward and double backward recompute m in a first pass over the segment, form
  d(loss)/dm in registers, and make one (backward) or two (double backward) more passes that
  write per-pair results: the pair-vector gradient and the rows the sender kernel needs.
- **The sender kernel** runs one program per sending atom j and sums the outer products that
  make grad_Y[j] (s_p (x) dt_p, plus a second term in the double backward) over j's pairs.
- Gradients of the (nu,) and (F,) parameters are written per atom and summed by torch.

Each program holds all F features of its atom in the derivative kernels (their per-pair
reductions run over F); the forward splits F into blocks.
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
    """The (NU_PAD, BLOCK_F) tile [j, n, f] of a contiguous (N, NU, F) tensor, zero outside."""
    return tl.load(ptr + j * NU * F + n[:, None] * F + f[None, :], mask=nu_mask[:, None] & f_mask[None, :], other=0.0)


@triton.jit
def _contract(Y, coord, second, order, start, end, inv_mu, sigma, n, nu_mask, f, f_mask, c, k, rc, third, NU, F,
              LMAX: tl.constexpr, C_PAD: tl.constexpr, BLOCK_F: tl.constexpr):
    """m[c, f] = sum over the segment's pairs of Y_c(r_hat) sum_nu s_nu(r) Y[j, nu, f]: (C_PAD, BLOCK_F)."""
    m = tl.zeros((C_PAD, BLOCK_F), dtype=Y.dtype.element_ty)
    for q in range(start, end):
        p = tl.load(order + q)
        j = tl.load(second + p).to(tl.int64)
        ux, uy, uz, r, inv_r = load_unit(coord, p)
        s = sensitivity_value(r, inv_r, inv_mu, sigma, nu_mask, k, rc)
        t = tl.sum(s[:, None] * _load_rows(Y, j, n, f, nu_mask, f_mask, NU, F), axis=0)
        m += angular_factors(ux, uy, uz, third, c, LMAX)[:, None] * t[None, :]
    return m


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
    """d(loss)/dm: (C_PAD, BLOCK_F) rows g | g l1 m_v / a1 | g l2 K q / a2."""
    dm = tl.where(c[:, None] == 0, g[None, :], 0.0)
    if LMAX >= 1:
        vec = (c >= 1) & (c <= 3)
        dm += tl.where(vec[:, None], (g * lam1 / a1)[None, :] * m, 0.0)
    if LMAX >= 2:
        dm += (g * lam2 / a2)[None, :] * _quad_metric(m, c, mxx, myy)
    return dm


@triton.jit
def _receiver_contract(i, f0, Y, coord, second, order, ptr, mu, sigma, consts, NU, F, LMAX: tl.constexpr,
                       NU_PAD: tl.constexpr, C_PAD: tl.constexpr, BLOCK_F: tl.constexpr):
    """Index vectors, constants and sensitivity parameters of receiver i for features f0 + [0, BLOCK_F),
    its pair segment [start, end), and its contracted features m with the invariants."""
    f = f0 + tl.arange(0, BLOCK_F)
    f_mask = f < F
    n = tl.arange(0, NU_PAD)
    nu_mask = n < NU
    c = tl.arange(0, C_PAD)
    k, rc, eps, third = load_constants(consts)
    inv_mu, sig = load_sensitivity_params(mu, sigma, n, nu_mask)
    start = tl.load(ptr + i)
    end = tl.load(ptr + i + 1)
    m = _contract(Y, coord, second, order, start, end, inv_mu, sig, n, nu_mask, f, f_mask, c, k, rc, third, NU, F,
                  LMAX, C_PAD, BLOCK_F)
    a0, a1, a2, mxx, myy = _invariants(m, c, eps)
    return f, f_mask, n, nu_mask, c, k, rc, third, inv_mu, sig, start, end, m, a0, a1, a2, mxx, myy


@triton.jit
def _receiver_d_out_d_m(i, grad_out, Y, coord, second, order, ptr, mu, sigma, lam1, lam2, consts, NU, F,
                        LMAX: tl.constexpr, NU_PAD: tl.constexpr, C_PAD: tl.constexpr, BLOCK_F: tl.constexpr):
    """:func:`_receiver_contract` over all F features, then grad_out, the scales and d(loss)/dm."""
    f, f_mask, n, nu_mask, c, k, rc, third, inv_mu, sig, start, end, m, a0, a1, a2, mxx, myy = _receiver_contract(
        i, 0, Y, coord, second, order, ptr, mu, sigma, consts, NU, F, LMAX, NU_PAD, C_PAD, BLOCK_F)
    g = tl.load(grad_out + i * F + f, mask=f_mask, other=0.0)
    l1 = tl.load(lam1 + f, mask=f_mask, other=0.0)
    l2 = tl.load(lam2 + f, mask=f_mask, other=0.0)
    dm = _d_out_d_m(g, m, a1, a2, mxx, myy, l1, l2, c, LMAX)
    return f, f_mask, n, nu_mask, c, k, rc, third, inv_mu, sig, start, end, m, a1, a2, mxx, myy, g, l1, l2, dm


@triton.jit
def _pair_backward(q, order, second, coord, Y, dm, inv_mu, sigma, n, nu_mask, f, f_mask, c, k, rc, third, NU, F,
                   LMAX: tl.constexpr):
    """Backward of one pair of the segment, given dm of its receiver (see reference._backward_pass)."""
    p = tl.load(order + q)
    j = tl.load(second + p).to(tl.int64)
    ux, uy, uz, r, inv_r = load_unit(coord, p)
    s, s_r, s_mu, s_sigma = sensitivity_first(r, inv_r, inv_mu, sigma, nu_mask, k, rc)
    y_j = _load_rows(Y, j, n, f, nu_mask, f_mask, NU, F)
    t = tl.sum(s[:, None] * y_j, axis=0)
    a = angular_factors(ux, uy, uz, third, c, LMAX)
    dt = tl.sum(a[:, None] * dm, axis=0)
    d_factors = tl.sum(dm * t[None, :], axis=1)
    ds = tl.sum(y_j * dt[None, :], axis=1)
    d_dist = tl.sum(ds * s_r, axis=0)
    jx, jy, jz = factor_jacobian(ux, uy, uz, c, LMAX)
    dux = tl.sum(d_factors * jx, axis=0)
    duy = tl.sum(d_factors * jy, axis=0)
    duz = tl.sum(d_factors * jz, axis=0)
    return (p, j, ux, uy, uz, r, inv_r, s, s_r, s_mu, s_sigma, y_j, a, t, dt, d_factors, ds, d_dist, dux, duy, duz, jx,
            jy, jz)


@triton.jit
def _pair_reverse(p, j, v_coord, v_Y, ux, uy, uz, inv_r, dux, duy, duz, jx, jy, jz, s, s_r, s_mu, s_sigma, v_mu,
                  v_sigma, y_j, dt, n, nu_mask, f, f_mask, NU, F, HAS_VY: tl.constexpr):
    """The backward's geometry, sensitivity and radial steps in reverse for one pair: cotangents of
    d_unit (bar_d_unit), d_factors, ds and dt, plus v_Y[j] . dt (zero without v_Y)."""
    vcx = tl.load(v_coord + p * 3)
    vcy = tl.load(v_coord + p * 3 + 1)
    vcz = tl.load(v_coord + p * 3 + 2)
    v_radial = vcx * ux + vcy * uy + vcz * uz
    u_dot_du = ux * dux + uy * duy + uz * duz
    bdux = (vcx - v_radial * ux) * inv_r
    bduy = (vcy - v_radial * uy) * inv_r
    bduz = (vcz - v_radial * uz) * inv_r
    bar_d_factors = jx * bdux + jy * bduy + jz * bduz
    bar_ds = v_radial * s_r + v_mu * s_mu + v_sigma * s_sigma
    bar_dt = tl.sum(bar_ds[:, None] * y_j, axis=0)
    vy_dt = tl.zeros(s.shape, dtype=s.dtype)
    if HAS_VY:
        vy_j = _load_rows(v_Y, j, n, f, nu_mask, f_mask, NU, F)
        bar_dt += tl.sum(s[:, None] * vy_j, axis=0)
        vy_dt = tl.sum(vy_j * dt[None, :], axis=1)
    return vcx, vcy, vcz, v_radial, u_dot_du, bdux, bduy, bduz, bar_d_factors, bar_ds, bar_dt, vy_dt


# ------------------------------------------------------------------------------------------------
# Kernels
# ------------------------------------------------------------------------------------------------
@triton.jit
def _forward_kernel(Y, coord, second, order, ptr, mu, sigma, lam1, lam2, consts, out, NU, F,
                    LMAX: tl.constexpr, NU_PAD: tl.constexpr, C_PAD: tl.constexpr, BLOCK_F: tl.constexpr):
    i = tl.program_id(0).to(tl.int64)  # 64-bit row offsets
    f, f_mask, n, nu_mask, c, k, rc, third, inv_mu, sig, start, end, m, a0, a1, a2, mxx, myy = _receiver_contract(
        i, tl.program_id(1) * BLOCK_F, Y, coord, second, order, ptr, mu, sigma, consts, NU, F, LMAX, NU_PAD, C_PAD,
        BLOCK_F)
    result = a0
    if LMAX >= 1:
        result += tl.load(lam1 + f, mask=f_mask, other=0.0) * a1
    if LMAX >= 2:
        result += tl.load(lam2 + f, mask=f_mask, other=0.0) * a2
    tl.store(out + i * F + f, result, mask=f_mask)


@triton.jit
def _backward_kernel(grad_out, Y, coord, second, order, ptr, mu, sigma, lam1, lam2, consts,
                     dt_out, grad_coord, mu_part, sigma_part, lam1_part, lam2_part, NU, F,
                     LMAX: tl.constexpr, NU_PAD: tl.constexpr, C_PAD: tl.constexpr, BLOCK_F: tl.constexpr):
    i = tl.program_id(0).to(tl.int64)  # 64-bit row offsets
    (f, f_mask, n, nu_mask, c, k, rc, third, inv_mu, sig, start, end, m, a1, a2, mxx, myy, g, l1, l2, dm) = (
        _receiver_d_out_d_m(i, grad_out, Y, coord, second, order, ptr, mu, sigma, lam1, lam2, consts, NU, F, LMAX,
                            NU_PAD, C_PAD, BLOCK_F))
    if LMAX >= 1:
        tl.store(lam1_part + i * F + f, g * a1, mask=f_mask)
    if LMAX >= 2:
        tl.store(lam2_part + i * F + f, g * a2, mask=f_mask)
    g_mu = tl.zeros((NU_PAD,), dtype=m.dtype)
    g_sigma = tl.zeros((NU_PAD,), dtype=m.dtype)
    for q in range(start, end):
        (p, j, ux, uy, uz, r, inv_r, s, s_r, s_mu, s_sigma, y_j, a, t, dt, d_factors, ds, d_dist, dux, duy, duz, jx, jy,
         jz) = _pair_backward(q, order, second, coord, Y, dm, inv_mu, sig, n, nu_mask, f, f_mask, c, k, rc, third, NU,
                              F, LMAX)
        tl.store(dt_out + p * F + f, dt, mask=f_mask)
        gx, gy, gz = chain_to_coord(dux, duy, duz, d_dist, ux, uy, uz, inv_r)
        tl.store(grad_coord + p * 3, gx)
        tl.store(grad_coord + p * 3 + 1, gy)
        tl.store(grad_coord + p * 3 + 2, gz)
        g_mu += ds * s_mu
        g_sigma += ds * s_sigma
    tl.store(mu_part + i * NU + n, g_mu, mask=nu_mask)
    tl.store(sigma_part + i * NU + n, g_sigma, mask=nu_mask)


@triton.jit
def _double_backward_kernel(grad_out, Y, coord, second, order, ptr, mu, sigma, lam1, lam2, consts,
                            v_Y, v_coord, v_mu, v_sigma, v_lam1, v_lam2,
                            dt_out, bar_t_out, bar_ds_out, grad_coord, mu_part, sigma_part, grad_g, lam1_part,
                            lam2_part, NU, F, LMAX: tl.constexpr, HAS_VY: tl.constexpr, NU_PAD: tl.constexpr,
                            C_PAD: tl.constexpr, BLOCK_F: tl.constexpr):
    # recompute the forward and d(loss)/dm of the receiver
    i = tl.program_id(0).to(tl.int64)  # 64-bit row offsets
    (f, f_mask, n, nu_mask, c, k, rc, third, inv_mu, sig, start, end, m, a1, a2, mxx, myy, g, l1, l2, dm) = (
        _receiver_d_out_d_m(i, grad_out, Y, coord, second, order, ptr, mu, sigma, lam1, lam2, consts, NU, F, LMAX,
                            NU_PAD, C_PAD, BLOCK_F))
    vmu = tl.load(v_mu + n, mask=nu_mask, other=0.0)
    vsig = tl.load(v_sigma + n, mask=nu_mask, other=0.0)

    # pass 2: the cotangent of dm, sum over pairs of Y_c bar_dt + bar_d_factors t
    bar_dm = tl.zeros((C_PAD, BLOCK_F), dtype=m.dtype)
    for q in range(start, end):
        (p, j, ux, uy, uz, r, inv_r, s, s_r, s_mu, s_sigma, y_j, a, t, dt, d_factors, ds, d_dist, dux, duy, duz, jx, jy,
         jz) = _pair_backward(q, order, second, coord, Y, dm, inv_mu, sig, n, nu_mask, f, f_mask, c, k, rc, third, NU,
                              F, LMAX)
        vcx, vcy, vcz, v_radial, u_dot_du, bdux, bduy, bduz, bar_d_factors, bar_ds, bar_dt, vy_dt = _pair_reverse(
            p, j, v_coord, v_Y, ux, uy, uz, inv_r, dux, duy, duz, jx, jy, jz, s, s_r, s_mu, s_sigma, vmu, vsig, y_j, dt,
            n, nu_mask, f, f_mask, NU, F, HAS_VY)
        bar_dm += a[:, None] * bar_dt[None, :] + bar_d_factors[:, None] * t[None, :]

    # invariants in reverse: gradient of grad_out and of the scales, cotangent bar_m of m
    gg = row(bar_dm, c, 0)
    bar_m = tl.zeros((C_PAD, BLOCK_F), dtype=m.dtype)
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

    # pass 3: everything per pair
    g_mu = tl.zeros((NU_PAD,), dtype=m.dtype)
    g_sigma = tl.zeros((NU_PAD,), dtype=m.dtype)
    for q in range(start, end):
        (p, j, ux, uy, uz, r, inv_r, s, s_r, s_mu, s_sigma, y_j, a, t, dt, d_factors, ds, d_dist, dux, duy, duz, jx, jy,
         jz) = _pair_backward(q, order, second, coord, Y, dm, inv_mu, sig, n, nu_mask, f, f_mask, c, k, rc, third, NU,
                              F, LMAX)
        vcx, vcy, vcz, v_radial, u_dot_du, bdux, bduy, bduz, bar_d_factors, bar_ds, bar_dt, vy_dt = _pair_reverse(
            p, j, v_coord, v_Y, ux, uy, uz, inv_r, dux, duy, duz, jx, jy, jz, s, s_r, s_mu, s_sigma, vmu, vsig, y_j, dt,
            n, nu_mask, f, f_mask, NU, F, HAS_VY)
        s_rr, s_rmu, s_rsigma, s_mumu, s_musigma, s_sigmasigma = sensitivity_second(r, inv_r, inv_mu, sig, nu_mask,
                                                                                    k, rc)
        # geometry and sensitivity steps of the backward, reversed (terms that need no bar_m)
        bux = (-u_dot_du * vcx - v_radial * dux) * inv_r + d_dist * vcx
        buy = (-u_dot_du * vcy - v_radial * duy) * inv_r + d_dist * vcy
        buz = (-u_dot_du * vcz - v_radial * duz) * inv_r + d_dist * vcz
        if LMAX >= 2:  # Hessian of the factors along bar_d_unit, contracted with d_factors
            hx, hy, hz = quad_jacobian(bdux, bduy, bduz, c)
            bux += tl.sum(d_factors * hx, axis=0)
            buy += tl.sum(d_factors * hy, axis=0)
            buz += tl.sum(d_factors * hz, axis=0)
        second_r = v_radial * s_rr + vmu * s_rmu + vsig * s_rsigma
        bar_dist = (-(vcx * (dux - u_dot_du * ux) + vcy * (duy - u_dot_du * uy) + vcz * (duz - u_dot_du * uz))
                    * inv_r * inv_r + tl.sum(ds * second_r, axis=0))
        g_mu += ds * (v_radial * s_rmu + vmu * s_mumu + vsig * s_musigma)
        g_sigma += ds * (v_radial * s_rsigma + vmu * s_musigma + vsig * s_sigmasigma)
        # angular step reversed, and the cotangents of m pushed back through the forward
        bar_factors = tl.sum(dm * bar_dt[None, :], axis=1) + tl.sum(bar_m * t[None, :], axis=1)
        bar_t = tl.sum(bar_d_factors[:, None] * dm, axis=0) + tl.sum(a[:, None] * bar_m, axis=0)
        bar_s = tl.sum(y_j * bar_t[None, :], axis=1) + vy_dt
        tl.store(dt_out + p * F + f, dt, mask=f_mask)
        tl.store(bar_t_out + p * F + f, bar_t, mask=f_mask)
        tl.store(bar_ds_out + p * NU + n, bar_ds, mask=nu_mask)
        gux = tl.sum(bar_factors * jx, axis=0)
        guy = tl.sum(bar_factors * jy, axis=0)
        guz = tl.sum(bar_factors * jz, axis=0)
        bar_dist += tl.sum(bar_s * s_r, axis=0)
        g_mu += bar_s * s_mu
        g_sigma += bar_s * s_sigma
        gx, gy, gz = chain_to_coord(bux + gux, buy + guy, buz + guz, bar_dist, ux, uy, uz, inv_r)
        tl.store(grad_coord + p * 3, gx)
        tl.store(grad_coord + p * 3 + 1, gy)
        tl.store(grad_coord + p * 3 + 2, gz)
    tl.store(mu_part + i * NU + n, g_mu, mask=nu_mask)
    tl.store(sigma_part + i * NU + n, g_sigma, mask=nu_mask)


@triton.jit
def _sender_kernel(coord, order, ptr, mu, sigma, consts, X, B, Z, out, NU, F, HAS_B: tl.constexpr,
                   NU_PAD: tl.constexpr, BLOCK_F: tl.constexpr):
    """out[j] = sum over j's pairs p of s_p (x) X_p (+ B_p (x) Z_p): (NU, F) per sending atom."""
    j = tl.program_id(0).to(tl.int64)  # 64-bit row offsets
    f = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    f_mask = f < F
    n = tl.arange(0, NU_PAD)
    nu_mask = n < NU
    k, rc, eps, third = load_constants(consts)
    inv_mu, sig = load_sensitivity_params(mu, sigma, n, nu_mask)
    acc = tl.zeros((NU_PAD, BLOCK_F), dtype=X.dtype.element_ty)
    for q in range(tl.load(ptr + j), tl.load(ptr + j + 1)):
        p = tl.load(order + q)
        ux, uy, uz, r, inv_r = load_unit(coord, p)
        s = sensitivity_value(r, inv_r, inv_mu, sig, nu_mask, k, rc)
        acc += s[:, None] * tl.load(X + p * F + f, mask=f_mask, other=0.0)[None, :]
        if HAS_B:
            b = tl.load(B + p * NU + n, mask=nu_mask, other=0.0)
            acc += b[:, None] * tl.load(Z + p * F + f, mask=f_mask, other=0.0)[None, :]
    tl.store(out + j * NU * F + n[:, None] * F + f[None, :], acc, mask=nu_mask[:, None] & f_mask[None, :])


# ------------------------------------------------------------------------------------------------
# Launch configuration (the launchers are in .launchers)
# ------------------------------------------------------------------------------------------------
def launch_config(kernel: str, nu: int, features: int, lmax: int) -> dict:
    """Compile-time meta-parameters and ``num_warps`` of one kernel for a problem shape.

    ``kernel`` is "forward", "backward", "double_backward" or "sender". The forward and the
    sender split the features into blocks of at most 64; the derivative kernels hold all features
    of an atom. Warps give each thread about 16 entries of the (NU_PAD, BLOCK_F) tiles (8 in the
    double backward, which keeps the most tiles live): at nu = 20 and F = 128 in float32 this
    compiles for sm_90 without spills in the forward and sender and with small ones in the
    derivative kernels (``tests/test_triton_compile.py`` prints the counts).
    """
    nu_pad = pow2(nu)
    config = dict(NU_PAD=nu_pad)
    if kernel != "sender":
        config.update(LMAX=lmax, C_PAD=pow2(reference.N_COMPONENTS[lmax]))
    block_f = min(pow2(features), 64) if kernel in ("forward", "sender") else pow2(features)
    per_thread = 8 if kernel == "double_backward" else 16
    return dict(config, BLOCK_F=block_f, num_warps=warps_for(nu_pad * block_f, per_thread))
