"""TensorNetModel (torchmd-net's TensorNet behind HipnnTS's interface): outputs, forces, symmetries,
batching, self energies, errors, and training / checkpoints / resume through the trainer."""
from __future__ import annotations

import math
import sys

import pytest
import torch

pytest.importorskip("torchmdnet.models.tensornet")

from conftest import assert_forces_match_central_differences  # noqa: E402

from hipnnts_kernels import TensorNetModel, pairs_within_cutoff  # noqa: E402
from hipnnts_kernels.synthetic import random_molecules, toy_conformers  # noqa: E402
from hipnnts_kernels.training import TrainConfig, Trainer, load_model, read_checkpoint  # noqa: E402
from hipnnts_kernels.training import trainer as trainer_module  # noqa: E402

F64 = torch.float64
SMALL = dict(architecture="tensornet", n_features=16, n_sensitivities=8, n_interaction_layers=1, cutoff=4.0,
             batch_size=4, split_by="conformer", progress=False, device="cpu")


def small_model(**kwargs) -> TensorNetModel:
    torch.manual_seed(0)
    model = TensorNetModel(**{**dict(hidden_channels=8, num_layers=2, num_rbf=6, cutoff=3.5), **kwargs}).double()
    with torch.no_grad():
        model.self_energies.copy_(torch.tensor([-0.5, -37.8, -54.6, -75.0], dtype=F64))
    return model


def molecules(seed: int, n_molecules=3, min_atoms=2, max_atoms=7):
    return random_molecules(n_molecules, min_atoms, max_atoms, seed=seed)


def run(model, species, positions, mol_index, n_molecules=None, **kwargs):
    pf, ps = pairs_within_cutoff(positions, mol_index, model.cutoff)
    return model(species, positions, mol_index, pf, ps, n_molecules=n_molecules, **kwargs)


def random_rotation(seed: int) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(3, 3, dtype=F64, generator=torch.Generator().manual_seed(seed)))
    q = q * torch.sign(torch.diagonal(r))
    return q if torch.det(q) > 0 else -q


def test_outputs_shapes_and_interface():
    model = small_model().eval()
    species, positions, mol_index = molecules(seed=1)
    out = run(model, species, positions, mol_index, 3, forces=True)
    n = species.shape[0]
    assert out.energy.shape == (3,) and out.atom_energy.shape == (n,) and out.forces.shape == (n, 3)
    assert torch.equal(out.hierarchicality, torch.zeros(3, dtype=F64))
    assert len(out.features) == 1 and out.features[0].shape == (n, 8)
    torch.testing.assert_close(out.energy, torch.zeros(3, dtype=F64).index_add(0, mol_index, out.atom_energy))
    assert model.species == (1, 6, 7, 8) and model.cutoff == 3.5
    # hparams rebuild the architecture; the state (self energies included) loads into it
    again = TensorNetModel(**model.hparams).double().eval()
    again.load_state_dict(model.state_dict())
    torch.testing.assert_close(run(again, species, positions, mol_index, 3).energy, out.energy.detach())
    # n_molecules inferred; forces also under no_grad, without a graph in evaluation mode
    with torch.no_grad():
        quiet = run(model, species, positions, mol_index, forces=True)
    assert quiet.energy.shape == (3,) and not quiet.forces.requires_grad
    torch.testing.assert_close(quiet.forces, out.forces)


def test_forces_are_minus_the_gradient_and_match_central_finite_differences():
    model = small_model().eval()
    species, positions, mol_index = molecules(seed=2, n_molecules=2, min_atoms=3, max_atoms=5)
    out = run(model, species, positions, mol_index, 2, forces=True)
    pos = positions.clone().requires_grad_()
    (grad,) = torch.autograd.grad(run(model, species, pos, mol_index, 2).energy.sum(), pos)
    torch.testing.assert_close(out.forces, -grad, rtol=1e-12, atol=1e-12)
    assert out.forces.abs().max() > 1e-3  # a non-trivial test
    assert_forces_match_central_differences(lambda pos: run(model, species, pos, mol_index, 2).energy.sum(),
                                            positions, out.forces)


