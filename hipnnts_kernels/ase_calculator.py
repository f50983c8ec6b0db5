"""An ASE calculator wrapping a :class:`~hipnnts_kernels.HipnnTS` model (energy and forces), so
that ASE can run molecular dynamics or geometry optimisation with it. Any model with HipnnTS's
``forward`` interface works: :class:`~hipnnts_kernels.etn.ETN`, or :class:`~hipnnts_kernels.tensornet.TensorNetModel`
(molecules only).

The model works in kcal/mol and Å (the package's units); ASE works in eV and Å, so energies and
forces are converted on the way out. Periodic systems (``atoms.pbc``) take a cell list with
images (:func:`~hipnnts_kernels.pairs.cell_list_pairs`), as do molecules of many atoms.
"""
from __future__ import annotations

import os

import torch
from ase.calculators.calculator import Calculator, all_changes
from torch import nn

from .data.batching import DENSE_MAX_ATOMS
from .data.units import ENERGY_UNITS
from .model import HipnnTS
from .pairs import cell_list_pairs, pairs_within_cutoff

EV_IN_KCAL_PER_MOL = ENERGY_UNITS["ev"]


class HipnnTSCalculator(Calculator):
    """ASE calculator: ``atoms.calc = HipnnTSCalculator(model)``; energies in eV, forces in eV/Å.

    Args:
        model: a trained model, or the path of a checkpoint (``best.pt`` of ``hipnnts train``, read
            with :func:`~hipnnts_kernels.training.checkpoint.load_model`); it is put in evaluation mode.
        energy_unit: the unit the model was trained in (``"kcal/mol"`` by default, as the package's
            datasets); any of :data:`hipnnts_kernels.data.ENERGY_UNITS`.
        device, dtype: where and in which precision to evaluate (default: the model's).
    """

    implemented_properties = ["energy", "forces"]

    def __init__(self, model: HipnnTS | nn.Module | str | os.PathLike, energy_unit: str = "kcal/mol",
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None, **kwargs):
        super().__init__(**kwargs)
        if energy_unit.lower() not in ENERGY_UNITS:
            raise ValueError(f"energy_unit must be one of {sorted(ENERGY_UNITS)}, got {energy_unit!r}")
        if isinstance(model, (str, os.PathLike)):
            from .training.checkpoint import load_model

            model = load_model(model)
        if not isinstance(model, nn.Module) or next(model.parameters(), None) is None:
            raise TypeError(f"model must be a trained model (an nn.Module with parameters) or a checkpoint path, "
                            f"got {type(model).__name__}")
        parameter = next(model.parameters())
        self.device = torch.device(device) if device is not None else parameter.device
        self.dtype = dtype or parameter.dtype
        self.model = model.to(self.device, self.dtype).eval()
        self.to_ev = ENERGY_UNITS[energy_unit.lower()] / EV_IN_KCAL_PER_MOL

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        species = torch.as_tensor(self.atoms.numbers, dtype=torch.long, device=self.device)
        positions = torch.as_tensor(self.atoms.positions, dtype=self.dtype, device=self.device)
        mol_index = torch.zeros(len(species), dtype=torch.long, device=self.device)
        shift = None
        if self.atoms.pbc.any() or len(species) > DENSE_MAX_ATOMS:
            cell = torch.as_tensor(self.atoms.cell.array, dtype=self.dtype, device=self.device)
            pair_first, pair_second, shift = cell_list_pairs(positions, self.model.cutoff, cell,
                                                              torch.as_tensor(self.atoms.pbc))
            if not self.atoms.pbc.any():
                shift = None  # all zero; models without periodic support take None
        else:
            pair_first, pair_second = pairs_within_cutoff(positions, mol_index, self.model.cutoff)
        out = self.model(species, positions, mol_index, pair_first, pair_second, n_molecules=1, pair_shift=shift,
                         forces=True)
        self.results["energy"] = float(out.energy.detach()[0]) * self.to_ev
        self.results["forces"] = out.forces.detach().cpu().double().numpy() * self.to_ev
