"""How much of a HipnnTS step the interaction kernels are, and the most any faster kernel could give.

    hipnnts bench headroom [--size one 64] [--lmax 0 1 2] [--backend cpu] [--repeats 10]

For each (lmax, size, task) it times three contenders on the model, batches and step of
``hipnnts bench models``, their calls taken in turns (one of each, then the next round; the median
of each), so that the machine's drift during the run touches all three alike:

- **ours**: HipnnTS with the interaction on ``--backend``;
- **free kernels**: the same model and step with the interaction's three derivative levels replaced
  by kernels that only fill their outputs with zeros (the ``zeros`` backend, registered for the run
  only). Everything else is unchanged: the same custom ops and autograd nodes, the GEMMs, the atom
  layers, the pair list, Adam. Its time is a floor for any interaction kernel, however fast;
- **hippynn**: the same network in hippynn 0.1.3 with its numba kernels (identical weights).

The report gives the ratios hippynn / ours and hippynn / free kernels: the second is the largest
speedup over hippynn that faster interaction kernels alone can reach. The other ops (GEMMs, the
framework) are the rest of the step, as ``hipnnts bench profile`` shows.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path

import torch
from torch import Tensor

from .. import backends
from ..checks import value_checks
from . import report
from .models import SIZES, TASKS, Contender, Record, _ours, inference_call, make_batch, our_contenders, training_step
from .report import num
from .timing import environment, summarize

#: The name under which :func:`zero_kernels` registers its kernels.
ZEROS = "zeros"


def _zeros_like_scale(scale: Tensor | None, like: Tensor) -> Tensor:
    return like.new_zeros(0) if scale is None else torch.zeros_like(scale)


def _forward(Y, pair_coord, pair_first, pair_second, mu, sigma, vecscales, quadscales, cutoff, cusp_reg, lmax):
    return Y.new_zeros(Y.shape[0], Y.shape[2])


def _backward(grad_out, Y, pair_coord, pair_first, pair_second, mu, sigma, vecscales, quadscales, *constants):
    return (torch.zeros_like(Y), torch.zeros_like(pair_coord), torch.zeros_like(mu), torch.zeros_like(sigma),
            _zeros_like_scale(vecscales, Y), _zeros_like_scale(quadscales, Y))


def _double_backward(grad_out, Y, pair_coord, pair_first, pair_second, mu, sigma, vecscales, quadscales, *rest):
    return (torch.zeros_like(grad_out), *_backward(grad_out, Y, pair_coord, pair_first, pair_second, mu, sigma,
                                                   vecscales, quadscales))


@contextlib.contextmanager
def zero_kernels() -> Iterator[str]:
    """Within the block, the ``zeros`` backend runs the interaction's three levels as kernels that
    only write zeros, on any device; afterwards it is gone again. Yields its name."""
    ops = {"interaction": _forward, "interaction_backward": _backward,
           "interaction_double_backward": _double_backward}
    backends.register_backend(ZEROS, lambda device: None)
    for op, fn in ops.items():
        backends.register(op, ZEROS)(fn)
    try:
        yield ZEROS
    finally:
        backends.unregister_backend(ZEROS)


def _free_kernels(ours: Contender) -> Contender:
    """``ours`` with a copy of its model whose interaction layers run the ``zeros`` backend."""
    model = copy.deepcopy(ours.module)
    for layer in model.interaction_layers:
        layer.backend = ZEROS
    return Contender(ours.name.split(" [")[0] + " [free kernels]", "free", ours.lmax, model, ours.parameters,
                     _ours(model), notes="interaction kernels that only write zeros")


def interleaved(fns: list[Callable[[], object]], warmup: int, repeats: int) -> list[list[float]]:
    """Wall-clock µs of ``repeats`` calls of each of ``fns`` (CPU), taken in turns (one call of each,
    then the next round) after ``warmup`` calls of each, so that a drift of the machine's speed
    touches every function alike."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, own in zip(fns, samples):
            start = time.perf_counter()
            fn()
            own.append(1e6 * (time.perf_counter() - start))
    return samples


