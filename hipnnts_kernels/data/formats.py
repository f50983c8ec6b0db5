"""Readers and the compact format.

- :func:`read_ani_h5`: the pyanitools HDF5 layout of ANI-1x and COMP6 (one group per molecule
  holding ``coordinates`` (C, N, 3), ``species`` (N,) as symbols or atomic numbers, ``energies``
  (C,) and optionally ``forces`` (C, N, 3)).
- :func:`read_xyz`: extended XYZ through ASE (optional dependency).
- :func:`save` / :func:`load`: the package's own compact HDF5 file (flattened atoms,
  per-conformer offsets, units and provenance in attributes), written atomically.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_write
from .conformers import ATOMIC_NUMBERS, Conformers
from .units import ENERGY_UNITS, energy_factor, length_factor

FORMAT_NAME = "hipnnts-conformers"
FORMAT_VERSION = 1
FORCE_CONVENTIONS = ("forces", "gradient")


def _h5py():
    import h5py

    return h5py


def _open(path: str | os.PathLike):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such dataset file: {path}")
    h5py = _h5py()
    try:
        return h5py.File(path, "r")
    except OSError as err:
        with open(path, "rb") as file:
            head = file.read(2)
        if head in (b"PK", b"\x80\x02", b"\x80\x04", b"\x80\x05"):  # what torch.save writes
            raise ValueError(f"{path} is a torch file (a checkpoint?), not a dataset: pass an HDF5 or extended XYZ "
                             "file") from None
        raise ValueError(f"{path} is not a readable HDF5 file ({err})") from None


def _atomic_numbers(raw: np.ndarray, where: str) -> np.ndarray:
    if raw.dtype.kind in "iu":
        numbers = raw.astype(np.int64)
    else:
        symbols = [s.decode() if isinstance(s, bytes) else str(s) for s in raw.tolist()]
        unknown = sorted({s for s in symbols if s not in ATOMIC_NUMBERS})
        if unknown:
            raise ValueError(f"{where}: unknown element symbols {unknown}")
        numbers = np.array([ATOMIC_NUMBERS[s] for s in symbols], dtype=np.int64)
    if numbers.ndim != 1 or (numbers < 1).any():
        raise ValueError(f"{where}: species must be a 1-D list of elements")
    return numbers


def read_ani_h5(path: str | os.PathLike, *, forces_convention: str | None, energy_unit: str = "hartree",
                length_unit: str = "angstrom", coordinates_key: str = "coordinates", species_key: str = "species",
                energy_key: str = "energies", forces_key: str = "forces") -> Conformers:
    """Read a pyanitools-layout HDF5 file (ANI-1x, COMP6, ...).

    Every group (at any depth) holding ``coordinates_key`` and ``energy_key`` is one molecule.

    Args:
        forces_convention: what the ``forces_key`` arrays hold: ``"forces"`` (-dE/dR) or
            ``"gradient"`` (+dE/dR; COMP6 files store the gradient under ``forces``), or None to
            skip forces. Required, because the files do not say.
        energy_unit, length_unit: units of the file (ANI data: hartree and angstrom).
    """
    if forces_convention not in (*FORCE_CONVENTIONS, None):
        raise ValueError(f"forces_convention must be one of {FORCE_CONVENTIONS} or None, got {forces_convention!r}")
    e_factor, r_factor = energy_factor(energy_unit), length_factor(length_unit)
    force_sign = {"forces": 1.0, "gradient": -1.0, None: 0.0}[forces_convention]
    h5py = _h5py()
    species, positions, energies, forces, counts, names = [], [], [], [], [], []
    with _open(path) as file:
        groups = []
        file.visititems(lambda name, obj: groups.append(name) if isinstance(obj, h5py.Group)
                        and coordinates_key in obj and energy_key in obj else None)
        if not groups:
            raise ValueError(f"{path}: no group holds both {coordinates_key!r} and {energy_key!r}")
        for name in sorted(groups):
            group = file[name]
            if species_key not in group:
                raise ValueError(f"{path}: group {name!r} has no {species_key!r}")
            z = _atomic_numbers(group[species_key][()], f"{path}:{name}/{species_key}")
            coords = np.asarray(group[coordinates_key][()], dtype=np.float64)
            energy = np.asarray(group[energy_key][()], dtype=np.float64)
            n_conf = energy.shape[0] if energy.ndim == 1 else -1
            if coords.shape != (n_conf, z.shape[0], 3):
                raise ValueError(f"{path}:{name}: {coordinates_key} has shape {coords.shape}, expected "
                                 f"({energy.shape[0] if energy.ndim else '?'}, {z.shape[0]}, 3) from {energy_key} "
                                 f"and {species_key}")
            if forces_convention is not None:
                if forces_key not in group:
                    raise ValueError(f"{path}:{name}: no {forces_key!r} arrays (forces_convention none reads "
                                     "energies only)")
                f = np.asarray(group[forces_key][()], dtype=np.float64)
                if f.shape != coords.shape:
                    raise ValueError(f"{path}:{name}: {forces_key} has shape {f.shape}, expected {coords.shape}")
                forces.append(f.reshape(-1, 3) * (force_sign * e_factor / r_factor))
            species.append(np.tile(z, n_conf))
            positions.append(coords.reshape(-1, 3) * r_factor)
            energies.append(energy * e_factor)
            counts.append(np.full(n_conf, z.shape[0]))
            names.append(name)
    n_per_molecule = [len(e) for e in energies]
    provenance = dict(source=str(path), format="pyanitools-h5", energy_unit=energy_unit, length_unit=length_unit,
                      forces_convention=forces_convention, keys=[coordinates_key, species_key, energy_key, forces_key])
    return _assemble(species, positions, energies, forces if forces_convention else None, counts,
                     np.repeat(np.arange(len(names)), n_per_molecule), names, provenance)


def read_xyz(path: str | os.PathLike, *, energy_unit: str, length_unit: str = "angstrom", energy_key: str = "energy",
             forces_key: str = "forces") -> Conformers:
    """Read an extended XYZ file with ASE: per-frame ``energy_key`` and per-atom ``forces_key``
    (true forces). Frames with the same chemical formula form one molecule. Frames with periodic
    boundary conditions keep their cell and pbc."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"no such dataset file: {path}")
    try:
        import ase.io
    except ImportError:
        raise ImportError("reading XYZ files needs ASE: pip install ase") from None
    e_factor, r_factor = energy_factor(energy_unit), length_factor(length_unit)
    try:
        frames = ase.io.read(str(path), index=":", format="extxyz")
    except Exception as err:  # noqa: BLE001 - ASE raises many types for a malformed file
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path} is not a readable extended XYZ file ({reason})") from None
    species, positions, energies, forces, counts, formulas, cells, pbcs = [], [], [], [], [], [], [], []
    for k, frame in enumerate(frames):
        info = {**frame.info, **(frame.calc.results if frame.calc is not None else {})}
        arrays = {**frame.arrays, **(frame.calc.results if frame.calc is not None else {})}
        if energy_key not in info:
            raise ValueError(f"{path}: frame {k} has no {energy_key!r}")
        if forces_key not in arrays:
            raise ValueError(f"{path}: frame {k} has no per-atom {forces_key!r}")
        species.append(np.asarray(frame.numbers, dtype=np.int64))
        positions.append(np.asarray(frame.positions, dtype=np.float64) * r_factor)
        energies.append(np.array([float(info[energy_key])]) * e_factor)
        forces.append(np.asarray(arrays[forces_key], dtype=np.float64) * (e_factor / r_factor))
        counts.append(np.array([len(frame)]))
        formulas.append(frame.get_chemical_formula())
        cells.append(np.asarray(frame.cell.array, dtype=np.float64) * r_factor)
        pbcs.append(np.asarray(frame.pbc, dtype=bool))
    names = sorted(set(formulas))
    molecule = np.array([names.index(f) for f in formulas])
    provenance = dict(source=str(path), format="extxyz", energy_unit=energy_unit, length_unit=length_unit,
                      forces_convention="forces", keys=[energy_key, forces_key])
    conformers = _assemble(species, positions, energies, forces, counts, molecule, names, provenance)
    if any(p.any() for p in pbcs):
        conformers.cell, conformers.pbc = torch.from_numpy(np.stack(cells)), torch.from_numpy(np.stack(pbcs))
        conformers.__post_init__()
    return conformers


