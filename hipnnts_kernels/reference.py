"""Pure-PyTorch reference math of HIP-NN / HIP-NN-TS (``SPEC.md`` sections 2-4 and 8).

Every function here is plain differentiable PyTorch: it runs on any device and dtype (float64
included) and autograd can differentiate it to any order. These functions are the ``"reference"``
backend of :mod:`hipnnts_kernels.ops`, the composite the fast backends fall back to for
derivative orders they do not implement, and the ground truth every kernel is tested against.
Argument checking happens in :mod:`hipnnts_kernels.ops`, not here.

Shapes: ``N`` atoms, ``P`` pairs, ``nu`` sensitivities, ``F`` features, ``C`` angular components
(1 for lmax = 0, 4 for lmax = 1, 9 for lmax = 2). Distances in the caller's length unit (Å).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

#: Number of angular components for each lmax: 1 (scalar), +3 (vector), +5 (traceless quadrupole).
N_COMPONENTS = {0: 1, 1: 4, 2: 9}


# --------------------------------------------------------------------------------------------
# Sensitivities and angular factors (SPEC sections 2 and 3)
# --------------------------------------------------------------------------------------------
def cutoff_function(dist: Tensor, cutoff: float) -> Tensor:
    """phi(r) = cos^2(pi r / (2 r_c)) for r <= r_c, else 0. ``dist`` (P,) -> (P,)."""
    phi = torch.cos(dist * (math.pi / (2.0 * cutoff))) ** 2
    return phi * (dist <= cutoff).to(phi.dtype)


def sensitivity(dist: Tensor, mu: Tensor, sigma: Tensor, cutoff: float) -> Tensor:
    """s_nu(r) = exp(-sigma_nu^2 (1/r - 1/mu_nu)^2 / 2) * phi(r).

    ``dist`` (P,), ``mu`` (nu,), ``sigma`` (nu,) -> (P, nu).
    """
    x = (dist.reciprocal().unsqueeze(1) - mu.reciprocal()) * sigma
    return torch.exp(-0.5 * x * x) * cutoff_function(dist, cutoff).unsqueeze(1)


def tensor_factors(unit: Tensor, lmax: int) -> Tensor:
    """Angular factors Y_c(r_hat) of each pair: ``unit`` (P, 3) unit vectors -> (P, C).

    Order: [1 | x, y, z | Qxx, Qxy, Qxz, Qyy, Qyz] with Q = r_hat r_hat^T - I/3 (lmax = 2),
    truncated after the first 1 (lmax = 0) or 4 (lmax = 1) columns.
    """
    one = torch.ones_like(unit[:, :1])
    if lmax == 0:
        return one
    if lmax == 1:
        return torch.cat([one, unit], dim=1)
    x, y, z = unit.unbind(1)
    quad = torch.stack([x * x - 1.0 / 3.0, x * y, x * z, y * y - 1.0 / 3.0, y * z], dim=1)
    return torch.cat([one, unit, quad], dim=1)


def chebyshev_radial(dist: Tensor, n_basis: int, cutoff: float) -> Tensor:
    """Chebyshev radial basis with a smooth cutoff (Shapeev's MTP), ETN's one-particle radial functions:
    Q_k(r) = T_k(2 r / r_c - 1) (1 - r / r_c)^2 for r < r_c, else 0; k = 0 .. n_basis - 1.

    T_k are Chebyshev polynomials of the first kind (T_0 = 1, T_1 = x, T_{k+1} = 2 x T_k - T_{k-1}); the
    cutoff factor takes Q_k and its first derivative to zero at r_c. ``dist`` (P,) -> (P, n_basis).
    """
    inside = dist < cutoff
    r = torch.where(inside, dist, torch.zeros_like(dist))  # no polynomial growth (or NaN) beyond r_c
    x = r * (2.0 / cutoff) - 1.0
    envelope = torch.where(inside, (1.0 - r / cutoff) ** 2, torch.zeros_like(dist))
    basis = [torch.ones_like(x), x][:n_basis]
    while len(basis) < n_basis:
        basis.append(2.0 * x * basis[-1] - basis[-2])
    return torch.stack(basis, dim=1) * envelope.unsqueeze(1)


def sensitivity_stack(pair_coord: Tensor, mu: Tensor, sigma: Tensor, cutoff: float, lmax: int) -> Tensor:
    """hippynn's stacked sensitivities, component-major: (P, C * nu) (SPEC section 3).

    This is the input of the env route (``envsum``); the fused op never builds it.
    """
    dist = pair_coord.norm(dim=1)
    sens = sensitivity(dist, mu, sigma, cutoff)
    factors = tensor_factors(pair_coord / dist.unsqueeze(1), lmax)
    return (factors.unsqueeze(2) * sens.unsqueeze(1)).reshape(sens.shape[0], -1)


# --------------------------------------------------------------------------------------------
# The hippynn kernel family (SPEC section 8)
# --------------------------------------------------------------------------------------------
def envsum(sens: Tensor, feat: Tensor, pair_first: Tensor, pair_second: Tensor) -> Tensor:
    """env[i, nu, f] = sum_{p: first(p) = i} sens[p, nu] feat[second(p), f] -> (N, nu, F)."""
    pair_env = sens.unsqueeze(2) * feat.index_select(0, pair_second).unsqueeze(1)
    env = feat.new_zeros(feat.shape[0], sens.shape[1], feat.shape[1])
    return env.index_add(0, pair_first, pair_env)


def sensesum(env: Tensor, feat: Tensor, pair_first: Tensor, pair_second: Tensor) -> Tensor:
    """sens[p, nu] = sum_f env[first(p), nu, f] feat[second(p), f] -> (P, nu)."""
    pair_env = env.index_select(0, pair_first)
    pair_feat = feat.index_select(0, pair_second)
    return torch.bmm(pair_env, pair_feat.unsqueeze(2)).squeeze(2)


def featsum(env: Tensor, sens: Tensor, pair_first: Tensor, pair_second: Tensor) -> Tensor:
    """feat[j, f] = sum_{p: second(p) = j} sum_nu env[first(p), nu, f] sens[p, nu] -> (N, F)."""
    pair_env = env.index_select(0, pair_first)
    pair_feat = torch.bmm(sens.unsqueeze(1), pair_env).squeeze(1)
    feat = env.new_zeros(env.shape[0], env.shape[2])
    return feat.index_add(0, pair_second, pair_feat)


# --------------------------------------------------------------------------------------------
# Fused tensor-sensitivity interaction, Y-route (SPEC section 4.1)
# --------------------------------------------------------------------------------------------
class PairBlocks:
    """Pairs grouped per atom into a padded (N, k_max) layout, k_max = most pairs of one atom.

    ``pad`` scatters per-pair rows into (N, k_max, ...) blocks (zeros in unused slots) and
    ``unpad`` gathers them back, so sums over an atom's pairs become dense batched matmuls
    (``torch.bmm``) with no (P, nu, F) intermediate and no scatter-add.
    """

    def __init__(self, atom: Tensor, n_atoms: int):
        order = torch.argsort(atom, stable=True)
        counts = torch.bincount(atom, minlength=n_atoms)
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.empty_like(atom)
        slot[order] = torch.arange(atom.shape[0], device=atom.device) - starts[atom[order]]
        self.index = (atom, slot)
        self.shape = (n_atoms, counts.max().item() if atom.numel() else 0)

    def pad(self, values: Tensor) -> Tensor:
        """(P, ...) -> (N, k_max, ...)."""
        return values.new_zeros(*self.shape, *values.shape[1:]).index_put(self.index, values)

    def unpad(self, blocks: Tensor) -> Tensor:
        """(N, k_max, ...) -> (P, ...)."""
        return blocks[self.index]


def _invariants(m: Tensor, vecscales: Tensor | None, quadscales: Tensor | None, cusp_reg: float, lmax: int):
    """(a0 + l1 a1 + l2 a2, a1, a2) from the contracted tensor features m (N, C, F)."""
    out = m[:, 0]
    a1 = a2 = None
    if lmax >= 1:
        a1 = torch.sqrt(m[:, 1:4].square().sum(1) + cusp_reg)
        out = out + vecscales * a1
    if lmax >= 2:
        q = m[:, 4:9]
        a2 = torch.sqrt(2.0 * (q.square().sum(1) + q[:, 0] * q[:, 3]) + cusp_reg)
        out = out + quadscales * a2
    return out, a1, a2


def _pair_geometry(pair_coord, pair_first, pair_second, n_atoms, lmax):
    """Distances, unit vectors, angular factors, and the pairs blocked per sender and per receiver."""
    dist = pair_coord.norm(dim=1)
    unit = pair_coord / dist.unsqueeze(1)
    factors = tensor_factors(unit, lmax)
    by_sender, by_receiver = PairBlocks(pair_second, n_atoms), PairBlocks(pair_first, n_atoms)
    return dist, unit, factors, by_sender, by_receiver


def interaction(
    Y: Tensor,
    pair_coord: Tensor,
    pair_first: Tensor,
    pair_second: Tensor,
    mu: Tensor,
    sigma: Tensor,
    vecscales: Tensor | None,
    quadscales: Tensor | None,
    cutoff: float,
    cusp_reg: float,
    lmax: int,
) -> Tensor:
    """Fused interaction pre-activation a0 + l1 a1 + l2 a2 -> (N, F_out). See ``ops.interaction``.

    Radial part first, per sender j: t_p = sum_nu s_nu(r_p) Y[j, nu] for j's pairs p, one batched
    matmul; then angular, per receiver i: m[i, c] = sum_p Y_c(r_hat_p) t_p, another. Never builds
    (P, C nu), (P, nu, F) or (N, C, nu, F) tensors.
    """
    dist, _, factors, by_sender, by_receiver = _pair_geometry(pair_coord, pair_first, pair_second, Y.shape[0], lmax)
    sens = sensitivity(dist, mu, sigma, cutoff)
    t = by_sender.unpad(torch.bmm(by_sender.pad(sens), Y))  # (P, F)
    m = torch.bmm(by_receiver.pad(factors).transpose(1, 2), by_receiver.pad(t))  # (N, C, F)
    return _invariants(m, vecscales, quadscales, cusp_reg, lmax)[0]


def _sensitivity_partials(dist: Tensor, mu: Tensor, sigma: Tensor, cutoff: float, second: bool = False):
    """s (P, nu) and its partial derivatives, each (P, nu).

    Returns (s, s_r, s_mu, s_sigma), followed when ``second`` is set by
    (s_rr, s_rmu, s_rsigma, s_mumu, s_musigma, s_sigmasigma). With d = 1/r - 1/mu,
    G = exp(-sigma^2 d^2 / 2) and s = G phi(r).
    """
    inv_r = dist.reciprocal().unsqueeze(1)
    inv_mu = mu.reciprocal()
    d = inv_r - inv_mu
    gauss = torch.exp(-0.5 * (d * sigma) ** 2)
    k = math.pi / (2.0 * cutoff)
    inside = (dist <= cutoff).to(dist.dtype)
    angle = dist * k
    phi = (torch.cos(angle) ** 2 * inside).unsqueeze(1)
    dphi = (-k * torch.sin(2.0 * angle) * inside).unsqueeze(1)
    s = gauss * phi
    sig2 = sigma * sigma
    g_r = gauss * sig2 * d * inv_r * inv_r  # dG/dr
    g_mu = -gauss * sig2 * d * inv_mu * inv_mu  # dG/dmu
    g_sigma = -gauss * sigma * d * d  # dG/dsigma
    first = (s, g_r * phi + gauss * dphi, g_mu * phi, g_sigma * phi)
    if not second:
        return first
    ddphi = (-2.0 * k * k * torch.cos(2.0 * angle) * inside).unsqueeze(1)
    sd2 = sig2 * d * d
    g_rr = gauss * sig2 * inv_r**3 * ((sd2 - 1.0) * inv_r - 2.0 * d)
    g_rmu = gauss * sig2 * (inv_r * inv_mu) ** 2 * (1.0 - sd2)
    g_rsigma = gauss * sigma * d * inv_r * inv_r * (2.0 - sd2)
    g_mumu = gauss * sig2 * inv_mu**3 * ((sd2 - 1.0) * inv_mu + 2.0 * d)
    g_musigma = gauss * sigma * d * inv_mu * inv_mu * (sd2 - 2.0)
    g_sigmasigma = gauss * d * d * (sd2 - 1.0)
    return (
        *first,
        g_rr * phi + 2.0 * g_r * dphi + gauss * ddphi,
        g_rmu * phi + g_mu * dphi,
        g_rsigma * phi + g_sigma * dphi,
        g_mumu * phi,
        g_musigma * phi,
        g_sigmasigma * phi,
    )


def _quad_transpose(vector: Tensor, d_quad: Tensor) -> Tensor:
    """sum_c d_quad[c] * grad_u Q_c evaluated at u = ``vector``: (P, 3).

    Q_c is quadratic in u, so this is both the transposed Jacobian at u (times d_quad) and the
    Hessian-vector product sum_c d_quad[c] H_c v.
    """
    x, y, z = vector.unbind(1)
    dxx, dxy, dxz, dyy, dyz = d_quad.unbind(1)
    return torch.stack([2.0 * x * dxx + y * dxy + z * dxz, x * dxy + 2.0 * y * dyy + z * dyz, x * dxz + y * dyz], 1)


def _angular_backward(unit: Tensor, d_factors: Tensor, lmax: int) -> Tensor:
    """Gradient with respect to the unit vector (P, 3) from d(loss)/d(factors) (P, C)."""
    if lmax == 0:
        return torch.zeros_like(unit)
    d_unit = d_factors[:, 1:4]
    if lmax == 2:
        d_unit = d_unit + _quad_transpose(unit, d_factors[:, 4:9])
    return d_unit


def _angular_jvp(unit: Tensor, tangent: Tensor, lmax: int) -> Tensor:
    """Directional derivative of the factors (P, C) along ``tangent`` (P, 3) of the unit vector."""
    parts = [torch.zeros_like(unit[:, :1])]
    if lmax >= 1:
        parts.append(tangent)
    if lmax == 2:
        (x, y, z), (tx, ty, tz) = unit.unbind(1), tangent.unbind(1)
        parts.append(torch.stack([2 * x * tx, x * ty + y * tx, x * tz + z * tx, 2 * y * ty, y * tz + z * ty], 1))
    return torch.cat(parts, dim=1)


def _quad_metric(q: Tensor) -> Tensor:
    """K q for the 5-component quadrupole q (N, 5, F), where q^T K q = a2^2 - eps.

    K = 2 I + e_xx e_yy^T + e_yy e_xx^T (symmetric).
    """
    kq = 2.0 * q
    return torch.cat([kq[:, :1] + q[:, 3:4], kq[:, 1:3], kq[:, 3:4] + q[:, :1], kq[:, 4:]], dim=1)


@dataclass
class _BackwardPass:
    """Forward and backward intermediates of one interaction call (see :func:`_backward_pass`)."""

    dist: Tensor  # (P,)
    unit: Tensor  # (P, 3)
    partials: tuple  # s and its partials, each (P, nu) (see _sensitivity_partials)
    by_sender: PairBlocks
    by_receiver: PairBlocks
    s_blocks: Tensor  # (N, k, nu)
    t: Tensor  # (P, F) radial contraction
    a_blocks: Tensor  # (N, k, C) factors per receiver
    t_blocks: Tensor  # (N, k, F) t per receiver
    m: Tensor  # (N, C, F)
    a1: Tensor | None  # (N, F)
    a2: Tensor | None  # (N, F)
    km: Tensor | None  # (N, 5, F) K q, lmax = 2
    dm: Tensor  # (N, C, F) d loss / d m
    dt_blocks: Tensor  # (N, k, F) d loss / d t per sender
    d_factors: Tensor  # (P, C)
    ds: Tensor  # (P, nu)
    d_dist: Tensor  # (P,)
    d_unit: Tensor  # (P, 3)


def _backward_pass(grad_out, Y, pair_coord, pair_first, pair_second, mu, sigma, vecscales, quadscales, cutoff,
                   cusp_reg, lmax, second=False) -> _BackwardPass:
    """Recompute the forward, then run the backward down to the pair geometry (steps shared by the
    backward and the double backward)."""
    dist, unit, factors, by_sender, by_receiver = _pair_geometry(pair_coord, pair_first, pair_second, Y.shape[0], lmax)
    partials = _sensitivity_partials(dist, mu, sigma, cutoff, second)
    s_blocks = by_sender.pad(partials[0])
    t = by_sender.unpad(torch.bmm(s_blocks, Y))
    a_blocks, t_blocks = by_receiver.pad(factors), by_receiver.pad(t)
    m = torch.bmm(a_blocks.transpose(1, 2), t_blocks)
    _, a1, a2 = _invariants(m, vecscales, quadscales, cusp_reg, lmax)

    # d out / d m, per component: 1 | l1 m_v / a1 | l2 K q / a2
    parts, km = [grad_out.unsqueeze(1)], None
    if lmax >= 1:
        parts.append((grad_out * vecscales / a1).unsqueeze(1) * m[:, 1:4])
    if lmax >= 2:
        km = _quad_metric(m[:, 4:9])
        parts.append((grad_out * quadscales / a2).unsqueeze(1) * km)
    dm = torch.cat(parts, dim=1)

    # angular, per receiver: dt = A dm, dA = t dm^T; radial, per sender: dS = dT Y^T
    dt = by_receiver.unpad(torch.bmm(a_blocks, dm))
    d_factors = by_receiver.unpad(torch.bmm(t_blocks, dm.transpose(1, 2)))
    dt_blocks = by_sender.pad(dt)
    ds = by_sender.unpad(torch.bmm(dt_blocks, Y.transpose(1, 2)))
    d_dist = (ds * partials[1]).sum(1)
    d_unit = _angular_backward(unit, d_factors, lmax)
    return _BackwardPass(dist, unit, partials, by_sender, by_receiver, s_blocks, t, a_blocks, t_blocks, m, a1, a2, km,
                         dm, dt_blocks, d_factors, ds, d_dist, d_unit)


def interaction_backward(
    grad_out: Tensor,
    Y: Tensor,
    pair_coord: Tensor,
    pair_first: Tensor,
    pair_second: Tensor,
    mu: Tensor,
    sigma: Tensor,
    vecscales: Tensor | None,
    quadscales: Tensor | None,
    cutoff: float,
    cusp_reg: float,
    lmax: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Analytic vector-Jacobian product of :func:`interaction`.

    Returns (grad_Y (N, nu, F), grad_pair_coord (P, 3), grad_mu (nu,), grad_sigma (nu,),
    grad_vecscales (F,) or (0,), grad_quadscales (F,) or (0,)). Written out step by step: it is
    the specification of the fused backward kernels.
    """
    b = _backward_pass(grad_out, Y, pair_coord, pair_first, pair_second, mu, sigma, vecscales, quadscales, cutoff,
                       cusp_reg, lmax)
    grad_Y = torch.bmm(b.s_blocks.transpose(1, 2), b.dt_blocks)  # per sender: dY = S^T dT
    radial_unit = (b.d_unit * b.unit).sum(1, keepdim=True)
    grad_coord = (b.d_unit - radial_unit * b.unit) / b.dist.unsqueeze(1) + b.d_dist.unsqueeze(1) * b.unit
    grad_mu = (b.ds * b.partials[2]).sum(0)
    grad_sigma = (b.ds * b.partials[3]).sum(0)
    grad_vec = grad_out.new_zeros(0) if b.a1 is None else (grad_out * b.a1).sum(0)
    grad_quad = grad_out.new_zeros(0) if b.a2 is None else (grad_out * b.a2).sum(0)
    return grad_Y, grad_coord, grad_mu, grad_sigma, grad_vec, grad_quad


def interaction_double_backward(
    grad_out: Tensor,
    Y: Tensor,
    pair_coord: Tensor,
    pair_first: Tensor,
    pair_second: Tensor,
    mu: Tensor,
    sigma: Tensor,
    vecscales: Tensor | None,
    quadscales: Tensor | None,
    v_Y: Tensor | None,
    v_coord: Tensor | None,
    v_mu: Tensor | None,
    v_sigma: Tensor | None,
    v_vecscales: Tensor | None,
    v_quadscales: Tensor | None,
    cutoff: float,
    cusp_reg: float,
    lmax: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Analytic vector-Jacobian product of :func:`interaction_backward` (what force training needs).

    The v_* are the cotangents of its outputs (grad_Y, grad_pair_coord, grad_mu, grad_sigma,
    grad_vecscales, grad_quadscales); None stands for zero. Returns the gradients with respect to
    (grad_out, Y, pair_coord, mu, sigma, vecscales, quadscales), the last two (0,) when absent.

    Three passes: recompute the forward and backward intermediates; reverse the backward's steps
    (geometry, angular, radial, invariants) to get the cotangents of the forward intermediates
    m, t, factors, s, r_hat and r; then push those back through the forward. Written out step by
    step as the specification of the fused double-backward kernels.
    """
    # -- recompute: forward and backward intermediates ----------------------------------------------
    g = grad_out
    bp = _backward_pass(g, Y, pair_coord, pair_first, pair_second, mu, sigma, vecscales, quadscales, cutoff, cusp_reg,
                        lmax, second=True)
    dist, unit, by_sender, by_receiver = bp.dist, bp.unit, bp.by_sender, bp.by_receiver
    s, s_r, s_mu, s_sigma, s_rr, s_rmu, s_rsigma, s_mumu, s_musigma, s_sigmasigma = bp.partials
    s_blocks, t_blocks, a_blocks = bp.s_blocks, bp.t_blocks, bp.a_blocks
    m, a1, a2, km, dm = bp.m, bp.a1, bp.a2, bp.km, bp.dm
    dt_blocks, d_factors, ds, d_dist, d_unit = bp.dt_blocks, bp.d_factors, bp.ds, bp.d_dist, bp.d_unit

    # -- reverse the backward ---------------------------------------------------------------------
    # geometry: grad_coord = (d_unit - (u.d_unit) u) / r + d_dist u
    v_coord = torch.zeros_like(pair_coord) if v_coord is None else v_coord
    inv_r = dist.reciprocal().unsqueeze(1)
    v_radial = (v_coord * unit).sum(1, keepdim=True)  # cotangent of d_dist
    u_dot_du = (unit * d_unit).sum(1, keepdim=True)
    bar_d_unit = (v_coord - v_radial * unit) * inv_r
    bar_unit = (-u_dot_du * v_coord - v_radial * d_unit) * inv_r + d_dist.unsqueeze(1) * v_coord
    bar_dist = -(v_coord * (d_unit - u_dot_du * unit)).sum(1) * inv_r.squeeze(1) ** 2
    # angular: d_unit = J_A(u)^T d_factors
    bar_d_factors = _angular_jvp(unit, bar_d_unit, lmax)
    if lmax == 2:
        bar_unit = bar_unit + _quad_transpose(bar_d_unit, d_factors[:, 4:9])
    # sensitivities: d_dist = sum_nu ds s_r; grad_mu = sum_p ds s_mu; grad_sigma = sum_p ds s_sigma
    bar_ds = v_radial * s_r
    second_r, second_mu, second_sigma = v_radial * s_rr, v_radial * s_rmu, v_radial * s_rsigma
    if v_mu is not None:
        bar_ds = bar_ds + v_mu * s_mu
        second_r = second_r + v_mu * s_rmu
        second_mu = second_mu + v_mu * s_mumu
        second_sigma = second_sigma + v_mu * s_musigma
    if v_sigma is not None:
        bar_ds = bar_ds + v_sigma * s_sigma
        second_r = second_r + v_sigma * s_rsigma
        second_mu = second_mu + v_sigma * s_musigma
        second_sigma = second_sigma + v_sigma * s_sigmasigma
    bar_dist = bar_dist + (ds * second_r).sum(1)
    grad_mu = (ds * second_mu).sum(0)
    grad_sigma = (ds * second_sigma).sum(0)
    # radial: grad_Y = S^T dT per sender; ds = dT Y^T per sender
    bar_ds_blocks = by_sender.pad(bar_ds)
    bar_dt_blocks = torch.bmm(bar_ds_blocks, Y)
    grad_Y = torch.bmm(bar_ds_blocks.transpose(1, 2), dt_blocks)
    bar_s = torch.zeros_like(s)
    if v_Y is not None:
        bar_dt_blocks = bar_dt_blocks + torch.bmm(s_blocks, v_Y)
        bar_s = by_sender.unpad(torch.bmm(dt_blocks, v_Y.transpose(1, 2)))
    bar_dt = by_sender.unpad(bar_dt_blocks)
    # angular per receiver: dt = A dm; d_factors = t dm^T
    bar_dt_r, bar_df_r = by_receiver.pad(bar_dt), by_receiver.pad(bar_d_factors)
    bar_dm = torch.bmm(a_blocks.transpose(1, 2), bar_dt_r) + torch.bmm(bar_df_r.transpose(1, 2), t_blocks)
    bar_factors = by_receiver.unpad(torch.bmm(bar_dt_r, dm.transpose(1, 2)))
    bar_t = by_receiver.unpad(torch.bmm(bar_df_r, dm))
    # invariants: dm = D(m, g, scales); grad_vecscales = sum g a1; grad_quadscales = sum g a2
    grad_g = bar_dm[:, 0]
    bar_m_parts = [torch.zeros_like(m[:, :1])]
    grad_vec, grad_quad = g.new_zeros(0), g.new_zeros(0)
    if lmax >= 1:
        mv, bar_v = m[:, 1:4], bar_dm[:, 1:4]
        proj = (bar_v * mv).sum(1)
        grad_g = grad_g + vecscales * proj / a1
        grad_vec = (g * proj / a1).sum(0)
        coef = -g * vecscales * proj / a1**3
        if v_vecscales is not None:
            grad_g = grad_g + v_vecscales * a1
            coef = coef + v_vecscales * g / a1
        bar_m_parts.append((g * vecscales / a1).unsqueeze(1) * bar_v + coef.unsqueeze(1) * mv)
    if lmax >= 2:
        bar_q = bar_dm[:, 4:9]
        proj = (bar_q * km).sum(1)
        grad_g = grad_g + quadscales * proj / a2
        grad_quad = (g * proj / a2).sum(0)
        coef = -g * quadscales * proj / a2**3
        if v_quadscales is not None:
            grad_g = grad_g + v_quadscales * a2
            coef = coef + v_quadscales * g / a2
        bar_m_parts.append((g * quadscales / a2).unsqueeze(1) * _quad_metric(bar_q) + coef.unsqueeze(1) * km)
    bar_m = torch.cat(bar_m_parts, dim=1)

    # -- push the cotangents of m, t, factors, s, r_hat, r back through the forward ---------------
    bar_factors = bar_factors + by_receiver.unpad(torch.bmm(t_blocks, bar_m.transpose(1, 2)))
    bar_t = bar_t + by_receiver.unpad(torch.bmm(a_blocks, bar_m))
    bar_t_blocks = by_sender.pad(bar_t)
    bar_s = bar_s + by_sender.unpad(torch.bmm(bar_t_blocks, Y.transpose(1, 2)))
    grad_Y = grad_Y + torch.bmm(s_blocks.transpose(1, 2), bar_t_blocks)
    bar_unit = bar_unit + _angular_backward(unit, bar_factors, lmax)
    bar_dist = bar_dist + (bar_s * s_r).sum(1)
    grad_mu = grad_mu + (bar_s * s_mu).sum(0)
    grad_sigma = grad_sigma + (bar_s * s_sigma).sum(0)
    radial_unit = (bar_unit * unit).sum(1, keepdim=True)
    grad_coord = (bar_unit - radial_unit * unit) * inv_r + bar_dist.unsqueeze(1) * unit
    return grad_g, grad_Y, grad_coord, grad_mu, grad_sigma, grad_vec, grad_quad
