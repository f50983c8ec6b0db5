"""The trainer: losses and metrics, learning, reproducibility, checkpoints and resume (also after
SIGKILL), the NaN stop, config files and flags, and DDP through torchrun with gloo."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hipnnts_kernels.cli import build_parser, config_from_args
from hipnnts_kernels.data import save
from hipnnts_kernels.synthetic import toy_conformers
from hipnnts_kernels.training import TrainConfig, Trainer, TrainingDiverged, load_model, read_checkpoint
from hipnnts_kernels.training import trainer as trainer_module

SMALL = dict(n_features=8, n_sensitivities=4, n_interaction_layers=1, n_atom_layers=1, batch_size=4,
             split_by="conformer", progress=False, device="cpu")


@pytest.fixture(scope="module")
def toy():
    return toy_conformers(12, 5, seed=3)


@pytest.fixture(scope="module")
def toy_file(tmp_path_factory, toy):
    path = tmp_path_factory.mktemp("data") / "toy.h5"
    save(toy, path)
    return path


def _weights(out: Path) -> torch.Tensor:
    """The weights training ended with (last.pt; the trainer's model holds best.pt's at the end)."""
    return torch.cat([v.flatten() for v in read_checkpoint(out / "last.pt")["model_state"].values()])


def _rows(out: Path) -> list[dict]:
    return json.loads((out / "log.json").read_text())["epochs"]


def test_training_learns_and_writes_its_outputs(toy, tmp_path):
    config = TrainConfig(out=str(tmp_path), epochs=8, lr=5e-3, lr_schedule="plateau", **SMALL)
    summary = Trainer(config, toy).run()
    for name in ("last.pt", "best.pt", "log.csv", "log.json", "learning_curve.png", "metrics.json"):
        assert (tmp_path / name).is_file(), name
    rows = _rows(tmp_path)
    assert [r["epoch"] for r in rows] == list(range(1, 9))
    assert rows[-1]["valid_force_mae"] < 0.7 * rows[0]["valid_force_mae"]
    test = summary["metrics"]["test"]
    assert test["force_mae"] < test["zero_force_mae"]
    assert summary["conformers"] == {"train": 48, "valid": 6, "test": 6}
    # the reported test errors are those of best.pt, evaluated afresh
    model = load_model(tmp_path / "best.pt")
    assert model.energy_heads[0].weight.requires_grad is False
    dataset = trainer_module.datasets.DeviceDataset(toy, model.cutoff)
    test_split = trainer_module.datasets.split(toy, config.split, by="conformer", seed=0)[2]
    again = trainer_module.evaluate(model, dataset, test_split, 5)
    assert again["force_mae"] == pytest.approx(test["force_mae"], rel=1e-5)


def test_self_energies_fitted_on_the_training_split(toy, tmp_path):
    trainer = Trainer(TrainConfig(out=str(tmp_path), epochs=1, **SMALL), toy)
    train = toy.subset(trainer.splits[0])
    counts = trainer.model.species_counts(train.species, train.conformer_index, len(train))
    residual = train.energy - counts @ torch.tensor(trainer.self_energies, dtype=torch.float64)
    # least squares: the residual is orthogonal to every species count column
    assert (counts.t() @ residual).abs().max() < 1e-6 * train.energy.abs().max()
    assert not trainer.model.energy_heads[0].weight.requires_grad


@torch.no_grad()
def _species_offset(trainer: Trainer) -> torch.Tensor:
    """counts^T (E - E_model) over the training split: zero when no per-species energy offset is left."""
    train = trainer.splits[0]
    batch = trainer.dataset.batch(train)
    out = trainer.model(batch.species, batch.positions, batch.mol_index, batch.pair_first, batch.pair_second,
                        n_molecules=batch.n_molecules, forces=False)
    counts = trainer.model.species_counts(batch.species, batch.mol_index, batch.n_molecules)
    return counts.t() @ (batch.energy - out.energy).double()


@pytest.mark.parametrize("architecture", ["hipnnts", "tensornet"])
def test_the_self_energies_are_refitted_after_every_epoch(toy, tmp_path, architecture):
    """After each epoch the self energies absorb the per-species energy offset of the training
    split (least squares: the residual is orthogonal to every species count); without the refit an
    offset is left, so the test can fail."""
    if architecture == "tensornet":
        pytest.importorskip("torchmdnet")
    settings = dict(SMALL, dtype="float64", epochs=2, lr=1e-2, architecture=architecture)
    trainer = Trainer(TrainConfig(out=str(tmp_path / "refit"), **settings), toy)
    trainer.run()
    assert _species_offset(trainer).abs().max() < 1e-6  # kcal/mol x atoms, summed over 48 conformers
    assert all(row["self_energy_shift"] > 0 for row in _rows(tmp_path / "refit"))
    saved = read_checkpoint(tmp_path / "refit" / "best.pt")["self_energies"]
    assert saved == trainer.self_energies
    plain = Trainer(TrainConfig(out=str(tmp_path / "plain"), refit_self_energies=False, **settings), toy)
    plain.run()
    assert _species_offset(plain).abs().max() > 0.1
    assert "self_energy_shift" not in _rows(tmp_path / "plain")[0]


def test_the_cosine_schedule_anneals_over_the_epochs(toy, tmp_path):
    config = TrainConfig(out=str(tmp_path), epochs=3, lr=1e-2, min_lr=1e-4, lr_schedule="cosine", **SMALL)
    Trainer(config, toy).run()
    lrs = [row["lr"] for row in _rows(tmp_path)]
    steps = len(Trainer(TrainConfig(out=str(tmp_path / "count"), **SMALL), toy).epoch_batches(0))
    # a row holds the lr of its epoch's last step, k * steps - 1 steps into the 3 * steps of the budget
    expected = [1e-4 + (1e-2 - 1e-4) * 0.5 * (1 + math.cos(math.pi * (k * steps - 1) / (3 * steps)))
                for k in (1, 2, 3)]
    assert lrs == pytest.approx(expected)


def test_same_seed_same_run_and_resume_repeats_nothing(toy, tmp_path):
    Trainer(TrainConfig(out=str(tmp_path / "full"), epochs=3, **SMALL), toy).run()
    Trainer(TrainConfig(out=str(tmp_path / "again"), epochs=3, **SMALL), toy).run()
    assert torch.equal(_weights(tmp_path / "full"), _weights(tmp_path / "again"))
    # stop after one epoch, then resume to three: identical weights and log (the plateau schedule;
    # a cosine schedule depends on the budget, which this raises; the Ctrl-C test resumes a cosine run)
    plateau = dict(SMALL, lr_schedule="plateau")
    Trainer(TrainConfig(out=str(tmp_path / "plateau"), epochs=3, **plateau), toy).run()
    part = tmp_path / "part"
    Trainer(TrainConfig(out=str(part), epochs=1, **plateau), toy).run()
    Trainer(TrainConfig(out=str(part), epochs=3, **plateau), toy, resume=True).run()
    assert torch.equal(_weights(part), _weights(tmp_path / "plateau"))
    drop = ("seconds", "train_seconds")
    strip = lambda rows: [{k: v for k, v in r.items() if k not in drop} for r in rows]  # noqa: E731
    assert strip(_rows(part)) == strip(_rows(tmp_path / "plateau"))
    Trainer(TrainConfig(out=str(tmp_path / "other"), epochs=3, seed=1, **SMALL), toy).run()
    assert not torch.equal(_weights(tmp_path / "other"), _weights(tmp_path / "full"))


def test_time_limit_stops_cleanly_and_a_resume_extends_it(toy, tmp_path):
    summary = Trainer(TrainConfig(out=str(tmp_path), epochs=3, time_limit=1e-9, **SMALL), toy).run()
    assert summary["stopped"].startswith("time limit") and summary["epochs"] == 1
    summary = Trainer(TrainConfig(out=str(tmp_path), epochs=3, **SMALL), toy, resume=True).run()
    assert summary["stopped"] == "reached 3 epochs"
    assert [r["epoch"] for r in _rows(tmp_path)] == [1, 2, 3]
    # the same budget again (a finished run resumed): it reports and trains no further
    summary = Trainer(TrainConfig(out=str(tmp_path), epochs=3, **SMALL), toy, resume=True).run()
    assert summary["epochs"] == 3 and [r["epoch"] for r in _rows(tmp_path)] == [1, 2, 3]
    used_up = tmp_path / "used_up"
    Trainer(TrainConfig(out=str(used_up), epochs=3, time_limit=1e-9, **SMALL), toy).run()
    summary = Trainer(TrainConfig(out=str(used_up), epochs=3, time_limit=1e-9, **SMALL), toy, resume=True).run()
    assert summary["stopped"].startswith("time limit") and summary["epochs"] == 1


def test_early_stopping(toy, tmp_path):
    """lr = 0 (and no self-energy refit) never improves on the first epoch, so the run stops after
    early_stopping more."""
    summary = Trainer(TrainConfig(out=str(tmp_path), epochs=10, lr=1e-30, early_stopping=2, min_lr=0.0,
                                  refit_self_energies=False, **SMALL), toy).run()
    assert summary["stopped"].startswith("early stopping") and summary["epochs"] == 3
    assert summary["best_epoch"] == 1


def test_an_existing_run_needs_resume_and_the_same_settings(toy, tmp_path):
    Trainer(TrainConfig(out=str(tmp_path), epochs=1, **SMALL), toy).run()
    with pytest.raises(FileExistsError, match="--resume"):
        Trainer(TrainConfig(out=str(tmp_path), epochs=1, **SMALL), toy)
    with pytest.raises(ValueError, match="lr 0.004 -> 0.1"):
        Trainer(TrainConfig(out=str(tmp_path), epochs=2, lr=0.1, **SMALL), toy, resume=True)
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        Trainer(TrainConfig(out=str(tmp_path / "nothing"), **SMALL), toy, resume=True)


def test_checkpoints_without_an_architecture_are_hipnnts(toy, tmp_path):
    """Runs written before the architecture setting existed load and resume as HipnnTS."""
    from hipnnts_kernels import HipnnTS
    from hipnnts_kernels.training import save_checkpoint

    Trainer(TrainConfig(out=str(tmp_path), epochs=1, **SMALL), toy).run()
    for name in ("last.pt", "best.pt"):
        state = read_checkpoint(tmp_path / name)
        assert state.pop("architecture") == "hipnnts"
        assert state["config"].pop("architecture") == "hipnnts"
        state.pop("format"), state.pop("version")
        save_checkpoint(state, tmp_path / name)
    model = load_model(tmp_path / "best.pt")
    assert isinstance(model, HipnnTS) and not model.energy_heads[0].weight.requires_grad
    trainer = Trainer(TrainConfig(out=str(tmp_path), epochs=2, **SMALL), toy, resume=True)
    assert isinstance(trainer.model, HipnnTS) and not trainer.model.energy_heads[0].weight.requires_grad
    assert trainer.run()["epochs"] == 2
    with pytest.raises(ValueError, match="architecture 'hipnnts' -> 'tensornet'"):
        Trainer(TrainConfig(out=str(tmp_path), epochs=3, **{**SMALL, "architecture": "tensornet"}), toy, resume=True)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(toy, tmp_path, monkeypatch):
    real, calls = trainer_module.loss_terms, []

    def poisoned(*args, **kwargs):
        terms = real(*args, **kwargs)
        calls.append(1)
        if len(calls) > 6:  # steps 0..5 are fine, step 6 is NaN
            terms["loss"] = terms["loss"] * float("nan")
        return terms

    monkeypatch.setattr(trainer_module, "loss_terms", poisoned)
    config = TrainConfig(out=str(tmp_path), epochs=5, checkpoint_every=4, **SMALL)
    with pytest.raises(TrainingDiverged, match="at step 6 .*last good checkpoint"):
        Trainer(config, toy).run()
    state = read_checkpoint(tmp_path / "last.pt")
    assert state["progress"]["step"] == 4
    assert all(torch.isfinite(v).all() for v in state["model_state"].values())


def _train_cli(args: list[str], **kwargs) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "hipnnts_kernels.cli", "train", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def _cli_args(data: Path, out: Path, epochs: int) -> list[str]:
    return ["--data", str(data), "--out", str(out), "--epochs", str(epochs), "--n-features", "8",
            "--n-sensitivities", "4", "--n-interaction-layers", "1", "--n-atom-layers", "1", "--batch-size", "4",
            "--split-by", "conformer", "--checkpoint-every", "5", "--device", "cpu", "--no-progress"]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume(toy_file, tmp_path):
    """Kill the run right after a mid-epoch checkpoint; --resume completes it and the log has every
    epoch once, with the same weights as an uninterrupted run."""
    epochs = 4
    reference = _train_cli(_cli_args(toy_file, tmp_path / "ref", epochs))
    killed = _train_cli(_cli_args(toy_file, tmp_path / "run", epochs))
    last, deadline = tmp_path / "run" / "last.pt", time.monotonic() + 120
    while time.monotonic() < deadline:
        if last.exists():
            try:
                progress = read_checkpoint(last)["progress"]
            except (ValueError, FileNotFoundError):
                continue
            if progress["epoch"] >= 1 and progress["batch_in_epoch"] > 0:
                break
        time.sleep(0.02)
    else:
        pytest.fail("no mid-epoch checkpoint appeared")
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL
    at_kill = read_checkpoint(last)["progress"]
    assert at_kill["epoch"] < epochs
    resumed = _train_cli(["--out", str(tmp_path / "run"), "--resume"])
    output = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, output
    assert reference.communicate(timeout=300)[0] and reference.returncode == 0
    assert [r["epoch"] for r in _rows(tmp_path / "run")] == list(range(1, epochs + 1))
    ref_state, run_state = (read_checkpoint(tmp_path / d / "last.pt") for d in ("ref", "run"))
    for name, value in ref_state["model_state"].items():
        assert torch.equal(value, run_state["model_state"][name]), name
    assert [r["step"] for r in _rows(tmp_path / "run")] == [r["step"] for r in _rows(tmp_path / "ref")]
    assert "test" in output and "F MAE" in output


@pytest.mark.slow
def test_ddp_two_ranks_disjoint_data_identical_weights(toy_file, tmp_path):
    worker = Path(__file__).with_name("ddp_worker.py")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                             "--standalone", str(worker), str(toy_file), str(tmp_path)],
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world_size"] == 2 for r in ranks)
    train = set(ranks[0]["train"])
    for epoch in range(2):
        a, b = (set(r["seen"][epoch]) for r in ranks)
        assert a and b and not a & b, "ranks must see disjoint data"
        assert a | b <= train and len(a | b) >= len(train) - 1
    assert ranks[0]["weights"] == ranks[1]["weights"], "DDP must keep the replicas identical"
    assert ranks[0]["test"] == ranks[1]["test"]
    rows = _rows(tmp_path)
    assert [r["epoch"] for r in rows] == [1, 2] and math.isfinite(rows[-1]["valid_force_mae"])


# -- settings -----------------------------------------------------------------------------------
def test_config_file_then_flags(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('[model]\nlmax = 1\nn_features = 32\n[optimisation]\nlr = 0.01\n[run]\nseed = 7\n')
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("lmax: 0\nbatch_size: 8\nsplit: [0.7, 0.2, 0.1]\n")
    parser = build_parser()
    config = config_from_args(parser.parse_args(["train", "--config", str(toml), "--lr", "0.05"]))
    assert (config.lmax, config.n_features, config.lr, config.seed) == (1, 32, 0.05, 7)
    config = config_from_args(parser.parse_args(["train", "--config", str(yaml_file), "--split", "0.6", "0.2", "0.2"]))
    assert (config.lmax, config.batch_size, config.split) == (0, 8, (0.6, 0.2, 0.2))
    assert config_from_args(parser.parse_args(["train", "--clip-grad-norm", "none"])).clip_grad_norm is None
    bad = tmp_path / "bad.toml"
    bad.write_text("n_feature = 3\n")
    with pytest.raises(ValueError, match="unknown settings \\['n_feature'\\]"):
        config_from_args(parser.parse_args(["train", "--config", str(bad)]))


@pytest.mark.parametrize("kwargs, message", [
    (dict(lmax=3), "lmax must be one of"), (dict(batch_size=0), "batch_size must be positive"),
    (dict(lr_factor=1.5), "lr_factor"), (dict(forces_convention="grad"), "forces_convention"),
])
def test_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


def test_every_setting_has_a_flag():
    help_text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    for name in TrainConfig.__dataclass_fields__:
        assert "--" + name.replace("_", "-") in help_text, name


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    from hipnnts_kernels.atomic import atomic_write

    target = tmp_path / "last.pt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]
    with atomic_write(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and list(tmp_path.iterdir()) == [target]


def test_ctrl_c_saves_the_step_in_flight_and_resume_repeats_nothing(toy, tmp_path, monkeypatch):
    """The first SIGINT lets the current step finish, saves last.pt mid-epoch and stops with
    KeyboardInterrupt; --resume then ends with the weights of an uninterrupted run."""
    config = dict(epochs=3, checkpoint_every=1000, **SMALL)  # no periodic checkpoint inside an epoch
    handler = signal.getsignal(signal.SIGINT)
    Trainer(TrainConfig(out=str(tmp_path / "ref"), **config), toy).run()
    real_step = Trainer._train_step

    def interrupted(self, indices, sums):
        real_step(self, indices, sums)
        if self.progress["step"] == 17:  # the 6th batch of the 2nd epoch (12 per epoch): mid-epoch
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(Trainer, "_train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        Trainer(TrainConfig(out=str(tmp_path / "run"), **config), toy).run()
    progress = read_checkpoint(tmp_path / "run" / "last.pt")["progress"]
    assert (progress["step"], progress["epoch"], progress["batch_in_epoch"]) == (18, 1, 6)
    monkeypatch.setattr(Trainer, "_train_step", real_step)
    Trainer(TrainConfig(out=str(tmp_path / "run"), **config), toy, resume=True).run()
    assert torch.equal(_weights(tmp_path / "run"), _weights(tmp_path / "ref"))
    assert [r["step"] for r in _rows(tmp_path / "run")] == [r["step"] for r in _rows(tmp_path / "ref")]
    assert signal.getsignal(signal.SIGINT) is handler  # the trainer's own handler is gone again


def test_the_learning_curve_shows_one_epoch_the_baseline_and_the_best_epoch():
    from hipnnts_kernels.training.report import learning_curve_figure

    row = dict(epoch=1, train_energy_mae=4.0, valid_energy_mae=5.0, train_force_mae=12.0, valid_force_mae=14.0,
               valid_zero_force_mae=25.0, valid_score=3.0)
    figure = learning_curve_figure([row, dict(row, epoch=2, valid_score=2.0, valid_force_mae=13.0)])
    energy, force = figure.axes
    assert all(line.get_marker() not in (None, "None", "") for line in energy.get_lines()[:2])
    labels = [t.get_text() for t in force.get_legend().get_texts()]
    assert labels == ["train", "valid", "valid, zero forces", "best epoch (2)"]
    assert all(float(t) == int(float(t)) for t in force.get_xticks())  # whole epochs
    figure.canvas.draw()
    ticks = [t.get_text() for t in force.get_yticklabels() if t.get_text()]
    assert "20" in ticks and "10" in ticks  # labelled ticks above 10 on the log axis
    one_epoch = learning_curve_figure([row]).axes[1]
    assert [float(t) for t in one_epoch.get_xticks() if 0.5 <= t <= 1.5] == [1.0]


@pytest.mark.parametrize("kind", ["adam", "adamw"])
def test_the_optimizer_is_torchs_fused_one_with_the_unfused_update(kind):
    torch.manual_seed(0)
    weights = [torch.randn(5, 3, dtype=torch.float64), torch.randn(7, dtype=torch.float64)]
    runs = []
    for fused in (True, False):
        params = [torch.nn.Parameter(w.clone()) for w in weights]
        optimizer = trainer_module.make_optimizer(params, kind, lr=1e-2, weight_decay=0.1)
        if not fused:  # the reference: torch's for-loop implementation
            optimizer = type(optimizer)(params, lr=1e-2, weight_decay=0.1, foreach=False)
        assert optimizer.defaults["fused"] is (True if fused else None)
        for step in range(5):
            for p in params:
                p.grad = torch.sin(p.detach() * (step + 1))
            optimizer.step()
        runs.append(params)
    for fused, unfused, start in zip(*runs, weights):
        torch.testing.assert_close(fused, unfused, rtol=1e-12, atol=1e-12)
        assert not torch.equal(fused, start)
