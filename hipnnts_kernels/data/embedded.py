"""The GFN2-xTB dataset shipped with the package: ~5000 off-equilibrium conformers of 730 small CHNO
molecules (kcal/mol, Å, true forces), made by :func:`hipnnts_kernels.data.xtb.generate` with
:data:`hipnnts_kernels.data.xtb.EMBEDDED_RECIPE`; the file's provenance records the recipe and versions."""
from __future__ import annotations

from pathlib import Path

from .conformers import Conformers
from .formats import load

EMBEDDED_PATH = Path(__file__).resolve().parent / "embedded" / "xtb_chno.h5"


def load_embedded() -> Conformers:
    """The shipped dataset (needs neither RDKit nor tblite)."""
    return load(EMBEDDED_PATH)
