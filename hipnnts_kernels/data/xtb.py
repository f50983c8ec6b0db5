"""Off-equilibrium CHNO conformers labelled with GFN2-xTB, and the dataset shipped with the package.

The recipe of :func:`generate`:

1. Seeds: SMILES from ``rdkit/Data/NCI/first_5K.smi`` (or a given file, first token of each line),
   kept if neutral, closed shell, one fragment, only H, C, N, O and 1..``max_heavy_atoms`` heavy
   atoms; de-duplicated by canonical SMILES, sorted, then shuffled with ``seed``. Molecules are
   taken in that order until ``n_molecules`` have succeeded.
2. Starting structures: RDKit adds hydrogens, embeds ``conformers_per_molecule`` ETKDGv3
   conformers (different torsions and ring puckers) and relaxes them with MMFF94 (UFF where MMFF
   has no parameters).
3. Off-equilibrium conformers: conformer k starts from embedded structure k (cycling if fewer were
   embedded) and moves every atom by an isotropic Gaussian whose sigma is drawn per conformer
   uniformly from ``displacement`` (default 0.01-0.06 Å). A bond length then varies with std
   sigma * sqrt(2); for a stiff X-H stretch (k ~ 700 kcal/mol/Å^2) that is the classical thermal
   spread at T = 2 k sigma^2 / k_B: about 70 K to 2500 K over the default range. The shipped set
   has force component std 41 kcal/mol/Å (rMD17 ethanol at 500 K: 28) and 0.5% of conformers
   over the force cap below; sigmas up to 0.12 Å (~10^4 K) put ~20% over it.
4. Labels: GFN2-xTB single points with tblite (default accuracy and electronic temperature).
   A conformer is rejected, and another drawn, if two atoms are closer than 0.6 Å, if the SCC does
   not converge, or if an atom's force exceeds 500 kcal/mol/Å; a molecule is dropped (and the next
   candidate taken) if it cannot be embedded or more than 4x its conformers are rejected.

All randomness of a molecule comes from ``(seed, crc32(canonical SMILES))`` and every xTB process
runs one OpenMP thread, so the arrays do not depend on ``workers`` or the order of work.

The file shipped in the package (:mod:`hipnnts_kernels.data.embedded`) was made with
:data:`EMBEDDED_RECIPE`, the defaults of the command line: ``hipnnts data xtb OUT.h5 --workers 2``. The
shipped transfer set of larger molecules (``load_transfer``) was made with :data:`TRANSFER_RECIPE`:
``hipnnts data xtb OUT.h5 --molecules 120 --conformers-per-molecule 5 --seed 1 --min-heavy-atoms 12
--max-heavy-atoms 16 --workers 2``.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import importlib
import importlib.metadata
import multiprocessing
import os
import platform
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from .conformers import Conformers
from .formats import save
from .units import energy_factor, length_factor

ELEMENTS = (1, 6, 7, 8)
MIN_DISTANCE = 0.6  # Å
MAX_FORCE = 500.0  # kcal/mol/Å, per atom
ATTEMPTS_PER_CONFORMER = 4
#: Arguments of :func:`generate` for the shipped file (NCI first 5K has 403 molecules of <= 9 heavy atoms
#: and 748 of <= 11).
EMBEDDED_RECIPE = dict(n_molecules=730, conformers_per_molecule=7, seed=0, max_heavy_atoms=11,
                       displacement=(0.01, 0.06))
#: Arguments of :func:`generate` for the shipped transfer set: molecules larger than any in the embedded
#: set (12 to 16 heavy atoms; the first 5K hold 865), so disjoint from it, with the same displacements.
TRANSFER_RECIPE = dict(n_molecules=120, conformers_per_molecule=5, seed=1, min_heavy_atoms=12, max_heavy_atoms=16,
                       displacement=(0.01, 0.06))
_INSTALL_HINT = 'pip install "hipnnts-kernels[xtb]"'


def _require(*modules: str) -> None:
    try:
        for module in modules:
            importlib.import_module(module)
    except ImportError:
        raise ImportError(f"xTB data generation needs RDKit and tblite: {_INSTALL_HINT}") from None


def default_smiles_file() -> Path:
    """``first_5K.smi`` of the NCI set shipped with RDKit."""
    _require("rdkit")
    from rdkit import RDConfig

    return Path(RDConfig.RDDataDir) / "NCI" / "first_5K.smi"


def candidate_smiles(path: str | os.PathLike, max_heavy_atoms: int,
                     min_heavy_atoms: int = 1) -> tuple[list[str], dict[str, int]]:
    """Sorted unique canonical SMILES of ``path`` that pass the filter of the recipe, and the count
    of lines dropped by each reason."""
    _require("rdkit")
    from rdkit import Chem, rdBase

    kept, dropped = set(), Counter()
    with open(path) as file, rdBase.BlockLogs():
        for line in file:
            if not line.strip() or line.startswith("#"):
                continue
            mol = Chem.MolFromSmiles(line.split()[0])
            if mol is None:
                dropped["unparsable"] += 1
                continue
            atoms = Chem.AddHs(mol).GetAtoms()
            if any(a.GetAtomicNum() not in ELEMENTS for a in atoms):
                dropped["elements"] += 1
            elif (any(a.GetFormalCharge() or a.GetNumRadicalElectrons() for a in atoms)
                  or sum(a.GetAtomicNum() for a in atoms) % 2):
                dropped["charged_or_open_shell"] += 1
            elif len(Chem.GetMolFrags(mol)) != 1:
                dropped["fragments"] += 1
            elif not min_heavy_atoms <= mol.GetNumHeavyAtoms() <= max_heavy_atoms:
                dropped["size"] += 1
            else:
                smiles = Chem.MolToSmiles(mol)
                if smiles in kept:
                    dropped["duplicate"] += 1
                kept.add(smiles)
    return sorted(kept), dict(dropped)


def _starting_structures(smiles: str, n: int, rdkit_seed: int) -> tuple[np.ndarray, np.ndarray, str] | None:
    """Atomic numbers (N,), up to ``n`` relaxed structures (n', N, 3) Å and the force field, or None."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    params = AllChem.ETKDGv3()
    params.randomSeed = rdkit_seed
    ids = list(AllChem.EmbedMultipleConfs(mol, numConfs=n, params=params))
    if not ids:
        params.useRandomCoords = True
        ids = list(AllChem.EmbedMultipleConfs(mol, numConfs=n, params=params))
    if not ids:
        return None
    if AllChem.MMFFHasAllMoleculeParams(mol):
        AllChem.MMFFOptimizeMoleculeConfs(mol, maxIters=2000)
        force_field = "MMFF94"
    else:
        AllChem.UFFOptimizeMoleculeConfs(mol, maxIters=2000)
        force_field = "UFF"
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.int64)
    return z, np.stack([mol.GetConformer(i).GetPositions() for i in ids]), force_field


