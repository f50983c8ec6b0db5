"""Energy + force training of HIP-NN / HIP-NN-TS: the trainer behind ``hipnnts train``.

- :class:`TrainConfig`: every setting (named as in the HIP-NN-TS paper), from files and flags.
- :class:`Trainer`: one run (single process, or one rank under ``torchrun``), resumable.
- :func:`evaluate`: errors of a model on a set of conformers.
- :func:`load_model`: the trained model of a checkpoint.
- :func:`build_model`: a model of an architecture ("hipnnts", "tensornet", "etn") from its constructor arguments.
"""
from .architectures import ARCHITECTURES, build_model
from .checkpoint import load_model, read_checkpoint, save_checkpoint
from .config import TrainConfig, read_config_file
from .trainer import Trainer, TrainingDiverged, evaluate

__all__ = ["ARCHITECTURES", "TrainConfig", "Trainer", "TrainingDiverged", "build_model", "evaluate", "load_model",
           "read_checkpoint", "save_checkpoint", "read_config_file"]
