"""The glue both fast backends share: from the ops' implementation signatures to launch primitives.

The Triton and CUDA kernels accumulate per atom over pair segments (see
:mod:`hipnnts_kernels.pair_index`). :class:`SegmentKernels` does what is the same for both:
it falls back to the reference for degenerate shapes, supplies the cached pair index, allocates
the outputs, runs the receiver kernel and then the sender kernel, and sums the per-atom partial
gradients. A backend supplies only its :class:`Launchers`.
"""
from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from . import reference
from .pair_index import pair_index

#: The ops :class:`SegmentKernels` implements.
OPS = ("interaction", "interaction_backward", "interaction_double_backward", "envsum", "sensesum", "featsum")


class Launchers(Protocol):
    """Launch primitives of a backend: each writes into the outputs it is given.

    Floating tensors are contiguous and share a dtype; indices are int64; optional tensors are
    None when absent (see csrc/kernels/launch.h for the CUDA ones). ``<inputs>`` below is the
    interaction's argument pack: Y, coord, order, ptr (receiver segments), sender_order,
    sender_ptr, mu, sigma, lam1, lam2, cutoff, cusp_reg, lmax. The backward's mu_part and
    sigma_part are per-atom partial sums (by sender or receiver, the launcher's choice), lam1_part
    and lam2_part per receiver; the caller sums them over atoms. Launchers that sum them over atoms
    themselves set ``sums_over_atoms = True`` and get partials of one row.
    """

    def interaction_forward(self, *inputs_then_out) -> None: ...  # <inputs>, out

    # <inputs>, grad_out, gradients: the list [grad_Y, grad_coord, mu_part, sigma_part, lam1_part, lam2_part]
    def interaction_backward(self, *inputs_then_outputs) -> None: ...

    # <inputs>, v_Y, v_coord, v_mu, v_sigma, v_lam1, v_lam2, grad_out, gradients: the backward's list and
    #     grad_grad_out (the order of hipnnts::Gradients, csrc/kernels/launch.h)
    def interaction_double_backward(self, *inputs_then_outputs) -> None: ...

    # optional, the molecule path (see SegmentKernels), with <molecules> = molecule_ptr, receiver_rank,
    # max_atoms, max_pairs (PairIndex.molecules, PairIndex.receiver_rank):
    # interaction_forward_molecules(<inputs>, <molecules>, out)
    # interaction_backward_molecules(<inputs>, <molecules>, grad_out, gradients)
    # interaction_double_backward_molecules(<inputs>, <molecules>, <cotangents>, grad_out, gradients)
    # featsum_molecules(env, sens, second, receiver_order, receiver_ptr, molecule_ptr, out)

    def envsum(self, sens, feat, second, order, ptr, out) -> None: ...

    def sensesum(self, env, feat, second, order, ptr, out) -> None: ...

    def featsum(self, env, sens, first, order, ptr, out) -> None: ...


