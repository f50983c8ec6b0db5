"""``hipnnts compare``: train several models on the same data, split and device, each for the same
wall-clock budget (or the same number of epochs), over several seeds, and compare them the way a
user chooses: accuracy on held-out molecules and on larger ones, against training and inference speed.

    hipnnts compare                                   # HIP-NN, HIP-NN-TS l=1, 2, TensorNet, 2 ETNs: 10 min, seeds 0-2
    hipnnts compare --models hipnn hipnnts-l2 --minutes 2 --seeds 0
    hipnnts compare --epochs 20                       # equal epochs instead of equal time
    hipnnts compare --set batch_size=64 lr=1e-3       # a setting for every model (over its recipe)

Each model trains with its recipe (:data:`CONTENDERS`, documented in docs/compare.md), the
defaults of ``hipnnts train`` otherwise. A seed fixes the split (by molecule), the initial weights and
the batch order, so the models of one seed see the same molecules in the same batches. With a time
budget, early stopping is off: every run trains until its budget is spent (or its learning rate falls
below ``min_lr``); the budget counts everything the trainer does, per-epoch evaluation included.

Each (model, seed) run lives in ``OUT/<model>/seed<k>/``: the trainer's files, and ``result.json``
once it is finished. Running the command again skips the finished runs and continues an interrupted
one from its ``last.pt``, so a long comparison can be spread over several sittings; ``--reuse REPORT``
takes the finished runs of an earlier report instead (a fresh checkout of the same machine). After every
finished run the report is rewritten from all finished runs: ``RESULTS/compare_<tag>.md`` and
``.json``, ``compare_<tag>_time.png`` (validation force MAE against wall-clock time) and
``compare_<tag>_frontier.png`` (test force MAE against training throughput).

Errors are those of each run's best-validation model, on the test split (held-out molecules of the
training set's sizes) and on the transfer set (by default the shipped set of 120 larger molecules,
:func:`hipnnts_kernels.data.embedded.load_transfer`). Throughput: conformers trained per second of
training steps (evaluation excluded). Inference: energy + forces of the test split, microseconds
per atom, median of 3 passes.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
import typing
from dataclasses import dataclass
from pathlib import Path

import torch

from .atomic import atomic_write
from .training import TrainConfig, Trainer, evaluate

#: Epochs and early-stopping patience of a time-budget run: the budget ends it, not these.
UNBOUNDED_EPOCHS = 1_000_000
#: Settings that may differ between the runs of one comparison (they do not change what is learned).
UNCOMPARED = ("out", "progress", "device", "checkpoint_every", "eval_batch_size")
INFERENCE_PASSES = 3


@dataclass(frozen=True)
class Contender:
    """A model of the comparison: its name on the command line, its label in the report, and its
    recipe (the :class:`TrainConfig` settings that differ from ``hipnnts train``'s defaults)."""

    name: str
    label: str
    recipe: dict


_ETN = dict(architecture="etn", n_sensitivities=8, cutoff=5.0, etn_degree=6, etn_bond_dim=8, etn_moments=16,
            force_weight=1.0)
CONTENDERS = {c.name: c for c in (
    # The recipes after tuning rounds 1 to 5 on seed 0 (docs/compare.md, Recipes); rounds 2 and 4 set
    # hipnnts train's defaults (lr 4e-3, force weight 4), round 3 chose batch 16 for HIP-NN-TS l=2 and TensorNet,
    # round 5 (force weight 16) changed nothing
    Contender("hipnn", "HIP-NN", dict(lmax=0)),
    Contender("hipnnts-l1", "HIP-NN-TS l=1", dict(lmax=1)),
    Contender("hipnnts-l2", "HIP-NN-TS l=2", dict(lmax=2, batch_size=16)),
    # TensorNet evaluates in batches of 32 molecules: on a CPU its neighbour search covers all N x N atom
    # pairs of a batch, 0.46 ms per atom at 128 molecules against 0.11 at 32 (TensorNetModel).
    # 64 channels and 1 layer: chosen on validation within the 10-minute CPU budget over torchmd-net's
    # default 128 channels and 2 layers
    Contender("tensornet", "TensorNet", dict(architecture="tensornet", n_features=64, n_interaction_layers=1,
                                             n_sensitivities=32, cutoff=5.0, batch_size=16, eval_batch_size=32)),
    # ETN at two sizes: 61k parameters (near the HIP-NN-TS recipes' 67k) and 240k (bond dimension 16);
    # force weight 1: 4 lowered its force error 9 % but raised its energy error 12 % (round 4)
    Contender("etn", "ETN", _ETN),
    Contender("etn-b16", "ETN b=16", dict(_ETN, etn_bond_dim=16)),
)}
DEFAULT_CONTENDERS = ("hipnn", "hipnnts-l1", "hipnnts-l2", "tensornet", "etn", "etn-b16")


@dataclass(frozen=True)
class Budget:
    """Minutes of wall-clock time per run, or epochs per run (exactly one of them)."""

    minutes: float | None = None
    epochs: int | None = None

    def __post_init__(self) -> None:
        if (self.minutes is None) == (self.epochs is None):
            raise ValueError("give a budget of minutes or of epochs, not both")
        if (self.minutes is not None and not self.minutes > 0) or (self.epochs is not None and self.epochs < 1):
            raise ValueError(f"the budget must be positive, got {self}")

    def settings(self) -> dict:
        if self.minutes is not None:
            return dict(time_limit=float(self.minutes), epochs=UNBOUNDED_EPOCHS, early_stopping=UNBOUNDED_EPOCHS)
        return dict(time_limit=None, epochs=self.epochs, early_stopping=self.epochs)

    def describe(self) -> str:
        return f"{self.minutes:g} min of wall-clock time per run" if self.minutes is not None \
            else f"{self.epochs} epochs per run"


def parse_settings(items: list[str]) -> dict:
    """``name=value`` items as :class:`TrainConfig` settings, converted to the field's type
    ('none': None)."""
    hints, settings = typing.get_type_hints(TrainConfig), {}
    for item in items:
        name, _, value = item.partition("=")
        name = name.replace("-", "_")
        if name not in hints or not value:
            raise ValueError(f"--set expects name=value with a setting of hipnnts train, got {item!r}")
        hint = hints[name]
        optional = type(None) in typing.get_args(hint)
        base = next(a for a in typing.get_args(hint) if a is not type(None)) if optional else hint
        if optional and value.lower() == "none":
            settings[name] = None
        elif base is bool:
            settings[name] = value.lower() in ("1", "true", "yes")
        elif base in (int, float, str):
            try:
                settings[name] = base(value)
            except ValueError:
                raise ValueError(f"--set {name} expects {base.__name__}, got {value!r}") from None
        else:
            raise ValueError(f"--set cannot set {name}; give it to hipnnts train instead")
    for name in ("architecture", "lmax", "seed", "out"):
        if name in settings:
            raise ValueError(f"--set {name}: the comparison sets it (use --models, --seeds, --out)")
    for name in ("time_limit", "epochs", "early_stopping"):
        if name in settings:
            raise ValueError(f"--set {name}: the budget sets it (use --minutes or --epochs)")
    return settings


def run_config(contender: Contender, seed: int, budget: Budget, common: dict, out: Path) -> TrainConfig:
    """The settings of one run: defaults, the contender's recipe, the common settings, the budget."""
    return TrainConfig(**{**contender.recipe, **common, **budget.settings(), "seed": seed,
                          "out": str(out / contender.name / f"seed{seed}"), "progress": False})


def _comparable(config: dict) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.items() if k not in UNCOMPARED}


