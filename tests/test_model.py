"""HipnnTS: symmetries, forces against finite differences, padded path, self energies, bad inputs."""
from __future__ import annotations

import math

import pytest
import torch
from conftest import assert_forces_match_central_differences, shuffled_pairs

from hipnnts_kernels import HipnnTS, flatten_padded, pairs_within_cutoff
from hipnnts_kernels.synthetic import random_molecules

F64 = torch.float64


def small_model(lmax: int, **kwargs) -> HipnnTS:
    defaults = dict(n_features=16, n_sensitivities=6, dist_soft_min=0.85, dist_soft_max=3.0, cutoff=4.0,
                    n_interaction_layers=2, n_atom_layers=1, lmax=lmax)
    model = HipnnTS(**{**defaults, **kwargs}).double()
    for head in model.energy_heads:  # undo the hierarchical decay so every level is tested
        torch.nn.init.normal_(head.weight)
    return model


def batch(seed: int, n_molecules=4, min_atoms=1, max_atoms=10):
    species, positions, mol_index = random_molecules(n_molecules, min_atoms, max_atoms, seed=seed)
    return species, positions, mol_index


def energy_forces(model, species, positions, mol_index, n_molecules, seed=0):
    pf, ps = shuffled_pairs(positions, mol_index, model.cutoff, seed=seed)
    out = model(species, positions, mol_index, pf, ps, n_molecules=n_molecules, forces=True)
    return out.energy.detach(), out.forces.detach()


def random_rotation(seed: int) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(3, 3, dtype=F64, generator=torch.Generator().manual_seed(seed)))
    q = q * torch.sign(torch.diagonal(r))
    return q if torch.det(q) > 0 else -q


@pytest.mark.parametrize("lmax", [0, 1, 2])
def test_rotation_translation_permutation(lmax):
    model = small_model(lmax)
    species, positions, mol_index = batch(seed=lmax)
    energy, forces = energy_forces(model, species, positions, mol_index, 4)
    rot = random_rotation(lmax)
    e_rot, f_rot = energy_forces(model, species, positions @ rot.T + torch.tensor([3.0, -1.0, 7.5], dtype=F64),
                                 mol_index, 4, seed=1)
    scale_e, scale_f = energy.abs().max(), forces.abs().max()
    assert (e_rot - energy).abs().max() <= 1e-10 * scale_e
    assert (f_rot - forces @ rot.T).abs().max() <= 1e-10 * scale_f
    perm = torch.randperm(species.shape[0], generator=torch.Generator().manual_seed(9))
    e_perm, f_perm = energy_forces(model, species[perm], positions[perm], mol_index[perm], 4, seed=2)
    assert (e_perm - energy).abs().max() <= 1e-10 * scale_e
    assert (f_perm - forces[perm]).abs().max() <= 1e-10 * scale_f


@pytest.mark.parametrize("lmax", [0, 1, 2])
def test_forces_match_central_finite_differences(lmax):
    model = small_model(lmax)
    species, positions, mol_index = batch(seed=10 + lmax, n_molecules=2, min_atoms=3, max_atoms=6)
    pf, ps = pairs_within_cutoff(positions, mol_index, model.cutoff)
    out = model(species, positions, mol_index, pf, ps, n_molecules=2, forces=True)
    assert_forces_match_central_differences(
        lambda pos: model(species, pos, mol_index, pf, ps, n_molecules=2).energy.sum(), positions, out.forces)


@pytest.mark.parametrize("lmax", [0, 2])
def test_force_training_gradients_match_finite_differences(lmax):
    """The double backward: d(force loss)/d(parameters) against finite differences."""
    model = small_model(lmax, n_interaction_layers=1)
    species, positions, mol_index = batch(seed=20, n_molecules=2, min_atoms=3, max_atoms=5)
    pf, ps = pairs_within_cutoff(positions, mol_index, model.cutoff)
    layer = model.interaction_layers[0]
    params = [layer.mu, layer.sigma, layer.int_weights] + ([layer.quadscales] if lmax else [])

    def force_loss():
        return model(species, positions, mol_index, pf, ps, n_molecules=2, forces=True,
                     create_graph=True).forces.square().sum()

    grads = torch.autograd.grad(force_loss(), params)
    h = 1e-6
    with torch.no_grad():
        for param, grad in zip(params, grads):
            for index in [0, param.numel() - 1]:
                flat = param.view(-1)
                flat[index] += h
                up = force_loss()
                flat[index] -= 2 * h
                down = force_loss()
                flat[index] += h
                assert float(grad.view(-1)[index]) == pytest.approx(float((up - down) / (2 * h)), rel=1e-5, abs=1e-8)


