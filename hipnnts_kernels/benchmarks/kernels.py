"""Kernel microbenchmark: every op x backend x size preset x derivative level, against the roofline.

    hipnnts bench kernels [--preset tiny spec9 large] [--op ...] [--backend ...] [--out DIR]

Each op runs through its public autograd op (value checks off, as in training) at three levels:
``forward`` (no grad), ``forward+backward`` (gradients of all differentiable inputs) and
``training`` (the same with ``create_graph=True``, then the gradient of those gradients with
respect to the inputs and the output gradient: the double backward force training needs).
Backends: ``cuda``, ``cuda-molecules`` (the cuda backend with its molecule path, which changes
the interaction and featsum), ``triton`` (CPU: through its interpreter, correctness
only), ``cpu`` (the C++ kernels, CPU tensors), ``reference``,
``reference-compile`` (the reference under ``torch.compile``) and, for the envsum family,
``hippynn`` 0.1.3's custom kernels (Triton on CUDA, numba on the CPU). Every case's forward is
checked against the reference before it is timed.

Times are medians (with 10th/90th percentiles) of CUDA-event timings (wall clock on the CPU)
after warm-up; the first call, with compilation and autotuning, is reported separately. Bytes and
FLOPs per case come from :mod:`.costs`; the ceilings they are compared with are measured in the
same run: a large device-to-device copy (GB/s) and a large matmul (GFLOP/s) in the same dtype,
TF32 as set (off by default). ``% roofline`` is the roofline floor max(bytes / bandwidth,
FLOPs / matmul rate) over the measured time.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from .. import backends, ops, pairs_within_cutoff, reference
from ..checks import value_checks
from ..synthetic import random_molecules
from . import report
from .costs import LEVELS, OpCost, op_cost
from .report import describe_error, num
from .timing import copy_bandwidth, device_name, environment, matmul_flops, time_call

OPS = ("envsum", "sensesum", "featsum", "sensitivity", "tensor_factors", "interaction")
BACKENDS = ("cuda", "cuda-molecules", "triton", "cpu", "reference", "reference-compile", "hippynn")
#: The ops whose kernels the CUDA molecule path changes.
MOLECULE_PATH_OPS = ("interaction", "featsum")
#: Ops whose cost depends on lmax; the others run once.
LMAX_OPS = ("tensor_factors", "interaction")
HIPPYNN_OPS = ("envsum", "sensesum", "featsum")
CUSP_REG = 1e-6
#: Largest relative forward error against the reference that counts as a correct result.
TOLERANCE = {torch.float32: 1e-3, torch.float64: 1e-9}


@dataclass(frozen=True)
class Preset:
    """A batch of synthetic molecules on a jittered cubic grid (see :func:`random_molecules`)."""

    name: str
    molecules: int
    atoms: int  #: atoms per molecule
    features: int
    nu: int
    cutoff: float  #: Å
    spacing: float  #: grid spacing, Å
    description: str


PRESETS = {p.name: p for p in (
    Preset("tiny", 3, 5, 8, 4, 3.0, 1.2, "3 molecules x 5 atoms, F = 8, nu = 4 (CI smoke test)"),
    Preset("spec9", 256, 20, 128, 20, 6.5, 1.9, "the reference batch: 256 molecules x 20 atoms, F = 128, nu = 20"),
    Preset("large", 1, 4096, 128, 20, 6.5, 1.9,
           "one 4,096-atom system at condensed-phase density (0.1 atoms/Å^3), F = 128, nu = 20"),
)}


@dataclass
class Record:
    op: str
    lmax: int | None
    preset: str
    backend: str
    level: str
    atoms: int
    pairs: int
    bytes: int
    flops: int
    median_us: float | None = None
    p10_us: float | None = None
    p90_us: float | None = None
    first_call_s: float | None = None
    peak_mib: float | None = None
    gbps: float | None = None
    gflops: float | None = None
    pct_bandwidth: float | None = None  #: of the measured copy bandwidth
    pct_flops: float | None = None  #: of the measured matmul rate
    pct_roofline: float | None = None  #: roofline floor / measured time
    skipped: str | None = None  #: why this case does not apply (backend lacks the op, device)
    error: str | None = None  #: why this case failed


@dataclass
class Case:
    """One op call: its tensors, which of them are differentiable, and a function of them."""

    op: str
    lmax: int | None
    tensors: tuple
    differentiable: tuple[int, ...]
    call: Callable[..., Tensor]  #: call(backend_function_table, *tensors)
    cost: OpCost


@dataclass
class Problem:
    """A preset's molecules and pair list, with the per-pair and per-atom tensors of the ops."""

    atoms: int
    pairs: int
    pair_first: Tensor
    pair_second: Tensor
    pair_coord: Tensor
    features: Tensor  #: (N, F)
    env: Tensor  #: (N, nu, F), also the interaction's Y
    sens: Tensor  #: (P, nu)
    mu: Tensor
    sigma: Tensor
    scales: Tensor  #: (F,) lambda values


