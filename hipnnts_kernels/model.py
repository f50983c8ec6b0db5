"""The HIP-NN / HIP-NN-TS model (SPEC sections 4-6): network, hierarchical energy head, forces.

Inputs are flattened atoms (``species`` (N,), ``positions`` (N, 3) in Å, ``mol_index`` (N,)) and
a full directed pair list (``pair_first``, ``pair_second``), or padded batches through
:meth:`HipnnTS.forward_padded`, which builds the pairs on the tensors' device.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from . import ops
from .checks import (
    INDEX_DTYPES,
    check_finite,
    check_index_range,
    check_like_model,
    check_pairs,
    check_tensor,
    value_checks_enabled,
)
from .pairs import flatten_padded


class InteractionLayer(nn.Module):
    """One HIP-NN-TS interaction layer with tied weights (SPEC section 4).

    out = a0 + vecscales * a1 + quadscales * a2 + selfint(z), computed by the fused op
    :func:`hipnnts_kernels.ops.interaction` from Y = W z (SPEC section 4.1).
    """

    def __init__(self, n_in: int, n_out: int, n_sensitivities: int, dist_soft_min: float, dist_soft_max: float,
                 cutoff: float, lmax: int, cusp_reg: float = 1e-6, backend: str = "auto"):
        super().__init__()
        if not 0 < dist_soft_min < dist_soft_max <= cutoff:
            raise ValueError(
                "need 0 < dist_soft_min < dist_soft_max <= cutoff, got "
                f"dist_soft_min={dist_soft_min}, dist_soft_max={dist_soft_max}, cutoff={cutoff}"
            )
        self.n_in, self.n_out, self.n_sensitivities = n_in, n_out, n_sensitivities
        self.cutoff, self.lmax, self.cusp_reg, self.backend = float(cutoff), lmax, float(cusp_reg), backend
        self.mu = nn.Parameter(1.0 / torch.linspace(1.0 / dist_soft_max, 1.0 / dist_soft_min, n_sensitivities))
        self.sigma = nn.Parameter(torch.full((n_sensitivities,), 2.0 * n_sensitivities * dist_soft_min))
        self.int_weights = nn.Parameter(torch.empty(n_sensitivities, n_out, n_in))
        nn.init.xavier_normal_(self.int_weights)
        self.selfint = nn.Linear(n_in, n_out)
        nn.init.xavier_normal_(self.selfint.weight)
        self.vecscales = nn.Parameter(torch.randn(n_out)) if lmax >= 1 else None
        self.quadscales = nn.Parameter(torch.randn(n_out)) if lmax >= 2 else None

    def transformed_features(self, z: Tensor) -> Tensor:
        """Y[j, nu, o] = sum_f W[nu, o, f] z[j, f]: one GEMM, (N, F_in) -> (N, nu, F_out)."""
        return (z @ self.int_weights.reshape(-1, self.n_in).t()).view(z.shape[0], self.n_sensitivities, self.n_out)

    def forward(self, z: Tensor, pair_first: Tensor, pair_second: Tensor, pair_coord: Tensor) -> Tensor:
        """z (N, F_in) -> (N, F_out)."""
        interaction = ops.interaction(
            self.transformed_features(z), pair_coord, pair_first, pair_second, self.mu, self.sigma,
            cutoff=self.cutoff, lmax=self.lmax, vecscales=self.vecscales, quadscales=self.quadscales,
            cusp_reg=self.cusp_reg, backend=self.backend,
        )
        return interaction + self.selfint(z)

    def extra_repr(self) -> str:
        return (f"n_in={self.n_in}, n_out={self.n_out}, n_sensitivities={self.n_sensitivities}, "
                f"cutoff={self.cutoff}, lmax={self.lmax}, cusp_reg={self.cusp_reg}, backend={self.backend!r}")


class ResNetWrapper(nn.Module):
    """x' = adjust(x) + res_layer(softplus(base_layer(x, ...))); adjust is identity unless widths differ."""

    def __init__(self, base_layer: nn.Module, n_in: int, n_middle: int, n_out: int):
        super().__init__()
        self.base_layer = base_layer
        self.res_layer = nn.Linear(n_middle, n_out)
        self.adjust_layer = nn.Linear(n_in, n_out, bias=False) if n_in != n_out else None

    def forward(self, x: Tensor, *args: Tensor) -> Tensor:
        residual = self.res_layer(nn.functional.softplus(self.base_layer(x, *args)))
        return residual + (x if self.adjust_layer is None else self.adjust_layer(x))


