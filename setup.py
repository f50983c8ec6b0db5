"""Build script: the pure-Python package, the CPU kernels ``hipnnts_kernels/_cpu_kernels*.so``
(csrc/cpu/, when a C++ compiler is found), plus the CUDA extension ``hipnnts_kernels._C``
(csrc/) when the torch in the build environment has CUDA and nvcc is found.

The CPU kernels are a plain C++ library (no torch, no Python API; loaded with ctypes), so any pip
install builds them, isolated or not. Without a working C++ compiler the build skips them with a
message and the package installs without them (``backend="cpu"`` then says why it cannot run);
``HIPNNTS_NO_CPU_KERNELS=1`` skips them on purpose.

pip builds in an isolated environment without torch by default, which gives the pure-Python
package (``backend="cuda"`` then says that the extension is not built). To build the extension,
install with the CUDA torch already present and no isolation:

    pip install --no-build-isolation -e .

``TORCH_CUDA_ARCH_LIST`` chooses the GPU architectures (default "8.0;9.0": A100, H100/H200);
``CUDA_HOME`` the CUDA toolkit (default: the toolkit of the nvcc on the PATH, found through
``nvcc --dryrun`` so that a wrapper script works too); ``HIPNNTS_NO_CUDA=1`` skips the extension.
The extension records the torch, CUDA and architectures it was built for; the package checks them
at import (``hipnnts_kernels.cuda_backend``).
"""
import os
import re
import shutil
import subprocess
import sys

from setuptools import setup


def say(message: str) -> None:
    print(f"hipnnts-kernels: {message}", file=sys.stderr)


def toolkit_of(nvcc: str) -> str | None:
    """The CUDA toolkit folder of ``nvcc``, which may be a wrapper script outside it."""
    try:
        dryrun = subprocess.run([nvcc, "--dryrun", "-c", "-x", "cu", os.devnull, "-o", os.devnull],
                                capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    here = re.search(r"^#\$ _HERE_=(.+)$", dryrun.stdout + dryrun.stderr, re.MULTILINE)
    return os.path.dirname(here.group(1).strip()) if here else None


def is_toolkit(folder: str | None) -> bool:
    return bool(folder) and os.path.isfile(os.path.join(folder, "include", "cuda_runtime.h"))


def find_cuda_home() -> tuple[str | None, str]:
    """(the CUDA toolkit folder or None, how it was found or why not)."""
    for variable in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(variable):
            folder = os.environ[variable]
            if is_toolkit(folder):
                return folder, f"{variable}={folder}"
            return None, f"{variable}={folder} holds no include/cuda_runtime.h; set it to the CUDA toolkit folder"
    nvcc = shutil.which("nvcc")
    if nvcc is not None:
        folder = toolkit_of(nvcc)
        if is_toolkit(folder):
            return folder, f"the toolkit of {nvcc}: {folder}"
    if is_toolkit("/usr/local/cuda"):
        return "/usr/local/cuda", "/usr/local/cuda"
    return None, "no CUDA toolkit found (nvcc is not on the PATH); set CUDA_HOME to the folder with bin/nvcc"


def arch_token(arch_list: str) -> str:
    """TORCH_CUDA_ARCH_LIST ("8.0;9.0+PTX") as a macro value that survives the shell ("8.0,9.0+PTX")."""
    return ",".join(re.split(r"[;\s]+", arch_list.strip()))


def check_build_tools() -> None:
    """Without build isolation pip uses this environment's setuptools, which needs the ``wheel``
    package below version 70.1 (else: "invalid command 'bdist_wheel'")."""
    try:
        import setuptools.command.bdist_wheel  # noqa: F401
    except ImportError:
        try:
            import wheel  # noqa: F401
        except ImportError:
            sys.exit("hipnnts-kernels: this environment's setuptools needs the wheel package to build: "
                     "pip install wheel (or 'setuptools>=70.1'), then install again")


#: Flags of the CPU kernels: no -march (the library picks AVX2 kernels at run time, csrc/cpu/capi.cpp);
#: contraction to FMA, and no errno or trap semantics, so that loops vectorise.
#: -Wno-psabi: the vector helpers are internal, so GCC's note on their calling convention does not apply.
CPU_FLAGS = ["-std=c++17", "-O3", "-ffp-contract=fast", "-fno-math-errno", "-fno-trapping-math", "-pthread",
             "-Wno-psabi"]


def cpu_kernels():
    """(the CPU kernels' Extension or None, why they are skipped or None)."""
    from setuptools import Extension

    if os.environ.get("HIPNNTS_NO_CPU_KERNELS") == "1":
        return None, "HIPNNTS_NO_CPU_KERNELS=1"
    if os.name == "nt":
        return None, "the CPU kernels are built with GCC or Clang; on Windows the package runs without them"
    sources = ["csrc/cpu/capi.cpp", "csrc/cpu/kernels_default.cpp", "csrc/cpu/kernels_avx2.cpp"]
    # optional: a failed compile (no compiler) skips the library instead of failing the install
    return Extension("hipnnts_kernels._cpu_kernels", sources=sources, language="c++", optional=True,
                     extra_compile_args=CPU_FLAGS, extra_link_args=["-pthread"]), None


def cuda_extension():
    """(cmdclass, ext_modules, why the extension is skipped or None)."""
    if os.environ.get("HIPNNTS_NO_CUDA") == "1":
        return {}, [], "HIPNNTS_NO_CUDA=1"
    try:
        import torch
    except ImportError:
        return {}, [], "torch is not importable in the build environment (use --no-build-isolation)"
    if torch.version.cuda is None:
        return {}, [], f"torch {torch.__version__} has no CUDA"
    cuda_home, found = find_cuda_home()
    if cuda_home is None:
        return {}, [], found
    os.environ["CUDA_HOME"] = cuda_home  # read by torch.utils.cpp_extension when it is imported
    say(f"building the CUDA extension with CUDA from {found}")
    from torch.utils.cpp_extension import BuildExtension, CUDAExtension

    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
    archs = f"-DHIPNNTS_CUDA_ARCHS={arch_token(os.environ['TORCH_CUDA_ARCH_LIST'])}"
    extension = CUDAExtension(
        "hipnnts_kernels._C",
        sources=["csrc/torch_ops.cpp", "csrc/kernels/launch.cu"],
        include_dirs=[os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc")],
        extra_compile_args={"cxx": ["-O3", archs], "nvcc": ["-O3"]},
    )
    return {"build_ext": BuildExtension}, [extension], None


if __name__ == "__main__":  # pip's build backend runs this file as __main__; tests import its helpers
    check_build_tools()
    cmdclass, ext_modules, skipped = cuda_extension()
    if skipped:
        say(f"building without the CUDA extension ({skipped})")
    cpu, cpu_skipped = cpu_kernels()
    if cpu_skipped:
        say(f"building without the CPU kernels ({cpu_skipped})")
    setup(cmdclass=cmdclass, ext_modules=ext_modules + ([cpu] if cpu else []))
