"""CPU benchmark: one force-training step of HipnnTS against hippynn 0.1.3, identical weights.

Measured, per lmax in (0, 1, 2), on the SPEC section 7 configuration (F = 128, n_sens = 20,
dist_soft_min 0.75, dist_soft_max 5.5, cutoff 6.5 Å, 2 interaction layers, 3 atom layers, species
H C N O): wall time (``time.perf_counter``) of one training step = forward energy, forces
-dE/dR with create_graph=True, loss MSE(energy) + MSE(forces) against fixed random targets,
loss.backward() (the double backward) and one Adam step. Both sides compute the pair vectors
from the positions inside the step; the pair list itself is built once, outside the timed region.
hipnnts_kernels runs ``HipnnTS`` (backend "auto"); hippynn runs ``Hipnn`` / ``HipnnVec`` /
``HipnnQuad`` + ``HEnergy`` with numba custom kernels if available, else its pytorch kernels.
Warm-up steps are excluded; both sides are timed interleaved in the same run; median and IQR.

    python bench/cpu_training_step.py [--quick] [--dtype float64] [--repeats 10] [--out DIR]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
from torch import Tensor, nn

from hipnnts_kernels import HipnnTS, backends, pairs_within_cutoff
from hipnnts_kernels.hippynn_interop import to_hippynn
from hipnnts_kernels.synthetic import random_molecules

SPECIES = (1, 6, 7, 8)
CONFIG = dict(species=SPECIES, n_features=128, n_sensitivities=20, dist_soft_min=0.75, dist_soft_max=5.5,
              cutoff=6.5, n_interaction_layers=2, n_atom_layers=3)
PAIR_LIST_NOTE = "pair list built outside the timed region"
TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-9}
LEARNING_RATE = 1e-4


@dataclass
class Batch:
    """Flattened molecules with their (fixed) pair list and training targets."""

    species: Tensor  #: (N,) atomic numbers
    positions: Tensor  #: (N, 3) Å
    mol_index: Tensor  #: (N,)
    n_molecules: int
    pair_first: Tensor  #: (P,)
    pair_second: Tensor  #: (P,)
    energy_target: Tensor  #: (B,)
    force_target: Tensor  #: (N, 3)


@dataclass
class Row:
    """Result for one lmax: milliseconds per training step."""

    lmax: int
    ours_ms: float
    ours_iqr_ms: float
    hippynn_ms: float
    hippynn_iqr_ms: float
    speedup: float
    atoms: int
    pairs: int
    energy_rel_diff: float
    force_rel_diff: float


def make_batch(n_molecules: int, dtype: torch.dtype, seed: int = 0) -> Batch:
    """Random molecules of 8-24 atoms (1.25 Å grid), their pair list and random targets."""
    species, pos, mol = random_molecules(n_molecules, 8, 24, seed=seed, species=SPECIES, spacing=1.25, jitter=0.25,
                                         dtype=dtype)
    pair_first, pair_second = pairs_within_cutoff(pos, mol, CONFIG["cutoff"])
    g = torch.Generator().manual_seed(seed + 1)
    return Batch(species, pos, mol, n_molecules, pair_first, pair_second,
                 energy_target=torch.randn(n_molecules, generator=g, dtype=torch.float64).to(dtype),
                 force_target=torch.randn(pos.shape[0], 3, generator=g, dtype=torch.float64).to(dtype))


def ours_energy_forces(model: HipnnTS, b: Batch) -> tuple[Tensor, Tensor]:
    """Energies (B,) and forces (N, 3) of HipnnTS, force graph kept for training."""
    out = model(b.species, b.positions.detach().requires_grad_(), b.mol_index, b.pair_first, b.pair_second,
                n_molecules=b.n_molecules, forces=True, create_graph=True)
    return out.energy, out.forces


def hippynn_energy_forces(network: nn.Module, head: nn.Module, b: Batch) -> tuple[Tensor, Tensor]:
    """Energies (B,) and forces (N, 3) of the hippynn network + HEnergy, force graph kept for training."""
    positions = b.positions.detach().requires_grad_()
    onehot = (b.species.unsqueeze(1) == torch.tensor(SPECIES)).to(positions.dtype)
    coord = positions[b.pair_second] - positions[b.pair_first]
    dist = coord.norm(dim=1)
    args = (onehot, b.pair_first, b.pair_second, dist) + ((coord,) if type(network).__name__ != "Hipnn" else ())
    energy = head(network(*args), b.mol_index, b.n_molecules)[0].squeeze(1)
    (grad,) = torch.autograd.grad(energy.sum(), positions, create_graph=True)
    return energy, -grad


def make_step(energy_forces: Callable[[], tuple[Tensor, Tensor]], params: list[nn.Parameter],
              b: Batch) -> Callable[[], float]:
    """A closure that runs one training step and returns its wall time in seconds."""
    optimizer = torch.optim.Adam(params, lr=LEARNING_RATE)

    def step() -> float:
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        energy, forces = energy_forces()
        loss = nn.functional.mse_loss(energy, b.energy_target) + nn.functional.mse_loss(forces, b.force_target)
        loss.backward()
        optimizer.step()
        return time.perf_counter() - start

    return step


def median_iqr_ms(seconds: list[float]) -> tuple[float, float]:
    """Median and interquartile range, in milliseconds."""
    ms = sorted(1e3 * s for s in seconds)
    if len(ms) < 2:
        return ms[0], 0.0
    q1, _, q3 = statistics.quantiles(ms, n=4, method="inclusive")
    return statistics.median(ms), q3 - q1


def relative_differences(model: HipnnTS, network: nn.Module, head: nn.Module, b: Batch) -> tuple[float, float]:
    """Max relative difference of energies and of forces, ours vs hippynn (same weights, same batch)."""
    ours = [t.detach() for t in ours_energy_forces(model, b)]
    ref = [t.detach() for t in hippynn_energy_forces(network, head, b)]
    energy, forces = (float((a - r).abs().max() / r.abs().max()) for a, r in zip(ours, ref))
    return energy, forces


def bench_lmax(lmax: int, b: Batch, dtype: torch.dtype, warmup: int, repeats: int) -> Row:
    """Check energy and force parity once, then time interleaved training steps of both implementations."""
    torch.manual_seed(lmax)
    model = HipnnTS(**CONFIG, lmax=lmax).to(dtype)
    network, head = to_hippynn(model)
    rel_energy, rel_forces = relative_differences(model, network, head, b)
    print(f"lmax={lmax}: relative difference ours vs hippynn: energy {rel_energy:.1e}, forces {rel_forces:.1e}",
          flush=True)
    if not max(rel_energy, rel_forces) < TOLERANCE[dtype]:
        raise SystemExit(f"lmax={lmax}: ours and hippynn differ by more than {TOLERANCE[dtype]:.0e}; not timing")
    steps = {
        "ours": make_step(lambda: ours_energy_forces(model, b), list(model.parameters()), b),
        "hippynn": make_step(lambda: hippynn_energy_forces(network, head, b),
                             [*network.parameters(), *head.parameters()], b),
    }
    for _ in range(warmup):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(repeats):
        for name in (("ours", "hippynn") if i % 2 == 0 else ("hippynn", "ours")):
            times[name].append(steps[name]())
    ours_ms, ours_iqr = median_iqr_ms(times["ours"])
    ref_ms, ref_iqr = median_iqr_ms(times["hippynn"])
    return Row(lmax, ours_ms, ours_iqr, ref_ms, ref_iqr, ref_ms / ours_ms, b.positions.shape[0], b.pair_first.shape[0],
               rel_energy, rel_forces)


def select_hippynn_kernels() -> str:
    """Activate hippynn's numba kernels if they work here, else its pytorch kernels; return the name."""
    from hippynn import custom_kernels

    try:
        return custom_kernels.set_custom_kernels("numba")
    except Exception as err:  # noqa: BLE001 -- any failure means numba is unusable here
        print(f"hippynn numba kernels unavailable ({err}); using pytorch", file=sys.stderr)
        return custom_kernels.set_custom_kernels("pytorch")


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def markdown_table(rows: list[Row]) -> str:
    lines = ["| lmax | ours ms/step (IQR) | hippynn ms/step (IQR) | speedup (hippynn/ours) | atoms | pairs |",
             "|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r.lmax} | {r.ours_ms:.1f} ({r.ours_iqr_ms:.1f}) | {r.hippynn_ms:.1f} ({r.hippynn_iqr_ms:.1f}) "
              f"| {r.speedup:.2f}x | {r.atoms} | {r.pairs} |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--molecules", type=int, default=16, help="molecules in the batch (default 16)")
    parser.add_argument("--repeats", type=int, default=10, help="timed steps per implementation (default 10)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (numba JIT; default 3)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 2 molecules, 1 repeat")
    parser.add_argument("--out", type=Path, help="write DIR/cpu.md and DIR/cpu.json")
    args = parser.parse_args()
    if args.quick:
        args.molecules, args.repeats = 2, 1
    dtype = getattr(torch, args.dtype)

    warnings.filterwarnings("ignore", module=r"hippynn(\.|$)")
    kernels = select_hippynn_kernels()
    batch = make_batch(args.molecules, dtype)
    meta = dict(
        date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"), cpu=cpu_model(),
        cores=os.cpu_count(), python=platform.python_version(), torch=torch.__version__,
        hippynn=package_version("hippynn"), numba=package_version("numba"), dtype=args.dtype,
        torch_threads=torch.get_num_threads(), hippynn_kernels=kernels,
        ours_backend=backends.resolve("interaction", "auto", torch.device("cpu")),
        molecules=args.molecules, warmup=args.warmup, repeats=args.repeats, pair_list=PAIR_LIST_NOTE,
        config={k: list(v) if isinstance(v, tuple) else v for k, v in CONFIG.items()},
    )
    print(f"{args.molecules} molecules, {batch.positions.shape[0]} atoms, {batch.pair_first.shape[0]} pairs; "
          f"{args.dtype}; torch threads {meta['torch_threads']}; hippynn kernels {kernels}; {PAIR_LIST_NOTE}",
          flush=True)
    rows = [bench_lmax(lmax, batch, dtype, args.warmup, args.repeats) for lmax in (0, 1, 2)]
    table = markdown_table(rows)
    print(table)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        header = [
            "# CPU training step: hipnnts_kernels HipnnTS vs hippynn", "",
            *(f"- {key}: {meta[key]}" for key in ("date", "cpu", "cores", "python", "torch", "hippynn", "numba",
                                                 "dtype", "torch_threads", "hippynn_kernels", "ours_backend",
                                                 "molecules", "warmup", "repeats")),
            f"- {PAIR_LIST_NOTE}",
            "- step: forward energy, forces (create_graph=True), MSE(energy) + MSE(forces), backward, Adam",
            "- relative difference ours vs hippynn before timing (energy, forces): "
            + "; ".join(f"lmax={r.lmax}: {r.energy_rel_diff:.1e}, {r.force_rel_diff:.1e}" for r in rows),
        ]
        (args.out / "cpu.md").write_text("\n".join([*header, "", table, ""]))
        (args.out / "cpu.json").write_text(json.dumps({**meta, "rows": [asdict(r) for r in rows]}, indent=2) + "\n")
        print(f"wrote {args.out / 'cpu.md'} and {args.out / 'cpu.json'}")


if __name__ == "__main__":
    main()
