"""Memory-traffic model of the CUDA kernels (csrc/): what each launch would ask of a GPU's memory
system, counted in the host emulator, without a GPU.

    hipnnts bench traffic [--preset spec9 small dense] [--lmax 2] [--out bench/results]

This is a MODEL, and every report says so: GPU measurements (Nsight Compute, the benchmarks)
overrule it. The emulator runs each kernel launch of the interaction's three passes (forward,
backward, double backward as force training calls it) and of the envsum family, the interaction
and featsum on both CUDA paths (per-atom CSR or split kernels, and molecule blocks), recording
every global and shared-memory access
(csrc/emulation/traffic.h). Per launch it reports, with Nsight Compute's names:

- global load requests (``l1tex__t_requests_pipe_lsu_mem_global_op_ld``) and sectors per request
  (``l1tex__average_t_sectors_per_request_pipe_lsu_mem_global_op_ld``; 4 is a coalesced row of
  floats, 32 the worst), and the same for stores;
- the worst feature-row request: of the global requests whose lanes (16 or more) access
  consecutive elements of the kernel's floating type, the most sectors one touches per 128 B it
  asks for (4 for an aligned row of 32 floats, 5 for one that straddles one more sector, 6 for an
  unaligned half row; Nsight Compute gives sectors per request per instruction in its source view);
- L1/L2 traffic: 32-B sectors x 32 (``l1tex__t_bytes_pipe_lsu_mem_global``);
- the DRAM lower bound: distinct sectors touched x 32 (``dram__bytes`` is at least this; caches can
  make it no smaller), against the compulsory bytes of :mod:`.costs` (every input read once, every
  output written once);
- shared-memory wavefronts against the conflict-free count (bank-conflict ways,
  ``l1tex__data_pipe_lsu_wavefronts_mem_shared`` over its ideal);
- FLOPs of the feature, sensitivity and pair-geometry loops (``HIPNNTS_FLOPS`` in the kernels);
- the time the DRAM lower bound takes at an H200's measured copy bandwidth (4.3 TB/s, read + write,
  from the device tool's notes): a floor for these kernels, not a prediction of their speed.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .. import pairs_within_cutoff
from ..emulation import EmulatedLaunchers, build, record_traffic, recorded_launches
from ..segment_kernels import SegmentKernels
from ..synthetic import random_molecules
from . import report
from .costs import op_cost
from .kernels import PRESETS, Preset

#: H200 device-to-device copy bandwidth, bytes/s (read + write), as the device tool's notes give it.
H200_COPY_BYTES_PER_S = 4.3e12
SHAPES = {p.name: p for p in (
    PRESETS["tiny"],
    PRESETS["spec9"],
    Preset("small", 64, 20, 48, 16, 6.5, 1.9, "64 molecules x 20 atoms, F = 48, nu = 16 (the CPU training default)"),
    Preset("dense", 1, 343, 128, 20, 5.0, 2.15,
           "one 343-atom block at condensed-phase density (0.1 atoms/Å^3), cutoff 5 Å, F = 128, nu = 20"),
)}
DEFAULT_SHAPES = ("spec9", "small", "dense")
PATHS = {"per-atom": 0, "molecule": 1 << 20}
PASSES = ("forward", "backward", "double")
FAMILY = ("envsum", "sensesum", "featsum")


@dataclass
class Row:
    """One kernel launch, or the total of one pass (``kernel`` = "total")."""

    shape: str
    path: str
    op: str
    passname: str
    kernel: str
    global_load_requests: int
    global_store_requests: int
    sectors_per_load_request: float
    sectors_per_store_request: float
    bytes_requested: int
    l2_bytes: int  #: sectors x 32, loads and stores
    dram_lower_bound: int  #: distinct sectors x 32, loads and stores
    shared_wavefronts: int
    bank_conflict_ways: float
    flops: int
    row_requests: int = 0  #: global requests of a feature row (16+ lanes at consecutive elements)
    row_worst_sectors: float = 0.0  #: the most sectors per 128 B requested of one (4: an aligned row)
    minimum_bytes: int | None = None  #: the pass's compulsory bytes (costs.py), on total rows
    model_us: float | None = None  #: dram_lower_bound at the H200 copy bandwidth


def _row(shape: str, path: str, op: str, passname: str, kernel: str, s: dict) -> Row:
    load_requests, store_requests = s["global_load_requests"], s["global_store_requests"]
    shared_ideal = s["shared_load_ideal_wavefronts"] + s["shared_store_ideal_wavefronts"]
    shared = s["shared_load_wavefronts"] + s["shared_store_wavefronts"]
    dram = s["global_load_distinct_bytes"] + s["global_store_distinct_bytes"]
    return Row(shape, path, op, passname, kernel, load_requests, store_requests,
               s["global_load_sectors"] / max(load_requests, 1), s["global_store_sectors"] / max(store_requests, 1),
               s["global_load_bytes"] + s["global_store_bytes"],
               32 * (s["global_load_sectors"] + s["global_store_sectors"]), dram, shared, shared / max(shared_ideal, 1),
               s["flops"], s["global_row_requests"], s["global_row_worst_milli_sectors"] / 1000,
               model_us=dram / H200_COPY_BYTES_PER_S * 1e6)


def _total(rows: list[Row], minimum: int) -> Row:
    keys = ("global_load_requests", "global_store_requests", "bytes_requested", "l2_bytes", "dram_lower_bound",
            "shared_wavefronts", "flops", "row_requests")
    total = {k: sum(getattr(r, k) for r in rows) for k in keys}
    total["row_worst_sectors"] = max(r.row_worst_sectors for r in rows)
    first = rows[0]
    return Row(first.shape, first.path, first.op, first.passname, "total", sectors_per_load_request=float("nan"),
               sectors_per_store_request=float("nan"), bank_conflict_ways=float("nan"), minimum_bytes=minimum,
               model_us=total["dram_lower_bound"] / H200_COPY_BYTES_PER_S * 1e6, **total)


def problem(shape: Preset, lmax: int, dtype: torch.dtype, seed: int = 0) -> dict:
    """The shape's molecules, shuffled pair list and random inputs and cotangents (CPU tensors)."""
    _, positions, mol_index = random_molecules(shape.molecules, shape.atoms, shape.atoms, seed=seed,
                                               spacing=shape.spacing)
    first, second = pairs_within_cutoff(positions, mol_index, shape.cutoff)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(first.shape[0], generator=g)
    first, second = first[order], second[order]
    n, p = positions.shape[0], first.shape[0]

    def rand(*size):
        return torch.randn(*size, generator=g, dtype=torch.float64).to(dtype)

    return dict(Y=rand(n, shape.nu, shape.features), coord=(positions[second] - positions[first]).to(dtype),
                first=first, second=second, mu=torch.linspace(0.8, shape.cutoff - 1.0, shape.nu, dtype=dtype),
                sigma=torch.linspace(1.5, 3.0, shape.nu, dtype=dtype), vec=rand(shape.features) if lmax >= 1 else None,
                quad=rand(shape.features) if lmax >= 2 else None, grad_out=rand(n, shape.features),
                v_Y=rand(n, shape.nu, shape.features), v_coord=rand(p, 3), sens=rand(p, shape.nu),
                feat=rand(n, shape.features), atoms=n, pairs=p)


