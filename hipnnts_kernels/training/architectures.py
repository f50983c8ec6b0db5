"""The model architectures the trainer builds, by name: one place that maps a :class:`TrainConfig`
to a model's constructor arguments and rebuilds a model from saved ones.

- ``"hipnnts"``: :class:`~hipnnts_kernels.HipnnTS` (every model setting of the config).
- ``"tensornet"``: :class:`~hipnnts_kernels.tensornet.TensorNetModel` (needs torchmd-net), with
  n_features -> hidden_channels, n_interaction_layers -> num_layers, n_sensitivities -> num_rbf and
  cutoff -> cutoff; the other model settings do not apply to it.
- ``"etn"``: :class:`~hipnnts_kernels.etn.ETN`, with n_sensitivities -> n_radial, cutoff -> cutoff,
  the etn_* settings and backend; the other model settings do not apply to it.

Every architecture provides the interface the trainer, :func:`~hipnnts_kernels.training.evaluate`,
checkpoints and the ASE calculator use: ``species``, ``cutoff``, ``hparams`` (``cls(**hparams)``
rebuilds it), ``species_counts``, ``fit_self_energies``, ``set_self_energies``, ``freeze_self_energies``,
``regularization_params`` and ``forward(species, positions, mol_index, pair_first, pair_second,
n_molecules, pair_shift, forces, create_graph) -> ModelOutput``.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:
    from .config import TrainConfig

#: Architecture names, the first is the default.
ARCHITECTURES = ("hipnnts", "tensornet", "etn")

#: A checkpoint that names no architecture was written before there was a choice.
LEGACY_ARCHITECTURE = "hipnnts"

#: TensorNet's constructor argument for each config setting it takes.
TENSORNET_SETTINGS = dict(n_features="hidden_channels", n_interaction_layers="num_layers",
                          n_sensitivities="num_rbf", cutoff="cutoff")

#: ETN's constructor argument for each config setting it takes.
ETN_SETTINGS = dict(n_sensitivities="n_radial", cutoff="cutoff", etn_degree="degree", etn_bond_dim="bond_dim",
                    etn_moments="n_moments", etn_message_passing="message_passing", backend="backend")

#: TensorNet's bound on the neighbour list (pairs per atom of a batch, self pairs included).
TENSORNET_MIN_NEIGHBORS = 64


def _check(architecture: str) -> None:
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; known: {', '.join(ARCHITECTURES)}")


def model_class(architecture: str) -> type[nn.Module]:
    """The model class of ``architecture``."""
    _check(architecture)
    if architecture == "tensornet":
        from ..tensornet import TensorNetModel

        return TensorNetModel
    if architecture == "etn":
        from ..etn import ETN

        return ETN
    from ..model import HipnnTS

    return HipnnTS


def model_kwargs(config: TrainConfig, species: list[int], max_atoms: int | None = None) -> dict:
    """Constructor arguments of ``config.architecture`` from the config's model settings.

    Args:
        species: the atomic numbers of the data.
        max_atoms: atoms of the data's largest conformer; for TensorNet it raises the neighbour-list
            bound so that no batch can exceed it (every atom has at most that many neighbours).
    """
    _check(config.architecture)
    if config.architecture == "tensornet":
        kwargs = {arg: getattr(config, name) for name, arg in TENSORNET_SETTINGS.items()}
        kwargs["max_num_neighbors"] = max(TENSORNET_MIN_NEIGHBORS, int(max_atoms or 0))
        return dict(species=species, **kwargs)
    if config.architecture == "etn":
        return dict(species=species, **{arg: getattr(config, name) for name, arg in ETN_SETTINGS.items()})
    names = [f.name for f in dataclasses.fields(config) if f.metadata["section"] == "model"
             and f.name != "architecture" and not f.name.startswith("etn_")]
    return dict(species=species, **{n: getattr(config, n) for n in names})


def build_model(architecture: str, hparams: dict) -> nn.Module:
    """A new model of ``architecture`` with constructor arguments ``hparams`` (e.g. a model's
    ``hparams`` saved in a checkpoint)."""
    return model_class(architecture)(**hparams)
