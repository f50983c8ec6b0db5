"""The ``"cuda"`` backend: hand-written CUDA kernels (``csrc/``) behind the ops' Python API.

The compiled extension ``hipnnts_kernels._C`` registers launch primitives in the
``hipnnts_cuda`` operator namespace (``TORCH_LIBRARY``, CUDA implementations): each writes into
tensors it is given. :class:`~hipnnts_kernels.segment_kernels.SegmentKernels` turns them into the
implementations the backend registry expects. The public ops own the schemas, fake kernels and
autograd (:mod:`hipnnts_kernels.ops`).

The same glue drives the host emulation of the kernels that the CPU test suite builds from the
same sources (``tests/cuda_emulation.py``), so the kernels' logic is tested without a GPU.

Implemented: the interaction forward, backward and double backward, and the envsum family
(``sensitivity`` and ``tensor_factors`` are elementwise and left to the other backends).
"""
from __future__ import annotations

import torch

from .segment_kernels import SegmentKernels

_PRIMITIVES = ("interaction_forward", "interaction_backward", "interaction_double_backward",
               "interaction_backward_molecules", "interaction_double_backward_molecules", "sender_sum", "envsum",
               "sensesum", "featsum", "featsum_molecules")


class _ExtensionLaunchers:
    """The compiled extension's ``torch.ops.hipnnts_cuda`` primitives, loaded on first use (with
    fake kernels, so that they also trace under ``torch.compile``; they return nothing)."""

    loaded = False

    def __getattr__(self, name):
        if not _ExtensionLaunchers.loaded:
            import hipnnts_kernels._C  # noqa: F401  (registers torch.ops.hipnnts_cuda)

            for primitive in _PRIMITIVES:
                torch.library.register_fake(f"hipnnts_cuda::{primitive}")(lambda *args: None)
            _ExtensionLaunchers.loaded = True
        return getattr(torch.ops.hipnnts_cuda, name)


#: The implementations registered for the backend (see hipnnts_kernels.ops). The molecule path of
#: the derivative levels is off until a GPU benchmark shows where it wins; to use it, set
#: ``KERNELS.molecule_max_atoms`` (e.g. 64).
KERNELS = SegmentKernels(_ExtensionLaunchers())