def make_problem(preset: Preset, dtype: torch.dtype, device: torch.device, seed: int = 0) -> Problem:
    _, positions, mol_index = random_molecules(preset.molecules, preset.atoms, preset.atoms, seed=seed,
                                               spacing=preset.spacing)
    first, second = pairs_within_cutoff(positions, mol_index, preset.cutoff)
    g = torch.Generator().manual_seed(seed)
    n, p = positions.shape[0], first.shape[0]

    def rand(*shape, low=-1.0, high=1.0):
        return (low + (high - low) * torch.rand(*shape, generator=g, dtype=torch.float64)).to(device, dtype)

    coord = (positions[second] - positions[first]).to(device, dtype)
    return Problem(n, p, first.to(device), second.to(device), coord, rand(n, preset.features),
                   rand(n, preset.nu, preset.features), rand(p, preset.nu, low=0.0),
                   torch.linspace(0.75, preset.cutoff - 1.0, preset.nu, dtype=torch.float64).to(device, dtype),
                   rand(preset.nu, low=1.0, high=3.0), rand(preset.features, low=0.5, high=1.5))


def make_cases(problem: Problem, preset: Preset, lmax_values, op_names=OPS) -> list[Case]:
    """The cases of ``op_names`` on ``problem`` (ops in :data:`LMAX_OPS` once per lmax)."""
    pr = problem
    itemsize = pr.env.element_size()
    dist = pr.pair_coord.norm(dim=1)
    unit = pr.pair_coord / dist.unsqueeze(1)

    def cost(op, lmax=0):
        return op_cost(op, pr.atoms, pr.pairs, preset.nu, preset.features, lmax, itemsize)

    cases = []
    for op in op_names:
        if op in ("envsum", "sensesum", "featsum"):
            a, b = {"envsum": (pr.sens, pr.features), "sensesum": (pr.env, pr.features),
                    "featsum": (pr.env, pr.sens)}[op]
            cases.append(Case(op, None, (a, b, pr.pair_first, pr.pair_second), (0, 1),
                              lambda fns, *t, op=op: fns[op](*t), cost(op)))
        elif op == "sensitivity":
            cases.append(Case(op, None, (dist, pr.mu, pr.sigma), (0, 1, 2),
                              lambda fns, d, m, s: fns["sensitivity"](d, m, s, preset.cutoff), cost(op)))
        elif op == "tensor_factors":  # lmax 0 is the constant 1: nothing to time
            cases += [Case(op, lmax, (unit,), (0,), lambda fns, u, lmax=lmax: fns["tensor_factors"](u, lmax),
                           cost(op, lmax)) for lmax in lmax_values if lmax > 0]
        elif op == "interaction":
            for lmax in lmax_values:
                scales = (pr.scales,) * lmax
                cases.append(Case(op, lmax, (pr.env, pr.pair_coord, pr.pair_first, pr.pair_second, pr.mu,
                                             pr.sigma, *scales), (0, 1, 4, 5, *range(6, 6 + lmax)),
                                  _interaction_call(preset.cutoff, lmax), cost(op, lmax)))
        else:
            raise ValueError(f"unknown op {op!r}; ops: {', '.join(OPS)}")
    return cases


def _interaction_call(cutoff: float, lmax: int) -> Callable[..., Tensor]:
    def call(fns, Y, coord, first, second, mu, sigma, *scales):
        vec, quad = (list(scales) + [None, None])[:2]
        return fns["interaction"](Y, coord, first, second, mu, sigma, vec, quad, cutoff, CUSP_REG, lmax)

    return call


