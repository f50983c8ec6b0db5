"""CSR layout of a pair list, built once per pair list and cached.

The fast kernels accumulate per atom without atomics: one program walks the pairs of one receiver
(or one sender). That needs the pairs grouped by atom, which is a sort. :func:`pair_index` sorts
once per pair list and caches the result on the identity of the index tensors, so the forward,
backward and double backward of every interaction layer in a step reuse one sort.
"""
from __future__ import annotations

import weakref
from collections import OrderedDict
from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass(frozen=True)
class PairIndex:
    """Pairs grouped per receiver and per sender.

    ``receiver_order`` (P,) int64 lists pair ids sorted by ``pair_first`` (stable), and the pairs of
    atom i are ``receiver_order[receiver_ptr[i]:receiver_ptr[i + 1]]``; ``receiver_ptr`` is (N + 1,)
    int64. ``sender_order`` and ``sender_ptr`` do the same for ``pair_second``.
    """

    receiver_order: Tensor
    receiver_ptr: Tensor
    sender_order: Tensor
    sender_ptr: Tensor
    _derived: dict = field(default_factory=dict, repr=False, compare=False)

    def molecules(self, pair_first: Tensor, pair_second: Tensor) -> tuple[Tensor, int, int]:
        """:func:`molecule_ranges` of this index's pair list, and the atoms and the pairs of the
        largest range, computed on first use (one host synchronisation) and kept with the index."""
        if "molecules" not in self._derived:
            ptr = molecule_ranges(pair_first, pair_second, self.receiver_ptr.shape[0] - 1)
            atoms, pairs = 0, 0
            if ptr.numel() > 1:
                pair_counts = self.receiver_ptr[ptr[1:]] - self.receiver_ptr[ptr[:-1]]
                atoms, pairs = torch.stack([(ptr[1:] - ptr[:-1]).max(), pair_counts.max()]).tolist()
            self._derived["molecules"] = (ptr, atoms, pairs)
        return self._derived["molecules"]

    def receiver_rank(self) -> Tensor:
        """(P,) int64: the position of each pair in ``receiver_order`` (its inverse), kept with the index."""
        if "receiver_rank" not in self._derived:
            order = self.receiver_order
            rank = torch.empty_like(order)
            rank[order] = torch.arange(order.numel(), dtype=order.dtype, device=order.device)
            self._derived["receiver_rank"] = rank
        return self._derived["receiver_rank"]


def _csr(atom: Tensor, n_atoms: int) -> tuple[Tensor, Tensor]:
    order = torch.argsort(atom, stable=True)
    bounds = torch.arange(n_atoms + 1, dtype=atom.dtype, device=atom.device)
    return order, torch.searchsorted(atom[order], bounds)  # segment starts; no host sync, unlike bincount


def build_pair_index(pair_first: Tensor, pair_second: Tensor, n_atoms: int) -> PairIndex:
    """Sort a pair list into receiver and sender segments (no host synchronisation)."""
    return PairIndex(*_csr(pair_first, n_atoms), *_csr(pair_second, n_atoms))


def molecule_ranges(pair_first: Tensor, pair_second: Tensor, n_atoms: int) -> Tensor:
    """(M + 1,) int64 boundaries of the smallest contiguous atom ranges that contain both atoms of
    every pair; an atom without pairs is a range of its own."""
    device = pair_first.device
    atoms = torch.arange(n_atoms, device=device)
    reach = atoms.clone()  # the highest atom each atom is paired with (itself at least)
    if pair_first.numel():
        low = torch.minimum(pair_first, pair_second).long()
        high = torch.maximum(pair_first, pair_second).long()
        reach = reach.scatter_reduce(0, low, high, reduce="amax")
    closed = torch.cummax(reach, 0).values == atoms  # no pair from atoms <= a reaches past a
    ends = torch.nonzero(closed).flatten() + 1
    return torch.cat([torch.zeros(1, dtype=torch.int64, device=device), ends])


class _PairIndexCache:
    """Small LRU of pair indices keyed on the identity and version of the index tensors.

    An entry is valid only while both tensors are alive and unmodified (same object, same
    ``_version``); it is dropped as soon as either is garbage collected.
    """

    def __init__(self, size: int = 8):
        self.size = size
        self.entries: OrderedDict[tuple, tuple] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, pair_first: Tensor, pair_second: Tensor, n_atoms: int) -> PairIndex:
        key = (id(pair_first), id(pair_second), n_atoms)
        versions = (pair_first._version, pair_second._version)
        entry = self.entries.get(key)
        if entry is not None:
            ref_first, ref_second, cached_versions, index = entry
            if ref_first() is pair_first and ref_second() is pair_second and cached_versions == versions:
                self.entries.move_to_end(key)
                self.hits += 1
                return index
        self.misses += 1
        index = build_pair_index(pair_first, pair_second, n_atoms)
        drop = lambda _ref, key=key, entries=self.entries: entries.pop(key, None)  # noqa: E731
        self.entries[key] = (weakref.ref(pair_first, drop), weakref.ref(pair_second, drop), versions, index)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)
        return index

    def clear(self) -> None:
        self.entries.clear()
        self.hits = self.misses = 0


_CACHE = _PairIndexCache()


def pair_index(pair_first: Tensor, pair_second: Tensor, n_atoms: int) -> PairIndex:
    """The :class:`PairIndex` of a pair list, sorted on first use and cached while the index
    tensors are alive and unmodified."""
    return _CACHE.get(pair_first, pair_second, n_atoms)
