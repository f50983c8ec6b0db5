"""Train / validation / test splits, by molecule or by conformer, seeded."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .conformers import Conformers


def split(conformers: Conformers, fractions: Sequence[float] = (0.8, 0.1, 0.1), *, by: str = "molecule",
          seed: int = 0) -> list[Tensor]:
    """Conformer indices of each part.

    ``by="molecule"`` keeps every molecule's conformers in one part (parts then hold about the
    given fractions of molecules, at least one each when there are enough); ``by="conformer"``
    shuffles conformers. Fractions must be positive and sum to 1.
    """
    if by not in ("molecule", "conformer"):
        raise ValueError(f"by must be 'molecule' or 'conformer', got {by!r}")
    fractions = [float(f) for f in fractions]
    if not fractions or min(fractions) <= 0 or abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError(f"fractions must be positive and sum to 1, got {fractions}")
    g = torch.Generator().manual_seed(seed)
    units = conformers.molecule.unique() if by == "molecule" else torch.arange(len(conformers))
    if len(units) < len(fractions):
        raise ValueError(f"cannot split {len(units)} {by}s into {len(fractions)} parts")
    units = units[torch.randperm(len(units), generator=g)]
    bounds = torch.tensor([0.0, *torch.cumsum(torch.tensor(fractions), 0).tolist()]) * len(units)
    edges = bounds.round().long().tolist()
    for k in range(1, len(edges) - 1):  # every part gets at least one unit
        edges[k] = min(max(edges[k], edges[k - 1] + 1), len(units) - (len(edges) - 1 - k))
    parts = [units[a:b] for a, b in zip(edges[:-1], edges[1:])]
    if by == "conformer":
        return [p.sort().values for p in parts]
    return [torch.nonzero(torch.isin(conformers.molecule, p)).flatten() for p in parts]
