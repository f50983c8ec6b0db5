"""Launch primitives of the Triton kernels, and the ``"triton"`` implementations built on them.

:class:`TritonLaunchers` implements :class:`~hipnnts_kernels.segment_kernels.Launchers`:
block sizes and warps (``interaction.launch_config``), dtype-exact constants, and placeholders
for empty or absent tensors. :class:`~hipnnts_kernels.segment_kernels.SegmentKernels` (shared
with the CUDA backend) does the rest.
"""
from __future__ import annotations

import triton

from ..segment_kernels import SegmentKernels
from ._common import constants, per_feature, pointer, warps_for
from .envsum import _blocks, _envsum_kernel, _featsum_kernel, _sensesum_kernel
from .interaction import (
    _backward_kernel,
    _double_backward_kernel,
    _forward_kernel,
    _sender_kernel,
    launch_config,
)


class TritonLaunchers:
    """Launch primitives over the Triton kernels (see SegmentKernels for the arguments)."""

    @staticmethod
    def _inputs(Y, coord, second, order, ptr, mu, sigma, lam1, lam2, cutoff, cusp_reg):
        features = Y.shape[2]
        return (Y, pointer(coord, Y), pointer(second, ptr), pointer(order, ptr), ptr, mu, sigma,
                per_feature(lam1, Y, features), per_feature(lam2, Y, features), constants(cutoff, cusp_reg, Y))

    def interaction_forward(self, Y, coord, second, order, ptr, sender_order, sender_ptr, mu, sigma, lam1, lam2,
                            cutoff, cusp_reg, lmax, out):
        n_atoms, nu, features = Y.shape
        config = launch_config("forward", nu, features, lmax)
        grid = (n_atoms, triton.cdiv(features, config["BLOCK_F"]))
        _forward_kernel[grid](*self._inputs(Y, coord, second, order, ptr, mu, sigma, lam1, lam2, cutoff, cusp_reg),
                              out, nu, features, **config)

    def interaction_backward(self, Y, coord, second, order, ptr, sender_order, sender_ptr, mu, sigma, lam1, lam2,
                             cutoff, cusp_reg, lmax, grad_out, grad_Y, grad_coord, mu_part, sigma_part, lam1_part,
                             lam2_part):
        """The receiver kernel writes dt (P, F); the sender kernel sums it into grad_Y."""
        n_atoms, nu, features = Y.shape
        dt = Y.new_empty(coord.shape[0], features)
        _backward_kernel[(n_atoms,)](
            grad_out, *self._inputs(Y, coord, second, order, ptr, mu, sigma, lam1, lam2, cutoff, cusp_reg),
            pointer(dt, Y), pointer(grad_coord, Y), mu_part, sigma_part, lam1_part, lam2_part, nu, features,
            **launch_config("backward", nu, features, lmax))
        self._sender_sum(coord, sender_order, sender_ptr, mu, sigma, cutoff, dt, None, None, grad_Y)

    def interaction_double_backward(self, Y, coord, second, order, ptr, sender_order, sender_ptr, mu, sigma, lam1,
                                    lam2, cutoff, cusp_reg, lmax, v_Y, v_coord, v_mu, v_sigma, v_lam1, v_lam2,
                                    grad_out, grad_Y, grad_coord, mu_part, sigma_part, grad_grad_out, lam1_part,
                                    lam2_part):
        """The receiver kernel writes dt, bar_t (P, F) and bar_ds (P, nu); the sender kernel sums
        s (x) bar_t + bar_ds (x) dt into grad_Y."""
        n_atoms, nu, features = Y.shape
        n_pairs = coord.shape[0]
        dt, bar_t, bar_ds = Y.new_empty(n_pairs, features), Y.new_empty(n_pairs, features), Y.new_empty(n_pairs, nu)
        _double_backward_kernel[(n_atoms,)](
            grad_out, *self._inputs(Y, coord, second, order, ptr, mu, sigma, lam1, lam2, cutoff, cusp_reg),
            pointer(v_Y, Y), pointer(v_coord, Y), v_mu, v_sigma, per_feature(v_lam1, Y, features),
            per_feature(v_lam2, Y, features), pointer(dt, Y), pointer(bar_t, Y), pointer(bar_ds, Y),
            pointer(grad_coord, Y), mu_part, sigma_part, grad_grad_out, lam1_part, lam2_part, nu, features,
            HAS_VY=v_Y is not None, **launch_config("double_backward", nu, features, lmax))
        self._sender_sum(coord, sender_order, sender_ptr, mu, sigma, cutoff, bar_t, bar_ds, dt, grad_Y)

    @staticmethod
    def _sender_sum(coord, order, ptr, mu, sigma, cutoff, X, B, Z, out):
        """out[j] = sum over sender j's pairs p of s_p (x) X_p (+ B_p (x) Z_p when B is given)."""
        n_atoms, nu, features = out.shape
        config = launch_config("sender", nu, features, 0)
        grid = (n_atoms, triton.cdiv(features, config["BLOCK_F"]))
        _sender_kernel[grid](pointer(coord, out), pointer(order, ptr), ptr, mu, sigma, constants(cutoff, 0.0, out),
                             pointer(X, out), pointer(B, out), pointer(Z, out), out, nu, features, HAS_B=B is not None,
                             **config)

    def envsum(self, sens, feat, second, order, ptr, out):
        n_atoms, nu, features = out.shape
        block_nu, block_f = _blocks(nu, features)
        grid = (n_atoms, triton.cdiv(nu, block_nu), triton.cdiv(features, block_f))
        _envsum_kernel[grid](pointer(sens, out), feat, pointer(second, ptr), pointer(order, ptr), ptr, out, nu,
                             features, BLOCK_NU=block_nu, BLOCK_F=block_f, num_warps=warps_for(block_nu * block_f))

    def sensesum(self, env, feat, second, order, ptr, out):
        n_atoms, nu, features = env.shape
        block_nu, block_f = _blocks(nu, features)
        _sensesum_kernel[(n_atoms, triton.cdiv(nu, block_nu))](
            env, feat, pointer(second, ptr), pointer(order, ptr), ptr, pointer(out, env), nu, features,
            BLOCK_NU=block_nu, BLOCK_F=block_f, num_warps=warps_for(block_nu * block_f))

    def featsum(self, env, sens, first, order, ptr, out):
        n_atoms, nu, features = env.shape
        block_nu, block_f = _blocks(nu, features)
        _featsum_kernel[(n_atoms, triton.cdiv(features, block_f))](
            env, pointer(sens, env), pointer(first, ptr), pointer(order, ptr), ptr, out, nu, features,
            BLOCK_NU=block_nu, BLOCK_F=block_f, num_warps=warps_for(block_nu * block_f))


#: The implementations registered for the backend (see hipnnts_kernels.ops).
KERNELS = SegmentKernels(TritonLaunchers())
