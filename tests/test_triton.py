"""The Triton backend against the reference: every op, every derivative level, float64 and float32.

Without a GPU these run in Triton's interpreter on CPU tensors at small sizes (see conftest); on a
GPU they run on CUDA tensors at realistic sizes.
"""
from __future__ import annotations

import contextlib

import pytest
import torch
from conftest import assert_same_training_step, shuffled_pairs, training_step
from test_ops import CUTOFF, FLOAT_KEYS, envsum_inputs, interaction_fn, interaction_inputs

from hipnnts_kernels import backends, ops, reference
from hipnnts_kernels.ops.envsum import _envsum, _featsum, _sensesum
from hipnnts_kernels.ops.geometry import _chebyshev_radial, _sensitivity, _tensor_factors
from hipnnts_kernels.ops.interaction import _interaction, _interaction_backward, _interaction_double_backward
from hipnnts_kernels.pair_index import _CACHE
from hipnnts_kernels.synthetic import random_molecules

F64, F32 = torch.float64, torch.float32
ON_GPU = torch.cuda.is_available()
DEVICE = torch.device("cuda" if ON_GPU else "cpu")
#: Why the Triton kernels cannot run on DEVICE here (not installed, or an interpreter that cannot run them).
TRITON_PROBLEM = backends.unavailable_reason("triton", DEVICE)
pytestmark = pytest.mark.skipif(TRITON_PROBLEM is not None, reason=str(TRITON_PROBLEM))
# (atoms, random pairs, nu, features): interpreter-sized on CPU, closer to SPEC section 7 on a GPU
SIZE = (200, 3000, 20, 128) if ON_GPU else (6, 15, 3, 4)
MOLECULES = (24, 20) if ON_GPU else (3, 4)  # molecules, max atoms per molecule


def to_device(inputs: dict, dtype=None) -> dict:
    out = {}
    for k, v in inputs.items():
        if isinstance(v, torch.Tensor):
            v = v.to(DEVICE)
            if dtype is not None and v.is_floating_point():
                v = v.to(dtype)
        out[k] = v
    return out


def molecule_inputs(lmax: int, n_molecules: int, seed: int, min_atoms: int = 1) -> dict:
    """Real geometries: random molecules (single atoms included), their full pair list shuffled."""
    _, positions, mol_index = random_molecules(n_molecules, min_atoms, MOLECULES[1], seed=seed)
    pf, ps = shuffled_pairs(positions, mol_index, CUTOFF, seed=seed)
    x = interaction_inputs(lmax, n_atoms=positions.shape[0], nu=SIZE[2], features=SIZE[3], seed=seed)
    return dict(x, pair_coord=positions[ps] - positions[pf], pair_first=pf, pair_second=ps)


def case_inputs(case: str, lmax: int, seed: int = 0) -> dict:
    n_atoms, n_pairs, nu, features = SIZE
    if case == "random":  # unsorted, duplicated pairs, an atom without neighbours, a pair beyond r_c
        return interaction_inputs(lmax, n_atoms=n_atoms, n_pairs=n_pairs, nu=nu, features=features, seed=seed)
    if case == "empty":
        x = interaction_inputs(lmax, n_atoms=n_atoms, n_pairs=n_pairs, nu=nu, features=features, seed=seed)
        return dict(x, pair_coord=x["pair_coord"][:0], pair_first=x["pair_first"][:0],
                    pair_second=x["pair_second"][:0])
    if case == "one_molecule":
        return molecule_inputs(lmax, 1, seed, min_atoms=MOLECULES[1])
    return molecule_inputs(lmax, MOLECULES[0], seed)


def op_args(x: dict, lmax: int) -> tuple:
    return (x["Y"], x["pair_coord"], x["pair_first"], x["pair_second"], x["mu"], x["sigma"], x["vecscales"],
            x["quadscales"], CUTOFF, 1e-6, lmax)


def strided(t: torch.Tensor) -> torch.Tensor:
    """The same values in a non-contiguous layout."""
    return torch.stack([t, t], dim=-1)[..., 0]