@contextlib.contextmanager
def backend_setting(backend: str) -> Iterator[None]:
    """The process-wide setting a backend runs under: ``cuda-molecules`` is the cuda backend with its
    molecule path on (``cuda_backend.KERNELS.molecule_max_atoms``) for the whole block, backward
    passes included."""
    if backend != "cuda-molecules":
        yield
        return
    from ..cuda_backend import KERNELS

    previous, KERNELS.molecule_max_atoms = KERNELS.molecule_max_atoms, 1024
    try:
        yield
    finally:
        KERNELS.molecule_max_atoms = previous


def backend_functions(backend: str, device: torch.device) -> dict[str, Callable]:
    """Positional-argument functions of each op for ``backend``; raises if it cannot run here.
    ``cuda-molecules`` gives the cuda functions: call them under :func:`backend_setting`."""
    if backend == "cuda-molecules":
        backend = "cuda"
    if backend in ("cuda", "triton", "cpu", "reference"):
        if backend == "cpu" and backends.unavailable_reason("cpu", device) is not None:
            raise _Skip(backends.unavailable_reason("cpu", device))
        if backend == "triton" and device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
            raise _Skip("Triton on CPU tensors needs TRITON_INTERPRET=1 (set it before Python starts)")
        if backend == "cuda" and device.type != "cuda":
            raise _Skip("the CUDA kernels need a CUDA device")
        return {
            "envsum": lambda *t: ops.envsum(*t, backend=backend),
            "sensesum": lambda *t: ops.sensesum(*t, backend=backend),
            "featsum": lambda *t: ops.featsum(*t, backend=backend),
            "sensitivity": lambda d, m, s, rc: ops.sensitivity(d, m, s, rc, backend=backend),
            "tensor_factors": lambda u, lmax: ops.tensor_factors(u, lmax, backend=backend),
            "interaction": lambda Y, c, f, s, mu, sig, vec, quad, rc, eps, lmax: ops.interaction(
                Y, c, f, s, mu, sig, cutoff=rc, lmax=lmax, vecscales=vec, quadscales=quad, cusp_reg=eps,
                backend=backend),
        }
    if backend == "reference-compile":
        names = ("envsum", "sensesum", "featsum", "sensitivity", "tensor_factors", "interaction")
        return {name: torch.compile(getattr(reference, name), dynamic=False) for name in names}
    if backend == "hippynn":
        from hippynn import custom_kernels

        from .models import hippynn_kernels

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hippynn_kernels(device)
        return {name: getattr(custom_kernels, name) for name in HIPPYNN_OPS}
    raise ValueError(f"unknown backend {backend!r}; backends: {', '.join(BACKENDS)}")


class _Skip(Exception):
    """A case that does not apply here (recorded as skipped, not as a failure)."""


def skip_reason(backend: str, op: str, device: torch.device, level: str | None = None) -> str | None:
    """Why ``backend`` does not apply to ``op`` (at ``level``) on ``device``, or None if it does."""
    if backend == "reference-compile" and level == "training":
        return "torch.compile (AOTAutograd) does not support double backward"
    if backend == "hippynn" and op not in HIPPYNN_OPS:
        return "hippynn has no kernel for this op"
    if backend == "cuda-molecules":
        if op not in MOLECULE_PATH_OPS:
            return "the molecule path changes only the interaction and featsum"
        backend = "cuda"
    if backend in ("cuda", "triton", "cpu"):
        if not backends.has_implementation(op, backend):
            return f"no {backend} kernel for this op (it runs on the reference)"
        reason = backends.unavailable_reason(backend, device, op)
        if reason is not None and not (backend == "triton" and os.environ.get("TRITON_INTERPRET") == "1"):
            return reason
    return None


def level_closures(case: Case, fns: dict[str, Callable], seed: int = 0) -> dict[str, Callable[[], object]]:
    """One closure per level (see the module docstring) of ``case`` on the functions ``fns``."""
    tensors = case.tensors
    with torch.no_grad():
        out = case.call(fns, *tensors)
    g = torch.Generator(device=out.device).manual_seed(seed)
    grad_out = torch.randn(out.shape, generator=g, dtype=out.dtype, device=out.device)
    cotangents = [torch.randn(tensors[i].shape, generator=g, dtype=out.dtype, device=out.device)
                  for i in case.differentiable]

    def leaves():
        return [t.detach().requires_grad_() if i in case.differentiable else t for i, t in enumerate(tensors)]

    def forward():
        with torch.no_grad():
            return case.call(fns, *tensors)

    def forward_backward():
        inputs = leaves()
        return torch.autograd.grad(case.call(fns, *inputs), [inputs[i] for i in case.differentiable], grad_out)

    def training():
        inputs, g_out = leaves(), grad_out.detach().requires_grad_()
        wrt = [inputs[i] for i in case.differentiable]
        grads = torch.autograd.grad(case.call(fns, *inputs), wrt, g_out, create_graph=True)
        pairs = [(gr, v) for gr, v in zip(grads, cotangents) if gr.requires_grad]
        return torch.autograd.grad([gr for gr, _ in pairs], [*wrt, g_out], [v for _, v in pairs], allow_unused=True)

    return {"forward": forward, "forward+backward": forward_backward, "training": training}


