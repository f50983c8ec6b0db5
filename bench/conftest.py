"""pytest-benchmark suite of the same cases as ``hipnnts bench`` (regression tracking).

    python -m pytest bench/ --preset spec9 --benchmark-autosave     # on a GPU
    python -m pytest bench/ --benchmark-compare                      # against the last saved run

``--preset`` picks the kernel size preset (tiny, spec9, large) and the model batch (tiny runs
one molecule, spec9 64 molecules, large the ≈28k-atom batch). CI runs only ``tiny``, as a smoke
test of the suite: on the CPU, Triton runs in its interpreter and its numbers mean nothing.
Every call is synchronised with the device, so pytest-benchmark's wall-clock timer sees the
kernels' time.
"""
from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before the first Triton kernel is defined


def pytest_addoption(parser):
    parser.addoption("--preset", default="tiny", choices=("tiny", "spec9", "large"),
                     help="size preset of the benchmark suite (default: tiny)")


@pytest.fixture(scope="session")
def preset(request) -> str:
    return request.config.getoption("--preset")


@pytest.fixture(scope="session")
def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture
def synchronised(device):
    """``synchronised(fn)``: fn followed by a device synchronisation."""
    def wrap(fn):
        def call():
            out = fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            return out

        return call

    return wrap
