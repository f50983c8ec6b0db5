"""The widest layer each CUDA kernel of csrc/ launches at, from its compiled resource usage.

The interaction's kernels (split.cuh, molecule.cuh) tile the features and launch at any width ("any"); the
envsum family's run one thread per feature, so their widest F is set by their registers (they bound
the threads per block) and by their shared memory (which grows with F). This module compiles
csrc/kernels/launch.cu with nvcc for sm_90 and sm_80, reads ptxas's register and static shared
memory report per kernel, takes every launch's block shape from the launchers' own code
(``hipnnts::launch_block``, through the emulator library) and finds the widest F per kernel,
dtype, lmax and architecture at nu = 20. Run it to print the table of docs/kernels.md:

    python tests/cuda_launch_limits.py
"""
from __future__ import annotations

import ctypes
import functools
import math
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "kernels.md"
BEGIN, END = "<!-- launch-limits:begin -->", "<!-- launch-limits:end -->"
NU = 20
MAX_THREADS = 1024
#: A width far beyond one block: a kernel that launches at it tiles the features ("any" in the table).
ANY_WIDTH = 1 << 16
#: Per architecture: the name in the table and the largest opt-in shared memory per block (bytes).
ARCHS = {90: ("sm_90", 227 * 1024), 80: ("sm_80", 163 * 1024)}
#: hipnnts::KernelKind, in order, by kernel (see KERNEL_OF for the templates that implement them).
KINDS = ("sender_contract", "receiver_forward", "receiver_backward", "sender_backward", "sender_contract_double",
         "receiver_double_backward", "sender_double_backward", "envsum", "sensesum", "featsum", "featsum_molecule",
         "molecule_forward", "molecule_backward", "molecule_double_backward", "tile_sum")
#: (kernel template, its DOUBLE argument) -> the kind, where the name differs.
KERNEL_OF = {("sender_contract", "true"): "sender_contract_double", ("receiver", "false"): "receiver_backward",
             ("receiver", "true"): "receiver_double_backward", ("sender", "false"): "sender_backward",
             ("sender", "true"): "sender_double_backward", ("molecule_backward", "true"): "molecule_double_backward"}
#: Kernels whose template arguments include lmax (the others take any lmax).
WITH_LMAX = {"receiver_forward", "receiver_backward", "sender_backward", "receiver_double_backward",
             "sender_double_backward", "molecule_forward", "molecule_backward", "molecule_double_backward"}
#: The interaction's kernels: the split kernels (csrc/kernels/split.cuh) and the molecule kernels
#: (molecule.cuh, whose shared memory grows with the molecule, not F); both tile the features.
SPLIT = KINDS[:7]
MOLECULE = KINDS[11:14]
DTYPES = ("float", "double")


@dataclass(frozen=True)
class Resources:
    registers: int
    static_shared: int
    spill_bytes: int  #: spill stores + loads, bytes per thread


def max_threads(registers: int) -> int:
    """Threads per block that ``registers`` per thread allow on sm_80 / sm_90: 64 Ki registers per
    block, allocated per warp in units of 256."""
    per_warp = math.ceil(registers * 32 / 256) * 256
    return min(MAX_THREADS, 65536 // per_warp * 32)


@functools.cache
def compiled_resources(sm: int) -> dict[tuple[str, str, int | None], Resources]:
    """ptxas's registers and static shared memory per (kernel, dtype, lmax or None) for sm_``sm``
    (one compile per process: about 25 s)."""
    nvcc = shutil.which("nvcc")
    with tempfile.TemporaryDirectory() as tmp:
        result = subprocess.run([nvcc, "-O3", "-std=c++17", f"-I{ROOT / 'csrc'}", f"-arch=sm_{sm}", "-Xptxas", "-v",
                                 "-c", str(ROOT / "csrc" / "kernels" / "launch.cu"), "-o", str(Path(tmp) / "launch.o")],
                                capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"nvcc failed for sm_{sm}:\n{result.stderr[-4000:]}")
    entries = re.split(r"Compiling entry function '", result.stdout + result.stderr)[1:]
    names = [entry.split("'")[0] for entry in entries]
    demangled = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True).stdout.split("\n")
    resources = {}
    for entry, name in zip(entries, demangled):
        match = re.search(r"hipnnts::(\w+)_kernel<(float|double)(?:, (\d+))?(?:, (true|false))?", name)
        kernel, dtype = KERNEL_OF.get((match.group(1), match.group(4)), match.group(1)), match.group(2)
        lmax = int(match.group(3)) if kernel in WITH_LMAX else None
        registers = int(re.search(r"Used (\d+) registers", entry).group(1))
        shared = re.search(r"(\d+) bytes smem", entry)
        spills = sum(int(n) for n in re.findall(r"(\d+) bytes spill (?:stores|loads)", entry))
        resources[kernel, dtype, lmax] = Resources(registers, int(shared.group(1)) if shared else 0, spills)
    return resources


def _emulator(workdir: Path) -> ctypes.CDLL:
    from hipnnts_kernels.emulation import build

    lib = build(workdir)
    lib.hipnnts_emu_launch_block.restype = ctypes.c_size_t
    return lib