def run(preset_names, op_names, backend_names, lmax_values, dtype: torch.dtype, device: torch.device,
        warmup: int = 5, repeats: int = 50, progress: bool = True,
        on_progress: Callable[[dict, list[Record]], None] | None = None) -> tuple[dict, list[Record]]:
    """Measure every case; failures are recorded, not raised. Returns (provenance, records);
    ``on_progress(meta, records)`` is called after each backend of each preset."""
    bandwidth = copy_bandwidth(device, mib=64 if device.type == "cpu" else 1024)
    peak = matmul_flops(device, dtype)
    meta = dict(environment(device), dtype=str(dtype).replace("torch.", ""), copy_gbps=bandwidth,
                matmul_gflops=peak, warmup=warmup, repeats=repeats, value_checks="off",
                pair_list="built outside the timed region",
                timing="CUDA events" if device.type == "cuda" else "wall clock (perf_counter), synchronised",
                triton_mode="compiled" if device.type == "cuda" else (
                    "interpreted (TRITON_INTERPRET=1): correctness only, its times mean nothing"
                    if os.environ.get("TRITON_INTERPRET") == "1" else "not run on the CPU"),
                presets={})
    records: list[Record] = []
    for name in preset_names:
        preset = PRESETS[name]
        problem = make_problem(preset, dtype, device)
        meta["presets"][name] = dict(asdict(preset), atoms_total=problem.atoms, pairs_total=problem.pairs,
                                     neighbours_per_atom=problem.pairs / max(problem.atoms, 1))
        cases = make_cases(problem, preset, lmax_values, op_names)
        expected = {id(c): c.call(_REFERENCE, *c.tensors).double() for c in cases}
        for backend in backend_names:
            try:
                fns = backend_functions(backend, device)
                failure = None
                if backend == "hippynn":
                    from hippynn import custom_kernels

                    meta["hippynn_kernels"] = custom_kernels.CUSTOM_KERNELS_ACTIVE
            except _Skip as err:
                fns, failure = None, ("skipped", str(err))
            except Exception as err:  # noqa: BLE001 -- recorded; the other backends still run
                fns, failure = None, ("error", describe_error(err))
            for case in cases:
                base = dict(op=case.op, lmax=case.lmax, preset=name, backend=backend, atoms=problem.atoms,
                            pairs=problem.pairs)
                reason = skip_reason(backend, case.op, device)
                if reason is not None or failure is not None:
                    kind, text = ("skipped", reason) if reason is not None else failure
                    records += [Record(**base, level=level, bytes=case.cost.bytes(level),
                                       flops=case.cost.flops(level), **{kind: text}) for level in LEVELS]
                    continue
                with backend_setting(backend):
                    records += _measure_case(case, fns, expected[id(case)], base, device, warmup, repeats,
                                             bandwidth, peak, dtype)
            if progress:
                print(f"{name}: {backend} done", file=sys.stderr, flush=True)
            if on_progress is not None:
                on_progress(meta, records)
    return meta, records


_REFERENCE = {name: getattr(reference, name) for name in OPS}


