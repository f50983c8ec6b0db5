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


def _type_problem(value: Any, annotation: str) -> str | None:
    """What is wrong with ``value`` for a field annotated ``annotation`` (a string: this module uses
    postponed annotations), or None."""
    kinds = [kind.strip() for kind in annotation.split("|")]
    if value is None:
        return None if "None" in kinds else "a value, not none"
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    for kind in kinds:
        if (kind == "int" and isinstance(value, int) and not isinstance(value, bool)) or \
                (kind == "float" and number) or (kind == "str" and isinstance(value, str)) or \
                (kind == "bool" and isinstance(value, bool)):
            return None
        if kind.startswith("tuple[") and isinstance(value, (list, tuple)) and \
                len(value) == kind.count(",") + 1 and all(_type_problem(v, "float") is None for v in value):
            return None
    names = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false", "None": "none"}
    expected = " or ".join(names.get(k, f"{k.count(',') + 1} numbers" if k.startswith("tuple[") else k)
                           for k in kinds)
    return expected


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
    architecture: str = _field("hipnnts", "model: 'hipnnts' (HIP-NN / HIP-NN-TS), 'tensornet' (torchmd-net's "
                               "TensorNet, needs `pip install --no-deps torchmd-net==3.0.2`) or 'etn' (equivariant "
                               "tensor network, docs/etn.md); for tensornet n_features -> hidden channels, "
                               "n_interaction_layers -> layers, n_sensitivities -> radial basis functions, cutoff -> "
                               "cutoff; for etn n_sensitivities -> Chebyshev radial functions, cutoff -> cutoff, "
                               "and the etn_* settings; other model settings are ignored",
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
    etn_degree: int = _field(4, "etn: cores of the tensor train (the polynomial degree in the moments)", "model")
    etn_bond_dim: int = _field(8, "etn: bond dimension of the tensor train, per rank", "model")
    etn_moments: int = _field(16, "etn: moment channels per rank", "model")
    etn_message_passing: bool = _field(False, "etn: a second round whose moments carry the neighbours' scalars",
                                       "model")
    backend: str = _field("auto", "kernel backend of the model's ops", "model")

    # -- optimisation ------------------------------------------------------------------------
    epochs: int = _field(20, "maximum number of epochs", "optimisation")
    batch_size: int = _field(32, "molecules per batch (per process under torchrun)", "optimisation")
    eval_batch_size: int = _field(128, "molecules per batch when evaluating", "optimisation")
    optimizer: str = _field("adam", "optimiser", "optimisation", choices=("adam", "adamw"))
    lr: float = _field(4e-3, "initial learning rate", "optimisation")
    weight_decay: float = _field(0.0, "decoupled weight decay (adamw)", "optimisation")
    energy_weight: float = _field(1.0, "weight of the energy MSE, (kcal/mol)^-2", "optimisation")
    force_weight: float = _field(4.0, "weight of the force MSE, (kcal/mol/Å)^-2", "optimisation")
    hierarchicality_weight: float = _field(1.0, "weight of the mean hierarchicality (see the README, Training)",
                                           "optimisation")
    l2_weight: float = _field(1e-6, "weight of the L2 penalty on weight matrices", "optimisation")
    refit_self_energies: bool = _field(True, "after every epoch, correct the per-species self energies by least "
                                       "squares to the training split's energy residuals (an energy-only pass): "
                                       "removes the energy offset that drifts while the forces dominate the "
                                       "gradient", "optimisation")
    clip_grad_norm: float | None = _field(10.0, "clip the gradient norm to this ('none': no clipping)",
                                          "optimisation")
    lr_schedule: str = _field("cosine", "'plateau': reduce the learning rate when the validation loss stalls "
                              "(lr_patience, lr_factor); 'cosine': anneal it from lr to min_lr over the budget, "
                              "epochs or time_limit, whichever ends first (a resume with a larger budget "
                              "stretches what is left)", "optimisation",
                              choices=("plateau", "cosine"))
    lr_patience: int = _field(3, "ReduceLROnPlateau: epochs without improvement before reducing", "optimisation")
    lr_factor: float = _field(0.5, "ReduceLROnPlateau: factor", "optimisation")
    min_lr: float = _field(1e-5, "stop when the learning rate falls below this (plateau); the end of the "
                           "cosine schedule", "optimisation")
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
        for f in dataclasses.fields(self):
            expected = _type_problem(getattr(self, f.name), f.type)
            if expected is not None:
                raise TypeError(f"{f.name} must be {expected}, got {getattr(self, f.name)!r}")
        positive = ("n_features", "n_sensitivities", "n_interaction_layers", "etn_degree", "etn_bond_dim",
                    "etn_moments", "epochs", "batch_size",
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
    if path.suffix not in (".toml", ".yaml", ".yml", ".json"):
        raise ValueError(f"config file must end in .toml, .yaml, .yml or .json, got {path.name}")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ValueError(f"config file {path} is not a text file") from None
    raw = _parse(path, text)
    if not isinstance(raw, dict):
        raise ValueError(f"config file {path}: expected a table of settings, got {type(raw).__name__}")
    flat: dict = {}
    for key, value in raw.items():
        if key in SECTIONS and isinstance(value, dict):
            flat.update(value)
        else:
            flat[key.replace("-", "_")] = value
    flat = {k.replace("-", "_"): v for k, v in flat.items()}
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(flat) - set(fields))
    if unknown:
        raise ValueError(f"config file {path}: unknown settings {unknown}; known: {sorted(fields)}")
    for key, value in flat.items():
        if isinstance(value, str) and value.lower() == "none" and "None" in fields[key].type:
            flat[key] = value = None  # TOML has no null
        expected = _type_problem(value, fields[key].type)
        if expected is not None:
            raise ValueError(f"config file {path}: {key} must be {expected}, got {value!r}")
    return flat


def _parse(path: Path, text: str) -> Any:
    """The file's contents; a syntax error names the file, its format and the place (one line)."""
    if path.suffix == ".toml":
        try:
            import tomllib
        except ImportError:  # Python 3.10
            import tomli as tomllib
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"config file {path} is not valid TOML: {err}") from None
    if path.suffix == ".json":
        import json

        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"config file {path} is not valid JSON: {err}") from None
    import yaml

    try:
        return yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (at line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(err, "problem", None) or type(err).__name__
        raise ValueError(f"config file {path} is not valid YAML: {problem}{where}") from None
