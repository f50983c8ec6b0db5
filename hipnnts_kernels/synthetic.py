"""Synthetic molecules for tests and benchmarks: random species on a jittered cubic grid."""
from __future__ import annotations

import torch
from torch import Tensor


def random_molecules(n_molecules: int, min_atoms: int, max_atoms: int, *, seed: int,
                     species: tuple[int, ...] = (1, 6, 7, 8), spacing: float = 1.1, jitter: float = 0.3,
                     dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor, Tensor]:
    """Random non-overlapping molecules, flattened.

    Each molecule has between ``min_atoms`` and ``max_atoms`` atoms placed on distinct points of a
    cubic grid of ``spacing`` Å, each moved by up to ``jitter * spacing / 2`` per axis, so no two
    atoms come closer than ``(1 - jitter) * spacing``.

    Returns:
        species (N,) atomic numbers, positions (N, 3) in Å, mol_index (N,).
    """
    g = torch.Generator().manual_seed(seed)
    all_species, positions, mol_index = [], [], []
    for m in range(n_molecules):
        n = int(torch.randint(min_atoms, max_atoms + 1, (1,), generator=g))
        side = round(n ** (1 / 3) + 1.5)
        grid = torch.stack(torch.meshgrid(*[torch.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3)
        cells = grid[torch.randperm(grid.shape[0], generator=g)[:n]].to(torch.float64)
        positions.append(spacing * (cells + jitter * (torch.rand(n, 3, generator=g, dtype=torch.float64) - 0.5)))
        all_species.append(torch.tensor(species)[torch.randint(0, len(species), (n,), generator=g)])
        mol_index.append(torch.full((n,), m))
    return torch.cat(all_species), torch.cat(positions).to(dtype), torch.cat(mol_index)
