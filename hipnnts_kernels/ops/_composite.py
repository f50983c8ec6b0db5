"""Vector-Jacobian products of the pure-PyTorch reference functions.

Used in backward formulas: as the backward of ops whose backend has no dedicated derivative
kernel, and for every derivative order beyond the ones the fast backends implement. The result of
``torch.func.vjp`` stays connected to the graph of the (saved) arguments, so it is itself
differentiable to any order. (Inside an op implementation ``torch.func`` defeats
``torch.library.opcheck``; implementations are plain tensor code.)
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor


def composite_vjp(fn: Callable, args: Sequence, cotangents: Sequence[Tensor | None]) -> list[Tensor | None]:
    """d<cotangents, fn(*args)>/d args for every floating-point tensor in ``args``.

    Other arguments (indices, numbers, strings, None) are held fixed and get None. A None
    cotangent stands for zeros. The result is aligned with ``args``.
    """
    wrt = [i for i, a in enumerate(args) if isinstance(a, Tensor) and a.is_floating_point()]

    def partial(*tensors):
        full = list(args)
        for i, t in zip(wrt, tensors):
            full[i] = t
        return fn(*full)

    outputs, vjp = torch.func.vjp(partial, *(args[i] for i in wrt))
    if isinstance(outputs, Tensor):
        (cotangent,) = cotangents
        grads = vjp(torch.zeros_like(outputs) if cotangent is None else cotangent)
    else:
        grads = vjp(tuple(torch.zeros_like(o) if c is None else c for o, c in zip(outputs, cotangents)))
    result: list[Tensor | None] = [None] * len(args)
    for i, g in zip(wrt, grads):
        result[i] = g
    return result
