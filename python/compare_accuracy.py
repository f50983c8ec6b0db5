"""Train HIP-NN (lmax 0), HIP-NN-TS (lmax 1, 2) and optionally TensorNet on the same data, split and
budget, and write a side-by-side table of held-out errors, parameter counts and time per epoch.

    python python/compare_accuracy.py                          # embedded GFN2-xTB set, CPU defaults
    python python/compare_accuracy.py --data ani.h5 --forces-convention forces --epochs 100 \\
        --set n_features=128 n_sensitivities=20 n_atom_layers=3 --out runs/compare
    python python/compare_accuracy.py --lmax --tensornet 2 --reuse   # add TensorNet (2 layers) to the
                                                                     # table, keep the HIP-NN rows

Every model gets the same settings (``hipnnts train`` defaults, changed with ``--set name=value``), the
same seed (so the same split and batch order), and the same number of epochs and optimisation
settings. The HIP-NN models differ only in lmax. TensorNet (torchmd-net's, through
:class:`hipnnts_kernels.tensornet.TensorNetModel`; ``--tensornet LAYERS ...``) has its own model
settings: ``--tensornet-hidden`` channels (128), ``--tensornet-rbf`` radial basis functions (32) and
``--tensornet-cutoff`` (5.0 Å, ANI's); the HIP-NN model settings do not apply to it.

``--reuse`` keeps the rows of an earlier ``accuracy_<tag>.json`` for the models not trained now (it
refuses when that run had other data or settings), and the notes below the table of the earlier
``accuracy_<tag>.md``. Results: ``<results>/accuracy_<tag>.md`` and ``.json``, with the machine and
versions.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import typing
from pathlib import Path

import torch

import hipnnts_kernels
from hipnnts_kernels.training import TrainConfig, Trainer
from hipnnts_kernels.training.trainer import read_dataset

HIPNN_NAMES = {0: "HIP-NN", 1: "HIP-NN-TS l=1", 2: "HIP-NN-TS l=2"}
#: Settings that may differ between the runs of one table (they do not change what is learned).
UNCOMPARED = ("architecture", "out", "progress", "device", "checkpoint_every", "eval_batch_size")


def _parse_set(items: list[str]) -> dict:
    """``name=value`` items as TrainConfig settings, converted to the field's type ('none': None)."""
    hints, settings = typing.get_type_hints(TrainConfig), {}
    for item in items:
        name, _, value = item.partition("=")
        if name not in hints or not value:
            raise SystemExit(f"--set expects name=value with a TrainConfig name, got {item!r}")
        hint = hints[name]
        optional = type(None) in typing.get_args(hint)
        base = next(a for a in typing.get_args(hint) if a is not type(None)) if optional else hint
        if optional and value.lower() == "none":
            settings[name] = None
        elif base is bool:
            settings[name] = value.lower() in ("1", "true", "yes")
        elif base in (int, float, str):
            settings[name] = base(value)
        else:
            raise SystemExit(f"--set cannot set {name} ({hint}); use hipnnts train for it")
    return settings


def tensornet_name(layers: int) -> str:
    return f"TensorNet ({layers} layer{'s' if layers != 1 else ''})"


def row_name(row: dict) -> str:
    """A row's model name (rows written before TensorNet rows existed name only their lmax)."""
    return row.get("model") or HIPNN_NAMES[row["lmax"]]


def _row_order(row: dict) -> tuple:
    if row.get("architecture", "hipnnts") == "tensornet":
        return 1, row["model_settings"]["num_layers"], row_name(row)
    return 0, row["lmax"], row_name(row)


def _train(config: TrainConfig, conformers, **identity) -> dict:
    summary = Trainer(config, conformers).run()
    test = summary["metrics"]["test"]
    row = dict(**identity, parameters=summary["parameters"], epochs=summary["epochs"],
               seconds_per_epoch=summary["train_seconds"] / max(summary["epochs"], 1), **test)
    forces = f", force MAE {test['force_mae']:.3f}" if "force_mae" in test else ""
    print(f"{row['model']}: test energy MAE {test['energy_mae']:.3f}{forces}")
    return row


def _earlier(path: Path, meta: dict) -> dict:
    """The earlier results in ``path``, after checking that they are comparable with ``meta``."""
    if not path.is_file():
        raise SystemExit(f"--reuse: no earlier results in {path}")
    earlier = json.loads(path.read_text())
    old, new = earlier["meta"], json.loads(json.dumps(meta))  # as read back: tuples become lists
    differ = [k for k in ("data", "conformers") if old.get(k) != new.get(k)]
    old_settings = {k: v for k, v in old["settings"].items() if k not in UNCOMPARED}
    new_settings = {k: v for k, v in new["settings"].items() if k not in UNCOMPARED}
    differ += sorted(k for k in old_settings.keys() | new_settings.keys()
                     if old_settings.get(k) != new_settings.get(k))
    if differ:
        raise SystemExit(f"--reuse: {path} was made with other data or settings ({', '.join(differ)}); "
                         "re-train those models or choose another --tag")
    return earlier


