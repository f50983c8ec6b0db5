"""A set of conformers, flattened over atoms, in the package's units."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

#: Element symbols by atomic number (index 0 unused).
SYMBOLS = (
    "X H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se Br Kr "
    "Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm Yb Lu "
    "Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U Np Pu Am Cm Bk Cf Es Fm Md No Lr Rf Db Sg "
    "Bh Hs Mt Ds Rg Cn Nh Fl Mc Lv Ts Og"
).split()
ATOMIC_NUMBERS = {symbol: z for z, symbol in enumerate(SYMBOLS) if z}


@dataclass
class Conformers:
    """Conformers flattened over atoms: the atoms of conformer c are ``atom_ptr[c]:atom_ptr[c + 1]``.

    Attributes:
        species: (A,) int64 atomic numbers.
        positions: (A, 3) float64, Å.
        atom_ptr: (C + 1,) int64 conformer boundaries.
        energy: (C,) float64 total energies, kcal/mol.
        forces: (A, 3) float64 true forces -dE/dR, kcal/mol/Å, or None.
        molecule: (C,) int64 molecule of each conformer (conformers of one molecule share it; splits
            by molecule use it).
        molecule_names: name of each molecule id.
        provenance: where the data came from (file, keys, units and conventions read).
        cell: (C, 3, 3) float64 lattice vectors as rows, Å, or None (no periodic conformers).
        pbc: (C, 3) bool periodic directions, or None; set together with ``cell``.
    """

    species: Tensor
    positions: Tensor
    atom_ptr: Tensor
    energy: Tensor
    forces: Tensor | None
    molecule: Tensor
    molecule_names: list[str]
    provenance: dict = field(default_factory=dict)
    cell: Tensor | None = None
    pbc: Tensor | None = None

    def __post_init__(self) -> None:
        n_atoms, n_conf = self.species.shape[0], self.energy.shape[0]
        if self.atom_ptr.shape != (n_conf + 1,) or int(self.atom_ptr[0]) != 0 or int(self.atom_ptr[-1]) != n_atoms:
            raise ValueError(f"atom_ptr must be ({n_conf + 1},) from 0 to {n_atoms}")
        if self.positions.shape != (n_atoms, 3):
            raise ValueError(f"positions must be ({n_atoms}, 3), got {tuple(self.positions.shape)}")
        if self.forces is not None and self.forces.shape != (n_atoms, 3):
            raise ValueError(f"forces must be ({n_atoms}, 3), got {tuple(self.forces.shape)}")
        if self.molecule.shape != (n_conf,):
            raise ValueError(f"molecule must be ({n_conf},), got {tuple(self.molecule.shape)}")
        if (self.cell is None) != (self.pbc is None):
            raise ValueError("cell and pbc must be given together")
        if self.cell is not None and (self.cell.shape != (n_conf, 3, 3) or self.pbc.shape != (n_conf, 3)):
            raise ValueError(f"cell must be ({n_conf}, 3, 3) and pbc ({n_conf}, 3), got {tuple(self.cell.shape)} "
                             f"and {tuple(self.pbc.shape)}")
        for name in ("positions", "energy", "forces", "cell"):
            value = getattr(self, name)
            if value is not None and not torch.isfinite(value).all():
                raise ValueError(f"{name} holds non-finite values")

    def __len__(self) -> int:
        return self.energy.shape[0]

    @property
    def n_atoms(self) -> Tensor:
        """(C,) atoms per conformer."""
        return self.atom_ptr[1:] - self.atom_ptr[:-1]

    @property
    def conformer_index(self) -> Tensor:
        """(A,) conformer of each atom."""
        return torch.repeat_interleave(torch.arange(len(self)), self.n_atoms)

    def subset(self, indices: Tensor) -> Conformers:
        """The conformers ``indices`` (any order), as a new set."""
        indices = torch.as_tensor(indices, dtype=torch.int64)
        counts = self.n_atoms[indices]
        starts = self.atom_ptr[indices]
        offsets = torch.arange(int(counts.sum())) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        atoms = torch.repeat_interleave(starts, counts) + offsets
        return Conformers(
            species=self.species[atoms], positions=self.positions[atoms],
            atom_ptr=torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(counts, 0)]),
            energy=self.energy[indices], forces=None if self.forces is None else self.forces[atoms],
            molecule=self.molecule[indices], molecule_names=self.molecule_names, provenance=dict(self.provenance),
            cell=None if self.cell is None else self.cell[indices], pbc=None if self.pbc is None else self.pbc[indices],
        )