@dataclass
class ModelOutput:
    """Model outputs. Energies in the training data's unit (kcal/mol by convention)."""

    energy: Tensor  #: (B,) molecular energies
    atom_energy: Tensor  #: (N,) per-atom energies (sum over the hierarchical heads)
    hierarchicality: Tensor  #: (B,) per-molecule hierarchicality (SPEC section 6)
    features: list[Tensor]  #: [z0 (one-hot), z1, ..., zL], each (N, F_k)
    forces: Tensor | None = None  #: (N, 3) -dE/dR, when requested


class SelfEnergyFit:
    """Mixin of every model: per-species counts and the least-squares fit of the per-species self
    energies E0, which the model stores through its ``set_self_energies``; needs ``species`` and
    ``species_map`` (:func:`species_table`)."""

    species: tuple[int, ...]
    species_map: Tensor

    def species_index(self, species: Tensor) -> Tensor:
        """(N,) atomic numbers -> (N,) int64 indices into :attr:`species`; unknown elements raise."""
        return species_indices(self.species_map, species, self.species)

    def species_counts(self, species: Tensor, mol_index: Tensor, n_molecules: int) -> Tensor:
        """(B, n_species) float64 count of each species in each molecule."""
        onehot = nn.functional.one_hot(self.species_index(species), len(self.species)).double()
        return onehot.new_zeros(n_molecules, onehot.shape[1]).index_add(0, mol_index, onehot)

    @torch.no_grad()
    def fit_self_energies(self, counts: Tensor, energies: Tensor) -> Tensor:
        """Least-squares per-species self energies E0 from molecular energies; sets them (and keeps
        them out of training) through the model's ``set_self_energies``.

        Args:
            counts: (M, n_species) species counts of the training molecules (see :meth:`species_counts`).
            energies: (M,) their energies.

        Returns:
            (n_species,) the fitted E0 (float64).
        """
        e0 = least_squares_self_energies(counts, energies, len(self.species))
        self.set_self_energies(e0)
        return e0

    def set_self_energies(self, e0: Tensor) -> None:
        """Store the (n_species,) self energies E0 (kcal/mol), out of training: each model's own."""
        raise NotImplementedError


