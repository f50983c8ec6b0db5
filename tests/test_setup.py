"""setup.py's build helpers: the CUDA toolkit behind an nvcc wrapper script, a CUDA_HOME that is
not a toolkit is named, and a build without a working C++ compiler still succeeds."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def setup_py(monkeypatch):
    spec = importlib.util.spec_from_file_location("hipnnts_setup", ROOT / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for variable in ("CUDA_HOME", "CUDA_PATH"):
        monkeypatch.delenv(variable, raising=False)
    return module


def real_nvcc() -> str | None:
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    for line in Path(nvcc).read_text(errors="replace").splitlines():  # a wrapper: the nvcc it runs
        if line.startswith("exec "):
            return line.split()[1]
    return os.path.realpath(nvcc)


@pytest.mark.skipif(real_nvcc() is None, reason="needs nvcc")
def test_the_toolkit_is_found_behind_an_nvcc_wrapper(setup_py, tmp_path, monkeypatch):
    wrapper = tmp_path / "bin" / "nvcc"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\nexec {real_nvcc()} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{wrapper.parent}{os.pathsep}{os.environ['PATH']}")
    home, how = setup_py.find_cuda_home()
    assert home is not None and (Path(home) / "include" / "cuda_runtime.h").is_file()
    assert Path(home) != tmp_path  # not the wrapper's folder, which torch's own guess would take
    assert how == f"the toolkit of {wrapper}: {home}"


def test_a_cuda_home_without_the_toolkit_is_named(setup_py, tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_HOME", str(tmp_path))
    home, how = setup_py.find_cuda_home()
    assert home is None
    assert how == f"CUDA_HOME={tmp_path} holds no include/cuda_runtime.h; set it to the CUDA toolkit folder"


def test_the_arch_list_survives_the_shell(setup_py):
    assert setup_py.arch_token(" 8.0;9.0+PTX  10.0a") == "8.0,9.0+PTX,10.0a"


def test_a_build_without_a_cxx_compiler_succeeds_without_the_cpu_kernels(tmp_path):
    """The CPU kernels are optional: a failed compile skips them with a message, nothing else."""
    env = dict(os.environ, CC="false", CXX="false", HIPNNTS_NO_CUDA="1")
    result = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--build-lib", str(tmp_path / "lib"),
                             "--build-temp", str(tmp_path / "temp")], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "hipnnts_kernels._cpu_kernels" in result.stderr and "failed" in result.stderr
    assert not list((tmp_path / "lib").rglob("_cpu_kernels*"))