def test_training_mode_keeps_the_force_graph():
    model = small_model().train()
    species, positions, mol_index = molecules(seed=3)
    out = run(model, species, positions, mol_index, 3, forces=True)
    assert out.forces.requires_grad
    out.forces.square().sum().backward()  # the double backward reaches the weights
    assert model.energy_head[0].weight.grad.abs().sum() > 0
    assert model.representation.layers[0].linears_tensor[0].weight.grad.abs().sum() > 0


def test_energy_invariant_under_rotation_reflection_translation_and_permutation():
    model = small_model().eval()
    species, positions, mol_index = molecules(seed=4)
    out = run(model, species, positions, mol_index, 3, forces=True)
    rot = random_rotation(4)
    for q in (rot, -rot):  # a proper rotation and a rotation-reflection: TensorNet is O(3)-invariant
        moved = run(model, species, positions @ q.T + torch.tensor([3.0, -1.0, 7.5], dtype=F64), mol_index, 3,
                    forces=True)
        torch.testing.assert_close(moved.energy, out.energy, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(moved.forces, out.forces @ q.T, rtol=1e-9, atol=1e-10)
    perm = torch.randperm(species.shape[0], generator=torch.Generator().manual_seed(9))
    permuted = run(model, species[perm], positions[perm], mol_index[perm], 3, forces=True)
    torch.testing.assert_close(permuted.energy, out.energy, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(permuted.forces, out.forces[perm], rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("offset", [0.0, 100.0])
def test_molecules_of_a_batch_do_not_interact(offset):
    """Each molecule's energy and forces are those it has alone, whether the other molecule is far
    away or overlaps it in space (molecules are told apart by mol_index, not by distance)."""
    model = small_model().eval()
    species, positions, mol_index = molecules(seed=5, n_molecules=2, min_atoms=4, max_atoms=6)
    positions = positions.clone()
    second = mol_index == 1
    positions[second] += offset + 0.37  # overlapping (offset 0) or far away; never coincident atoms
    together = run(model, species, positions, mol_index, 2, forces=True)
    for m in (0, 1):
        atoms = mol_index == m
        alone = run(model, species[atoms], positions[atoms], torch.zeros(int(atoms.sum()), dtype=torch.long), 1,
                    forces=True)
        torch.testing.assert_close(together.energy[m:m + 1], alone.energy, rtol=1e-12, atol=1e-10)
        torch.testing.assert_close(together.forces[atoms], alone.forces, rtol=1e-10, atol=1e-10)


def test_isolated_atoms_get_their_self_energy_plus_the_head_of_their_embedding():
    """Atoms beyond the cutoff of each other: the energy is a sum of one-atom energies."""
    model = small_model().eval()
    species = torch.tensor([1, 8, 6])
    positions = torch.tensor([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 10.0, 0.0]], dtype=F64)
    pair = run(model, species, positions, torch.zeros(3, dtype=torch.long), 1, forces=True)
    singles = [run(model, species[i:i + 1], positions[i:i + 1], torch.zeros(1, dtype=torch.long), 1).energy
               for i in range(3)]
    torch.testing.assert_close(pair.energy, sum(singles))
    assert pair.forces.abs().max() == 0
    empty = run(model, species[:0], positions[:0], torch.zeros(0, dtype=torch.long), 2, forces=True)
    assert empty.energy.tolist() == [0.0, 0.0] and empty.forces.shape == (0, 3)


def test_self_energies_are_fitted_frozen_and_saved():
    model = small_model()
    counts = torch.randint(0, 6, (40, 4), generator=torch.Generator().manual_seed(0)).double()
    e0 = torch.tensor([-0.5, -37.8, -54.6, -75.0], dtype=F64)
    energies = counts @ e0 + 0.01 * torch.randn(40, dtype=F64, generator=torch.Generator().manual_seed(1))
    fitted = model.fit_self_energies(counts, energies)
    torch.testing.assert_close(fitted, torch.linalg.lstsq(counts, energies.unsqueeze(1)).solution.squeeze(1))
    torch.testing.assert_close(fitted, e0, atol=0.05, rtol=0)
    torch.testing.assert_close(model.self_energies, fitted)
    assert "self_energies" in model.state_dict()
    assert all(p is not model.self_energies for p in model.parameters())
    species, positions, mol_index = molecules(seed=6)
    torch.testing.assert_close(model.species_counts(species, mol_index, 3).sum(0),
                               torch.stack([(species == z).sum() for z in (1, 6, 7, 8)]).double())
    # a training step changes the weights but not the self energies
    before = model.self_energies.clone()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.freeze_self_energies()
    run(model.train(), species, positions, mol_index, 3, forces=True).forces.square().sum().backward()
    optimizer.step()
    assert torch.equal(model.self_energies, before)
    # the L2 penalty takes the weights of every Linear, no biases
    reg = model.regularization_params()
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(reg) == len(linears) and all(p.dim() == 2 for p in reg)
    assert {id(p) for p in reg} == {id(m.weight) for m in linears}


def inputs():
    species, positions, mol_index = molecules(seed=7)
    pf, ps = pairs_within_cutoff(positions, mol_index, 3.5)
    return dict(species=species, positions=positions.clone(), mol_index=mol_index, pair_first=pf, pair_second=ps)


@pytest.mark.parametrize("change, error, match", [
    (lambda x: x["species"].__setitem__(0, 9), ValueError, r"atomic numbers \[9\] that the model does not know"),
    (lambda x: x.update(pair_shift=torch.zeros(x["pair_first"].shape[0], 3, dtype=F64)), ValueError,
     "does not support periodic cells"),
    (lambda x: x.update(positions=x["positions"][:, :2]), ValueError, "positions must have shape"),
    (lambda x: x.update(species=x["species"].double()), TypeError, "species must have dtype int64"),
    (lambda x: x.update(mol_index=x["mol_index"] - 1), ValueError, "mol_index holds molecule index -1"),
    (lambda x: x.update(pair_first=x["pair_first"] + 1000), ValueError, "pair_first holds atom index"),
    (lambda x: x["positions"].__setitem__((2, 1), math.nan), ValueError, "positions holds a non-finite value"),
    (lambda x: x["positions"].__setitem__(1, x["positions"][0]), ValueError, "same position"),
])
def test_bad_inputs_raise_clear_errors(change, error, match):
    x = inputs()
    change(x)
    with pytest.raises(error, match=match):
        small_model()(**x)


@pytest.mark.parametrize("model_dtype, input_dtype", [(torch.float64, torch.float32), (torch.float32, torch.float64)])
def test_positions_must_have_the_model_dtype(model_dtype, input_dtype):
    x = inputs()
    x["positions"] = x["positions"].to(input_dtype)
    have, want = (str(d).replace("torch.", "") for d in (input_dtype, model_dtype))
    with pytest.raises(TypeError, match=f"positions has dtype {have} but the model's parameters are {want}"):
        small_model().to(model_dtype)(**x)


def test_bad_constructor_arguments_and_missing_torchmdnet(monkeypatch):
    with pytest.raises(ValueError, match="species must be distinct positive"):
        TensorNetModel(species=(0, 1))
    with pytest.raises(ValueError, match="hidden_channels must be an integer >= 2"):
        TensorNetModel(hidden_channels=1)
    monkeypatch.setitem(sys.modules, "torchmdnet.models.tensornet", None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install --no-deps torchmd-net==3\.0\.2"):
        TensorNetModel()


def test_ase_calculator_takes_a_tensornet_model():
    ase = pytest.importorskip("ase")
    from hipnnts_kernels.ase_calculator import EV_IN_KCAL_PER_MOL, HipnnTSCalculator

    model = small_model()
    atoms = ase.Atoms("OH2", positions=[[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])
    atoms.calc = HipnnTSCalculator(model)
    species, positions = torch.tensor(atoms.numbers), torch.tensor(atoms.positions)
    out = run(model, species, positions, torch.zeros(3, dtype=torch.long), 1, forces=True)
    assert atoms.get_potential_energy() == pytest.approx(float(out.energy.detach()) / EV_IN_KCAL_PER_MOL, rel=1e-12)
    assert atoms.get_forces() == pytest.approx(out.forces.detach().numpy() / EV_IN_KCAL_PER_MOL, rel=1e-10)


# -- through the trainer ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def toy():
    return toy_conformers(12, 5, seed=3)


def test_config_maps_its_model_settings_to_tensornet():
    config = TrainConfig(architecture="tensornet", n_features=24, n_interaction_layers=3, n_sensitivities=10,
                         cutoff=5.0, lmax=0, n_atom_layers=7)
    assert config.model_kwargs([1, 6], max_atoms=100) == dict(
        species=[1, 6], hidden_channels=24, num_layers=3, num_rbf=10, cutoff=5.0, max_num_neighbors=100)
    assert config.model_kwargs([1, 6])["max_num_neighbors"] == 64


def test_trainer_runs_tensornet_and_its_checkpoint_reloads(toy, tmp_path):
    config = TrainConfig(out=str(tmp_path), epochs=1, **SMALL)
    trainer = Trainer(config, toy)
    assert isinstance(trainer.model, TensorNetModel)
    train = toy.subset(trainer.splits[0])
    counts = trainer.model.species_counts(train.species, train.conformer_index, len(train))
    residual = train.energy - counts @ torch.tensor(trainer.self_energies, dtype=F64)
    assert (counts.t() @ residual).abs().max() < 1e-6 * train.energy.abs().max()  # least squares
    fitted = trainer.model.self_energies.clone()
    summary = trainer.run()
    assert summary["architecture"] == "tensornet" and summary["epochs"] == 1
    assert math.isfinite(summary["metrics"]["test"]["force_mae"])
    state = read_checkpoint(tmp_path / "best.pt")
    assert state["architecture"] == "tensornet"
    model = load_model(tmp_path / "best.pt")
    assert isinstance(model, TensorNetModel) and not model.training
    # never trained by the optimiser: only the refits after each epoch move them, and the checkpoint has them
    assert not torch.equal(model.self_energies, fitted)
    assert model.self_energies.tolist() == pytest.approx(state["self_energies"])
    assert all(not name.endswith("self_energies") for name, _ in model.named_parameters())
    batch = trainer.dataset.batch(torch.arange(len(toy)))
    args = (batch.species, batch.positions, batch.mol_index, batch.pair_first, batch.pair_second)
    expected = trainer.model.eval()(*args, n_molecules=batch.n_molecules, forces=True)  # best.pt's weights
    again = model(*args, n_molecules=batch.n_molecules, forces=True)
    assert torch.equal(again.energy, expected.energy) and torch.equal(again.forces, expected.forces)
    dataset = trainer_module.datasets.DeviceDataset(toy, model.cutoff)
    test = trainer_module.evaluate(model, dataset, trainer.splits[2], 5)
    assert test["force_mae"] == pytest.approx(summary["metrics"]["test"]["force_mae"], rel=1e-5)


def test_tensornet_resume_repeats_nothing_and_refuses_another_architecture(toy, tmp_path):
    # the plateau schedule: a cosine schedule depends on the epoch budget, which this resume raises
    settings = dict(SMALL, lr_schedule="plateau")
    Trainer(TrainConfig(out=str(tmp_path / "full"), epochs=2, **settings), toy).run()
    part = tmp_path / "part"
    Trainer(TrainConfig(out=str(part), epochs=1, **settings), toy).run()
    with pytest.raises(ValueError, match="architecture 'tensornet' -> 'hipnnts'"):
        Trainer(TrainConfig(out=str(part), epochs=2, **{**settings, "architecture": "hipnnts"}), toy, resume=True)
    with pytest.raises(ValueError, match="n_features 16 -> 8"):
        Trainer(TrainConfig(out=str(part), epochs=2, **{**settings, "n_features": 8}), toy, resume=True)
    resumed = Trainer(TrainConfig(out=str(part), epochs=2, **settings), toy, resume=True)
    assert isinstance(resumed.model, TensorNetModel)
    resumed.run()
    full, again = (read_checkpoint(tmp_path / d / "last.pt")["model_state"] for d in ("full", "part"))
    assert full.keys() == again.keys()
    for name, value in full.items():
        assert torch.equal(value, again[name]), name


def test_neighbor_search_wrapper_reproduces_torchmdnet_pairs_and_gradients():
    """The model runs torchmd-net's search on detached positions and recomputes the pair vectors;
    energies and forces equal those with the search's own (differentiable) vectors."""
    import copy

    model = small_model().eval()
    plain = copy.deepcopy(model)
    plain.representation.distance = plain.representation.distance.search
    species, positions, mol_index = molecules(seed=8, n_molecules=4, min_atoms=1, max_atoms=8)
    ours, theirs = (run(m, species, positions, mol_index, 4, forces=True) for m in (model, plain))
    torch.testing.assert_close(ours.energy, theirs.energy, rtol=1e-13, atol=1e-10)
    torch.testing.assert_close(ours.forces, theirs.forces, rtol=1e-10, atol=1e-12)
