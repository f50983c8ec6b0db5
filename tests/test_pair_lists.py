"""Pair lists: the cell list against the dense search and against brute force over periodic images,
and periodic conformers through the dataset into a training step."""
from __future__ import annotations

import itertools

import pytest
import torch

from hipnnts_kernels import HipnnTS, pairs_within_cutoff
from hipnnts_kernels.data import Conformers, DeviceDataset
from hipnnts_kernels.pairs import cell_list_pairs
from hipnnts_kernels.synthetic import random_molecules

CELL = torch.tensor([[4.0, 0.0, 0.0], [1.0, 3.5, 0.0], [0.5, 0.7, 5.0]], dtype=torch.float64)


def _as_set(first, second, shift):
    return {(a, b, tuple(round(x, 6) for x in v)) for a, b, v in zip(first.tolist(), second.tolist(), shift.tolist())}


def test_dense_search_matches_brute_force_with_unsorted_molecules():
    g = torch.Generator().manual_seed(0)
    positions = 4 * torch.rand(40, 3, generator=g, dtype=torch.float64)
    mol_index = torch.randint(0, 5, (40,), generator=g)  # interleaved molecules, one of them maybe empty
    first, second = pairs_within_cutoff(positions, mol_index, 2.0)
    brute = [(i, j) for i, j in itertools.permutations(range(40), 2)
             if mol_index[i] == mol_index[j] and (positions[i] - positions[j]).norm() < 2.0]
    assert list(zip(first.tolist(), second.tolist())) == sorted(brute) and len(brute) > 50
    empty = pairs_within_cutoff(positions[:0], mol_index[:0], 2.0)
    assert [t.shape[0] for t in empty] == [0, 0] and empty[0].dtype == torch.int64


def test_cell_list_matches_dense_search_on_a_large_molecule():
    _, positions, mol_index = random_molecules(1, 400, 400, seed=2)
    first, second, shift = cell_list_pairs(positions, 3.0)
    dense = pairs_within_cutoff(positions, mol_index, 3.0)
    assert set(zip(first.tolist(), second.tolist())) == set(zip(*(t.tolist() for t in dense)))
    assert len(first) == len(dense[0]) and not shift.any()
    assert bool((first[1:] >= first[:-1]).all()), "sorted by receiver"


@pytest.mark.parametrize("pbc", [(True, True, True), (True, False, True), (False, False, True)])
def test_cell_list_with_periodic_images_matches_brute_force(pbc):
    g = torch.Generator().manual_seed(0)
    positions = torch.rand(7, 3, generator=g, dtype=torch.float64) @ CELL + torch.tensor([3.0, -8.0, 0.5],
                                                                                          dtype=torch.float64)
    cutoff = 6.5  # wider than the cell: atoms meet several images of each other and of themselves
    got = _as_set(*cell_list_pairs(positions, cutoff, CELL, torch.tensor(pbc)))
    want = set()
    for n in itertools.product(*[range(-4, 5) if p else [0] for p in pbc]):
        shift = torch.tensor(n, dtype=torch.float64) @ CELL
        for i, j in itertools.product(range(7), repeat=2):
            if (i != j or any(n)) and float((positions[j] - positions[i] + shift).norm()) < cutoff:
                want.add((i, j, tuple(round(x, 6) for x in shift.tolist())))
    assert got == want and any(a == b for a, b, _ in got)


def test_cell_list_errors():
    positions = torch.zeros(2, 3, dtype=torch.float64)
    positions[1, 0] = 1.0
    with pytest.raises(ValueError, match="a cell"):
        cell_list_pairs(positions, 3.0, None, torch.tensor([True, False, False]))
    with pytest.raises(ValueError, match="non-zero volume"):
        cell_list_pairs(positions, 3.0, torch.zeros(3, 3, dtype=torch.float64), torch.tensor([True, True, True]))


def test_periodic_conformers_train_with_shifts():
    """Two copies of a periodic conformer, one with an atom moved by a lattice vector: same energy and
    forces through DeviceDataset batches (which carry the pair shifts)."""
    species, positions, _ = random_molecules(1, 6, 6, seed=4)
    moved = positions.clone()
    moved[2] += CELL[1] - CELL[0]
    conformers = Conformers(
        species=species.repeat(2), positions=torch.cat([positions, moved]), atom_ptr=torch.tensor([0, 6, 12]),
        energy=torch.zeros(2, dtype=torch.float64), forces=torch.zeros(12, 3, dtype=torch.float64),
        molecule=torch.tensor([0, 0]), molecule_names=["x"], cell=CELL.repeat(2, 1, 1),
        pbc=torch.ones(2, 3, dtype=torch.bool))
    torch.manual_seed(0)
    model = HipnnTS(species=sorted(set(species.tolist())), n_features=8, n_sensitivities=4, dist_soft_min=0.8,
                    dist_soft_max=2.5, cutoff=3.0, n_interaction_layers=1, n_atom_layers=1).double()
    batch = DeviceDataset(conformers, model.cutoff, dtype=torch.float64).batch(torch.tensor([0, 1]))
    assert batch.pair_shift is not None and batch.pair_shift.abs().max() > 0
    out = model(batch.species, batch.positions, batch.mol_index, batch.pair_first, batch.pair_second,
                n_molecules=2, pair_shift=batch.pair_shift, forces=True)
    torch.testing.assert_close(out.energy[0], out.energy[1], rtol=1e-12, atol=0)
    torch.testing.assert_close(out.forces[:6], out.forces[6:], rtol=1e-10, atol=1e-12)
