"""The ``cpu`` backend (C++ kernels, csrc/cpu/) against the reference.

The kernels are built by ``pip install -e .``; a checkout without them fails here (they are part of
the package on any machine with a C++ compiler) unless ``HIPNNTS_NO_CPU_KERNELS=1`` says they were
left out on purpose.
"""
from __future__ import annotations

import os
import sys

import pytest
import torch
from conftest import assert_same_training_step, training_step
from test_ops import CUTOFF, FLOAT_KEYS, envsum_inputs, interaction_fn, interaction_inputs
from test_triton import all_levels, assert_close_f64, case_inputs, molecule_inputs, op_args, strided

from hipnnts_kernels import backends, cpu_backend, ops, reference, set_value_checks
from hipnnts_kernels.ops.interaction import _interaction, _interaction_backward, _interaction_double_backward

F64, F32 = torch.float64, torch.float32

if cpu_backend.LIBRARY_PROBLEM is not None:
    if os.environ.get("HIPNNTS_NO_CPU_KERNELS") == "1":
        pytest.skip("HIPNNTS_NO_CPU_KERNELS=1: the CPU kernels are not built", allow_module_level=True)
    raise RuntimeError(f"the cpu backend cannot run: {cpu_backend.LIBRARY_PROBLEM}")


@pytest.fixture(params=cpu_backend.supported_instruction_sets())
def isa(request):
    """Each copy of the kernels this CPU runs (the widest is the one in use otherwise)."""
    cpu_backend.use_instruction_set(request.param)
    yield request.param
    cpu_backend.use_instruction_set(cpu_backend.supported_instruction_sets()[0])


@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def threads(request):
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


def test_auto_picks_the_cpu_kernels_on_cpu_tensors():
    cpu = torch.device("cpu")
    for op in ("interaction", "interaction_backward", "interaction_double_backward", "envsum", "sensesum", "featsum"):
        assert backends.resolve(op, "auto", cpu) == "cpu"
    assert backends.resolve("sensitivity", "auto", cpu) == "reference"  # elementwise: no C++ kernel
    assert cpu_backend.instruction_set() == cpu_backend.supported_instruction_sets()[0]
    assert cpu_backend.supported_instruction_sets()[-1] == "default"
    with pytest.raises(ValueError, match="instruction set 'sse9' is not among those this CPU runs"):
        cpu_backend.use_instruction_set("sse9")
    if "parallel backend: OpenMP" in torch.__config__.parallel_info() and sys.platform == "linux":
        assert cpu_backend.THREADS.startswith("torch's OpenMP team")
    assert "CPU tensors" in cpu_backend.device_problem(torch.device("meta"))


@pytest.mark.parametrize("case", ["random", "empty", "one_molecule", "many_molecules"])
@pytest.mark.parametrize("lmax", [0, 1, 2])
def test_interaction_levels_match_reference(case, lmax, threads, isa):
    """Forward, backward and double backward (with and without v_Y), float64; "random" has unsorted
    and duplicated pairs, an atom without neighbours and a pair beyond the cutoff."""
    x = case_inputs(case, lmax, seed=lmax)
    assert_close_f64(all_levels(x, lmax, "cpu"), all_levels(x, lmax, "reference"))


@pytest.mark.parametrize("nu, features", [(37, 70), (3, 1), (8, 259)])
def test_int32_indices_odd_widths_and_strided_inputs(nu, features, isa):
    """Widths that are not multiples of the vector width, nu not a multiple of 4, int32 indices."""
    x = interaction_inputs(2, n_atoms=5, n_pairs=12, nu=nu, features=features, seed=3)
    want = all_levels(x, 2, "reference")
    x = dict(x, pair_first=x["pair_first"].int(), pair_second=x["pair_second"].int(), Y=strided(x["Y"]),
             pair_coord=strided(x["pair_coord"]))
    assert_close_f64(all_levels(x, 2, "cpu", layout=strided), want)


def test_atoms_with_many_pairs_and_pairs_only_among_some_atoms():
    x = interaction_inputs(2, n_atoms=9, n_pairs=300, nu=5, features=40, seed=4)
    x = dict(x, pair_first=x["pair_first"] % 3, pair_second=x["pair_second"] % 2 + 5)  # atoms 3, 4, 7, 8: none
    assert_close_f64(all_levels(x, 2, "cpu"), all_levels(x, 2, "reference"))


