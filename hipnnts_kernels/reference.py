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


def _sensitivity_partials(dist: Tensor, mu: Tensor, sigma: Tensor, cutoff: float):
    """s (P, nu) and its partial derivatives with respect to r (P, nu), mu (P, nu), sigma (P, nu)."""
    inv_r = dist.reciprocal().unsqueeze(1)
    d = inv_r - mu.reciprocal()
    gauss = torch.exp(-0.5 * (d * sigma) ** 2)
    k = math.pi / (2.0 * cutoff)
    inside = (dist <= cutoff).to(dist.dtype)
    angle = dist * k
    phi = (torch.cos(angle) ** 2 * inside).unsqueeze(1)
    dphi = (-k * torch.sin(2.0 * angle) * inside).unsqueeze(1)
    s = gauss * phi
    sig2d = sigma * sigma * d
    ds_dr = gauss * (sig2d * inv_r * inv_r * phi + dphi)
    ds_dmu = -s * sig2d / (mu * mu)
    ds_dsigma = -s * sigma * d * d
    return s, ds_dr, ds_dmu, ds_dsigma


def _angular_backward(unit: Tensor, d_factors: Tensor, lmax: int) -> Tensor:
    """Gradient with respect to the unit vector (P, 3) from d(loss)/d(factors) (P, C)."""
    if lmax == 0:
        return torch.zeros_like(unit)
    d_unit = d_factors[:, 1:4]
    if lmax == 2:
        x, y, z = unit.unbind(1)
        dxx, dxy, dxz, dyy, dyz = d_factors[:, 4:9].unbind(1)
        d_unit = d_unit + torch.stack(
            [2.0 * x * dxx + y * dxy + z * dxz, x * dxy + 2.0 * y * dyy + z * dyz, x * dxz + y * dyz], dim=1
        )
    return d_unit


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
    dist, unit, factors, by_sender, by_receiver = _pair_geometry(pair_coord, pair_first, pair_second, Y.shape[0], lmax)
    s, ds_dr, ds_dmu, ds_dsigma = _sensitivity_partials(dist, mu, sigma, cutoff)
    s_blocks = by_sender.pad(s)  # (N, k, nu)
    t = by_sender.unpad(torch.bmm(s_blocks, Y))  # (P, F)
    a_blocks, t_blocks = by_receiver.pad(factors), by_receiver.pad(t)  # (N, k, C), (N, k, F)
    m = torch.bmm(a_blocks.transpose(1, 2), t_blocks)  # (N, C, F)
    _, a1, a2 = _invariants(m, vecscales, quadscales, cusp_reg, lmax)

    # d out / d m, per component, and the scale gradients.
    parts = [grad_out.unsqueeze(1)]
    grad_vec, grad_quad = grad_out.new_zeros(0), grad_out.new_zeros(0)
    if lmax >= 1:
        parts.append((grad_out * vecscales / a1).unsqueeze(1) * m[:, 1:4])
        grad_vec = (grad_out * a1).sum(0)
    if lmax >= 2:
        q = m[:, 4:9]
        w = grad_out * quadscales / a2
        # d a2^2 / d q_c = 2 (2 q_c + [c = xx] q_yy + [c = yy] q_xx); the 1/(2 a2) is in w.
        dq = 2.0 * q
        dq = torch.cat([dq[:, :1] + q[:, 3:4], dq[:, 1:3], dq[:, 3:4] + q[:, :1], dq[:, 4:]], dim=1)
        parts.append(w.unsqueeze(1) * dq)
        grad_quad = (grad_out * a2).sum(0)
    dm = torch.cat(parts, dim=1)  # (N, C, F)

    # angular, per receiver: dt = A dm, dA = t dm^T
    dt = by_receiver.unpad(torch.bmm(a_blocks, dm))  # (P, F)
    d_factors = by_receiver.unpad(torch.bmm(t_blocks, dm.transpose(1, 2)))  # (P, C)
    # radial, per sender: dY = S^T dT, dS = dT Y^T
    dt_blocks = by_sender.pad(dt)  # (N, k, F)
    grad_Y = torch.bmm(s_blocks.transpose(1, 2), dt_blocks)  # (N, nu, F)
    ds = by_sender.unpad(torch.bmm(dt_blocks, Y.transpose(1, 2)))  # (P, nu)

    d_dist = (ds * ds_dr).sum(1)
    d_unit = _angular_backward(unit, d_factors, lmax)
    radial_unit = (d_unit * unit).sum(1, keepdim=True)
    grad_coord = (d_unit - radial_unit * unit) / dist.unsqueeze(1) + d_dist.unsqueeze(1) * unit
    grad_mu = (ds * ds_dmu).sum(0)
    grad_sigma = (ds * ds_dsigma).sum(0)
    return grad_Y, grad_coord, grad_mu, grad_sigma, grad_vec, grad_quad
