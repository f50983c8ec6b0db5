"""Where the time of a HipnnTS training step (and of E + F inference) goes: ``torch.profiler`` over
the same model, batches and step as ``hipnnts bench models``, by op and derivative level.

    hipnnts bench profile [--size 64 one] [--lmax 0 1 2] [--backend reference] [--repeats 5]

For each (size, lmax, task) it runs ``warmup`` steps, then profiles ``repeats`` and reports per
step: the wall time; for each of the package's custom ops (``hipnnts::interaction`` and its
backward and double backward, the envsum family, the geometry ops) its calls and its inclusive
CPU time, which holds the argument checks, the dispatch, the pair index and the tensor work under
it; and the aten ops with the most self time. Inclusive times of nested ops overlap (the double
backward's autograd runs inside the training step's backward), so the shares do not add to 100%.
Profiling adds overhead of its own: the wall times are for finding where time goes, not for the
benchmark tables.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from . import report
from .models import SIZES, inference_call, make_batch, our_contenders, training_step
from .timing import environment

#: The package's custom ops, as the profiler names them.
OPS = ("hipnnts::interaction", "hipnnts::interaction_backward", "hipnnts::interaction_double_backward",
       "hipnnts::envsum", "hipnnts::sensesum", "hipnnts::featsum", "hipnnts::sensitivity",
       "hipnnts::tensor_factors")
TASKS = ("training", "inference")


@dataclass
class Profile:
    size: str
    lmax: int
    task: str
    backend: str
    atoms: int
    step_ms: float  #: wall time per step under the profiler
    ops: dict[str, dict] = field(default_factory=dict)  #: op -> calls and inclusive ms per step
    top_self: list[dict] = field(default_factory=list)  #: aten ops with the most self time per step


def profile_step(size: str, lmax: int, task: str, backend: str, warmup: int, repeats: int,
                 dtype: torch.dtype = torch.float32, top: int = 12) -> Profile:
    """Profile ``repeats`` steps of ``task`` (training or inference) on the CPU."""
    device = torch.device("cpu")
    batch = make_batch(size, device, dtype)
    contenders = our_contenders(lmax, device, dtype, backend_names=(backend,), hippynn=False)
    if not contenders:
        raise ValueError(f"backend {backend!r} does not run on the CPU")
    contender = contenders[0]
    fn = training_step(contender, batch) if task == "training" else inference_call(contender, batch)
    for _ in range(warmup):
        fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        started = time.perf_counter()
        for _ in range(repeats):
            fn()
        seconds = time.perf_counter() - started
    averages = prof.key_averages()
    ops = {}
    for event in averages:
        if event.key in OPS:
            ops[event.key] = dict(calls=event.count / repeats, ms=event.cpu_time_total / 1e3 / repeats)
    aten = sorted((e for e in averages if e.key.startswith("aten::")), key=lambda e: e.self_cpu_time_total,
                  reverse=True)[:top]
    top_self = [dict(op=e.key, calls=e.count / repeats, self_ms=e.self_cpu_time_total / 1e3 / repeats)
                for e in aten]
    return Profile(size, lmax, task, backend, batch.atoms, seconds * 1e3 / repeats, ops, top_self)


def markdown(meta: dict, profiles: list[Profile]) -> str:
    lines = ["# Where the CPU time of HipnnTS goes (torch.profiler)", "",
             f"- machine: {meta['environment'].get('device', '?')}, {meta['threads']} torch threads, "
             f"torch {meta['environment'].get('torch', '?')}",
             f"- commit: {meta['environment'].get('git_commit', '?')}, {meta['date']}",
             f"- {meta['warmup']} warm-up and {meta['repeats']} profiled steps per row, float32; the model, batches "
             "and step of `hipnnts bench models`",
             "- inclusive times of nested ops overlap, so shares do not add to 100%; profiling adds overhead", ""]
    for p in profiles:
        lines += [f"## {p.task}, size `{p.size}` ({p.atoms} atoms), lmax {p.lmax}, `{p.backend}` backend", "",
                  f"{p.step_ms:.1f} ms per step under the profiler.", "",
                  "| op | calls / step | ms / step (inclusive) | share of the step |", "|---|---:|---:|---:|"]
        for op in OPS:
            if op in p.ops:
                entry = p.ops[op]
                lines.append(f"| `{op}` | {entry['calls']:g} | {entry['ms']:.2f} | {entry['ms'] / p.step_ms:.0%} |")
        lines += ["", "Most self time (aten):", "", "| aten op | calls / step | self ms / step | share |",
                  "|---|---:|---:|---:|"]
        lines += [f"| `{e['op']}` | {e['calls']:g} | {e['self_ms']:.2f} | {e['self_ms'] / p.step_ms:.0%} |"
                  for e in p.top_self]
        lines.append("")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", nargs="+", default=["64", "one"], choices=SIZES[:2],
                        help="batches of hipnnts bench models (default: 64 one)")
    parser.add_argument("--lmax", nargs="+", type=int, default=[0, 1, 2], choices=[0, 1, 2])
    parser.add_argument("--task", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--backend", default="reference", help="the interaction's backend (default: reference)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("bench/results"),
                        help="folder of profile_cpu.md / .json (default bench/results)")


def run_from_arguments(args: argparse.Namespace) -> Path:
    if args.warmup < 0 or args.repeats < 1:
        raise ValueError("--warmup must be >= 0 and --repeats >= 1")
    meta = dict(environment=environment(torch.device("cpu")), threads=torch.get_num_threads(), warmup=args.warmup,
                repeats=args.repeats, date=time.strftime("%Y-%m-%d"))
    profiles = [profile_step(size, lmax, task, args.backend, args.warmup, args.repeats)
                for size in args.size for lmax in args.lmax for task in args.task]
    return report.write(args.out, "profile_cpu", meta, {"profiles": [asdict(p) for p in profiles]},
                        markdown(meta, profiles))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="hipnnts bench profile", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    print(run_from_arguments(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
