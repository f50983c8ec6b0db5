"""The CUDA kernels of csrc/ built for the host emulator (csrc/emulation) and driven through the
"cuda" backend's own glue (:class:`~hipnnts_kernels.segment_kernels.SegmentKernels`): the CPU test
suite's way of running the kernels, and the memory-traffic model's (:mod:`.benchmarks.traffic`).

:func:`build` compiles csrc/kernels/launch.cu and csrc/emulation/capi.cpp with the host C++
compiler into a shared library (it needs the source tree: an editable install or a checkout);
:class:`EmulatedLaunchers` calls it through ctypes on CPU tensors; :func:`recorded_launches` reads
what the traffic model recorded of each launch, :func:`hazards` what the hazard check found.
"""
from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [ROOT / "csrc" / "kernels" / "launch.cu", ROOT / "csrc" / "emulation" / "capi.cpp"]


def build(directory: Path, extra_sources: tuple[Path, ...] = ()) -> ctypes.CDLL:
    """Compile the emulated kernels (and ``extra_sources``, C++ with the same flags) into
    ``directory`` and load them."""
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        raise RuntimeError("no host C++ compiler (g++) to build the emulated CUDA kernels")
    missing = [str(source) for source in SOURCES if not source.is_file()]
    if missing:
        raise RuntimeError(f"the CUDA sources are not here ({', '.join(missing)}): the emulator needs the source "
                           "tree, as in an editable install (pip install -e .) or a checkout")
    library = directory / "libhipnnts_emulated.so"
    command = [compiler, "-std=c++17", "-O2", "-DHIPNNTS_EMULATE", "-shared", "-fPIC", "-pthread", "-Wall", "-Werror"]
    command += [arg for source in (*SOURCES, *extra_sources) for arg in ("-x", "c++", str(source))]
    command += [f"-I{ROOT / 'csrc'}", "-o", str(library)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"building the emulated kernels failed:\n{result.stderr}")
    return ctypes.CDLL(str(library))


def _ptr(t: torch.Tensor | None) -> ctypes.c_void_p:
    if t is None:
        return ctypes.c_void_p(None)
    assert t.device.type == "cpu" and (t.is_contiguous() or t.numel() == 0)
    return ctypes.c_void_p(t.data_ptr() if t.numel() else None)


#: Bytes a GPU allocation is aligned to; the emulated launches see their tensors so aligned too, so
#: that the traffic model counts the sectors a GPU would (torch's CPU tensors are 64-B aligned).
ALIGNMENT = 256


class _Aligned:
    """Stand-ins for a launch's tensors at ALIGNMENT (copies of those that are not); the copies of
    outputs are written back to the originals after the launch."""

    def __init__(self):
        self.copies: list[tuple[torch.Tensor, torch.Tensor, bool]] = []  # (original, copy, output); kept alive

    def __call__(self, t, output: bool = False):
        if not isinstance(t, torch.Tensor) or t.numel() == 0 or t.data_ptr() % ALIGNMENT == 0:
            return t
        nbytes = t.numel() * t.element_size()
        raw = torch.empty(nbytes + ALIGNMENT, dtype=torch.uint8)
        offset = -raw.data_ptr() % ALIGNMENT
        copy = raw[offset:offset + nbytes].view(t.dtype).view(t.shape)
        copy.copy_(t)
        self.copies.append((t, copy, output))
        return copy

    def write_back(self) -> None:
        for t, copy, output in self.copies:
            if output:
                t.copy_(copy)