def all_levels(x: dict, lmax: int, backend: str, seed: int = 0, layout=lambda t: t) -> list[torch.Tensor]:
    """Forward, backward and double backward (all cotangents; without v_Y; only v_Y and v_coord, as
    in force training) of one backend, flattened.
    ``layout`` is applied to the random grad_out and cotangents."""
    args = op_args(x, lmax)
    g = torch.Generator().manual_seed(seed)
    rand = lambda t: layout(torch.randn(t.shape, generator=g, dtype=F64).to(t))  # noqa: E731
    out = _interaction(*args, backend)
    grad_out = rand(out)
    cot = [None if x[k] is None else rand(x[k]) for k in FLOAT_KEYS]
    results = [out, *_interaction_backward(grad_out, *args, backend)]
    results += _interaction_double_backward(grad_out, *args[:8], *cot, *args[8:], backend)
    results += _interaction_double_backward(grad_out, *args[:8], None, *cot[1:], *args[8:], backend)
    # force training: only v_Y and v_coord are nonzero
    results += _interaction_double_backward(grad_out, *args[:8], *cot[:2], None, None, None, None, *args[8:], backend)
    return results


def assert_close_f64(got, want):
    for a, b in zip(got, want, strict=True):
        assert a.shape == b.shape
        if b.numel():
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10 * float(b.abs().max()) + 1e-300)


@pytest.mark.parametrize("case", ["random", "empty", "one_molecule", "many_molecules"])
@pytest.mark.parametrize("lmax", [0, 1, 2])
def test_interaction_levels_match_reference_float64(case, lmax):
    x = to_device(case_inputs(case, lmax, seed=lmax))
    assert_close_f64(all_levels(x, lmax, "triton"), all_levels(x, lmax, "reference"))


def test_launches_run_on_the_tensors_gpu(monkeypatch):
    """Triton launches on the current device: every launcher makes its tensors' GPU current first."""
    from hipnnts_kernels.triton_kernels import _common

    class OnSecondGpu:
        is_cuda, device = True, torch.device("cuda", 1)

    entered = []
    monkeypatch.setattr(_common.torch.cuda, "device", lambda device: entered.append(device) or contextlib.nullcontext())
    assert _common.launches_on("Y")(lambda self, Y, out: "ran")(None, OnSecondGpu(), out=None) == "ran"
    assert entered == [torch.device("cuda", 1)]
    assert isinstance(_common.on_device(torch.zeros(1)), contextlib.nullcontext)


@pytest.mark.parametrize("nu", [4, 20])
def test_interaction_across_feature_blocks(nu):
    """More features than one block (64): the receiver and sender kernels loop over the blocks and
    accumulate their per-pair reductions; the contraction kernels run one program per block. nu = 4
    is one power-of-two block of sensitivities, nu = 20 two (16 + 4)."""
    x = to_device(interaction_inputs(2, n_atoms=4, n_pairs=10, nu=nu, features=200, seed=5))
    assert_close_f64(all_levels(x, 2, "triton"), all_levels(x, 2, "reference"))


def test_interaction_int32_indices_and_noncontiguous_inputs():
    x = to_device(case_inputs("random", 2, seed=7))
    want = all_levels(x, 2, "reference")
    y = dict(x, pair_first=x["pair_first"].int(), pair_second=x["pair_second"].int(), Y=strided(x["Y"]),
             pair_coord=strided(x["pair_coord"]))
    assert not y["Y"].is_contiguous() and not y["pair_coord"].is_contiguous()
    assert_close_f64(all_levels(y, 2, "triton", layout=strided), want)


@pytest.mark.parametrize("lmax", [0, 2])
def test_interaction_float32_error_is_within_a_small_factor_of_the_reference(lmax):
    """flash-attention rule: |triton32 - ref64| <= 4 |ref32 - ref64| (+ 2 ulp of the largest value)."""
    x64 = to_device(case_inputs("many_molecules", lmax, seed=11))
    exact = all_levels(x64, lmax, "reference")
    x32 = to_device(x64, F32)
    fast, ref32 = all_levels(x32, lmax, "triton"), all_levels(x32, lmax, "reference")
    for a, b, e in zip(fast, ref32, exact, strict=True):
        if e.numel():
            err_fast, err_ref = (a.double() - e).abs().max(), (b.double() - e).abs().max()
            assert err_fast <= 4 * err_ref + 2 * torch.finfo(F32).eps * e.abs().max()


def test_interaction_gradcheck_and_gradgradcheck_run_the_triton_kernels(monkeypatch):
    calls = []
    for op in ("interaction", "interaction_backward", "interaction_double_backward"):
        kernel = backends.implementation(op, "triton")
        monkeypatch.setitem(backends._IMPLEMENTATIONS, (op, "triton"),
                            lambda *a, op=op, kernel=kernel: calls.append(op) or kernel(*a))
    x = to_device(interaction_inputs(2, n_atoms=4, n_pairs=8, nu=2, features=2, seed=3))
    fn, leaves = interaction_fn(x, 2)
    on_triton = lambda *xs: fn(*xs, backend="triton")  # noqa: E731
    assert torch.autograd.gradcheck(on_triton, leaves, fast_mode=True)
    assert torch.autograd.gradgradcheck(on_triton, leaves, fast_mode=True)
    assert set(calls) == {"interaction", "interaction_backward", "interaction_double_backward"}


