"""The CSR pair index the fast kernels walk, and its cache."""
from __future__ import annotations

import gc

import torch

from hipnnts_kernels.pair_index import _CACHE, build_pair_index, molecule_ranges, pair_index


def test_csr_segments_hold_each_atoms_pairs_in_order():
    g = torch.Generator().manual_seed(0)
    pf, ps = torch.randint(0, 6, (40,), generator=g), torch.randint(0, 6, (40,), generator=g)
    pf[pf == 3] = 4  # atom 3 receives nothing
    index = build_pair_index(pf, ps, 7)  # atom 6 takes part in nothing
    segments = ((index.receiver_order, index.receiver_ptr, pf), (index.sender_order, index.sender_ptr, ps))
    for order, ptr, atom in segments:
        assert ptr.shape == (8,) and ptr[0] == 0 and ptr[-1] == 40
        for a in range(7):
            segment = order[ptr[a]:ptr[a + 1]]
            assert torch.equal(segment, torch.nonzero(atom == a).flatten())  # stable: ascending pair ids
    assert index.receiver_ptr[4] == index.receiver_ptr[3]


def test_empty_pair_list():
    empty = torch.zeros(0, dtype=torch.long)
    index = build_pair_index(empty, empty, 3)
    assert index.receiver_order.shape == (0,) and torch.equal(index.sender_ptr, torch.zeros(4, dtype=torch.long))


def test_cache_reuses_the_sort_until_the_pairs_change_or_die():
    _CACHE.clear()
    pf, ps = torch.tensor([1, 0, 1]), torch.tensor([0, 1, 2])
    first = pair_index(pf, ps, 3)
    assert pair_index(pf, ps, 3) is first and (_CACHE.hits, _CACHE.misses) == (1, 1)
    assert pair_index(pf, ps, 4) is not first  # another atom count is another index
    pf[0] = 2  # in-place change bumps the version: the stale entry is not used
    changed = pair_index(pf, ps, 3)
    assert changed is not first and torch.equal(changed.receiver_ptr, torch.tensor([0, 1, 2, 3]))
    assert torch.equal(pair_index(pf.clone(), ps, 3).receiver_order, changed.receiver_order)
    n_entries = len(_CACHE.entries)
    del pf
    gc.collect()
    assert len(_CACHE.entries) < n_entries  # entries of a dead pair list are dropped


def test_molecule_ranges_are_the_smallest_closed_atom_ranges():
    # molecules {0, 1, 2}, {3} (no pairs), {4, 5}; pairs unsorted, duplicated, both directions
    pf = torch.tensor([2, 0, 5, 1, 4, 0, 2])
    ps = torch.tensor([0, 2, 4, 2, 5, 1, 1])
    assert torch.equal(molecule_ranges(pf, ps, 7), torch.tensor([0, 3, 4, 6, 7]))
    index = build_pair_index(pf, ps, 7)
    ptr, atoms, pairs = index.molecules(pf, ps)
    assert torch.equal(ptr, torch.tensor([0, 3, 4, 6, 7])) and (atoms, pairs) == (3, 5)
    assert torch.equal(index.receiver_order[index.receiver_rank()], torch.arange(7))
    # a pair from the first to the last atom makes one range
    assert torch.equal(molecule_ranges(torch.tensor([0]), torch.tensor([6]), 7), torch.tensor([0, 7]))
    empty = torch.zeros(0, dtype=torch.long)
    assert torch.equal(molecule_ranges(empty, empty, 3), torch.tensor([0, 1, 2, 3]))
