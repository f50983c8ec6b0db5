"""TensorNet (Simeon & De Fabritiis, NeurIPS 2023) as a model with :class:`~hipnnts_kernels.HipnnTS`'s
interface, so that the trainer, :func:`~hipnnts_kernels.training.evaluate`, checkpoints and the ASE
calculator take either; used for accuracy comparisons at equal data, split and budget.

The representation is torchmd-net's ``TensorNet`` (an optional dependency, imported when a model is
built: ``pip install --no-deps torchmd-net==3.0.2``); the energy head and the self energies are ours.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .checks import (
    check_pair_lengths,
    value_checks_enabled,
)
from .model import FixedSelfEnergies, ModelOutput, check_batch, species_table, with_forces

INSTALL_HINT = "pip install --no-deps torchmd-net==3.0.2"


def _tensornet_class() -> type:
    try:
        with warnings.catch_warnings():  # torchmd-net warns when its optional warp kernels are missing
            warnings.simplefilter("ignore")
            from torchmdnet.models.tensornet import TensorNet
    except ImportError as err:
        raise ImportError(f"TensorNetModel needs torchmd-net's TensorNet ({err}); install it with "
                          f"`{INSTALL_HINT}`") from err
    return TensorNet


class _NeighborSearch(nn.Module):
    """TensorNet's neighbour search, run on detached positions; the vectors and lengths of the pairs
    it found are then computed again from the positions, so that gradients (forces and their double
    backward) flow through the pairs found only, not through every N x N candidate of the search.
    That also makes them deterministic on a multi-threaded CPU (the search's own backward
    accumulates into the positions in a varying order) and keeps the N x N candidates out of the
    autograd graph. Returns what torchmd-net's ``OptimizedDistance`` returns: pairs (2, P) with
    vectors R[first] - R[second] and lengths, self pairs with length 0."""

    def __init__(self, search: nn.Module):
        super().__init__()
        self.search = search

    def forward(self, pos: Tensor, batch: Tensor | None = None, box: Tensor | None = None):
        edge_index = self.search(pos.detach(), batch, box)[0]
        vec = pos.index_select(0, edge_index[0]) - pos.index_select(0, edge_index[1])
        loop = edge_index[0] == edge_index[1]
        length = torch.where(loop, 0.0, vec.square().sum(1).masked_fill(loop, 1.0).sqrt())  # no 0/0 gradient
        return edge_index, length, vec


class TensorNetModel(FixedSelfEnergies, nn.Module):
    """TensorNet with a per-atom energy head and fixed per-species self energies.

    Per-atom energy = MLP(x_i) + E0[species_i], where x_i are TensorNet's final per-atom features
    (``hidden_channels`` wide), the MLP is Linear(hidden, hidden // 2), SiLU, Linear(hidden // 2, 1),
    and E0 are the least-squares self energies of :meth:`fit_self_energies`: a buffer, saved in the
    ``state_dict`` and never trained. Molecular energy = sum of its atoms' energies; the
    hierarchicality output is zero (there is no hierarchical head).

    TensorNet settings: expnorm radial basis (not trainable), cosine cutoff with ``cutoff_lower = 0``,
    SiLU activations, O(3) equivariance (torchmd-net's defaults), ``static_shapes=False``: static
    shapes pad the neighbour list to ``max_num_neighbors`` pairs per atom for CUDA graphs, which only
    adds work here. Species enter TensorNet as indices into ``species`` (its embedding has one row
    per known element).

    Neighbour list: TensorNet builds its own inside :meth:`forward` (all ordered pairs of atoms of
    the same molecule closer than ``cutoff``, plus every atom with itself); the pair lists passed to
    :meth:`forward` are checked and otherwise ignored. Its search runs here on detached positions and
    the found pairs' vectors are computed again from the positions (:class:`_NeighborSearch`): same
    values, but gradients skip the search, which makes forces deterministic on multi-threaded CPUs.
    On CPU (and on GPUs without Triton) torchmd-net searches all N x N atom pairs of the whole batch,
    across molecules, and sorts them: memory and time grow as N^2 in the batch's atom count, about
    80 bytes per candidate pair. Measured on a 2-core CPU with the embedded set's molecules (19 atoms
    on average): 32 molecules (635 atoms) 0.07 s, 128 (2.6k atoms) 1.2 s and 0.6 GB, 512 (9.9k
    atoms) 38 s and 7.7 GB; 1,500 molecules (29k atoms) would need about 65 GB (under a 14 GB limit
    it fails at its second 6.8 GB index tensor). Keep batches (``batch_size`` and ``eval_batch_size``)
    to a few thousand atoms. A batch may hold at most ``max_num_neighbors`` pairs per atom on
    average (self pairs included); more is an error.

    Periodic cells are not supported (``pair_shift`` must be None).

    Args:
        species: atomic numbers the model knows (no 0), e.g. (1, 6, 7, 8).
        hidden_channels: TensorNet's feature width (at least 2).
        num_layers: TensorNet interaction layers.
        num_rbf: radial basis functions.
        cutoff: cutoff radius (Å).
        max_num_neighbors: bound on the neighbour list's size, per atom of a batch.
    """

    def __init__(self, species: Sequence[int] = (1, 6, 7, 8), hidden_channels: int = 128, num_layers: int = 2,
                 num_rbf: int = 32, cutoff: float = 4.5, max_num_neighbors: int = 64):
        super().__init__()
        self.species, species_map = species_table(species)
        self.register_buffer("species_map", species_map, persistent=False)
        for name, value, low in (("hidden_channels", hidden_channels, 2), ("num_layers", num_layers, 0),
                                 ("num_rbf", num_rbf, 1), ("max_num_neighbors", max_num_neighbors, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if not cutoff > 0:
            raise ValueError(f"cutoff must be positive, got {cutoff!r}")
        TensorNet = _tensornet_class()
        self.cutoff = float(cutoff)
        #: Constructor arguments: ``TensorNetModel(**model.hparams)`` rebuilds the architecture.
        self.hparams = dict(species=list(self.species), hidden_channels=hidden_channels, num_layers=num_layers,
                            num_rbf=num_rbf, cutoff=self.cutoff, max_num_neighbors=max_num_neighbors)
        self.representation = TensorNet(
            hidden_channels=hidden_channels, num_layers=num_layers, num_rbf=num_rbf, rbf_type="expnorm",
            trainable_rbf=False, activation="silu", cutoff_lower=0.0, cutoff_upper=self.cutoff,
            max_num_neighbors=max_num_neighbors, max_z=len(self.species), equivariance_invariance_group="O(3)",
            static_shapes=False,
        )
        self.representation.distance = _NeighborSearch(self.representation.distance)
        self.energy_head = nn.Sequential(
            nn.Linear(hidden_channels, hidden_channels // 2), nn.SiLU(), nn.Linear(hidden_channels // 2, 1),
        )
        nn.init.xavier_uniform_(self.energy_head[0].weight)
        nn.init.xavier_uniform_(self.energy_head[2].weight)
        nn.init.zeros_(self.energy_head[0].bias)
        nn.init.zeros_(self.energy_head[2].bias)
        #: (n_species,) self energies E0 (see :meth:`fit_self_energies`); zero until fitted.
        self.register_buffer("self_energies", torch.zeros(len(self.species)))

    # -- structure ------------------------------------------------------------------------
    def regularization_params(self) -> list[Tensor]:
        """Weights that take the L2 penalty: the weight matrix of every ``nn.Linear`` (TensorNet's and
        the head's); no biases, embeddings or layer-norm scales."""
        return [m.weight for m in self.modules() if isinstance(m, nn.Linear)]

    # -- forward --------------------------------------------------------------------------
    def forward(self, species: Tensor, positions: Tensor, mol_index: Tensor, pair_first: Tensor,
                pair_second: Tensor, n_molecules: int | None = None, pair_shift: Tensor | None = None,
                forces: bool = False, create_graph: bool | None = None) -> ModelOutput:
        """Energies (and forces) of a batch of flattened molecules.

        Args:
            species: (N,) atomic numbers; positions: (N, 3) in Å (the model's dtype).
            mol_index: (N,) molecule of each atom, in [0, n_molecules).
            pair_first, pair_second: (P,) a pair list, as for :class:`~hipnnts_kernels.HipnnTS`; checked
                (and, with value checks on, searched for coincident atoms), otherwise ignored: TensorNet
                builds its own neighbour list (see the class docstring).
            n_molecules: B; inferred from ``mol_index`` (a host sync) if None.
            pair_shift: must be None (periodic cells are not supported).
            forces: also return forces -dE/dR (N, 3), also under ``torch.no_grad()``.
            create_graph: keep the force graph for force training; defaults to ``self.training``.

        Returns:
            :class:`~hipnnts_kernels.model.ModelOutput`; ``hierarchicality`` is zeros (B,) and
            ``features`` is [TensorNet's final per-atom features (N, hidden_channels)].
        """
        n_molecules = check_batch(self, species, positions, mol_index, pair_first, pair_second, n_molecules)
        if value_checks_enabled():  # coincident atoms (TensorNet would divide by their zero distance)
            check_pair_lengths(positions.detach()[pair_second] - positions.detach()[pair_first])
        if pair_shift is not None:
            raise ValueError("TensorNetModel does not support periodic cells: pair_shift must be None "
                             "(TensorNet builds its own, non-periodic neighbour list)")
        index = self.species_index(species)
        return with_forces(lambda pos: self._energy(index, pos, mol_index, n_molecules), positions, forces,
                           self.training if create_graph is None else create_graph)

    def _energy(self, index: Tensor, positions: Tensor, mol_index: Tensor, n_molecules: int) -> ModelOutput:
        if positions.shape[0] == 0:  # torchmd-net's neighbour search rejects an empty batch
            feats = positions.new_zeros(0, self.hparams["hidden_channels"])
            atom_energy = positions[:, 0] * 0  # keeps the graph to positions for the force gradient
        else:
            feats = self.representation(index, positions, mol_index.long())[0]
            atom_energy = self.energy_head(feats).squeeze(1) + self.self_energies[index].to(feats.dtype)
        energy = atom_energy.new_zeros(n_molecules).index_add(0, mol_index, atom_energy)
        return ModelOutput(energy, atom_energy, atom_energy.new_zeros(n_molecules), [feats])