def _assemble(species, positions, energies, forces, counts, molecule, names, provenance) -> Conformers:
    counts = np.concatenate(counts).astype(np.int64)
    return Conformers(
        species=torch.from_numpy(np.concatenate(species)),
        positions=torch.from_numpy(np.concatenate(positions)),
        atom_ptr=torch.from_numpy(np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)),
        energy=torch.from_numpy(np.concatenate(energies)),
        forces=None if not forces else torch.from_numpy(np.concatenate(forces)),
        molecule=torch.from_numpy(np.asarray(molecule, dtype=np.int64)),
        molecule_names=list(names), provenance=provenance,
    )


def save(conformers: Conformers, path: str | os.PathLike) -> None:
    """Write ``conformers`` to the compact format, atomically (a temporary file, then a rename).

    Positions and forces are stored as float32 (about 1e-7 relative), energies as float64.
    """
    h5py = _h5py()
    with atomic_write(path) as tmp, h5py.File(tmp, "w") as file:
        file.attrs.update(format=FORMAT_NAME, version=FORMAT_VERSION, energy_unit="kcal/mol",
                          length_unit="angstrom", forces="true forces -dE/dR, kcal/mol/angstrom",
                          provenance=json.dumps(conformers.provenance))
        file["species"] = conformers.species.numpy().astype(np.uint8)
        file["positions"] = conformers.positions.numpy().astype(np.float32)
        file["atom_ptr"] = conformers.atom_ptr.numpy()
        file["energy"] = conformers.energy.numpy()
        file["molecule"] = conformers.molecule.numpy()
        file["molecule_names"] = np.array(conformers.molecule_names, dtype=h5py.string_dtype())
        if conformers.forces is not None:
            file["forces"] = conformers.forces.numpy().astype(np.float32)
        if conformers.cell is not None:
            file["cell"] = conformers.cell.numpy()
            file["pbc"] = conformers.pbc.numpy()


