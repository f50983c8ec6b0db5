"""Sensitivity functions, the Chebyshev radial basis and angular tensor factors (SPEC sections 2 and 3;
the radial basis is ETN's, :mod:`hipnnts_kernels.etn`) as custom ops.

Their backward is the VJP of the reference composite (cheap elementwise work), differentiable to
any order; a fast backend only needs to supply the forward.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .. import backends, reference
from ..checks import check_choice, check_finite, check_tensor
from ._composite import composite_vjp

backends.register("sensitivity", "reference")(reference.sensitivity)
backends.register("chebyshev_radial", "reference")(reference.chebyshev_radial)
backends.register("tensor_factors", "reference")(reference.tensor_factors)
for _op in ("sensitivity", "chebyshev_radial", "tensor_factors"):
    backends.register_lazy(_op, "triton", "hipnnts_kernels.triton_kernels.geometry")


@torch.library.custom_op("hipnnts::sensitivity", mutates_args=())
def _sensitivity(dist: Tensor, mu: Tensor, sigma: Tensor, cutoff: float, backend: str) -> Tensor:
    return backends.implementation("sensitivity", backend)(dist, mu, sigma, cutoff)


@_sensitivity.register_fake
def _(dist, mu, sigma, cutoff, backend):
    return dist.new_empty(dist.shape[0], mu.shape[0])


def _sensitivity_setup(ctx, inputs, output):
    dist, mu, sigma, cutoff, _ = inputs
    ctx.save_for_backward(dist, mu, sigma)
    ctx.cutoff = cutoff


def _sensitivity_backward(ctx, grad):
    dist, mu, sigma = ctx.saved_tensors
    return (*composite_vjp(reference.sensitivity, (dist, mu, sigma, ctx.cutoff), (grad,)), None)


_sensitivity.register_autograd(_sensitivity_backward, setup_context=_sensitivity_setup)


@torch.library.custom_op("hipnnts::chebyshev_radial", mutates_args=())
def _chebyshev_radial(dist: Tensor, n_basis: int, cutoff: float, backend: str) -> Tensor:
    return backends.implementation("chebyshev_radial", backend)(dist, n_basis, cutoff)


@_chebyshev_radial.register_fake
def _(dist, n_basis, cutoff, backend):
    return dist.new_empty(dist.shape[0], n_basis)


def _chebyshev_setup(ctx, inputs, output):
    dist, n_basis, cutoff, _ = inputs
    ctx.save_for_backward(dist)
    ctx.n_basis, ctx.cutoff = n_basis, cutoff


def _chebyshev_backward(ctx, grad):
    (dist,) = ctx.saved_tensors
    return (*composite_vjp(reference.chebyshev_radial, (dist, ctx.n_basis, ctx.cutoff), (grad,)), None)


_chebyshev_radial.register_autograd(_chebyshev_backward, setup_context=_chebyshev_setup)


@torch.library.custom_op("hipnnts::tensor_factors", mutates_args=())
def _tensor_factors(unit: Tensor, lmax: int, backend: str) -> Tensor:
    return backends.implementation("tensor_factors", backend)(unit, lmax)


@_tensor_factors.register_fake
def _(unit, lmax, backend):
    return unit.new_empty(unit.shape[0], reference.N_COMPONENTS[lmax])


def _factors_setup(ctx, inputs, output):
    unit, lmax, _ = inputs
    ctx.save_for_backward(unit)
    ctx.lmax = lmax


def _factors_backward(ctx, grad):
    (unit,) = ctx.saved_tensors
    return (*composite_vjp(reference.tensor_factors, (unit, ctx.lmax), (grad,)), None)


_tensor_factors.register_autograd(_factors_backward, setup_context=_factors_setup)


def sensitivity(dist: Tensor, mu: Tensor, sigma: Tensor, cutoff: float, *, backend: str = "auto") -> Tensor:
    """HIP-NN sensitivities s_nu(r) = exp(-sigma_nu^2 (1/r - 1/mu_nu)^2 / 2) cos^2(pi r / (2 r_c)) [r <= r_c].

    Args:
        dist: (P,) pair distances (Å), positive.
        mu: (nu,) sensitivity centres (Å); sigma: (nu,) inverse widths (Å).
        cutoff: r_c (Å), positive.

    Returns:
        (P, nu) sensitivities, zero beyond the cutoff.
    """
    check_tensor("dist", dist, (None,))
    check_tensor("mu", mu, (None,), like=dist)
    check_tensor("sigma", sigma, (mu.shape[0],), like=dist)
    _check_cutoff(cutoff)
    check_finite("dist", dist)
    return _sensitivity(dist, mu, sigma, float(cutoff), backends.resolve("sensitivity", backend, dist.device))


def chebyshev_radial(dist: Tensor, n_basis: int, cutoff: float, *, backend: str = "auto") -> Tensor:
    """ETN's radial basis Q_k(r) = T_k(2 r / r_c - 1) (1 - r / r_c)^2 [r < r_c], T_k the Chebyshev
    polynomials of the first kind (Shapeev's MTP radial basis).

    Args:
        dist: (P,) pair distances (Å), non-negative.
        n_basis: K, the number of basis functions (k = 0 .. K - 1), at least 1.
        cutoff: r_c (Å), positive.

    Returns:
        (P, K) basis values, zero at and beyond the cutoff (with their first derivative at r_c).
    """
    check_tensor("dist", dist, (None,))
    if isinstance(n_basis, bool) or not isinstance(n_basis, int) or n_basis < 1:
        raise ValueError(f"n_basis must be a positive integer, got {n_basis!r}")
    _check_cutoff(cutoff)
    check_finite("dist", dist)
    return _chebyshev_radial(dist, n_basis, float(cutoff), backends.resolve("chebyshev_radial", backend,
                                                                           dist.device))


def tensor_factors(unit: Tensor, lmax: int, *, backend: str = "auto") -> Tensor:
    """Angular factors of each pair from its unit vector r_hat.

    Args:
        unit: (P, 3) unit vectors r_hat = pair_coord / pair_dist.
        lmax: 0, 1 or 2.

    Returns:
        (P, C) with columns [1 | x, y, z | Qxx, Qxy, Qxz, Qyy, Qyz], Q = r_hat r_hat^T - I/3,
        C = 1, 4 or 9.
    """
    check_tensor("unit", unit, (None, 3))
    check_choice("lmax", lmax, (0, 1, 2))
    return _tensor_factors(unit, lmax, backends.resolve("tensor_factors", backend, unit.device))


def _check_cutoff(cutoff: object) -> None:
    if isinstance(cutoff, bool) or not isinstance(cutoff, (int, float)) or not cutoff > 0:
        raise ValueError(f"cutoff must be a positive number (Å), got {cutoff!r}")
