"""Build script: the pure-Python package, plus the CUDA extension ``hipnnts_kernels._C`` (csrc/)
when the torch in the build environment has CUDA and nvcc is found.

pip builds in an isolated environment without torch by default, which gives the pure-Python
package (``backend="cuda"`` then says the extension is not built). To build the extension, install
with the CUDA torch already present and no isolation:

    pip install --no-build-isolation -e .

``TORCH_CUDA_ARCH_LIST`` chooses the GPU architectures (default "8.0;9.0": A100, H100/H200);
``HIPNNTS_NO_CUDA=1`` skips the extension.
"""
import os
import sys

from setuptools import setup


def cuda_extension():
    """(cmdclass, ext_modules) for the CUDA extension, or why it is skipped."""
    if os.environ.get("HIPNNTS_NO_CUDA") == "1":
        return {}, [], "HIPNNTS_NO_CUDA=1"
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CUDAExtension
    except ImportError:
        return {}, [], "torch is not importable in the build environment (use --no-build-isolation)"
    if torch.version.cuda is None:
        return {}, [], f"torch {torch.__version__} has no CUDA"
    if CUDA_HOME is None:
        return {}, [], "nvcc / CUDA_HOME not found"
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
    extension = CUDAExtension(
        "hipnnts_kernels._C",
        sources=["csrc/torch_ops.cpp", "csrc/kernels/launch.cu"],
        include_dirs=[os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc")],
        extra_compile_args={"cxx": ["-O3"], "nvcc": ["-O3"]},
    )
    return {"build_ext": BuildExtension}, [extension], None


cmdclass, ext_modules, skipped = cuda_extension()
if skipped:
    print(f"hipnnts-kernels: building without the CUDA extension ({skipped})", file=sys.stderr)
setup(cmdclass=cmdclass, ext_modules=ext_modules)
