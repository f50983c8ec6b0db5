"""The run's log (``log.csv``, ``log.json``: one row per epoch) and its learning-curve plot."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from ..atomic import atomic_write


def _write_atomic(path: Path, text: str) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(text)


def write_log(history: list[dict], out: Path, summary: dict | None = None) -> None:
    """``log.csv`` (a row per epoch) and ``log.json`` (the rows, plus ``summary`` when given)."""
    columns: list[str] = []
    for row in history:
        columns += [k for k in row if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    _write_atomic(out / "log.csv", buffer.getvalue())
    _write_atomic(out / "log.json", json.dumps({"epochs": history, **({"summary": summary} if summary else {})},
                                               indent=1))


def learning_curve_figure(history: list[dict]):
    """Energy and force MAE per epoch (train and validation, with markers, so one epoch shows), on
    log axes labelled at 1, 2, 3, 5 x 10^k; the best epoch (lowest validation score) and, for
    forces, the validation error of predicting zero forces. Returns the matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, LogLocator, MaxNLocator, NullFormatter

    epochs = [row["epoch"] for row in history]
    scores = [row.get("valid_score", float("inf")) for row in history]
    best = epochs[scores.index(min(scores))] if epochs else None
    panels = [("energy_mae", "energy MAE (kcal/mol)")]
    if any("valid_force_mae" in row for row in history):
        panels.append(("force_mae", "force MAE (kcal/mol/Å)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels):
        for split, style in (("train", "o-"), ("valid", "s--")):
            values = [row.get(f"{split}_{key}", float("nan")) for row in history]
            ax.plot(epochs, values, style, markersize=3.5, label=split)
        if key == "force_mae" and history and "valid_zero_force_mae" in history[-1]:
            ax.axhline(history[-1]["valid_zero_force_mae"], color="0.5", linestyle=":", label="valid, zero forces")
        if best is not None:
            ax.axvline(best, color="tab:green", linestyle=":", linewidth=1, label=f"best epoch ({best})")
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0)))
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        if epochs:
            ax.set_xlim(0.5, max(epochs) + 0.5)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_learning_curves(history: list[dict], path: Path) -> None:
    """:func:`learning_curve_figure` as a PNG, written atomically."""
    import matplotlib.pyplot as plt

    fig = learning_curve_figure(history)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
