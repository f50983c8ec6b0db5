"""Compile every Triton kernel for an NVIDIA target without a GPU, and print its resource usage.

Run as a script (``python tests/compile_triton_kernels.py [sm]``, default sm 90) with
``TRITON_INTERPRET`` unset; ``tests/test_triton_compile.py`` does so in CI. Compilation goes
through Triton's whole pipeline (TTIR, TTGIR, LLVM IR, PTX, ptxas), which catches what the
interpreter cannot: type errors in loop-carried values, float64 math, unsupported constructs.
The meta-parameters are the launchers' own (``launch_config``) at the SPEC section 7 shape. The
interaction's kernels must stay within 128 registers without spills in float32 on sm_90; the script
exits non-zero naming those that do not.
"""
from __future__ import annotations

import os
import re
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
#: Kernels held to at most 128 registers and no spills in float32 (issue 14).
INTERACTION = (interaction._sender_contract_kernel, interaction._receiver_forward_kernel, interaction._receiver_kernel,
               interaction._sender_kernel)
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
    return f"{fn.__name__:26s} {dtype} {index_dtype} {config} warps={num_warps} {seconds:4.1f}s {usage(kernel, sm)}"


def usage(kernel, sm: int) -> str:
    """"REG:n STACK:n SPILL:n" of a compiled kernel: registers and stack frame from cuobjdump, spill
    stores + loads (bytes per thread) from the ptxas Triton uses, run again with -v on the kernel's
    PTX (the stack frame also holds, e.g., the slow path of sin and cos: no measure of spills)."""
    from triton.backends.nvidia.compiler import get_ptxas

    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    ptxas = get_ptxas(sm).path
    with tempfile.TemporaryDirectory() as tmp:
        cubin, ptx = os.path.join(tmp, "k.cubin"), os.path.join(tmp, "k.ptx")
        with open(cubin, "wb") as file:
            file.write(kernel.asm["cubin"])
        with open(ptx, "w") as file:
            file.write(kernel.asm["ptx"])
        dump = subprocess.run([cuobjdump, "--dump-resource-usage", cubin], capture_output=True, text=True).stdout
        arch = f"sm_{sm}a" if sm >= 90 else f"sm_{sm}"
        verbose = subprocess.run([ptxas, f"-arch={arch}", "-v", ptx, "-o", os.path.join(tmp, "again.cubin")],
                                 capture_output=True, text=True)
    if verbose.returncode != 0:
        raise RuntimeError(f"ptxas -v failed on {kernel.name}:\n{verbose.stderr[-2000:]}")
    resources = " ".join(next((line for line in dump.splitlines() if "REG:" in line), "?").split()[:2])
    spills = sum(int(n) for n in re.findall(r"(\d+) bytes spill (?:stores|loads)", verbose.stdout + verbose.stderr))
    return f"{resources} SPILL:{spills}"


def main(sm: int) -> None:
    jobs = []
    for lmax in (0, 1, 2):
        for dtype in ("fp32", "fp64") if lmax == 2 else ("fp32",):
            cfg = {k: interaction.launch_config(k, NU, FEATURES, lmax)
                   for k in ("receiver_forward", "receiver", "sender")}
            jobs += [(interaction._receiver_forward_kernel, dtype, cfg["receiver_forward"])]
            jobs += [(interaction._receiver_kernel, dtype, dict(cfg["receiver"], DOUBLE=double)) for double in (0, 1)]
            jobs += [(interaction._sender_kernel, dtype, dict(cfg["sender"], DOUBLE=double, HAS_VY=has_vy))
                     for double, has_vy in ((0, 0), (1, 1), (1, 0))]
    contract = interaction.launch_config("sender_contract", NU, FEATURES, 2)
    jobs += [(interaction._sender_contract_kernel, dtype, dict(contract, DOUBLE=double, HAS_VY=has_vy))
             for dtype in ("fp32", "fp64") for double, has_vy in ((0, 0), (1, 1), (1, 0))]
    block_nu, block_f = envsum._blocks(NU, FEATURES)
    family = dict(BLOCK_NU=block_nu, BLOCK_F=block_f, num_warps=warps_for(block_nu * block_f))
    jobs += [(fn, "fp32", family) for fn in (envsum._envsum_kernel, envsum._sensesum_kernel, envsum._featsum_kernel)]
    jobs += [(geometry._sensitivity_kernel, "fp32", dict(BLOCK_P=geometry._BLOCK_P, NU_PAD=pow2(NU))),
             (geometry._factors_kernel, "fp32", dict(LMAX=2, BLOCK_P=geometry._BLOCK_P, C_PAD=16)),
             (geometry._chebyshev_kernel, "fp32", dict(N_BASIS=8, BLOCK_P=geometry._BLOCK_P))]
    over = []
    for fn, dtype, config in jobs:
        line = compile_kernel(fn, dtype, config, sm=sm)
        print(line, flush=True)
        counts = re.search(r"REG:(\d+) .*SPILL:(\d+)", line)
        if sm == 90 and fn in INTERACTION and dtype == "fp32" and (int(counts[1]) > 128 or int(counts[2]) > 0):
            over.append(line)
    print(compile_kernel(interaction._sender_contract_kernel, "fp32", dict(contract, DOUBLE=0, HAS_VY=0),
                         index_dtype="i32", sm=sm))
    if over:
        sys.exit("over the interaction kernels' budget in float32 (at most 128 registers, no spills):\n"
                 + "\n".join(over))


if __name__ == "__main__":
    if os.environ.get("TRITON_INTERPRET") == "1":
        sys.exit("unset TRITON_INTERPRET: the interpreter replaces the kernels this script compiles")
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 90)
