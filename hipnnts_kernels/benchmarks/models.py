"""Model benchmark: HIP-NN and HIP-NN-TS of this package (each backend), the same models in
hippynn 0.1.3 with identical weights, torchmd-net's TensorNet and this package's ETN, on the same
molecules.

    hipnnts bench models [--size one 64 28k large] [--lmax 0 1 2] [--out DIR]

Contenders:

- **ours**: :class:`~hipnnts_kernels.HipnnTS` at the paper's ANI-1x size (F = 128, nu = 20,
  cutoff 6.5 Å, 2 interaction layers, 3 atom layers, species H C N O) for lmax 0 (HIP-NN), 1 and
  2, once per kernel backend that runs on the device;
- **hippynn**: the same networks converted with :func:`~hipnnts_kernels.hippynn_interop.to_hippynn`
  (identical weights, checked: energies and forces must agree before anything is timed), with
  hippynn's best custom kernels on the device (Triton on CUDA, numba on the CPU);
- **TensorNet** (torchmd-net 3.0.2, wrapped by :class:`~hipnnts_kernels.tensornet.TensorNetModel`):
  128 channels, 32 RBFs, 1 and 2 layers at its default cutoff 4.5 Å, and 2 layers at the
  HIP-NN-TS cutoff 6.5 Å;
- **ETN** (:class:`~hipnnts_kernels.etn.ETN`, docs/etn.md) at two sizes (:data:`ETN_VARIANTS`), the
  smaller near the parameter count of ``hipnnts train``'s default HIP-NN-TS, with the backend
  ``auto`` picks on the device.

Tasks: energy + forces inference (eval mode, forces by autograd; µs per atom), and a full
training step (forward, forces with ``create_graph=True``, MSE of energies + MSE of forces,
backward through the double backward, one Adam step (torch's fused Adam, every side); ms per step
and molecules per second).
Sizes: one molecule, 64 molecules and a batch of ≈28k atoms from the embedded GFN2-xTB set
(ANI-like CHNO molecules), and 16 larger synthetic molecules of 120–160 atoms. Fairness
(docs/benchmarks.md, Fairness) is stated in the report: see :func:`fairness_lines`.
"""
from __future__ import annotations

import argparse
import copy
import functools
import sys
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from .. import HipnnTS, backends, pairs_within_cutoff
from ..checks import value_checks
from ..synthetic import random_molecules
from ..training.trainer import make_optimizer
from . import report
from .report import describe_error, num
from .timing import device_name, environment, time_call

SPECIES = (1, 6, 7, 8)
#: The paper's ANI-1x configuration every HIP-NN / HIP-NN-TS contender uses.
HIPNN_CONFIG = dict(species=SPECIES, n_features=128, n_sensitivities=20, dist_soft_min=0.75, dist_soft_max=5.5,
                    cutoff=6.5, n_interaction_layers=2, n_atom_layers=3)
#: (layers, cutoff Å) of the TensorNet contenders: torchmd-net's default cutoff, and the HIP-NN-TS one.
TENSORNET_VARIANTS = ((1, 4.5), (2, 4.5), (2, 6.5))
#: (degree, bond dim, moments, Chebyshev functions, cutoff Å) of the ETN contenders: 61k parameters
#: (near ``hipnnts train``'s default HIP-NN-TS, 67k) and 240k.
ETN_VARIANTS = ((6, 8, 16, 8, 5.0), (6, 16, 16, 8, 5.0))
SIZES = ("one", "64", "28k", "large")
TASKS = ("inference", "training")
OUR_BACKENDS = ("cuda", "triton", "cpu", "reference")
PARITY_TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-9}
LEARNING_RATE = 1e-4


@dataclass
class BenchBatch:
    """Flattened molecules with training targets (kcal/mol, kcal/mol/Å)."""

    name: str
    description: str
    species: Tensor
    positions: Tensor
    mol_index: Tensor
    n_molecules: int
    energy: Tensor
    forces: Tensor

    @property
    def atoms(self) -> int:
        return int(self.positions.shape[0])


@dataclass
class Contender:
    name: str
    family: str  #: "ours", "hippynn", "tensornet" or "etn"
    lmax: int | None
    module: nn.Module
    parameters: int
    #: (batch, create_graph) -> (energies (B,), forces (N, 3))
    energy_forces: Callable[[BenchBatch, bool], tuple[Tensor, Tensor]]
    notes: str = ""


