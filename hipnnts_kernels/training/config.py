"""Training configuration: every hyperparameter in one dataclass, settable from a TOML/YAML file
and from command-line flags (flags win over the file, the file over the defaults).

The defaults train HIP-NN-TS (l = 2) on the embedded GFN2-xTB dataset in a few minutes on a
2-core CPU; the paper's ANI-1x configuration (Chigaev et al. 2023) is ``n_features = 128``,
``n_sensitivities = 20``, ``n_atom_layers = 3``.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import architectures
from .architectures import ARCHITECTURES

SECTIONS = ("data", "model", "optimisation", "run")


def _field(default: Any, help: str, section: str, **kwargs: Any) -> Any:
    return field(default=default, metadata=dict(help=help, section=section, **kwargs))


@dataclass
class TrainConfig:
    """All settings of a training run. Energies in kcal/mol, lengths in Å."""

    # -- data --------------------------------------------------------------------------------
    data: str | None = _field(None, "dataset file (compact .h5, pyanitools .h5, or extended .xyz); default: the "
                              "embedded GFN2-xTB set", "data")
    data_format: str = _field("auto", "file format", "data", choices=("auto", "hipnnts", "ani", "xyz"))
    energy_unit: str | None = _field(None, "energy unit of an ANI or XYZ file (hartree, ev, kcal/mol, kj/mol); "
                                     "ANI default hartree", "data")
    length_unit: str = _field("angstrom", "length unit of an ANI or XYZ file", "data",
                              choices=("angstrom", "bohr"))
    forces_convention: str | None = _field(None, "for ANI files: what the forces arrays hold, 'forces' (-dE/dR) or "
                                           "'gradient' (+dE/dR, as in COMP6); 'none' to train on energies only",
                                           "data")
    split: tuple[float, float, float] = _field((0.8, 0.1, 0.1), "train/valid/test fractions", "data", nargs=3)
    split_by: str = _field("molecule", "split by molecule (held-out molecules) or by conformer", "data",
                           choices=("molecule", "conformer"))
    max_conformers: int | None = _field(None, "use at most this many conformers (a seeded random subset)", "data")

    # -- model (named as in the HIP-NN-TS paper) -----------------------------------------------
    architecture: str = _field("hipnnts", "model: 'hipnnts' (HIP-NN / HIP-NN-TS) or 'tensornet' (torchmd-net's "
                               "TensorNet, needs `pip install --no-deps torchmd-net==3.0.2`); for tensornet "
                               "n_features -> hidden channels, n_interaction_layers -> layers, n_sensitivities -> "
                               "radial basis functions, cutoff -> cutoff, and the other model settings are ignored",
                               "model", choices=ARCHITECTURES)
    lmax: int = _field(2, "0 = HIP-NN, 1 or 2 = HIP-NN-TS", "model", choices=(0, 1, 2))
    n_features: int = _field(48, "width of every layer (the paper: 128)", "model")
    n_sensitivities: int = _field(16, "sensitivity functions per interaction layer (the paper: 20)", "model")
    dist_soft_min: float = _field(0.75, "smallest initial sensitivity centre, Å", "model")
    dist_soft_max: float = _field(5.5, "largest initial sensitivity centre, Å", "model")
    cutoff: float = _field(6.5, "hard cutoff r_c, Å", "model")
    n_interaction_layers: int = _field(2, "interaction blocks", "model")
    n_atom_layers: int = _field(2, "atom layers after each interaction layer (the paper: 3)", "model")
    cusp_reg: float = _field(1e-6, "eps inside the invariants' square roots", "model")
    backend: str = _field("auto", "kernel backend of the interaction op", "model")

    # -- optimisation ------------------------------------------------------------------------
    epochs: int = _field(20, "maximum number of epochs", "optimisation")
    batch_size: int = _field(32, "molecules per batch (per process under torchrun)", "optimisation")
    eval_batch_size: int = _field(128, "molecules per batch when evaluating", "optimisation")
    optimizer: str = _field("adam", "optimiser", "optimisation", choices=("adam", "adamw"))
    lr: float = _field(2e-3, "initial learning rate", "optimisation")
    weight_decay: float = _field(0.0, "decoupled weight decay (adamw)", "optimisation")
    energy_weight: float = _field(1.0, "weight of the energy MSE, (kcal/mol)^-2", "optimisation")
    force_weight: float = _field(1.0, "weight of the force MSE, (kcal/mol/Å)^-2", "optimisation")
    hierarchicality_weight: float = _field(1.0, "weight of the mean hierarchicality (see the README, Training)",
                                           "optimisation")
    l2_weight: float = _field(1e-6, "weight of the L2 penalty on weight matrices", "optimisation")
    clip_grad_norm: float | None = _field(10.0, "clip the gradient norm to this ('none': no clipping)",
                                          "optimisation")
    lr_patience: int = _field(3, "ReduceLROnPlateau: epochs without improvement before reducing", "optimisation")
    lr_factor: float = _field(0.5, "ReduceLROnPlateau: factor", "optimisation")
    min_lr: float = _field(1e-5, "stop when the learning rate falls below this", "optimisation")
    early_stopping: int = _field(10, "stop after this many epochs without validation improvement",
                                 "optimisation")

    # -- run ---------------------------------------------------------------------------------
    out: str = _field("runs/hipnnts", "output directory (checkpoints, log, plot)", "run")
    seed: int = _field(0, "seed of the split, the initial weights and the batch order", "run")
    device: str = _field("auto", "'auto' (GPU when present), 'cpu', 'cuda', 'cuda:1', ...", "run")
    dtype: str = _field("float32", "floating dtype of the model and the data", "run",
                        choices=("float32", "float64"))
    checkpoint_every: int = _field(200, "also write the checkpoint every this many steps", "run")
    time_limit: float | None = _field(None, "stop cleanly after this many minutes (checkpoint kept)", "run")
    progress: bool = _field(True, "show a progress bar", "run")

    def __post_init__(self) -> None:
        positive = ("n_features", "n_sensitivities", "n_interaction_layers", "epochs", "batch_size",
                    "eval_batch_size", "checkpoint_every", "lr", "cutoff", "early_stopping")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        for name in ("n_atom_layers", "weight_decay", "energy_weight", "force_weight", "hierarchicality_weight",
                     "l2_weight", "lr_patience", "min_lr"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be non-negative, got {getattr(self, name)!r}")
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise ValueError(f"{f.name} must be one of {choices}, got {getattr(self, f.name)!r}")
        self.split = tuple(float(x) for x in self.split)
        if self.forces_convention not in (None, "forces", "gradient", "none"):
            raise ValueError("forces_convention must be 'forces', 'gradient' or 'none', "
                             f"got {self.forces_convention!r}")
        if self.lr_factor <= 0 or self.lr_factor >= 1:
            raise ValueError(f"lr_factor must be in (0, 1), got {self.lr_factor}")

    def model_kwargs(self, species: list[int], max_atoms: int | None = None) -> dict:
        """Constructor arguments of the model of :attr:`architecture` (see
        :func:`~hipnnts_kernels.training.architectures.model_kwargs`)."""
        return architectures.model_kwargs(self, species, max_atoms)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def read_config_file(path: str | os.PathLike) -> dict:
    """Settings from a ``.toml``, ``.yaml``/``.yml`` or ``.json`` file, flat or grouped in the sections
    data / model / optimisation / run. Unknown keys are an error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such config file: {path}")
    text = path.read_text()
    if path.suffix == ".toml":
        try:
            import tomllib
        except ImportError:  # Python 3.10
            import tomli as tomllib
        raw = tomllib.loads(text)
    elif path.suffix in (".yaml", ".yml"):
        import yaml

        raw = yaml.safe_load(text) or {}
    elif path.suffix == ".json":
        import json

        raw = json.loads(text)
    else:
        raise ValueError(f"config file must end in .toml, .yaml, .yml or .json, got {path.name}")
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a table of settings")
    flat: dict = {}
    for key, value in raw.items():
        if key in SECTIONS and isinstance(value, dict):
            flat.update(value)
        else:
            flat[key.replace("-", "_")] = value
    flat = {k.replace("-", "_"): v for k, v in flat.items()}
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(flat) - known)
    if unknown:
        raise ValueError(f"{path}: unknown settings {unknown}; known: {sorted(known)}")
    return flat