def _differing_settings(saved: dict, config: TrainConfig) -> list[str]:
    """The settings in which a saved run's config differs from ``config`` (a setting the package
    gained after the run was saved counts as its default there)."""
    old = _comparable({**TrainConfig().to_dict(), **saved})
    new = _comparable(config.to_dict())
    return sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))


def finished_result(config: TrainConfig) -> dict | None:
    """The saved result of the run of ``config``, or None when it has not finished; an error when
    its folder holds a run with other settings."""
    path = Path(config.out) / "result.json"
    if not path.is_file():
        return None
    result = json.loads(path.read_text())
    differ = _differing_settings(result["config"], config)
    if differ:
        raise ValueError(f"{config.out} holds a finished run with other settings ({', '.join(differ)}); "
                         "choose another --out, or delete that folder to train it again")
    return result


def _machine(meta: dict) -> str:
    """The machine of a report, as far as it decides speed: device and torch threads."""
    return f"{meta['device']} with {meta['threads']} torch threads"


def reported_runs(paths: typing.Iterable[Path]) -> list[dict]:
    """The runs of earlier reports (``compare_<tag>.json`` files), in the order given."""
    runs = []
    for path in paths:
        try:
            report = json.loads(Path(path).read_text())
            machine = _machine(report["meta"])
            for run in report["runs"]:
                if not isinstance(run["config"], dict):
                    raise TypeError(f"run {run.get('model')} seed {run.get('seed')} has no settings")
                runs.append(dict(run, reported_in=str(path), reported_on=machine))
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(f"--reuse {path}: not a report of hipnnts compare ({type(error).__name__}: {error})") \
                from None
    return runs