class HipnnTS(SelfEnergyFit, nn.Module):
    """HIP-NN-TS (Chigaev et al. 2023); ``lmax=0`` is plain HIP-NN (Lubbers et al. 2018).

    Args:
        species: atomic numbers the model knows (no 0), e.g. (1, 6, 7, 8).
        n_features: width of every block, or one width per interaction block.
        n_sensitivities: sensitivity functions per interaction layer (nu).
        dist_soft_min, dist_soft_max: range of the initial sensitivity centres (Å).
        cutoff: hard cutoff r_c (Å).
        n_interaction_layers: interaction blocks (ignored if ``n_features`` is a sequence).
        n_atom_layers: atom layers after each interaction layer.
        lmax: 0 (HIP-NN), 1 or 2 (tensor sensitivity).
        cusp_reg: eps inside the invariants' square roots.
        resnet: wrap every layer in the ResNet wrapper (default, as hippynn).
        backend: kernel backend for the interaction op ("auto", "reference", ...).
    """

    def __init__(self, species: Sequence[int] = (1, 6, 7, 8), n_features: int | Sequence[int] = 128,
                 n_sensitivities: int = 20, dist_soft_min: float = 0.75, dist_soft_max: float = 5.5,
                 cutoff: float = 6.5, n_interaction_layers: int = 2, n_atom_layers: int = 3, lmax: int = 2,
                 cusp_reg: float = 1e-6, resnet: bool = True, backend: str = "auto"):
        super().__init__()
        species = [int(z) for z in species]
        self.species, species_map = species_table(species)
        self.register_buffer("species_map", species_map, persistent=False)
        if lmax not in (0, 1, 2) or isinstance(lmax, bool):
            raise ValueError(f"lmax must be 0, 1 or 2, got {lmax!r}")
        widths = [n_features] * n_interaction_layers if isinstance(n_features, int) else list(n_features)
        if not widths or min(widths) < 1:
            raise ValueError(f"n_features must give at least one positive width, got {n_features!r}")
        #: Constructor arguments: ``HipnnTS(**model.hparams)`` rebuilds the architecture.
        self.hparams = dict(
            species=list(species), n_features=widths, n_sensitivities=n_sensitivities, dist_soft_min=dist_soft_min,
            dist_soft_max=dist_soft_max, cutoff=cutoff, n_atom_layers=n_atom_layers, lmax=lmax, cusp_reg=cusp_reg,
            resnet=resnet, backend=backend,
        )
        self.lmax, self.cutoff, self.resnet = lmax, float(cutoff), bool(resnet)
        self.feature_sizes = (len(species), *widths)

        def wrap(layer: nn.Module, n_in: int, n_out: int) -> nn.Module:
            return ResNetWrapper(layer, n_in, n_out, n_out) if resnet else layer

        self.blocks = nn.ModuleList()
        for n_in, n_out in zip(self.feature_sizes[:-1], self.feature_sizes[1:]):
            layer = InteractionLayer(n_in, n_out, n_sensitivities, dist_soft_min, dist_soft_max, cutoff, lmax,
                                     cusp_reg, backend)
            block = nn.ModuleList([wrap(layer, n_in, n_out)])
            for _ in range(n_atom_layers):
                atom_layer = nn.Linear(n_out, n_out)
                nn.init.xavier_normal_(atom_layer.weight)
                block.append(wrap(atom_layer, n_out, n_out))
            self.blocks.append(block)
        self.energy_heads = nn.ModuleList(
            nn.Linear(width, 1, bias=k > 0) for k, width in enumerate(self.feature_sizes)
        )
        with torch.no_grad():
            decay = 1e-2
            for head in self.energy_heads[1:]:
                head.weight.mul_(decay)
                head.bias.mul_(decay)
                decay *= decay

    # -- structure ------------------------------------------------------------------------
    @property
    def interaction_layers(self) -> list[InteractionLayer]:
        return [block[0].base_layer if self.resnet else block[0] for block in self.blocks]

    def regularization_params(self) -> list[Tensor]:
        """Weights that take the L2 penalty: every weight matrix, no biases, mu, sigma or scales."""
        params = []
        for block in self.blocks:
            for wrapped in block:
                base = wrapped.base_layer if self.resnet else wrapped
                params.extend([base.int_weights, base.selfint.weight] if isinstance(base, InteractionLayer)
                              else [base.weight])
                if isinstance(wrapped, ResNetWrapper):
                    params.append(wrapped.res_layer.weight)
                    if wrapped.adjust_layer is not None:
                        params.append(wrapped.adjust_layer.weight)
        return params

    # -- inputs ---------------------------------------------------------------------------
    def one_hot(self, species: Tensor, dtype: torch.dtype) -> Tensor:
        """(N,) atomic numbers -> (N, n_species) one-hot features."""
        return nn.functional.one_hot(self.species_index(species), len(self.species)).to(dtype)

    # -- forward --------------------------------------------------------------------------
    def _activate(self, z: Tensor) -> Tensor:
        """The ResNet wrapper applies softplus inside; without it, softplus follows each layer."""
        return z if self.resnet else nn.functional.softplus(z)

    def features(self, species: Tensor, pair_first: Tensor, pair_second: Tensor, pair_coord: Tensor) -> list[Tensor]:
        """Network features [z0 (one-hot), z1, ..., zL] of the flattened atoms."""
        z = self.one_hot(species, pair_coord.dtype)
        out = [z]
        for block in self.blocks:
            z = self._activate(block[0](z, pair_first, pair_second, pair_coord))
            for atom_layer in block[1:]:
                z = self._activate(atom_layer(z))
            out.append(z)
        return out

    def forward(self, species: Tensor, positions: Tensor, mol_index: Tensor, pair_first: Tensor,
                pair_second: Tensor, n_molecules: int | None = None, pair_shift: Tensor | None = None,
                forces: bool = False, create_graph: bool | None = None) -> ModelOutput:
        """Energies (and forces) of a batch of flattened molecules.

        Args:
            species: (N,) atomic numbers; positions: (N, 3) in Å (float32 or float64).
            mol_index: (N,) molecule of each atom, in [0, n_molecules).
            pair_first, pair_second: (P,) full directed pair list (both i->j and j->i).
            n_molecules: B; inferred from ``mol_index`` (a host sync) if None.
            pair_shift: (P, 3) periodic image shift added to R[second] - R[first], or None.
            forces: also return forces -dE/dR (N, 3), also under ``torch.no_grad()``.
            create_graph: keep the force graph for force training; defaults to ``self.training``.
        """
        n_molecules = check_batch(self, species, positions, mol_index, pair_first, pair_second, n_molecules)
        return with_forces(
            lambda pos: self._energy(species, pos, mol_index, pair_first, pair_second, n_molecules, pair_shift),
            positions, forces, self.training if create_graph is None else create_graph)

    def _energy(self, species: Tensor, positions: Tensor, mol_index: Tensor, pair_first: Tensor,
                pair_second: Tensor, n_molecules: int, pair_shift: Tensor | None) -> ModelOutput:
        n_atoms = positions.shape[0]
        pair_coord = positions.index_select(0, pair_second) - positions.index_select(0, pair_first)
        if pair_shift is not None:
            check_tensor("pair_shift", pair_shift, (pair_coord.shape[0], 3), like=positions)
            pair_coord = pair_coord + pair_shift
        feats = self.features(species, pair_first, pair_second, pair_coord)
        head_energies = [head(z).squeeze(1) for head, z in zip(self.energy_heads, feats)]
        atom_energy = torch.stack(head_energies).sum(0)
        energy = atom_energy.new_zeros(n_molecules).index_add(0, mol_index, atom_energy)
        atom_hier = atom_energy.new_zeros(n_atoms)
        for upper, lower in zip(head_energies[1:], head_energies[:-1]):
            upper_sq = upper.square()
            atom_hier = atom_hier + upper_sq / (upper_sq + lower.square())
        hierarchicality = atom_energy.new_zeros(n_molecules).index_add(0, mol_index, atom_hier)
        return ModelOutput(energy, atom_energy, hierarchicality, feats)

    def forward_padded(self, species: Tensor, positions: Tensor, forces: bool = False,
                       create_graph: bool | None = None) -> ModelOutput:
        """Energies (and forces) of padded molecules.

        Args:
            species: (B, n_max) atomic numbers, 0 = padding.
            positions: (B, n_max, 3) in Å.

        Returns:
            ModelOutput with energy (B,), and atom_energy (B, n_max) and forces (B, n_max, 3) scattered
            back to the padded layout (zeros at padding); features stay flattened.
        """
        batch = flatten_padded(species, positions, self.cutoff)
        out = self.forward(batch.species, batch.positions, batch.mol_index, batch.pair_first, batch.pair_second,
                           n_molecules=species.shape[0], forces=forces, create_graph=create_graph)
        out.atom_energy = batch.unflatten(out.atom_energy)
        if out.forces is not None:
            out.forces = batch.unflatten(out.forces)
        return out

    # -- self energies (species_counts and fit_self_energies: SelfEnergyFit) ---------------
    @torch.no_grad()
    def set_self_energies(self, e0: Tensor) -> None:
        """Set the (n_species,) self energies E0 (kcal/mol) and freeze them."""
        head = self.energy_heads[0]
        head.weight.copy_(e0.to(head.weight).unsqueeze(0))
        self.freeze_self_energies()

    def freeze_self_energies(self) -> None:
        """Exclude the self energies (head 0's weight) from training: ``requires_grad`` off. A new
        model trains them until :meth:`fit_self_energies`; call this after loading fitted weights."""
        self.energy_heads[0].weight.requires_grad_(False)