@pytest.mark.parametrize("lmax", [0, 2])
def test_float32_error_is_within_a_small_factor_of_the_reference(lmax, isa):
    x64 = case_inputs("many_molecules", lmax, seed=11)
    exact = all_levels(x64, lmax, "reference")
    x32 = {k: v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in x64.items()}
    for a, b, e in zip(all_levels(x32, lmax, "cpu"), all_levels(x32, lmax, "reference"), exact):
        if e.numel():
            err_fast, err_ref = (a.double() - e).abs().max(), (b.double() - e).abs().max()
            assert err_fast <= 4 * err_ref + 2 * torch.finfo(F32).eps * e.abs().max()


def test_results_are_bitwise_the_same_across_runs_thread_counts_and_thread_pools():
    """Large enough that the kernels split the work over threads: on torch's OpenMP team where torch
    runs on OpenMP, and on threads of their own."""
    x = interaction_inputs(2, n_atoms=300, n_pairs=6000, nu=8, features=64, seed=5)
    before = torch.get_num_threads()
    results = []
    try:
        for own_threads in (False, True):
            if own_threads:
                cpu_backend._LIBRARY.hipnnts_cpu_use_openmp(None, None, None)
            for n in (1, 2, 2, 3):
                torch.set_num_threads(n)
                results.append(all_levels(x, 2, "cpu"))
    finally:
        torch.set_num_threads(before)
        cpu_backend._share_threads(cpu_backend._LIBRARY)
    for other in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], other))


@pytest.mark.parametrize("lmax", [0, 2])
def test_molecule_tiles_give_the_same_bits_as_whole_passes(lmax):
    """Six molecules: one thread runs each molecule's passes as a tile, two threads (fewer than four
    tiles each) run every pass over all atoms; each element is computed the same way either way."""
    x = molecule_inputs(lmax, 6, seed=3, min_atoms=3)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        tiled = all_levels(x, lmax, "cpu")
        torch.set_num_threads(2)
        whole = all_levels(x, lmax, "cpu")
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(a, b) for a, b in zip(tiled, whole))
    assert_close_f64(tiled, all_levels(x, lmax, "reference"))


def test_gradcheck_through_the_op():
    x = interaction_inputs(2, n_atoms=4, n_pairs=8, nu=2, features=3, seed=6)
    fn, leaves = interaction_fn(x, 2)
    on_kernels = lambda *xs: fn(*xs, backend="cpu")  # noqa: E731
    assert torch.autograd.gradcheck(on_kernels, leaves)
    assert torch.autograd.gradgradcheck(on_kernels, leaves)


FAMILY = {"envsum": ("sens", "feat"), "sensesum": ("env", "feat"), "featsum": ("env", "sens")}


@pytest.mark.parametrize("name", list(FAMILY))
def test_envsum_family_matches_reference(name, threads, isa):
    for size in (dict(n_atoms=7, n_pairs=30, nu=20, features=40), dict(n_atoms=300, n_pairs=5000, nu=7, features=67)):
        x = envsum_inputs(seed=6, **size)
        a, b = (x[k] for k in FAMILY[name])
        want = getattr(reference, name)(a, b, x["pf"], x["ps"])
        got = getattr(ops, name)(a, b, x["pf"].int(), x["ps"].int(), backend="cpu")
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    small = envsum_inputs(seed=1, n_atoms=4, n_pairs=6, nu=2, features=3)
    a, b = (small[k].requires_grad_() for k in FAMILY[name])
    fn = lambda a, b: getattr(ops, name)(a, b, small["pf"], small["ps"], backend="cpu")  # noqa: E731
    assert torch.autograd.gradcheck(fn, (a, b))
    assert torch.autograd.gradgradcheck(fn, (a, b))
    empty = envsum_inputs(seed=1, n_atoms=4, n_pairs=0, nu=2, features=3)
    a, b = (empty[k] for k in FAMILY[name])
    torch.testing.assert_close(getattr(ops, name)(a, b, empty["pf"], empty["ps"], backend="cpu"),
                               getattr(reference, name)(a, b, empty["pf"], empty["ps"]))