class EmulatedLaunchers:
    """The launch primitives of hipnnts_kernels.segment_kernels.Launchers, run by the host emulator."""

    def __init__(self, lib: ctypes.CDLL):
        self.lib = lib
        for name in ("interaction_forward", "interaction_backward", "interaction_double_backward", "envsum",
                     "sensesum", "featsum", "featsum_molecules"):
            getattr(lib, f"hipnnts_emu_{name}").restype = ctypes.c_char_p

    def _call(self, name: str, *args):
        message = getattr(self.lib, f"hipnnts_emu_{name}")(*args)
        if message is not None:
            raise RuntimeError(f"emulated {name}: {message.decode()}")

    #: Length of the interaction's argument pack (see segment_kernels.Launchers).
    N_INPUTS = 13

    #: Length of the molecule path's arguments (molecule_ptr, receiver_rank, max_atoms, max_pairs).
    N_MOLECULES = 4

    @staticmethod
    def _inputs(Y, coord, order, ptr, sender_order, sender_ptr, mu, sigma, lam1, lam2, cutoff, cusp_reg, lmax,
                molecule_ptr=None, receiver_rank=None, max_atoms=0, max_pairs=0):
        n_atoms, nu, features = Y.shape
        n_molecules = 0 if molecule_ptr is None else molecule_ptr.shape[0] - 1
        return (ctypes.c_int(Y.dtype == torch.float64), _ptr(Y), _ptr(coord), _ptr(order), _ptr(ptr),
                _ptr(sender_order), _ptr(sender_ptr), _ptr(mu), _ptr(sigma), _ptr(lam1), _ptr(lam2),
                ctypes.c_int64(n_atoms), ctypes.c_int64(coord.shape[0]), ctypes.c_int(nu), ctypes.c_int(features),
                ctypes.c_int(lmax), ctypes.c_double(cutoff), ctypes.c_double(cusp_reg), _ptr(molecule_ptr),
                _ptr(receiver_rank), ctypes.c_int64(n_molecules), ctypes.c_int(max_atoms), ctypes.c_int(max_pairs))

    def _interaction(self, name: str, args, molecules: bool = False):
        """``args``: the argument pack (with ``molecules``, followed by the molecule path's
        arguments), then tensors (or None), and last, for the derivative levels, the list of gradient
        tensors (passed as an array of pointers and its length)."""
        aligned = _Aligned()
        n_inputs = self.N_INPUTS + (self.N_MOLECULES if molecules else 0)
        inputs, rest = [aligned(a) for a in args[:n_inputs]], list(args[n_inputs:])
        tail = ()
        if rest and isinstance(rest[-1], list):  # the derivative levels' outputs
            *rest, gradients = rest
            gradients = [aligned(t, output=True) for t in gradients]
            tail = ((ctypes.c_void_p * len(gradients))(*(_ptr(t).value for t in gradients)),
                    ctypes.c_int(len(gradients)))
        else:  # the forward's output, last
            rest[-1] = aligned(rest[-1], output=True)
        self._call(name, *self._inputs(*inputs), *(_ptr(aligned(t)) for t in rest), *tail)
        aligned.write_back()

    def interaction_forward(self, *args):
        self._interaction("interaction_forward", args)

    def interaction_backward(self, *args):
        self._interaction("interaction_backward", args)

    def interaction_double_backward(self, *args):
        self._interaction("interaction_double_backward", args)

    def interaction_forward_molecules(self, *args):
        self._interaction("interaction_forward", args, molecules=True)

    def interaction_backward_molecules(self, *args):
        self._interaction("interaction_backward", args, molecules=True)

    def interaction_double_backward_molecules(self, *args):
        self._interaction("interaction_double_backward", args, molecules=True)

    def _family(self, name, inputs, n_rows: int, nu: int, features: int, out):
        """One envsum-family launch: the (aligned) input tensors, then the row count (atoms, or
        molecules on the molecule path), nu and the features, and the output, written back."""
        aligned = _Aligned()
        pointers = [_ptr(aligned(t)) for t in inputs]
        out_ = aligned(out, output=True)
        self._call(name, ctypes.c_int(out.dtype == torch.float64), *pointers, ctypes.c_int64(n_rows), ctypes.c_int(nu),
                   ctypes.c_int(features), _ptr(out_))
        aligned.write_back()

    def envsum(self, sens, feat, second, order, ptr, out):
        self._family("envsum", (sens, feat, second, order, ptr), *out.shape, out)

    def sensesum(self, env, feat, second, order, ptr, out):
        self._family("sensesum", (env, feat, second, order, ptr), *env.shape, out)

    def featsum(self, env, sens, first, order, ptr, out):
        self._family("featsum", (env, sens, first, order, ptr), *env.shape, out)

    def featsum_molecules(self, env, sens, second, order, ptr, molecule_ptr, out):
        self._family("featsum_molecules", (env, sens, second, order, ptr, molecule_ptr), molecule_ptr.shape[0] - 1,
                     *env.shape[1:], out)


#: The totals of one recorded launch, in the order hipnnts_emu_traffic_stats writes them.
TRAFFIC_FIELDS = ("blocks", "threads_per_block", "warps", "global_load_requests", "global_store_requests",
                  "global_load_bytes", "global_store_bytes", "shared_load_requests", "shared_store_requests",
                  "shared_load_bytes", "shared_store_bytes", "global_load_sectors", "global_store_sectors",
                  "global_load_distinct_bytes", "global_store_distinct_bytes", "shared_load_wavefronts",
                  "shared_store_wavefronts", "shared_load_ideal_wavefronts", "shared_store_ideal_wavefronts", "flops",
                  "global_row_requests", "global_row_worst_milli_sectors")


def racecheck(lib: ctypes.CDLL, on: bool) -> None:
    """Switch the hazard check (csrc/emulation/racecheck.h) on or off; either way, forget the hazards
    found so far."""
    lib.hipnnts_emu_racecheck(ctypes.c_int(int(on)))


def hazards(lib: ctypes.CDLL) -> tuple[int, str]:
    """(number of hazards found since the check was switched on, the first one described)."""
    lib.hipnnts_emu_racecheck_hazards.restype = ctypes.c_uint64
    lib.hipnnts_emu_racecheck_first.restype = ctypes.c_char_p
    return int(lib.hipnnts_emu_racecheck_hazards()), lib.hipnnts_emu_racecheck_first().decode()


def record_traffic(lib: ctypes.CDLL, on: bool) -> None:
    """Switch the traffic model's recording on or off; either way, forget the launches recorded so far."""
    lib.hipnnts_emu_traffic_record(ctypes.c_int(int(on)))


def recorded_launches(lib: ctypes.CDLL) -> list[tuple[str, dict[str, int]]]:
    """(kernel name, totals) of every launch recorded since recording was switched on."""
    lib.hipnnts_emu_traffic_kernel.restype = ctypes.c_char_p
    assert lib.hipnnts_emu_traffic_fields() == len(TRAFFIC_FIELDS)
    out = []
    for i in range(lib.hipnnts_emu_traffic_launches()):
        values = (ctypes.c_uint64 * len(TRAFFIC_FIELDS))()
        lib.hipnnts_emu_traffic_stats(ctypes.c_int(i), values)
        out.append((lib.hipnnts_emu_traffic_kernel(ctypes.c_int(i)).decode(), dict(zip(TRAFFIC_FIELDS, values))))
    return out
