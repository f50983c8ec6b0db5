"""Shared test helpers: shuffled pair lists, a fixed seed per test.

Without a GPU the Triton kernels run in Triton's interpreter on CPU tensors. Triton reads
``TRITON_INTERPRET`` when a kernel is defined, and ``hipnnts_kernels`` defines its kernels on the
first Triton call, so setting it here, before any test runs, is enough.
"""
from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from hipnnts_kernels import pairs_within_cutoff


def shuffled_pairs(positions, mol_index, cutoff, *, seed: int):
    """Full pair list in a random order."""
    pf, ps = pairs_within_cutoff(positions, mol_index, cutoff)
    perm = torch.randperm(pf.shape[0], generator=torch.Generator().manual_seed(seed))
    return pf[perm], ps[perm]


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(1234)
