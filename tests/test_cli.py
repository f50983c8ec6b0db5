"""The ``hipnnts`` command line: help, train + eval round trip, data inspect/convert, clear errors."""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

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
    assert "not a readable checkpoint" in capsys.readouterr().err


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