def _record(c: Contender, b, task: str, samples: list[float]) -> Record:
    timing = summarize(samples, first_call_s=0.0, peak_mib=None)  # no separate first call: warm-up covers it
    return Record(c.name, c.family, c.lmax, b.name, task, b.atoms, b.n_molecules, median_ms=timing.median_us / 1e3,
                  p10_ms=timing.p10_us / 1e3, p90_ms=timing.p90_us / 1e3, us_per_atom=timing.median_us / b.atoms,
                  molecules_per_s=b.n_molecules / (timing.median_us * 1e-6))


def run(sizes, lmax_values, backend: str, warmup: int, repeats: int, dtype: torch.dtype = torch.float32) -> list:
    """Records of ours, free kernels and hippynn for every (lmax, size, task), in that order."""
    device = torch.device("cpu")
    batches = [make_batch(size, device, dtype) for size in sizes]
    records: list[Record] = []
    with zero_kernels(), value_checks(False):
        for lmax in lmax_values:
            contenders = our_contenders(lmax, device, dtype, backend_names=(backend,), hippynn=True)
            if len(contenders) != 2:
                raise ValueError(f"backend {backend!r} does not run on the CPU")
            trio = (contenders[0], _free_kernels(contenders[0]), contenders[1])
            for b in batches:
                for task in TASKS:
                    make = inference_call if task == "inference" else training_step
                    states = [copy.deepcopy(c.module.state_dict()) for c in trio]
                    samples = interleaved([make(c, b) for c in trio], warmup, repeats)
                    for c, state in zip(trio, states):  # every row starts from the same weights
                        c.module.load_state_dict(state)
                    records += [_record(c, b, task, own) for c, own in zip(trio, samples)]
    return records


def markdown(meta: dict, records: list[Record]) -> str:
    lines = ["# Headroom: the step with free interaction kernels", "", *report.provenance_lines(meta["environment"]),
             f"- {meta['warmup']} warm-up and {meta['repeats']} timed calls of each contender per row, taken in turns "
             "(median), float32, one run; the model, batches and step of `hipnnts bench models`",
             "- **free kernels**: the interaction's forward, backward and double backward only write zeros; "
             "everything else in the step is unchanged. Its time is a floor for any interaction kernel.", "",
             "| lmax | size | task | ours | free kernels | hippynn | hippynn / ours | hippynn / free kernels | "
             "kernels' share of ours |", "|---:|---|---|---:|---:|---:|---:|---:|---:|"]
    for k in range(0, len(records), 3):
        ours, free, hippynn = records[k:k + 3]
        unit = "ms" if ours.task == "training" else "µs/atom"
        value = (lambda r: r.median_ms) if ours.task == "training" else (lambda r: r.us_per_atom)
        if any(r.error for r in (ours, free, hippynn)):
            errors = "; ".join(f"{r.contender}: {r.error}" for r in (ours, free, hippynn) if r.error)
            lines.append(f"| {ours.lmax} | {ours.size} | {ours.task} | {errors} ||||||")
            continue
        a, f, h = value(ours), value(free), value(hippynn)
        lines.append(f"| {ours.lmax} | {ours.size} | {ours.task} | {num(a)} {unit} | {num(f)} {unit} | "
                     f"{num(h)} {unit} | {h / a:.2f}x | {h / f:.2f}x | {(a - f) / a:.0%} |")
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", nargs="+", default=["one", "64"], choices=SIZES[:2],
                        help="batches of hipnnts bench models (default: one 64)")
    parser.add_argument("--lmax", nargs="+", type=int, default=[0, 1, 2], choices=[0, 1, 2])
    parser.add_argument("--backend", default="cpu", help="the interaction's backend for ours (default: cpu)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("bench/results"),
                        help="folder of headroom_cpu.md / .json (default bench/results)")


def run_from_arguments(args: argparse.Namespace) -> Path:
    if args.warmup < 0 or args.repeats < 1:
        raise ValueError("--warmup must be >= 0 and --repeats >= 1")
    meta = dict(environment=environment(torch.device("cpu")), warmup=args.warmup, repeats=args.repeats,
                date=time.strftime("%Y-%m-%d"))
    records = run(args.size, args.lmax, args.backend, args.warmup, args.repeats)
    return report.write(args.out, "headroom_cpu", meta, {"records": [asdict(r) for r in records]},
                        markdown(meta, records))