def _notes_below_table(path: Path) -> list[str]:
    """Lines after the table of an earlier markdown file (notes added by hand)."""
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    table = [k for k, line in enumerate(lines) if line.startswith("|")]
    return lines[table[-1] + 1:] if table else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="dataset file (default: the embedded GFN2-xTB set)")
    parser.add_argument("--forces-convention", help="for ANI files: forces, gradient or none")
    parser.add_argument("--energy-unit", help="for ANI or XYZ files")
    parser.add_argument("--lmax", type=int, nargs="*", default=[0, 1, 2], choices=(0, 1, 2),
                        help="HIP-NN(-TS) models to train (default: 0 1 2; none with a bare --lmax)")
    parser.add_argument("--tensornet", type=int, nargs="*", default=[], metavar="LAYERS",
                        help="also train TensorNet with each of these numbers of interaction layers")
    parser.add_argument("--tensornet-hidden", type=int, default=128, help="TensorNet hidden channels")
    parser.add_argument("--tensornet-rbf", type=int, default=32, help="TensorNet radial basis functions")
    parser.add_argument("--tensornet-cutoff", type=float, default=5.0, help="TensorNet cutoff, Å")
    parser.add_argument("--reuse", action="store_true",
                        help="keep the rows of the models not trained now from the earlier accuracy_<tag>.json")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE", help="other TrainConfig settings")
    parser.add_argument("--out", default="runs/compare", help="folder of the training runs")
    parser.add_argument("--results", default="bench/results", help="folder of the tables")
    parser.add_argument("--tag", default="cpu", help="file name tag: accuracy_<tag>.md")
    args = parser.parse_args()
    if not args.lmax and not args.tensornet:
        raise SystemExit("nothing to train: give --lmax and/or --tensornet")

    common = dict(data=args.data, forces_convention=args.forces_convention, energy_unit=args.energy_unit,
                  epochs=args.epochs, early_stopping=args.epochs, progress=False, **_parse_set(args.set))
    common.pop("architecture", None)
    config = TrainConfig(**common)
    conformers = read_dataset(config)
    meta = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                machine=f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
                device=str(config.device), python=platform.python_version(), torch=torch.__version__,
                hipnnts_kernels=hipnnts_kernels.__version__, data=conformers.provenance.get("generator", args.data),
                conformers=len(conformers),
                settings={k: v for k, v in config.to_dict().items() if k not in ("lmax", "architecture")})
    results = Path(args.results)
    json_path, md_path = results / f"accuracy_{args.tag}.json", results / f"accuracy_{args.tag}.md"
    earlier = _earlier(json_path, meta) if args.reuse else None  # checked before hours of training

    rows = []
    for lmax in args.lmax:
        run = TrainConfig(lmax=lmax, out=str(Path(args.out) / f"lmax{lmax}"), **common)
        rows.append(_train(run, conformers, model=HIPNN_NAMES[lmax], architecture="hipnnts", lmax=lmax))
    for layers in args.tensornet:
        settings = dict(hidden_channels=args.tensornet_hidden, num_layers=layers, num_rbf=args.tensornet_rbf,
                        cutoff=args.tensornet_cutoff)
        run = TrainConfig(**{**common, "architecture": "tensornet", "n_features": args.tensornet_hidden,
                             "n_interaction_layers": layers, "n_sensitivities": args.tensornet_rbf,
                             "cutoff": args.tensornet_cutoff, "out": str(Path(args.out) / f"tensornet{layers}")})
        rows.append(_train(run, conformers, model=tensornet_name(layers), architecture="tensornet", lmax=None,
                           model_settings=settings))

    notes: list[str] = []
    if earlier is not None:
        trained = {row_name(r) for r in rows}
        kept = [r for r in earlier["rows"] if row_name(r) not in trained]
        rows += kept
        if kept:
            old = earlier["meta"]
            meta["reused"] = dict(rows=[row_name(r) for r in kept], **{k: old.get(k) for k in (
                "date", "machine", "device", "torch", "hipnnts_kernels")})
        notes = _notes_below_table(md_path)
    rows.sort(key=_row_order)

    results.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
    tensornet_rows = [r for r in rows if r.get("architecture") == "tensornet"]
    title = "HIP-NN, HIP-NN-TS and TensorNet" if tensornet_rows else "HIP-NN vs HIP-NN-TS"
    lines = [f"# Accuracy: {title}, same data, split and budget ({args.tag})", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items() if k not in ("settings", "reused")]
    lines += [f"- settings: {json.dumps(meta['settings'])}"]
    if tensornet_rows:
        settings = sorted({json.dumps({k: v for k, v in r["model_settings"].items() if k != "num_layers"})
                           for r in tensornet_rows})
        lines += [f"- TensorNet model settings (the model settings above are HIP-NN's): {', '.join(settings)}"]
    if "reused" in meta:
        reused = meta["reused"]
        lines += [f"- rows from an earlier run ({reused['date']}, {reused['machine']}, torch {reused['torch']}): "
                  + ", ".join(reused["rows"])]
    lines += ["", "Errors of each run's best-validation model on the held-out test molecules (kcal/mol, kcal/mol/Å).",
              "", "| model | parameters | epochs | s/epoch | E MAE | E RMSE | E/atom MAE | F MAE | F RMSE "
              "| F MAE if F=0 |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        force = (f"{r['force_mae']:.3f} | {r['force_rmse']:.3f} | {r['zero_force_mae']:.3f}" if "force_mae" in r
                 else "- | - | -")
        lines.append(f"| {row_name(r)} | {r['parameters']:,} | {r['epochs']} | {r['seconds_per_epoch']:.1f} | "
                     f"{r['energy_mae']:.3f} | {r['energy_rmse']:.3f} | {r['energy_per_atom_mae']:.4f} | {force} |")
    md_path.write_text("\n".join(lines + notes) + "\n")
    print("\n".join(lines[-len(rows) - 2:]))


if __name__ == "__main__":
    main()
