"""Backend resolution: explicit names, "auto" per device, the one-time fallback warning."""
from __future__ import annotations

import warnings

import pytest
import torch

from hipnnts_kernels import backends, ops, set_value_checks


def test_auto_on_cpu_is_the_cpu_kernels_or_the_reference_with_one_warning(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setitem(backends._AVAILABILITY, "cpu", lambda device: None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert backends.resolve("envsum", "auto", cpu) == "cpu"
        assert backends.resolve("sensitivity", "auto", cpu) == "reference"  # no C++ kernel: by design, silent
        assert backends.resolve("chebyshev_radial", "auto", cpu) == "reference"
    monkeypatch.setattr(backends, "_WARNED", set())
    monkeypatch.setitem(backends._AVAILABILITY, "cpu", lambda device: "the CPU kernels are not built")
    with pytest.warns(RuntimeWarning, match=r"cpu: the CPU kernels are not built\); falling back"):
        assert backends.resolve("envsum", "auto", cpu) == "reference"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert backends.resolve("envsum", "auto", cpu) == "reference"


def test_auto_on_cuda_takes_the_first_available_backend_in_order(monkeypatch):
    cuda = torch.device("cuda", 0)
    monkeypatch.setitem(backends._AVAILABILITY, "triton", lambda device: None)
    monkeypatch.setitem(backends._AVAILABILITY, "cuda", lambda device: None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert backends.resolve("interaction", "auto", cuda) == "cuda"
        monkeypatch.setitem(backends._AVAILABILITY, "cuda", lambda device: "the extension is not built")
        for op in ("envsum", "sensesum", "featsum", "sensitivity", "chebyshev_radial", "tensor_factors",
                   "interaction"):
            assert backends.resolve(op, "auto", cuda) == "triton"
    # the cuda backend has no elementwise kernels: those ops go to triton even when the extension loads
    monkeypatch.setitem(backends._AVAILABILITY, "cuda", lambda device: None)
    assert backends.resolve("sensitivity", "auto", cuda) == "triton"
    assert backends.resolve("chebyshev_radial", "auto", cuda) == "triton"


def test_auto_on_cuda_falls_back_with_one_warning(monkeypatch):
    monkeypatch.setattr(backends, "_WARNED", set())
    monkeypatch.setitem(backends._AVAILABILITY, "triton", lambda device: "triton is not installed")
    monkeypatch.setitem(backends._AVAILABILITY, "cuda", lambda device: "the extension is not built")
    cuda = torch.device("cuda", 0)
    fallback = r"cuda: the extension is not built; triton: triton is not installed\); falling back"
    with pytest.warns(RuntimeWarning, match=fallback):
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


class _FakeExtension:
    def __init__(self, torch_version: str, cuda_runtime_version: int, cuda_archs: str = "8.0;9.0"):
        self.torch_version, self.cuda_runtime_version, self.cuda_archs = torch_version, cuda_runtime_version, cuda_archs


@pytest.fixture
def built_extension(monkeypatch):
    """Pretend hipnnts_kernels._C is built; the test sets what importing it gives."""
    from hipnnts_kernels import cuda_backend

    monkeypatch.setattr(cuda_backend.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch, "__version__", "2.11.0+cu130")

    def importing_gives(result):
        def import_module(name):
            if isinstance(result, Exception):
                raise result
            return result
        monkeypatch.setattr(cuda_backend.importlib, "import_module", import_module)
        return cuda_backend._load_extension()

    return importing_gives


def test_a_matching_extension_is_available(built_extension):
    extension, problem = built_extension(_FakeExtension("2.11.0", 13000))
    assert problem is None and extension is not None


@pytest.mark.parametrize("extension, match", [
    (ImportError("_C.so: undefined symbol: _ZN3c104impl3cow11cow_deleterEPv"),
     r"does not load with torch 2\.11\.0\+cu130 \(_C\.so: undefined symbol.*rebuild it"),
    (_FakeExtension("2.13.0", 13000), r"built against torch 2\.13\.0 with CUDA 13\.0, but torch 2\.11\.0 .*rebuild it"),
    (_FakeExtension("2.11.0", 12080), r"built against torch 2\.11\.0 with CUDA 12\.8, but .* CUDA 13\.0"),
])
def test_a_stale_extension_leaves_the_backend_unavailable_with_the_reason(built_extension, extension, match):
    loaded, problem = built_extension(extension)
    assert loaded is None and problem is not None
    assert __import__("re").search(match, problem), problem


def test_the_extension_must_hold_kernels_for_the_device(monkeypatch):
    from hipnnts_kernels import cuda_backend

    monkeypatch.setattr(cuda_backend, "EXTENSION_PROBLEM", None)
    monkeypatch.setattr(cuda_backend, "_DEVICE_PROBLEMS", {})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index: {0: (9, 0), 1: (8, 6), 2: (10, 0)}[index])
    monkeypatch.setattr(cuda_backend, "_EXTENSION", _FakeExtension("2.11.0", 13000, "8.0;9.0a"))
    assert cuda_backend.device_problem(torch.device("cuda", 0)) is None
    assert "not for cuda:1's 8.6; rebuild it with TORCH_CUDA_ARCH_LIST=8.6" in cuda_backend.device_problem(
        torch.device("cuda", 1))
    monkeypatch.setattr(cuda_backend, "_DEVICE_PROBLEMS", {})
    monkeypatch.setattr(cuda_backend, "_EXTENSION", _FakeExtension("2.11.0", 13000, "8.0,9.0+PTX"))
    assert cuda_backend.device_problem(torch.device("cuda", 2)) is None  # PTX of 9.0 runs on 10.0
    assert cuda_backend.device_problem(torch.device("cuda", 1)) is not None


@pytest.mark.parametrize("version, broken", [("3.6.0", True), ("3.7.0", False), ("3.9.1+git4f2e", False)])
def test_an_interpreter_that_cannot_run_the_kernels_is_named(monkeypatch, version, broken):
    import numpy

    monkeypatch.setattr(backends.importlib.metadata, "version", lambda name: version)
    try:
        int(numpy.ones(1))
        numpy_rejects = False
    except TypeError:
        numpy_rejects = True
    problem = backends._interpreter_problem()
    assert (problem is not None) == (broken and numpy_rejects)
    if problem is not None:
        assert f"triton {version}'s interpreter" in problem and "fixed in triton 3.7" in problem


def test_backend_resolution_traces_under_torch_compile():
    sens, feat = torch.randn(3, 2), torch.randn(4, 5)
    first, second = torch.tensor([0, 1, 3]), torch.tensor([1, 0, 2])

    def f(sens, feat):
        reasons = [backends.unavailable_reason(name, torch.device("cuda", 0)) for name in backends.known_backends()]
        return ops.envsum(sens, feat, first, second, backend="auto") * len(reasons)

    compiled = torch.compile(f, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(sens, feat), f(sens, feat))
