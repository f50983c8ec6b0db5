"""Microbenchmark of the fused interaction at the SPEC section 9 batch.

    python -m hipnnts_kernels.benchmarks.interaction [--lmax 0 1 2] [--out bench/results] [--smoke]

Batch: 256 molecules of 20 atoms (jittered 1.9 Å grid, about 15 neighbours per atom within
r_c = 6.5 Å), F = 128, nu = 20, float32, TF32 off; pair list and pair vectors built outside the
timed region. Two views, each at three levels: ``forward``; ``forward+backward`` (what energy
and forces need); ``training`` (forward, backward and the double backward force training needs).

- **Op level**: the bare implementations of each backend (``cuda``: csrc/ through
  :mod:`hipnnts_kernels.cuda_backend`; ``triton``; the reference eager and under
  ``torch.compile``) on the same tensors. Each
  level's time is compared with its compulsory HBM traffic (inputs read once, outputs written
  once; see :mod:`.costs`) at the device-to-device copy bandwidth measured in the
  same run: that is the roofline floor.
- **Layer level**: one interaction layer (Y = W z GEMM, the op, the self-interaction) through
  autograd, as a model runs it: ours with the CUDA, Triton and reference backends, and hippynn
  0.1.3's ``InteractLayer*`` with its Triton custom kernels (env route) and identical weights.

Timings are CUDA-event medians over ``--repeats`` calls after ``--warmup`` calls; the first call
(compilation included) is reported separately. ``--smoke`` runs tiny sizes on the CPU (Triton
through its interpreter) to check that the harness works; its numbers mean nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from .. import backends, pairs_within_cutoff, reference
from ..model import InteractionLayer
from ..synthetic import random_molecules
from .costs import LEVELS, op_cost
from .report import describe_error
from .timing import Timing, copy_bandwidth, environment, time_call

OP_BACKENDS = ("cuda", "triton", "reference", "reference-compile")
LAYER_BACKENDS = ("cuda", "triton", "reference", "hippynn-triton")


@dataclass(frozen=True)
class Shape:
    molecules: int = 256
    atoms: int = 20
    features: int = 128
    nu: int = 20
    cutoff: float = 6.5
    spacing: float = 1.9


SMOKE = Shape(molecules=3, atoms=5, features=8, nu=4, cutoff=3.0, spacing=1.2)


@dataclass
class Record:
    view: str  #: "op" or "layer"
    backend: str
    lmax: int
    level: str
    median_us: float | None = None
    iqr_us: float | None = None
    first_call_s: float | None = None
    peak_mib: float | None = None
    bytes: int | None = None  #: compulsory HBM traffic (op view)
    gbps: float | None = None
    floor_us: float | None = None  #: bytes at the measured copy bandwidth
    error: str | None = None  #: why this case did not run


def make_problem(shape: Shape, lmax: int, dtype: torch.dtype, device: torch.device, seed: int = 0) -> dict:
    """Inputs of one layer and of the op at ``shape``, with random cotangents for the derivatives."""
    _, positions, mol_index = random_molecules(shape.molecules, shape.atoms, shape.atoms, seed=seed,
                                               spacing=shape.spacing)
    pair_first, pair_second = pairs_within_cutoff(positions, mol_index, shape.cutoff)
    n_atoms = positions.shape[0]
    torch.manual_seed(seed)
    layer = InteractionLayer(shape.features, shape.features, shape.nu, 0.75, min(5.5, shape.cutoff), shape.cutoff, lmax)
    layer = layer.to(dtype=dtype, device=device)
    z = torch.randn(n_atoms, shape.features, dtype=dtype, device=device)
    with torch.no_grad():
        Y = layer.transformed_features(z)
    pair_coord = (positions[pair_second] - positions[pair_first]).to(dtype=dtype, device=device)
    like = lambda t: torch.randn_like(t) if t is not None else None  # noqa: E731
    scales = (layer.vecscales, layer.quadscales)
    return dict(
        layer=layer, z=z, pair_first=pair_first.to(device), pair_second=pair_second.to(device), pair_coord=pair_coord,
        op_args=(Y, pair_coord, pair_first.to(device), pair_second.to(device), layer.mu.detach(),
                 layer.sigma.detach(), *(None if s is None else s.detach() for s in scales),
                 shape.cutoff, layer.cusp_reg, lmax),
        grad_out=torch.randn(n_atoms, shape.features, dtype=dtype, device=device),
        cotangents=(like(Y), like(pair_coord), like(layer.mu), like(layer.sigma),
                    *(None if s is None else like(s) for s in scales)),
    )


def op_levels(impl: dict, problem: dict) -> dict[str, Callable[[], object]]:
    """Closures running each level with the functions ``impl`` (forward, backward, double_backward)."""
    args, g, cot = problem["op_args"], problem["grad_out"], problem["cotangents"]
    double_args = (g, *args[:8], *cot, *args[8:])

    def forward():
        return impl["forward"](*args)

    def forward_backward():
        return impl["forward"](*args), impl["backward"](g, *args)

    def training():
        return impl["forward"](*args), impl["backward"](g, *args), impl["double_backward"](*double_args)

    return {"forward": forward, "forward+backward": forward_backward, "training": training}


def op_implementation(backend: str) -> dict:
    if backend in ("cuda", "triton"):
        reason = backends.unavailable_reason(backend, torch.device("cuda"), "interaction")
        if reason is not None and not (backend == "triton" and os.environ.get("TRITON_INTERPRET") == "1"):
            raise RuntimeError(reason)
        return {level: backends.implementation(op, backend) for level, op in
                (("forward", "interaction"), ("backward", "interaction_backward"),
                 ("double_backward", "interaction_double_backward"))}
    functions = dict(forward=reference.interaction, backward=reference.interaction_backward,
                     double_backward=reference.interaction_double_backward)
    if backend == "reference-compile":
        functions = {k: torch.compile(fn, dynamic=False) for k, fn in functions.items()}
    return functions


def layer_levels(layer: torch.nn.Module, hippynn: bool, problem: dict) -> dict[str, Callable[[], object]]:
    """Closures running one interaction layer through autograd at each level."""
    z0, pf, ps, coord0 = problem["z"], problem["pair_first"], problem["pair_second"], problem["pair_coord"]
    g = problem["grad_out"]
    params = [p for p in layer.parameters() if p.requires_grad]

    def run(z, coord):
        if hippynn:
            dist = coord.norm(dim=1)
            return layer(z, pf, ps, dist, coord) if layer_lmax(layer) else layer(z, pf, ps, dist)
        return layer(z, pf, ps, coord)

    def forward():
        with torch.no_grad():
            return run(z0, coord0)

    def forward_backward():
        z, coord = z0.detach().requires_grad_(), coord0.detach().requires_grad_()
        return torch.autograd.grad(run(z, coord), (z, coord), g)

    def training():
        z, coord = z0.detach().requires_grad_(), coord0.detach().requires_grad_()
        gz, gc = torch.autograd.grad(run(z, coord), (z, coord), g, create_graph=True)
        return torch.autograd.grad(gz.square().sum() + gc.square().sum(), params, allow_unused=True)

    return {"forward": forward, "forward+backward": forward_backward, "training": training}


def layer_lmax(hippynn_layer: torch.nn.Module) -> int:
    return {"InteractLayer": 0, "InteractLayerVec": 1, "InteractLayerQuad": 2}[type(hippynn_layer).__name__]


def make_layer(backend: str, problem: dict) -> tuple[torch.nn.Module, bool]:
    """The layer of ``problem`` on our ``backend``, or hippynn's copy of it with its Triton kernels."""
    layer = problem["layer"]
    if backend != "hippynn-triton":
        layer.backend = backend
        return layer, False
    from hippynn import custom_kernels

    from ..hippynn_interop import interaction_layer_to_hippynn

    custom_kernels.set_custom_kernels("triton")
    return interaction_layer_to_hippynn(layer), True


