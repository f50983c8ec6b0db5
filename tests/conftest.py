"""Shared test helpers: shuffled pair lists, a fixed seed per test."""
from __future__ import annotations

import pytest
import torch

from hipnnts_kernels import pairs_within_cutoff


def shuffled_pairs(positions, mol_index, cutoff, *, seed: int):
    """Full pair list in a random order."""
    pf, ps = pairs_within_cutoff(positions, mol_index, cutoff)
    perm = torch.randperm(pf.shape[0], generator=torch.Generator().manual_seed(seed))
    return pf[perm], ps[perm]


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(1234)
