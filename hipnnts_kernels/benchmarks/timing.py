"""Timing and environment records for the benchmarks.

On CUDA every call is timed with a pair of CUDA events; on CPU with ``time.perf_counter``. The
first call is timed separately on the wall clock (it includes Triton or ``torch.compile``
compilation) and is excluded, with the warm-up calls, from the median.
"""
from __future__ import annotations

import datetime
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

import torch


@dataclass
class Timing:
    """Median and interquartile range of the timed calls (microseconds), first-call latency (s),
    and peak memory allocated during the timed calls (MiB, CUDA only)."""

    median_us: float
    iqr_us: float
    first_call_s: float
    peak_mib: float | None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device, warmup: int = 5, repeats: int = 50) -> Timing:
    """Time ``fn()`` on ``device``: first call, ``warmup`` untimed calls, then ``repeats`` timed calls."""
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    first = time.perf_counter() - start
    for _ in range(warmup):
        fn()
    samples = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(repeats)]
        for begin, end in events:
            begin.record()
            fn()
            end.record()
        torch.cuda.synchronize(device)
        samples = [1e3 * begin.elapsed_time(end) for begin, end in events]
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            samples.append(1e6 * (time.perf_counter() - start))
        peak = None
    if len(samples) > 1:
        q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    else:
        q1 = q3 = samples[0]
    return Timing(statistics.median(samples), q3 - q1, first, peak)


def copy_bandwidth(device: torch.device, mib: int = 1024, repeats: int = 20) -> float:
    """Device-to-device copy bandwidth in GB/s (bytes read + bytes written per second)."""
    n = mib * 2**20 // 4
    src = torch.empty(n, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    timing = time_call(lambda: dst.copy_(src), device, warmup=3, repeats=repeats)
    return 2 * n * 4 / (timing.median_us * 1e-6) / 1e9


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def environment(device: torch.device) -> dict:
    """Device, library versions and date of a benchmark run."""
    record = dict(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        torch=torch.__version__, cuda=torch.version.cuda, triton=package_version("triton"),
        hippynn=package_version("hippynn"), hipnnts_kernels=package_version("hipnnts-kernels"),
        python=platform.python_version(), tf32=torch.backends.cuda.matmul.allow_tf32,
    )
    if device.type == "cpu":
        record["threads"] = torch.get_num_threads()
    return record
