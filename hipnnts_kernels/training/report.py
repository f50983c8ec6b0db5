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


def plot_learning_curves(history: list[dict], path: Path) -> None:
    """Energy and force MAE per epoch, train and validation, on log axes, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    panels = [("energy_mae", "energy MAE (kcal/mol)")]
    if any("valid_force_mae" in row for row in history):
        panels.append(("force_mae", "force MAE (kcal/mol/Å)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels):
        for split, style in (("train", "-"), ("valid", "--")):
            values = [row.get(f"{split}_{key}", float("nan")) for row in history]
            ax.plot(epochs, values, style, label=split)
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