@dataclass
class Record:
    contender: str
    family: str
    lmax: int | None
    size: str
    task: str
    atoms: int
    molecules: int
    median_ms: float | None = None
    p10_ms: float | None = None
    p90_ms: float | None = None
    first_call_s: float | None = None
    peak_mib: float | None = None
    us_per_atom: float | None = None
    molecules_per_s: float | None = None
    error: str | None = None


@dataclass
class Results:
    meta: dict
    records: list[Record] = field(default_factory=list)
    parity: dict = field(default_factory=dict)  #: contender -> max relative differences vs hippynn
    largest_batch: dict = field(default_factory=dict)  #: contender -> {molecules, atoms} or error
    neighbour_list_ms: dict = field(default_factory=dict)  #: size -> ms of pairs_within_cutoff


# -- molecules ---------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _dataset():
    """The embedded set and a fixed random order of its conformers, read once (the largest-batch
    search builds many batches from it)."""
    from ..data.embedded import load_embedded

    data = load_embedded()
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
    return data, order


def make_batch(size: str, device: torch.device, dtype: torch.dtype, molecules: int | None = None) -> BenchBatch:
    """The molecules of ``size`` (see :data:`SIZES`), or ``molecules`` embedded conformers cycling
    through the set (used by the largest-batch search)."""
    if size == "large":
        species, positions, mol_index = random_molecules(16, 120, 160, seed=1, species=SPECIES, spacing=1.5,
                                                         jitter=0.3)
        g = torch.Generator().manual_seed(2)
        energy = torch.randn(16, generator=g, dtype=torch.float64)
        forces = 20 * torch.randn(positions.shape, generator=g, dtype=torch.float64)
        return _to(BenchBatch("large", "16 synthetic molecules of 120–160 atoms (jittered 1.5 Å grid, H C N O)",
                              species, positions, mol_index, 16, energy, forces), device, dtype)
    data, order = _dataset()
    if molecules is None:
        if size == "one":
            sizes = data.n_atoms[order]
            pick = order[(sizes - sizes.double().median()).abs().argmin()].reshape(1)
            return _batch(data, pick, "one", "one embedded molecule of median size", device, dtype)
        if size == "64":
            return _batch(data, order[:64], "64", "64 embedded molecules", device, dtype)
        if size == "28k":
            cumulative = torch.cumsum(data.n_atoms[order], 0)
            count = int(torch.searchsorted(cumulative, 28_000)) + 1
            return _batch(data, order[:count], "28k", f"{count} embedded molecules (≈28k atoms)", device, dtype)
        raise ValueError(f"unknown size {size!r}; sizes: {', '.join(SIZES)}")
    picks = order[torch.arange(molecules) % len(order)]
    return _batch(data, picks, f"{molecules} molecules", f"{molecules} embedded molecules", device, dtype)


def _batch(data, picks: Tensor, name: str, description: str, device, dtype) -> BenchBatch:
    sub = data.subset(picks)
    return _to(BenchBatch(name, description, sub.species, sub.positions, sub.conformer_index, len(picks),
                          sub.energy, sub.forces), device, dtype)


def _to(b: BenchBatch, device, dtype) -> BenchBatch:
    return BenchBatch(b.name, b.description, b.species.to(device), b.positions.to(device, dtype),
                      b.mol_index.to(device), b.n_molecules, b.energy.to(device, dtype), b.forces.to(device, dtype))


# -- contenders --------------------------------------------------------------------------------
def our_contenders(lmax: int, device: torch.device, dtype: torch.dtype, backend_names=OUR_BACKENDS,
                   hippynn: bool = True) -> list[Contender]:
    """HipnnTS at ``lmax`` on each backend that runs on ``device`` (identical weights), and the
    hippynn network + energy head holding the same weights."""
    torch.manual_seed(lmax)
    base = HipnnTS(**HIPNN_CONFIG, lmax=lmax).to(device, dtype)
    label = "HIP-NN" if lmax == 0 else f"HIP-NN-TS l={lmax}"
    out = []
    for backend in backend_names:
        if backends.unavailable_reason(backend, device, "interaction") is not None or (
                backend == "triton" and device.type != "cuda"):
            continue
        model = copy.deepcopy(base)
        for layer in model.interaction_layers:
            layer.backend = backend
        out.append(Contender(f"{label} [{backend}]", "ours", lmax, model, _count(model),
                             _ours(model), notes=f"hipnnts_kernels, {backend} kernels"))
    if hippynn:
        out.append(_hippynn_contender(base, label, lmax, device))
    return out