def load(path: str | os.PathLike) -> Conformers:
    """Read a file written by :func:`save`."""
    with _open(path) as file:
        if file.attrs.get("format") != FORMAT_NAME:
            raise ValueError(f"{path} is not a {FORMAT_NAME} file (attribute 'format' is {file.attrs.get('format')!r})")
        if int(file.attrs.get("version", -1)) > FORMAT_VERSION:
            raise ValueError(f"{path}: format version {file.attrs['version']} is newer than this reader "
                             f"({FORMAT_VERSION}); upgrade hipnnts-kernels")
        missing = [k for k in ("species", "positions", "atom_ptr", "energy", "molecule", "molecule_names")
                   if k not in file]
        if missing:
            raise ValueError(f"{path}: missing datasets {missing}")
        read = lambda key, dtype: torch.from_numpy(np.asarray(file[key][()], dtype=dtype))  # noqa: E731
        return Conformers(
            species=read("species", np.int64), positions=read("positions", np.float64),
            atom_ptr=read("atom_ptr", np.int64), energy=read("energy", np.float64),
            forces=read("forces", np.float64) if "forces" in file else None, molecule=read("molecule", np.int64),
            molecule_names=[n.decode() if isinstance(n, bytes) else str(n) for n in file["molecule_names"][()]],
            provenance=json.loads(file.attrs.get("provenance", "{}")),
            cell=read("cell", np.float64) if "cell" in file else None,
            pbc=read("pbc", bool) if "pbc" in file else None,
        )


def detect_format(path: str | os.PathLike) -> str:
    """``"hipnnts"`` (the compact format), ``"ani"`` (pyanitools HDF5) or ``"xyz"`` (extended XYZ), from
    the file's suffix and, for HDF5, its ``format`` attribute."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such dataset file: {path}")
    if path.suffix.lower() in (".xyz", ".extxyz"):
        return "xyz"
    with _open(path) as file:
        return "hipnnts" if file.attrs.get("format") == FORMAT_NAME else "ani"


def ani_holds_forces(path: str | os.PathLike) -> bool:
    """Whether a pyanitools file has ``forces`` arrays (whose sign convention it does not record)."""
    with _open(path) as file:
        found = []
        file.visititems(lambda name, obj: found.append(name) if name.endswith("/forces") else None)
    return bool(found)


def read(path: str | os.PathLike, format: str = "auto", *, energy_unit: str | None = None,
         length_unit: str = "angstrom", forces_convention: str | None = None) -> Conformers:
    """Read any supported dataset file (``format``: auto, hipnnts, ani or xyz).

    ANI files need ``forces_convention`` when they hold forces (see :func:`read_ani_h5`; ``"none"``
    skips forces) and default to hartree; XYZ files need ``energy_unit``. The compact format carries
    its units, so the unit arguments must be left unset for it.
    """
    if format not in ("auto", "hipnnts", "ani", "xyz"):
        raise ValueError(f"format must be auto, hipnnts, ani or xyz, got {format!r}")
    format = detect_format(path) if format == "auto" else format
    if format == "hipnnts":
        if energy_unit is not None or forces_convention is not None:
            raise ValueError(f"{path} is in the compact format, which records its own units and force convention; "
                             "do not pass energy_unit or forces_convention")
        return load(path)
    if format == "xyz":
        if energy_unit is None:
            raise ValueError(f"{path}: extended XYZ files do not record their energy unit; pass energy_unit "
                             f"(one of {sorted(ENERGY_UNITS)})")
        return read_xyz(path, energy_unit=energy_unit, length_unit=length_unit)
    if forces_convention is None and ani_holds_forces(path):
        raise ValueError(f"{path} holds 'forces' arrays, and pyanitools files do not say whether they are forces "
                         "(-dE/dR) or gradients (+dE/dR; COMP6 stores gradients): pass forces_convention "
                         "'forces', 'gradient' or 'none' (train on energies only)")
    return read_ani_h5(path, forces_convention=None if forces_convention == "none" else forces_convention,
                       energy_unit=energy_unit or "hartree", length_unit=length_unit)