def _passes(kernels: SegmentKernels, x: dict, shape: Preset, lmax: int) -> dict:
    """One call per interaction pass and family op; the double backward as force training runs it
    (only v_Y and v_coord nonzero)."""
    args = (x["Y"], x["coord"], x["first"], x["second"], x["mu"], x["sigma"], x["vec"], x["quad"])
    constants = (shape.cutoff, 1e-6, lmax)
    return {
        ("interaction", "forward"): lambda: kernels.interaction(*args, *constants),
        ("interaction", "backward"): lambda: kernels.interaction_backward(x["grad_out"], *args, *constants),
        ("interaction", "double"): lambda: kernels.interaction_double_backward(
            x["grad_out"], *args, x["v_Y"], x["v_coord"], None, None, None, None, *constants),
        ("envsum", "forward"): lambda: kernels.envsum(x["sens"], x["feat"], x["first"], x["second"]),
        ("sensesum", "forward"): lambda: kernels.sensesum(x["Y"], x["feat"], x["first"], x["second"]),
        ("featsum", "forward"): lambda: kernels.featsum(x["Y"], x["sens"], x["first"], x["second"]),
    }


def run(shape_names, lmax: int, dtype: torch.dtype, progress: bool = True) -> tuple[dict, list[Row]]:
    """Model every launch of every shape, path and pass."""
    meta = dict(report_kind="MODEL (host emulator), not a GPU measurement", lmax=lmax,
                dtype=str(dtype).replace("torch.", ""), bandwidth_bytes_per_s=H200_COPY_BYTES_PER_S, shapes={},
                git_commit=report_git_commit())
    rows: list[Row] = []
    itemsize = torch.finfo(dtype).bits // 8
    with tempfile.TemporaryDirectory() as tmp:
        lib = build(Path(tmp))
        launchers = EmulatedLaunchers(lib)
        for name in shape_names:
            shape = SHAPES[name]
            x = problem(shape, lmax, dtype)
            meta["shapes"][name] = dict(asdict(shape), atoms_total=x["atoms"], pairs_total=x["pairs"])
            for path, max_atoms in PATHS.items():
                kernels = SegmentKernels(launchers, molecule_max_atoms=max_atoms)
                for (op, passname), call in _passes(kernels, x, shape, lmax).items():
                    if path == "molecule" and op in ("envsum", "sensesum"):
                        continue  # the molecule path changes the interaction and featsum only
                    started = time.perf_counter()
                    record_traffic(lib, True)
                    call()
                    launches = recorded_launches(lib)
                    record_traffic(lib, False)
                    cost = op_cost(op, x["atoms"], x["pairs"], shape.nu, shape.features, lmax, itemsize)
                    launch_rows = [_row(name, path, op, passname, kernel, stats) for kernel, stats in launches]
                    rows += launch_rows + [_total(launch_rows, cost.pass_bytes(passname))]
                    if progress:
                        print(f"{name} {path} {op} {passname}: {len(launches)} launches, "
                              f"{time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return meta, rows


def report_git_commit() -> str | None:
    from .timing import environment

    return environment(torch.device("cpu")).get("git_commit")


def _size(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} B"


def markdown(meta: dict, rows: list[Row]) -> str:
    lines = [f"# Memory-traffic MODEL of the CUDA kernels ({meta['dtype']}, lmax {meta['lmax']})", "",
             "**A model, not a measurement**: the host emulator's count of what each launch asks of the memory "
             "system (hipnnts_kernels/benchmarks/traffic.py says how). GPU measurements overrule it.", "",
             f"- commit: {meta['git_commit']}",
             f"- model time: the DRAM lower bound at {meta['bandwidth_bytes_per_s'] / 1e12:.1f} TB/s (an H200's "
             "measured copy bandwidth): a floor for these kernels, not their expected speed", ""]
    for name, info in meta["shapes"].items():
        lines += [f"## `{name}`: {info['description']}", "",
                  f"{info['atoms_total']} atoms, {info['pairs_total']} pairs.", "",
                  "| path | op | pass | kernel | sectors / ld req | sectors / st req | worst sectors / 128-B row | "
                  "L1/L2 traffic | DRAM lower bound | x minimum | bank-conflict ways | FLOPs | model µs |",
                  "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            if r.shape != name:
                continue
            total = r.kernel == "total"
            ratio = f"{r.dram_lower_bound / r.minimum_bytes:.1f}" if total and r.minimum_bytes else ""
            cells = [r.path, r.op, r.passname, "**total**" if total else r.kernel,
                     "" if total else f"{r.sectors_per_load_request:.1f}",
                     "" if total or not r.global_store_requests else f"{r.sectors_per_store_request:.1f}",
                     f"{r.row_worst_sectors:.1f}" if r.row_requests else "",
                     _size(r.l2_bytes), _size(r.dram_lower_bound), ratio,
                     "" if total or not r.shared_wavefronts else f"{r.bank_conflict_ways:.1f}",
                     f"{r.flops:.3g}", f"{r.model_us:.1f}"]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def comparison(before: list[dict], after: list[dict]) -> str:
    """Markdown: per shape, op and pass, the totals of an earlier report (``before``, its JSON rows)
    beside this one's, with the worst sectors per load request and bank-conflict ways of its launches."""
    def summary(rows: list[dict]) -> dict:
        out: dict = {}
        for r in rows:
            key = (r["shape"], r["op"], r["passname"], r["path"])
            entry = out.setdefault(key, {"sectors": 0.0, "ways": 0.0})
            if r["kernel"] == "total":
                entry.update(l2=r["l2_bytes"], dram=r["dram_lower_bound"], minimum=r["minimum_bytes"],
                             us=r["model_us"])
            else:
                entry["sectors"] = max(entry["sectors"], r["sectors_per_load_request"])
                entry["ways"] = max(entry["ways"], r["bank_conflict_ways"] if r["shared_wavefronts"] else 0.0)
        return out

    old, new = summary(before), summary(after)
    lines = ["| shape | op | pass | path | L1/L2 traffic | DRAM lower bound | x minimum | worst sectors / ld req | "
             "worst bank-conflict ways | model µs |", "|---|---|---|---|---:|---:|---:|---:|---:|---:|"]

    def pair(a, b, fmt) -> str:
        return " → ".join(fmt(x) if x is not None else "–" for x in (a, b))

    for key in list(old) + [k for k in new if k not in old]:
        a, b = old.get(key), new.get(key)
        cells = [*key[:3], key[3],
                 pair(a and a["l2"], b and b["l2"], _size),
                 pair(a and a["dram"], b and b["dram"], _size),
                 pair(a and a["minimum"] and a["dram"] / a["minimum"], b and b["minimum"] and b["dram"] / b["minimum"],
                      lambda x: f"{x:.1f}"),
                 pair(a and a["sectors"], b and b["sectors"], lambda x: f"{x:.1f}"),
                 pair(a and a["ways"], b and b["ways"], lambda x: f"{x:.1f}" if x else "no smem"),
                 pair(a and a["us"], b and b["us"], lambda x: f"{x:.1f}")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", nargs="+", default=list(DEFAULT_SHAPES), choices=list(SHAPES),
                        help="shapes (default: spec9, small, dense: about 15 minutes on 2 cores; tiny for a check)")
    parser.add_argument("--lmax", type=int, default=2, choices=[0, 1, 2])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--out", type=Path, default=Path("bench/results"),
                        help="folder of traffic_model.md / .json (default bench/results)")
    parser.add_argument("--compare", type=Path, metavar="BEFORE.json",
                        help="an earlier report's JSON: its totals go beside this run's in the markdown")


def run_from_arguments(args: argparse.Namespace) -> Path:
    before = None
    if args.compare is not None:
        try:
            before = json.loads(args.compare.read_text())["rows"]
            fields = {"shape", "op", "passname", "path", "kernel", "l2_bytes", "dram_lower_bound"}
            if not isinstance(before, list) or not all(isinstance(r, dict) and fields <= r.keys() for r in before):
                raise ValueError("its rows are not traffic-model rows")
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(f"--compare {args.compare}: expected the JSON of an earlier `hipnnts bench traffic` "
                             f"report ({type(error).__name__}: {error})") from None
    meta, rows = run(args.preset, args.lmax, getattr(torch, args.dtype))
    meta["complete"] = True
    text = markdown(meta, rows)
    if before is not None:
        meta["compared_with"] = str(args.compare)
        text += (f"\n## Before and after\n\nTotals per pass: `{args.compare}` → this run (\"–\": no such row).\n\n"
                 + comparison(before, [asdict(r) for r in rows]) + "\n")
    return report.write(args.out, "traffic_model", meta, {"rows": [asdict(r) for r in rows]}, text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="hipnnts bench traffic", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    print(run_from_arguments(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
