"""Checkpoints: written atomically (a temporary file in the same folder, flushed to disk, then
renamed over the old one), so a run killed at any moment leaves the previous checkpoint intact.

A checkpoint holds everything a run needs to continue exactly where it stopped: model and
optimiser and scheduler state, the position in the epoch, the per-epoch history and the partial
sums of the running epoch. :func:`load_model` rebuilds the trained model alone.
"""
from __future__ import annotations

import os
import pickle
import re
import warnings
from pathlib import Path

import torch
from torch import nn

from ..atomic import atomic_write
from .architectures import LEGACY_ARCHITECTURE, build_model

FORMAT = "hipnnts-checkpoint"
VERSION = 1


def save_checkpoint(state: dict, path: str | os.PathLike) -> None:
    """Write ``state`` to ``path`` atomically."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp, open(tmp, "wb") as file:
        torch.save({"format": FORMAT, "version": VERSION, **state}, file)
        file.flush()
        os.fsync(file.fileno())


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """The state saved by :func:`save_checkpoint`; clear errors for missing or foreign files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such checkpoint: {path}")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of foreign files
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a damaged file
        raise ValueError(f"{path} is not a hipnnts-kernels checkpoint: {_why_unreadable(path, err)}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a hipnnts-kernels checkpoint: torch can read it, but it is not one this "
                         "package wrote")
    if state.get("version", 0) > VERSION:
        raise ValueError(f"{path}: checkpoint version {state['version']} is newer than this package reads ({VERSION})")
    return state


def _why_unreadable(path: Path, err: Exception) -> str:
    """One line on why torch could not load ``path`` safely, without torch's own message (which
    suggests loading the file unsafely, as a file that may be malicious must never be)."""
    with open(path, "rb") as file:
        head = file.read(8)
    if head.startswith(b"\x89HDF"):
        return "it is an HDF5 file (a dataset?)"
    blocked = re.search(r"GLOBAL ([\w.]+)", str(err))
    if isinstance(err, pickle.UnpicklingError) and blocked is not None:
        return (f"it holds a Python object ({blocked.group(1)}) that a checkpoint never holds; it was not loaded, "
                "and a file from an unknown source should not be")
    if head[:1] == b"\x80":
        return "it is a pickle of objects a checkpoint never holds (or is damaged); it was not loaded"
    return "torch cannot read it as a file that torch.save wrote (damaged, truncated or of another kind)"


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu", backend: str | None = None) -> nn.Module:
    """The trained model of a checkpoint (:class:`~hipnnts_kernels.HipnnTS`,
    :class:`~hipnnts_kernels.tensornet.TensorNetModel` or :class:`~hipnnts_kernels.etn.ETN`, as the
    checkpoint's ``architecture`` says;
    checkpoints that name none are HipnnTS), in evaluation mode, with its dtype.

    Args:
        backend: override the kernel backend it was trained with (e.g. "reference" on a CPU); ignored
            for architectures that have no backend setting.
    """
    state = read_checkpoint(path)
    architecture = state.get("architecture", LEGACY_ARCHITECTURE)
    hparams = dict(state["model_hparams"])
    if backend is not None and "backend" in hparams:
        hparams["backend"] = backend
    model = build_model(architecture, hparams)
    dtype = next(iter(state["model_state"].values())).dtype
    model.to(dtype).load_state_dict(state["model_state"])
    model.freeze_self_energies()
    return model.to(device).eval()