def species_table(species: Sequence[int]) -> tuple[tuple[int, ...], Tensor]:
    """Check a model's ``species`` (distinct positive atomic numbers) and return them with the lookup
    table from atomic number to index (-1 for unknown elements), a buffer of the model."""
    species = [int(z) for z in species]
    if not species or min(species) < 1 or len(set(species)) != len(species):
        raise ValueError(f"species must be distinct positive atomic numbers, got {species}")
    species_map = torch.full((max(species) + 1,), -1, dtype=torch.long)
    species_map[torch.tensor(species)] = torch.arange(len(species))
    return tuple(species), species_map


def species_indices(species_map: Tensor, species: Tensor, known: tuple[int, ...]) -> Tensor:
    """(N,) atomic numbers -> (N,) int64 indices into ``known`` through :func:`species_table`'s
    ``species_map``; an element the model does not know is an error (with value checks on)."""
    check_tensor("species", species, (None,), INDEX_DTYPES)
    index = species_map[species.clamp(0, species_map.shape[0] - 1).long()]
    if value_checks_enabled() and species.numel() and bool(
        ((index < 0) | (species < 0) | (species >= species_map.shape[0])).any()
    ):
        unknown = sorted(set(species.tolist()) - set(known))
        raise ValueError(f"species holds atomic numbers {unknown} that the model does not know {known}")
    return index