def reported_result(model: str, config: TrainConfig, reported: list[dict]) -> dict | None:
    """The first of the ``reported`` runs made by ``model`` with the settings of ``config``, or None."""
    return next((run for run in reported if run.get("model") == model and run.get("seed") == config.seed
                 and not _differing_settings(run["config"], config)), None)


def train_one(contender: Contender, config: TrainConfig, conformers, transfer) -> dict:
    """Train (or continue) one run, evaluate its best model, save and return its result."""
    out = Path(config.out)
    trainer = Trainer(config, conformers, resume=(out / "last.pt").is_file())
    summary = trainer.run()  # ends with the best-validation weights in trainer.model
    history = trainer.history
    train_seconds = history[-1]["train_seconds"] if history else None
    throughput = (history[-1]["epoch"] * len(trainer.splits[0]) / train_seconds
                  if history and train_seconds else None)
    test = trainer.splits[2]
    test_atoms = int(conformers.n_atoms[test].sum())
    passes = []
    for _ in range(INFERENCE_PASSES + 1):  # the first pass warms up
        started = time.perf_counter()
        evaluate(trainer.model, trainer.dataset, test, config.eval_batch_size)
        passes.append(time.perf_counter() - started)
    result = dict(
        model=contender.name, label=contender.label, seed=config.seed, config=config.to_dict(),
        parameters=summary["parameters"], epochs=summary["epochs"], best_epoch=summary["best_epoch"],
        stopped=summary["stopped"], seconds=history[-1]["seconds"] if history else 0.0,
        train_seconds=train_seconds, train_conformers_per_s=throughput,
        inference_us_per_atom=1e6 * statistics.median(passes[1:]) / max(test_atoms, 1),
        test=summary["metrics"]["test"], valid=summary["metrics"]["valid"],
        curve=[{k: row.get(k) for k in ("epoch", "seconds", "train_seconds", "valid_energy_mae", "valid_force_mae")}
               for row in history],
    )
    if transfer is not None:
        from .data import DeviceDataset

        dataset = DeviceDataset(transfer, trainer.model.cutoff, trainer.dataset.device,
                                next(trainer.model.parameters()).dtype)
        result["transfer"] = evaluate(trainer.model, dataset, torch.arange(len(transfer)), config.eval_batch_size)
    with atomic_write(out / "result.json") as tmp:
        tmp.write_text(json.dumps(result, indent=1) + "\n")
    return result