def test_cutoff_is_respected():
    x = interaction_inputs(1, seed=8)  # its pair 0 lies beyond the cutoff
    assert x["pair_coord"][0].norm() > CUTOFF
    assert_close_f64(all_levels(x, 1, "cpu"), all_levels(x, 1, "reference"))


@pytest.mark.parametrize("lmax", [0, 2])
def test_training_step_matches_reference(lmax):
    """A HipnnTS force-training step (forward, backward, double backward) on the kernels."""
    cpu, size = torch.device("cpu"), (3, 4, 4, 3)
    assert_same_training_step(training_step("cpu", cpu, lmax, *size), training_step("reference", cpu, lmax, *size))


def test_opcheck_and_torch_compile():
    """The public ops on the cpu backend pass opcheck and trace under torch.compile (fullgraph)."""
    x = interaction_inputs(2, n_atoms=4, n_pairs=6, nu=2, features=3, seed=8)
    for k in FLOAT_KEYS:
        x[k].requires_grad_()
    args = (*op_args(x, 2), "cpu")
    torch.library.opcheck(_interaction, args)
    grad_out = torch.randn(4, 3, dtype=F64, requires_grad=True)
    torch.library.opcheck(_interaction_backward, (grad_out, *args))
    cotangents = [torch.randn_like(x[k]).requires_grad_() for k in FLOAT_KEYS]
    torch.library.opcheck(_interaction_double_backward, (grad_out, *args[:8], *cotangents, *args[8:]))

    leaves = {k: x[k].detach().clone().requires_grad_() for k in ("Y", "pair_coord")}

    def f(Y, pair_coord):
        return ops.interaction(**dict(x, Y=Y, pair_coord=pair_coord), cutoff=CUTOFF, lmax=2,
                               backend="cpu").square().sum()

    got, want = torch.compile(f, backend="aot_eager", fullgraph=True)(**leaves), f(**leaves)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(torch.autograd.grad(got, list(leaves.values())),
                               torch.autograd.grad(want, list(leaves.values())))


def test_a_missing_library_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(cpu_backend, "LIBRARY_PROBLEM", "the CPU kernels are not built (test)")
    monkeypatch.setattr(backends, "_WARNED", set())
    x = interaction_inputs(0, seed=1)
    with pytest.raises(RuntimeError, match=r"backend 'cpu' cannot run 'interaction' on cpu: the CPU kernels are not"):
        ops.interaction(**x, cutoff=CUTOFF, lmax=0, backend="cpu")
    with pytest.warns(RuntimeWarning, match=r"cpu: the CPU kernels are not built \(test\)\); falling back"):
        assert backends.resolve("interaction", "auto", torch.device("cpu")) == "reference"


@pytest.mark.parametrize("key", ["pair_first", "pair_second"])
def test_indices_out_of_range_are_an_error_with_value_checks_off(key):
    """The ops' value checks can be switched off for speed; the kernels still refuse bad indices
    (a pair left out of every segment would be silently dropped, a bad atom read out of bounds)."""
    x = interaction_inputs(1, seed=1)
    n_atoms = x["Y"].shape[0]
    bad = x[key].clone()
    bad[0] = n_atoms
    set_value_checks(False)
    try:
        with pytest.raises(RuntimeError, match=f"{key} holds atom indices outside"):
            ops.interaction(**dict(x, **{key: bad}), cutoff=CUTOFF, lmax=1, backend="cpu")
        e = envsum_inputs(seed=2, n_atoms=5, n_pairs=9, nu=2, features=3)
        bad = e["pf" if key == "pair_first" else "ps"].clone()
        bad[0] = -1
        pairs = (bad, e["ps"]) if key == "pair_first" else (e["pf"], bad)
        for name in FAMILY:
            a, b = (e[k] for k in FAMILY[name])
            with pytest.raises(RuntimeError, match=f"{key} holds atom indices outside"):
                getattr(ops, name)(a, b, *pairs, backend="cpu")
    finally:
        set_value_checks(True)
