"""The ``"cpu"`` backend: C++ kernels (``csrc/cpu/``) for CPU tensors, called through ctypes.

``pip install -e .`` compiles them into ``hipnnts_kernels/_cpu_kernels*.so`` with the machine's C++
compiler; they do not link against torch, so the build needs no torch and the library works with any
torch version. Without a compiler the install still succeeds and this backend says why it cannot
run (:data:`LIBRARY_PROBLEM`). The library carries kernels for the baseline instruction set and for
x86-64 with AVX2 and FMA, and picks at load the widest this CPU runs
(:func:`instruction_set`; :func:`use_instruction_set` picks another, for tests and comparisons).

Kernels: the interaction's forward, backward and double backward, and the envsum family, as
passes over senders and receivers (docs/kernels.md, "CPU kernels"). They run on
``torch.get_num_threads()`` threads: those of torch's own OpenMP team where torch runs on OpenMP
(:data:`THREADS`), else threads of their own. Every output element is computed by one thread
in a fixed order and the parameter gradients are summed over atoms in atom order, so results are
bitwise the same for any number of threads.
"""
from __future__ import annotations

import ctypes
import importlib.machinery
from pathlib import Path

import torch

from .segment_kernels import SegmentKernels

_HERE = Path(__file__).resolve().parent


class _Inputs(ctypes.Structure):
    """hipnnts_cpu_inputs (csrc/cpu/api.h)."""

    _fields_ = [(name, ctypes.c_void_p) for name in ("Y", "coord", "receiver_order", "receiver_ptr", "sender_order",
                                                     "sender_ptr", "mu", "sigma", "lam1", "lam2")] + [
        ("n_atoms", ctypes.c_int64), ("n_pairs", ctypes.c_int64), ("nu", ctypes.c_int32),
        ("features", ctypes.c_int32), ("lmax", ctypes.c_int32), ("is_double", ctypes.c_int32),
        ("cutoff", ctypes.c_double), ("cusp_reg", ctypes.c_double)]


class _Cotangents(ctypes.Structure):
    """hipnnts_cpu_cotangents."""

    _fields_ = [(name, ctypes.c_void_p) for name in ("v_Y", "v_coord", "v_mu", "v_sigma", "v_lam1", "v_lam2")]


class _Gradients(ctypes.Structure):
    """hipnnts_cpu_gradients, in the order of the gradient lists of segment_kernels."""

    _fields_ = [(name, ctypes.c_void_p) for name in ("grad_Y", "grad_coord", "grad_mu", "grad_sigma", "grad_lam1",
                                                     "grad_lam2", "grad_grad_out")]


class _Family(ctypes.Structure):
    """hipnnts_cpu_family."""

    _fields_ = [(name, ctypes.c_void_p) for name in ("a", "b", "atom", "order", "ptr", "out")] + [
        ("n_atoms", ctypes.c_int64), ("n_pairs", ctypes.c_int64), ("nu", ctypes.c_int32),
        ("features", ctypes.c_int32), ("is_double", ctypes.c_int32)]


_STRUCTS = (_Inputs, _Cotangents, _Gradients, _Family)
_ENTRY_POINTS = ("interaction_forward", "interaction_backward", "interaction_double_backward", "envsum", "sensesum",
                 "featsum")


