"""Shared test helpers: shuffled pair lists, a fixed seed per test.

Without a GPU the Triton kernels run in Triton's interpreter on CPU tensors. Triton reads
``TRITON_INTERPRET`` when a kernel is defined, and ``hipnnts_kernels`` defines its kernels on the
first Triton call, so setting it here, before any test runs, is enough.
"""
from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from hipnnts_kernels import HipnnTS, pairs_within_cutoff
from hipnnts_kernels.synthetic import random_molecules


def shuffled_pairs(positions, mol_index, cutoff, *, seed: int):
    """Full pair list in a random order."""
    pf, ps = pairs_within_cutoff(positions, mol_index, cutoff)
    perm = torch.randperm(pf.shape[0], generator=torch.Generator().manual_seed(seed))
    return pf[perm], ps[perm]


def training_step(backend: str, device: torch.device, lmax: int, n_molecules: int, max_atoms: int, features: int,
                  nu: int) -> tuple:
    """One float64 force-training step of a small HipnnTS on ``backend``: energies, forces and the
    gradient of energy + force + hierarchicality loss for every named parameter."""
    species, positions, mol_index = random_molecules(n_molecules, 1, max_atoms, seed=lmax)
    pf, ps = shuffled_pairs(positions, mol_index, 3.0, seed=lmax)
    species, positions, mol_index, pf, ps = (t.to(device) for t in (species, positions, mol_index, pf, ps))
    torch.manual_seed(0)
    model = HipnnTS(n_features=features, n_sensitivities=nu, dist_soft_min=0.8, dist_soft_max=2.5, cutoff=3.0,
                    n_interaction_layers=2, n_atom_layers=1, lmax=lmax, backend=backend).double().to(device)
    model.train()
    out = model(species, positions, mol_index, pf, ps, n_molecules=int(mol_index.max()) + 1, forces=True)
    loss = out.energy.square().mean() + out.forces.square().mean() + out.hierarchicality.mean()
    names, params = zip(*model.named_parameters())
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return out.energy.detach(), out.forces.detach(), dict(zip(names, grads))


def assert_forces_match_central_differences(energy, positions, forces, h: float = 1e-5) -> None:
    """``forces`` (N, 3) equal -d energy(R) / dR by central differences of step ``h`` (Å), atom by atom
    and axis by axis; ``energy(R)`` returns the (float64) total energy at positions R."""
    for atom in range(positions.shape[0]):
        for axis in range(3):
            shifted = []
            for sign in (1, -1):
                pos = positions.clone()
                pos[atom, axis] += sign * h
                shifted.append(energy(pos))
            numeric = -(shifted[0] - shifted[1]) / (2 * h)
            assert float(forces[atom, axis].detach()) == pytest.approx(float(numeric.detach()), rel=1e-6, abs=1e-8)


def assert_same_training_step(got: tuple, want: tuple) -> None:
    """Energies and forces to 1e-10, parameter gradients to 1e-9 (relative to their largest entry)."""
    for a, b in zip(got[:2], want[:2]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10 * float(b.abs().max()))
    for name, b in want[2].items():
        a = got[2][name]
        assert (a is None) == (b is None), name
        if b is not None:
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9 * float(b.abs().max()) + 1e-300,
                                       msg=lambda m, name=name: f"{name}: {m}")


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(1234)
