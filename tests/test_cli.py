"""The ``hipnnts`` command line: help, train + eval round trip, data inspect/convert, clear errors."""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from hipnnts_kernels.cli import main
from hipnnts_kernels.data import load, save
from hipnnts_kernels.synthetic import toy_conformers

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SMALL = ["--n-features", "8", "--n-sensitivities", "4", "--n-interaction-layers", "1", "--n-atom-layers", "1",
         "--batch-size", "4", "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def toy_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "toy.h5"
    save(toy_conformers(12, 4, seed=5), path)
    return path


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["eval", "--help"], ["data", "xtb", "--help"]])
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "usage: hipnnts" in text
    assert "SPEC" not in text  # a file users do not have: the help cites the paper and the docs


def test_train_then_eval_reports_the_same_test_errors(toy_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(toy_file), "--out", str(out), "--epochs", "2", *SMALL]) == 0
    printed = capsys.readouterr().out
    assert "errors of the best model" in printed and "F MAE if F=0" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["stopped"] == "reached 2 epochs" and metrics["epochs"] == 2
    assert main(["eval", str(out / "best.pt"), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["split"] == "test" and evaluated["conformers"] == metrics["conformers"]["test"]
    assert evaluated["force_mae"] == pytest.approx(metrics["metrics"]["test"]["force_mae"], rel=1e-6)
    assert main(["eval", str(out / "best.pt"), "--data", str(toy_file)]) == 0
    assert "all split, 48 conformers" in capsys.readouterr().out


def test_print_config_resolves_file_and_flags(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("model:\n  lmax: 1\n")
    assert main(["train", "--config", str(config), "--n-features", "64", "--print-config"]) == 0
    resolved = json.loads(capsys.readouterr().out)
    assert (resolved["lmax"], resolved["n_features"], resolved["data"]) == (1, 64, None)


def test_data_inspect_and_convert(toy_file, tmp_path, capsys):
    assert main(["data", "inspect", str(toy_file)]) == 0
    text = capsys.readouterr().out
    assert "48 conformers of 12 molecules" in text and "forces (kcal/mol/Å)" in text
    target = tmp_path / "copy.h5"
    assert main(["data", "convert", str(toy_file), str(target)]) == 0
    assert len(load(target)) == 48


@pytest.mark.skipif(not (DATA / "rmd17_ethanol_100.xyz").is_file(), reason="shared ethanol file not present")
def test_convert_xyz_needs_its_energy_unit(tmp_path, capsys):
    source, target = DATA / "rmd17_ethanol_100.xyz", tmp_path / "ethanol.h5"
    assert main(["data", "convert", str(source), str(target)]) == 2
    err = capsys.readouterr().err
    assert "pass --energy-unit" in err and "energy_unit" not in err  # the flag, not the Python name
    assert main(["data", "convert", str(source), str(target), "--energy-unit", "kcal/mol"]) == 0
    assert len(load(target)) == 100


def test_clear_errors(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "missing.h5"), "--out", str(tmp_path / "r")]) == 2
    assert "no such dataset file" in capsys.readouterr().err
    ani = tmp_path / "ani.h5"
    with h5py.File(ani, "w") as f:
        g = f.create_group("mol")
        g["coordinates"] = np.zeros((1, 2, 3))
        g["coordinates"][0, 1, 0] = 1.0
        g["species"] = np.array([b"H", b"H"])
        g["energies"] = np.zeros(1)
        g["forces"] = np.zeros((1, 2, 3))
    assert main(["train", "--data", str(ani), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "pass --forces-convention 'forces', 'gradient' or 'none'" in err and "forces_convention" not in err
    # a summary does not need the convention: it names what it cannot summarise
    assert main(["data", "inspect", str(ani)]) == 0
    text = capsys.readouterr().out
    assert "1 conformers of 1 molecules" in text and "forces: present, but the file does not say" in text
    assert main(["data", "inspect", str(ani), "--forces-convention", "gradient"]) == 0
    assert "forces (kcal/mol/Å): mean |component| 0.000" in capsys.readouterr().out
    assert main(["eval", str(tmp_path / "nothing.pt")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
    not_a_checkpoint = tmp_path / "x.pt"
    not_a_checkpoint.write_bytes(b"garbage")
    assert main(["eval", str(not_a_checkpoint)]) == 2
    assert "x.pt is not a hipnnts-kernels checkpoint" in capsys.readouterr().err


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("hipnnts: error: ") and err.count("\n") == 1, err
    return err


class Payload:
    """Unpickling it would run a shell command: a checkpoint must never be loaded that way."""

    def __reduce__(self):
        import os

        return os.system, ("echo this must never run",)


def foreign_files(tmp_path):
    """(name, path, what the message must say) of files given where a checkpoint is expected."""
    import pickle

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(bytes(range(256)) * 8)
    hdf5 = tmp_path / "data.h5"
    with h5py.File(hdf5, "w") as f:
        f["x"] = np.zeros(3)
    raw_pickle = tmp_path / "raw.pt"
    raw_pickle.write_bytes(pickle.dumps({"model": Payload()}))
    torch_pickle = tmp_path / "torch.pt"
    torch.save({"model": Payload()}, torch_pickle)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    return [("garbage", garbage, "torch cannot read it as a file that torch.save wrote"),
            ("hdf5", hdf5, "it is an HDF5 file"),
            ("pickle", raw_pickle, "a pickle of objects a checkpoint never holds"),
            ("torch pickle", torch_pickle, "holds a Python object (posix.system) that a checkpoint never holds"),
            ("other torch file", other, "not one this package wrote")]


def test_files_that_are_not_checkpoints_get_one_line_without_unsafe_advice(tmp_path, capsys):
    import warnings

    from hipnnts_kernels.training.checkpoint import load_model

    for name, path, says in foreign_files(tmp_path):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert main(["eval", str(path)]) == 2, name
        err = one_line_error(capsys)
        assert f"{path} is not a hipnnts-kernels checkpoint" in err and says in err, (name, err)
        assert "weights_only" not in err and "torch.load" not in err, (name, err)
        assert not caught, (name, [str(w.message) for w in caught])
        with pytest.raises(ValueError, match="is not a hipnnts-kernels checkpoint") as info:
            load_model(path)
        assert "weights_only" not in str(info.value)
        # --resume on it: the same line, and the run folder is left as it was
        run = tmp_path / f"run-{name.replace(' ', '-')}"
        run.mkdir()
        (run / "last.pt").write_bytes(path.read_bytes())
        assert main(["train", "--resume", "--out", str(run)]) == 2, name
        err = one_line_error(capsys)
        assert "last.pt is not a hipnnts-kernels checkpoint" in err and "weights_only" not in err
        assert sorted(p.name for p in run.iterdir()) == ["last.pt"]
        assert (run / "last.pt").read_bytes() == path.read_bytes()


@pytest.mark.parametrize("suffix, text, says", [
    (".toml", "epochs = [1\n", "is not valid TOML: Unclosed array"),
    (".yaml", "epochs: [1\n  x: 2\n", "is not valid YAML: expected ',' or ']', but got ':' (at line 2, column 4)"),
    (".yml", "- a\nb: 1\n", "is not valid YAML"),
    (".json", '{"epochs": 1,}', "is not valid JSON: Expecting property name"),
    (".json", "[1, 2]", "expected a table of settings, got list"),
    (".toml", 'epochs = "ten"\n', "epochs must be an integer, got 'ten'"),
    (".yaml", "lr: fast\n", "lr must be a number, got 'fast'"),
    (".json", '{"split": [0.8, 0.2]}', "split must be 3 numbers, got [0.8, 0.2]"),
    (".toml", "progress = 1\n", "progress must be true or false, got 1"),
    (".toml", "[model]\nlmax = 2.5\n", "lmax must be an integer, got 2.5"),
])
def test_config_files_with_errors_get_one_line_naming_the_file(tmp_path, capsys, suffix, text, says):
    config = tmp_path / f"settings{suffix}"
    config.write_text(text)
    run = tmp_path / "run"
    assert main(["train", "--config", str(config), "--out", str(run)]) == 2
    err = one_line_error(capsys)
    assert f"config file {config}" in err and says in err, err
    assert not run.exists()


def test_config_files_take_none_for_optional_settings(tmp_path, capsys):
    config = tmp_path / "settings.toml"
    config.write_text('clip_grad_norm = "none"\n')
    assert main(["train", "--config", str(config), "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["clip_grad_norm"] is None


def test_files_that_are_not_datasets_get_one_line(tmp_path, capsys):
    checkpoint = tmp_path / "model.pt"
    torch.save({"weights": torch.zeros(2)}, checkpoint)
    bad_xyz = tmp_path / "frames.xyz"
    bad_xyz.write_text("not an xyz file\n")
    for args, says in (
            (["data", "inspect", str(checkpoint)], f"{checkpoint} is a torch file (a checkpoint?), not a dataset"),
            (["train", "--data", str(checkpoint), "--out", str(tmp_path / "run")], "is a torch file"),
            (["train", "--data", str(bad_xyz), "--energy-unit", "ev", "--out", str(tmp_path / "run")],
             f"{bad_xyz} is not a readable extended XYZ file (")):
        assert main(args) == 2, args
        assert says in one_line_error(capsys)
    assert not (tmp_path / "run").exists()


def test_a_binary_file_given_as_config_is_named(tmp_path, capsys):
    config = tmp_path / "settings.yaml"
    config.write_bytes(bytes(range(128, 256)))
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    assert f"config file {config} is not a text file" in one_line_error(capsys)


@pytest.mark.skipif(not (DATA / "rmd17_ethanol_100.xyz").is_file(), reason="shared ethanol file not present")
def test_a_single_molecule_trajectory_is_split_by_conformer(tmp_path, capsys):
    """The README's MD example: one molecule cannot be split by molecule into three parts."""
    out = tmp_path / "md"
    args = ["train", "--data", str(DATA / "rmd17_ethanol_100.xyz"), "--energy-unit", "kcal/mol", "--out", str(out),
            "--epochs", "1", *SMALL]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "the data hold 1 molecule, fewer than the 3 parts of the split: splitting by conformer instead" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split_by"] == "conformer" and metrics["conformers"] == {"train": 80, "valid": 10, "test": 10}
    assert main(["eval", str(out / "best.pt"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["conformers"] == 10


def test_epoch_lines_label_their_seconds_and_no_bar_goes_to_a_file(toy_file, tmp_path, capsys):
    args = ["train", "--data", str(toy_file), "--out", str(tmp_path / "run"), "--epochs", "2", *SMALL]
    assert main([a for a in args if a != "--no-progress"] + ["--progress"]) == 0
    captured = capsys.readouterr()
    lines = [line for line in captured.out.splitlines() if line.startswith("epoch")]
    assert len(lines) == 2 and all(" s in all" in line and "  took " in line for line in lines)
    assert "batch/s" not in captured.err and "epoch 1/2" not in captured.err  # not a terminal: no progress bar


def test_quickstart_trains_on_the_embedded_data_without_arguments():
    """python/quickstart.py with no arguments shows a complete training loop, as the README says."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "python" / "quickstart.py"
    result = subprocess.run([sys.executable, str(script), "--steps", "3", "--features", "8", "--batch-size", "4"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "512 frames from the embedded GFN2-xTB dataset" in result.stdout
    assert [line.split()[1] for line in result.stdout.splitlines() if line.startswith("step")] == ["0", "1", "2"]
