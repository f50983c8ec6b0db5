"""The ASE calculator: eV units, forces = -dE/dR by finite differences, clear errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

ase = pytest.importorskip("ase")

from hipnnts_kernels import HipnnTS, pairs_within_cutoff  # noqa: E402
from hipnnts_kernels.ase_calculator import EV_IN_KCAL_PER_MOL, HipnnTSCalculator  # noqa: E402


def water():
    return ase.Atoms("OH2", positions=[[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])


def small_model():
    torch.manual_seed(0)
    return HipnnTS(n_features=8, n_sensitivities=4, dist_soft_min=0.7, dist_soft_max=2.5, cutoff=3.0,
                   n_interaction_layers=1, n_atom_layers=1, lmax=2).double()


def test_energy_in_ev_and_forces_are_the_negative_gradient():
    model = small_model()
    atoms = water()
    atoms.calc = HipnnTSCalculator(model)
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    species = torch.tensor(atoms.numbers)
    pos = torch.tensor(atoms.positions)
    mol = torch.zeros(3, dtype=torch.long)
    pf, ps = pairs_within_cutoff(pos, mol, 3.0)
    with torch.no_grad():
        kcal = float(model(species, pos, mol, pf, ps, n_molecules=1).energy[0])
    assert energy == pytest.approx(kcal / EV_IN_KCAL_PER_MOL, rel=1e-12)
    h = 1e-5
    numeric = np.zeros_like(forces)
    for a in range(3):
        for x in range(3):
            shifted = [atoms.copy() for _ in range(2)]
            for sign, s in zip((1, -1), shifted):
                s.positions[a, x] += sign * h
                s.calc = HipnnTSCalculator(model)
            numeric[a, x] = -(shifted[0].get_potential_energy() - shifted[1].get_potential_energy()) / (2 * h)
    np.testing.assert_allclose(forces, numeric, rtol=1e-6, atol=1e-8)


def _finite_difference_forces(atoms, model, h=1e-5):
    numeric = np.zeros((len(atoms), 3))
    for a in range(len(atoms)):
        for x in range(3):
            energies = []
            for sign in (1, -1):
                shifted = atoms.copy()
                shifted.positions[a, x] += sign * h
                shifted.calc = HipnnTSCalculator(model)
                energies.append(shifted.get_potential_energy())
            numeric[a, x] = -(energies[0] - energies[1]) / (2 * h)
    return numeric


def test_periodic_images():
    """A water in a cell narrower than the cutoff: forces are the gradient, a lattice translation of an
    atom changes nothing, and in a cell wider than twice the cutoff the images drop out."""
    model = small_model()
    atoms = water()
    atoms.cell = [[2.9, 0.0, 0.0], [0.4, 3.1, 0.0], [0.2, 0.3, 3.3]]
    atoms.pbc = True
    atoms.calc = HipnnTSCalculator(model)
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    np.testing.assert_allclose(forces, _finite_difference_forces(atoms, model), rtol=1e-6, atol=1e-8)
    moved = atoms.copy()
    moved.positions[1] += moved.cell[0] - 2 * moved.cell[2]
    moved.calc = HipnnTSCalculator(model)
    assert moved.get_potential_energy() == pytest.approx(energy, rel=1e-12)
    np.testing.assert_allclose(moved.get_forces(), forces, rtol=1e-10, atol=1e-12)
    isolated, boxed = water(), water()
    boxed.cell, boxed.pbc = [7.0, 7.0, 7.0], True
    isolated.calc, boxed.calc = HipnnTSCalculator(model), HipnnTSCalculator(model)
    assert boxed.get_potential_energy() == pytest.approx(isolated.get_potential_energy(), rel=1e-12)
    assert energy != pytest.approx(isolated.get_potential_energy(), rel=1e-6)


def test_a_checkpoint_path_gives_the_same_calculator(tmp_path):
    from hipnnts_kernels.training.checkpoint import save_checkpoint

    model = small_model()
    save_checkpoint({"architecture": "hipnnts", "model_hparams": model.hparams, "model_state": model.state_dict()},
                    tmp_path / "best.pt")
    atoms, again = water(), water()
    atoms.calc, again.calc = HipnnTSCalculator(model), HipnnTSCalculator(str(tmp_path / "best.pt"))
    assert atoms.get_potential_energy() == pytest.approx(again.get_potential_energy(), abs=1e-12)


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="energy_unit must be one of"):
        HipnnTSCalculator(small_model(), energy_unit="kcal")
    with pytest.raises(TypeError, match="model must be a trained model .* or a checkpoint path, got dict"):
        HipnnTSCalculator({"model_state": {}})
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        HipnnTSCalculator(tmp_path / "best.pt")
    (tmp_path / "data.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64))
    with pytest.raises(ValueError, match="data.h5 is not a hipnnts-kernels checkpoint: it is an HDF5 file"):
        HipnnTSCalculator(str(tmp_path / "data.h5"))
