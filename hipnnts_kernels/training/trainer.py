"""The energy + force trainer behind ``hipnnts train``.

One run: read the data, split it (by molecule by default), fit the per-species self energies on
the training split, train with Adam/AdamW, ReduceLROnPlateau, early stopping and
gradient clipping, then report the best model's errors on train / valid / test.

The hot loop does not synchronise with the device: batches and pair lists are gathered on the
device (:class:`~hipnnts_kernels.data.DeviceDataset`), the model's value checks are off (the data
were checked when read), metrics are summed on the device, and a non-finite loss is recorded there.
The host looks every ``SYNC_EVERY`` steps (progress bar, NaN stop, time limit), before every
checkpoint and at the end of every epoch.

Outputs in ``config.out``: ``last.pt`` (every ``checkpoint_every`` steps, every epoch, and on
Ctrl-C after the step in flight: see :class:`StopRequest`),
``best.pt`` (best validation loss), ``log.csv``/``log.json``, ``learning_curve.png`` and
``metrics.json``. ``resume=True`` continues from ``last.pt``; the batch order of every epoch is a
function of the seed and the epoch, so a resumed run repeats nothing and loses only the steps
since the last checkpoint.
"""
from __future__ import annotations

import json
import math
import signal
import sys
import threading
import time
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from .. import data as datasets
from ..checks import value_checks
from ..data.conformers import Conformers
from . import distributed
from .architectures import LEGACY_ARCHITECTURE, build_model
from .checkpoint import read_checkpoint, save_checkpoint
from .config import TrainConfig
from .objective import ErrorSums, loss_terms
from .report import plot_learning_curves, write_log

