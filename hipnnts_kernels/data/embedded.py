"""The GFN2-xTB datasets shipped with the package (kcal/mol, Å, true forces), made by
:func:`hipnnts_kernels.data.xtb.generate`; each file's provenance records its recipe and versions.

- the training set: ~5000 off-equilibrium conformers of 730 small CHNO molecules (1 to 11 heavy
  atoms), :data:`~hipnnts_kernels.data.xtb.EMBEDDED_RECIPE`;
- the transfer set: 600 conformers of 120 larger CHNO molecules (12 to 16 heavy atoms, 17 to 45
  atoms), so none of them is in the training set, :data:`~hipnnts_kernels.data.xtb.TRANSFER_RECIPE`.
  It tests how a model trained on the small molecules does on larger ones.
"""
from __future__ import annotations

from pathlib import Path

from .conformers import Conformers
from .formats import load

EMBEDDED_PATH = Path(__file__).resolve().parent / "embedded" / "xtb_chno.h5"
TRANSFER_PATH = Path(__file__).resolve().parent / "embedded" / "xtb_chno_transfer.h5"


def load_embedded() -> Conformers:
    """The shipped training dataset (needs neither RDKit nor tblite)."""
    return load(EMBEDDED_PATH)


def load_transfer() -> Conformers:
    """The shipped transfer set of larger molecules (needs neither RDKit nor tblite)."""
    return load(TRANSFER_PATH)
