"""ETN (hipnnts_kernels.etn): each core's O(3) equivariance on its own, the model's invariance and
force equivariance, finite-difference forces, derivatives to second order, pair-list edge cases,
backends against the reference, parameter growth in the degree, and bad arguments."""
from __future__ import annotations

import math

import pytest
import torch
from conftest import assert_forces_match_central_differences, shuffled_pairs

from hipnnts_kernels import backends, pairs_within_cutoff
from hipnnts_kernels.etn import ETN, EquivariantCore, quad_matrix, sym_traceless
from hipnnts_kernels.synthetic import random_molecules, toy_conformers
from hipnnts_kernels.training import TrainConfig, Trainer, load_model, read_checkpoint

F64 = torch.float64
CUTOFF = 3.0
#: Why Triton cannot run on the CPU tensors of these tests (None: its interpreter can).
TRITON_PROBLEM = backends.unavailable_reason("triton", torch.device("cpu"))
needs_triton = pytest.mark.skipif(TRITON_PROBLEM is not None, reason=str(TRITON_PROBLEM))


def small_model(**kwargs) -> ETN:
    torch.manual_seed(0)
    model = ETN(**{**dict(n_radial=5, n_moments=4, bond_dim=3, degree=3, cutoff=CUTOFF), **kwargs}).double()
    with torch.no_grad():
        model.self_energies.copy_(torch.tensor([-0.5, -37.8, -54.6, -75.0], dtype=F64))
    return model


def molecules(seed: int, n_molecules: int = 3, min_atoms: int = 2, max_atoms: int = 7):
    return random_molecules(n_molecules, min_atoms, max_atoms, seed=seed)


def run(model, species, positions, mol_index, n_molecules=None, **kwargs):
    pf, ps = pairs_within_cutoff(positions, mol_index, CUTOFF)
    return model(species, positions, mol_index, pf, ps, n_molecules=n_molecules, **kwargs)


def orthogonal(seed: int, reflect: bool) -> torch.Tensor:
    """A random rotation, or a random rotation composed with a reflection."""
    q, r = torch.linalg.qr(torch.randn(3, 3, dtype=F64, generator=torch.Generator().manual_seed(seed)))
    q = q * torch.sign(torch.diagonal(r))
    q = q if torch.det(q) > 0 else -q
    return -q if reflect else q


def rotate(q: torch.Tensor, scalars: torch.Tensor, vectors: torch.Tensor, matrices: torch.Tensor):
    """Act with q on (N, X) scalars, (N, 3, X) vectors and (N, 3, 3, X) rank-2 tensors."""
    return scalars, torch.einsum("xy,nyc->nxc", q, vectors), torch.einsum("xa,nabc,yb->nxyc", q, matrices, q)


