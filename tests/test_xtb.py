"""The GFN2-xTB generator (needs the [xtb] extra) and the shipped dataset (always)."""
from __future__ import annotations

import argparse
import sys

import numpy as np
import pytest
import torch

from hipnnts_kernels.data import load, xtb
from hipnnts_kernels.data.embedded import EMBEDDED_PATH, TRANSFER_PATH, load_embedded, load_transfer
from hipnnts_kernels.data.units import energy_factor, length_factor

PROVENANCE_KEYS = {"generator", "seed", "recipe", "smiles_source", "versions", "created_utc", "rejected_conformers",
                   "failed_molecules", "wall_time_s"}


@pytest.fixture(scope="module")
def generated():
    pytest.importorskip("rdkit")
    pytest.importorskip("tblite")
    return xtb.generate(2, 2, seed=3, max_heavy_atoms=6, workers=1, progress=False)


def test_generated_shapes_elements_and_provenance(generated):
    c = generated
    assert len(c) == 4 and len(c.molecule_names) == 2 and c.molecule.tolist() == [0, 0, 1, 1]
    assert set(c.species.unique().tolist()) <= {1, 6, 7, 8}
    n = c.n_atoms
    assert n[0] == n[1] and n[2] == n[3] and c.forces.shape == c.positions.shape == (int(n.sum()), 3)
    for a, b in ((0, 1), (2, 3)):  # same molecule, different off-equilibrium geometries
        ra, rb = (c.positions[c.atom_ptr[k]:c.atom_ptr[k + 1]] for k in (a, b))
        assert torch.equal(c.species[c.atom_ptr[a]:c.atom_ptr[a + 1]], c.species[c.atom_ptr[b]:c.atom_ptr[b + 1]])
        assert not torch.allclose(ra, rb)
    assert PROVENANCE_KEYS <= set(c.provenance)
    assert c.provenance["seed"] == 3 and c.provenance["recipe"]["max_heavy_atoms"] == 6
    assert {"rdkit", "tblite", "numpy", "python", "hipnnts_kernels"} <= set(c.provenance["versions"])


def test_deterministic_across_runs_and_workers_through_the_cli(generated, tmp_path):
    """Same seed, workers=2, through add_arguments/run and the file: the same arrays (positions and
    forces rounded to the file's float32)."""
    parser = argparse.ArgumentParser()
    xtb.add_arguments(parser)
    out = tmp_path / "x.h5"
    xtb.run(parser.parse_args([str(out), "--molecules", "2", "--conformers-per-molecule", "2", "--seed", "3",
                               "--max-heavy-atoms", "6", "--displacement", "0.01", "0.06", "--workers", "2",
                               "--quiet"]))
    again = load(out)
    assert again.molecule_names == generated.molecule_names
    assert torch.equal(again.species, generated.species) and torch.equal(again.atom_ptr, generated.atom_ptr)
    assert torch.equal(again.energy, generated.energy)
    for name in ("positions", "forces"):
        assert torch.equal(getattr(again, name), getattr(generated, name).float().double())
    assert again.provenance["workers"] == 2


def test_forces_are_minus_the_energy_gradient_in_kcal_per_mol_per_angstrom(generated):
    """Central difference of the tblite energy along the largest force component of conformer 0."""
    from tblite.interface import Calculator

    c, h = generated, 1e-3  # Å
    z, r = c.species[:c.atom_ptr[1]].numpy(), c.positions[:c.atom_ptr[1]].numpy()
    atom, axis = np.unravel_index(np.abs(c.forces[:c.atom_ptr[1]].numpy()).argmax(), r.shape)
    energies = []
    for step in (h, -h):
        moved = r.copy()
        moved[atom, axis] += step
        calc = Calculator("GFN2-xTB", z, moved / length_factor("bohr"))
        calc.set("verbosity", 0)
        energies.append(float(calc.singlepoint().get("energy")) * energy_factor("hartree"))
    numeric = -(energies[0] - energies[1]) / (2 * h)
    stored = float(c.forces[atom, axis])
    assert abs(stored) > 5.0 and numeric == pytest.approx(stored, abs=0.01)  # measured: <= 0.003


