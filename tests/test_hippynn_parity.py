"""HipnnTS reproduces hippynn 0.1.3 exactly (<= 1e-9 relative in float64) with identical weights."""
from __future__ import annotations

import warnings

import pytest
import torch
from conftest import shuffled_pairs

from hipnnts_kernels.hippynn_interop import from_hippynn, to_hippynn
from hipnnts_kernels.synthetic import random_molecules

hippynn = pytest.importorskip("hippynn")
from hippynn.layers.targets import HEnergy  # noqa: E402
from hippynn.networks.hipnn import Hipnn, HipnnQuad, HipnnVec  # noqa: E402

CONFIGS = [  # (n_features, n_interaction_layers, n_atom_layers)
    (16, 1, 0),
    (16, 3, 3),
    ([20, 12, 16], 3, 0),
    (24, 1, 3),
]


def hippynn_energy_forces(network, head, species, positions, mol_index, pf, ps, n_mol):
    positions = positions.detach().requires_grad_()
    onehot = (species.unsqueeze(1) == torch.tensor([1, 6, 7, 8])).to(positions.dtype)
    coord = positions[ps] - positions[pf]
    dist = coord.norm(dim=1)
    args = (onehot, pf, ps, dist) + ((coord,) if isinstance(network, HipnnVec) else ())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        feats = network(*args)
    energy = head(feats, mol_index, n_mol)[0].squeeze(1)
    (grad,) = torch.autograd.grad(energy.sum(), positions)
    return energy.detach(), -grad


def relative(a, b):
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"F{c[0]}-int{c[1]}-atom{c[2]}")
@pytest.mark.parametrize("lmax", [0, 1, 2])
def test_energy_and_forces_match_hippynn(lmax, config):
    n_features, n_int, n_atom = config
    cls = (Hipnn, HipnnVec, HipnnQuad)[lmax]
    torch.manual_seed(lmax * 10 + n_int)
    network = cls(n_features, 7, 0.85, 3.0, 4.0, n_atom, n_interaction_layers=None if isinstance(n_features, list)
                  else n_int, possible_species=[0, 1, 6, 7, 8]).double()
    head = HEnergy(list(network.feature_sizes)).double()
    for layer in head.layers:  # make every hierarchy level matter
        torch.nn.init.normal_(layer.weight)
    model = from_hippynn(network, head)
    assert model.lmax == lmax and next(model.parameters()).dtype == torch.float64
    for seed in range(3):
        species, positions, mol_index = random_molecules(5, 1, 14, seed=seed)
        pf, ps = shuffled_pairs(positions, mol_index, 4.0, seed=seed)
        e_ref, f_ref = hippynn_energy_forces(network, head, species, positions, mol_index, pf, ps, 5)
        out = model(species, positions, mol_index, pf, ps, n_molecules=5, forces=True)
        assert relative(out.energy.detach(), e_ref) <= 1e-9
        assert relative(out.forces, f_ref) <= 1e-9


@pytest.mark.parametrize("lmax", [0, 1, 2])
def test_round_trip_to_hippynn(lmax):
    from hipnnts_kernels import HipnnTS

    model = HipnnTS(n_features=12, n_sensitivities=5, n_interaction_layers=2, n_atom_layers=1, lmax=lmax).double()
    network, head = to_hippynn(model)
    species, positions, mol_index = random_molecules(3, 2, 9, seed=7)
    pf, ps = shuffled_pairs(positions, mol_index, model.cutoff, seed=7)
    e_ref, f_ref = hippynn_energy_forces(network, head, species, positions, mol_index, pf, ps, 3)
    out = model(species, positions, mol_index, pf, ps, n_molecules=3, forces=True)
    assert relative(out.energy.detach(), e_ref) <= 1e-9
    assert relative(out.forces, f_ref) <= 1e-9
    back = from_hippynn(network, head)
    for (k, a), (_, b) in zip(model.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), k


def test_rejects_unsupported_networks():
    network = Hipnn(8, 4, 0.85, 3.0, 4.0, 1, n_interaction_layers=1, possible_species=[0, 1, 6],
                    sensitivity_type="linear")
    with pytest.raises(ValueError, match="inverse"):
        from_hippynn(network, HEnergy(list(network.feature_sizes)))
    with pytest.raises(TypeError, match="HEnergy"):
        from_hippynn(network, torch.nn.Linear(2, 2))
