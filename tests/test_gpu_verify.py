"""bench/gpu_verify.sh, the GPU verification script, without a GPU: it runs its set-up, lists every
step in its summary, and leaves at most 8 files in $OUT (what the device tool returns)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("GPU tests", "memcheck", "racecheck", "bench kernels spec9", "bench models 28k, lmax 2",
         "bench models 28k, lmax 0 1")


def test_without_time_left_every_step_is_listed_and_at_most_8_files_come_back(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, OUT=str(out), BUDGET="0", PYTHON=sys.executable)
    result = subprocess.run(["bash", str(ROOT / "bench" / "gpu_verify.sh")], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    files = sorted(p.name for p in out.rglob("*") if p.is_file())
    assert len(files) <= 8 and {"summary.md", "gpu_verify.log", "extras.tar.gz"} <= set(files), files
    summary = (out / "summary.md").read_text()
    for name in STEPS:
        assert f"| {name} |" in summary, summary
    assert "| GPU tests | not run | 0 | no time left in the 0 s budget |" in summary
