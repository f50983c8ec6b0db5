"""The host emulator on kernels of known behaviour (tests/csrc/traffic_probe.cpp): its memory-traffic
model (csrc/emulation/traffic.h: sectors per request, feature rows, distinct bytes, bank conflicts,
FLOPs), warp
shuffles, a missing barrier showing up as a read of unwritten (NaN) shared memory, and the hazard
check (csrc/emulation/racecheck.h)."""
from __future__ import annotations

import ctypes
import shutil
from pathlib import Path

import pytest
import torch

from hipnnts_kernels.emulation import build, hazards, racecheck, record_traffic, recorded_launches

pytestmark = pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                                reason="needs a host C++ compiler")


@pytest.fixture(scope="module")
def probe(tmp_path_factory) -> ctypes.CDLL:
    return build(tmp_path_factory.mktemp("traffic"), (Path(__file__).with_name("csrc") / "traffic_probe.cpp",))


def ptr(t: torch.Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr())


def launch(probe, name: str, *args) -> dict[str, int]:
    record_traffic(probe, True)
    getattr(probe, name)(*args)
    (kernel, stats), = recorded_launches(probe)
    record_traffic(probe, False)
    return stats


@pytest.mark.parametrize("stride, sectors_per_request", [(1, 4), (2, 8), (32, 32)])
def test_sectors_per_request_of_strided_loads(probe, stride, sectors_per_request):
    n = 256
    source, out = torch.arange(n * stride, dtype=torch.float32), torch.zeros(n)
    stats = launch(probe, "probe_copy", ptr(source), ptr(out), ctypes.c_int(n), ctypes.c_int(stride))
    assert torch.equal(out, source[::stride] + 1)
    assert (stats["blocks"], stats["warps"]) == (4, 8)
    assert stats["global_load_requests"] == stats["global_store_requests"] == 8
    assert stats["global_load_bytes"] == stats["global_store_bytes"] == 4 * n
    assert stats["global_load_sectors"] == 8 * sectors_per_request and stats["global_store_sectors"] == 8 * 4
    # distinct sectors: each loaded element's own sector, shared by neighbours up to stride 8
    assert stats["global_load_distinct_bytes"] == 32 * 8 * sectors_per_request
    assert stats["global_store_distinct_bytes"] == 4 * n and stats["flops"] == n
    # feature rows: the stores, and the loads at stride 1, each a row of 32 floats in 4 sectors
    assert stats["global_row_requests"] == (16 if stride == 1 else 8)
    assert stats["global_row_worst_milli_sectors"] == 4000


@pytest.mark.parametrize("pitch, ways", [(32, 32), (33, 1)])
def test_bank_conflicts_of_a_column_read(probe, pitch, ways):
    out = torch.zeros(32)
    stats = launch(probe, "probe_transpose", ptr(out), ctypes.c_int(pitch))
    tile = torch.arange(1024, dtype=torch.float32).view(32, 32)
    assert torch.equal(out, tile.sum(dim=1))  # lane k reads row k across the columns
    assert stats["shared_load_requests"] == stats["shared_store_requests"] == 32
    assert stats["shared_store_wavefronts"] == stats["shared_store_ideal_wavefronts"] == 32  # rows: no conflict
    assert stats["shared_load_ideal_wavefronts"] == 32
    assert stats["shared_load_wavefronts"] == 32 * ways


def test_warp_shuffles_and_eight_byte_accesses(probe):
    source, out = torch.arange(32, dtype=torch.float64), torch.zeros(32, dtype=torch.float64)
    stats = launch(probe, "probe_warp_sum", ptr(source), ptr(out))
    assert torch.equal(out, torch.full((32,), 496.0, dtype=torch.float64))
    assert stats["global_load_requests"] == 1 and stats["global_load_sectors"] == 8  # 256 B
    assert stats["shared_load_requests"] == 0  # shuffles are registers, not shared memory


def test_nothing_is_recorded_when_recording_is_off(probe):
    record_traffic(probe, False)
    out = torch.zeros(32)
    probe.probe_transpose(ptr(out), ctypes.c_int(33))
    assert recorded_launches(probe) == []


def test_a_missing_barrier_reads_unwritten_shared_memory(probe):
    """Threads run in a shuffled order between barriers, so a read that a barrier should order
    after its neighbour's write sometimes comes first and sees the NaN fill."""
    blocks = 8
    out = torch.zeros(blocks * 64)
    probe.probe_neighbour(ptr(out), ctypes.c_int(blocks), ctypes.c_int(1))
    assert torch.equal(out, torch.tensor([float((t + 1) % 64) for t in range(64)] * blocks))
    probe.probe_neighbour(ptr(out), ctypes.c_int(blocks), ctypes.c_int(0))
    assert 0 < int(out.isnan().sum()) < out.numel()


def checked(probe, name: str, *args) -> tuple[int, str]:
    racecheck(probe, True)
    try:
        getattr(probe, name)(*args)
        return hazards(probe)
    finally:
        racecheck(probe, False)


def test_the_hazard_check_finds_a_missing_barrier(probe):
    out = torch.zeros(2 * 64)
    assert checked(probe, "probe_neighbour", ptr(out), ctypes.c_int(2), ctypes.c_int(1)) == (0, "")
    count, first = checked(probe, "probe_neighbour", ptr(out), ctypes.c_int(2), ctypes.c_int(0))
    assert count > 0 and "hazard in shared memory" in first and "barrier interval 0" in first


def test_the_hazard_check_finds_two_blocks_writing_one_element(probe):
    out = torch.zeros(32)
    assert checked(probe, "probe_accumulate", ptr(out), ctypes.c_int(1)) == (0, "")
    count, first = checked(probe, "probe_accumulate", ptr(out), ctypes.c_int(3))
    assert count == 2 * 32 * 2 and "hazard in global memory between block 0" in first  # RAW + WAW per element
    assert torch.equal(out, torch.full((32,), 4.0))


def test_the_hazard_check_accepts_a_warp_barrier_between_lanes(probe):
    out = torch.zeros(32)
    assert checked(probe, "probe_warp_exchange", ptr(out)) == (0, "")
    assert torch.equal(out, torch.arange(31, -1, -1, dtype=torch.float32))
