"""Pair lists built on the tensors' device: full directed lists (i->j and j->i), no self pairs.

:func:`pairs_within_cutoff` and :func:`flatten_padded` are dense O(n^2) searches per molecule,
right for molecules of up to a few hundred atoms. :func:`cell_list_pairs` bins atoms into cells of
the cutoff's size, O(n), for large systems and for periodic ones (cell and pbc), where a pair
also carries the lattice shift of its image.
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
        positions: (N, 3) in Å; mol_index: (N,) molecule of each atom (any order).

    Returns:
        pair_first, pair_second: (P,) int64, sorted by pair_first, then pair_second. A dense search
        within each molecule, all molecules at once (padded to the largest): memory grows as
        molecules x (largest molecule)^2, so it suits batches of molecules of up to a few hundred
        atoms; use :func:`cell_list_pairs` for large systems.
    """
    check_tensor("positions", positions, (None, 3))
    check_tensor("mol_index", mol_index, (positions.shape[0],), INDEX_DTYPES, like=positions)
    check_finite("positions", positions)
    empty = torch.zeros(0, dtype=torch.int64, device=positions.device)
    if positions.shape[0] == 0:
        return empty, empty.clone()
    with torch.no_grad():
        order = torch.argsort(mol_index, stable=True)  # atoms grouped by molecule
        _, counts = torch.unique_consecutive(mol_index[order], return_counts=True)
        starts = torch.cumsum(counts, 0) - counts
        row = torch.repeat_interleave(torch.arange(len(counts), device=positions.device), counts)
        slot = torch.arange(len(order), device=positions.device) - starts[row]
        n_max = int(counts.max())
        padded = positions.new_full((len(counts), n_max, 3), float("nan"))
        padded[row, slot] = positions[order]
        eye = torch.eye(n_max, dtype=torch.bool, device=positions.device)
        b, i, j = torch.nonzero((torch.cdist(padded, padded) < cutoff) & ~eye, as_tuple=True)  # NaN: False
        first, second = order[starts[b] + i], order[starts[b] + j]
        key = first * len(order) + second
        keep = torch.argsort(key)
    return first[keep], second[keep]


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


def _image_shifts(cell: Tensor, pbc: Tensor, cutoff: float) -> Tensor:
    """(K, 3) lattice translations n @ cell that can bring an image within ``cutoff`` of the cell."""
    volume = torch.linalg.det(cell).abs()
    if float(volume) <= 0:
        raise ValueError("cell must have three linearly independent lattice vectors (non-zero volume)")
    reps = []
    for k in range(3):
        # the distance between the lattice planes spanned by the other two vectors
        width = volume / torch.linalg.cross(cell[(k + 1) % 3], cell[(k + 2) % 3]).norm()
        n = int(torch.ceil(cutoff / width)) if bool(pbc[k]) else 0
        reps.append(torch.arange(-n, n + 1, device=cell.device, dtype=cell.dtype))
    grid = torch.stack(torch.meshgrid(*reps, indexing="ij"), -1).reshape(-1, 3)
    return grid @ cell


def cell_list_pairs(positions: Tensor, cutoff: float, cell: Tensor | None = None,
                    pbc: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """All ordered pairs (i, j) of one system closer than ``cutoff``, by a cell list, with images.

    Args:
        positions: (N, 3) in Å.
        cutoff: pair cutoff (Å).
        cell: (3, 3) lattice vectors as rows (ASE's convention), Å; needed where ``pbc`` is set.
        pbc: (3,) bool, periodic along each lattice vector (default: none).

    Returns:
        pair_first, pair_second (P,) int64 sorted by pair_first, and shift (P, 3): the pair vector
        is ``positions[second] - positions[first] + shift``. An atom may pair with its own images
        (first == second, shift != 0) when the cell is narrower than the cutoff.
    """
    check_tensor("positions", positions, (None, 3))
    check_finite("positions", positions)
    device, dtype, n = positions.device, positions.dtype, positions.shape[0]
    pbc = torch.zeros(3, dtype=torch.bool) if pbc is None else torch.as_tensor(pbc, dtype=torch.bool).cpu()
    if pbc.shape != (3,):
        raise ValueError(f"pbc must have 3 entries, got shape {tuple(pbc.shape)}")
    if bool(pbc.any()):
        if cell is None:
            raise ValueError("pbc is set, so a cell (3, 3) is needed")
        check_tensor("cell", cell, (3, 3), like=positions)
        check_finite("cell", cell)
        shifts = _image_shifts(cell, pbc, cutoff)
    else:
        shifts = positions.new_zeros(1, 3)
    with torch.no_grad():
        # wrap periodic directions into the cell: wrapped = positions + translation
        translation = positions.new_zeros(n, 3)
        if bool(pbc.any()):
            fractional = torch.linalg.solve(cell.t(), positions.t()).t()
            whole = torch.where(pbc.to(device), fractional.floor(), torch.zeros_like(fractional))
            translation = -whole @ cell
        positions = positions + translation
        # images of every atom under every shift; the original atoms look for neighbours among them
        images = (positions.unsqueeze(0) + shifts.unsqueeze(1)).reshape(-1, 3)
        image_atom = torch.arange(n, device=device).repeat(shifts.shape[0])
        image_shift = torch.arange(shifts.shape[0], device=device).repeat_interleave(n)
        near = (torch.cdist(images, positions).amin(1) < cutoff) if n else images.new_zeros(0, dtype=torch.bool)
        images, image_atom, image_shift = images[near], image_atom[near], image_shift[near]
        origin = images.amin(0) if len(images) else positions.new_zeros(3)
        size = max(float(cutoff), 1e-3)
        bins_image = ((images - origin) / size).floor().long()
        extent = bins_image.amax(0) + 3 if len(images) else torch.ones(3, dtype=torch.long, device=device)
        key = lambda b: ((b[:, 0] + 1) * extent[1] + b[:, 1] + 1) * extent[2] + b[:, 2] + 1  # noqa: E731
        order = torch.argsort(key(bins_image))
        sorted_keys = key(bins_image)[order]
        bins_atom = ((positions - origin) / size).floor().long()
        firsts, seconds, shift_ids = [], [], []
        for d in torch.cartesian_prod(*[torch.arange(-1, 2, device=device)] * 3):
            wanted = key(bins_atom + d)
            lo = torch.searchsorted(sorted_keys, wanted)
            hi = torch.searchsorted(sorted_keys, wanted, right=True)
            counts = hi - lo
            first = torch.repeat_interleave(torch.arange(n, device=device), counts)
            slot = torch.arange(int(counts.sum()), device=device) - torch.repeat_interleave(
                torch.cumsum(counts, 0) - counts, counts) + torch.repeat_interleave(lo, counts)
            candidate = order[slot]
            firsts.append(first)
            seconds.append(image_atom[candidate])
            shift_ids.append(image_shift[candidate])
        first, second, shift_id = torch.cat(firsts), torch.cat(seconds), torch.cat(shift_ids)
        vector = positions[second] - positions[first] + shifts[shift_id]
        zero_shift = (shifts[shift_id] == 0).all(1)
        keep = (vector.norm(dim=1) < cutoff) & ~((first == second) & zero_shift)
        first, second, shift_id = first[keep], second[keep], shift_id[keep]
        order = torch.argsort(first * (n * shifts.shape[0]) + second * shifts.shape[0] + shift_id)
        first, second, shift_id = first[order], second[order], shift_id[order]
        # back to the caller's positions: R_j - R_i + shift == wrapped_j - wrapped_i + lattice shift
        shift = (shifts[shift_id] + translation[second] - translation[first]).to(dtype)
    return first, second, shift
