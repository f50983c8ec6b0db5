"""The CUDA kernels (csrc/) against the reference, on a GPU and in the host emulator.

Every test runs twice: ``gpu`` (the built extension on CUDA tensors; skipped without a GPU or
without ``hipnnts_kernels._C``) and ``emulated`` (the same sources compiled for the host
emulator, on CPU tensors). The emulator runs each thread block as real threads meeting at
__syncthreads(), with shared memory poisoned with NaN before each block
(csrc/emulation/host_cuda.h): it checks the kernels' indexing, synchronisation structure and
arithmetic without a GPU, though nothing about speed or the GPU memory model.
"""
from __future__ import annotations

import ctypes
import importlib.util
import shutil

import pytest
import torch
from conftest import assert_same_training_step, training_step
from cuda_launch_limits import documented_widest
from test_ops import CUTOFF, FLOAT_KEYS, envsum_inputs, interaction_fn, interaction_inputs
from test_triton import all_levels, assert_close_f64, case_inputs, op_args, strided

from hipnnts_kernels import backends, ops, reference
from hipnnts_kernels.emulation import EmulatedLaunchers, build, hazards, racecheck, record_traffic, recorded_launches
from hipnnts_kernels.ops.interaction import _interaction, _interaction_backward, _interaction_double_backward
from hipnnts_kernels.segment_kernels import OPS, SegmentKernels

F64, F32 = torch.float64, torch.float32
HAVE_GPU = torch.cuda.is_available() and importlib.util.find_spec("hipnnts_kernels._C") is not None
HAVE_COMPILER = shutil.which("g++") is not None or shutil.which("c++") is not None


@pytest.fixture(scope="module")
def emulated_launchers(tmp_path_factory) -> EmulatedLaunchers:
    return EmulatedLaunchers(build(tmp_path_factory.mktemp("cuda_emulated")))


_GPU = pytest.mark.skipif(not HAVE_GPU, reason="needs a GPU and the built extension")
_EMULATOR = pytest.mark.skipif(not HAVE_COMPILER, reason="needs a host C++ compiler")


@pytest.fixture(scope="module", params=[
    pytest.param("gpu", marks=_GPU), pytest.param("gpu-molecules", marks=_GPU),
    pytest.param("emulated", marks=_EMULATOR), pytest.param("emulated-molecules", marks=_EMULATOR),
])
def target(request) -> tuple[SegmentKernels, torch.device]:
    """(the "cuda" backend's implementations, the device their tensors live on); the "-molecules"
    variants take featsum's molecule path wherever it applies."""
    molecule_max_atoms = 64 if request.param.endswith("molecules") else 0
    if request.param.startswith("gpu"):
        from hipnnts_kernels import cuda_backend

        return SegmentKernels(cuda_backend.KERNELS.launch, molecule_max_atoms), torch.device("cuda")
    launchers = request.getfixturevalue("emulated_launchers")
    return SegmentKernels(launchers, molecule_max_atoms), torch.device("cpu")


@pytest.fixture
def kernels(target) -> SegmentKernels:
    return target[0]


@pytest.fixture
def cuda_backend(target, monkeypatch) -> str:
    """A backend name for the public ops that runs these kernels on their device."""
    impl, device = target
    if device.type == "cuda" and impl.molecule_max_atoms == 0:
        return "cuda"
    monkeypatch.setitem(backends._AVAILABILITY, "cuda-under-test", lambda device: None)
    for op in OPS:
        monkeypatch.setitem(backends._IMPLEMENTATIONS, (op, "cuda-under-test"), getattr(impl, op))
    return "cuda-under-test"


def on(target, x: dict, dtype=None) -> dict:
    """The tensors of ``x`` on the target's device (floating ones cast to ``dtype`` if given)."""
    device = target[1]
    out = {}
    for k, v in x.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device=device, dtype=dtype if dtype is not None and v.is_floating_point() else v.dtype)
        out[k] = v
    return out


