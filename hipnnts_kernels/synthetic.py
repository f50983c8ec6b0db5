"""Synthetic molecules for tests and benchmarks: random species on a jittered cubic grid."""
from __future__ import annotations

import torch
from torch import Tensor


def random_molecules(n_molecules: int, min_atoms: int, max_atoms: int, *, seed: int,
                     species: tuple[int, ...] = (1, 6, 7, 8), spacing: float = 1.1, jitter: float = 0.3,
                     dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor, Tensor]:
    """Random non-overlapping molecules, flattened.

    Each molecule has between ``min_atoms`` and ``max_atoms`` atoms placed on distinct points of a
    cubic grid of ``spacing`` Å, each moved by up to ``jitter * spacing / 2`` per axis, so no two
    atoms come closer than ``(1 - jitter) * spacing``.

    Returns:
        species (N,) atomic numbers, positions (N, 3) in Å, mol_index (N,).
    """
    g = torch.Generator().manual_seed(seed)
    all_species, positions, mol_index = [], [], []
    for m in range(n_molecules):
        n = int(torch.randint(min_atoms, max_atoms + 1, (1,), generator=g))
        side = round(n ** (1 / 3) + 1.5)
        grid = torch.stack(torch.meshgrid(*[torch.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3)
        cells = grid[torch.randperm(grid.shape[0], generator=g)[:n]].to(torch.float64)
        positions.append(spacing * (cells + jitter * (torch.rand(n, 3, generator=g, dtype=torch.float64) - 0.5)))
        all_species.append(torch.tensor(species)[torch.randint(0, len(species), (n,), generator=g)])
        mol_index.append(torch.full((n,), m))
    return torch.cat(all_species), torch.cat(positions).to(dtype), torch.cat(mol_index)


def toy_conformers(n_molecules: int, conformers_per_molecule: int, *, seed: int, max_atoms: int = 8,
                   displacement: float = 0.08):
    """A small learnable dataset for tests: random molecules, each displaced into several
    conformers, labelled by a Morse pair potential plus per-species self energies (kcal/mol, Å).

    Returns:
        :class:`~hipnnts_kernels.data.Conformers` with energies and true forces.
    """
    from .data.conformers import Conformers

    species, positions, mol_index = random_molecules(n_molecules, 3, max_atoms, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    self_energy = {1: -300.0, 6: -23_000.0, 7: -34_000.0, 8: -47_000.0}
    all_species, all_positions, energies, forces, counts, molecule = [], [], [], [], [], []
    for m in range(n_molecules):
        atoms = mol_index == m
        z, base = species[atoms], positions[atoms]
        for _ in range(conformers_per_molecule):
            r = (base + displacement * torch.randn(base.shape, generator=g, dtype=torch.float64)).requires_grad_()
            i, j = torch.triu_indices(len(z), len(z), 1)
            dist = (r[i] - r[j]).norm(dim=1)
            depth = 20.0 + 5.0 * (z[i] + z[j] == 2)
            energy = (depth * ((1 - torch.exp(-1.8 * (dist - 1.1))) ** 2 - 1)).sum()
            (grad,) = torch.autograd.grad(energy, r)
            all_species.append(z)
            all_positions.append(r.detach())
            energies.append(energy.detach() + sum(self_energy[int(s)] for s in z))
            forces.append(-grad)
            counts.append(len(z))
            molecule.append(m)
    return Conformers(
        species=torch.cat(all_species), positions=torch.cat(all_positions),
        atom_ptr=torch.cumsum(torch.tensor([0, *counts]), 0), energy=torch.stack(energies),
        forces=torch.cat(forces), molecule=torch.tensor(molecule),
        molecule_names=[f"toy{m}" for m in range(n_molecules)],
        provenance=dict(generator="toy_conformers", seed=seed),
    )
