"""Every op x backend x derivative level at one size preset (see conftest.py)."""
from __future__ import annotations

import pytest
import torch

from hipnnts_kernels.benchmarks import kernels
from hipnnts_kernels.benchmarks.costs import LEVELS


@pytest.fixture(scope="module")
def cases(preset, device):
    spec = kernels.PRESETS[preset]
    problem = kernels.make_problem(spec, torch.float32, device)
    return {(c.op, c.lmax): c for c in kernels.make_cases(problem, spec, lmax_values=(0, 2))}


CASE_KEYS = [(op, lmax) for op in kernels.OPS for lmax in ((0, 2) if op in kernels.LMAX_OPS else (None,))]
BACKENDS = ("cuda", "triton", "reference", "hippynn")


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("key", CASE_KEYS, ids=[f"{op}{'' if lmax is None else lmax}" for op, lmax in CASE_KEYS])
def test_kernel(benchmark, cases, device, synchronised, key, backend, level):
    case = cases[key]
    reason = kernels._skip_reason(backend, case.op, device)
    if reason is not None:
        pytest.skip(reason)
    functions = kernels.backend_functions(backend, device)
    fn = kernels.level_closures(case, functions)[level]
    benchmark.extra_info.update(bytes=case.cost.bytes(level), flops=case.cost.flops(level))
    with kernels.value_checks(False):
        out = benchmark(synchronised(fn))
    assert out is not None