@pytest.mark.parametrize("case", ["random", "empty", "one_molecule", "many_molecules"])
@pytest.mark.parametrize("lmax", [0, 1, 2])
def test_interaction_levels_match_reference(target, cuda_backend, case, lmax):
    """Forward, backward and double backward (with and without v_Y), float64."""
    x = on(target, case_inputs(case, lmax, seed=lmax))
    assert_close_f64(all_levels(x, lmax, cuda_backend), all_levels(x, lmax, "reference"))


def test_int32_indices_wide_layers_and_strided_inputs(target, cuda_backend):
    x = on(target, interaction_inputs(2, n_atoms=5, n_pairs=12, nu=37, features=70, seed=3))  # nu > 32, F % 32 != 0
    want = all_levels(x, 2, "reference")
    x = dict(x, pair_first=x["pair_first"].int(), pair_second=x["pair_second"].int(), Y=strided(x["Y"]),
             pair_coord=strided(x["pair_coord"]))
    assert_close_f64(all_levels(x, 2, cuda_backend, layout=strided), want)


@pytest.mark.parametrize("lmax", [0, 2])
def test_float32_error_is_within_a_small_factor_of_the_reference(target, cuda_backend, lmax):
    x64 = on(target, case_inputs("many_molecules", lmax, seed=11))
    exact = all_levels(x64, lmax, "reference")
    x32 = on(target, x64, F32)
    for a, b, e in zip(all_levels(x32, lmax, cuda_backend), all_levels(x32, lmax, "reference"), exact):
        if e.numel():
            err_fast, err_ref = (a.double() - e).abs().max(), (b.double() - e).abs().max()
            assert err_fast <= 4 * err_ref + 2 * torch.finfo(F32).eps * e.abs().max()


def test_results_are_bitwise_reproducible(target, cuda_backend):
    x = on(target, case_inputs("many_molecules", 2, seed=5))
    first, second = all_levels(x, 2, cuda_backend), all_levels(x, 2, cuda_backend)
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_gradcheck_through_the_op(target, cuda_backend):
    """gradcheck and gradgradcheck (fast mode) through the public op on the kernels."""
    x = on(target, interaction_inputs(2, n_atoms=4, n_pairs=8, nu=2, features=3, seed=6))
    fn, leaves = interaction_fn(x, 2)
    on_kernels = lambda *xs: fn(*xs, backend=cuda_backend)  # noqa: E731
    assert torch.autograd.gradcheck(on_kernels, leaves, fast_mode=True)
    assert torch.autograd.gradgradcheck(on_kernels, leaves, fast_mode=True)


FAMILY = {"envsum": ("sens", "feat"), "sensesum": ("env", "feat"), "featsum": ("env", "sens")}


@pytest.mark.parametrize("name", list(FAMILY))
def test_envsum_family_matches_reference(target, kernels, cuda_backend, name):
    x = on(target, envsum_inputs(seed=6, n_atoms=7, n_pairs=30, nu=20, features=40))
    a, b = (x[k] for k in FAMILY[name])
    want = getattr(reference, name)(a, b, x["pf"], x["ps"])
    torch.testing.assert_close(getattr(kernels, name)(a, b, x["pf"], x["ps"]), want, rtol=1e-12, atol=1e-12)
    small = on(target, envsum_inputs(seed=1, n_atoms=4, n_pairs=6, nu=2, features=3))
    a, b = (small[k].requires_grad_() for k in FAMILY[name])
    op = getattr(ops, name)
    fn = lambda a, b: op(a, b, small["pf"], small["ps"], backend=cuda_backend)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (a, b), fast_mode=True)


def test_split_kernels_tile_features_and_chunk_pairs(target, cuda_backend):
    """Every level across several feature tiles, a partial last tile, and atoms with more pairs
    than one shared-memory chunk as senders and as receivers."""
    x = on(target, interaction_inputs(2, n_atoms=4, n_pairs=150, nu=5, features=300, seed=4))
    assert int(torch.bincount(x["pair_first"]).max()) > 32 and int(torch.bincount(x["pair_second"]).max()) > 32
    assert_close_f64(all_levels(x, 2, cuda_backend), all_levels(x, 2, "reference"))


