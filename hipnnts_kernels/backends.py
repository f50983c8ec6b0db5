"""Backend registry: which implementation of each op runs for a given device.

Each op has one schema (see :mod:`hipnnts_kernels.ops`) and one implementation per backend,
registered here by name. ``backend="auto"`` picks the first available backend in
:data:`PREFERENCE` for the tensors' device; when that is not the best backend for the device it
warns once, so falling back is never silent. An explicitly requested backend that is unavailable
is an error that says why.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import re
import warnings
from collections.abc import Callable

import torch

from . import cpu_backend, cuda_backend

#: Backends ``"auto"`` tries, in order, for each device type (others get ``"reference"``).
#: The Triton interpreter (``TRITON_INTERPRET=1``) runs on CPU tensors only when asked for by name.
PREFERENCE = {"cuda": ("cuda", "triton", "reference"), "cpu": ("cpu", "reference")}

_IMPLEMENTATIONS: dict[tuple[str, str], Callable] = {}
_AVAILABILITY: dict[str, Callable[[torch.device], str | None]] = {}
_WARNED: set[tuple[str, str]] = set()


def register_backend(name: str, availability: Callable[[torch.device], str | None]) -> None:
    """Declare a backend. ``availability(device)`` returns None if usable there, else the reason."""
    _AVAILABILITY[name] = availability


def unregister_backend(name: str) -> None:
    """Remove a backend and its implementations (one registered for a benchmark run, say)."""
    _AVAILABILITY.pop(name, None)
    for key in [key for key in _IMPLEMENTATIONS if key[1] == name]:
        del _IMPLEMENTATIONS[key]


def register(op: str, backend: str) -> Callable[[Callable], Callable]:
    """Decorator: register ``fn`` as the ``backend`` implementation of ``op``."""

    def decorator(fn: Callable) -> Callable:
        _IMPLEMENTATIONS[(op, backend)] = fn
        return fn

    return decorator


def register_lazy(op: str, backend: str, module: str, attr: str | None = None) -> None:
    """Register ``module.attr`` (a dotted path inside the module; default ``attr = op``) as the
    ``backend`` implementation of ``op``, importing ``module`` only when it is first called."""
    loaded: list[Callable] = []

    def load_and_call(*args):
        if not loaded:
            target = importlib.import_module(module)
            for name in (attr or op).split("."):
                target = getattr(target, name)
            loaded.append(target)
        return loaded[0](*args)

    _IMPLEMENTATIONS[(op, backend)] = load_and_call


def implementation(op: str, backend: str) -> Callable:
    """The registered implementation of ``op`` for a resolved backend name."""
    try:
        return _IMPLEMENTATIONS[(op, backend)]
    except KeyError:
        raise NotImplementedError(f"op {op!r} has no {backend!r} implementation") from None


def has_implementation(op: str, backend: str) -> bool:
    """Whether ``backend`` registers its own kernel for ``op`` (derivative ops may be absent)."""
    return (op, backend) in _IMPLEMENTATIONS


def unavailable_reason(backend: str, device: torch.device, op: str | None = None) -> str | None:
    """None if ``backend`` can run ``op`` on ``device``, else a sentence saying why not."""
    if backend not in _AVAILABILITY:
        return f"unknown backend {backend!r}; known backends: {', '.join(known_backends())}"
    reason = _AVAILABILITY[backend](device)
    if reason is None and op is not None and (op, backend) not in _IMPLEMENTATIONS:
        reason = f"the {backend!r} backend has no implementation of {op!r}"
    return reason


def known_backends() -> tuple[str, ...]:
    """Names of all declared backends."""
    return tuple(_AVAILABILITY)


def resolve(op: str, backend: str, device: torch.device) -> str:
    """Turn ``backend`` (a name or ``"auto"``) into the backend that runs ``op`` on ``device``.

    Raises ``ValueError`` for an unknown name and ``RuntimeError`` for a known backend that cannot
    run here. ``"auto"`` warns once per (op, device type) when it falls back to ``"reference"``
    because a preferred fast backend cannot run on the device (not built, not installed); ops a
    fast backend has no kernel for (the elementwise ones on CPU) go to the next one silently.
    """
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a string, got {type(backend).__name__}")
    if backend != "auto":
        if backend not in _AVAILABILITY:
            raise ValueError(f"backend must be 'auto' or one of {known_backends()}, got {backend!r}")
        reason = unavailable_reason(backend, device, op)
        if reason is not None:
            raise RuntimeError(f"backend {backend!r} cannot run {op!r} on {device}: {reason}")
        return backend
    reasons, missing = [], []  # why each preferred backend cannot run; those that cannot run here at all
    for name in PREFERENCE.get(device.type, ("reference",)):
        reason = unavailable_reason(name, device, op)
        if reason is None:
            if name == "reference" and missing and (op, device.type) not in _WARNED:
                _WARNED.add((op, device.type))
                warnings.warn(
                    f"hipnnts_kernels: no fast backend for {op!r} on {device} ({'; '.join(reasons)}); "
                    "falling back to the pure-PyTorch reference.",
                    RuntimeWarning,
                    stacklevel=3,
                )
            return name
        reasons.append(f"{name}: {reason}")
        if unavailable_reason(name, device) is not None:  # not merely without a kernel for this op
            missing.append(name)
    raise RuntimeError(f"no backend can run {op!r} on {device}: {'; '.join(reasons)}")


def _triton_problem() -> str | None:
    """Why the Triton backend cannot run at all in this environment (None if it can)."""
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (pip install triton)"
    return None


def _interpreter_problem() -> str | None:
    """Why Triton's interpreter (TRITON_INTERPRET=1, CPU tensors) cannot run the kernels here."""
    import numpy

    version = importlib.metadata.version("triton")
    release = tuple(int(x) for x in re.findall(r"\d+", version)[:2])
    try:
        int(numpy.ones(1))
    except TypeError:  # numpy >= 2.4 converts only 0-d arrays to Python scalars
        if release < (3, 7):
            return (f"triton {version}'s interpreter cannot run these kernels with numpy {numpy.__version__}: it "
                    "converts loop bounds loaded from memory with int() of a 1-element array, which numpy >= 2.4 "
                    "rejects (fixed in triton 3.7; compiled Triton on a GPU is not affected)")
    return None


# The environment is probed once, at import (the probes do not trace under torch.compile).
_TRITON_PROBLEM = _triton_problem()
_INTERPRETER_PROBLEM = _interpreter_problem() if _TRITON_PROBLEM is None else None


def _triton_availability(device: torch.device) -> str | None:
    if _TRITON_PROBLEM is not None:
        return _TRITON_PROBLEM
    if device.type == "cuda":
        return None
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1":
        return _INTERPRETER_PROBLEM
    return f"Triton kernels need CUDA tensors (or TRITON_INTERPRET=1 for CPU tensors), got {device.type} tensors"


def _cuda_availability(device: torch.device) -> str | None:
    if device.type != "cuda":
        return f"the CUDA kernels need CUDA tensors, got {device.type} tensors"
    return cuda_backend.device_problem(device)


register_backend("reference", lambda device: None)
register_backend("triton", _triton_availability)
register_backend("cuda", _cuda_availability)
register_backend("cpu", cpu_backend.device_problem)