def test_third_order_falls_back_to_the_reference_composite():
    x = to_device(interaction_inputs(2, n_atoms=4, n_pairs=8, nu=2, features=2, seed=4))
    fn, leaves = interaction_fn(x, 2)

    def three_orders(backend):
        out = fn(*leaves, backend=backend)
        g1 = torch.autograd.grad(out.square().sum(), leaves, create_graph=True)
        g2 = torch.autograd.grad(sum((g**3).sum() for g in g1), leaves, create_graph=True)
        return g1 + g2 + torch.autograd.grad(sum((g**2).sum() for g in g2), leaves)

    for a, b in zip(three_orders("triton"), three_orders("reference")):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10 * float(b.detach().abs().max()))


def test_one_sort_per_pair_list():
    x = to_device(interaction_inputs(2, n_atoms=5, n_pairs=10, nu=2, features=3, seed=5))
    fn, leaves = interaction_fn(x, 2)
    _CACHE.clear()
    out = fn(*leaves, backend="triton")
    grads = torch.autograd.grad(out.square().sum(), leaves, create_graph=True)
    torch.autograd.grad(sum(g.square().sum() for g in grads), leaves)
    assert _CACHE.misses == 1 and _CACHE.hits >= 2


# ---------------------------------------------------------------------------------------------
# envsum family and geometry
# ---------------------------------------------------------------------------------------------
FAMILY = {"envsum": ("sens", "feat"), "sensesum": ("env", "feat"), "featsum": ("env", "sens")}


