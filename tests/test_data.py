"""Datasets: the COMP6 (pyanitools) reader and its force convention, XYZ, the compact format, splits."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from hipnnts_kernels.data import Conformers, DeviceDataset, load, read_ani_h5, read_xyz, save, split
from hipnnts_kernels.data.units import HARTREE_IN_KCAL_PER_MOL, energy_factor

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
COMP6 = DATA / "comp6_s66x8_wb97x631gd.h5"
ETHANOL = DATA / "rmd17_ethanol_100.xyz"
needs_comp6 = pytest.mark.skipif(not COMP6.is_file(), reason="shared COMP6 file not present")
needs_ethanol = pytest.mark.skipif(not ETHANOL.is_file(), reason="shared ethanol file not present")


@pytest.fixture(scope="module")
def comp6() -> Conformers:
    return read_ani_h5(COMP6, forces_convention="gradient")


@needs_comp6
def test_comp6_layout_units_and_sign(comp6):
    assert len(comp6) == 528 and len(comp6.molecule_names) == 66
    with h5py.File(COMP6, "r") as f:
        raw = f["s66x8/mol00"]
        n = raw["species"].shape[0]
        assert torch.equal(comp6.species[:n], torch.tensor([8, 1, 1, 8, 1, 1]))
        torch.testing.assert_close(comp6.energy[:8], torch.from_numpy(raw["energies"][()]) * HARTREE_IN_KCAL_PER_MOL)
        gradient = torch.from_numpy(raw["forces"][()].astype(np.float64)).reshape(-1, 3)
        torch.testing.assert_close(comp6.forces[: 8 * n], -gradient * HARTREE_IN_KCAL_PER_MOL)  # negated
    assert comp6.provenance["forces_convention"] == "gradient"


@needs_comp6
def test_comp6_forces_are_minus_the_energy_gradient(comp6):
    """Along each dimer's dissociation curve, E(k+1) - E(k) ~ -integral of F . dR (trapezoid)."""
    agree, rel = 0, []
    ptr = comp6.atom_ptr
    for m in range(len(comp6.molecule_names)):
        confs = torch.nonzero(comp6.molecule == m).flatten().tolist()
        for a, b in zip(confs[:-1], confs[1:]):
            ra, rb = comp6.positions[ptr[a]:ptr[a + 1]], comp6.positions[ptr[b]:ptr[b + 1]]
            fa, fb = comp6.forces[ptr[a]:ptr[a + 1]], comp6.forces[ptr[b]:ptr[b + 1]]
            predicted = -0.5 * ((fa + fb) * (rb - ra)).sum()
            actual = comp6.energy[b] - comp6.energy[a]
            agree += bool(torch.sign(predicted) == torch.sign(actual))
            rel.append(float((predicted - actual).abs() / actual.abs().clamp_min(1e-9)))
    assert agree > 0.9 * len(rel) and float(np.median(rel)) < 0.15


@needs_comp6
def test_force_convention_is_required_and_checked():
    with pytest.raises(TypeError, match="forces_convention"):
        read_ani_h5(COMP6)
    with pytest.raises(ValueError, match="forces_convention must be one of"):
        read_ani_h5(COMP6, forces_convention="force")
    assert read_ani_h5(COMP6, forces_convention=None).forces is None
    as_forces = read_ani_h5(COMP6, forces_convention="forces", energy_unit="ev")
    as_gradient = read_ani_h5(COMP6, forces_convention="gradient", energy_unit="ev")
    torch.testing.assert_close(as_forces.forces, -as_gradient.forces)
    assert as_forces.energy[0] == pytest.approx(float(read_ani_h5(COMP6, forces_convention=None).energy[0])
                                                / HARTREE_IN_KCAL_PER_MOL * energy_factor("ev"))


@needs_ethanol
def test_xyz_reader():
    ethanol = read_xyz(ETHANOL, energy_unit="kcal/mol")
    assert len(ethanol) == 100 and ethanol.molecule_names == ["C2H6O"] and ethanol.n_atoms.unique().tolist() == [9]
    assert ethanol.energy[0] == pytest.approx(-97079.92222178938)
    assert ethanol.forces[0].tolist() == pytest.approx([-32.31755688687498, 3.563851157625127, -8.174049461946362])
    with pytest.raises(TypeError, match="energy_unit"):
        read_xyz(ETHANOL)
    with pytest.raises(ValueError, match="energy_unit must be one of"):
        read_xyz(ETHANOL, energy_unit="kcal")