def test_every_level_launches_at_any_width(target, kernels):
    x = on(target, interaction_inputs(1, n_atoms=3, n_pairs=4, nu=2, features=1100, seed=0))
    got = [kernels.interaction(*op_args(x, 1))]
    want = [reference.interaction(*op_args(x, 1))]
    g = torch.Generator().manual_seed(0)
    grad_out = torch.randn(got[0].shape, generator=g, dtype=F64)
    cotangents = [None if x[k] is None else torch.randn(x[k].shape, generator=g, dtype=F64) for k in FLOAT_KEYS]
    for impl, out in ((kernels, got), (reference, want)):
        out += impl.interaction_backward(grad_out, *op_args(x, 1))
        out += impl.interaction_double_backward(grad_out, *op_args(x, 1)[:8], *cotangents, CUTOFF, 1e-6, 1)
    assert_close_f64(got, want)


def test_too_many_features_is_a_clear_error(target, kernels):
    x = on(target, envsum_inputs(seed=0, n_atoms=3, n_pairs=4, nu=1, features=1025))
    with pytest.raises(RuntimeError, match=r"featsum(_molecules)? \(float64, lmax 0\) runs one thread per feature.* at "
                                           r"most 1024.*1025 features is too wide"):
        kernels.featsum(x["env"], x["sens"], x["pf"], x["ps"])


@pytest.mark.parametrize("dtype", [F32, F64])
def test_the_documented_widths_hold_on_this_gpu(target, kernels, dtype):
    """featsum launches at its widest documented F and refuses one feature more with the limit in
    the message; the interaction's double backward launches beyond one block's width
    (docs/kernels.md, from the compiled registers and shared memory)."""
    impl, device = target
    if device.type != "cuda" or torch.cuda.get_device_capability(device) not in ((9, 0), (8, 0)):
        pytest.skip("the documented widths are for sm_90 and sm_80 GPUs")
    sm = 90 if torch.cuda.get_device_capability(device) == (9, 0) else 80
    kernel = "featsum" + ("_molecule" if impl.molecule_max_atoms else "")
    widest = documented_widest(kernel, 0, "double" if dtype == F64 else "float", sm)
    for features in (widest, widest + 1):
        x = on(target, envsum_inputs(seed=2, n_atoms=4, n_pairs=6, nu=20, features=features), dtype)
        if features == widest:
            kernels.featsum(x["env"], x["sens"], x["pf"], x["ps"])
            torch.cuda.synchronize(device)
        else:
            with pytest.raises(RuntimeError, match=f"{kernel}s? .*{features} features is too wide"):
                kernels.featsum(x["env"], x["sens"], x["pf"], x["ps"])
    assert documented_widest("receiver_double_backward", 2, "double", sm) > 1024
    x = on(target, interaction_inputs(2, n_atoms=4, n_pairs=6, nu=20, features=1100, seed=2), dtype)
    g = torch.Generator().manual_seed(0)
    grad_out, *cotangents = (torch.randn(t.shape, generator=g, dtype=F64).to(t)
                             for t in (x["Y"][:, 0], *(x[k] for k in FLOAT_KEYS)))
    kernels.interaction_double_backward(grad_out, *op_args(x, 2)[:8], *cotangents, CUTOFF, 1e-6, 2)
    torch.cuda.synchronize(device)