def library_path() -> Path | None:
    """The built library next to this module, or None."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = _HERE / f"_cpu_kernels{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _load() -> tuple[ctypes.CDLL | None, str | None]:
    """(the loaded library, None), or (None, why the cpu backend cannot run)."""
    path = library_path()
    if path is None:
        return None, ("the CPU kernels (hipnnts_kernels/_cpu_kernels*.so) are not built: install the package with a "
                      "C++ compiler present (pip install -e .); the install log says why the build was skipped")
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as error:
        return None, f"the CPU kernels {path.name} do not load ({error}); reinstall the package (pip install -e .)"
    lib.hipnnts_cpu_struct_size.restype = ctypes.c_int64
    for which, struct in enumerate(_STRUCTS):
        if lib.hipnnts_cpu_struct_size(ctypes.c_int(which)) != ctypes.sizeof(struct):
            return None, f"the CPU kernels {path.name} are from another version of the package; reinstall it"
    lib.hipnnts_cpu_isa.restype = ctypes.c_char_p
    lib.hipnnts_cpu_supported_isas.restype = ctypes.c_char_p
    for name in _ENTRY_POINTS:
        getattr(lib, f"hipnnts_cpu_{name}").restype = ctypes.c_char_p
    return lib, None


def _torch_openmp() -> ctypes.CDLL | None:
    """The OpenMP runtime torch's parallel loops run on, if torch uses OpenMP and the runtime is found
    among the loaded libraries (Linux: /proc/self/maps)."""
    if "parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return None
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    loaded = {line.split()[-1] for line in maps.splitlines() if len(line.split()) >= 6}
    for path in sorted(loaded):
        if Path(path).name.startswith(("libgomp", "libomp", "libiomp")):
            try:
                runtime = ctypes.CDLL(path)  # the loaded library itself: dlopen of a loaded path reuses it
                runtime.GOMP_parallel, runtime.omp_get_thread_num, runtime.omp_get_num_threads  # noqa: B018
            except (OSError, AttributeError):
                continue
            return runtime
    return None


def _share_threads(lib: ctypes.CDLL) -> str:
    """Point the kernels' parallel loops at torch's OpenMP team; says which threads they run on."""
    runtime = _torch_openmp()
    if runtime is None:
        lib.hipnnts_cpu_use_openmp(None, None, None)
        return "threads of their own"
    address = lambda f: ctypes.cast(f, ctypes.c_void_p)  # noqa: E731
    lib.hipnnts_cpu_use_openmp(address(runtime.GOMP_parallel), address(runtime.omp_get_thread_num),
                               address(runtime.omp_get_num_threads))
    return f"torch's OpenMP team ({Path(runtime._name).name})"


_LIBRARY, LIBRARY_PROBLEM = _load()
THREADS = None if _LIBRARY is None else _share_threads(_LIBRARY)
"""Where the kernels' parallel loops run: torch's OpenMP team, or threads of their own."""


def instruction_set() -> str | None:
    """The instruction set of the kernels that run ("avx2" or "default"), None if not built."""
    return None if _LIBRARY is None else _LIBRARY.hipnnts_cpu_isa().decode()


def supported_instruction_sets() -> tuple[str, ...]:
    """The instruction sets of the kernels this CPU runs, widest (the one picked at load) first."""
    return () if _LIBRARY is None else tuple(_LIBRARY.hipnnts_cpu_supported_isas().decode().split())


def use_instruction_set(name: str) -> None:
    """Run the kernels built for ``name`` (one of :func:`supported_instruction_sets`) from now on."""
    if _LIBRARY is None:
        raise RuntimeError(f"the cpu backend cannot run: {LIBRARY_PROBLEM}")
    if not _LIBRARY.hipnnts_cpu_use_isa(name.encode()):
        raise ValueError(f"instruction set {name!r} is not among those this CPU runs: "
                         f"{', '.join(supported_instruction_sets())}")


def device_problem(device: torch.device) -> str | None:
    """None if the cpu backend runs on ``device``, else why not."""
    if device.type != "cpu":
        return f"the CPU kernels need CPU tensors, got {device.type} tensors"
    return LIBRARY_PROBLEM


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None or t.numel() == 0 else t.data_ptr()


def _call(name: str, *args) -> None:
    message = getattr(_LIBRARY, f"hipnnts_cpu_{name}")(*args, ctypes.c_int(torch.get_num_threads()))
    if message is not None:
        raise RuntimeError(f"hipnnts_kernels cpu {name}: {message.decode()}")


class CpuLaunchers:
    """The launch primitives of :class:`~hipnnts_kernels.segment_kernels.Launchers` on the C++ kernels.

    The kernels sum the parameter gradients over atoms themselves (in atom order), so the per-atom
    partial gradients have one row.
    """

    sums_over_atoms = True

    #: Length of the interaction's argument pack (see segment_kernels.Launchers).
    N_INPUTS = 13

    @staticmethod
    def _inputs(Y, coord, order, ptr, sender_order, sender_ptr, mu, sigma, lam1, lam2, cutoff, cusp_reg, lmax):
        n_atoms, nu, features = Y.shape
        return _Inputs(_ptr(Y), _ptr(coord), _ptr(order), _ptr(ptr), _ptr(sender_order), _ptr(sender_ptr), _ptr(mu),
                       _ptr(sigma), _ptr(lam1), _ptr(lam2), n_atoms, coord.shape[0], nu, features, lmax,
                       int(Y.dtype == torch.float64), cutoff, cusp_reg)

    def interaction_forward(self, *args):
        inputs, (out,) = args[:self.N_INPUTS], args[self.N_INPUTS:]
        _call("interaction_forward", ctypes.byref(self._inputs(*inputs)), ctypes.c_void_p(_ptr(out)))

    def interaction_backward(self, *args):
        inputs, (grad_out, gradients) = args[:self.N_INPUTS], args[self.N_INPUTS:]
        _call("interaction_backward", ctypes.byref(self._inputs(*inputs)), ctypes.c_void_p(_ptr(grad_out)),
              ctypes.byref(_Gradients(*(_ptr(t) for t in gradients))))

    def interaction_double_backward(self, *args):
        inputs, rest = args[:self.N_INPUTS], args[self.N_INPUTS:]
        *cotangents, grad_out, gradients = rest
        _call("interaction_double_backward", ctypes.byref(self._inputs(*inputs)),
              ctypes.byref(_Cotangents(*(_ptr(t) for t in cotangents))), ctypes.c_void_p(_ptr(grad_out)),
              ctypes.byref(_Gradients(*(_ptr(t) for t in gradients))))

    @staticmethod
    def _family(name, a, b, atom, order, ptr, out, n_atoms, nu, features):
        _call(name, ctypes.byref(_Family(_ptr(a), _ptr(b), _ptr(atom), _ptr(order), _ptr(ptr), _ptr(out), n_atoms,
                                         atom.shape[0], nu, features, int(out.dtype == torch.float64))))

    def envsum(self, sens, feat, second, order, ptr, out):
        self._family("envsum", sens, feat, second, order, ptr, out, *out.shape)

    def sensesum(self, env, feat, second, order, ptr, out):
        self._family("sensesum", env, feat, second, order, ptr, out, *env.shape)

    def featsum(self, env, sens, first, order, ptr, out):
        self._family("featsum", env, sens, first, order, ptr, out, *env.shape)


#: The registry implementations of the cpu backend.
KERNELS = SegmentKernels(CpuLaunchers())