@needs_comp6
def test_compact_format_round_trip_is_atomic(comp6, tmp_path):
    path = tmp_path / "s66.h5"
    save(comp6, path)
    assert [p.name for p in tmp_path.iterdir()] == ["s66.h5"]  # no temporary file left behind
    back = load(path)
    assert torch.equal(back.species, comp6.species) and torch.equal(back.atom_ptr, comp6.atom_ptr)
    assert torch.equal(back.energy, comp6.energy) and torch.equal(back.molecule, comp6.molecule)
    torch.testing.assert_close(back.positions, comp6.positions, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(back.forces, comp6.forces, rtol=1e-6, atol=1e-5)
    assert back.molecule_names == comp6.molecule_names and back.provenance == comp6.provenance


def test_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such dataset file"):
        load(tmp_path / "missing.h5")
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(ValueError, match="is not a readable HDF5 file"):
        load(tmp_path / "text.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(ValueError, match="is not a hipnnts-conformers file"):
        load(tmp_path / "other.h5")
    with pytest.raises(ValueError, match="no group holds both"):
        read_ani_h5(tmp_path / "other.h5", forces_convention=None)
    with h5py.File(tmp_path / "ani.h5", "w") as f:
        g = f.create_group("mol")
        g["coordinates"], g["energies"], g["species"] = np.zeros((2, 3, 3)), np.zeros(2), np.array([b"H", b"H"])
    with pytest.raises(ValueError, match=r"coordinates has shape \(2, 3, 3\), expected \(2, 2, 3\)"):
        read_ani_h5(tmp_path / "ani.h5", forces_convention=None)
    with h5py.File(tmp_path / "ani2.h5", "w") as f:
        g = f.create_group("mol")
        g["coordinates"], g["energies"], g["species"] = np.zeros((1, 1, 3)), np.array([np.nan]), np.array([b"Xx"])
    with pytest.raises(ValueError, match=r"unknown element symbols \['Xx'\]"):
        read_ani_h5(tmp_path / "ani2.h5", forces_convention=None)
    with h5py.File(tmp_path / "ani3.h5", "w") as f:
        g = f.create_group("mol")
        g["coordinates"], g["energies"], g["species"] = np.ones((2, 2, 3)), np.array([0.0, np.inf]), np.array([1, 1])
    with pytest.raises(ValueError, match="no 'forces'"):
        read_ani_h5(tmp_path / "ani3.h5", forces_convention="forces")
    with pytest.raises(ValueError, match="energy holds non-finite values"):
        read_ani_h5(tmp_path / "ani3.h5", forces_convention=None)


@needs_comp6
def test_splits(comp6):
    train, valid, test = split(comp6, (0.8, 0.1, 0.1), by="molecule", seed=3)
    assert torch.equal(torch.cat([train, valid, test]).sort().values, torch.arange(len(comp6)))
    molecules = [set(comp6.molecule[p].tolist()) for p in (train, valid, test)]
    assert not (molecules[0] & molecules[1] or molecules[0] & molecules[2] or molecules[1] & molecules[2])
    assert [len(m) for m in molecules] == [53, 6, 7] or sum(len(m) for m in molecules) == 66
    again = split(comp6, (0.8, 0.1, 0.1), by="molecule", seed=3)
    assert all(torch.equal(a, b) for a, b in zip(again, (train, valid, test)))
    parts = split(comp6, (0.5, 0.5), by="conformer", seed=0)
    assert [len(p) for p in parts] == [264, 264]
    with pytest.raises(ValueError, match="sum to 1"):
        split(comp6, (0.5, 0.4))
    with pytest.raises(ValueError, match="by must be"):
        split(comp6, by="atom")


@needs_comp6
def test_subset_keeps_atoms_with_their_conformers(comp6):
    picked = torch.tensor([5, 0, 527])
    sub = comp6.subset(picked)
    assert len(sub) == 3 and torch.equal(sub.energy, comp6.energy[picked])
    for k, c in enumerate(picked.tolist()):
        a, b = comp6.atom_ptr[c], comp6.atom_ptr[c + 1]
        assert torch.equal(sub.positions[sub.atom_ptr[k]:sub.atom_ptr[k + 1]], comp6.positions[a:b])
        assert torch.equal(sub.species[sub.atom_ptr[k]:sub.atom_ptr[k + 1]], comp6.species[a:b])


def test_device_batches_match_a_fresh_pair_search():
    from hipnnts_kernels import pairs_within_cutoff
    from hipnnts_kernels.synthetic import random_molecules

    species, positions, mol_index = random_molecules(12, 1, 9, seed=4)  # single atoms included
    counts = torch.bincount(mol_index)
    data = Conformers(species=species, positions=positions,
                      atom_ptr=torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(counts, 0)]),
                      energy=torch.randn(12, dtype=torch.float64), forces=torch.randn(len(species), 3,
                                                                                       dtype=torch.float64),
                      molecule=torch.arange(12), molecule_names=[str(k) for k in range(12)])
    dataset = DeviceDataset(data, cutoff=2.5, dtype=torch.float64)
    picked = torch.tensor([7, 0, 11, 3, 3])  # any order, repeats allowed
    batch = dataset.batch(picked)
    sub = data.subset(picked)
    assert torch.equal(batch.species, sub.species) and torch.equal(batch.positions, sub.positions)
    assert torch.equal(batch.mol_index, sub.conformer_index) and batch.n_molecules == 5
    assert torch.equal(batch.energy, data.energy[picked]) and torch.equal(batch.forces, sub.forces)
    pf, ps = pairs_within_cutoff(sub.positions, sub.conformer_index, 2.5)
    expected = sorted(zip(pf.tolist(), ps.tolist()))
    assert list(zip(batch.pair_first.tolist(), batch.pair_second.tolist())) == expected  # sorted by receiver
    assert len(expected) > 0
    empty = dataset.batch(torch.tensor([], dtype=torch.int64))
    assert empty.species.numel() == 0 and empty.pair_first.numel() == 0