def random_tensors(n: int, channels: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    quad = quad_matrix(torch.randn(n, 5, channels, dtype=F64, generator=g))
    return (torch.randn(n, channels, dtype=F64, generator=g), torch.randn(n, 3, channels, dtype=F64, generator=g),
            quad)


@pytest.mark.parametrize("reflect", [False, True])
def test_core_is_equivariant(reflect):
    torch.manual_seed(0)
    core = EquivariantCore(bond_dim=3, n_moments=4).double()
    state, moments = random_tensors(5, 3, seed=1), random_tensors(5, 4, seed=2)
    q = orthogonal(3, reflect)
    got = core(rotate(q, *state), rotate(q, *moments))
    want = rotate(q, *core(state, moments))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    for part, value in zip(core(state, moments), state):  # the core did change every rank
        assert not torch.allclose(part, value)
    t = core(state, moments)[2]  # rank-2 outputs stay symmetric and traceless
    torch.testing.assert_close(t, t.transpose(1, 2))
    torch.testing.assert_close(t[:, 0, 0] + t[:, 1, 1] + t[:, 2, 2], torch.zeros(5, 3, dtype=F64),
                               rtol=0, atol=1e-13)


def einsum_core(core: EquivariantCore, state, moments):
    """The core's bilinear paths written out plainly: product tensors, then the weights."""
    s, v, t = state
    a0, a1, a2 = moments
    ws = core.scalar
    scalar = s + (torch.einsum("nb,nm,bmo->no", s, a0, ws[0]) + torch.einsum("nxb,nxm,bmo->no", v, a1, ws[1])
                  + torch.einsum("nxyb,nxym,bmo->no", t, a2, ws[2]))
    if core.vector is None:
        return scalar, v, t
    wv, wt = core.vector, core.rank2
    vector = (torch.einsum("nxb,nm,bmo->nxo", v, a0, wv[0]) + torch.einsum("nb,nxm,bmo->nxo", s, a1, wv[1])
              + torch.einsum("nxyb,nym,bmo->nxo", t, a1, wv[2]) + torch.einsum("nxym,nyb,bmo->nxo", a2, v, wv[3]))
    rank2 = (torch.einsum("nb,nxym,bmo->nxyo", s, a2, wt[0]) + torch.einsum("nxyb,nm,bmo->nxyo", t, a0, wt[1])
             + torch.einsum("nxb,nym,bmo->nxyo", v, a1, wt[2]) + torch.einsum("nxzb,nzym,bmo->nxyo", t, a2, wt[3]))
    return scalar, v + vector, t + sym_traceless(rank2)


@pytest.mark.parametrize("scalar_only", [False, True])
def test_core_matches_its_einsum_form(scalar_only):
    """The core contracts each path in its cheapest order; the result is the plainly written product."""
    torch.manual_seed(0)
    core = EquivariantCore(bond_dim=3, n_moments=4, scalar_only=scalar_only).double()
    state, moments = random_tensors(6, 3, seed=3), random_tensors(6, 4, seed=4)
    for got, want in zip(core(state, moments), einsum_core(core, state, moments)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    empty = tuple(x[:0] for x in state), tuple(x[:0] for x in moments)
    assert [x.shape for x in core(*empty)] == [x.shape for x in empty[0]]


def test_core_drops_pseudotensor_products():
    """A cross product of two vectors is a pseudovector (a reflection tells them apart), so the core
    has none: with the state's vectors along x and the moments' along y, no output vector has a z
    component (v x a1 would)."""
    torch.manual_seed(0)
    core = EquivariantCore(bond_dim=2, n_moments=2).double()
    x, y = torch.eye(3, dtype=F64)[0], torch.eye(3, dtype=F64)[1]
    s, a0 = torch.randn(1, 2, dtype=F64), torch.randn(1, 2, dtype=F64)
    v = x[None, :, None] * torch.randn(1, 1, 2, dtype=F64)
    a1 = y[None, :, None] * torch.randn(1, 1, 2, dtype=F64)
    zeros = torch.zeros(1, 3, 3, 2, dtype=F64)
    out = core((s, v, zeros), (a0, a1, zeros))[1]
    assert out[0, :2].abs().min() > 0 and torch.equal(out[0, 2], torch.zeros(2, dtype=F64))


def test_sym_traceless_and_quad_matrix():
    m = torch.randn(4, 3, 3, 2, dtype=F64)
    t = sym_traceless(m)
    torch.testing.assert_close(sym_traceless(t), t)
    torch.testing.assert_close(t, t.transpose(1, 2))
    q = quad_matrix(torch.randn(4, 5, 2, dtype=F64))
    torch.testing.assert_close(sym_traceless(q), q)


def test_outputs_and_interface():
    model = small_model().eval()
    species, positions, mol_index = molecules(seed=1)
    out = run(model, species, positions, mol_index, 3, forces=True)
    n = species.shape[0]
    assert out.energy.shape == (3,) and out.atom_energy.shape == (n,) and out.forces.shape == (n, 3)
    assert torch.equal(out.hierarchicality, torch.zeros(3, dtype=F64))
    assert len(out.features) == 1 and out.features[0].shape == (n, 3)
    torch.testing.assert_close(out.energy, torch.zeros(3, dtype=F64).index_add(0, mol_index, out.atom_energy))
    again = ETN(**model.hparams).double().eval()
    again.load_state_dict(model.state_dict())
    torch.testing.assert_close(run(again, species, positions, mol_index, 3).energy, out.energy, rtol=0, atol=0)


@pytest.mark.parametrize("message_passing", [False, True])
@pytest.mark.parametrize("reflect", [False, True])
def test_energy_invariant_and_forces_equivariant(message_passing, reflect):
    model = small_model(message_passing=message_passing).eval()
    species, positions, mol_index = molecules(seed=2)
    out = run(model, species, positions, mol_index, 3, forces=True)
    q = orthogonal(4, reflect)
    moved = positions @ q.t() + torch.tensor([0.3, -1.2, 2.0], dtype=F64)
    again = run(model, species, moved, mol_index, 3, forces=True)
    torch.testing.assert_close(again.energy, out.energy, rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(again.forces, out.forces @ q.t(), rtol=1e-10, atol=1e-10)
    # the order of the pair list does not matter
    pf, ps = shuffled_pairs(positions, mol_index, CUTOFF, seed=5)
    shuffled = model(species, positions, mol_index, pf, ps, n_molecules=3, forces=True)
    torch.testing.assert_close(shuffled.energy, out.energy, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(shuffled.forces, out.forces, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("message_passing", [False, True])
def test_forces_match_finite_differences(message_passing):
    model = small_model(message_passing=message_passing).eval()
    species, positions, mol_index = molecules(seed=3, n_molecules=2, max_atoms=5)
    forces = run(model, species, positions, mol_index, 2, forces=True).forces
    assert_forces_match_central_differences(
        lambda pos: run(model, species, pos, mol_index, 2).energy.sum(), positions, forces)


def test_gradcheck_and_gradgradcheck_in_positions_and_parameters():
    model = small_model(message_passing=True)
    species, positions, mol_index = molecules(seed=4, n_molecules=2, max_atoms=4)
    pf, ps = pairs_within_cutoff(positions, mol_index, CUTOFF)
    pos = positions.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda p: model(species, p, mol_index, pf, ps, n_molecules=2).energy, (pos,))
    assert torch.autograd.gradgradcheck(lambda p: model(species, p, mol_index, pf, ps, n_molecules=2).energy,
                                        (pos,))

    def force_loss_gradient():  # the double backward a force-training step takes
        model.zero_grad()
        forces = model(species, positions, mol_index, pf, ps, n_molecules=2, forces=True, create_graph=True).forces
        forces.square().sum().backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    grads = force_loss_gradient()
    assert all(g.abs().max() > 0 for g in grads.values())
    weight, h = model.moments[1].weight, 1e-6
    with torch.no_grad():
        weight[1, 2, 3] += h
    up = model(species, positions, mol_index, pf, ps, n_molecules=2, forces=True).forces.square().sum()
    with torch.no_grad():
        weight[1, 2, 3] -= 2 * h
    down = model(species, positions, mol_index, pf, ps, n_molecules=2, forces=True).forces.square().sum()
    assert float(grads["moments.1.weight"][1, 2, 3]) == pytest.approx(float(up.detach() - down.detach()) / (2 * h),
                                                                      rel=1e-5)


def test_atoms_without_neighbours_and_empty_pair_list():
    model = small_model().eval()
    species = torch.tensor([1, 6, 8])
    positions = torch.tensor([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 10.0, 0.0]], dtype=F64)
    mol_index = torch.tensor([0, 0, 1])
    empty = torch.zeros(0, dtype=torch.long)
    out = model(species, positions, mol_index, empty, empty, n_molecules=3, forces=True)
    isolated = float(model.start.detach() @ model.readout.detach())  # no moments: the start state only
    torch.testing.assert_close(out.atom_energy, model.self_energies[[0, 1, 3]] + isolated)
    assert torch.equal(out.forces, torch.zeros(3, 3, dtype=F64)) and out.energy[2] == 0
    # the same atoms through a pair list that holds only pairs beyond the cutoff
    far = model(species, positions, mol_index, torch.tensor([0, 1]), torch.tensor([1, 0]), n_molecules=3)
    torch.testing.assert_close(far.energy, out.energy, rtol=0, atol=0)
    none = model(species[:0], positions[:0], mol_index[:0], empty, empty, n_molecules=0, forces=True)
    assert none.energy.shape == (0,) and none.forces.shape == (0, 3)


def test_duplicated_pairs_count_twice():
    """A pair listed twice is two neighbours at the same place, as in every op of the package."""
    model = small_model(degree=1).eval()
    species, positions, mol_index = molecules(seed=6, n_molecules=1, min_atoms=3, max_atoms=3)
    pf, ps = pairs_within_cutoff(positions, mol_index, CUTOFF)
    twice = model(species, positions, mol_index, torch.cat([pf, pf]), torch.cat([ps, ps]), n_molecules=1)
    once = model(species, positions, mol_index, pf, ps, n_molecules=1)
    # degree 1: the energy is affine in the moments, which double
    isolated = model(species, positions, mol_index, pf[:0], ps[:0], n_molecules=1).energy
    torch.testing.assert_close(twice.energy - isolated, 2 * (once.energy - isolated))


def test_parameters_grow_linearly_in_the_degree():
    counts = [sum(p.numel() for p in ETN(n_radial=6, n_moments=5, bond_dim=4, degree=d).parameters())
              for d in (1, 2, 3, 6)]
    per_core = counts[1] - counts[0]
    assert per_core == 11 * 4 * 5 * 4  # 11 paths, b x M x b each (the last core has the 3 scalar paths only)
    assert counts[0] == 6 * 4 * 5 * 4 + 3 * 4 * 5 * 4 + 2 * 4  # moments S x M x K x S, the last core, start + read-out
    assert counts[2] - counts[1] == per_core and counts[3] - counts[0] == 5 * per_core


@needs_triton
def test_triton_backend_matches_the_reference():
    """Every op of the model through Triton (the interpreter without a GPU) against the reference:
    energies, forces and a force-training step's parameter gradients, float64."""
    species, positions, mol_index = molecules(seed=7)
    pf, ps = shuffled_pairs(positions, mol_index, CUTOFF, seed=7)
    results = []
    for backend in ("reference", "triton"):
        model = small_model(backend=backend, message_passing=True)
        out = model(species, positions, mol_index, pf, ps, n_molecules=3, forces=True, create_graph=True)
        loss = out.energy.square().sum() + out.forces.square().sum()
        names, params = zip(*model.named_parameters())
        results.append((out.energy.detach(), out.forces.detach(), dict(zip(names, torch.autograd.grad(loss, params)))))
    (e0, f0, g0), (e1, f1, g1) = results
    torch.testing.assert_close(e1, e0, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(f1, f0, rtol=1e-11, atol=1e-11)
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], rtol=1e-10, atol=1e-10, msg=lambda m, n=name: f"{n}: {m}")


@needs_triton
def test_float32_error_within_a_small_factor_of_the_reference_float32_error():
    """flash-attention's rule for the Triton path: its float32 error against float64 is within 2x
    (plus rounding slack) of the float32 reference's."""
    species, positions, mol_index = molecules(seed=8)
    pf, ps = pairs_within_cutoff(positions, mol_index, CUTOFF)
    exact = small_model()
    want = exact(species, positions, mol_index, pf, ps, n_molecules=3, forces=True)
    errors = {}
    for backend in ("reference", "triton"):
        model = ETN(**{**exact.hparams, "backend": backend})
        model.load_state_dict(exact.state_dict())
        got = model.float()(species, positions.float(), mol_index, pf, ps, n_molecules=3, forces=True)
        errors[backend] = float((got.forces.double() - want.forces).abs().max().detach())
    assert errors["triton"] <= 2 * errors["reference"] + 1e-6


@pytest.mark.parametrize("kwargs, match", [
    (dict(degree=0), "degree must be a positive integer"),
    (dict(bond_dim=2.5), "bond_dim must be a positive integer"),
    (dict(n_radial=True), "n_radial must be a positive integer"),
    (dict(cutoff=-1.0), "cutoff must be a positive number"),
    (dict(message_passing="yes"), "message_passing must be true or false"),
    (dict(species=(1, 1)), "species must be distinct"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ETN(**kwargs)


def test_bad_inputs_are_clear_errors():
    model = small_model()
    species, positions, mol_index = molecules(seed=9)
    pf, ps = pairs_within_cutoff(positions, mol_index, CUTOFF)
    with pytest.raises(ValueError, match="does not know"):
        model(species.clone().fill_(9), positions, mol_index, pf, ps)
    with pytest.raises(ValueError, match="same position"):
        model(species, positions, mol_index, torch.tensor([0]), torch.tensor([0]))
    with pytest.raises(TypeError, match="dtype"):
        model(species, positions.float(), mol_index, pf, ps)
    with pytest.raises(ValueError, match="pair_shift"):
        model(species, positions, mol_index, pf, ps, pair_shift=torch.zeros(1, 3, dtype=F64))


# -- through the trainer, checkpoints, the ASE calculator -------------------------------------------
SMALL = dict(architecture="etn", n_sensitivities=5, cutoff=3.5, etn_degree=2, etn_bond_dim=4, etn_moments=4,
             batch_size=4, split_by="conformer", progress=False, device="cpu")


@pytest.fixture(scope="module")
def toy():
    return toy_conformers(12, 5, seed=3)


def test_config_maps_its_model_settings_to_etn():
    config = TrainConfig(architecture="etn", n_sensitivities=10, cutoff=5.0, etn_degree=3, etn_bond_dim=6,
                         etn_moments=7, etn_message_passing=True, n_features=99, lmax=0, backend="reference")
    assert config.model_kwargs([1, 6]) == dict(species=[1, 6], n_radial=10, cutoff=5.0, degree=3, bond_dim=6,
                                               n_moments=7, message_passing=True, backend="reference")
    assert "etn_degree" not in TrainConfig().model_kwargs([1, 6])  # the HipnnTS settings leave them out
    with pytest.raises(ValueError, match="etn_degree must be positive"):
        TrainConfig(etn_degree=0)


def test_trainer_runs_etn_and_its_checkpoint_reloads(toy, tmp_path):
    summary = Trainer(TrainConfig(out=str(tmp_path), epochs=2, lr=1e-2, **SMALL), toy).run()
    assert summary["architecture"] == "etn" and summary["epochs"] == 2
    assert math.isfinite(summary["metrics"]["test"]["force_mae"])
    assert read_checkpoint(tmp_path / "best.pt")["architecture"] == "etn"
    model = load_model(tmp_path / "best.pt", backend="reference")
    assert isinstance(model, ETN) and not model.training and model.hparams["backend"] == "reference"
    assert model.self_energies.abs().min() > 0  # fitted, and saved with the weights
    # resume a run to the same budget: the last checkpoint of one uninterrupted run, bit for bit
    settings = dict(SMALL, lr_schedule="plateau")
    Trainer(TrainConfig(out=str(tmp_path / "full"), epochs=2, **settings), toy).run()
    Trainer(TrainConfig(out=str(tmp_path / "part"), epochs=1, **settings), toy).run()
    Trainer(TrainConfig(out=str(tmp_path / "part"), epochs=2, **settings), toy, resume=True).run()
    full, again = (read_checkpoint(tmp_path / d / "last.pt")["model_state"] for d in ("full", "part"))
    for name, value in full.items():
        assert torch.equal(value, again[name]), name


def test_ase_calculator_takes_an_etn_model():
    ase = pytest.importorskip("ase")
    from hipnnts_kernels.ase_calculator import EV_IN_KCAL_PER_MOL, HipnnTSCalculator

    model = small_model()
    atoms = ase.Atoms("OH2", positions=[[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])
    atoms.calc = HipnnTSCalculator(model)
    out = run(model, torch.tensor(atoms.numbers), torch.tensor(atoms.positions), torch.zeros(3, dtype=torch.long),
              1, forces=True)
    assert atoms.get_potential_energy() == pytest.approx(float(out.energy.detach()) / EV_IN_KCAL_PER_MOL, rel=1e-12)
    assert atoms.get_forces() == pytest.approx(out.forces.detach().numpy() / EV_IN_KCAL_PER_MOL, rel=1e-10)


def test_hipnnts_train_and_eval_with_etn_flags(toy, tmp_path, capsys):
    from hipnnts_kernels.cli import main
    from hipnnts_kernels.data import save

    save(toy, tmp_path / "toy.h5")
    out = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "toy.h5"), "--out", str(out), "--epochs", "1", "--architecture",
                 "etn", "--etn-degree", "2", "--etn-bond-dim", "3", "--etn-moments", "4", "--etn-message-passing",
                 "--n-sensitivities", "4", "--cutoff", "3.5", "--batch-size", "4", "--no-progress",
                 "--device", "cpu"]) == 0
    model = load_model(out / "best.pt")
    settings = {k: v for k, v in model.hparams.items() if k != "species"}
    assert settings == dict(n_radial=4, n_moments=4, bond_dim=3, degree=2, cutoff=3.5, message_passing=True,
                            backend="auto")
    capsys.readouterr()
    assert main(["eval", str(out / "best.pt"), "--json"]) == 0
    assert "force_mae" in capsys.readouterr().out
