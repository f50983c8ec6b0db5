"""Shared test helpers: random molecules and pair lists."""
from __future__ import annotations

import pytest
import torch

from hipnnts_kernels import pairs_within_cutoff

SPECIES = (1, 6, 7, 8)


def random_molecules(n_molecules: int, min_atoms: int, max_atoms: int, *, seed: int, dtype=torch.float64,
                     spacing: float = 1.1):
    """Random non-overlapping molecules, flattened: species, positions (Å), mol_index.

    Atoms sit on a jittered cubic grid (``spacing`` Å) so no two atoms come closer than ~0.5 Å.
    """
    g = torch.Generator().manual_seed(seed)
    species, positions, mol_index = [], [], []
    for m in range(n_molecules):
        n = int(torch.randint(min_atoms, max_atoms + 1, (1,), generator=g))
        side = int(round(n ** (1 / 3) + 1.5))
        grid = torch.stack(torch.meshgrid(*[torch.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3)
        cells = grid[torch.randperm(grid.shape[0], generator=g)[:n]].to(dtype)
        pos = spacing * (cells + 0.3 * (torch.rand(n, 3, generator=g, dtype=dtype) - 0.5))
        species.append(torch.tensor(SPECIES)[torch.randint(0, len(SPECIES), (n,), generator=g)])
        positions.append(pos)
        mol_index.append(torch.full((n,), m))
    return torch.cat(species), torch.cat(positions), torch.cat(mol_index)


def shuffled_pairs(positions, mol_index, cutoff, *, seed: int):
    """Full pair list in a random order."""
    pf, ps = pairs_within_cutoff(positions, mol_index, cutoff)
    perm = torch.randperm(pf.shape[0], generator=torch.Generator().manual_seed(seed))
    return pf[perm], ps[perm]


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(1234)