def _xtb(z: np.ndarray, positions: np.ndarray) -> tuple[float, np.ndarray]:
    """GFN2-xTB energy (kcal/mol) and true forces (N, 3) kcal/mol/Å at ``positions`` (N, 3) Å."""
    from tblite.interface import Calculator

    bohr, hartree = length_factor("bohr"), energy_factor("hartree")
    calc = Calculator("GFN2-xTB", z, positions / bohr)
    calc.set("verbosity", 0)
    result = calc.singlepoint()
    return float(result.get("energy")) * hartree, -result.get("gradient") * (hartree / bohr)


def _molecule(task: tuple[str, int, int, tuple[float, float]]) -> dict:
    """Label the conformers of one molecule (run in a worker). ``task``: SMILES, seed, conformers,
    sigma range (Å). Returns arrays (species (N,), positions and forces (K, N, 3), energy (K,)) and
    rejection counts, or ``failed`` with the reason."""
    from tblite.exceptions import TBLiteRuntimeError

    smiles, seed, n_conf, (sigma_lo, sigma_hi) = task
    rng = np.random.default_rng([seed, zlib.crc32(smiles.encode())])
    start = _starting_structures(smiles, n_conf, int(rng.integers(2**31 - 1)))
    if start is None:
        return dict(failed="embedding_failed")
    z, structures, force_field = start
    rejected, kept = Counter(), []
    for _ in range(ATTEMPTS_PER_CONFORMER * n_conf):
        if len(kept) == n_conf:
            break
        sigma = rng.uniform(sigma_lo, sigma_hi)
        positions = structures[len(kept) % len(structures)] + rng.normal(0.0, sigma, structures.shape[1:])
        distances = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
        if np.min(distances[np.triu_indices(len(z), 1)], initial=np.inf) < MIN_DISTANCE:
            rejected["close_contact"] += 1
            continue
        try:
            energy, forces = _xtb(z, positions)
        except TBLiteRuntimeError:
            rejected["scc_not_converged"] += 1
            continue
        if not np.isfinite(forces).all() or np.linalg.norm(forces, axis=1).max() > MAX_FORCE:
            rejected["large_force"] += 1
            continue
        kept.append((positions, energy, forces))
    if len(kept) < n_conf:
        return dict(failed="too_many_rejections", rejected=dict(rejected))
    positions, energy, forces = (np.stack(x) for x in zip(*kept))
    return dict(species=z, positions=positions, energy=energy, forces=forces, rejected=dict(rejected),
                force_field=force_field)


