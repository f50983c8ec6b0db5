"""Train HIP-NN (lmax 0) and HIP-NN-TS (lmax 1, 2) on the same data, split and budget, and write
a side-by-side table of held-out errors and parameter counts.

    python python/compare_accuracy.py                          # embedded GFN2-xTB set, CPU defaults
    python python/compare_accuracy.py --data ani.h5 --forces-convention forces --epochs 100 \\
        --set n_features=128 n_sensitivities=20 n_atom_layers=3 --out runs/compare

Every model gets the same settings except lmax (``hipnnts train`` defaults, changed with
``--set name=value``), the same seed (so the same split and batch order), and the same number of
epochs. Results: ``<results>/accuracy_<tag>.md`` and ``.json``, with the machine and versions.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
from pathlib import Path

import torch

import hipnnts_kernels
from hipnnts_kernels.training import TrainConfig, Trainer
from hipnnts_kernels.training.trainer import read_dataset


def _parse_set(items: list[str]) -> dict:
    settings = {}
    for item in items:
        name, _, value = item.partition("=")
        field = TrainConfig.__dataclass_fields__.get(name)
        if field is None or not value:
            raise SystemExit(f"--set expects name=value with a TrainConfig name, got {item!r}")
        default = field.default
        settings[name] = type(default)(value) if default is not None and not isinstance(default, tuple) else value
    return settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="dataset file (default: the embedded GFN2-xTB set)")
    parser.add_argument("--forces-convention", help="for ANI files: forces, gradient or none")
    parser.add_argument("--energy-unit", help="for ANI or XYZ files")
    parser.add_argument("--lmax", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE", help="other TrainConfig settings")
    parser.add_argument("--out", default="runs/compare", help="folder of the training runs")
    parser.add_argument("--results", default="bench/results", help="folder of the tables")
    parser.add_argument("--tag", default="cpu", help="file name tag: accuracy_<tag>.md")
    args = parser.parse_args()

    common = dict(data=args.data, forces_convention=args.forces_convention, energy_unit=args.energy_unit,
                  epochs=args.epochs, early_stopping=args.epochs, progress=False, **_parse_set(args.set))
    conformers = read_dataset(TrainConfig(**common))
    rows = []
    for lmax in args.lmax:
        config = TrainConfig(lmax=lmax, out=str(Path(args.out) / f"lmax{lmax}"), **common)
        summary = Trainer(config, conformers).run()
        test = summary["metrics"]["test"]
        rows.append(dict(lmax=lmax, parameters=summary["parameters"], epochs=summary["epochs"],
                         seconds_per_epoch=summary["train_seconds"] / max(summary["epochs"], 1), **test))
        print(f"lmax {lmax}: test energy MAE {test['energy_mae']:.3f}, force MAE {test['force_mae']:.3f}")

    config = TrainConfig(**common)
    meta = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                machine=f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
                device=str(config.device), python=platform.python_version(), torch=torch.__version__,
                hipnnts_kernels=hipnnts_kernels.__version__, data=conformers.provenance.get("generator", args.data),
                conformers=len(conformers), settings={k: v for k, v in config.to_dict().items() if k != "lmax"})
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    (results / f"accuracy_{args.tag}.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
    names = {0: "HIP-NN", 1: "HIP-NN-TS l=1", 2: "HIP-NN-TS l=2"}
    lines = [f"# Accuracy: HIP-NN vs HIP-NN-TS, same data, split and budget ({args.tag})", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items() if k != "settings"]
    lines += [f"- settings: {json.dumps(meta['settings'])}", "",
              "Errors of each run's best-validation model on the held-out test molecules (kcal/mol, kcal/mol/Å).", "",
              "| model | parameters | epochs | s/epoch | E MAE | E RMSE | E/atom MAE | F MAE | F RMSE | F MAE if F=0 |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {names[r['lmax']]} | {r['parameters']:,} | {r['epochs']} | {r['seconds_per_epoch']:.1f} | "
                     f"{r['energy_mae']:.3f} | {r['energy_rmse']:.3f} | {r['energy_per_atom_mae']:.4f} | "
                     f"{r['force_mae']:.3f} | {r['force_rmse']:.3f} | {r['zero_force_mae']:.3f} |")
    (results / f"accuracy_{args.tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-len(rows) - 2:]))


if __name__ == "__main__":
    main()