@_EMULATOR
@pytest.mark.parametrize("molecule_max_atoms", [0, 64], ids=["split", "molecules"])
@pytest.mark.parametrize("case", ["random", "many_molecules", "chunks_and_tiles"])
def test_emulated_kernels_have_no_thread_races(emulated_launchers, case, molecule_max_atoms):
    """The hazard check (csrc/emulation/racecheck.h) over every level of the interaction and the
    envsum family, on the split kernels and the molecule kernels: no two threads touch an element
    without a barrier between them, and no two blocks write one element (or one reads what another
    writes)."""
    if case == "chunks_and_tiles":
        x = interaction_inputs(2, n_atoms=4, n_pairs=70, nu=3, features=140, seed=9)
    else:
        x = case_inputs(case, 2, seed=3)
    kernels, lib = SegmentKernels(emulated_launchers, molecule_max_atoms), emulated_launchers.lib
    g = torch.Generator().manual_seed(0)
    grad_out = torch.randn(x["Y"].shape[0], x["Y"].shape[2], generator=g, dtype=F64)
    cotangents = [torch.randn(x[k].shape, generator=g, dtype=F64) for k in FLOAT_KEYS]
    e = envsum_inputs(seed=1, n_atoms=6, n_pairs=40, nu=3, features=40)
    racecheck(lib, True)
    try:
        kernels.interaction(*op_args(x, 2))
        kernels.interaction_backward(grad_out, *op_args(x, 2))
        kernels.interaction_double_backward(grad_out, *op_args(x, 2)[:8], *cotangents, CUTOFF, 1e-6, 2)
        kernels.envsum(e["sens"], e["feat"], e["pf"], e["ps"])
        kernels.sensesum(e["env"], e["feat"], e["pf"], e["ps"])
        kernels.featsum(e["env"], e["sens"], e["pf"], e["ps"])
        assert hazards(lib) == (0, "")
    finally:
        racecheck(lib, False)


def _spec9_levels(impl, x: dict, shape) -> list[torch.Tensor]:
    """Forward, backward and the double backward as force training calls it (v_Y and v_coord)."""
    args = (x["Y"], x["coord"], x["first"], x["second"], x["mu"], x["sigma"], x["vec"], x["quad"])
    constants = (shape.cutoff, 1e-6, 2)
    out = [impl.interaction(*args, *constants)]
    out += impl.interaction_backward(x["grad_out"], *args, *constants)
    out += impl.interaction_double_backward(x["grad_out"], *args, x["v_Y"], x["v_coord"], None, None, None, None,
                                            *constants)
    return out


@_EMULATOR
def test_emulated_every_level_at_the_spec9_batch(emulated_launchers):
    """The SPEC section 9 batch (256 molecules x 20 atoms, 77,560 pairs, nu = 20, F = 128, lmax 2) in
    float64 on the split kernels: every level against the reference."""
    from hipnnts_kernels.benchmarks.traffic import SHAPES, problem

    shape = SHAPES["spec9"]
    x = problem(shape, 2, F64)
    assert x["pairs"] == 77560
    assert_close_f64(_spec9_levels(SegmentKernels(emulated_launchers), x, shape), _spec9_levels(reference, x, shape))


@_EMULATOR
def test_emulated_molecule_kernels_at_the_spec9_shape(emulated_launchers):
    """8 of the SPEC section 9 batch's molecules (20 atoms, nu = 20, F = 128, lmax 2; the whole batch
    takes the emulator about 5 minutes on this path, 8 molecules about 15 s) in float32 on the
    molecule kernels (in float64 the double backward exceeds an H100/H200 block, which the emulator
    applies, and the split kernels run): every level, the launches those of the molecule path,
    within the float32 rule of the float64 reference."""
    import dataclasses

    from hipnnts_kernels.benchmarks.traffic import SHAPES, problem

    shape = dataclasses.replace(SHAPES["spec9"], molecules=8)
    x64 = problem(shape, 2, F64)
    x32 = {k: v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in x64.items()}
    record_traffic(emulated_launchers.lib, True)
    try:
        got = _spec9_levels(SegmentKernels(emulated_launchers, 64), x32, shape)
        kernels = {name.split()[0] for name, _ in recorded_launches(emulated_launchers.lib)}
    finally:
        record_traffic(emulated_launchers.lib, False)
    assert kernels == {"molecule_forward", "molecule_backward", "molecule_double_backward", "tile_sum"}
    exact, ref32 = _spec9_levels(reference, x64, shape), _spec9_levels(reference, x32, shape)
    for a, b, e in zip(got, ref32, exact):
        if e.numel():
            err_fast, err_ref = (a.double() - e).abs().max(), (b.double() - e).abs().max()
            assert err_fast <= 4 * err_ref + 2 * torch.finfo(F32).eps * e.abs().max()