@contextlib.contextmanager
def _single_threaded_pool(workers: int) -> Iterator[multiprocessing.pool.Pool]:
    """Spawned worker processes whose OpenMP runs one thread: OMP_NUM_THREADS must be in their
    environment at start, before torch or tblite load libgomp."""
    saved = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        pool = multiprocessing.get_context("spawn").Pool(workers)
    finally:
        if saved is None:
            del os.environ["OMP_NUM_THREADS"]
        else:
            os.environ["OMP_NUM_THREADS"] = saved
    with pool:
        yield pool


def generate(n_molecules: int, conformers_per_molecule: int, *, seed: int = 0, max_heavy_atoms: int = 9,
             min_heavy_atoms: int = 1, smiles_file: str | os.PathLike | None = None,
             displacement: tuple[float, float] = (0.01, 0.06), workers: int = 1, progress: bool = True) -> Conformers:
    """Generate ``n_molecules`` x ``conformers_per_molecule`` off-equilibrium conformers with
    GFN2-xTB energies (kcal/mol) and true forces (kcal/mol/Å); see the module docstring for the recipe.

    Args:
        seed: selects the molecules and all their structures; results do not depend on ``workers``.
        min_heavy_atoms, max_heavy_atoms: the molecules' range of heavy (non-hydrogen) atoms.
        smiles_file: SMILES source (first token per line); default RDKit's ``NCI/first_5K.smi``.
        displacement: (min, max) of the per-conformer Gaussian sigma, Å.
        workers: worker processes (each runs xTB on one OpenMP thread).
        progress: show a progress bar (stderr).

    The work runs in spawned processes (also for ``workers=1``), so call this from an importable
    script under ``if __name__ == "__main__":`` (not from stdin) or through the command line.
    """
    if n_molecules < 1 or conformers_per_molecule < 1 or workers < 1:
        raise ValueError("n_molecules, conformers_per_molecule and workers must be >= 1")
    if not 1 <= min_heavy_atoms <= max_heavy_atoms:
        raise ValueError(f"need 1 <= min_heavy_atoms <= max_heavy_atoms, got {min_heavy_atoms} and {max_heavy_atoms}")
    sigma_lo, sigma_hi = map(float, displacement)
    if not 0.0 < sigma_lo <= sigma_hi:
        raise ValueError(f"displacement must be (min, max) with 0 < min <= max, got {displacement}")
    _require("rdkit", "tblite")
    from tqdm import tqdm

    started = time.perf_counter()
    source = Path(smiles_file) if smiles_file is not None else default_smiles_file()
    candidates, screened_out = candidate_smiles(source, max_heavy_atoms, min_heavy_atoms)
    if n_molecules > len(candidates):
        raise ValueError(f"{source} has only {len(candidates)} molecules passing the filter (CHNO, neutral, "
                         f"closed shell, {min_heavy_atoms}..{max_heavy_atoms} heavy atoms), {n_molecules} requested")
    order = np.random.default_rng(seed).permutation(len(candidates))
    tasks = ((candidates[i], seed, conformers_per_molecule, (sigma_lo, sigma_hi)) for i in order)

    names, results, rejected, failed, force_fields = [], [], Counter(), Counter(), Counter()
    bar = tqdm(total=n_molecules, desc="GFN2-xTB", unit="mol", disable=not progress)
    with _single_threaded_pool(workers) as pool:
        for i, result in zip(order, pool.imap(_molecule, tasks)):
            rejected.update(result.get("rejected", {}))
            if "failed" in result:
                failed[result["failed"]] += 1
                continue
            names.append(candidates[i])
            results.append(result)
            force_fields[result["force_field"]] += 1
            bar.update()
            if len(results) == n_molecules:
                break
    bar.close()
    if len(results) < n_molecules:
        raise RuntimeError(f"only {len(results)} of {n_molecules} molecules succeeded ({dict(failed)})")

    species = [np.tile(r["species"], conformers_per_molecule) for r in results]
    counts = np.repeat([len(r["species"]) for r in results], conformers_per_molecule)
    rdkit, tblite = (importlib.metadata.version(m) for m in ("rdkit", "tblite"))
    from .. import __version__

    provenance = dict(
        generator="hipnnts_kernels.data.xtb.generate", method="GFN2-xTB (tblite singlepoint, default accuracy and "
        "electronic temperature, neutral, closed shell)", seed=seed,
        recipe=dict(n_molecules=n_molecules, conformers_per_molecule=conformers_per_molecule,
                    min_heavy_atoms=min_heavy_atoms, max_heavy_atoms=max_heavy_atoms, elements=list(ELEMENTS),
                    embedding="RDKit ETKDGv3",
                    relaxation="MMFF94, UFF fallback", displacement_sigma_angstrom=[sigma_lo, sigma_hi],
                    displacement="isotropic Gaussian on every atom, sigma uniform per conformer",
                    min_distance_angstrom=MIN_DISTANCE, max_force_kcal_per_mol_angstrom=MAX_FORCE,
                    attempts_per_conformer=ATTEMPTS_PER_CONFORMER),
        smiles_source=dict(path=str(source) if smiles_file is not None else "rdkit/Data/NCI/first_5K.smi",
                           sha256=hashlib.sha256(source.read_bytes()).hexdigest(), candidates=len(candidates),
                           screened_out=screened_out),
        versions=dict(rdkit=rdkit, tblite=tblite, numpy=np.__version__, python=platform.python_version(),
                      hipnnts_kernels=__version__),
        created_utc=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        rejected_conformers=dict(rejected), failed_molecules=dict(failed), force_fields=dict(force_fields),
        workers=workers, wall_time_s=round(time.perf_counter() - started, 1),
        energy_unit="kcal/mol", length_unit="angstrom", forces_convention="forces",
    )
    return Conformers(
        species=torch.from_numpy(np.concatenate(species)),
        positions=torch.from_numpy(np.concatenate([r["positions"].reshape(-1, 3) for r in results])),
        atom_ptr=torch.from_numpy(np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)),
        energy=torch.from_numpy(np.concatenate([r["energy"] for r in results])),
        forces=torch.from_numpy(np.concatenate([r["forces"].reshape(-1, 3) for r in results])),
        molecule=torch.arange(n_molecules).repeat_interleave(conformers_per_molecule),
        molecule_names=names, provenance=provenance,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``hipnnts data xtb OUT.h5``; the defaults make the shipped file."""
    r = EMBEDDED_RECIPE
    parser.add_argument("out", type=Path, help="output file (compact HDF5)")
    parser.add_argument("--molecules", type=int, default=r["n_molecules"], help="default %(default)s")
    parser.add_argument("--conformers-per-molecule", type=int, default=r["conformers_per_molecule"],
                        help="default %(default)s")
    parser.add_argument("--seed", type=int, default=r["seed"], help="default %(default)s")
    parser.add_argument("--min-heavy-atoms", type=int, default=1, help="default %(default)s")
    parser.add_argument("--max-heavy-atoms", type=int, default=r["max_heavy_atoms"], help="default %(default)s")
    parser.add_argument("--displacement", type=float, nargs=2, default=r["displacement"], metavar=("MIN", "MAX"),
                        help="range of the per-conformer Gaussian displacement sigma, Å (default %(default)s)")
    parser.add_argument("--smiles-file", type=Path, default=None, help="SMILES source (default RDKit's NCI first 5K)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def run(args: argparse.Namespace) -> None:
    """Generate with the parsed ``args``, write ``args.out`` and print a summary."""
    data = generate(args.molecules, args.conformers_per_molecule, seed=args.seed,
                    min_heavy_atoms=args.min_heavy_atoms, max_heavy_atoms=args.max_heavy_atoms,
                    smiles_file=args.smiles_file,
                    displacement=tuple(args.displacement), workers=args.workers, progress=not args.quiet)
    save(data, args.out)
    p = data.provenance
    print(f"wrote {args.out}: {len(data)} conformers of {len(data.molecule_names)} molecules, "
          f"{data.species.shape[0]} atoms, mean |F| {float(data.forces.abs().mean()):.1f} kcal/mol/Å, "
          f"{p['wall_time_s']} s; rejected conformers {p['rejected_conformers']}, "
          f"failed molecules {p['failed_molecules']}")
