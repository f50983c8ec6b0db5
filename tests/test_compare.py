"""``hipnnts compare``: equal budgets over seeds, the transfer set, the report, and a comparison that
is spread over several sittings (finished runs skipped, interrupted ones continued)."""
from __future__ import annotations

import json

import pytest

from hipnnts_kernels import compare
from hipnnts_kernels.cli import main
from hipnnts_kernels.data import save
from hipnnts_kernels.synthetic import toy_conformers

SMALL = ["n_features=8", "n_sensitivities=4", "n_interaction_layers=1", "n_atom_layers=1", "batch_size=8",
         "device=cpu", "eval_batch_size=16"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    save(toy_conformers(12, 3, seed=5), folder / "toy.h5")
    save(toy_conformers(3, 2, seed=9, max_atoms=12), folder / "larger.h5")
    return folder


def _argv(files, tmp_path, *extra: str, budget: tuple[str, str] = ("--epochs", "2")) -> list[str]:
    return ["compare", "--models", "hipnn", "hipnnts-l2", "--seeds", "0", "1", *budget,
            "--set", f"data={files / 'toy.h5'}", *SMALL, "--transfer", str(files / "larger.h5"),
            "--out", str(tmp_path / "runs"), "--results", str(tmp_path / "results"), "--tag", "toy", *extra]


def test_compare_trains_every_model_and_seed_and_writes_the_report(files, tmp_path, capsys):
    assert main(_argv(files, tmp_path)) == 0
    results = tmp_path / "results"
    for name in ("compare_toy.md", "compare_toy.json", "compare_toy_time.png", "compare_toy_frontier.png"):
        assert (results / name).is_file(), name
    report = json.loads((results / "compare_toy.json").read_text())
    assert report["meta"]["complete"] and report["meta"]["budget"] == "2 epochs per run"
    runs = report["runs"]
    assert sorted((r["model"], r["seed"]) for r in runs) == [("hipnn", 0), ("hipnn", 1), ("hipnnts-l2", 0),
                                                             ("hipnnts-l2", 1)]
    for run in runs:
        assert run["epochs"] == 2 and len(run["curve"]) == 2
        assert run["train_conformers_per_s"] > 0 and run["inference_us_per_atom"] > 0
        assert run["test"]["force_mae"] > 0 and run["transfer"]["force_mae"] > 0
        assert 0 < run["curve"][0]["train_seconds"] <= run["curve"][0]["seconds"]
    # the models of one seed share the split; the seeds do not
    by = {(r["model"], r["seed"]): r for r in runs}
    assert by["hipnn", 0]["test"]["zero_force_mae"] == by["hipnnts-l2", 0]["test"]["zero_force_mae"]
    assert by["hipnn", 0]["test"]["zero_force_mae"] != by["hipnn", 1]["test"]["zero_force_mae"]
    # one summary row per model, with the spread over the two seeds
    summary = {row["model"]: row for row in report["summary"]}
    force = summary["hipnnts-l2"]["test_force_mae"]
    assert force["values"] == [by["hipnnts-l2", s]["test"]["force_mae"] for s in (0, 1)] and force["std"] > 0
    text = (results / "compare_toy.md").read_text()
    assert "| HIP-NN-TS l=2 |" in text and " ± " in text and "Not finished yet" not in text


def test_a_second_sitting_skips_finished_runs_and_continues_interrupted_ones(files, tmp_path, monkeypatch):
    assert main(_argv(files, tmp_path, "--models", "hipnn")) == 0
    finished = tmp_path / "runs" / "hipnn"
    before = {s: (finished / f"seed{s}" / "result.json").read_text() for s in (0, 1)}
    # seed 1 "interrupted" after its training: no result.json, its last.pt says it is done
    (finished / "seed1" / "result.json").unlink()
    trained = []
    real = compare.train_one
    monkeypatch.setattr(compare, "train_one", lambda *a: trained.append(a[1].seed) or real(*a))
    assert main(_argv(files, tmp_path, "--models", "hipnn")) == 0
    assert trained == [1]
    assert (finished / "seed0" / "result.json").read_text() == before[0]
    again = json.loads((finished / "seed1" / "result.json").read_text())
    assert again["epochs"] == 2 and again["test"] == json.loads(before[1])["test"]  # no further training


def test_a_finished_run_with_other_settings_is_an_error_not_a_silent_reuse(files, tmp_path, capsys):
    assert main(_argv(files, tmp_path, "--models", "hipnn", "--seeds", "0")) == 0
    capsys.readouterr()
    assert main(_argv(files, tmp_path, "--models", "hipnn", "--seeds", "0", "--set", "lr=0.01")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "seed0 holds a finished run with other settings (lr)" in err
    # a run saved before the package gained a setting holds it at its default: still the same run
    path = tmp_path / "runs" / "hipnn" / "seed0" / "result.json"
    saved = json.loads(path.read_text())
    del saved["config"]["etn_degree"]
    path.write_text(json.dumps(saved))
    assert compare.finished_result(compare.run_config(compare.CONTENDERS["hipnn"], 0, compare.Budget(epochs=2),
                                                      compare.parse_settings([f"data={files / 'toy.h5'}", *SMALL]),
                                                      tmp_path / "runs"))["seed"] == 0


def test_an_earlier_report_carries_finished_runs_to_a_fresh_checkout(files, tmp_path, monkeypatch, capsys):
    """--reuse: the runs of a committed report count as finished where model, seed and settings match
    (the run folders are gone); a run with other settings is trained again."""
    assert main(_argv(files, tmp_path, "--models", "hipnn")) == 0
    earlier = tmp_path / "earlier.json"
    (tmp_path / "results" / "compare_toy.json").rename(earlier)
    fresh = tmp_path / "fresh"
    trained = []
    real = compare.train_one
    monkeypatch.setattr(compare, "train_one", lambda *a: trained.append((a[0].name, a[1].seed)) or real(*a))
    assert main(_argv(files, fresh, "--reuse", str(earlier))) == 0
    assert trained == [("hipnnts-l2", 0), ("hipnnts-l2", 1)]  # HIP-NN's two seeds came from the report
    assert "HIP-NN, seed 1: finished in" in capsys.readouterr().out

    def runs_of(path):
        return {(r["model"], r["seed"]): r for r in json.loads(path.read_text())["runs"]}

    runs, old = runs_of(fresh / "results" / "compare_toy.json"), runs_of(earlier)
    assert runs["hipnn", 1]["test"] == old["hipnn", 1]["test"] and runs["hipnn", 1]["reported_in"] == str(earlier)
    trained.clear()
    assert main(_argv(files, tmp_path / "other", "--models", "hipnn", "--seeds", "0", "--set", "lr=0.01",
                      "--reuse", str(earlier))) == 0
    assert trained == [("hipnn", 0)]
    # runs timed on another machine are not this machine's runs
    report = json.loads(earlier.read_text())
    report["meta"]["device"] = "NVIDIA H200"
    earlier.write_text(json.dumps(report))
    capsys.readouterr()
    assert main(_argv(files, tmp_path / "gpu", "--models", "hipnn", "--reuse", str(earlier))) == 2
    assert "its runs ran on NVIDIA H200 with" in capsys.readouterr().err


@pytest.mark.parametrize("content", ["not json", '{"meta": {}}', '{"meta": {"device": "cpu", "threads": 2}, '
                                     '"runs": [{"model": "hipnn", "config": 3}]}'])
def test_a_file_that_is_not_a_report_cannot_be_reused(files, tmp_path, capsys, content):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    assert main(_argv(files, tmp_path, "--reuse", str(bad))) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--reuse {bad}: not a report of hipnnts compare" in err


def test_a_time_budget_ends_the_runs_not_early_stopping(files, tmp_path):
    """A tiny budget stops each run at its first look at the clock (the end of epoch 1 here)."""
    config = compare.run_config(compare.CONTENDERS["hipnn"], 0, compare.Budget(minutes=1e-6), {}, tmp_path)
    assert config.time_limit == 1e-6 and config.early_stopping == config.epochs == compare.UNBOUNDED_EPOCHS
    assert main(_argv(files, tmp_path, "--models", "hipnn", "--seeds", "0", budget=("--minutes", "1e-6"))) == 0
    report = json.loads((tmp_path / "results" / "compare_toy.json").read_text())
    assert report["meta"]["budget"] == "1e-06 min of wall-clock time per run"
    (run,) = report["runs"]
    assert run["epochs"] == 1 and run["stopped"].startswith("time limit")


@pytest.mark.parametrize("argv, says", [
    (["--set", "lmax=1"], "--set lmax: the comparison sets it"),
    (["--set", "epochs=3"], "--set epochs: the budget sets it"),
    (["--set", "nonsense=3"], "--set expects name=value"),
    (["--set", "lr=fast"], "--set lr expects float"),
    (["--seeds", "0", "0"], "--seeds must be distinct"),
    (["--transfer", "missing.h5"], "missing.h5"),
])
def test_bad_arguments_get_one_line(files, tmp_path, capsys, argv, says):
    assert main(_argv(files, tmp_path, *argv)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and says in err
    assert not (tmp_path / "runs").exists()  # nothing trained before the arguments were checked