def test_padded_path_matches_flat_path():
    model = small_model(2)
    species = torch.tensor([[6, 1, 1, 1, 1], [8, 1, 1, 0, 0], [7, 0, 0, 0, 0]])
    positions = torch.randn(3, 5, 3, dtype=F64, generator=torch.Generator().manual_seed(3)) * 1.5
    positions[species == 0] = 1e3  # padding positions never matter
    out = model.forward_padded(species, positions, forces=True)
    flat = flatten_padded(species, positions, model.cutoff)
    ref = model(flat.species, flat.positions, flat.mol_index, flat.pair_first, flat.pair_second, n_molecules=3,
                forces=True)
    torch.testing.assert_close(out.energy, ref.energy)
    assert out.forces.shape == (3, 5, 3) and out.forces[species == 0].abs().max() == 0
    torch.testing.assert_close(out.forces[species != 0], ref.forces)


def test_isolated_and_single_atom_molecules_get_self_energy_only():
    model = small_model(2)
    species = torch.tensor([8, 1, 1, 6])
    positions = torch.tensor([[0.0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0], [50.0, 0, 0]], dtype=F64)
    mol_index = torch.tensor([0, 0, 0, 1])  # a water and a lone carbon
    pf, ps = pairs_within_cutoff(positions, mol_index, model.cutoff)
    out = model(species, positions, mol_index, pf, ps, forces=True)
    assert out.forces[3].abs().max() == 0
    lone = model(species[3:], positions[3:], torch.zeros(1, dtype=torch.long), pf[:0], ps[:0])
    torch.testing.assert_close(out.energy[1], lone.energy[0])
    # same molecule, far apart atoms: no pairs within the cutoff at all
    far = model(species, positions * 100, torch.zeros(4, dtype=torch.long), pf[:0], ps[:0], forces=True)
    assert far.forces.abs().max() == 0


def test_pair_builders_agree_and_are_full_directed():
    species, positions, mol_index = batch(seed=4)
    pf, ps = pairs_within_cutoff(positions, mol_index, 4.0)
    pairs = set(zip(pf.tolist(), ps.tolist()))
    assert all((j, i) in pairs for i, j in pairs) and all(i != j for i, j in pairs)
    assert all(mol_index[i] == mol_index[j] for i, j in pairs)
    n = torch.bincount(mol_index).tolist()
    padded_species = torch.zeros(len(n), max(n), dtype=torch.long)
    padded_positions = torch.zeros(len(n), max(n), 3, dtype=F64)
    for m, start in enumerate(torch.tensor([0, *n]).cumsum(0)[:-1].tolist()):
        padded_species[m, : n[m]] = species[start:start + n[m]]
        padded_positions[m, : n[m]] = positions[start:start + n[m]]
    flat = flatten_padded(padded_species, padded_positions, 4.0)
    assert set(zip(flat.pair_first.tolist(), flat.pair_second.tolist())) == pairs
    assert torch.equal(flat.mol_index, mol_index)


def test_self_energy_fit_recovers_per_species_energies():
    model = small_model(1)
    counts = torch.randint(0, 6, (40, 4)).double()
    e0 = torch.tensor([-0.5, -37.8, -54.6, -75.0], dtype=F64)
    fitted = model.fit_self_energies(counts, counts @ e0)
    torch.testing.assert_close(fitted, e0)
    assert not model.energy_heads[0].weight.requires_grad
    species, positions, mol_index = batch(seed=5)
    torch.testing.assert_close(model.species_counts(species, mol_index, 4).sum(), torch.tensor(float(len(species)),
                                                                                            dtype=F64))


def test_hierarchicality_and_regularization():
    model = HipnnTS(n_features=8, n_sensitivities=4, n_interaction_layers=2, n_atom_layers=1).double()
    decays = [float(h.weight.detach().abs().max()) for h in model.energy_heads[1:]]
    assert decays[0] < 1e-2 and decays[1] < 1e-4  # hierarchical decay 1e-2, 1e-4
    species, positions, mol_index = batch(seed=6)
    pf, ps = pairs_within_cutoff(positions, mol_index, model.cutoff)
    out = model(species, positions, mol_index, pf, ps)
    counts = torch.bincount(mol_index).double()
    assert ((out.hierarchicality >= 0) & (out.hierarchicality <= 2 * counts)).all()
    reg = model.regularization_params()
    assert model.interaction_layers[0].int_weights in [p for p in reg]
    assert not any(p is model.interaction_layers[0].mu for p in reg)
    assert all(p.dim() >= 2 for p in reg)


def test_parameter_counts_of_the_reference_configuration():
    counts = [sum(p.numel() for p in HipnnTS(lmax=lmax).parameters()) for lmax in (0, 1, 2)]
    assert counts[1] - counts[0] == 256 and counts[2] - counts[1] == 256
    assert 580_000 < counts[2] < 595_000


