"""The CUDA kernels' launch limits: the widths docs/kernels.md states match the compiled kernels'
registers and shared memory, and a launch beyond a kernel's limits fails with a message that names
the kernel, the width and the limit (csrc/kernels/launch.cu: launch_block, check_block)."""
from __future__ import annotations

import ctypes
import shutil

import pytest
from cuda_launch_limits import (
    KINDS,
    MOLECULE,
    MOLECULE_BEGIN,
    MOLECULE_END,
    SPLIT,
    compiled_resources,
    documented_table,
    limits_table,
    max_threads,
    molecule_table,
)

from hipnnts_kernels.emulation import build

HAVE_NVCC = shutil.which("nvcc") is not None and shutil.which("c++filt") is not None


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> ctypes.CDLL:
    if shutil.which("g++") is None and shutil.which("c++") is None:
        pytest.skip("needs a host C++ compiler")
    lib = build(tmp_path_factory.mktemp("launch_limits"))
    lib.hipnnts_emu_check_block.restype = ctypes.c_char_p
    return lib


def check_block(lib, kernel: str, is_double: bool, lmax: int, nu: int, features: int, threads: int, shared: int,
                limit_threads: int, registers: int, limit_shared: int) -> str | None:
    message = lib.hipnnts_emu_check_block(KINDS.index(kernel), int(is_double), lmax, nu, features, threads,
                                          ctypes.c_size_t(shared), limit_threads, registers,
                                          ctypes.c_size_t(limit_shared))
    return None if message is None else message.decode()


@pytest.mark.skipif(not HAVE_NVCC, reason="needs nvcc and c++filt")
def test_the_documented_widths_match_the_compiled_kernels():
    table = limits_table()
    assert table == documented_table(), (
        "docs/kernels.md's launch limits differ from the compiled kernels; if the change is meant, paste the output "
        f"of `python tests/cuda_launch_limits.py` between its launch-limits markers:\n{table}")


def test_the_documented_molecule_limits_match_the_launchers(library):
    library.hipnnts_emu_launch_block.restype = ctypes.c_size_t
    table = molecule_table(library)
    assert table == documented_table(MOLECULE_BEGIN, MOLECULE_END), (
        "docs/kernels.md's molecule limits differ from the launchers' shared memory; if the change is meant, paste "
        f"the second table `python tests/cuda_launch_limits.py` prints between its molecule-limits markers:\n{table}")


@pytest.mark.skipif(not HAVE_NVCC, reason="needs nvcc and c++filt")
def test_the_interaction_kernels_fit_128_registers_without_spills():
    """The issue-14 budget for the interaction's kernels (split and molecule) on sm_90, every lmax: at
    most 128 registers in float32, and no spills in either dtype."""
    resources = compiled_resources(90)
    interaction = {key: r for key, r in resources.items() if key[0] in SPLIT + MOLECULE}
    assert len(interaction) == 2 * (2 + 3 * 5) + 2 * 3 * 3
    assert {key: r for key, r in interaction.items()
            if (key[1] == "float" and r.registers > 128) or r.spill_bytes} == {}


def test_threads_per_block_from_registers():
    # 64 Ki registers per block, allocated per warp in units of 256
    assert [max_threads(r) for r in (32, 64, 72, 80, 128, 138, 255)] == [1024, 1024, 896, 800, 512, 448, 256]


def test_a_block_beyond_the_registers_is_refused_with_the_numbers(library):
    message = check_block(library, "featsum", True, 0, 20, 480, 480, 0, 448, 138, 1 << 20)
    assert message == ("featsum (float64, lmax 0) runs one thread per feature, and with its 138 registers per thread "
                       "this GPU launches at most 448 threads per block: 480 features is too wide for the cuda backend "
                       "(docs/kernels.md lists its widths)")
    assert check_block(library, "featsum", True, 0, 20, 448, 448, 0, 448, 138, 1 << 20) is None


def test_a_block_beyond_the_shared_memory_is_refused_with_the_numbers(library):
    message = check_block(library, "sender_double_backward", False, 1, 400, 128, 128, 210 * 1024, 1024, 63,
                          163 * 1024)
    assert message is not None and message.startswith(
        "sender_double_backward (float32, lmax 1) needs 210.0 KiB of shared memory per block at nu = 400 and 128 "
        "features, and this GPU gives it at most 163.0 KiB")


def test_every_kernel_has_a_name(library):
    library.hipnnts_emu_kernel_name.restype = ctypes.c_char_p
    names = [library.hipnnts_emu_kernel_name(k).decode() for k in range(len(KINDS))]
    assert [n.replace("_molecules", "_molecule") for n in names] == list(KINDS)