def _ours(model: nn.Module):
    """HipnnTS or ETN: the package's pair list inside the timed call."""
    def energy_forces(b: BenchBatch, create_graph: bool):
        pf, ps = pairs_within_cutoff(b.positions, b.mol_index, model.cutoff)
        out = model(b.species, b.positions, b.mol_index, pf, ps, n_molecules=b.n_molecules, forces=True,
                    create_graph=create_graph)
        return out.energy, out.forces

    return energy_forces


def _hippynn_contender(base: HipnnTS, label: str, lmax: int, device: torch.device) -> Contender:
    from ..hippynn_interop import to_hippynn

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kernels = hippynn_kernels(device)
        network, head = to_hippynn(base)
    species = torch.tensor(SPECIES, device=device)
    cutoff = base.cutoff
    module = nn.ModuleList([network, head])

    def energy_forces(b: BenchBatch, create_graph: bool):
        positions = b.positions.detach().requires_grad_()
        pf, ps = pairs_within_cutoff(positions, b.mol_index, cutoff)
        onehot = (b.species.unsqueeze(1) == species).to(positions.dtype)
        coord = positions[ps] - positions[pf]
        args = (onehot, pf, ps, coord.norm(dim=1)) + ((coord,) if lmax else ())
        with torch.enable_grad():
            energy = head(network(*args), b.mol_index, b.n_molecules)[0].squeeze(1)
            (grad,) = torch.autograd.grad(energy.sum(), positions, create_graph=create_graph)
        return energy, -grad

    return Contender(f"{label} [hippynn {kernels}]", "hippynn", lmax, module, _count(module), energy_forces,
                     notes=f"hippynn 0.1.3, {kernels} custom kernels, identical weights")


def hippynn_kernels(device: torch.device) -> str:
    """Switch hippynn to its best custom kernels on ``device`` (Triton on CUDA; numba, else its
    PyTorch kernels, on the CPU) and return their name."""
    from hippynn import custom_kernels

    preferred = ("triton",) if device.type == "cuda" else ("numba", "pytorch")
    for name in preferred:
        if name in custom_kernels.CUSTOM_KERNELS_AVAILABLE or name == "triton":
            custom_kernels.set_custom_kernels(name)
            return name
    raise RuntimeError(f"hippynn has none of the kernels {preferred} here")


def tensornet_contenders(device: torch.device, dtype: torch.dtype, variants=TENSORNET_VARIANTS) -> list[Contender]:
    from ..tensornet import TensorNetModel

    out = []
    for layers, cutoff in variants:
        torch.manual_seed(100 + layers)
        model = TensorNetModel(SPECIES, hidden_channels=128, num_layers=layers, cutoff=cutoff).to(device, dtype)
        out.append(Contender(f"TensorNet {layers} layer{'s' if layers > 1 else ''}, {cutoff} Å", "tensornet", None,
                             model, _count(model), _tensornet(model),
                             notes="torchmd-net 3.0.2 TensorNet, 128 channels, 32 RBFs, own neighbour list"))
    return out


def etn_contenders(device: torch.device, dtype: torch.dtype, variants=ETN_VARIANTS) -> list[Contender]:
    from ..etn import ETN

    out = []
    for degree, bond_dim, moments, radial, cutoff in variants:
        torch.manual_seed(200 + degree + bond_dim)
        model = ETN(SPECIES, n_radial=radial, n_moments=moments, bond_dim=bond_dim, degree=degree,
                    cutoff=cutoff).to(device, dtype)
        out.append(Contender(f"ETN D={degree}, b={bond_dim}, M={moments}", "etn", None, model, _count(model),
                             _ours(model), notes=f"hipnnts_kernels ETN, {radial} Chebyshev functions, cutoff "
                             f"{cutoff} Å, ops on the backend auto picks"))
    return out


def _tensornet(model: nn.Module):
    def energy_forces(b: BenchBatch, create_graph: bool):
        none = b.mol_index.new_zeros(0)
        out = model(b.species, b.positions, b.mol_index, none, none, n_molecules=b.n_molecules, forces=True,
                    create_graph=create_graph)
        return out.energy, out.forces

    return energy_forces


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


