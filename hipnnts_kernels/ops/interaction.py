"""The fused tensor-sensitivity interaction op (SPEC sections 4 and 4.1, the "Y-route").

Three custom ops, one per derivative level, each with one implementation per backend:

- ``hipnnts::interaction``: forward, (N, F_out).
- ``hipnnts::interaction_backward``: its vector-Jacobian product (what forces need).
- ``hipnnts::interaction_double_backward``: the VJP of the backward (what force training needs).

A backend implements the forward and may implement either derivative level. A level it does not
implement runs the reference implementation of that level inside the backward formula, where
autograd records it; every level beyond the double backward is autograd through the reference
double backward. Both are exact to any order, only slower than a fused kernel. The reference
backend implements all three levels analytically (``hipnnts_kernels.reference``).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import backends, reference
from ..checks import check_choice, check_pair_lengths, check_pairs, check_tensor
from ._composite import composite_vjp
from .geometry import _check_cutoff

Grads = tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]


backends.register("interaction", "reference")(reference.interaction)
backends.register("interaction_backward", "reference")(reference.interaction_backward)
backends.register("interaction_double_backward", "reference")(reference.interaction_double_backward)
for _op in ("interaction", "interaction_backward", "interaction_double_backward"):
    backends.register_lazy(_op, "triton", "hipnnts_kernels.triton_kernels.launchers", f"KERNELS.{_op}")
    backends.register_lazy(_op, "cuda", "hipnnts_kernels.cuda_backend", f"KERNELS.{_op}")
    backends.register_lazy(_op, "cpu", "hipnnts_kernels.cpu_backend", f"KERNELS.{_op}")


@torch.library.custom_op("hipnnts::interaction", mutates_args=())
def _interaction(
    Y: Tensor, pair_coord: Tensor, pair_first: Tensor, pair_second: Tensor, mu: Tensor, sigma: Tensor,
    vecscales: Optional[Tensor], quadscales: Optional[Tensor], cutoff: float, cusp_reg: float, lmax: int,
    backend: str,
) -> Tensor:
    return backends.implementation("interaction", backend)(
        Y, pair_coord, pair_first, pair_second, mu, sigma, vecscales, quadscales, cutoff, cusp_reg, lmax
    )


@torch.library.custom_op("hipnnts::interaction_backward", mutates_args=())
def _interaction_backward(
    grad_out: Tensor, Y: Tensor, pair_coord: Tensor, pair_first: Tensor, pair_second: Tensor, mu: Tensor,
    sigma: Tensor, vecscales: Optional[Tensor], quadscales: Optional[Tensor], cutoff: float, cusp_reg: float,
    lmax: int, backend: str,
) -> Grads:
    return tuple(
        backends.implementation("interaction_backward", backend)(
            grad_out, Y, pair_coord, pair_first, pair_second, mu, sigma, vecscales, quadscales, cutoff, cusp_reg, lmax
        )
    )


@torch.library.custom_op("hipnnts::interaction_double_backward", mutates_args=())
def _interaction_double_backward(
    grad_out: Tensor, Y: Tensor, pair_coord: Tensor, pair_first: Tensor, pair_second: Tensor, mu: Tensor,
    sigma: Tensor, vecscales: Optional[Tensor], quadscales: Optional[Tensor], v_Y: Optional[Tensor],
    v_coord: Optional[Tensor], v_mu: Optional[Tensor], v_sigma: Optional[Tensor], v_vecscales: Optional[Tensor],
    v_quadscales: Optional[Tensor], cutoff: float, cusp_reg: float, lmax: int, backend: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    return tuple(
        backends.implementation("interaction_double_backward", backend)(
            grad_out, Y, pair_coord, pair_first, pair_second, mu, sigma, vecscales, quadscales,
            v_Y, v_coord, v_mu, v_sigma, v_vecscales, v_quadscales, cutoff, cusp_reg, lmax,
        )
    )


def _scale_like(scale: Optional[Tensor], like: Tensor) -> Tensor:
    return like.new_empty(0) if scale is None else torch.empty_like(scale)


@_interaction.register_fake
def _(Y, pair_coord, pair_first, pair_second, mu, sigma, vecscales, quadscales, cutoff, cusp_reg, lmax, backend):
    return Y.new_empty(Y.shape[0], Y.shape[2])


@_interaction_backward.register_fake
def _(grad_out, Y, pair_coord, pair_first, pair_second, mu, sigma, vecscales, quadscales, cutoff, cusp_reg, lmax,
      backend):
    return (torch.empty_like(Y), torch.empty_like(pair_coord), torch.empty_like(mu), torch.empty_like(sigma),
            _scale_like(vecscales, Y), _scale_like(quadscales, Y))


@_interaction_double_backward.register_fake
def _(grad_out, Y, pair_coord, pair_first, pair_second, mu, sigma, vecscales, quadscales, *rest):
    return (torch.empty_like(grad_out), torch.empty_like(Y), torch.empty_like(pair_coord), torch.empty_like(mu),
            torch.empty_like(sigma), _scale_like(vecscales, Y), _scale_like(quadscales, Y))


# ------------------------------------------------------------------------------------------
# Autograd wiring: each level's backward is the next level's op, or the reference implementation
# of that level when the backend has no kernel for it.
# ------------------------------------------------------------------------------------------
def _setup(ctx, inputs, output):
    *tensors, cutoff, cusp_reg, lmax, backend = inputs
    ctx.save_for_backward(*tensors)
    ctx.cutoff, ctx.cusp_reg, ctx.lmax, ctx.backend = cutoff, cusp_reg, lmax, backend


def _no_grad_for_missing(grads, scales):
    """Map the empty placeholder gradients of absent scales (lmax < 2) to None."""
    return tuple(None if s is None else g for g, s in zip(grads, scales))


def _interaction_vjp(ctx, grad):
    *_, vec, quad = ctx.saved_tensors
    constants = (ctx.cutoff, ctx.cusp_reg, ctx.lmax)
    if backends.has_implementation("interaction_backward", ctx.backend):
        gY, gc, gmu, gsig, gvec, gquad = _interaction_backward(grad, *ctx.saved_tensors, *constants, ctx.backend)
    else:
        gY, gc, gmu, gsig, gvec, gquad = reference.interaction_backward(grad, *ctx.saved_tensors, *constants)
    return (gY, gc, None, None, gmu, gsig, *_no_grad_for_missing((gvec, gquad), (vec, quad)), None, None, None, None)


def _interaction_backward_vjp(ctx, vY, vc, vmu, vsig, vvec, vquad):
    *_, vec, quad = ctx.saved_tensors
    args = (*ctx.saved_tensors, vY, vc, vmu, vsig, vvec, vquad, ctx.cutoff, ctx.cusp_reg, ctx.lmax)
    if backends.has_implementation("interaction_double_backward", ctx.backend):
        gg, gY, gc, gmu, gsig, gvec, gquad = _interaction_double_backward(*args, ctx.backend)
    else:
        gg, gY, gc, gmu, gsig, gvec, gquad = reference.interaction_double_backward(*args)
    scale_grads = _no_grad_for_missing((gvec, gquad), (vec, quad))
    return (gg, gY, gc, None, None, gmu, gsig, *scale_grads, None, None, None, None)


def _interaction_double_backward_vjp(ctx, *cotangents):
    args = (*ctx.saved_tensors, ctx.cutoff, ctx.cusp_reg, ctx.lmax)
    grads = composite_vjp(reference.interaction_double_backward, args, cotangents)
    return (*grads[:15], None, None, None, None)


_interaction.register_autograd(_interaction_vjp, setup_context=_setup)
_interaction_backward.register_autograd(_interaction_backward_vjp, setup_context=_setup)
_interaction_double_backward.register_autograd(_interaction_double_backward_vjp, setup_context=_setup)


# ------------------------------------------------------------------------------------------
# Public API
# ------------------------------------------------------------------------------------------
def interaction(
    Y: Tensor,
    pair_coord: Tensor,
    pair_first: Tensor,
    pair_second: Tensor,
    mu: Tensor,
    sigma: Tensor,
    *,
    cutoff: float,
    lmax: int,
    vecscales: Tensor | None = None,
    quadscales: Tensor | None = None,
    cusp_reg: float = 1e-6,
    backend: str = "auto",
) -> Tensor:
    """Fused HIP-NN-TS interaction pre-activation, a0 + vecscales * a1 + quadscales * a2.

    With s_nu(r) the sensitivities, Y_c(r_hat) the angular factors (see :func:`tensor_factors`) and
    the contracted tensor features m[i, c, o] = sum over pairs p with first(p) = i of
    Y_c(r_hat_p) sum_nu s_nu(r_p) Y[second(p), nu, o]:
    a0 = m[:, 0]; a1 = sqrt(sum_{c in l=1} m_c^2 + eps); a2 = sqrt(2 (sum_{c in l=2} m_c^2 + m_xx m_yy) + eps).
    The self-interaction (U z + b) is not included: the layer adds it.

    Args:
        Y: (N, nu, F_out) per-sensitivity transformed features, Y[j, nu, o] = sum_f W[nu, o, f] z[j, f].
        pair_coord: (P, 3) pair vectors R[second] - R[first] (+ image shift), in Å; nonzero.
        pair_first: (P,) int64/int32 receiving atom i; pair_second: (P,) sending atom j. Any
            order, duplicates allowed (each copy counts).
        mu, sigma: (nu,) sensitivity centres and inverse widths (Å).
        cutoff: r_c in Å.
        lmax: 0 (HIP-NN), 1 or 2 (HIP-NN-TS).
        vecscales: (F_out,) lambda_1, required iff lmax >= 1.
        quadscales: (F_out,) lambda_2, required iff lmax == 2.
        cusp_reg: eps inside the square roots.
        backend: "auto" or a backend name.

    All floating inputs share one dtype (float32 or float64) and device. Differentiable (to any
    order) with respect to Y, pair_coord, mu, sigma, vecscales and quadscales.

    Returns:
        (N, F_out) tensor.
    """
    check_tensor("Y", Y, (None, None, None))
    n_atoms, n_sens, n_out = Y.shape
    n_pairs = check_pairs(pair_first, pair_second, n_atoms, Y)
    check_tensor("pair_coord", pair_coord, (n_pairs, 3), like=Y)
    check_tensor("mu", mu, (n_sens,), like=Y)
    check_tensor("sigma", sigma, (n_sens,), like=Y)
    check_choice("lmax", lmax, (0, 1, 2))
    _check_cutoff(cutoff)
    for name, scale, needed in (("vecscales", vecscales, lmax >= 1), ("quadscales", quadscales, lmax >= 2)):
        if needed and scale is None:
            raise ValueError(f"{name} is required for lmax={lmax}")
        if not needed and scale is not None:
            raise ValueError(f"{name} must be None for lmax={lmax}")
        if scale is not None:
            check_tensor(name, scale, (n_out,), like=Y)
    if not cusp_reg >= 0:
        raise ValueError(f"cusp_reg must be >= 0, got {cusp_reg!r}")
    check_pair_lengths(pair_coord)
    name = backends.resolve("interaction", backend, Y.device)
    return _interaction(
        Y, pair_coord, pair_first, pair_second, mu, sigma, vecscales, quadscales, float(cutoff), float(cusp_reg),
        lmax, name,
    )
