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


def test_auto_on_cuda_picks_triton_when_installed():
    pytest.importorskip("triton")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for op in ("envsum", "sensesum", "featsum", "sensitivity", "tensor_factors", "interaction"):
            assert backends.resolve(op, "auto", torch.device("cuda", 0)) == "triton"


def test_auto_on_cuda_falls_back_with_one_warning(monkeypatch):
    monkeypatch.setattr(backends, "_WARNED", set())
    monkeypatch.setitem(backends._AVAILABILITY, "triton", lambda device: "triton is not installed")
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
def test_explicit_unavailable_backend_says_why(name, match, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
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
def forward_only_backend(monkeypatch):
    """A test backend with a forward kernel only: both derivative levels must fall back to the
    reference, and the results must equal the reference backend's to any order."""
    from hipnnts_kernels import reference

    calls = []

    def forward(*args):
        calls.append("interaction")
        return reference.interaction(*args)

    monkeypatch.setitem(backends._AVAILABILITY, "forward-only", lambda device: None)
    monkeypatch.setitem(backends._IMPLEMENTATIONS, ("interaction", "forward-only"), forward)
    return calls


def test_missing_derivative_levels_fall_back_to_the_reference(forward_only_backend):
    from test_ops import interaction_fn, interaction_inputs

    x = interaction_inputs(2, seed=80)
    fn, leaves = interaction_fn(x, 2)
    on_backend = lambda *xs: fn(*xs, backend="forward-only")  # noqa: E731
    assert torch.autograd.gradcheck(on_backend, leaves)
    assert torch.autograd.gradgradcheck(on_backend, leaves)
    assert forward_only_backend and set(forward_only_backend) == {"interaction"}

    def three_orders(f):
        out = f(*leaves)
        g1 = torch.autograd.grad(out.square().sum(), leaves, create_graph=True)
        g2 = torch.autograd.grad(sum((g ** 3).sum() for g in g1), leaves, create_graph=True)
        return g1 + g2 + torch.autograd.grad(sum((g ** 2).sum() for g in g2), leaves)

    for a, b in zip(three_orders(on_backend), three_orders(fn)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10 * float(b.detach().abs().max()))