SYNC_EVERY = 20  #: steps between the host's looks at the device (progress, NaN, time limit)
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def make_optimizer(parameters: list[Tensor], kind: str = "adam", lr: float = 1e-3,
                   weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """Adam or AdamW ("adam", "adamw") over ``parameters``, torch's fused implementation where every
    parameter is a CPU or CUDA tensor: one kernel per step instead of about ten ops per tensor (on the
    CPU 0.6 instead of 3.1 ms per step for the 44 tensors of the paper-size HIP-NN; the same update)."""
    optimizer = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[kind]
    fused = all(p.device.type in ("cpu", "cuda") for p in parameters)
    return optimizer(parameters, lr=lr, weight_decay=weight_decay, fused=fused or None)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def read_dataset(config: TrainConfig) -> Conformers:
    """The configured dataset (the embedded GFN2-xTB set when ``config.data`` is None)."""
    if config.data is None:
        from ..data.embedded import load_embedded

        conformers = load_embedded()
    else:
        conformers = datasets.read(config.data, config.data_format, energy_unit=config.energy_unit,
                                   length_unit=config.length_unit, forces_convention=config.forces_convention)
    if config.max_conformers is not None and config.max_conformers < len(conformers):
        keep = torch.randperm(len(conformers), generator=torch.Generator().manual_seed(config.seed))
        conformers = conformers.subset(keep[:config.max_conformers].sort().values)
    return conformers


def split_conformers(conformers: Conformers, config: TrainConfig) -> tuple[list[Tensor], str]:
    """A run's train / valid / test conformer indices and what they were split by: molecules as
    configured, or conformers when the data hold fewer molecules than parts (one MD trajectory)."""
    by = config.split_by
    if by == "molecule" and len(conformers.molecule.unique()) < len(config.split):
        by = "conformer"
    return datasets.split(conformers, config.split, by=by, seed=config.seed), by


@torch.no_grad()
def evaluate(model: nn.Module, dataset: datasets.DeviceDataset, indices: Tensor, batch_size: int,
             process: distributed.Process | None = None) -> dict[str, float]:
    """Errors of ``model`` on the conformers ``indices`` (kcal/mol, kcal/mol/Å); under torchrun each
    process takes a share and the sums are reduced."""
    was_training = model.training
    model.eval()
    if process is not None and process.distributed:
        indices = indices[process.rank::process.world_size]
    sums = ErrorSums(dataset.device)
    with value_checks(False):
        for start in range(0, len(indices), batch_size):
            batch = dataset.batch(indices[start:start + batch_size])
            out = model(batch.species, batch.positions, batch.mol_index, batch.pair_first, batch.pair_second,
                        n_molecules=batch.n_molecules, pair_shift=batch.pair_shift, forces=batch.forces is not None)
            sums.add(out, batch)
    if process is not None:
        process.all_reduce(sums.values)
    model.train(was_training)
    return sums.result()


class StopRequest:
    """Ctrl-C (SIGINT) during training: the first one lets the current step finish, then the
    trainer saves ``last.pt`` and raises KeyboardInterrupt, so ``--resume`` loses nothing; a second
    one interrupts at once. Installed only in the main thread (signals go nowhere else)."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        sys.stderr.write("\nhipnnts: stopping after this step and saving last.pt (Ctrl-C again to stop at once)\n")


class Trainer:
    """A training run (see the module docstring).

    Args:
        config: the settings.
        conformers: the data; read from ``config`` when None.
        resume: continue the run in ``config.out`` from its ``last.pt``.
    """

    def __init__(self, config: TrainConfig, conformers: Conformers | None = None, resume: bool = False):
        self.config = config
        self.out = Path(config.out)
        self.process = distributed.start(config.device)
        self.dtype = DTYPES[config.dtype]
        state = self._previous_state(resume)
        conformers = read_dataset(config) if conformers is None else conformers
        self.provenance = conformers.provenance
        self.splits, self.split_by = split_conformers(conformers, config)
        if any(len(part) == 0 for part in self.splits):
            raise ValueError(f"split {config.split} of {len(conformers)} conformers leaves a part empty")
        if self.split_by != config.split_by and self.process.is_main:
            molecules = len(conformers.molecule.unique())
            _print(f"the data hold {molecules} molecule{'s' if molecules > 1 else ''}, fewer than the "
                   f"{len(config.split)} parts of the split: splitting by conformer instead (as --split-by "
                   "conformer), so the validation and test conformers come from the molecules it trains on")
        self.has_forces = conformers.forces is not None and config.force_weight > 0
        if state is None:
            torch.manual_seed(config.seed)
            species = sorted(set(conformers.species.tolist()))
            max_atoms = int(conformers.n_atoms.max()) if len(conformers) else 0
            self.model = build_model(config.architecture, config.model_kwargs(species, max_atoms))
            train = conformers.subset(self.splits[0])
            counts = self.model.species_counts(train.species, train.conformer_index, len(train))
            self.self_energies = self.model.fit_self_energies(counts, train.energy).tolist()
        else:
            self.model = build_model(state.get("architecture", LEGACY_ARCHITECTURE), state["model_hparams"])
            self.model.freeze_self_energies()
            self.self_energies = state["self_energies"]
        self.model.to(self.process.device, self.dtype)
        self.dataset = datasets.DeviceDataset(conformers, self.model.cutoff, self.process.device, self.dtype)
        self.parameters = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(self.parameters, config.optimizer, config.lr, config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(self.optimizer, factor=config.lr_factor,
                                                                    patience=config.lr_patience)
        self.net = self.model
        if self.process.distributed:
            device_ids = [self.process.device.index] if self.process.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=device_ids)
        self.progress = dict(epoch=0, step=0, batch_in_epoch=0, best_valid=math.inf, best_epoch=0,
                             epochs_since_best=0, seconds=0.0, eval_seconds=0.0, stopped=None)
        self.history: list[dict] = []
        self.stop = StopRequest()
        self.partial_sums: Tensor | None = None
        self.first_bad_step = torch.full((), -1, dtype=torch.int64, device=self.process.device)
        if state is not None:
            self._restore(state)

    # -- checkpoints --------------------------------------------------------------------------
    def _previous_state(self, resume: bool) -> dict | None:
        last = self.out / "last.pt"
        if not resume:
            if last.exists():
                raise FileExistsError(f"{self.out} already holds a run (last.pt); pass --resume to continue it, "
                                      "or choose another --out")
            return None
        state = read_checkpoint(last)
        if state["world_size"] != self.process.world_size:
            raise ValueError(f"{last} was written by {state['world_size']} processes; resume it with as many "
                             f"(now {self.process.world_size}): the batch shards depend on it")
        # older runs name no architecture and did not refit the self energies
        saved = {"architecture": LEGACY_ARCHITECTURE, "refit_self_energies": False, **state["config"]}
        saved = {k: v for k, v in saved.items() if k not in RESUMABLE}
        now = {k: v for k, v in self.config.to_dict().items() if k not in RESUMABLE}
        changed = sorted(k for k in now if _normal(now[k]) != _normal(saved.get(k)))
        if changed:
            raise ValueError(f"cannot resume {last}: settings differ from the saved run: "
                             + ", ".join(f"{k} {saved.get(k)!r} -> {now[k]!r}" for k in changed))
        return state

    def _restore(self, state: dict) -> None:
        self.model.load_state_dict(state["model_state"])
        self.optimizer.load_state_dict(state["optimizer_state"])
        self.scheduler.load_state_dict(state["scheduler_state"])
        self.progress.update(state["progress"])
        stopped, limit = self.progress["stopped"], self.config.time_limit
        if (stopped == "epochs" and self.progress["epoch"] < self.config.epochs) or (
                stopped == "time_limit" and (limit is None or self.progress["seconds"] < 60 * limit)):
            self.progress["stopped"] = None  # a longer budget continues the run; the same one only reports
        self.history = list(state["history"])
        if state["partial_sums"] is not None:
            self.partial_sums = state["partial_sums"][self.process.rank]

    def _state(self, sums: ErrorSums | None) -> dict:
        return dict(
            architecture=self.config.architecture, model_hparams=self.model.hparams,
            model_state=self.model.state_dict(),
            optimizer_state=self.optimizer.state_dict(), scheduler_state=self.scheduler.state_dict(),
            progress=dict(self.progress), history=self.history, config=self.config.to_dict(),
            partial_sums=None if sums is None else self.process.all_gather(sums.values).cpu(),
            self_energies=self.self_energies,
            world_size=self.process.world_size, data_provenance=json.dumps(self.provenance),
        )

    def _save(self, name: str, sums: ErrorSums | None) -> None:
        """Write a checkpoint (rank 0), only after checking that every step so far was finite."""
        self._check_finite()
        state = self._state(sums)  # every process takes part: the partial sums are gathered
        if self.process.is_main:
            save_checkpoint(state, self.out / name)

    def _check_finite(self) -> None:
        bad = self.first_bad_step.clone()
        bad = torch.where(bad < 0, torch.full_like(bad, 2 ** 62), bad)
        step = int(self.process.all_reduce(bad, distributed.dist.ReduceOp.MIN))
        if step < 2 ** 62:
            last = self.out / "last.pt"
            kept = f"the last good checkpoint {last} is kept" if last.exists() else "no checkpoint was written yet"
            raise TrainingDiverged(
                f"the training loss became NaN or infinite at step {step} (epoch {self.progress['epoch'] + 1}); "
                f"training stopped and {kept}. Try a smaller --lr, gradient clipping (--clip-grad-norm), "
                "float64 (--dtype float64), or check the data for outliers."
            )

    # -- the loop -----------------------------------------------------------------------------
    def epoch_batches(self, epoch: int) -> list[Tensor]:
        """This process's batches of training conformers in ``epoch``: a seeded shuffle, cut into
        equal shards for the processes, then into batches."""
        train = self.splits[0]
        order = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(
            self.config.seed * 1_000_003 + epoch))]
        world = self.process.world_size
        shard = order[:len(order) // world * world].view(-1, world)[:, self.process.rank]
        return list(torch.split(shard, self.config.batch_size))

    def _train_step(self, indices: Tensor, sums: ErrorSums) -> None:
        config = self.config
        batch = self.dataset.batch(indices)
        with value_checks(False):
            out = self.net(batch.species, batch.positions, batch.mol_index, batch.pair_first, batch.pair_second,
                           n_molecules=batch.n_molecules, pair_shift=batch.pair_shift, forces=self.has_forces)
            terms = loss_terms(self.model, out, batch, energy_weight=config.energy_weight,
                               force_weight=config.force_weight, hierarchicality_weight=config.hierarchicality_weight,
                               l2_weight=config.l2_weight)
        self.optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()  # through the forces' graph: the double backward of every op
        if config.clip_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.parameters, config.clip_grad_norm, foreach=True)
        self.optimizer.step()
        sums.add(out, batch, terms["loss"])
        bad = ~torch.isfinite(terms["loss"].detach()) & (self.first_bad_step < 0)
        self.first_bad_step = torch.where(bad, self.progress["step"], self.first_bad_step)

    def run(self) -> dict:
        """Train (or continue), then evaluate the best model; returns the final metrics."""
        config, progress = self.config, self.progress
        if self.process.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            if self.history:
                write_log(self.history, self.out)
        started = time.perf_counter() - progress["seconds"]
        try:
            with self.stop:
                while progress["stopped"] is None and progress["epoch"] < config.epochs:
                    self._run_epoch(started)
            if progress["stopped"] is None:
                progress["stopped"] = "epochs"
                self._save("last.pt", None)
            return self._finish()
        finally:
            distributed.stop(self.process)

    def _run_epoch(self, started: float) -> None:
        config, progress = self.config, self.progress
        epoch = progress["epoch"]
        batches = self.epoch_batches(epoch)
        sums = ErrorSums(self.process.device, self.partial_sums if progress["batch_in_epoch"] else None)
        self.partial_sums = None
        self.model.train()
        bar = _progress_bar(len(batches), progress["batch_in_epoch"], f"epoch {epoch + 1}/{config.epochs}",
                            config.progress and self.process.is_main)
        try:
            for k in range(progress["batch_in_epoch"], len(batches)):
                if config.lr_schedule == "cosine":
                    self._anneal(len(batches))
                self._train_step(batches[k], sums)
                progress["step"] += 1
                progress["batch_in_epoch"] = k + 1
                progress["seconds"] = time.perf_counter() - started
                bar.update()
                if progress["step"] % SYNC_EVERY == 0:
                    self._check_finite()
                    partial = sums.result()
                    bar.set_postfix_str(_postfix(partial))
                    if self._out_of_time():
                        progress["stopped"] = "time_limit"
                        self._save("last.pt", sums)
                        return
                if self._stop_requested():
                    self._save("last.pt", sums)
                    raise KeyboardInterrupt
                if progress["step"] % config.checkpoint_every == 0 and k + 1 < len(batches):
                    self._save("last.pt", sums)
        finally:
            bar.close()
        self.process.all_reduce(sums.values)
        # seconds: wall time of the run so far; train_seconds: of it, the time spent in training steps
        row = {"epoch": epoch + 1, "step": progress["step"], "lr": self.optimizer.param_groups[0]["lr"],
               "seconds": round(progress["seconds"], 2),
               "train_seconds": round(progress["seconds"] - progress["eval_seconds"], 2)}
        row.update({f"train_{k}": v for k, v in sums.result().items()})
        evaluation_started = time.perf_counter()
        if config.refit_self_energies:
            row["self_energy_shift"] = self._refit_self_energies()
        valid = evaluate(self.model, self.dataset, self.splits[1], config.eval_batch_size, self.process)
        row.update({f"valid_{k}": v for k, v in valid.items()})
        score = config.energy_weight * valid["energy_rmse"] ** 2 + (
            config.force_weight * valid["force_rmse"] ** 2 if "force_rmse" in valid else 0.0)
        row["valid_score"] = score
        test = evaluate(self.model, self.dataset, self.splits[2], config.eval_batch_size, self.process)
        row.update({f"test_{k}": v for k, v in test.items()})  # reported only; never used for decisions
        progress["eval_seconds"] += time.perf_counter() - evaluation_started
        progress["epoch"], progress["batch_in_epoch"] = epoch + 1, 0
        self.history.append(row)
        if score < progress["best_valid"]:
            progress.update(best_valid=score, best_epoch=epoch + 1, epochs_since_best=0)
            self._save("best.pt", None)
        else:
            progress["epochs_since_best"] += 1
        if config.lr_schedule == "plateau":
            self.scheduler.step(score)
        if progress["epochs_since_best"] >= config.early_stopping:
            progress["stopped"] = "early_stopping"
        elif self.optimizer.param_groups[0]["lr"] < config.min_lr:
            progress["stopped"] = "min_lr"
        elif self._out_of_time():
            progress["stopped"] = "time_limit"
        self._save("last.pt", None)
        if self.process.is_main:
            write_log(self.history, self.out)
            plot_learning_curves(self.history, self.out / "learning_curve.png")
            previous = self.history[-2]["seconds"] if len(self.history) > 1 else 0.0
            _print(f"epoch {epoch + 1:3d}  lr {row['lr']:.2e}  " + _summary("train", row) + "  "
                   + _summary("valid", row) + f"  took {row['seconds'] - previous:.0f} s, "
                   f"{row['seconds']:.0f} s in all")

    def _anneal(self, steps_per_epoch: int) -> None:
        """The cosine schedule: the learning rate for the fraction of the budget spent, the larger of
        steps / (epochs x steps per epoch) and seconds / time_limit."""
        config, progress = self.config, self.progress
        spent = progress["step"] / (config.epochs * steps_per_epoch)
        if config.time_limit is not None:
            spent = max(spent, progress["seconds"] / (60 * config.time_limit))
        lr = config.min_lr + (config.lr - config.min_lr) * 0.5 * (1 + math.cos(math.pi * min(spent, 1.0)))
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    @torch.no_grad()
    def _refit_self_energies(self) -> float:
        """Correct the self energies by least squares to the energy residuals of the training split
        (energy only, evaluation mode; under torchrun each process takes a share and the normal
        equations are summed). Returns the largest change, kcal/mol."""
        train = self.splits[0]
        if self.process.distributed:
            train = train[self.process.rank::self.process.world_size]
        n = len(self.model.species)
        normal = torch.zeros(n, n + 1, dtype=torch.float64, device=self.process.device)  # [A^T A | A^T r]
        was_training = self.model.training
        self.model.eval()
        batch_size = self.config.eval_batch_size
        with value_checks(False):
            for start in range(0, len(train), batch_size):
                batch = self.dataset.batch(train[start:start + batch_size])
                out = self.model(batch.species, batch.positions, batch.mol_index, batch.pair_first,
                                 batch.pair_second, n_molecules=batch.n_molecules, pair_shift=batch.pair_shift,
                                 forces=False)
                counts = self.model.species_counts(batch.species, batch.mol_index, batch.n_molecules)
                residual = (batch.energy - out.energy).double()
                normal += counts.t() @ torch.cat([counts, residual.unsqueeze(1)], dim=1)
        self.model.train(was_training)
        self.process.all_reduce(normal)
        normal = normal.cpu()
        shift = torch.linalg.pinv(normal[:, :n]) @ normal[:, n]
        e0 = torch.tensor(self.self_energies, dtype=torch.float64) + shift
        self.model.set_self_energies(e0)
        self.self_energies = e0.tolist()
        return float(shift.abs().max())

    def _stop_requested(self) -> bool:
        """Whether Ctrl-C asked to stop; under torchrun all processes agree, at the host's looks."""
        if not self.process.distributed:
            return self.stop.requested
        return self.progress["step"] % SYNC_EVERY == 0 and self.process.broadcast_flag(self.stop.requested)

    def _out_of_time(self) -> bool:
        limit = self.config.time_limit
        return self.process.broadcast_flag(limit is not None and self.progress["seconds"] > 60 * limit)

    def _finish(self) -> dict:
        """Evaluate the best model on every split; write ``metrics.json``; print the table."""
        best = self.out / "best.pt"
        if best.exists():
            self.model.load_state_dict(read_checkpoint(best, self.process.device)["model_state"])
        metrics = {name: evaluate(self.model, self.dataset, part, self.config.eval_batch_size, self.process)
                   for name, part in zip(("train", "valid", "test"), self.splits)}
        summary = dict(
            stopped=STOP_REASONS[self.progress["stopped"]].format(c=self.config), architecture=self.config.architecture,
            split_by=self.split_by,
            best_epoch=self.progress["best_epoch"], epochs=self.progress["epoch"],
            steps=self.progress["step"], train_seconds=round(self.progress["seconds"], 2),
            parameters=sum(p.numel() for p in self.model.parameters()),
            conformers={name: len(part) for name, part in zip(("train", "valid", "test"), self.splits)},
            device=str(self.process.device), processes=self.process.world_size, metrics=metrics,
        )
        if self.process.is_main:
            (self.out / "metrics.json").write_text(json.dumps(summary, indent=1))
            write_log(self.history, self.out, summary)
            _print(_final_table(summary))
        return summary


STOP_REASONS = {
    "epochs": "reached {c.epochs} epochs", "time_limit": "time limit of {c.time_limit} min",
    "early_stopping": "early stopping: no validation improvement in {c.early_stopping} epochs",
    "min_lr": "learning rate fell below min_lr={c.min_lr}",
}

#: Settings that may change when a run is resumed.
RESUMABLE = ("epochs", "time_limit", "progress", "device", "checkpoint_every", "eval_batch_size", "early_stopping",
             "min_lr")


def _normal(value):
    return list(value) if isinstance(value, tuple) else value


def _progress_bar(total: int, initial: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    # disable=None: tqdm shows the bar on a terminal only, so logs of redirected output stay clean
    return tqdm(total=total, initial=initial, desc=desc, disable=None if enabled else True, leave=False,
                unit="batch", dynamic_ncols=True)


def _print(text: str) -> None:
    """Print without breaking a progress bar."""
    from tqdm.auto import tqdm

    tqdm.write(text)


def _postfix(metrics: dict) -> str:
    text = f"loss {metrics['loss']:.3g}  E MAE {metrics['energy_mae']:.3g}"
    return text + (f"  F MAE {metrics['force_mae']:.3g}" if "force_mae" in metrics else "")


def _summary(split: str, row: dict) -> str:
    text = f"{split}: E MAE {row[f'{split}_energy_mae']:7.3f}"
    if f"{split}_force_mae" in row:
        text += f"  F MAE {row[f'{split}_force_mae']:7.3f}"
    return text


def _final_table(summary: dict) -> str:
    lines = [f"stopped: {summary['stopped']}; best epoch {summary['best_epoch']} of {summary['epochs']}, "
             f"{summary['train_seconds']:.0f} s of training on {summary['device']}; "
             f"{summary['parameters']:,} parameters",
             "errors of the best model (kcal/mol, kcal/mol/Å):",
             f"{'split':<6} {'conformers':>10} {'E MAE':>8} {'E RMSE':>8} {'E/atom MAE':>10} {'F MAE':>8} "
             f"{'F RMSE':>8} {'F MAE if F=0':>12}"]
    for name, m in summary["metrics"].items():
        force = (f"{m['force_mae']:8.3f} {m['force_rmse']:8.3f} {m['zero_force_mae']:12.3f}"
                 if "force_mae" in m else f"{'-':>8} {'-':>8} {'-':>12}")
        lines.append(f"{name:<6} {summary['conformers'][name]:>10} {m['energy_mae']:8.3f} {m['energy_rmse']:8.3f} "
                     f"{m['energy_per_atom_mae']:10.4f} {force}")
    return "\n".join(lines)
