"""Argument checks shared by the ops and the model: clear errors that name the argument.

Shape, dtype and device checks are free and always run. Checks that read values (index range,
non-finite or coincident positions) need a device-to-host copy; they run by default and can be
switched off for GPU throughput with :func:`set_value_checks` (they are skipped under
``torch.compile`` tracing, where values are unknown).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

FLOAT_DTYPES = (torch.float32, torch.float64)
INDEX_DTYPES = (torch.int64, torch.int32)

_value_checks = True


def set_value_checks(enabled: bool) -> None:
    """Enable or disable the checks that read tensor values (on by default)."""
    global _value_checks
    _value_checks = bool(enabled)


@contextlib.contextmanager
def value_checks(enabled: bool) -> Iterator[None]:
    """Within the block, value-reading checks are on or off; the previous setting comes back after."""
    global _value_checks
    previous, _value_checks = _value_checks, bool(enabled)
    try:
        yield
    finally:
        _value_checks = previous


def value_checks_enabled() -> bool:
    """Whether value-reading checks run now (never while ``torch.compile`` traces)."""
    return _value_checks and not torch.compiler.is_compiling()


def _shape_str(shape: Sequence) -> str:
    items = ["*" if s is None else str(s) for s in shape]
    return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"


def check_tensor(
    name: str,
    value: object,
    shape: Sequence[int | None],
    dtypes: Sequence[torch.dtype] = FLOAT_DTYPES,
    like: Tensor | None = None,
) -> Tensor:
    """Check that ``value`` is a tensor of the given shape (None = any size), dtype and device.

    ``like`` (if given) fixes the device and, for floating tensors, the dtype.
    """
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dim() != len(shape) or any(s is not None and s != v for s, v in zip(shape, value.shape)):
        raise ValueError(f"{name} must have shape {_shape_str(shape)}, got {tuple(value.shape)}")
    if value.dtype not in dtypes:
        names = " or ".join(str(d).replace("torch.", "") for d in dtypes)
        raise TypeError(f"{name} must have dtype {names}, got {str(value.dtype).replace('torch.', '')}")
    if like is not None:
        if value.device != like.device:
            raise ValueError(f"{name} is on {value.device} but the other inputs are on {like.device}")
        if value.is_floating_point() and like.is_floating_point() and value.dtype != like.dtype:
            raise TypeError(
                f"{name} has dtype {str(value.dtype).replace('torch.', '')} but the other floating inputs "
                f"have {str(like.dtype).replace('torch.', '')}"
            )
    return value


def check_like_model(name: str, value: Tensor, model: torch.nn.Module) -> None:
    """Raise if a floating input's device or dtype differs from the model's parameters."""
    parameter = next((p for p in model.parameters() if p.is_floating_point()), None)
    if parameter is None:
        return
    if value.device != parameter.device:
        raise ValueError(f"{name} is on {value.device} but the model is on {parameter.device}: move one to the "
                         f"other (model.to({str(value.device)!r}) or {name}.to({str(parameter.device)!r}))")
    if value.dtype != parameter.dtype:
        have, want = (str(d).replace("torch.", "") for d in (value.dtype, parameter.dtype))
        raise TypeError(f"{name} has dtype {have} but the model's parameters are {want}: convert one to the other "
                        f"({name}.to(torch.{want}) or model.to(torch.{have}))")


def check_index_range(name: str, index: Tensor, size: int, what: str = "atom") -> None:
    """Raise if an index tensor holds values outside [0, size) (a value check)."""
    if value_checks_enabled() and index.numel() > 0:
        low, high = int(index.min()), int(index.max())
        if low < 0 or high >= size:
            raise ValueError(f"{name} holds {what} index {low if low < 0 else high}, outside [0, {size})")


def check_pairs(pair_first: object, pair_second: object, n_atoms: int, like: Tensor) -> int:
    """Check a pair list: two 1-D integer tensors of equal length with indices in [0, n_atoms)."""
    check_tensor("pair_first", pair_first, (None,), INDEX_DTYPES, like)
    check_tensor("pair_second", pair_second, (pair_first.shape[0],), INDEX_DTYPES, like)
    check_index_range("pair_first", pair_first, n_atoms)
    check_index_range("pair_second", pair_second, n_atoms)
    return pair_first.shape[0]


def check_finite(name: str, value: Tensor) -> None:
    """Raise if ``value`` holds NaN or inf (a value check)."""
    if value_checks_enabled() and value.numel() > 0 and not bool(torch.isfinite(value).all()):
        where = torch.nonzero(~torch.isfinite(value))[0].tolist()
        raise ValueError(f"{name} holds a non-finite value (NaN or inf) at index {tuple(where)}")


def check_pair_lengths(pair_coord: Tensor) -> None:
    """Raise if a pair vector is non-finite or zero (two atoms at the same position)."""
    check_finite("pair_coord", pair_coord)
    if value_checks_enabled() and pair_coord.numel() > 0:
        zero = (pair_coord == 0).all(dim=1)
        if bool(zero.any()):
            p = int(torch.nonzero(zero)[0])
            raise ValueError(
                f"pair_coord[{p}] is zero: two atoms of a pair are at the same position "
                f"({int(zero.sum())} such pairs); distances must be positive"
            )


def check_choice(name: str, value: object, choices: Sequence) -> None:
    """Raise unless ``value`` is one of ``choices``."""
    if value not in choices or isinstance(value, bool):
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
