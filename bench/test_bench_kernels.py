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


LMAX = {"interaction": (0, 2), "tensor_factors": (2,)}  # tensor_factors at lmax 0 is the constant 1
CASE_KEYS = [(op, lmax) for op in kernels.OPS for lmax in LMAX.get(op, (None,))]
BACKENDS = ("cuda", "cuda-molecules", "triton", "cpu", "reference", "hippynn")


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("key", CASE_KEYS, ids=[f"{op}{'' if lmax is None else lmax}" for op, lmax in CASE_KEYS])
def test_kernel(benchmark, cases, device, synchronised, key, backend, level):
    case = cases[key]
    reason = kernels.skip_reason(backend, case.op, device, level)
    if reason is not None:
        pytest.skip(reason)
    functions = kernels.backend_functions(backend, device)
    fn = kernels.level_closures(case, functions)[level]
    benchmark.extra_info.update(bytes=case.cost.bytes(level), flops=case.cost.flops(level))
    with kernels.value_checks(False), kernels.backend_setting(backend):
        out = benchmark(synchronised(fn))
    assert out is not None