def run(lmax_values, shape: Shape, dtype: torch.dtype, device: torch.device, warmup: int, repeats: int,
        op_backends=OP_BACKENDS, layer_backends=LAYER_BACKENDS) -> tuple[dict, list[Record]]:
    """Measure every (view, backend, lmax, level); a case that fails is recorded with its error."""
    bandwidth = copy_bandwidth(device, mib=64 if device.type == "cpu" else 1024)
    records: list[Record] = []
    meta = dict(environment(device), copy_gbps=bandwidth, dtype=str(dtype).replace("torch.", ""), shape=asdict(shape),
                warmup=warmup, repeats=repeats, pair_list="built outside the timed region")
    for lmax in lmax_values:
        problem = make_problem(shape, lmax, dtype, device)
        meta.setdefault("atoms", problem["z"].shape[0])
        meta.setdefault("pairs", problem["pair_coord"].shape[0])
        meta.setdefault("neighbours_per_atom", meta["pairs"] / meta["atoms"])
        records += _run_lmax(problem, shape, lmax, device, warmup, repeats, bandwidth, op_backends, layer_backends)
        print(f"lmax={lmax}: done", file=sys.stderr, flush=True)
    return meta, records


def _run_lmax(problem, shape, lmax, device, warmup, repeats, bandwidth, op_backends, layer_backends) -> list[Record]:
    n_atoms, n_pairs = problem["z"].shape[0], problem["pair_coord"].shape[0]
    itemsize = problem["z"].element_size()
    expected = reference.interaction(*problem["op_args"])
    check = lambda out: _max_rel(out, expected)  # noqa: E731
    records = []
    for backend in op_backends:
        for level, fn in _guarded(lambda b=backend: op_levels(op_implementation(b), problem)).items():
            record = Record("op", backend, lmax, level,
                            bytes=op_cost("interaction", n_atoms, n_pairs, shape.nu, shape.features, lmax,
                                          itemsize).bytes(level))
            records.append(_measure(record, fn, device, warmup, repeats, bandwidth,
                                    check=check if level == "forward" else None))
    for backend in layer_backends:
        levels = _guarded(lambda b=backend: layer_levels(*make_layer(b, problem), problem=problem))
        for level, fn in levels.items():
            records.append(_measure(Record("layer", backend, lmax, level), fn, device, warmup, repeats, bandwidth))
    return records


