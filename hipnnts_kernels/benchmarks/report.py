"""Outputs shared by the benchmarks: provenance lines, number format, plots, and the atomic write of
``<stem>.json`` / ``<stem>.md`` / ``<stem>_*.png``."""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from ..atomic import atomic_write
from ..training.distributed import resolve_device

__all__ = ["describe_error", "num", "partial_notice", "provenance_lines", "resolve_device", "slug", "speedup_bars",
           "time_vs_atoms", "write"]

_PROVENANCE = ("date", "device", "driver", "gpu_memory_gib", "compute_capability", "cores", "threads", "torch",
               "cuda", "triton", "python", "hipnnts_kernels", "git_commit", "hippynn", "numba", "torchmd_net", "tf32")


def provenance_lines(meta: dict) -> list[str]:
    """One markdown bullet per provenance field present in ``meta``."""
    return [f"- {key}: {meta[key]}" for key in _PROVENANCE if meta.get(key) is not None]


def partial_notice(meta: dict) -> list[str]:
    """Markdown lines that say a report is partial (``meta["complete"]`` false), else none. The
    benchmarks rewrite their report as they go, so a run cut short keeps what it measured."""
    if meta.get("complete", True):
        return []
    return ["**Partial results**: the run stopped (or is still running) before it finished; the tables hold "
            "what was measured until then.", ""]


def num(value: float | None) -> str:
    """Three significant figures, integers without a decimal point; '–' for missing."""
    if value is None:
        return "–"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def describe_error(err: BaseException) -> str:
    """'ErrorType: first line of the message', at most 300 characters: a failed case's record."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text}"[:300]


def slug(text: str) -> str:
    """A file-name-safe form of a device name ('NVIDIA H100 80GB HBM3' -> 'NVIDIA_H100_80GB_HBM3')."""
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_") or "device"


def write(out: Path, stem: str, meta: dict, payload: dict, text: str,
          make_plots: Callable[[], list[Path]] | None = None) -> Path:
    """Write ``out/<stem>.json`` ({"meta": provenance, **payload}) and ``out/<stem>.md``, then the plots."""
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / f"{stem}.json") as tmp:
        tmp.write_text(json.dumps(dict(meta=meta, **payload), indent=1) + "\n")
    with atomic_write(out / f"{stem}.md") as tmp:
        tmp.write_text(text)
    if make_plots is not None:
        make_plots()
    return out / f"{stem}.md"


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> Path:
    """Lay out, write atomically (PNG, 110 dpi) and close ``fig``."""
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=110)
    pyplot().close(fig)
    return path


def time_vs_atoms(series: dict[str, dict[str, list[tuple[int, float]]]], path: Path, title: str,
                  ylabel: str | dict[str, str]) -> Path:
    """Log-log panels, one per key of ``series``, of (atoms, value) points, one line per backend;
    ``ylabel`` is one label or one per panel."""
    plt = pyplot()
    panels = list(series)
    cols = min(3, max(len(panels), 1))
    rows = max(1, -(-len(panels) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        for backend, points in sorted(series[panel].items()):
            points = sorted(points)
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=backend)
        ax.set(xscale="log", yscale="log", title=panel, xlabel="atoms",
               ylabel=ylabel if isinstance(ylabel, str) else ylabel[panel])
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def speedup_bars(bars: dict[str, dict[str, float]], path: Path, title: str) -> Path:
    """Grouped bars: one group per key of ``bars``, one bar per backend (ratio; 1 = parity)."""
    plt = pyplot()
    groups = list(bars)
    names = sorted({name for group in bars.values() for name in group})
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(groups) * max(len(names), 1) ** 0.5 + 2), 3.6))
    width = 0.8 / max(len(names), 1)
    for k, name in enumerate(names):
        xs = [i + k * width for i, g in enumerate(groups) if name in bars[g]]
        ys = [bars[g][name] for g in groups if name in bars[g]]
        ax.bar(xs, ys, width, label=name)
    ax.set_xticks([i + width * (len(names) - 1) / 2 for i in range(len(groups))], groups, rotation=20, fontsize=8)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set(yscale="log", ylabel="speedup (×)", title=title)
    ax.title.set_fontsize(9)
    if names:
        ax.legend(fontsize=7)
    return save_figure(fig, path)
