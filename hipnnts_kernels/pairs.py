"""Pair lists built on the tensors' device: full directed lists (i->j and j->i), no self pairs.

These are dense O(n^2) searches per molecule, right for molecules of up to a few hundred atoms.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .checks import INDEX_DTYPES, check_finite, check_tensor


@dataclass
class FlatBatch:
    """Flattened atoms of a padded batch, with their pair list."""

    species: Tensor  #: (N,) atomic numbers
    positions: Tensor  #: (N, 3)
    mol_index: Tensor  #: (N,) molecule of each atom
    pair_first: Tensor  #: (P,) receiving atom
    pair_second: Tensor  #: (P,) sending atom
    real: Tensor  #: (B, n_max) bool, True where the padded layout holds an atom

    def unflatten(self, values: Tensor) -> Tensor:
        """(N, ...) per-atom values -> (B, n_max, ...), zeros at padding."""
        out = values.new_zeros(*self.real.shape, *values.shape[1:])
        out[self.real] = values
        return out


def pairs_within_cutoff(positions: Tensor, mol_index: Tensor, cutoff: float) -> tuple[Tensor, Tensor]:
    """All ordered pairs (i, j), i != j, of the same molecule with |R_j - R_i| < cutoff.

    Args:
        positions: (N, 3) in Å; mol_index: (N,) molecule of each atom.

    Returns:
        pair_first, pair_second: (P,) int64, sorted by pair_first. Dense N x N search: for batches
        of small molecules; memory grows as N^2.
    """
    check_tensor("positions", positions, (None, 3))
    check_tensor("mol_index", mol_index, (positions.shape[0],), INDEX_DTYPES, like=positions)
    check_finite("positions", positions)
    with torch.no_grad():
        dist = torch.cdist(positions, positions)
        mask = (mol_index.unsqueeze(0) == mol_index.unsqueeze(1)) & (dist < cutoff)
        mask.fill_diagonal_(False)
        pair_first, pair_second = mask.nonzero(as_tuple=True)
    return pair_first, pair_second


def flatten_padded(species: Tensor, positions: Tensor, cutoff: float) -> FlatBatch:
    """Flatten a padded batch and build its pairs per molecule, on the tensors' device.

    Args:
        species: (B, n_max) atomic numbers, 0 = padding.
        positions: (B, n_max, 3) in Å (values at padding are ignored).
        cutoff: pair cutoff (Å).
    """
    check_tensor("species", species, (None, None), INDEX_DTYPES)
    check_tensor("positions", positions, (species.shape[0], species.shape[1], 3), like=species)
    real = species != 0
    check_finite("positions", positions[real])
    n_max = species.shape[1]
    with torch.no_grad():
        flat_of_padded = torch.cumsum(real.flatten(), 0) - 1
        dist = torch.cdist(positions, positions)
        mask = real.unsqueeze(1) & real.unsqueeze(2) & (dist < cutoff)
        mask &= ~torch.eye(n_max, dtype=torch.bool, device=species.device)
        mol, i, j = mask.nonzero(as_tuple=True)
        pair_first = flat_of_padded[mol * n_max + i]
        pair_second = flat_of_padded[mol * n_max + j]
        mol_index = real.nonzero(as_tuple=True)[0]
    return FlatBatch(species[real], positions[real], mol_index, pair_first, pair_second, real)
