"""Energy + forces inference and a training step of every model contender (see conftest.py)."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from hipnnts_kernels.benchmarks import models
from hipnnts_kernels.checks import value_checks

SIZE = {"tiny": "one", "spec9": "64", "large": "28k"}


@pytest.fixture(scope="module")
def batch(preset, device):
    return models.make_batch(SIZE[preset], device, torch.float32)


def _contenders(device):
    out = []
    for lmax in (0, 2):
        out += models.our_contenders(lmax, device, torch.float32)
    if importlib.util.find_spec("torchmdnet") is not None:
        out += models.tensornet_contenders(device, torch.float32, variants=((2, 4.5),))
    return out


@pytest.fixture(scope="module")
def contenders(device):
    return {c.name: c for c in _contenders(device)}


NAMES = [c.name for c in _contenders(torch.device("cuda" if torch.cuda.is_available() else "cpu"))]


@pytest.mark.parametrize("task", models.TASKS)
@pytest.mark.parametrize("name", NAMES, ids=[n.replace("Å", "A") for n in NAMES])
def test_model(benchmark, contenders, batch, synchronised, name, task):
    contender = contenders[name]
    fn = models.inference_call(contender, batch) if task == "inference" else models.training_step(contender, batch)
    benchmark.extra_info.update(atoms=batch.atoms, molecules=batch.n_molecules, parameters=contender.parameters)
    with value_checks(False):
        out = benchmark(synchronised(fn))
    assert all(torch.isfinite(t).all() for t in (out if isinstance(out, tuple) else (out,)))
