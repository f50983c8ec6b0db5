"""Compile every Triton kernel for an NVIDIA target without a GPU, and print its resource usage.

Run as a script (``python tests/compile_triton_kernels.py [sm]``, default sm 90) with
``TRITON_INTERPRET`` unset; ``tests/test_triton_compile.py`` does so in CI. Compilation goes
through Triton's whole pipeline (TTIR, TTGIR, LLVM IR, PTX, ptxas), which catches what the
interpreter cannot: type errors in loop-carried values, float64 math, unsupported constructs.
The meta-parameters are the launchers' own (``launch_config``) at the SPEC section 7 shape.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from hipnnts_kernels.triton_kernels import envsum, geometry, interaction
from hipnnts_kernels.triton_kernels._common import pow2, warps_for

NU, FEATURES = 20, 128
INT_ARGS = {"NU", "F", "P", "C"}
INDEX_ARGS = {"second", "order", "ptr", "first"}


def compile_kernel(fn, dtype: str, config: dict, index_dtype: str = "i64", sm: int = 90) -> str:
    config = dict(config)
    num_warps = config.pop("num_warps", 4)
    signature = {}
    for name in fn.arg_names:
        if name in config:
            signature[name] = "constexpr"
        elif name in INT_ARGS:
            signature[name] = "i32"
        else:
            signature[name] = "*" + (index_dtype if name in INDEX_ARGS else dtype)
    start = time.perf_counter()
    kernel = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=config), target=GPUTarget("cuda", sm, 32),
                            options={"num_warps": num_warps})
    seconds = time.perf_counter() - start
    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    usage = "?"
    if os.path.exists(cuobjdump):
        with tempfile.NamedTemporaryFile(suffix=".cubin") as cubin:
            cubin.write(kernel.asm["cubin"])
            cubin.flush()
            dump = subprocess.run([cuobjdump, "--dump-resource-usage", cubin.name], capture_output=True, text=True)
            usage = " ".join(next((line for line in dump.stdout.splitlines() if "REG:" in line), "?").split()[:3])
    return f"{fn.__name__:26s} {dtype} {index_dtype} {config} warps={num_warps} {seconds:4.1f}s {usage}"


def main(sm: int) -> None:
    jobs = []
    for lmax in (0, 1, 2):
        for dtype in ("fp32", "fp64") if lmax == 2 else ("fp32",):
            cfg = {k: interaction.launch_config(k, NU, FEATURES, lmax)
                   for k in ("forward", "backward", "double_backward")}
            jobs += [(interaction._forward_kernel, dtype, cfg["forward"]),
                     (interaction._backward_kernel, dtype, cfg["backward"]),
                     (interaction._double_backward_kernel, dtype, dict(cfg["double_backward"], HAS_VY=True)),
                     (interaction._double_backward_kernel, dtype, dict(cfg["double_backward"], HAS_VY=False))]
    sender = interaction.launch_config("sender", NU, FEATURES, 2)
    jobs += [(interaction._sender_kernel, "fp32", dict(sender, HAS_B=has_b)) for has_b in (True, False)]
    block_nu, block_f = envsum._blocks(NU, FEATURES)
    family = dict(BLOCK_NU=block_nu, BLOCK_F=block_f, num_warps=warps_for(block_nu * block_f))
    jobs += [(fn, "fp32", family) for fn in (envsum._envsum_kernel, envsum._sensesum_kernel, envsum._featsum_kernel)]
    jobs += [(geometry._sensitivity_kernel, "fp32", dict(BLOCK_P=geometry._BLOCK_P, NU_PAD=pow2(NU))),
             (geometry._factors_kernel, "fp32", dict(LMAX=2, BLOCK_P=geometry._BLOCK_P, C_PAD=16))]
    for fn, dtype, config in jobs:
        print(compile_kernel(fn, dtype, config, sm=sm), flush=True)
    print(compile_kernel(interaction._forward_kernel, "fp32", interaction.launch_config("forward", NU, FEATURES, 2),
                         index_dtype="i32", sm=sm))


if __name__ == "__main__":
    if os.environ.get("TRITON_INTERPRET") == "1":
        sys.exit("unset TRITON_INTERPRET: the interpreter replaces the kernels this script compiles")
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 90)
