"""hipnnts: train and evaluate HIP-NN / HIP-NN-TS potentials, and prepare datasets.

Units everywhere: kcal/mol, Å, kcal/mol/Å.

    hipnnts train                          # HIP-NN-TS l=2 on the embedded GFN2-xTB set (CPU: minutes)
    hipnnts train --data ani1x.h5 --forces-convention forces --n-features 128 --n-sensitivities 20 \\
        --n-atom-layers 3 --out runs/ani1x
    hipnnts train --out runs/ani1x --resume    # continue a stopped or killed run
    torchrun --nproc-per-node 4 -m hipnnts_kernels.cli train ...   # several GPUs (DDP)
    hipnnts eval runs/ani1x/best.pt        # errors on the run's test split
    hipnnts data inspect FILE | data convert IN OUT | data xtb OUT   (see hipnnts data --help)
    hipnnts bench kernels                  # every op x backend x size vs the roofline -> bench/results/
    hipnnts bench models                   # HIP-NN, HIP-NN-TS vs hippynn and TensorNet -> bench/results/
    hipnnts compare                        # accuracy vs speed of HIP-NN, HIP-NN-TS, TensorNet at equal time
    hipnnts bench traffic                  # memory-traffic model of the CUDA kernels, no GPU needed
    hipnnts bench profile                  # where the CPU time of a training step goes, by op and level
    hipnnts bench headroom                 # the step with free interaction kernels, against hippynn
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import typing
from pathlib import Path

from .training.config import SECTIONS, TrainConfig, read_config_file

SECTION_TITLES = {"data": "data", "model": "model (names as in the HIP-NN-TS paper)", "optimisation": "optimisation",
                  "run": "run"}


def _optional(convert):
    def parse(text: str):
        return None if text.lower() == "none" else convert(text)

    parse.__name__ = convert.__name__
    return parse


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per :class:`TrainConfig` field, defaulting to 'not given' so files and defaults apply."""
    hints = typing.get_type_hints(TrainConfig)
    groups = {s: parser.add_argument_group(SECTION_TITLES[s]) for s in SECTIONS}
    for f in dataclasses.fields(TrainConfig):
        meta, hint = f.metadata, hints[f.name]
        flag = "--" + f.name.replace("_", "-")
        kwargs: dict = dict(dest=f.name, default=argparse.SUPPRESS, help=f"{meta['help']} (default: {f.default!r})")
        args = typing.get_args(hint)
        base = next((a for a in args if a is not type(None)), hint) if args and type(None) in args else hint
        if base is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(hint) is tuple:
            kwargs.update(type=float, nargs=meta["nargs"], metavar=("TRAIN", "VALID", "TEST"))
        else:
            kwargs["type"] = _optional(base) if base is not hint else base
            if "choices" in meta:
                kwargs["choices"] = meta["choices"]
        groups[meta["section"]].add_argument(flag, **kwargs)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Defaults, overridden by the saved run (with --resume), the config file, then the flags."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    settings: dict = {}
    flags = {k: v for k, v in vars(args).items() if k in names}
    if args.resume:
        from .training.checkpoint import read_checkpoint

        out = Path(flags.get("out") or (args.config and read_config_file(args.config).get("out")) or TrainConfig.out)
        settings.update(read_checkpoint(out / "last.pt")["config"])
    if args.config:
        settings.update(read_config_file(args.config))
    settings.update(flags)
    if "split" in settings:
        settings["split"] = tuple(settings["split"])
    return TrainConfig(**settings)