def check_batch(model: nn.Module, species: Tensor, positions: Tensor, mol_index: Tensor, pair_first: Tensor,
                pair_second: Tensor, n_molecules: int | None) -> int:
    """Check a model's flattened batch (shapes, dtypes, devices, finite positions, pair indices,
    molecule indices) and return the number of molecules B (inferred from ``mol_index``, a host sync,
    when ``n_molecules`` is None)."""
    check_tensor("positions", positions, (None, 3))
    check_like_model("positions", positions, model)
    n_atoms = positions.shape[0]
    check_tensor("species", species, (n_atoms,), INDEX_DTYPES, like=positions)
    check_tensor("mol_index", mol_index, (n_atoms,), INDEX_DTYPES, like=positions)
    check_finite("positions", positions)
    check_pairs(pair_first, pair_second, n_atoms, positions)
    if n_molecules is None:
        n_molecules = int(mol_index.max()) + 1 if n_atoms else 0
    check_index_range("mol_index", mol_index, n_molecules, "molecule")
    return n_molecules


def with_forces(energy: Callable[[Tensor], ModelOutput], positions: Tensor, forces: bool,
                create_graph: bool) -> ModelOutput:
    """``energy(positions)``, and with ``forces`` also -dE/dR (N, 3) in its ``forces`` (under
    ``torch.no_grad()`` too); ``create_graph`` keeps the force graph for force training."""
    with torch.enable_grad() if forces else contextlib.nullcontext():
        if forces and not positions.requires_grad:
            positions = positions.detach().requires_grad_()
        result = energy(positions)
        if forces:
            (grad,) = torch.autograd.grad(result.energy.sum(), positions, create_graph=create_graph)
            result.forces = -grad
    return result


class FixedSelfEnergies(SelfEnergyFit):
    """Mixin of the models whose per-species self energies E0 are a buffer ``self_energies``
    (n_species,), fitted by least squares and never trained."""

    self_energies: Tensor

    @torch.no_grad()
    def set_self_energies(self, e0: Tensor) -> None:
        """Set the (n_species,) self energies E0 (kcal/mol)."""
        self.self_energies.copy_(e0.to(self.self_energies))

    def freeze_self_energies(self) -> None:
        """Nothing to do: the self energies are a buffer, never trained (as :meth:`HipnnTS.freeze_self_energies`
        makes them there)."""


def least_squares_self_energies(counts: Tensor, energies: Tensor, n_species: int) -> Tensor:
    """(n_species,) float64 per-species energies E0 minimising |counts @ E0 - energies|^2 (minimum-norm
    solution where a species count is missing or collinear).

    Args:
        counts: (M, n_species) species counts of molecules; energies: (M,) their energies.
    """
    check_tensor("counts", counts, (None, n_species), (torch.float32, torch.float64, torch.int64))
    check_tensor("energies", energies, (counts.shape[0],))
    a, b = counts.double().cpu(), energies.double().cpu()
    return torch.linalg.pinv(a.t() @ a) @ (a.t() @ b)
