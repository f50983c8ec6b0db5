"""The ``"cuda"`` backend: hand-written CUDA kernels (``csrc/``) behind the ops' Python API.

The compiled extension ``hipnnts_kernels._C`` registers launch primitives in the
``hipnnts_cuda`` operator namespace (``TORCH_LIBRARY``, CUDA implementations): each writes into
tensors it is given. :class:`~hipnnts_kernels.segment_kernels.SegmentKernels` turns them into the
implementations the backend registry expects. The public ops own the schemas, fake kernels and
autograd (:mod:`hipnnts_kernels.ops`).

The extension is loaded once, when the package is imported (:data:`EXTENSION_PROBLEM`): a build
that does not load, or that was built against another torch or CUDA than the running one, leaves
the backend unavailable with the reason, so ``backend="auto"`` falls back instead of failing on
the first call.

The same glue drives the host emulation of the kernels that the CPU test suite builds from the
same sources (:mod:`hipnnts_kernels.emulation`), so the kernels' logic is tested without a GPU.

Implemented: the interaction forward, backward and double backward, and the envsum family
(``sensitivity``, ``chebyshev_radial`` and ``tensor_factors`` are elementwise and left to the other
backends).
"""
from __future__ import annotations

import importlib
import importlib.util
import re
from types import ModuleType

import torch

from .segment_kernels import SegmentKernels

_PRIMITIVES = ("interaction_forward", "interaction_backward", "interaction_double_backward",
               "interaction_forward_molecules", "interaction_backward_molecules",
               "interaction_double_backward_molecules", "envsum", "sensesum", "featsum", "featsum_molecules")

_REBUILD = ("rebuild it with this torch: pip install --no-build-isolation -e . (see the README), "
            "or remove hipnnts_kernels/_C*.so to use the other backends")


def build_info(extension: ModuleType) -> dict[str, str]:
    """What ``extension`` (a loaded ``hipnnts_kernels._C``) was built against: torch version, CUDA
    runtime version and GPU architectures (as ``TORCH_CUDA_ARCH_LIST`` gave them)."""
    cudart = int(getattr(extension, "cuda_runtime_version", 0))
    return {"torch": str(getattr(extension, "torch_version", "unknown")),
            "cuda": f"{cudart // 1000}.{cudart % 1000 // 10}" if cudart else "unknown",
            "archs": str(getattr(extension, "cuda_archs", "unknown"))}


def _load_extension() -> tuple[ModuleType | None, str | None]:
    """(the loaded extension, None), or (None, why the cuda backend cannot use it)."""
    if importlib.util.find_spec("hipnnts_kernels._C") is None:
        return None, ("the CUDA extension hipnnts_kernels._C is not built (pip install --no-build-isolation -e . "
                      "with a CUDA build of torch and nvcc present; see the README)")
    try:
        extension = importlib.import_module("hipnnts_kernels._C")
    except (ImportError, OSError) as error:  # built against another torch: undefined symbols, missing libraries
        return None, f"the CUDA extension hipnnts_kernels._C does not load with torch {torch.__version__} ({error}); " \
                     + _REBUILD
    built, running = build_info(extension), {"torch": torch.__version__.split("+")[0], "cuda": torch.version.cuda}
    if built["torch"] != running["torch"] or running["cuda"] is None or \
            built["cuda"].split(".")[0] != running["cuda"].split(".")[0]:
        return None, (f"the CUDA extension hipnnts_kernels._C was built against torch {built['torch']} with CUDA "
                      f"{built['cuda']}, but torch {running['torch']} with CUDA {running['cuda']} is running; "
                      + _REBUILD)
    return extension, None


_EXTENSION, EXTENSION_PROBLEM = _load_extension()
#: Per CUDA device index: None if the extension has kernels for the device's architecture, else why not.
_DEVICE_PROBLEMS: dict[int, str | None] = {}


def _architectures(archs: str) -> tuple[set[tuple[int, int]], set[tuple[int, int]]]:
    """(architectures with machine code, architectures with PTX) of a TORCH_CUDA_ARCH_LIST string."""
    binary, ptx = set(), set()
    for entry in re.split(r"[;,\s]+", archs.strip()):
        major, minor = entry.split("+")[0].rstrip("af").split(".")
        binary.add((int(major), int(minor)))
        if entry.endswith("+PTX"):
            ptx.add((int(major), int(minor)))
    return binary, ptx


def device_problem(device: torch.device) -> str | None:
    """None if the cuda backend can run on ``device`` (a CUDA device), else the reason."""
    if EXTENSION_PROBLEM is not None:
        return EXTENSION_PROBLEM
    if torch.compiler.is_compiling():  # checked on the eager calls; device queries do not trace
        return None
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no CUDA device"
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _DEVICE_PROBLEMS:
        archs = build_info(_EXTENSION)["archs"]
        capability = torch.cuda.get_device_capability(index)
        try:
            binary, ptx = _architectures(archs)
        except ValueError:
            binary, ptx = {capability}, set()  # an unreadable list: let the launch say
        runs = capability in binary or any(p <= capability for p in ptx)
        _DEVICE_PROBLEMS[index] = None if runs else (
            f"the CUDA extension hipnnts_kernels._C was built for compute capabilities {archs} "
            f"(TORCH_CUDA_ARCH_LIST), not for cuda:{index}'s {capability[0]}.{capability[1]}; rebuild it with "
            f"TORCH_CUDA_ARCH_LIST={capability[0]}.{capability[1]}")
    return _DEVICE_PROBLEMS[index]


class _ExtensionLaunchers:
    """The compiled extension's ``torch.ops.hipnnts_cuda`` primitives (with fake kernels, so that
    they also trace under ``torch.compile``; they return nothing)."""

    fakes_registered = False

    def __getattr__(self, name):
        if EXTENSION_PROBLEM is not None:
            raise RuntimeError(EXTENSION_PROBLEM)
        if not _ExtensionLaunchers.fakes_registered:
            for primitive in _PRIMITIVES:
                torch.library.register_fake(f"hipnnts_cuda::{primitive}")(lambda *args: None)
            _ExtensionLaunchers.fakes_registered = True
        return getattr(torch.ops.hipnnts_cuda, name)


#: The implementations registered for the backend (see hipnnts_kernels.ops). The molecule path (the
#: interaction's molecule kernels and featsum's molecule blocks) is off until a GPU benchmark shows
#: where it wins; to use it, set ``KERNELS.molecule_max_atoms`` (e.g. 64).
KERNELS = SegmentKernels(_ExtensionLaunchers())