def _guarded(build: Callable[[], dict]) -> dict:
    """``build()``, or one closure per level that raises the construction error when timed."""
    try:
        return build()
    except Exception as err:  # noqa: BLE001 -- recorded in the results, the other cases still run
        def fail(err=err):
            raise err

        return {level: fail for level in LEVELS}


def _max_rel(out, expected: Tensor) -> float:
    return float((out.double() - expected.double()).abs().max() / expected.double().abs().max())


def _measure(record: Record, fn, device, warmup, repeats, bandwidth, check=None) -> Record:
    try:
        if check is not None and check(fn()) > 1e-3:
            raise RuntimeError(f"forward differs from the reference by {check(fn()):.1e} (relative)")
        timing: Timing = time_call(fn, device, warmup=warmup, repeats=repeats)
    except Exception as err:  # noqa: BLE001 -- recorded in the results
        record.error = describe_error(err)
        return record
    record.median_us, record.iqr_us = timing.median_us, timing.iqr_us
    record.first_call_s, record.peak_mib = timing.first_call_s, timing.peak_mib
    if record.bytes is not None:
        record.gbps = record.bytes / (timing.median_us * 1e-6) / 1e9
        record.floor_us = record.bytes / (bandwidth * 1e9) * 1e6
    return record


def markdown(meta: dict, records: list[Record]) -> str:
    """Tables of a run: op level with roofline columns, layer level, and the ratios the targets use."""
    lines = [f"# Fused interaction microbenchmark ({meta['device']}, {meta['date']})", "",
             f"torch {meta['torch']}, CUDA {meta['cuda']}, triton {meta['triton']}, hippynn {meta['hippynn']}, "
             f"{meta['dtype']}, TF32 {'on' if meta['tf32'] else 'off'}. Batch: {meta['atoms']} atoms, "
             f"{meta['pairs']} pairs ({meta['neighbours_per_atom']:.1f} neighbours/atom), F = "
             f"{meta['shape']['features']}, nu = {meta['shape']['nu']}; {meta['pair_list']}. Median of "
             f"{meta['repeats']} CUDA-event timings after {meta['warmup']} warm-up calls. Copy bandwidth "
             f"(device to device, same run): {meta['copy_gbps']:.0f} GB/s.", "",
             "## Op level", "",
             "| lmax | level | backend | median µs | IQR µs | first call s | GB/s | floor µs | × floor | peak MiB |",
             "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in (r for r in records if r.view == "op"):
        lines.append(_row(r, [r.gbps, r.floor_us, None if r.floor_us is None or r.median_us is None
                                  else r.median_us / r.floor_us]))
    lines += ["", "## Layer level (autograd, as a model runs it)", "",
              "| lmax | level | backend | median µs | IQR µs | first call s | peak MiB |",
              "|---:|---|---|---:|---:|---:|---:|"]
    lines += [_row(r, []) for r in records if r.view == "layer"]
    lines += ["", "## Ratios", ""] + [f"- {line}" for line in ratios(records)]
    return "\n".join(lines) + "\n"


def _row(r: Record, extra: list) -> str:
    if r.error:
        return f"| {r.lmax} | {r.level} | {r.backend} | failed: {r.error} |"
    cells = [r.median_us, r.iqr_us, r.first_call_s, *extra, r.peak_mib]
    text = ["–" if v is None else f"{v:.3g}" if isinstance(v, float) and v < 10 else f"{v:.0f}" for v in cells]
    return f"| {r.lmax} | {r.level} | {r.backend} | " + " | ".join(text) + " |"


def ratios(records: list[Record]) -> list[str]:
    """The ratios the kernel issues' targets are stated in, for each fast backend that ran."""
    t = {(r.view, r.backend, r.lmax, r.level): r.median_us for r in records if r.median_us is not None}
    floor = {(r.lmax, r.level): r.floor_us for r in records if r.view == "op" and r.floor_us is not None}
    out = []
    for fast in ("cuda", "triton"):
        for level in LEVELS:
            for lmax in (0, 1, 2):
                ours = t.get(("layer", fast, lmax, level))
                for other in ("hippynn-triton", "reference", "triton" if fast == "cuda" else None):
                    theirs = t.get(("layer", other, lmax, level))
                    if ours and theirs:
                        out.append(f"layer {level}, lmax {lmax}: {other} / {fast} = {theirs / ours:.3g}×")
                op = t.get(("op", fast, lmax, level))
                if op and floor.get((lmax, level)):
                    out.append(f"op {level}, lmax {lmax}: {fast} / roofline floor = {op / floor[(lmax, level)]:.3g}×")
            for view in ("op", "layer"):
                l0, l2 = t.get((view, fast, 0, level)), t.get((view, fast, 2, level))
                if l0 and l2:
                    out.append(f"{view} {level}: {fast} lmax 2 / lmax 0 = {l2 / l0:.3g}×")
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lmax", type=int, nargs="+", default=[0, 1, 2], choices=[0, 1, 2])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--op-backends", nargs="+", default=list(OP_BACKENDS), choices=OP_BACKENDS)
    parser.add_argument("--layer-backends", nargs="+", default=list(LAYER_BACKENDS), choices=LAYER_BACKENDS)
    parser.add_argument("--out", type=Path, help="directory for interaction_<device>.md and .json")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (Triton interpreter)")
    args = parser.parse_args(argv)
    if args.smoke:
        os.environ.setdefault("TRITON_INTERPRET", "1")
        device, shape = torch.device("cpu"), SMOKE
    else:
        if not torch.cuda.is_available():
            parser.error("needs a CUDA GPU (or --smoke for a CPU check of the harness)")
        device, shape = torch.device("cuda"), Shape()
    torch.backends.cuda.matmul.allow_tf32 = False
    meta, records = run(args.lmax, shape, getattr(torch, args.dtype), device, args.warmup, args.repeats,
                        args.op_backends, args.layer_backends)
    text = markdown(meta, records)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        stem = "interaction_smoke" if args.smoke else "interaction_" + meta["device"].replace(" ", "_")
        (args.out / f"{stem}.md").write_text(text)
        (args.out / f"{stem}.json").write_text(json.dumps(dict(meta=meta, records=[asdict(r) for r in records]),
                                                          indent=1))


if __name__ == "__main__":
    main()