def cmd_train(args: argparse.Namespace) -> int:
    from .training.trainer import Trainer

    config = config_from_args(args)
    if args.print_config:
        print(json.dumps(config.to_dict(), indent=1))
        return 0
    Trainer(config, resume=args.resume).run()
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from . import data as datasets
    from .training.checkpoint import load_model, read_checkpoint
    from .training.distributed import resolve_device
    from .training.trainer import evaluate, read_dataset, split_conformers

    state = read_checkpoint(args.checkpoint)
    device = resolve_device(args.device)
    model = load_model(args.checkpoint, device, backend=args.backend)
    dtype = next(model.parameters()).dtype
    saved = TrainConfig(**{**state["config"], "split": tuple(state["config"]["split"])})
    if args.data is None:
        conformers = read_dataset(saved)
        parts = dict(zip(("train", "valid", "test"), split_conformers(conformers, saved)[0]))
        split = args.split or "test"
    else:
        conformers = datasets.read(args.data, args.data_format, energy_unit=args.energy_unit,
                                   length_unit=args.length_unit, forces_convention=args.forces_convention)
        parts = {}
        split = args.split or "all"
        if split != "all":
            raise ValueError("--split train/valid/test refers to the run's own data; with --data use --split all")
    parts["all"] = torch.arange(len(conformers))
    missing = sorted(set(conformers.species.tolist()) - set(model.species))
    if missing:
        raise ValueError(f"the data hold elements {missing} that the model was not trained on {list(model.species)}")
    dataset = datasets.DeviceDataset(conformers, model.cutoff, device, dtype)
    metrics = evaluate(model, dataset, parts[split], args.batch_size)
    if args.json:
        print(json.dumps(dict(checkpoint=str(args.checkpoint), split=split, conformers=len(parts[split]), **metrics)))
    else:
        print(f"{args.checkpoint}: {split} split, {len(parts[split])} conformers (kcal/mol, kcal/mol/Å)")
        for key, value in metrics.items():
            print(f"  {key:<22} {value:10.4f}")
    return 0


def _add_read_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-format", default="auto", choices=("auto", "hipnnts", "ani", "xyz"))
    parser.add_argument("--energy-unit", help="energy unit of an ANI or XYZ file (hartree, ev, kcal/mol, kj/mol)")
    parser.add_argument("--length-unit", default="angstrom", choices=("angstrom", "bohr"))
    parser.add_argument("--forces-convention", choices=("forces", "gradient", "none"),
                        help="ANI files: forces arrays hold forces (-dE/dR) or gradients (+dE/dR, COMP6)")


def _read(args: argparse.Namespace, path: str):
    from . import data as datasets

    return datasets.read(path, args.data_format, energy_unit=args.energy_unit, length_unit=args.length_unit,
                         forces_convention=args.forces_convention)


def cmd_data_inspect(args: argparse.Namespace) -> int:
    import torch

    from . import data as datasets
    from .data.conformers import SYMBOLS
    from .data.formats import ani_holds_forces

    file_format = datasets.detect_format(args.file) if args.data_format == "auto" else args.data_format
    # a summary needs no force convention: without one, an ANI file's forces are left out and named
    unknown_forces = file_format == "ani" and args.forces_convention is None and ani_holds_forces(args.file)
    c = datasets.read(args.file, file_format, energy_unit=args.energy_unit, length_unit=args.length_unit,
                      forces_convention="none" if unknown_forces else args.forces_convention)
    n_atoms = c.n_atoms.double()
    elements = {SYMBOLS[int(z)]: int(n) for z, n in zip(*torch.unique(c.species, return_counts=True))}
    print(f"{args.file}: {len(c)} conformers of {len(c.molecule.unique())} molecules, {c.species.numel()} atoms")
    print(f"  atoms per conformer: min {int(n_atoms.min())}, mean {n_atoms.mean():.1f}, max {int(n_atoms.max())}")
    print(f"  elements (atoms): {elements}")
    print(f"  energy (kcal/mol): min {c.energy.min():.2f}, max {c.energy.max():.2f}")
    if c.forces is not None:
        print(f"  forces (kcal/mol/Å): mean |component| {c.forces.abs().mean():.3f}, "
              f"max |component| {c.forces.abs().max():.2f}")
    elif unknown_forces:
        print("  forces: present, but the file does not say whether they are forces (-dE/dR) or gradients "
              "(+dE/dR); pass --forces-convention forces or gradient to summarise them and to train on them")
    else:
        print("  forces: none")
    print(f"  provenance: {json.dumps(c.provenance)}")
    return 0


def cmd_data_convert(args: argparse.Namespace) -> int:
    from .data import save

    conformers = _read(args, args.input)
    save(conformers, args.output)
    print(f"wrote {len(conformers)} conformers to {args.output} (kcal/mol, Å, true forces)")
    return 0


#: Settings named in the package's errors by their Python names, which the CLI spells as flags.
_FLAG_NAMES = sorted({f.name for f in dataclasses.fields(TrainConfig) if "_" in f.name} | {"data_format"},
                     key=len, reverse=True)