def test_smiles_filter(tmp_path):
    pytest.importorskip("rdkit")
    smiles = tmp_path / "s.smi"
    smiles.write_text("CCO 1\nOCC 2\nCC[O-] 3\nCCCl 4\nC.O 5\n[CH3] 6\nnot_smiles 7\nCCCCCCCC 8\n\nc1ccccc1N 9\n")
    kept, dropped = xtb.candidate_smiles(smiles, max_heavy_atoms=7)
    assert kept == ["CCO", "Nc1ccccc1"]
    assert dropped == dict(duplicate=1, charged_or_open_shell=2, elements=1, fragments=1, unparsable=1, size=1)
    larger, dropped = xtb.candidate_smiles(smiles, max_heavy_atoms=8, min_heavy_atoms=7)
    assert larger == ["CCCCCCCC", "Nc1ccccc1"] and dropped["size"] == 2


def test_heavy_atom_range_is_checked():
    with pytest.raises(ValueError, match="min_heavy_atoms <= max_heavy_atoms"):
        xtb.generate(1, 1, min_heavy_atoms=12, max_heavy_atoms=11)


def test_missing_extras_say_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tblite", None)
    with pytest.raises(ImportError, match=r'pip install "hipnnts-kernels\[xtb\]"'):
        xtb.generate(1, 1)


def test_embedded_dataset():
    c = load_embedded()
    assert EMBEDDED_PATH.stat().st_size <= 5 * 2**20
    assert len(c) >= 4000 and set(c.species.unique().tolist()) == {1, 6, 7, 8}
    assert all(torch.isfinite(t).all() for t in (c.positions, c.energy, c.forces))
    assert len(set(c.molecule_names)) == len(c.molecule_names) == int(c.molecule.max()) + 1
    p = c.provenance
    assert PROVENANCE_KEYS <= set(p) and {"rdkit", "tblite"} <= set(p["versions"])
    recipe = {k: p["recipe"][k] for k in ("n_molecules", "conformers_per_molecule", "max_heavy_atoms")}
    assert recipe == {k: xtb.EMBEDDED_RECIPE[k] for k in recipe} and p["seed"] == xtb.EMBEDDED_RECIPE["seed"]
    assert tuple(p["recipe"]["displacement_sigma_angstrom"]) == xtb.EMBEDDED_RECIPE["displacement"]
    assert float(c.forces.abs().mean()) > 10.0  # kcal/mol/Å: the zero-force baseline is far from a fit
    assert float(c.forces.norm(dim=1).max()) <= xtb.MAX_FORCE + 1e-3


def test_transfer_set_holds_larger_molecules_than_the_embedded_set():
    """The transfer set: the recipe it names, finite labels, and molecules disjoint from (and larger
    than) every embedded one."""
    c, embedded = load_transfer(), load_embedded()
    assert TRANSFER_PATH.stat().st_size <= 2**20
    p = c.provenance
    recipe = {k: p["recipe"][k] for k in ("n_molecules", "conformers_per_molecule", "min_heavy_atoms",
                                          "max_heavy_atoms")}
    assert recipe == {k: xtb.TRANSFER_RECIPE[k] for k in recipe} and p["seed"] == xtb.TRANSFER_RECIPE["seed"]
    assert len(c) == recipe["n_molecules"] * recipe["conformers_per_molecule"]
    assert set(c.species.unique().tolist()) <= {1, 6, 7, 8}
    assert all(torch.isfinite(t).all() for t in (c.positions, c.energy, c.forces))
    assert not set(c.molecule_names) & set(embedded.molecule_names)
    heavy = lambda data: torch.zeros(len(data), dtype=torch.int64).index_add_(  # noqa: E731
        0, data.conformer_index, (data.species > 1).long())
    assert int(heavy(c).min()) == recipe["min_heavy_atoms"] > int(heavy(embedded).max())
