"""Quickstart: HIP-NN-TS energies and forces, then a short energy + force training run.

    python python/quickstart.py                       # ethanol, then 100 steps on the embedded dataset
    python python/quickstart.py --xyz my_data.xyz --steps 200      # your own extended XYZ file

The training part reads 512 conformers of the dataset shipped with the package (GFN2-xTB energies
and forces of small CHNO molecules, kcal/mol and Å), or any extended XYZ file with per-frame
``energy`` and per-atom ``forces`` (ASE's reader; units as in the file). It fits per-species self
energies by least squares and trains with loss = MSE(E) + MSE(F) + hierarchicality + 1e-6 L2,
printing the errors as they fall. Copy it and adapt it to your data; for real training runs use
``hipnnts train`` (validation and test splits, checkpoints, resume, metrics, several GPUs).
"""
from __future__ import annotations

import argparse
import time

import torch

from hipnnts_kernels import HipnnTS, pairs_within_cutoff

ETHANOL_SPECIES = torch.tensor([6, 6, 8, 1, 1, 1, 1, 1, 1])
ETHANOL_POSITIONS = torch.tensor([  # Å
    [-0.0137, 0.5510, 0.0000], [1.2466, -0.3040, 0.0000], [-1.1660, -0.2787, 0.0000],
    [-0.0446, 1.1956, 0.8820], [-0.0446, 1.1956, -0.8820], [1.2877, -0.9410, 0.8866],
    [1.2877, -0.9410, -0.8866], [2.1459, 0.3155, 0.0000], [-1.9384, 0.3062, 0.0000],
])


def energy_and_forces(model: HipnnTS) -> None:
    """Energy and forces of one ethanol molecule with an untrained model."""
    mol_index = torch.zeros(len(ETHANOL_SPECIES), dtype=torch.long)
    pair_first, pair_second = pairs_within_cutoff(ETHANOL_POSITIONS, mol_index, model.cutoff)
    out = model(ETHANOL_SPECIES, ETHANOL_POSITIONS, mol_index, pair_first, pair_second, n_molecules=1, forces=True)
    print(f"ethanol: {len(ETHANOL_SPECIES)} atoms, {len(pair_first)} pairs, energy {out.energy.item():.6f}")
    print("forces (first three atoms):\n", out.forces[:3].detach())


def load_xyz(path: str) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor, list[torch.Tensor]]:
    """Species, positions, energies and forces of every frame of an extended XYZ file."""
    import ase.io  # optional dependency: pip install ase

    frames = ase.io.read(path, index=":")
    species = [torch.as_tensor(f.numbers, dtype=torch.long) for f in frames]
    positions = [torch.as_tensor(f.positions, dtype=torch.float32) for f in frames]
    energies = torch.tensor([f.get_potential_energy() for f in frames], dtype=torch.float64)
    forces = [torch.as_tensor(f.get_forces(), dtype=torch.float32) for f in frames]
    return species, positions, energies, forces


def load_embedded_frames(n_frames: int, seed: int = 0) -> tuple[list[torch.Tensor], list[torch.Tensor],
                                                                   torch.Tensor, list[torch.Tensor]]:
    """The same four lists for ``n_frames`` random conformers of the dataset shipped with the package."""
    from hipnnts_kernels.data.embedded import load_embedded

    data = load_embedded()
    keep = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:n_frames]
    data = data.subset(keep.sort().values)
    bounds = list(zip(data.atom_ptr[:-1].tolist(), data.atom_ptr[1:].tolist()))
    return ([data.species[a:b] for a, b in bounds], [data.positions[a:b].float() for a, b in bounds], data.energy,
            [data.forces[a:b].float() for a, b in bounds])


def train(model: HipnnTS, path: str | None, steps: int, batch_size: int) -> None:
    species, positions, energies, forces = load_xyz(path) if path else load_embedded_frames(512)
    path = path or "the embedded GFN2-xTB dataset"
    n_frames = len(species)
    mol_index = torch.cat([torch.full((len(s),), i) for i, s in enumerate(species)])
    all_species = torch.cat(species)
    e0 = model.fit_self_energies(model.species_counts(all_species, mol_index, n_frames), energies)
    print(f"{n_frames} frames from {path}; fitted self energies {e0.tolist()}")
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    start = time.perf_counter()
    for step in range(steps):
        frames = torch.randperm(n_frames)[:batch_size].tolist()
        sp = torch.cat([species[f] for f in frames])
        pos = torch.cat([positions[f] for f in frames])
        mol = torch.cat([torch.full((len(species[f]),), k) for k, f in enumerate(frames)])
        pf, ps = pairs_within_cutoff(pos, mol, model.cutoff)
        out = model(sp, pos, mol, pf, ps, n_molecules=len(frames), forces=True)
        e_target = energies[frames].to(out.energy.dtype)
        f_target = torch.cat([forces[f] for f in frames])
        e_loss = (out.energy - e_target).square().mean()
        f_loss = (out.forces - f_target).square().mean()
        l2 = sum(p.square().sum() for p in model.regularization_params())
        loss = e_loss + f_loss + out.hierarchicality.mean() + 1e-6 * l2
        optimizer.zero_grad()
        loss.backward()  # back-propagates through the force computation: the double backward
        optimizer.step()
        if step % max(1, steps // 10) == 0 or step == steps - 1:
            print(f"step {step:4d}  energy RMSE {e_loss.sqrt():8.3f}  force RMSE {f_loss.sqrt():8.3f}  "
                  f"({time.perf_counter() - start:.1f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lmax", type=int, default=2, choices=(0, 1, 2), help="0 = HIP-NN, 1/2 = HIP-NN-TS")
    parser.add_argument("--xyz", help="extended XYZ file to train on (energy and forces per frame; default: 512 "
                                      "conformers of the embedded dataset)")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--features", type=int, default=64, help="width of every layer (the paper's: 128)")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = HipnnTS(n_features=args.features, n_sensitivities=20, cutoff=6.5, n_interaction_layers=2,
                    n_atom_layers=3, lmax=args.lmax)
    print(model.__class__.__name__, f"lmax={args.lmax}", f"{sum(p.numel() for p in model.parameters()):,} parameters")
    energy_and_forces(model)
    train(model, args.xyz, args.steps, args.batch_size)


if __name__ == "__main__":
    main()