def as_flags(message: str) -> str:
    """``message`` with the settings' Python names (``forces_convention``) as the CLI's flags
    (``--forces-convention``); names without an underscore are left alone, being ordinary words."""
    pattern = r"(?<![\w-])(" + "|".join(_FLAG_NAMES) + r")(?!\w)"
    return re.sub(pattern, lambda m: "--" + m.group(1).replace("_", "-"), message)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hipnnts", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="{train,eval,compare,data,bench}")

    train = commands.add_parser(
        "train", help="train HIP-NN / HIP-NN-TS on energies and forces",
        description="Train HIP-NN (--lmax 0) or HIP-NN-TS (--lmax 1/2) on energies and forces. Settings come from "
                    "the defaults, then --config FILE (TOML/YAML/JSON, flat or in sections data/model/optimisation/"
                    "run), then the flags. Outputs go to --out: last.pt, best.pt, log.csv, log.json, "
                    "learning_curve.png, metrics.json.")
    train.add_argument("--config", help="TOML, YAML or JSON file of settings (flag names with underscores)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    train.add_argument("--print-config", action="store_true", help="print the resolved settings and exit")
    _add_config_flags(train)
    train.set_defaults(func=cmd_train)

    evaluate = commands.add_parser("eval", help="errors of a checkpoint on its test split or on a dataset file")
    evaluate.add_argument("checkpoint", help="best.pt or last.pt of a run")
    evaluate.add_argument("--data", help="dataset file (default: the run's own data)")
    evaluate.add_argument("--split", choices=("train", "valid", "test", "all"),
                          help="which conformers (default: test for the run's data, all for --data)")
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--backend", help="kernel backend (default: the one it was trained with)")
    evaluate.add_argument("--batch-size", type=int, default=128)
    evaluate.add_argument("--json", action="store_true", help="print one JSON line")
    _add_read_flags(evaluate)
    evaluate.set_defaults(func=cmd_eval)

    from . import compare

    comparison = commands.add_parser(
        "compare", help="train several models for the same time (or epochs) over seeds; accuracy vs speed",
        description=compare.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    compare.add_arguments(comparison)
    comparison.set_defaults(func=lambda args: print(compare.run_from_arguments(args)) or 0)

    data = commands.add_parser("data", help="inspect, convert or generate datasets")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="{inspect,convert,xtb}")
    inspect = data_commands.add_parser("inspect", help="summary of a dataset file")
    inspect.add_argument("file")
    _add_read_flags(inspect)
    inspect.set_defaults(func=cmd_data_inspect)
    convert = data_commands.add_parser("convert", help="any supported file -> the compact format")
    convert.add_argument("input")
    convert.add_argument("output")
    _add_read_flags(convert)
    convert.set_defaults(func=cmd_data_convert)
    from .data import xtb

    generate = data_commands.add_parser("xtb", help="generate a GFN2-xTB dataset (needs the [xtb] extra)",
                                        description=xtb.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    xtb.add_arguments(generate)
    generate.set_defaults(func=lambda args: xtb.run(args) or 0)

    from .benchmarks import headroom, kernels, models, profile, traffic

    bench = commands.add_parser("bench", help="kernel microbenchmarks and model comparisons (JSON, markdown, PNG)")
    bench_commands = bench.add_subparsers(dest="bench_command", required=True,
                                          metavar="{kernels,models,traffic,profile,headroom}")
    for name, module, text in (("kernels", kernels, "every op x backend x size preset against the roofline"),
                               ("models", models, "HIP-NN and HIP-NN-TS against hippynn and TensorNet"),
                               ("traffic", traffic, "memory-traffic MODEL of the CUDA kernels (emulator, no GPU)"),
                               ("profile", profile, "where the CPU time of a training step goes, by op and level"),
                               ("headroom", headroom, "the step with free interaction kernels: what any kernel "
                                                      "speedup can give")):
        command = bench_commands.add_parser(name, help=text, description=module.__doc__,
                                            formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(command)
        command.set_defaults(func=lambda args, module=module: print(module.run_from_arguments(args)) or 0)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .training.trainer import TrainingDiverged

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except TrainingDiverged as err:
        print(f"hipnnts: {err}", file=sys.stderr)
        return 3
    except (ValueError, FileNotFoundError, FileExistsError, ImportError) as err:
        print(f"hipnnts: error: {as_flags(str(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        resumable = hasattr(args, "resume")  # hipnnts train; the bench reports keep what they measured
        print("hipnnts: interrupted" + ("; continue with --resume" if resumable else ""), file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