def _measure_case(case, fns, expected, base, device, warmup, repeats, bandwidth, peak, dtype) -> list[Record]:
    records = []
    try:
        with value_checks(False):
            error = _relative_error(case.call(fns, *case.tensors), expected)
        if not error <= TOLERANCE[dtype]:
            raise RuntimeError(f"forward differs from the reference by {error:.1e} (relative)")
        closures = level_closures(case, fns)
    except Exception as err:  # noqa: BLE001 -- recorded
        return [Record(**base, level=level, bytes=case.cost.bytes(level), flops=case.cost.flops(level),
                       error=describe_error(err)) for level in LEVELS]
    for level, fn in closures.items():
        record = Record(**base, level=level, bytes=case.cost.bytes(level), flops=case.cost.flops(level))
        record.skipped = skip_reason(base["backend"], case.op, device, level)
        if record.skipped is not None:
            records.append(record)
            continue
        try:
            with value_checks(False):
                timing = time_call(fn, device, warmup=warmup, repeats=repeats)
        except Exception as err:  # noqa: BLE001 -- recorded
            record.error = describe_error(err)
            records.append(record)
            continue
        seconds = timing.median_us * 1e-6
        record.median_us, record.p10_us, record.p90_us = timing.median_us, timing.p10_us, timing.p90_us
        record.first_call_s, record.peak_mib = timing.first_call_s, timing.peak_mib
        record.gbps, record.gflops = record.bytes / seconds / 1e9, record.flops / seconds / 1e9
        record.pct_bandwidth, record.pct_flops = 100 * record.gbps / bandwidth, 100 * record.gflops / peak
        floor = max(record.bytes / (bandwidth * 1e9), record.flops / (peak * 1e9))
        record.pct_roofline = 100 * floor / seconds
        records.append(record)
    return records


def _relative_error(out: Tensor, expected: Tensor) -> float:
    scale = expected.abs().max() if expected.numel() else torch.zeros(())
    return float((out.double() - expected).abs().max() / scale) if expected.numel() and scale > 0 else 0.0