def launch_block(lib: ctypes.CDLL, kernel: str, dtype: str, lmax: int, nu: int, features: int, atoms: int = 0,
                 pairs: int = 0, width: int = 32) -> tuple[int, int]:
    """(threads, dynamic shared bytes) of one launch, from the launchers' code (the molecule kernels'
    for a largest molecule of ``atoms`` atoms and ``pairs`` pairs, at tiles of ``width`` features)."""
    threads = ctypes.c_uint(0)
    shared = lib.hipnnts_emu_launch_block(KINDS.index(kernel), int(dtype == "double"), lmax, nu, features, atoms,
                                          pairs, width, ctypes.byref(threads))
    return threads.value, shared


def widest(lib: ctypes.CDLL, kernel: str, dtype: str, lmax: int, resources: Resources, shared_limit: int) \
        -> tuple[int, str]:
    """(the widest F that launches, what binds it: "regs", "smem" or "" for the block maximum);
    (ANY_WIDTH, "") for a kernel that tiles the features."""
    threads_limit = max_threads(resources.registers)
    threads, shared = launch_block(lib, kernel, dtype, lmax, NU, ANY_WIDTH)
    if threads <= threads_limit and shared + resources.static_shared <= shared_limit:
        return ANY_WIDTH, ""
    for features in range(1, MAX_THREADS + 2):
        threads, shared = launch_block(lib, kernel, dtype, lmax, NU, features)
        if threads > threads_limit:
            return features - 1, "regs" if threads_limit < MAX_THREADS else ""
        if shared + resources.static_shared > shared_limit:
            return features - 1, "smem"
    return MAX_THREADS, ""


def limits_table() -> str:
    """The markdown table of docs/kernels.md, from a fresh compile."""
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        lib = _emulator(workdir)
        compiled = {sm: compiled_resources(sm) for sm in ARCHS}
        rows = ["| kernel | lmax | registers sm_90 (f32 / f64) | widest F sm_90 (f32 / f64) | "
                "widest F sm_80 (f32 / f64) |", "|---|---:|---:|---:|---:|"]
        for kernel in KINDS:
            for lmax in ((0, 1, 2) if kernel in WITH_LMAX else (None,)):
                cells = [" / ".join(str(compiled[90][kernel, dtype, lmax].registers) for dtype in DTYPES)]
                for sm, (_, shared_limit) in ARCHS.items():
                    found = [widest(lib, kernel, dtype, lmax or 0, compiled[sm][kernel, dtype, lmax], shared_limit)
                             for dtype in DTYPES]
                    cells.append(" / ".join("any" if f == ANY_WIDTH else f"{f} ({why})" if why else str(f)
                                            for f, why in found))
                rows.append(f"| {kernel} | {'any' if lmax is None else lmax} | " + " | ".join(cells) + " |")
        return "\n".join(rows)


#: The SPEC section 9 batch's largest molecule (20 atoms, 350 pairs in bench traffic's batch).
SPEC9_MOLECULE = (20, 350)
MOLECULE_BEGIN, MOLECULE_END = "<!-- molecule-limits:begin -->", "<!-- molecule-limits:end -->"


def molecule_table(lib: ctypes.CDLL) -> str:
    """The molecule kernels' shared memory at nu = 20 (any F: they tile it by 32) and the largest
    molecule that fits a block, whose every atom pairs with every other (N (N - 1) pairs)."""
    rows = ["| kernel | dtype | tile | bytes per atom / per pair | at 20 atoms, 350 pairs | "
            "largest molecule sm_90 / sm_80 |", "|---|---|---:|---:|---:|---:|"]
    for kernel in MOLECULE:
        for dtype in DTYPES:
            for width in (32, 16):
                def shared(atoms: int, pairs: int, kernel=kernel, dtype=dtype, width=width) -> int:
                    return launch_block(lib, kernel, dtype, 2, NU, 128, atoms, pairs, width)[1]

                base = shared(0, 0)
                per_atom, per_pair = shared(64, 0) - base, shared(0, 64) - base
                largest = []
                for _, limit in ARCHS.values():
                    n = 1
                    while shared(n + 1, (n + 1) * n) <= limit:
                        n += 1
                    largest.append(str(n))
                rows.append(f"| {kernel} | {dtype} | {width} | {per_atom / 64:.0f} / {per_pair / 64:.0f} | "
                            f"{shared(*SPEC9_MOLECULE) / 1024:.1f} KiB | {' / '.join(largest)} atoms |")
    return "\n".join(rows)


def documented_table(begin: str = BEGIN, end: str = END) -> str:
    """The table between the launch-limit markers (or ``begin``, ``end``) of docs/kernels.md."""
    text = DOCS.read_text()
    return text[text.index(begin) + len(begin):text.index(end)].strip()


def documented_widest(kernel: str, lmax: int, dtype: str, sm: int) -> int:
    """The documented widest F of one kernel (a KINDS name), lmax, dtype ("float"/"double") and sm (90/80)."""
    column = 3 if sm == 90 else 4
    for row in documented_table().splitlines()[2:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        if cells[0] == kernel and cells[1] in ("any", str(lmax)):
            cell = cells[column].split(" / ")[DTYPES.index(dtype)].split()[0]
            return ANY_WIDTH if cell == "any" else int(cell)
    raise KeyError((kernel, lmax))


if __name__ == "__main__":
    print(limits_table())
    with tempfile.TemporaryDirectory() as tmp:
        print(molecule_table(_emulator(Path(tmp))))