@pytest.mark.parametrize("name", list(FAMILY))
def test_envsum_family_matches_reference(name):
    n_atoms, n_pairs, nu, features = SIZE
    x = to_device(envsum_inputs(seed=6, n_atoms=n_atoms + 1, n_pairs=n_pairs, nu=nu, features=features))
    a, b = (x[k] for k in FAMILY[name])
    op = getattr(ops, name)
    want = op(a, b, x["pf"], x["ps"], backend="reference")
    torch.testing.assert_close(op(a, b, x["pf"], x["ps"], backend="triton"), want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(op(a, b, x["pf"].int(), x["ps"].int(), backend="triton"), want, rtol=1e-12,
                               atol=1e-12)
    empty = x["pf"][:0]
    empty_args = {"envsum": (a[:0], b), "sensesum": (a, b), "featsum": (a, b[:0])}[name]
    got = op(*empty_args, empty, empty, backend="triton")
    assert got.shape == op(*empty_args, empty, empty, backend="reference").shape
    assert got.numel() == 0 or got.abs().max() == 0


@pytest.mark.parametrize("name", list(FAMILY))
def test_envsum_family_gradcheck_on_triton(name):
    x = to_device(envsum_inputs(seed=1, n_atoms=4, n_pairs=6, nu=2, features=3))
    a, b = (x[k].requires_grad_() for k in FAMILY[name])
    op = getattr(ops, name)
    fn = lambda a, b: op(a, b, x["pf"], x["ps"], backend="triton")  # noqa: E731
    assert torch.autograd.gradcheck(fn, (a, b), fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, (a, b), fast_mode=True)


def test_sensitivity_and_tensor_factors_match_reference():
    dist = torch.linspace(0.5, CUTOFF + 0.5, 130, dtype=F64, device=DEVICE)
    mu = torch.linspace(0.8, 3.0, 5, dtype=F64, device=DEVICE)
    sigma = torch.linspace(1.0, 4.0, 5, dtype=F64, device=DEVICE)
    got = ops.sensitivity(dist, mu, sigma, CUTOFF, backend="triton")
    torch.testing.assert_close(got, reference.sensitivity(dist, mu, sigma, CUTOFF), rtol=1e-13, atol=1e-15)
    assert got[dist > CUTOFF].abs().max() == 0
    unit = torch.nn.functional.normalize(torch.randn(130, 3, dtype=F64, device=DEVICE), dim=1)
    for lmax in (0, 1, 2):
        torch.testing.assert_close(ops.tensor_factors(unit, lmax, backend="triton"),
                                   reference.tensor_factors(unit, lmax), rtol=1e-14, atol=1e-15)
    assert ops.tensor_factors(unit[:0], 2, backend="triton").shape == (0, 9)
    d = dist[:3].clone().requires_grad_()
    (grad,) = torch.autograd.grad(ops.sensitivity(d, mu, sigma, CUTOFF, backend="triton").sum(), d)
    (want,) = torch.autograd.grad(reference.sensitivity(d, mu, sigma, CUTOFF).sum(), d)
    torch.testing.assert_close(grad, want)


@pytest.mark.parametrize("n_basis", [1, 2, 7])
def test_chebyshev_radial_matches_reference(n_basis):
    dist = torch.cat([torch.linspace(0.0, CUTOFF + 0.5, 130, dtype=F64), torch.tensor([CUTOFF, 1e4], dtype=F64)])
    dist = dist.to(DEVICE)
    got = ops.chebyshev_radial(dist, n_basis, CUTOFF, backend="triton")
    torch.testing.assert_close(got, reference.chebyshev_radial(dist, n_basis, CUTOFF), rtol=1e-14, atol=1e-15)
    assert torch.equal(got[dist >= CUTOFF], torch.zeros_like(got[dist >= CUTOFF]))
    assert ops.chebyshev_radial(dist[:0], n_basis, CUTOFF, backend="triton").shape == (0, n_basis)
    d = dist[5:9].clone().requires_grad_()
    fn = lambda r: ops.chebyshev_radial(r, n_basis, CUTOFF, backend="triton")  # noqa: E731
    assert torch.autograd.gradcheck(fn, (d,)) and torch.autograd.gradgradcheck(fn, (d,))


def test_opcheck_on_triton():
    x = to_device(interaction_inputs(2, n_atoms=4, n_pairs=6, nu=2, features=3, seed=8))
    for k in FLOAT_KEYS:
        x[k].requires_grad_()
    args = (*op_args(x, 2), "triton")
    torch.library.opcheck(_interaction, args)
    grad_out = torch.randn(4, 3, dtype=F64, device=DEVICE, requires_grad=True)
    torch.library.opcheck(_interaction_backward, (grad_out, *args))
    cotangents = [torch.randn_like(x[k]).requires_grad_() for k in FLOAT_KEYS]
    torch.library.opcheck(_interaction_double_backward, (grad_out, *args[:8], *cotangents, *args[8:]))
    e = to_device(envsum_inputs(seed=4, n_atoms=4, n_pairs=6, nu=2, features=3))
    for k in ("sens", "feat", "env"):
        e[k].requires_grad_()
    torch.library.opcheck(_envsum, (e["sens"], e["feat"], e["pf"], e["ps"], "triton"))
    torch.library.opcheck(_sensesum, (e["env"], e["feat"], e["pf"], e["ps"], "triton"))
    torch.library.opcheck(_featsum, (e["env"], e["sens"], e["pf"], e["ps"], "triton"))
    dist = (torch.rand(9, dtype=F64, device=DEVICE) + 0.5).requires_grad_()
    mu = (torch.rand(4, dtype=F64, device=DEVICE) + 1).requires_grad_()
    torch.library.opcheck(_sensitivity, (dist, mu, mu.detach().clone().requires_grad_(), CUTOFF, "triton"))
    unit = torch.nn.functional.normalize(torch.randn(9, 3, dtype=F64, device=DEVICE), dim=1).requires_grad_()
    torch.library.opcheck(_tensor_factors, (unit, 2, "triton"))
    torch.library.opcheck(_chebyshev_radial, (dist, 6, CUTOFF, "triton"))


def test_torch_compile_traces_the_triton_backend():
    x = to_device(interaction_inputs(2, n_atoms=4, n_pairs=8, nu=2, features=3, seed=9))
    leaves = {k: x[k].clone().requires_grad_() for k in ("Y", "pair_coord")}

    def f(Y, pair_coord):
        return ops.interaction(**dict(x, Y=Y, pair_coord=pair_coord), cutoff=CUTOFF, lmax=2,
                               backend="triton").square().sum()

    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    got, want = compiled(**leaves), f(**leaves)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(torch.autograd.grad(got, list(leaves.values())),
                               torch.autograd.grad(want, list(leaves.values())))


# ---------------------------------------------------------------------------------------------
# the model: one force-training step, triton against reference
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("lmax", [0, 2])
def test_training_step_matches_reference(lmax):
    features, nu = (SIZE[3], SIZE[2]) if ON_GPU else (4, 3)
    args = (DEVICE, lmax, *MOLECULES, features, nu)
    assert_same_training_step(training_step("triton", *args), training_step("reference", *args))
