"""The training loss (the README's Training section) and error metrics accumulated on the device.

Loss = w_E MSE(E_mol) + w_F MSE(F) + w_H mean(hierarchicality) + w_L2 Σ‖W‖², with E in kcal/mol
and F in kcal/mol/Å. Metrics are running sums kept in one device tensor, so accumulating them
costs no host synchronisation; :meth:`ErrorSums.result` syncs once and reports MAE and RMSE of
molecular energies, of energies per atom and of force components, and the mean signed energy error.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..data.batching import Batch
from ..model import ModelOutput

#: Names of the running sums, in order.
SUM_NAMES = ("molecules", "atoms", "loss", "energy_abs", "energy_sq", "energy_atom_abs", "energy_atom_sq",
             "force_components", "force_abs", "force_sq", "force_target_abs", "energy_signed")


def loss_terms(model: nn.Module, out: ModelOutput, batch: Batch, *, energy_weight: float, force_weight: float,
               hierarchicality_weight: float, l2_weight: float) -> dict[str, Tensor]:
    """The loss and its parts (scalars): ``loss``, ``energy_mse``, ``force_mse`` (absent without force
    targets), ``hierarchicality`` and ``l2``."""
    terms = {"energy_mse": (out.energy - batch.energy).square().mean()}
    loss = energy_weight * terms["energy_mse"]
    if batch.forces is not None and out.forces is not None and force_weight:
        terms["force_mse"] = (out.forces - batch.forces).square().mean()
        loss = loss + force_weight * terms["force_mse"]
    terms["hierarchicality"] = out.hierarchicality.mean()
    terms["l2"] = sum(p.square().sum() for p in model.regularization_params())
    terms["loss"] = loss + hierarchicality_weight * terms["hierarchicality"] + l2_weight * terms["l2"]
    return terms


class ErrorSums:
    """Running error sums over batches, on the device (see :data:`SUM_NAMES`)."""

    def __init__(self, device: torch.device, values: Tensor | None = None):
        self.values = torch.zeros(len(SUM_NAMES), dtype=torch.float64, device=device)
        if values is not None:  # sums saved before the last names existed leave those at zero
            self.values[:values.numel()] = values.to(device, torch.float64)
        self.has_loss = False

    @torch.no_grad()
    def add(self, out: ModelOutput, batch: Batch, loss: Tensor | None = None) -> None:
        """Add one batch: the model's outputs and the batch's targets (and the loss, in training)."""
        self.has_loss |= loss is not None
        atoms = torch.bincount(batch.mol_index, minlength=batch.n_molecules).clamp(min=1)
        de = (out.energy.detach() - batch.energy).double()
        parts = [
            de.new_full((), batch.n_molecules), de.new_full((), batch.species.shape[0]),  # fills: no copy
            de.new_zeros(()) if loss is None else loss.detach().double() * batch.n_molecules,
            de.abs().sum(), de.square().sum(), (de / atoms).abs().sum(), (de / atoms).square().sum(),
        ]
        if batch.forces is not None and out.forces is not None:
            df = (out.forces.detach() - batch.forces).double()
            parts += [de.new_full((), df.numel()), df.abs().sum(), df.square().sum(), batch.forces.double().abs().sum()]
        else:
            parts += [de.new_zeros(())] * 4
        parts.append(de.sum())
        self.values += torch.stack(parts)

    def result(self) -> dict[str, float]:
        """MAE and RMSE (kcal/mol, kcal/mol/Å), the mean signed energy error (prediction - target: a
        systematic offset), the mean loss (training sums), and the MAE of predicting zero forces (the
        trivial baseline)."""
        s = dict(zip(SUM_NAMES, self.values.tolist()))
        n_mol, n_comp = max(s["molecules"], 1.0), s["force_components"]
        result = {"loss": s["loss"] / n_mol} if self.has_loss else {}
        result.update({
            "energy_mae": s["energy_abs"] / n_mol, "energy_rmse": (s["energy_sq"] / n_mol) ** 0.5,
            "energy_per_atom_mae": s["energy_atom_abs"] / n_mol,
            "energy_per_atom_rmse": (s["energy_atom_sq"] / n_mol) ** 0.5,
            "energy_mean_error": s["energy_signed"] / n_mol,
        })
        if n_comp:
            result.update(force_mae=s["force_abs"] / n_comp, force_rmse=(s["force_sq"] / n_comp) ** 0.5,
                          zero_force_mae=s["force_target_abs"] / n_comp)
        return result
