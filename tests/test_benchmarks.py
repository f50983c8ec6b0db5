"""The benchmark harness runs end to end (CPU smoke mode: tiny sizes, Triton interpreter)."""
from __future__ import annotations

import importlib.util
import json

import pytest

from hipnnts_kernels.benchmarks import interaction
from hipnnts_kernels.benchmarks.timing import time_call


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_interaction_benchmark_smoke(tmp_path):
    interaction.main(["--smoke", "--lmax", "2", "--repeats", "1", "--warmup", "0", "--op-backends", "triton",
                      "reference", "--layer-backends", "triton", "reference", "--out", str(tmp_path)])
    result = json.loads((tmp_path / "interaction_smoke.json").read_text())
    records = result["records"]
    assert len(records) == 12 and not [r for r in records if r["error"]]
    assert all(r["median_us"] > 0 for r in records)
    assert all(r["gbps"] > 0 and r["bytes"] > 0 for r in records if r["view"] == "op")
    assert result["meta"]["copy_gbps"] > 0 and result["meta"]["pairs"] > 0
    assert "## Op level" in (tmp_path / "interaction_smoke.md").read_text()


def test_compulsory_bytes_grow_with_the_level():
    sizes = [interaction.compulsory_bytes(level, 10, 100, 4, 8, 4) for level in interaction.LEVELS]
    assert sizes == sorted(sizes) and len(set(sizes)) == 3
    # forward: Y, pair vectors, the receiver CSR index (int64) and the output
    assert sizes[0] == 10 * 4 * 8 * 4 + 100 * 3 * 4 + (2 * 100 + 11) * 8 + 10 * 8 * 4


def test_failures_are_recorded_not_raised():
    record = interaction._measure(interaction.Record("op", "x", 0, "forward"), lambda: 1 / 0,
                                 interaction.torch.device("cpu"), 0, 1, 1.0)
    assert record.error.startswith("ZeroDivisionError") and record.median_us is None
    assert time_call(lambda: None, interaction.torch.device("cpu"), warmup=0, repeats=3).median_us >= 0
