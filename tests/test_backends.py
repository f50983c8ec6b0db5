"""Backend resolution: explicit names, "auto" per device, the one-time fallback warning."""
from __future__ import annotations

import warnings

import pytest
import torch

from hipnnts_kernels import backends, ops, set_value_checks


def test_auto_on_cpu_is_the_reference_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert backends.resolve("envsum", "auto", torch.device("cpu")) == "reference"


def test_auto_on_cuda_falls_back_with_one_warning(monkeypatch):
    monkeypatch.setattr(backends, "_WARNED", set())
    cuda = torch.device("cuda", 0)
    with pytest.warns(RuntimeWarning, match="falling back to the pure-PyTorch reference"):
        assert backends.resolve("interaction", "auto", cuda) == "reference"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert backends.resolve("interaction", "auto", cuda) == "reference"


@pytest.mark.parametrize("name, match", [
    ("triton", "cannot run 'envsum' on cpu"),
    ("cuda", "the CUDA kernels need CUDA tensors"),
])
def test_explicit_unavailable_backend_says_why(name, match):
    x = torch.zeros(2, 3)
    pairs = torch.tensor([0, 1])
    with pytest.raises(RuntimeError, match=match):
        ops.envsum(torch.zeros(2, 1), x, pairs, pairs, backend=name)


def test_unknown_backend_and_wrong_type():
    with pytest.raises(ValueError, match="backend must be 'auto' or one of"):
        backends.resolve("envsum", "numba", torch.device("cpu"))
    with pytest.raises(TypeError, match="backend must be a string"):
        backends.resolve("envsum", None, torch.device("cpu"))


def test_value_checks_can_be_switched_off():
    sens, feat = torch.zeros(1, 2), torch.zeros(3, 4)
    bad = torch.tensor([7])
    with pytest.raises(ValueError, match="pair_first holds atom index 7"):
        ops.envsum(sens, feat, bad, torch.tensor([0]))
    set_value_checks(False)
    try:
        with pytest.raises((IndexError, RuntimeError)):  # no longer our message: the kernel's own error
            ops.envsum(sens, feat, bad, torch.tensor([0]))
    finally:
        set_value_checks(True)


@pytest.fixture
def three_level_backend(monkeypatch):
    """A test backend that registers kernels for all three levels of the fused op.

    Its double-backward kernel is the composite itself, so results must equal the reference;
    what this checks is the dispatch and autograd wiring a fast backend plugs into.
    """
    from hipnnts_kernels import reference
    from hipnnts_kernels.ops.interaction import _composite_double_backward

    calls = []

    def recorded(name, fn):
        def wrapper(*args):
            calls.append(name)
            return fn(*args)
        return wrapper

    monkeypatch.setitem(backends._AVAILABILITY, "three-level", lambda device: None)
    for op, fn in (("interaction", reference.interaction), ("interaction_backward", reference.interaction_backward),
                   ("interaction_double_backward", _composite_double_backward)):
        monkeypatch.setitem(backends._IMPLEMENTATIONS, (op, "three-level"), recorded(op, fn))
    return calls


def test_a_backend_plugs_into_all_three_levels(three_level_backend):
    from test_ops import interaction_fn, interaction_inputs

    x = interaction_inputs(2, seed=80)
    fn, leaves = interaction_fn(x, 2)
    on_backend = lambda *xs: fn(*xs, backend="three-level")  # noqa: E731
    assert torch.autograd.gradcheck(on_backend, leaves)
    assert torch.autograd.gradgradcheck(on_backend, leaves)
    assert {"interaction", "interaction_backward", "interaction_double_backward"} <= set(three_level_backend)
    out = on_backend(*leaves)
    g1 = torch.autograd.grad(out.square().sum(), leaves, create_graph=True)
    g2 = torch.autograd.grad(sum((g ** 3).sum() for g in g1), leaves, create_graph=True)
    g3 = torch.autograd.grad(sum((g ** 2).sum() for g in g2), leaves)  # third order: the composite fallback
    ref = fn(*leaves)
    r1 = torch.autograd.grad(ref.square().sum(), leaves, create_graph=True)
    r2 = torch.autograd.grad(sum((g ** 3).sum() for g in r1), leaves, create_graph=True)
    r3 = torch.autograd.grad(sum((g ** 2).sum() for g in r2), leaves)
    for a, b in zip(g3, r3):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10 * float(b.abs().max()))
