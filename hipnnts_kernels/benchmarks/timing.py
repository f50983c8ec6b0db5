"""Timing and environment records for the benchmarks.

On CUDA every call is timed with a pair of CUDA events; on CPU with ``time.perf_counter``. The
first call is timed separately on the wall clock (it includes Triton or ``torch.compile``
compilation) and is excluded, with the warm-up calls, from the median.
"""
from __future__ import annotations

import datetime
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch


@dataclass
class Timing:
    """Median, 10th/90th percentiles and interquartile range of the timed calls (microseconds),
    first-call latency (s), and peak memory allocated during the timed calls (MiB, CUDA only)."""

    median_us: float
    iqr_us: float
    first_call_s: float
    peak_mib: float | None
    p10_us: float
    p90_us: float


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
    return summarize(samples, first, peak)


def summarize(samples: list[float], first_call_s: float, peak_mib: float | None) -> Timing:
    """The :class:`Timing` of timed calls of ``samples`` microseconds each."""
    if len(samples) > 1:
        deciles = statistics.quantiles(samples, n=20, method="inclusive")  # 5 % steps
        p10, q1, q3, p90 = deciles[1], deciles[4], deciles[14], deciles[17]
    else:
        p10 = q1 = q3 = p90 = samples[0]
    return Timing(statistics.median(samples), q3 - q1, first_call_s, peak_mib, p10, p90)


def copy_bandwidth(device: torch.device, mib: int = 1024, repeats: int = 20) -> float:
    """Device-to-device copy bandwidth in GB/s (bytes read + bytes written per second)."""
    n = mib * 2**20 // 4
    src = torch.empty(n, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    timing = time_call(lambda: dst.copy_(src), device, warmup=3, repeats=repeats)
    return 2 * n * 4 / (timing.median_us * 1e-6) / 1e9


def matmul_flops(device: torch.device, dtype: torch.dtype = torch.float32, n: int | None = None,
                 repeats: int = 20) -> float:
    """Dense matmul rate in GFLOP/s of an n x n product (n = 8192 on CUDA, 1024 on CPU) in ``dtype``,
    under the current TF32 setting: the compute ceiling the kernels are compared with."""
    n = n or (8192 if device.type == "cuda" else 1024)
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    out = torch.empty_like(a)
    timing = time_call(lambda: torch.mm(a, b, out=out), device, warmup=3, repeats=repeats)
    return 2 * n**3 / (timing.median_us * 1e-6) / 1e9


def package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def environment(device: torch.device) -> dict:
    """Provenance of a benchmark run: date, device (GPU, driver, memory; or CPU model and threads),
    versions of torch, CUDA, Triton, this package and every peer, the git commit of this
    package's source tree, and the TF32 setting."""
    record = dict(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        device=device_name(device), torch=torch.__version__, cuda=torch.version.cuda,
        triton=package_version("triton"), hipnnts_kernels=package_version("hipnnts-kernels"),
        git_commit=_git_commit(), hippynn=package_version("hippynn"), numba=package_version("numba"),
        torchmd_net=package_version("torchmd-net"), python=platform.python_version(),
        tf32=torch.backends.cuda.matmul.allow_tf32,
    )
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        record.update(driver=_nvidia_smi("driver_version"), gpu_memory_gib=round(props.total_memory / 2**30, 1),
                      compute_capability=f"{props.major}.{props.minor}")
    else:
        record.update(threads=torch.get_num_threads(), cores=os.cpu_count())
    return record


def device_name(device: torch.device) -> str:
    """The GPU name, or the CPU model."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def _nvidia_smi(field: str) -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.splitlines()[0].strip() if out.strip() else None


def _git_commit() -> str | None:
    """Commit (with ``-dirty`` for uncommitted changes) of the source tree this package runs from."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=30, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")
