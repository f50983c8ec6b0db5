"""Training batches built on the device, with no host synchronisation per step.

A conformer's positions are fixed, so the pairs within the cutoff are too: :class:`DeviceDataset`
finds them once, when it is built (on the device: a dense search for molecules, padded to the
largest one; a cell list for large or periodic conformers, with the lattice shift of each
image pair), and keeps every array on the device. A batch is then pure gathering: the index
arithmetic runs on host copies of the small per-conformer counts and travels to the device in one
non-blocking copy; nothing waits for the device.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..pairs import cell_list_pairs
from .conformers import Conformers


@dataclass
class Batch:
    """Flattened molecules of one batch, on the device. Pairs are full (both directions), sorted by
    receiver, local to the batch."""

    species: Tensor  # (N,)
    positions: Tensor  # (N, 3) Å
    mol_index: Tensor  # (N,)
    pair_first: Tensor  # (P,)
    pair_second: Tensor  # (P,)
    energy: Tensor  # (B,) kcal/mol
    forces: Tensor | None  # (N, 3) kcal/mol/Å
    n_molecules: int
    pair_shift: Tensor | None = None  # (P, 3) Å lattice shifts of periodic images, or None


def _segment_gather(starts: Tensor, counts: Tensor) -> Tensor:
    """Indices starts[k] + 0 .. counts[k] - 1, concatenated (host tensors)."""
    offsets = torch.arange(int(counts.sum())) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    return torch.repeat_interleave(starts, counts) + offsets


#: Conformers with more atoms than this get a cell list instead of the dense search.
DENSE_MAX_ATOMS = 512


def conformer_pairs(conformers: Conformers, cutoff: float, device: torch.device | str = "cpu",
                    chunk_atoms: int = 1 << 20) -> tuple[Tensor, Tensor, Tensor | None]:
    """Pairs within ``cutoff`` of every conformer.

    Molecules of up to :data:`DENSE_MAX_ATOMS` atoms take a dense search, many at a time (padded to
    the largest); larger or periodic conformers take :func:`~hipnnts_kernels.pairs.cell_list_pairs`.

    Returns:
        pair_ptr (C + 1,) int64 on the host; local (P, 2) int64 atom indices within each conformer,
        on ``device``, sorted by conformer, then receiver; shift (P, 3) float64 lattice shifts on
        ``device`` (pair vector = R[second] - R[first] + shift), or None when nothing is periodic.
    """
    n_atoms = conformers.n_atoms
    periodic = conformers.pbc.any(1) if conformers.pbc is not None else torch.zeros(len(conformers), dtype=torch.bool)
    special = periodic | (n_atoms > DENSE_MAX_ATOMS)
    dense_ids = torch.nonzero(~special).flatten()
    n_max = int(n_atoms[dense_ids].max()) if len(dense_ids) else 0
    per_chunk = max(1, chunk_atoms // max(1, n_max * n_max))
    owners, locals_, shifts = [], [], []  # per group: conformer of each pair, (P, 2), (P, 3)
    for c0 in range(0, len(dense_ids), per_chunk):
        ids = dense_ids[c0:c0 + per_chunk]
        sizes = n_atoms[ids]
        atoms = _segment_gather(conformers.atom_ptr[ids], sizes)
        slot = torch.arange(len(atoms)) - torch.repeat_interleave(torch.cumsum(sizes, 0) - sizes, sizes)
        row = torch.repeat_interleave(torch.arange(len(ids)), sizes)
        padded = torch.full((len(ids), n_max, 3), float("nan"), dtype=torch.float64, device=device)
        padded[row.to(device), slot.to(device)] = conformers.positions[atoms].to(device)
        dist = torch.cdist(padded, padded)
        eye = torch.eye(n_max, dtype=torch.bool, device=device)
        b, i, j = torch.nonzero((dist < cutoff) & ~eye, as_tuple=True)  # NaN padding compares False
        owners.append(ids.to(device)[b])
        locals_.append(torch.stack([i, j], 1))
        shifts.append(torch.zeros(len(b), 3, dtype=torch.float64, device=device))
    for c in torch.nonzero(special).flatten().tolist():
        a0, a1 = int(conformers.atom_ptr[c]), int(conformers.atom_ptr[c + 1])
        cell = None if conformers.cell is None else conformers.cell[c].to(device)
        first, second, shift = cell_list_pairs(conformers.positions[a0:a1].to(device), cutoff, cell,
                                               None if conformers.pbc is None else conformers.pbc[c])
        owners.append(torch.full((len(first),), c, dtype=torch.int64, device=device))
        locals_.append(torch.stack([first, second], 1))
        shifts.append(shift.double())
    if not owners:
        empty = torch.zeros(0, 2, dtype=torch.int64, device=device)
        return torch.zeros(len(conformers) + 1, dtype=torch.int64), empty, None
    owner = torch.cat(owners)
    order = torch.argsort(owner, stable=True)
    pair_counts = torch.bincount(owner, minlength=len(conformers)).cpu()
    pair_ptr = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(pair_counts, 0)])
    shift = torch.cat(shifts)[order] if bool(periodic.any()) else None
    return pair_ptr, torch.cat(locals_)[order], shift


class DeviceDataset:
    """Conformers, their pair lists and targets, on one device, batched without host syncs.

    Args:
        conformers: the data (see :class:`~hipnnts_kernels.data.Conformers`).
        cutoff: pair cutoff (Å), the model's.
        device: where batches live.
        dtype: floating dtype of positions, energies and forces in batches.
    """

    def __init__(self, conformers: Conformers, cutoff: float, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32):
        self.device, self.dtype, self.cutoff = torch.device(device), dtype, float(cutoff)
        self.n_conformers = len(conformers)
        self.atom_ptr = conformers.atom_ptr.clone()  # host copies: batch arithmetic needs no device sync
        self.pair_ptr, self.local_pairs, shift = conformer_pairs(conformers, cutoff, self.device)
        self.pair_shift = None if shift is None else shift.to(dtype)
        self.species = conformers.species.to(self.device)
        self.positions = conformers.positions.to(self.device, dtype)
        self.energy = conformers.energy.to(self.device, dtype)
        self.forces = None if conformers.forces is None else conformers.forces.to(self.device, dtype)

    def __len__(self) -> int:
        return self.n_conformers

    def batch(self, indices: Tensor) -> Batch:
        """The conformers ``indices`` (a host int64 tensor) as one flattened batch."""
        indices = torch.as_tensor(indices, dtype=torch.int64)
        n_atoms = self.atom_ptr[indices + 1] - self.atom_ptr[indices]
        n_pairs = self.pair_ptr[indices + 1] - self.pair_ptr[indices]
        atom_offset = torch.cumsum(n_atoms, 0) - n_atoms  # where each conformer's atoms start in the batch
        host = torch.cat([
            _segment_gather(self.atom_ptr[indices], n_atoms),                 # atoms to gather
            torch.repeat_interleave(torch.arange(len(indices)), n_atoms),     # molecule of each atom
            _segment_gather(self.pair_ptr[indices], n_pairs),                 # pairs to gather
            torch.repeat_interleave(atom_offset, n_pairs),                    # their atom offset in the batch
        ])
        if self.device.type == "cuda":
            host = host.pin_memory()
        device_index = host.to(self.device, non_blocking=True)
        n_a, n_p = int(n_atoms.sum()), int(n_pairs.sum())
        atoms, mol_index = device_index[:n_a], device_index[n_a:2 * n_a]
        pairs, offset = device_index[2 * n_a:2 * n_a + n_p], device_index[2 * n_a + n_p:]
        local = self.local_pairs[pairs]
        return Batch(
            species=self.species[atoms], positions=self.positions[atoms], mol_index=mol_index,
            pair_first=local[:, 0] + offset, pair_second=local[:, 1] + offset,
            energy=self.energy[indices.to(self.device, non_blocking=True)],
            forces=None if self.forces is None else self.forces[atoms], n_molecules=len(indices),
            pair_shift=None if self.pair_shift is None else self.pair_shift[pairs],
        )
