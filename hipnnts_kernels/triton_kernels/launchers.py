"""Launch primitives of the Triton kernels, and the ``"triton"`` implementations built on them.

:class:`TritonLaunchers` implements :class:`~hipnnts_kernels.segment_kernels.Launchers`:
block sizes and warps (``interaction.launch_config``), dtype-exact constants, the per-pair buffers
that pass between the sender and receiver kernels, and placeholders for empty or absent tensors.
:class:`~hipnnts_kernels.segment_kernels.SegmentKernels` (shared with the CUDA backend) does the
rest.
"""
from __future__ import annotations

import triton

from .. import reference
from ..segment_kernels import SegmentKernels
from ._common import constants, launches_on, per_feature, pointer, warps_for
from .envsum import _blocks, _envsum_kernel, _featsum_kernel, _sensesum_kernel
from .interaction import (
    _receiver_forward_kernel,
    _receiver_kernel,
    _sender_contract_kernel,
    _sender_kernel,
    launch_config,
)


class TritonLaunchers:
    """Launch primitives over the Triton kernels (see SegmentKernels for the arguments)."""

    @staticmethod
    def _contract(Y, coord, sender_order, sender_ptr, mu, sigma, consts, cot, t, bar_dt):
        """t (and, with cotangents ``cot``, bar_dt) by sender."""
        n_atoms, nu, features = Y.shape
        v_Y, v_coord, v_mu, v_sigma = cot if cot is not None else (None, None, mu, sigma)
        config = launch_config("sender_contract", nu, features, 0)
        _sender_contract_kernel[(n_atoms, triton.cdiv(features, config["BLOCK_F"]))](
            Y, pointer(coord, Y), pointer(sender_order, sender_ptr), sender_ptr, mu, sigma, consts, pointer(v_Y, Y),
            pointer(v_coord, Y), v_mu, v_sigma, pointer(t, Y), pointer(bar_dt, Y), nu, features,
            DOUBLE=cot is not None, HAS_VY=v_Y is not None, **config)

    @launches_on("Y")
    def interaction_forward(self, Y, coord, order, ptr, sender_order, sender_ptr, mu, sigma, lam1, lam2,
                            cutoff, cusp_reg, lmax, out):
        n_atoms, nu, features = Y.shape
        consts = constants(cutoff, cusp_reg, Y)
        t = Y.new_empty(coord.shape[0], features)
        self._contract(Y, coord, sender_order, sender_ptr, mu, sigma, consts, None, t, None)
        config = launch_config("receiver_forward", nu, features, lmax)
        _receiver_forward_kernel[(n_atoms, triton.cdiv(features, config["BLOCK_F"]))](
            pointer(t, Y), pointer(coord, Y), pointer(order, ptr), ptr, per_feature(lam1, Y, features),
            per_feature(lam2, Y, features), consts, out, features, **config)

    def _derivative(self, Y, coord, order, ptr, sender_order, sender_ptr, mu, sigma, lam1, lam2, cutoff, cusp_reg,
                    lmax, cot, v_lam1, v_lam2, grad_out, grad_Y, grad_coord, mu_part, sigma_part, lam1_part, lam2_part,
                    grad_grad_out):
        """The backward (cot None) or the double backward: t (and bar_dt) by sender, the receiver
        kernel, then the sender kernel."""
        n_atoms, nu, features = Y.shape
        n_pairs, n_comp = coord.shape[0], reference.N_COMPONENTS[lmax]
        consts = constants(cutoff, cusp_reg, Y)
        double = cot is not None
        rows = [Y.new_empty(n_pairs, features) for _ in range(4 if double else 2)]
        t, dt, bar_dt, bar_t = rows if double else (*rows, None, None)
        d_factors, bar_factors = Y.new_empty(n_pairs, n_comp), Y.new_empty(n_pairs, n_comp) if double else None
        ds, bar_s = Y.new_empty(n_pairs, nu), Y.new_empty(n_pairs, nu) if double else None
        self._contract(Y, coord, sender_order, sender_ptr, mu, sigma, consts, cot, t, bar_dt)
        v_Y, v_coord, v_mu, v_sigma = cot if double else (None, None, mu, sigma)
        _receiver_kernel[(n_atoms,)](
            pointer(t, Y), pointer(bar_dt, Y), grad_out, pointer(coord, Y), pointer(order, ptr), ptr,
            per_feature(lam1, Y, features), per_feature(lam2, Y, features), consts, pointer(v_coord, Y),
            per_feature(v_lam1, Y, features), per_feature(v_lam2, Y, features), pointer(dt, Y), pointer(bar_t, Y),
            pointer(d_factors, Y), pointer(bar_factors, Y), pointer(grad_grad_out, Y), lam1_part, lam2_part,
            features, n_comp, DOUBLE=double, **launch_config("receiver", nu, features, lmax))
        _sender_kernel[(n_atoms,)](
            Y, pointer(coord, Y), pointer(sender_order, sender_ptr), sender_ptr, mu, sigma, consts, pointer(v_Y, Y),
            pointer(v_coord, Y), v_mu, v_sigma, pointer(dt, Y), pointer(bar_t, Y), pointer(d_factors, Y),
            pointer(bar_factors, Y), pointer(ds, Y), pointer(bar_s, Y), grad_Y, pointer(grad_coord, Y), mu_part,
            sigma_part, nu, features, n_comp, DOUBLE=double, HAS_VY=v_Y is not None,
            **launch_config("sender", nu, features, lmax))

    @launches_on("Y")
    def interaction_backward(self, Y, coord, order, ptr, sender_order, sender_ptr, mu, sigma, lam1, lam2,
                             cutoff, cusp_reg, lmax, grad_out, gradients):
        self._derivative(Y, coord, order, ptr, sender_order, sender_ptr, mu, sigma, lam1, lam2, cutoff, cusp_reg,
                         lmax, None, None, None, grad_out, *gradients, None)

    @launches_on("Y")
    def interaction_double_backward(self, Y, coord, order, ptr, sender_order, sender_ptr, mu, sigma, lam1,
                                    lam2, cutoff, cusp_reg, lmax, v_Y, v_coord, v_mu, v_sigma, v_lam1, v_lam2,
                                    grad_out, gradients):
        self._derivative(Y, coord, order, ptr, sender_order, sender_ptr, mu, sigma, lam1, lam2, cutoff, cusp_reg,
                         lmax, (v_Y, v_coord, v_mu, v_sigma), v_lam1, v_lam2, grad_out, *gradients)

    @launches_on("out")
    def envsum(self, sens, feat, second, order, ptr, out):
        n_atoms, nu, features = out.shape
        block_nu, block_f = _blocks(nu, features)
        grid = (n_atoms, triton.cdiv(nu, block_nu), triton.cdiv(features, block_f))
        _envsum_kernel[grid](pointer(sens, out), feat, pointer(second, ptr), pointer(order, ptr), ptr, out, nu,
                             features, BLOCK_NU=block_nu, BLOCK_F=block_f, num_warps=warps_for(block_nu * block_f))

    @launches_on("env")
    def sensesum(self, env, feat, second, order, ptr, out):
        n_atoms, nu, features = env.shape
        block_nu, block_f = _blocks(nu, features)
        _sensesum_kernel[(n_atoms, triton.cdiv(nu, block_nu))](
            env, feat, pointer(second, ptr), pointer(order, ptr), ptr, pointer(out, env), nu, features,
            BLOCK_NU=block_nu, BLOCK_F=block_f, num_warps=warps_for(block_nu * block_f))

    @launches_on("env")
    def featsum(self, env, sens, first, order, ptr, out):
        n_atoms, nu, features = env.shape
        block_nu, block_f = _blocks(nu, features)
        _featsum_kernel[(n_atoms, triton.cdiv(features, block_f))](
            env, pointer(sens, env), pointer(first, ptr), pointer(order, ptr), ptr, out, nu, features,
            BLOCK_NU=block_nu, BLOCK_F=block_f, num_warps=warps_for(block_nu * block_f))


#: The implementations registered for the backend (see hipnnts_kernels.ops).
KERNELS = SegmentKernels(TritonLaunchers())