# ---------------------------------------------------------------------------------------------
# bad inputs
# ---------------------------------------------------------------------------------------------
def valid_inputs():
    species, positions, mol_index = batch(seed=7)
    pf, ps = pairs_within_cutoff(positions, mol_index, 4.0)
    return dict(species=species, positions=positions, mol_index=mol_index, pair_first=pf, pair_second=ps)


@pytest.mark.parametrize("change, error, match", [
    (lambda x: x.update(positions=x["positions"][:, :2]), ValueError, r"positions must have shape \(\*, 3\)"),
    (lambda x: x.update(positions=x["positions"].to(torch.int64)), TypeError, "positions must have dtype float32"),
    (lambda x: x.update(species=x["species"].double()), TypeError, "species must have dtype int64"),
    (lambda x: x.update(mol_index=x["mol_index"][1:]), ValueError, "mol_index must have shape"),
    (lambda x: x.update(pair_first=x["pair_first"] + 1000), ValueError, "pair_first holds atom index"),
    (lambda x: x.update(pair_second=-x["pair_second"] - 1), ValueError, "pair_second holds atom index -"),
    (lambda x: x.update(pair_second=x["pair_second"][1:]), ValueError, "pair_second must have shape"),
    (lambda x: x["positions"].__setitem__((2, 1), math.nan), ValueError, "positions holds a non-finite value"),
    (lambda x: x["positions"].__setitem__((0, 0), math.inf), ValueError, "positions holds a non-finite value"),
    (lambda x: x["positions"].__setitem__(1, x["positions"][0]), ValueError, "same position"),
    (lambda x: x["species"].__setitem__(0, 9), ValueError, r"atomic numbers \[9\]"),
    (lambda x: x.update(pair_first=x["pair_first"].to("meta")), ValueError, "pair_first is on meta"),
    (lambda x: x.update(mol_index=x["mol_index"] - 1), ValueError, "mol_index holds molecule index -1"),
])
def test_bad_inputs_raise_clear_errors(change, error, match):
    model = small_model(2, cutoff=4.0)
    x = valid_inputs()
    x["positions"] = x["positions"].clone()
    change(x)
    with pytest.raises(error, match=match):
        model(**x)


@pytest.mark.parametrize("model_dtype, input_dtype", [(torch.float64, torch.float32), (torch.float32, torch.float64)])
def test_positions_must_have_the_model_dtype(model_dtype, input_dtype):
    model = small_model(2, cutoff=4.0).to(model_dtype)
    x = valid_inputs()
    x["positions"] = x["positions"].to(input_dtype)
    have, want = (str(d).replace("torch.", "") for d in (input_dtype, model_dtype))
    match = f"positions has dtype {have} but the model's parameters are {want}"
    with pytest.raises(TypeError, match=match):
        model(**x)
    with pytest.raises(TypeError, match=match):
        model.forward_padded(x["species"][None], x["positions"][None])


def test_positions_must_be_on_the_model_device():
    model = small_model(2, cutoff=4.0)
    x = valid_inputs()
    x = {k: v.to("meta") for k, v in x.items()}
    with pytest.raises(ValueError, match="positions is on meta but the model is on cpu"):
        model(**x)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="lmax"):
        HipnnTS(lmax=3)
    with pytest.raises(ValueError, match="species"):
        HipnnTS(species=(0, 1))
    with pytest.raises(ValueError, match="dist_soft_min"):
        HipnnTS(dist_soft_min=6.0, dist_soft_max=5.5)


def test_model_energy_compiles_without_graph_breaks():
    model = small_model(2)
    species, positions, mol_index = batch(seed=8)
    pf, ps = pairs_within_cutoff(positions, mol_index, model.cutoff)

    def energy(positions):
        return model(species, positions, mol_index, pf, ps, n_molecules=4).energy

    compiled = torch.compile(energy, backend="aot_eager", fullgraph=True)
    pos = positions.clone().requires_grad_()
    got, want = compiled(pos), energy(pos)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(torch.autograd.grad(got.sum(), pos)[0], torch.autograd.grad(want.sum(), pos)[0])


def test_pair_shift_reproduces_a_molecule_wrapped_across_a_periodic_boundary():
    model = small_model(2)
    species, positions, mol_index = batch(seed=11, n_molecules=1, min_atoms=6, max_atoms=8)
    pf, ps = pairs_within_cutoff(positions, mol_index, model.cutoff)
    whole = model(species, positions, mol_index, pf, ps, forces=True)
    box = 2.0  # a cubic box smaller than the molecule: wrapping moves atoms by whole box lengths
    image = torch.floor(positions / box)
    wrapped = positions - box * image
    shift = box * (image[ps] - image[pf])  # R[j] - R[i] = wrapped[j] - wrapped[i] + shift
    out = model(species, wrapped, mol_index, pf, ps, pair_shift=shift, forces=True)
    assert image.abs().sum() > 0
    torch.testing.assert_close(out.energy, whole.energy, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.forces, whole.forces, rtol=1e-10, atol=1e-12)
