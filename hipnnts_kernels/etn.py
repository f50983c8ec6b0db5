"""ETN: an equivariant tensor network potential, after Hodapp & Shapeev, "Equivariant tensor network
potentials", Mach. Learn.: Sci. Technol. (2024), built on the package's ops. What follows the paper's
abstract and the MTP/ACE literature, and what is this package's own choice, is in docs/etn.md.

Per atom i, with pairs p = (i, j), r = |R_j - R_i| and r_hat = (R_j - R_i) / r:

- **Moments** (:class:`Moments`): A_i[c, m] = sum_j R_m(r; z_i, z_j) Y_c(r_hat), with Y = [1 | r_hat |
  r_hat r_hat^T - I/3] (:func:`~hipnnts_kernels.ops.tensor_factors`, lmax 2) and species-pair radial
  functions R_m(r; z_i, z_j) = sum_k W[z_i, m, k, z_j] Q_k(r) over the Chebyshev basis Q_k
  (:func:`~hipnnts_kernels.ops.chebyshev_radial`). The sum over j is :func:`~hipnnts_kernels.ops.envsum`
  of the stacked Q_k Y_c with the senders' one-hot species as features; the per-receiver-species map
  W follows it. So A_i holds M scalars, M vectors and M symmetric traceless matrices.
- **Equivariant tensor train** (:class:`EquivariantCore`): a bond state h = (s, v, t) of ``bond_dim``
  scalars, vectors and symmetric traceless matrices starts from a learnt scalar vector and passes
  through ``degree`` cores; each core adds to h every O(3)-equivariant bilinear product of h and A_i
  (scalar, vector and rank 2 outputs; 11 paths; the last core needs its 3 scalar paths only) with
  learnt weights per path and channel pair. After D cores the scalars are a polynomial of degree at
  most D in the moments, with parameters linear in D.
- **Energy**: E_i = w . s + E0[z_i], the read-out of the final scalar channels plus fixed per-species
  self energies; E = sum_i E_i. Optionally (``message_passing``) a second round builds moments with
  the neighbours' final scalars as features and continues the train through ``degree`` more cores.

Units: Å and the training data's energy unit (kcal/mol by convention).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from . import ops
from .checks import check_pair_lengths, check_tensor
from .model import FixedSelfEnergies, ModelOutput, check_batch, species_table, with_forces

#: Angular components of the moments: [1 | x, y, z | Qxx, Qxy, Qxz, Qyy, Qyz].
N_COMPONENTS = 9
#: Neighbours an atom typically has within the cutoff; sets only the initial scale of the moments.
TYPICAL_NEIGHBOURS = 16


def quad_matrix(q: Tensor) -> Tensor:
    """(N, 5, X) components [xx, xy, xz, yy, yz] -> (N, 3, 3, X) symmetric traceless matrices."""
    xx, xy, xz, yy, yz = q.unbind(1)
    rows = (torch.stack((xx, xy, xz), 1), torch.stack((xy, yy, yz), 1), torch.stack((xz, yz, -(xx + yy)), 1))
    return torch.stack(rows, 1)


def sym_traceless(m: Tensor) -> Tensor:
    """(N, 3, 3, X) -> the symmetric traceless part of each 3 x 3 matrix."""
    sym = 0.5 * (m + m.transpose(1, 2))
    third_trace = (sym[:, 0, 0] + sym[:, 1, 1] + sym[:, 2, 2]) / 3.0
    eye = torch.eye(3, dtype=m.dtype, device=m.device)
    return sym - eye[None, :, :, None] * third_trace[:, None, None, :]


class Moments(nn.Module):
    """Pooled moment tensors A_i (scalars (N, M), vectors (N, 3, M), symmetric traceless (N, 3, 3, M)).

    Args:
        n_species: S, the elements the model knows (the receivers' maps).
        n_features: F, the senders' features (S for the one-hot species; more in a message-passing round).
        n_radial: K Chebyshev basis functions; n_moments: M channels per rank; cutoff: r_c (Å).
    """

    def __init__(self, n_species: int, n_features: int, n_radial: int, n_moments: int, cutoff: float,
                 backend: str = "auto"):
        super().__init__()
        self.n_radial, self.cutoff, self.backend = n_radial, float(cutoff), backend
        #: (S, M, K * F) per receiver species: radial function m from basis k and sender feature f.
        self.weight = nn.Parameter(torch.randn(n_species, n_moments, n_radial * n_features)
                                   / math.sqrt(n_radial * TYPICAL_NEIGHBOURS))

    def forward(self, receiver: Tensor, feats: Tensor, pair_first: Tensor, pair_second: Tensor,
                pair_coord: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """receiver (N,) species indices, feats (N, F), pair_coord (P, 3) = R[second] - R[first]."""
        dist = pair_coord.norm(dim=1)
        radial = ops.chebyshev_radial(dist, self.n_radial, self.cutoff, backend=self.backend)
        unit = pair_coord / dist.unsqueeze(1)
        factors = ops.tensor_factors(unit, 2, backend=self.backend)
        stack = (factors.unsqueeze(2) * radial.unsqueeze(1)).flatten(1)
        env = ops.envsum(stack, feats, pair_first, pair_second, backend=self.backend)  # (N, C * K, F)
        env = env.reshape(env.shape[0], N_COMPONENTS, self.n_radial * feats.shape[1])  # (N, C, K * F)
        moments = torch.bmm(env, self.weight[receiver].transpose(1, 2))  # (N, C, M)
        return moments[:, 0], moments[:, 1:4], quad_matrix(moments[:, 4:])


class EquivariantCore(nn.Module):
    """One core of the tensor train: (s, v, t) + every O(3)-equivariant bilinear product of the bond
    state (s (N, b), v (N, 3, b), t (N, 3, 3, b)) with the moments (a0 (N, M), a1 (N, 3, M), a2 (N, 3, 3, M)).

    Paths, by output: scalar s a0, v . a1, t : a2; vector v a0, s a1, t a1, a2 v; rank 2 s a2, t a0,
    {v a1^T}, {t a2} ({.}: symmetric traceless part). Products with the Levi-Civita symbol (cross
    products) are left out: they are pseudo-tensors, which reflections would tell apart. Path p of an
    output is sum_{b, m} W[p, b, m, b'] (product)[b, m]; the weights of one output rank are one
    parameter (paths, b, M, b). The last core of the train (``scalar_only``) has the scalar paths alone:
    only its scalars reach the energy.

    The contraction order is chosen per path (docs/etn.md, "Cost"): the scalar paths sum the product over
    its Cartesian components first (b M numbers per atom), a path whose moment has the lower rank contracts
    the moment with W first (rank(a) x b x b per atom), one whose state has the lower rank contracts the
    state with W first (rank(h) x M x b). Rank 2 paths use that both factors are symmetric: {v a1^T} and
    {t a2} are built transposed, which the symmetric traceless part does not see.
    """

    #: Paths per output rank.
    PATHS = (3, 4, 4)

    def __init__(self, bond_dim: int, n_moments: int, scalar_only: bool = False):
        super().__init__()

        def weight(paths: int) -> nn.Parameter:
            scale = math.sqrt(paths * bond_dim * n_moments)
            return nn.Parameter(torch.randn(paths, bond_dim, n_moments, bond_dim) / scale)

        self.scalar = weight(self.PATHS[0])
        self.vector, self.rank2 = (None, None) if scalar_only else (weight(self.PATHS[1]), weight(self.PATHS[2]))

    def weights(self) -> list[Tensor]:
        """The core's weights (paths, b, M, b) per output rank (scalar, and unless scalar-only vector, rank 2)."""
        return [w for w in (self.scalar, self.vector, self.rank2) if w is not None]

    def forward(self, state: tuple[Tensor, Tensor, Tensor], moments: tuple[Tensor, Tensor, Tensor]
                ) -> tuple[Tensor, Tensor, Tensor]:
        s, v, t = state
        a0, a1, a2 = moments
        n, b = s.shape
        m = a0.shape[1]

        def moment_first(a: Tensor, w: Tensor) -> Tensor:
            """(N, ..., M) moments -> (N, ..., b, b) with W (b, M, b) contracted over M."""
            return (a.reshape(-1, m) @ w.transpose(0, 1).reshape(m, b * b)).view(*a.shape[:-1], b, b)

        def state_first(h: Tensor, w: Tensor) -> Tensor:
            """(N, ..., b) state -> (N, ..., M, b) with W (b, M, b) contracted over b."""
            return (h.reshape(-1, b) @ w.reshape(b, m * b)).view(*h.shape[:-1], m, b)

        products = torch.cat((s.unsqueeze(2) * a0.unsqueeze(1), torch.bmm(v.transpose(1, 2), a1),
                              torch.bmm(t.reshape(n, 9, b).transpose(1, 2), a2.reshape(n, 9, m))), 1)
        scalar = s + products.view(n, 3 * b * m) @ self.scalar.reshape(3 * b * m, b)
        if self.vector is None:
            return scalar, v, t
        w = self.vector
        vector = (torch.bmm(v, moment_first(a0, w[0])) + torch.bmm(a1, state_first(s, w[1]))
                  + torch.bmm(t.reshape(n, 3, 3 * b), moment_first(a1, w[2]).view(n, 3 * b, b))
                  + torch.bmm(a2.reshape(n, 3, 3 * m), state_first(v, w[3]).view(n, 3 * m, b)))
        w = self.rank2
        rank2 = (torch.bmm(a2.reshape(n, 9, m), state_first(s, w[0]))
                 + torch.bmm(t.reshape(n, 9, b), moment_first(a0, w[1]))
                 + torch.matmul(v.unsqueeze(1), moment_first(a1, w[2])).view(n, 9, b)  # [y, x]: v_x a1_y
                 + torch.matmul(t.reshape(n, 1, 3, 3 * b),  # [x, y]: (a2 t)_xy, the transpose of t a2
                                moment_first(a2, w[3]).view(n, 3, 3 * b, b)).view(n, 9, b))
        return scalar, v + vector, t + sym_traceless(rank2.view(n, 3, 3, b))


class ETN(FixedSelfEnergies, nn.Module):
    """The equivariant tensor network potential (see the module docstring and docs/etn.md).

    Args:
        species: atomic numbers the model knows (no 0), e.g. (1, 6, 7, 8).
        n_radial: K Chebyshev radial basis functions.
        n_moments: M moment channels per rank (scalar, vector, rank 2).
        bond_dim: b, the tensor train's bond dimension per rank.
        degree: D cores per round: the polynomial degree in the moments.
        cutoff: r_c (Å); pairs at or beyond it contribute nothing.
        message_passing: a second round whose moments carry the neighbours' final scalars.
        backend: kernel backend of the ops ("auto", "reference", "triton", ...).
    """

    def __init__(self, species: Sequence[int] = (1, 6, 7, 8), n_radial: int = 8, n_moments: int = 16,
                 bond_dim: int = 8, degree: int = 4, cutoff: float = 5.0, message_passing: bool = False,
                 backend: str = "auto"):
        super().__init__()
        self.species, species_map = species_table(species)
        self.register_buffer("species_map", species_map, persistent=False)
        for name, value in (("n_radial", n_radial), ("n_moments", n_moments), ("bond_dim", bond_dim),
                            ("degree", degree)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(cutoff, bool) or not isinstance(cutoff, (int, float)) or not cutoff > 0:
            raise ValueError(f"cutoff must be a positive number (Å), got {cutoff!r}")
        if not isinstance(message_passing, bool):
            raise ValueError(f"message_passing must be true or false, got {message_passing!r}")
        self.cutoff = float(cutoff)
        #: Constructor arguments: ``ETN(**model.hparams)`` rebuilds the architecture.
        self.hparams = dict(species=list(self.species), n_radial=n_radial, n_moments=n_moments, bond_dim=bond_dim,
                            degree=degree, cutoff=self.cutoff, message_passing=message_passing, backend=backend)
        n_species = len(self.species)
        rounds = 2 if message_passing else 1
        self.moments = nn.ModuleList(
            Moments(n_species, n_species + (bond_dim if k else 0), n_radial, n_moments, cutoff, backend)
            for k in range(rounds))
        self.cores = nn.ModuleList(
            nn.ModuleList(EquivariantCore(bond_dim, n_moments, scalar_only=(k, d) == (rounds - 1, degree - 1))
                          for d in range(degree)) for k in range(rounds))
        #: (b,) the train's initial scalar state; (b,) the read-out of the final scalars.
        self.start = nn.Parameter(torch.ones(bond_dim))
        self.readout = nn.Parameter(torch.randn(bond_dim) / math.sqrt(bond_dim))
        #: (n_species,) self energies E0 (see :meth:`fit_self_energies`); zero until fitted.
        self.register_buffer("self_energies", torch.zeros(n_species))

    def regularization_params(self) -> list[Tensor]:
        """Weights that take the L2 penalty: the moment maps and the cores (not the start and read-out)."""
        cores = [w for round_ in self.cores for core in round_ for w in core.weights()]
        return [m.weight for m in self.moments] + cores

    def forward(self, species: Tensor, positions: Tensor, mol_index: Tensor, pair_first: Tensor,
                pair_second: Tensor, n_molecules: int | None = None, pair_shift: Tensor | None = None,
                forces: bool = False, create_graph: bool | None = None) -> ModelOutput:
        """Energies (and forces) of a batch of flattened molecules, as :meth:`HipnnTS.forward
        <hipnnts_kernels.HipnnTS.forward>`: species (N,), positions (N, 3) in Å, mol_index (N,), a full
        directed pair list (P,) x 2 and optional periodic shifts (P, 3). ``hierarchicality`` is zeros (B,)
        and ``features`` is [the final scalar bond state (N, bond_dim)]."""
        n_molecules = check_batch(self, species, positions, mol_index, pair_first, pair_second, n_molecules)
        index = self.species_index(species)
        return with_forces(
            lambda pos: self._energy(index, pos, mol_index, pair_first, pair_second, n_molecules, pair_shift),
            positions, forces, self.training if create_graph is None else create_graph)

    def _energy(self, index: Tensor, positions: Tensor, mol_index: Tensor, pair_first: Tensor,
                pair_second: Tensor, n_molecules: int, pair_shift: Tensor | None) -> ModelOutput:
        pair_coord = positions.index_select(0, pair_second) - positions.index_select(0, pair_first)
        if pair_shift is not None:
            check_tensor("pair_shift", pair_shift, (pair_coord.shape[0], 3), like=positions)
            pair_coord = pair_coord + pair_shift
        check_pair_lengths(pair_coord.detach())
        onehot = nn.functional.one_hot(index, len(self.species)).to(positions.dtype)
        n_atoms, bond_dim = positions.shape[0], self.start.shape[0]
        s = self.start.expand(n_atoms, bond_dim)
        state = (s, s.new_zeros(n_atoms, 3, bond_dim), s.new_zeros(n_atoms, 3, 3, bond_dim))
        for k, (moments, cores) in enumerate(zip(self.moments, self.cores)):
            feats = torch.cat((onehot, state[0]), 1) if k else onehot
            a = moments(index, feats, pair_first, pair_second, pair_coord)
            for core in cores:
                state = core(state, a)
        atom_energy = state[0] @ self.readout + self.self_energies[index].to(positions.dtype)
        energy = atom_energy.new_zeros(n_molecules).index_add(0, mol_index, atom_energy)
        return ModelOutput(energy, atom_energy, atom_energy.new_zeros(n_molecules), [state[0]])