def _spread(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _cell(results: list[dict], get, digits: int = 2) -> str:
    values = [v for v in (get(r) for r in results) if v is not None]
    if not values:
        return "–"
    mean, spread = _spread(values)
    return f"{mean:.{digits}f} ± {spread:.{digits}f}" if len(values) > 1 else f"{mean:.{digits}f}"


def summary_rows(results: list[dict]) -> list[dict]:
    """Per model: the mean and spread over seeds of every reported quantity."""
    rows = []
    for name in dict.fromkeys(r["model"] for r in results):
        runs = [r for r in results if r["model"] == name]
        row = dict(model=name, label=runs[0]["label"], seeds=[r["seed"] for r in runs],
                   parameters=runs[0]["parameters"])
        for key, get in _QUANTITIES.items():
            values = [v for v in (get(r) for r in runs) if v is not None]
            if values:
                row[key] = dict(zip(("mean", "std"), _spread(values)), values=values)
        rows.append(row)
    return rows


_QUANTITIES = {
    "epochs": lambda r: r["epochs"],
    "train_conformers_per_s": lambda r: r["train_conformers_per_s"],
    "inference_us_per_atom": lambda r: r["inference_us_per_atom"],
    "valid_force_mae": lambda r: r["valid"].get("force_mae"),
    "test_energy_mae": lambda r: r["test"]["energy_mae"],
    "test_energy_mean_error": lambda r: r["test"].get("energy_mean_error"),
    "test_force_mae": lambda r: r["test"].get("force_mae"),
    "transfer_energy_mae": lambda r: r.get("transfer", {}).get("energy_mae"),
    "transfer_energy_per_atom_mae": lambda r: r.get("transfer", {}).get("energy_per_atom_mae"),
    "transfer_force_mae": lambda r: r.get("transfer", {}).get("force_mae"),
}


#: The report's columns: header, quantity, decimals.
_COLUMNS = (("epochs", "epochs", 0), ("train conf/s", "train_conformers_per_s", 0),
            ("E+F µs/atom", "inference_us_per_atom", 0), ("valid F MAE", "valid_force_mae", 2),
            ("test E MAE", "test_energy_mae", 2), ("test E mean error", "test_energy_mean_error", 2),
            ("test F MAE", "test_force_mae", 2), ("transfer E MAE", "transfer_energy_mae", 2),
            ("transfer E/atom MAE", "transfer_energy_per_atom_mae", 3), ("transfer F MAE", "transfer_force_mae", 2))


def markdown(meta: dict, results: list[dict]) -> str:
    from .benchmarks.report import partial_notice, provenance_lines

    lines = [f"# Model comparison: {meta['budget']} ({meta['device']})", ""] + partial_notice(meta)
    lines += provenance_lines(meta)
    lines += [f"- data: {meta['data']}; transfer set: {meta['transfer']}",
              f"- seeds: {', '.join(map(str, meta['seeds']))} (each its own split by molecule, initial weights and "
              "batch order; the models of one seed share them)",
              f"- common settings: {json.dumps(meta['common'])}", ""]
    lines += ["Each model's recipe (the settings that differ from `hipnnts train`'s defaults):", ""]
    lines += [f"- {CONTENDERS[m].label}: `{json.dumps(CONTENDERS[m].recipe)}`" for m in meta["models"]]
    lines += ["", "Mean ± standard deviation over the finished seeds. Errors of each run's best-validation model in "
              "kcal/mol and kcal/mol/Å; test: held-out molecules; transfer: the larger molecules. Throughput: "
              "conformers per second of training steps; inference: energy + forces, µs per atom. Choose recipes "
              "by the validation error, never by the test error.", "",
              "| model | parameters | seeds | " + " | ".join(header for header, _, _ in _COLUMNS) + " |",
              "|---|---:|---:|" + "---:|" * len(_COLUMNS)]
    for name in dict.fromkeys(r["model"] for r in results):
        runs = [r for r in results if r["model"] == name]
        cells = [_cell(runs, _QUANTITIES[key], digits) for _, key, digits in _COLUMNS]
        lines.append(f"| {runs[0]['label']} | {runs[0]['parameters']:,} | {len(runs)} | " + " | ".join(cells) + " |")
    missing = [f"{CONTENDERS[m].label} seed {s}" for m in meta["models"] for s in meta["seeds"]
               if not any(r["model"] == m and r["seed"] == s for r in results)]
    if missing:
        lines += ["", f"Not finished yet: {', '.join(missing)}."]
    lines += ["", f"Plots: `{meta['stem']}_time.png` (validation force MAE against wall-clock time, one line per run), "
              f"`{meta['stem']}_frontier.png` (test force MAE against training throughput, mean ± std per model)."]
    return "\n".join(lines) + "\n"


def plots(results: list[dict], out: Path, stem: str, title: str) -> list[Path]:
    """Validation force MAE against wall-clock time (every run), and the accuracy/speed frontier."""
    import matplotlib.ticker

    from .benchmarks.report import pyplot

    plt = pyplot()
    names = list(dict.fromkeys(r["model"] for r in results))
    colors = {name: plt.get_cmap("tab10")(k % 10) for k, name in enumerate(names)}
    paths = []
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for name in names:
        for k, run in enumerate(r for r in results if r["model"] == name):
            points = [(p["seconds"], p["valid_force_mae"]) for p in run["curve"] if p.get("valid_force_mae")]
            if points:
                x, y = zip(*points)
                ax.plot(x, y, "o-", markersize=2.5, linewidth=1, color=colors[name],
                        label=run["label"] if k == 0 else None)
    ax.set(xscale="log", yscale="log", xlabel="wall-clock time (s)", ylabel="validation force MAE (kcal/mol/Å)",
           title=title)
    paths.append(_save_figure(fig, ax, out / f"{stem}_time.png"))

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for row in summary_rows(results):
        if "train_conformers_per_s" in row and "test_force_mae" in row:
            x, y = row["train_conformers_per_s"], row["test_force_mae"]
            ax.errorbar(x["mean"], y["mean"], xerr=x["std"], yerr=y["std"], fmt="o", capsize=3,
                        color=colors[row["model"]], label=row["label"])
            ax.scatter(x["values"], y["values"], s=8, color=colors[row["model"]], alpha=0.5)
    ax.set(xscale="log", xlabel="training throughput (conformers/s)", ylabel="test force MAE (kcal/mol/Å)",
           title=title)
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # decades only: no crowded labels
    paths.append(_save_figure(fig, ax, out / f"{stem}_frontier.png"))
    return paths


def _save_figure(fig, ax, path: Path) -> Path:
    from .benchmarks.report import save_figure

    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def write_report(meta: dict, results: list[dict], results_dir: Path) -> Path:
    from .benchmarks import report

    stem = meta["stem"]
    payload = dict(summary=summary_rows(results), runs=results)
    return report.write(results_dir, stem, meta, payload, markdown(meta, results),
                        lambda: plots(results, results_dir, stem, meta["budget"]))


def compare(models: list[str], seeds: list[int], budget: Budget, common: dict, out: Path, results_dir: Path,
            tag: str, transfer: str | None = "default", reuse: list[Path] = ()) -> Path:
    """Train every (model, seed) run not finished yet, and write the report after each; returns
    the markdown report's path. ``transfer``: a dataset file, None (no transfer set), or "default"
    (the shipped set, when the training data are the embedded set). ``reuse``: earlier reports whose
    runs count as finished where their model, seed and settings match (:func:`reported_result`)."""
    from . import data as datasets
    from .benchmarks.timing import environment
    from .data.embedded import load_transfer
    from .training.distributed import resolve_device
    from .training.trainer import read_dataset

    unknown = [m for m in models if m not in CONTENDERS]
    if unknown or not models:
        raise ValueError(f"unknown models {unknown}; known: {', '.join(CONTENDERS)}")
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds must be distinct seeds, got {seeds}")
    if any(CONTENDERS[m].recipe.get("architecture") == "tensornet" for m in models):
        from .tensornet import _tensornet_class

        _tensornet_class()  # an ImportError that says how to install it, before hours of training
    # seed by seed, so that a comparison stopped part-way holds every model on its first seeds
    configs = {(m, s): run_config(CONTENDERS[m], s, budget, common, out) for s in seeds for m in models}
    results = {key: finished_result(config) for key, config in configs.items()}  # checked before training
    reported = reported_runs(reuse)

    base = next(iter(configs.values()))
    conformers = read_dataset(base)
    if transfer == "default":
        transfer_set = load_transfer() if base.data is None else None
    else:
        transfer_set = None if transfer is None else datasets.read(transfer)
    if transfer_set is not None:
        missing = sorted(set(transfer_set.species.tolist()) - set(conformers.species.tolist()))
        if missing:
            raise ValueError(f"the transfer set holds elements {missing} that the training data lack")
    device = resolve_device(base.device)
    meta = dict(environment(device), budget=budget.describe(), models=list(models), seeds=list(seeds),
                common=common, stem=f"compare_{tag}", complete=False,
                data=conformers.provenance.get("generator", base.data) if base.data is None else base.data,
                transfer=("none" if transfer_set is None else
                          f"{len(transfer_set)} conformers of {len(transfer_set.molecule.unique())} molecules, "
                          f"{int(transfer_set.n_atoms.min())} to {int(transfer_set.n_atoms.max())} atoms"))
    for report, machine in dict.fromkeys((r["reported_in"], r["reported_on"]) for r in reported):
        if machine != _machine(meta):
            raise ValueError(f"--reuse {report}: its runs ran on {machine}, this comparison runs on {_machine(meta)}")
    for (model, seed), config in configs.items():
        if results[model, seed] is None:
            results[model, seed] = reported_result(model, config, reported)
            if results[model, seed] is not None:
                print(f"{CONTENDERS[model].label}, seed {seed}: finished in {results[model, seed]['reported_in']}",
                      flush=True)
    for key, config in configs.items():
        if results[key] is None:
            print(f"training {CONTENDERS[key[0]].label}, seed {key[1]} ({budget.describe()}) in {config.out}",
                  flush=True)
            results[key] = train_one(CONTENDERS[key[0]], config, conformers, transfer_set)
            finished = [r for r in results.values() if r is not None]
            write_report(meta, finished, results_dir)
    meta["complete"] = True
    return write_report(meta, list(results.values()), results_dir)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_CONTENDERS), choices=list(CONTENDERS),
                        help="models to compare (default: %(default)s)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds (default: %(default)s)")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, help="wall-clock budget per run (default: 10)")
    budget.add_argument("--epochs", type=int, help="epochs per run, instead of a time budget")
    parser.add_argument("--set", nargs="+", action="extend", default=[], metavar="NAME=VALUE",
                        help="settings of hipnnts train for every model, over their recipes (e.g. batch_size=64, "
                             "data=ani.h5, device=cuda)")
    parser.add_argument("--transfer", default="default",
                        help="dataset of larger molecules to evaluate on, or 'none' (default: the shipped transfer "
                             "set when training on the embedded set)")
    parser.add_argument("--out", type=Path, default=Path("runs/compare"),
                        help="folder of the runs (default: %(default)s)")
    parser.add_argument("--results", type=Path, default=Path("bench/results"),
                        help="folder of the report (default: %(default)s)")
    parser.add_argument("--tag", default="cpu", help="report name: compare_<tag>.md (default: %(default)s)")
    parser.add_argument("--reuse", nargs="+", type=Path, default=[], metavar="REPORT",
                        help="earlier reports (compare_<tag>.json) whose runs count as finished where model, seed and "
                             "settings match: a comparison spread over machines or fresh checkouts")


def run_from_arguments(args: argparse.Namespace) -> Path:
    budget = Budget(epochs=args.epochs) if args.epochs is not None else Budget(minutes=args.minutes or 10.0)
    transfer = None if args.transfer.lower() == "none" else args.transfer
    return compare(args.models, args.seeds, budget, parse_settings(args.set), args.out, args.results, args.tag,
                   transfer, args.reuse)


__all__ = ["Budget", "CONTENDERS", "Contender", "compare", "parse_settings", "reported_result", "reported_runs",
           "run_config", "train_one"]