# -- measurement -------------------------------------------------------------------------------
def inference_call(c: Contender, b: BenchBatch) -> Callable[[], object]:
    def run():
        c.module.eval()
        energy, forces = c.energy_forces(b, False)
        return energy.detach(), forces.detach()

    return run


def training_step(c: Contender, b: BenchBatch) -> Callable[[], object]:
    params = [p for p in c.module.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, "adam", LEARNING_RATE)

    def step():
        c.module.train()
        optimizer.zero_grad(set_to_none=True)
        energy, forces = c.energy_forces(b, True)
        loss = nn.functional.mse_loss(energy, b.energy) + nn.functional.mse_loss(forces, b.forces)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def measure(c: Contender, b: BenchBatch, task: str, device: torch.device, warmup: int, repeats: int) -> Record:
    record = Record(c.name, c.family, c.lmax, b.name, task, b.atoms, b.n_molecules)
    fn = inference_call(c, b) if task == "inference" else training_step(c, b)
    state = copy.deepcopy(c.module.state_dict()) if task == "training" else None
    try:
        with value_checks(False):
            timing = time_call(fn, device, warmup=warmup, repeats=repeats)
    except Exception as err:  # noqa: BLE001 -- recorded (out of memory included); the others still run
        record.error = describe_error(err)
        return record
    finally:
        if state is not None:  # training steps change the weights; every measurement starts from the same ones
            c.module.load_state_dict(state)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    record.median_ms, record.p10_ms, record.p90_ms = timing.median_us / 1e3, timing.p10_us / 1e3, timing.p90_us / 1e3
    record.first_call_s, record.peak_mib = timing.first_call_s, timing.peak_mib
    record.us_per_atom = timing.median_us / max(b.atoms, 1)
    record.molecules_per_s = b.n_molecules / (timing.median_us * 1e-6)
    return record


def parity(ours: Contender, hippynn: Contender, b: BenchBatch) -> dict[str, float]:
    """Max relative difference of energies and forces (eval mode), ours vs hippynn."""
    with value_checks(False):
        mine = inference_call(ours, b)()
        theirs = inference_call(hippynn, b)()
    return {name: float((a.double() - r.double()).abs().max() / r.double().abs().max())
            for name, a, r in zip(("energy", "forces"), mine, theirs)}


def largest_batch(c: Contender, device: torch.device, dtype: torch.dtype, start: int, limit: int) -> dict:
    """Most embedded molecules whose training step fits in GPU memory: doubling from ``start``,
    then three bisection steps (so within 1/8 of the doubling interval), up to ``limit``."""
    def fits(n: int) -> bool:
        try:
            b = make_batch("search", device, dtype, molecules=n)
            with value_checks(False):
                training_step(c, b)()
            torch.cuda.synchronize(device)
            return True
        except torch.cuda.OutOfMemoryError:
            return False
        finally:
            torch.cuda.empty_cache()

    state = copy.deepcopy(c.module.state_dict())
    try:
        low, high = 0, None
        n = start
        while n <= limit:
            if fits(n):
                low, n = n, 2 * n
            else:
                high = n
                break
        for _ in range(3 if high is not None else 0):
            mid = (low + high) // 2
            if mid <= low:
                break
            low, high = (mid, high) if fits(mid) else (low, mid)
    except Exception as err:  # noqa: BLE001 -- recorded
        return {"error": describe_error(err)}
    finally:
        c.module.load_state_dict(state)
    atoms = int(make_batch("search", torch.device("cpu"), dtype, molecules=low).atoms) if low else 0
    return {"molecules": low, "atoms": atoms, "reached_limit": high is None}


