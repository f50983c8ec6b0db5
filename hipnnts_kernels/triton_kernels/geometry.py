"""Sensitivities, the Chebyshev radial basis and angular tensor factors in Triton (elementwise over pairs).

The backward of these ops is the reference composite (see :mod:`hipnnts_kernels.ops.geometry`);
inside the fused interaction the same device functions run in registers instead.
"""
from __future__ import annotations

import triton
import triton.language as tl
from torch import Tensor

from .. import reference
from ._common import (
    angular_factors,
    constants,
    launches_on,
    load_constants,
    load_sensitivity_params,
    pow2,
    sensitivity_value,
)

_BLOCK_P = 64


@triton.jit
def _sensitivity_kernel(dist, mu, sigma, consts, out, P, NU, BLOCK_P: tl.constexpr, NU_PAD: tl.constexpr):
    p = tl.program_id(0).to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    p_mask = p < P
    n = tl.arange(0, NU_PAD)
    nu_mask = n < NU
    k, rc, eps, third = load_constants(consts)
    inv_mu, sig = load_sensitivity_params(mu, sigma, n, nu_mask)
    r = tl.load(dist + p, mask=p_mask, other=1.0)
    s = sensitivity_value(r[:, None], 1.0 / r[:, None], inv_mu[None, :], sig[None, :], nu_mask[None, :], k, rc)
    tl.store(out + p[:, None] * NU + n[None, :], s, mask=p_mask[:, None] & nu_mask[None, :])


@triton.jit
def _chebyshev_kernel(dist, consts, out, P, N_BASIS: tl.constexpr, BLOCK_P: tl.constexpr):
    p = tl.program_id(0).to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    p_mask = p < P
    k, rc, eps, third = load_constants(consts)
    d = tl.load(dist + p, mask=p_mask, other=0.0)
    inside = d < rc
    r = tl.where(inside, d, 0.0)
    x = r * (2.0 / rc) - 1.0
    u = 1.0 - r / rc
    envelope = tl.where(inside, u * u, 0.0)
    previous = tl.full([BLOCK_P], 1.0, x.dtype)
    current = x
    tl.store(out + p * N_BASIS, envelope, mask=p_mask)
    for n in tl.static_range(1, N_BASIS):
        tl.store(out + p * N_BASIS + n, current * envelope, mask=p_mask)
        current, previous = 2.0 * x * current - previous, current


@triton.jit
def _factors_kernel(unit, consts, out, P, C, LMAX: tl.constexpr, BLOCK_P: tl.constexpr, C_PAD: tl.constexpr):
    p = tl.program_id(0).to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    p_mask = p < P
    c = tl.arange(0, C_PAD)
    k, rc, eps, third = load_constants(consts)
    ux = tl.load(unit + p * 3, mask=p_mask, other=0.0)[:, None]
    uy = tl.load(unit + p * 3 + 1, mask=p_mask, other=0.0)[:, None]
    uz = tl.load(unit + p * 3 + 2, mask=p_mask, other=0.0)[:, None]
    a = angular_factors(ux, uy, uz, third, c[None, :], LMAX)
    tl.store(out + p[:, None] * C + c[None, :], a, mask=p_mask[:, None] & (c < C)[None, :])


@launches_on("dist")
def sensitivity(dist: Tensor, mu: Tensor, sigma: Tensor, cutoff: float) -> Tensor:
    """(P,) -> (P, nu); see :func:`hipnnts_kernels.reference.sensitivity`."""
    n_pairs, nu = dist.shape[0], mu.shape[0]
    out = dist.new_empty(n_pairs, nu)
    if out.numel() == 0:
        return out
    _sensitivity_kernel[(triton.cdiv(n_pairs, _BLOCK_P),)](
        dist.contiguous(), mu.contiguous(), sigma.contiguous(), constants(cutoff, 0.0, dist), out, n_pairs, nu,
        BLOCK_P=_BLOCK_P, NU_PAD=pow2(nu))
    return out


@launches_on("dist")
def chebyshev_radial(dist: Tensor, n_basis: int, cutoff: float) -> Tensor:
    """(P,) -> (P, n_basis); see :func:`hipnnts_kernels.reference.chebyshev_radial`."""
    out = dist.new_empty(dist.shape[0], n_basis)
    if out.numel() == 0:
        return out
    _chebyshev_kernel[(triton.cdiv(dist.shape[0], _BLOCK_P),)](
        dist.contiguous(), constants(cutoff, 0.0, dist), out, dist.shape[0], N_BASIS=n_basis, BLOCK_P=_BLOCK_P)
    return out


@launches_on("unit")
def tensor_factors(unit: Tensor, lmax: int) -> Tensor:
    """(P, 3) -> (P, C); see :func:`hipnnts_kernels.reference.tensor_factors`."""
    n_pairs, n_comp = unit.shape[0], reference.N_COMPONENTS[lmax]
    out = unit.new_empty(n_pairs, n_comp)
    if n_pairs == 0:
        return out
    _factors_kernel[(triton.cdiv(n_pairs, _BLOCK_P),)](
        unit.contiguous(), constants(1.0, 0.0, unit), out, n_pairs, n_comp, LMAX=lmax, BLOCK_P=_BLOCK_P,
        C_PAD=pow2(n_comp))
    return out