class SegmentKernels:
    """Registry implementations (same signatures as :mod:`hipnnts_kernels.reference`) over a set of
    :class:`Launchers`.

    ``molecule_max_atoms`` > 0 turns on the molecule path of the interaction's forward and backward
    and of featsum (an op that scatters by sender) for launchers that have it (the ``*_molecules``
    primitives): used when no atom range that pairs never cross (see
    :func:`~hipnnts_kernels.pair_index.molecule_ranges`) has more atoms than that. (The CUDA
    launchers may still run the split kernels where the largest range does not fit one block.)
    """

    def __init__(self, launch: Launchers, molecule_max_atoms: int = 0):
        self.launch = launch
        self.molecule_max_atoms = molecule_max_atoms

    def _molecules(self, index, pair_first, pair_second, method: str):
        """The molecule boundaries when the molecule path applies, else None."""
        if self.molecule_max_atoms <= 0 or not hasattr(self.launch, method):
            return None
        molecule_ptr, atoms, _ = index.molecules(pair_first, pair_second)
        return molecule_ptr if atoms <= self.molecule_max_atoms else None

    def _molecule_args(self, index, pair_first, pair_second, method: str) -> tuple | None:
        """The molecule path's arguments (molecule_ptr, receiver_rank, max_atoms, max_pairs) when it
        applies to ``method``, else None; ``index`` is the pairs' :func:`pair_index`."""
        molecule_ptr = self._molecules(index, pair_first, pair_second, method)
        if molecule_ptr is None:
            return None
        _, atoms, pairs = index.molecules(pair_first, pair_second)
        return molecule_ptr, index.receiver_rank(), atoms, pairs

    @staticmethod
    def _inputs(Y, pair_coord, pair_first, pair_second, mu, sigma, vecscales, quadscales, cutoff, cusp_reg, lmax):
        """The pairs' :func:`pair_index` and the interaction's argument pack (see :class:`Launchers`)."""
        index = pair_index(pair_first, pair_second, Y.shape[0])
        inputs = (Y.contiguous(), pair_coord.contiguous(), index.receiver_order, index.receiver_ptr,
                  index.sender_order, index.sender_ptr, mu.contiguous(), sigma.contiguous(),
                  None if vecscales is None else vecscales.contiguous(),
                  None if quadscales is None else quadscales.contiguous(), float(cutoff), float(cusp_reg), int(lmax))
        return index, inputs

    def interaction(self, Y, pair_coord, pair_first, pair_second, mu, sigma, vecscales, quadscales, cutoff, cusp_reg,
                    lmax) -> Tensor:
        if Y.numel() == 0:
            return reference.interaction(Y, pair_coord, pair_first, pair_second, mu, sigma, vecscales, quadscales,
                                         cutoff, cusp_reg, lmax)
        index, inputs = self._inputs(Y, pair_coord, pair_first, pair_second, mu, sigma, vecscales, quadscales, cutoff,
                                     cusp_reg, lmax)
        out = Y.new_empty(Y.shape[0], Y.shape[2])
        molecules = self._molecule_args(index, pair_first, pair_second, "interaction_forward_molecules")
        if molecules is not None:
            self.launch.interaction_forward_molecules(*inputs, *molecules, out)
        else:
            self.launch.interaction_forward(*inputs, out)
        return out

    def interaction_backward(self, grad_out, Y, pair_coord, pair_first, pair_second, mu, sigma, vecscales, quadscales,
                             cutoff, cusp_reg, lmax):
        if Y.numel() == 0:
            return reference.interaction_backward(grad_out, Y, pair_coord, pair_first, pair_second, mu, sigma,
                                                  vecscales, quadscales, cutoff, cusp_reg, lmax)
        index, inputs = self._inputs(Y, pair_coord, pair_first, pair_second, mu, sigma, vecscales, quadscales, cutoff,
                                     cusp_reg, lmax)
        gradients = self._gradients(Y, pair_coord.shape[0], double=False)
        molecules = self._molecule_args(index, pair_first, pair_second, "interaction_backward_molecules")
        if molecules is not None:
            self.launch.interaction_backward_molecules(*inputs, *molecules, grad_out.contiguous(), gradients)
        else:
            self.launch.interaction_backward(*inputs, grad_out.contiguous(), gradients)
        return self._summed(gradients, lmax)

    def _gradients(self, Y: Tensor, n_pairs: int, double: bool) -> list[Tensor]:
        """The derivative levels' outputs, in the order of hipnnts::Gradients: grad_Y (N, nu, F),
        grad_coord (P, 3), per-atom partial gradients mu_part, sigma_part (N, nu) and lam1_part,
        lam2_part (N, F) (one row each if the launchers sum over atoms), and for the double backward
        grad_grad_out (N, F)."""
        n_atoms, nu, features = Y.shape
        rows = 1 if getattr(self.launch, "sums_over_atoms", False) else n_atoms
        gradients = [Y.new_empty(Y.shape), Y.new_empty(n_pairs, 3), Y.new_empty(rows, nu), Y.new_empty(rows, nu),
                     Y.new_empty(rows, features), Y.new_empty(rows, features)]
        return gradients + [Y.new_empty(n_atoms, features)] if double else gradients

    @staticmethod
    def _summed(gradients: list[Tensor], lmax: int) -> tuple:
        """(grad_Y, grad_coord, grad_mu, grad_sigma, grad_lam1, grad_lam2): the per-atom partials summed."""
        grad_Y, grad_coord, mu_part, sigma_part, lam1_part, lam2_part = gradients[:6]
        return (grad_Y, grad_coord, mu_part.sum(0), sigma_part.sum(0),
                lam1_part.sum(0) if lmax >= 1 else grad_Y.new_zeros(0),
                lam2_part.sum(0) if lmax >= 2 else grad_Y.new_zeros(0))

    def interaction_double_backward(self, grad_out, Y, pair_coord, pair_first, pair_second, mu, sigma, vecscales,
                                    quadscales, v_Y, v_coord, v_mu, v_sigma, v_vecscales, v_quadscales, cutoff,
                                    cusp_reg, lmax):
        if Y.numel() == 0:
            return reference.interaction_double_backward(
                grad_out, Y, pair_coord, pair_first, pair_second, mu, sigma, vecscales, quadscales, v_Y, v_coord, v_mu,
                v_sigma, v_vecscales, v_quadscales, cutoff, cusp_reg, lmax)
        index, inputs = self._inputs(Y, pair_coord, pair_first, pair_second, mu, sigma, vecscales, quadscales, cutoff,
                                     cusp_reg, lmax)
        nu, n_pairs = Y.shape[1], pair_coord.shape[0]
        given = lambda t, *shape: Y.new_zeros(shape) if t is None else t.contiguous()  # noqa: E731
        optional = lambda t: None if t is None else t.contiguous()  # noqa: E731
        cotangents = (optional(v_Y), given(v_coord, n_pairs, 3), given(v_mu, nu), given(v_sigma, nu),
                      optional(v_vecscales), optional(v_quadscales))
        gradients = self._gradients(Y, n_pairs, double=True)
        molecules = self._molecule_args(index, pair_first, pair_second, "interaction_double_backward_molecules")
        if molecules is not None:
            self.launch.interaction_double_backward_molecules(*inputs, *molecules, *cotangents, grad_out.contiguous(),
                                                              gradients)
        else:
            self.launch.interaction_double_backward(*inputs, *cotangents, grad_out.contiguous(), gradients)
        return (gradients[6], *self._summed(gradients, lmax))

    def envsum(self, sens, feat, pair_first, pair_second) -> Tensor:
        out = feat.new_zeros(feat.shape[0], sens.shape[1], feat.shape[1])
        if out.numel() and sens.shape[0]:
            index = pair_index(pair_first, pair_second, feat.shape[0])
            self.launch.envsum(sens.contiguous(), feat.contiguous(), pair_second.to(torch.int64).contiguous(),
                               index.receiver_order, index.receiver_ptr, out)
        return out

    def sensesum(self, env, feat, pair_first, pair_second) -> Tensor:
        out = env.new_zeros(pair_first.shape[0], env.shape[1])
        if out.numel() and env.shape[2]:
            index = pair_index(pair_first, pair_second, env.shape[0])
            self.launch.sensesum(env.contiguous(), feat.contiguous(), pair_second.to(torch.int64).contiguous(),
                                 index.receiver_order, index.receiver_ptr, out)
        return out

    def featsum(self, env, sens, pair_first, pair_second) -> Tensor:
        out = env.new_zeros(env.shape[0], env.shape[2])
        if out.numel() and sens.shape[0] and env.shape[1]:
            index = pair_index(pair_first, pair_second, env.shape[0])
            molecule_ptr = self._molecules(index, pair_first, pair_second, "featsum_molecules")
            if molecule_ptr is not None:
                self.launch.featsum_molecules(env.contiguous(), sens.contiguous(),
                                              pair_second.to(torch.int64).contiguous(), index.receiver_order,
                                              index.receiver_ptr, molecule_ptr, out)
            else:
                self.launch.featsum(env.contiguous(), sens.contiguous(), pair_first.to(torch.int64).contiguous(),
                                    index.sender_order, index.sender_ptr, out)
        return out