def markdown(meta: dict, records: list[Record]) -> str:
    """The report: provenance, ceilings, one table per preset, skipped and failed cases."""
    lines = [f"# Kernel microbenchmark ({meta['device']}, {meta['date'][:10]})", "", *report.partial_notice(meta),
             *report.provenance_lines(meta), "",
             f"Ceilings measured in this run: copy {meta['copy_gbps']:.0f} GB/s, matmul "
             f"{meta['matmul_gflops']:.0f} GFLOP/s ({meta['dtype']}). Timing: {meta['timing']}, median of "
             f"{meta['repeats']} after {meta['warmup']} warm-up calls; value checks {meta['value_checks']}; "
             f"{meta['pair_list']}; Triton {meta['triton_mode']}; hippynn kernels: "
             f"{meta.get('hippynn_kernels', '–')}. Bytes and FLOPs: "
             "`hipnnts_kernels/benchmarks/costs.py`; % roofline = max(bytes / copy bandwidth, FLOPs / matmul rate) "
             "/ median time.", ""]
    for name, info in meta["presets"].items():
        lines += [f"## Preset `{name}`: {info['description']}", "",
                  f"{info['atoms_total']} atoms, {info['pairs_total']} pairs "
                  f"({info['neighbours_per_atom']:.1f} neighbours per atom), cutoff {info['cutoff']} Å.", "",
                  *_summary(name, records), "", "Every case:", "",
                  "| op | lmax | level | backend | median µs | p10–p90 µs | first call s | GB/s | % BW "
                  "| GFLOP/s | % FLOP | % roofline | peak MiB |",
                  "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in records:
            if r.preset == name and r.median_us is not None:
                lines.append(f"| {r.op} | {'' if r.lmax is None else r.lmax} | {r.level} | {r.backend} | "
                             f"{num(r.median_us)} | {num(r.p10_us)}–{num(r.p90_us)} | "
                             f"{num(r.first_call_s)} | {num(r.gbps)} | {num(r.pct_bandwidth)} | "
                             f"{num(r.gflops)} | {num(r.pct_flops)} | {num(r.pct_roofline)} | "
                             f"{num(r.peak_mib)} |")
        lines.append("")
    failed = [r for r in records if r.error and r.level == "forward"]
    failed += [r for r in records if r.error and r.level != "forward"
               and not any(f.error for f in records if f.level == "forward" and _same_case(f, r))]
    if failed:
        lines += ["## Failed", ""] + [f"- {r.preset} {r.op}{_lmax(r)} {r.backend} ({r.level}): {r.error}"
                                      for r in failed] + [""]
    skipped = sorted({(r.backend, r.op, r.skipped) for r in records if r.skipped})
    if skipped:
        lines += ["## Not applicable", ""] + [f"- {b} {op}: {why}" for b, op, why in skipped] + [""]
    lines.append("tensor_factors at lmax 0 is the constant 1 and is not timed.")
    return "\n".join(lines)


def _summary(preset: str, records: list[Record]) -> list[str]:
    """Median µs of each backend side by side, and the fastest backend's share of the roofline."""
    ran = [r for r in records if r.preset == preset and r.median_us is not None]
    names = [b for b in BACKENDS if any(r.backend == b for r in ran)]
    lines = ["| op | lmax | level | " + " | ".join(f"{b} µs" for b in names) + " | fastest | % roofline |",
             "|---|---:|---|" + "---:|" * len(names) + "---|---:|"]
    keys = list(dict.fromkeys((r.op, r.lmax, r.level) for r in ran))
    for op, lmax, level in keys:
        row = {r.backend: r for r in ran if (r.op, r.lmax, r.level) == (op, lmax, level)}
        best = min(row.values(), key=lambda r: r.median_us)
        lines.append(f"| {op} | {'' if lmax is None else lmax} | {level} | "
                     + " | ".join(num(row[b].median_us) if b in row else "–" for b in names)
                     + f" | {best.backend} | {num(best.pct_roofline)} |")
    return lines


def _same_case(a: Record, b: Record) -> bool:
    return (a.op, a.lmax, a.preset, a.backend) == (b.op, b.lmax, b.preset, b.backend)


def _lmax(r: Record) -> str:
    return "" if r.lmax is None else f" lmax {r.lmax}"


def plots(records: list[Record], out: Path, stem: str) -> list[Path]:
    """``<stem>_time.png`` (training-level time vs atoms per backend, one panel per op) and
    ``<stem>_speedup.png`` (reference time / backend time per op, largest preset measured)."""
    ok = [r for r in records if r.median_us is not None and r.level == "training" and r.lmax in (None, 2)]
    series = {}
    for r in ok:
        series.setdefault(r.op, {}).setdefault(r.backend, []).append((r.atoms, r.median_us))
    paths = [report.time_vs_atoms(series, out / f"{stem}_time.png",
                                  "Kernels, training level (forward + backward + double backward), lmax 2",
                                  "median time per call (µs)")]
    largest = max((r.atoms for r in ok), default=0)
    bars = {}
    for r in ok:
        if r.atoms == largest and r.backend != "reference":
            ref = next((x for x in ok if x.atoms == largest and x.backend == "reference" and x.op == r.op), None)
            if ref is not None:
                bars.setdefault(r.op, {})[r.backend] = ref.median_us / r.median_us
    paths.append(report.speedup_bars(bars, out / f"{stem}_speedup.png",
                                     f"Speedup over the PyTorch reference, training level, {largest} atoms"))
    return paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", nargs="+", default=None, choices=list(PRESETS),
                        help="size presets (default: spec9 and large on CUDA, tiny and spec9 on the CPU)")
    parser.add_argument("--op", nargs="+", default=list(OPS), choices=OPS, help="ops (default: all)")
    parser.add_argument("--backend", nargs="+", default=list(BACKENDS), choices=BACKENDS,
                        help="backends (default: all; those that cannot run here are reported as skipped)")
    parser.add_argument("--lmax", type=int, nargs="+", default=[0, 1, 2], choices=[0, 1, 2])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--device", default="auto", help="cuda, cuda:K or cpu (default: cuda if available)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--tf32", action="store_true", help="allow TF32 matmuls (default off; stated in the report)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"),
                        help="folder of kernels_<device>.md/.json/.png (default bench/results)")


def run_from_arguments(args: argparse.Namespace) -> Path:
    """Run the benchmark of parsed ``args``; write the report as it goes (so a run cut short keeps
    what it measured) and in full at the end; return the markdown path."""
    device = report.resolve_device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = bool(args.tf32)
    presets = args.preset or (["spec9", "large"] if device.type == "cuda" else ["tiny", "spec9"])
    stem = "kernels_" + report.slug(device_name(device) if presets != ["tiny"] else "tiny_" + device.type)

    def save(meta: dict, records: list[Record], complete: bool) -> Path:
        meta["complete"] = complete
        return report.write(args.out, stem, meta, {"records": [asdict(r) for r in records]}, markdown(meta, records),
                            (lambda: plots(records, args.out, stem)) if complete else None)

    meta, records = run(presets, args.op, args.backend, args.lmax, getattr(torch, args.dtype), device,
                        args.warmup, args.repeats, on_progress=lambda m, r: save(m, r, False))
    return save(meta, records, True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="hipnnts bench kernels", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    print(run_from_arguments(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