def run(sizes, lmax_values, backend_names, peers, dtype: torch.dtype, device: torch.device, warmup: int,
        repeats: int, max_batch: bool = True, tensornet_variants=TENSORNET_VARIANTS, etn_variants=ETN_VARIANTS,
        on_progress: Callable[[Results], None] | None = None) -> Results:
    """Measure every contender on every batch; ``on_progress(results)`` is called after each contender."""
    meta = dict(environment(device), dtype=str(dtype).replace("torch.", ""), warmup=warmup, repeats=repeats,
                timing="CUDA events" if device.type == "cuda" else "wall clock (perf_counter), synchronised",
                hipnn_config={k: list(v) if isinstance(v, tuple) else v for k, v in HIPNN_CONFIG.items()},
                learning_rate=LEARNING_RATE, sizes={})
    results = Results(meta)
    batches = {size: make_batch(size, device, dtype) for size in sizes}
    for size, b in batches.items():
        meta["sizes"][size] = dict(description=b.description, molecules=b.n_molecules, atoms=b.atoms)
        pairs = time_call(lambda b=b: pairs_within_cutoff(b.positions, b.mol_index, HIPNN_CONFIG["cutoff"]), device,
                          warmup=2, repeats=max(3, repeats // 2))
        results.neighbour_list_ms[size] = pairs.median_us / 1e3
    parity_batch = batches.get("64") or next(iter(batches.values()))
    groups: list[list[Contender]] = []
    for lmax in lmax_values:
        groups.append(our_contenders(lmax, device, dtype, backend_names, hippynn="hippynn" in peers))
    if "tensornet" in peers:
        groups.append(tensornet_contenders(device, dtype, tensornet_variants))
    if "etn" in peers:
        groups.append(etn_contenders(device, dtype, etn_variants))
    meta["contenders"] = {c.name: dict(family=c.family, lmax=c.lmax, parameters=c.parameters, notes=c.notes)
                          for group in groups for c in group}
    for group in groups:
        reference = next((c for c in group if c.family == "hippynn"), None)
        for c in group:
            if reference is not None and c.family == "ours":
                diffs = parity(c, reference, parity_batch)
                results.parity[c.name] = diffs
                if not max(diffs.values()) <= PARITY_TOLERANCE[dtype]:
                    results.records += [Record(c.name, c.family, c.lmax, s, t, b.atoms, b.n_molecules,
                                               error=f"differs from hippynn by {max(diffs.values()):.1e}; not timed")
                                        for s, b in batches.items() for t in TASKS]
                    continue
            for b in batches.values():
                for task in TASKS:
                    results.records.append(measure(c, b, task, device, warmup, repeats))
            if max_batch and device.type == "cuda":
                results.largest_batch[c.name] = largest_batch(c, device, dtype, start=1024, limit=1 << 16)
            print(f"{c.name}: done", file=sys.stderr, flush=True)
            if on_progress is not None:
                on_progress(results)
    return results


# -- report ------------------------------------------------------------------------------------
def fairness_lines(meta: dict, results: Results) -> list[str]:
    """The fairness rules (docs/benchmarks.md), each as this run applied it."""
    nl = ", ".join(f"{s} {v:.2f} ms" for s, v in results.neighbour_list_ms.items())
    return [
        f"- Same device for every side ({meta['device']}), same molecules and batches (below), same dtype "
        f"({meta['dtype']}); TF32 {'on' if meta['tf32'] else 'off'} for every side.",
        "- Neighbour list **inside** the timed region on every side: HIP-NN / HIP-NN-TS and hippynn use "
        "`pairs_within_cutoff` (dense search per molecule, on the device), as does ETN at its cutoff; TensorNet builds "
        "its own in its "
        "forward (`OptimizedDistance`; our wrapper runs it on detached positions and recomputes the found pairs' "
        f"vectors, so the backward skips the N x N search; same values). The HIP-NN list alone takes: {nl}.",
        "- Same tasks: energy + forces inference (eval mode, forces by autograd); a training step = forward, forces "
        "with create_graph, MSE(E) + MSE(F), backward (double backward), Adam step (torch's fused Adam for every "
        "side). Targets are the xTB labels (random for the synthetic large molecules).",
        f"- Warm-up excluded ({meta['warmup']} calls); {meta['timing']}; median of {meta['repeats']} calls, "
        "10th–90th percentiles in the JSON; first call (compilation) reported separately.",
        "- Peak memory: CUDA allocator peak during the timed calls (not measured on the CPU).",
        "- Launch overhead: no CUDA graphs and no torch.compile on any side (eager PyTorch everywhere). "
        "Our value checks (host syncs) are off, as in training.",
        "- Versions: " + ", ".join(f"{k} {meta[k]}" for k in ("torch", "triton", "hippynn", "numba", "torchmd_net")
                                   if meta.get(k)) + f"; this package at {meta.get('git_commit')}.",
        "- Speed ratios below are from this one run.",
    ]


def markdown(results: Results) -> str:
    meta, records = results.meta, results.records
    sizes = list(meta["sizes"])
    names = list(meta["contenders"])
    title = f"# Model benchmark: HIP-NN, HIP-NN-TS, hippynn, TensorNet, ETN ({meta['device']}, {meta['date'][:10]})"
    lines = [title, "",
             *report.partial_notice(meta), *report.provenance_lines(meta), "", "## Fairness rules", "",
             *fairness_lines(meta, results),
             "", "## Batches", "", "| size | molecules | atoms | what |", "|---|---:|---:|---|"]
    lines += [f"| {s} | {v['molecules']} | {v['atoms']} | {v['description']} |" for s, v in meta["sizes"].items()]
    lines += ["", "## Contenders", "", "| contender | trainable parameters | what |", "|---|---:|---|"]
    lines += [f"| {n} | {v['parameters']:,} | {v['notes']} |" for n, v in meta["contenders"].items()]
    table = {(r.contender, r.size, r.task): r for r in records}

    def cell(name, size, task, value):
        r = table.get((name, size, task))
        if r is None:
            return "–"
        return "failed" if r.error else value(r)

    lines += ["", "## Energy + forces inference (µs per atom)", "",
              "| contender | " + " | ".join(sizes) + " |", "|---|" + "---:|" * len(sizes)]
    lines += [f"| {n} | " + " | ".join(cell(n, s, "inference", lambda r: num(r.us_per_atom)) for s in sizes) + " |"
              for n in names]
    lines += ["", "## Training step with force loss (ms per step; molecules per second)", "",
              "| contender | " + " | ".join(sizes) + " |", "|---|" + "---:|" * len(sizes)]
    step = lambda r: f"{num(r.median_ms)}; {num(r.molecules_per_s)}/s"  # noqa: E731
    lines += [f"| {n} | " + " | ".join(cell(n, s, "training", step) for s in sizes) + " |" for n in names]
    if any(r.peak_mib is not None for r in records):
        lines += ["", "## Peak memory of the training step (MiB)", "",
                  "| contender | " + " | ".join(sizes) + " |", "|---|" + "---:|" * len(sizes)]
        lines += [f"| {n} | " + " | ".join(cell(n, s, "training", lambda r: num(r.peak_mib)) for s in sizes) + " |"
                  for n in names]
    if "threads" in meta:  # a CPU run
        lines += ["", "Largest batch that fits: measured on CUDA devices only."]
    if results.largest_batch:
        lines += ["", "## Largest training batch that fits (embedded molecules)", "",
                  "| contender | molecules | atoms |", "|---|---:|---:|"]
        for n, v in results.largest_batch.items():
            text = (f"{v['molecules']:,}{'+' if v.get('reached_limit') else ''} | {v['atoms']:,}" if "molecules" in v
                    else f"failed: {v['error']} | –")
            lines.append(f"| {n} | {text} |")
    lines += ["", "## Ratios (time of the other / time of ours; > 1: ours is faster)", "", *ratio_lines(results)]
    if results.parity:
        lines += ["", "## Parity with hippynn before timing (max relative difference)", ""]
        lines += [f"- {n}: energy {v['energy']:.1e}, forces {v['forces']:.1e}" for n, v in results.parity.items()]
    failed = [r for r in records if r.error]
    if failed:
        lines += ["", "## Failed", ""] + [f"- {r.contender}, {r.size}, {r.task}: {r.error}" for r in failed]
    return "\n".join(lines) + "\n"


def best_ours(records: list[Record], lmax: int, size: str, task: str) -> Record | None:
    ours = [r for r in records if r.family == "ours" and r.lmax == lmax and r.size == size and r.task == task
            and r.median_ms is not None]
    return min(ours, key=lambda r: r.median_ms, default=None)


def ratio_lines(results: Results) -> list[str]:
    records, out = results.records, []
    for size in results.meta["sizes"]:
        for task in TASKS:
            for r in records:
                if r.size != size or r.task != task or r.median_ms is None or r.family == "ours":
                    continue
                mine = best_ours(records, r.lmax if r.family == "hippynn" else 2, size, task)
                if mine is not None:
                    ratio = r.median_ms / mine.median_ms
                    out.append(f"- {size}, {task}: {r.contender} / {mine.contender} = {ratio:.2f}×")
    return out or ["- (no pair of sides both ran)"]


def plots(results: Results, out: Path, stem: str) -> list[Path]:
    """``<stem>_time.png``: time vs atoms per contender (inference µs/atom and training ms/step, one
    panel per lmax, TensorNet and ETN with lmax 2); ``<stem>_speedup.png``: other / ours at each size."""
    ok = [r for r in results.records if r.median_ms is not None]
    series: dict[str, dict[str, list]] = {}
    for r in ok:
        lmax = r.lmax if r.family in ("ours", "hippynn") else 2
        panel = f"{r.task}, {'HIP-NN' if lmax == 0 else f'HIP-NN-TS l={lmax}'}" + (" & peers" if lmax == 2 else "")
        value = r.us_per_atom if r.task == "inference" else r.median_ms
        series.setdefault(panel, {}).setdefault(r.contender, []).append((r.atoms, value))
    labels = {panel: "µs per atom" if panel.startswith("inference") else "ms per step" for panel in series}
    paths = [report.time_vs_atoms(dict(sorted(series.items())), out / f"{stem}_time.png",
                                  "Energy + forces inference and training step, against batch size", labels)]
    bars: dict[str, dict[str, float]] = {}
    for r in ok:
        if r.task != "training" or r.family == "ours":
            continue
        mine = best_ours(ok, r.lmax if r.family == "hippynn" else 2, r.size, "training")
        if mine is not None:
            bars.setdefault(f"{r.size} ({r.atoms} atoms)", {})[r.contender] = r.median_ms / mine.median_ms
    paths.append(report.speedup_bars(bars, out / f"{stem}_speedup.png",
                                     "Training step: time of each peer / time of our fastest backend (same lmax; "
                                     "TensorNet and ETN vs l=2)"))
    return paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", nargs="+", default=None, choices=SIZES,
                        help="batches (default: all on CUDA; one and 64 on the CPU)")
    parser.add_argument("--lmax", type=int, nargs="+", default=[0, 1, 2], choices=[0, 1, 2])
    parser.add_argument("--backend", nargs="+", default=list(OUR_BACKENDS), choices=OUR_BACKENDS,
                        help="our kernel backends (those that cannot run on the device are left out)")
    parser.add_argument("--peers", nargs="*", default=["hippynn", "tensornet", "etn"],
                        choices=["hippynn", "tensornet", "etn"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--device", default="auto", help="cuda, cuda:K or cpu (default: cuda if available)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed calls first (default 5 on CUDA, 3 on the CPU; TorchScript, inside TensorNet, "
                        "re-optimises on its first calls)")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls (default 30 on CUDA, 5 on CPU)")
    parser.add_argument("--no-max-batch", action="store_true", help="skip the largest-batch search (CUDA only)")
    parser.add_argument("--tf32", action="store_true", help="allow TF32 matmuls (default off; stated in the report)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"),
                        help="folder of models_<device>.md/.json/.png (default bench/results)")


def run_from_arguments(args: argparse.Namespace) -> Path:
    """Run the benchmark of parsed ``args``; write the report after each contender (so a run cut
    short keeps what it measured) and in full at the end; return the markdown path."""
    device = report.resolve_device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = bool(args.tf32)
    cuda = device.type == "cuda"
    sizes = args.size or (list(SIZES) if cuda else ["one", "64"])
    stem = "models_" + report.slug(device_name(device))

    def save(results: Results, complete: bool) -> Path:
        results.meta["complete"] = complete
        data = dict(records=[asdict(r) for r in results.records], parity=results.parity,
                    largest_batch=results.largest_batch, neighbour_list_ms=results.neighbour_list_ms)
        return report.write(args.out, stem, results.meta, data, markdown(results),
                            (lambda: plots(results, args.out, stem)) if complete else None)

    results = run(sizes, args.lmax, args.backend, args.peers, getattr(torch, args.dtype), device,
                  args.warmup if args.warmup is not None else (5 if cuda else 3),
                  args.repeats if args.repeats is not None else (30 if cuda else 5), max_batch=not args.no_max_batch,
                  on_progress=lambda r: save(r, False))
    return save(results, True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="hipnnts bench models", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    print(run_from_arguments(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