@_EMULATOR
def test_molecule_kernels_narrow_their_tiles_or_fall_back_where_a_molecule_does_not_fit(emulated_launchers):
    """With less shared memory than a block needs at tiles of 32 features, the molecule kernels run
    at 16 (more tiles: more blocks); with less than that, the split kernels run; the results stay
    those of the reference, without hazards."""
    import dataclasses

    from cuda_launch_limits import launch_block

    from hipnnts_kernels.benchmarks.traffic import SHAPES, problem
    from hipnnts_kernels.pair_index import pair_index

    shape = dataclasses.replace(SHAPES["tiny"], molecules=2, atoms=12, features=40)  # 12 atoms, all paired
    x = problem(shape, 2, F64)
    _, atoms, pairs = pair_index(x["first"], x["second"], x["atoms"]).molecules(x["first"], x["second"])
    lib = emulated_launchers.lib
    lib.hipnnts_emu_launch_block.restype = lib.hipnnts_emu_shared_limit.restype = ctypes.c_size_t
    lib.hipnnts_emu_shared_limit.argtypes = [ctypes.c_size_t]
    needs = {w: launch_block(lib, "molecule_double_backward", "double", 2, shape.nu, 40, atoms, pairs, w)[1]
             for w in (32, 16)}
    want = _spec9_levels(reference, x, shape)
    blocks_per_molecule = {}
    for limit in (needs[32], needs[32] - 1, needs[16] - 1):
        default = lib.hipnnts_emu_shared_limit(limit)
        record_traffic(lib, True)
        racecheck(lib, True)
        try:
            got = _spec9_levels(SegmentKernels(emulated_launchers, 64), x, shape)
            launches = recorded_launches(lib)
            assert hazards(lib) == (0, "")
        finally:
            racecheck(lib, False)
            record_traffic(lib, False)
            lib.hipnnts_emu_shared_limit(default)
        assert_close_f64(got, want)
        blocks_per_molecule[limit] = [stats["blocks"] // shape.molecules for name, stats in launches
                                      if name.startswith("molecule_double_backward")]
    assert blocks_per_molecule == {needs[32]: [2], needs[32] - 1: [3], needs[16] - 1: []}


def test_cutoff_is_respected(target, cuda_backend):
    x = on(target, interaction_inputs(1, seed=8))  # its pair 0 lies beyond the cutoff
    assert x["pair_coord"][0].norm() > CUTOFF
    assert_close_f64(all_levels(x, 1, cuda_backend), all_levels(x, 1, "reference"))


@pytest.mark.parametrize("lmax", [0, 2])
def test_training_step_matches_reference(target, cuda_backend, lmax):
    """A HipnnTS force-training step (forward, backward, double backward) on the kernels."""
    device = target[1]
    size = (24, 20, 32, 20) if device.type == "cuda" else (3, 4, 4, 3)
    want = training_step("reference", device, lmax, *size)
    assert_same_training_step(training_step(cuda_backend, device, lmax, *size), want)


def test_opcheck_and_torch_compile(target, cuda_backend):
    """The public ops on these kernels pass opcheck and trace under torch.compile (fullgraph)."""
    x = on(target, interaction_inputs(2, n_atoms=4, n_pairs=6, nu=2, features=3, seed=8))
    for k in FLOAT_KEYS:
        x[k].requires_grad_()
    args = (*op_args(x, 2), cuda_backend)
    torch.library.opcheck(_interaction, args)
    grad_out = torch.randn(4, 3, dtype=F64, device=target[1], requires_grad=True)
    torch.library.opcheck(_interaction_backward, (grad_out, *args))
    cotangents = [torch.randn_like(x[k]).requires_grad_() for k in FLOAT_KEYS]
    torch.library.opcheck(_interaction_double_backward, (grad_out, *args[:8], *cotangents, *args[8:]))

    leaves = {k: x[k].detach().clone().requires_grad_() for k in ("Y", "pair_coord")}

    def f(Y, pair_coord):
        return ops.interaction(**dict(x, Y=Y, pair_coord=pair_coord), cutoff=CUTOFF, lmax=2,
                               backend=cuda_backend).square().sum()

    got, want = torch.compile(f, backend="aot_eager", fullgraph=True)(**leaves), f(**leaves)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(torch.autograd.grad(got, list(leaves.values())),
                               torch.autograd.grad(want, list(leaves.values())))
