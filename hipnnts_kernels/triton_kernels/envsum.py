"""hippynn's kernel family in Triton: ``envsum``, ``sensesum``, ``featsum`` (SPEC section 8).

``envsum`` runs one program per (receiver, nu block, feature block) over the receiver's CSR
segment, ``sensesum`` one per (receiver, nu block) over the same segment, and ``featsum`` one per
(sender, feature block) over the sender's segment. Each output row has exactly one writer: no
atomics, deterministic. The launchers are in :mod:`.launchers`.
"""
from __future__ import annotations

import triton
import triton.language as tl

from ._common import pow2


@triton.jit
def _envsum_kernel(sens, feat, second, order, ptr, out, NU, F, BLOCK_NU: tl.constexpr, BLOCK_F: tl.constexpr):
    i = tl.program_id(0).to(tl.int64)  # 64-bit row offsets
    n = tl.program_id(1) * BLOCK_NU + tl.arange(0, BLOCK_NU)
    f = tl.program_id(2) * BLOCK_F + tl.arange(0, BLOCK_F)
    nu_mask = n < NU
    f_mask = f < F
    acc = tl.zeros((BLOCK_NU, BLOCK_F), dtype=feat.dtype.element_ty)
    for q in range(tl.load(ptr + i), tl.load(ptr + i + 1)):
        p = tl.load(order + q)
        j = tl.load(second + p).to(tl.int64)
        s = tl.load(sens + p * NU + n, mask=nu_mask, other=0.0)
        x = tl.load(feat + j * F + f, mask=f_mask, other=0.0)
        acc += s[:, None] * x[None, :]
    tl.store(out + i * NU * F + n[:, None] * F + f[None, :], acc, mask=nu_mask[:, None] & f_mask[None, :])


@triton.jit
def _sensesum_kernel(env, feat, second, order, ptr, out, NU, F, BLOCK_NU: tl.constexpr, BLOCK_F: tl.constexpr):
    i = tl.program_id(0).to(tl.int64)  # 64-bit row offsets
    n = tl.program_id(1) * BLOCK_NU + tl.arange(0, BLOCK_NU)
    nu_mask = n < NU
    for q in range(tl.load(ptr + i), tl.load(ptr + i + 1)):
        p = tl.load(order + q)
        j = tl.load(second + p).to(tl.int64)
        acc = tl.zeros((BLOCK_NU,), dtype=feat.dtype.element_ty)
        for f0 in range(0, F, BLOCK_F):
            f = f0 + tl.arange(0, BLOCK_F)
            f_mask = f < F
            e = tl.load(env + i * NU * F + n[:, None] * F + f[None, :], mask=nu_mask[:, None] & f_mask[None, :],
                        other=0.0)
            x = tl.load(feat + j * F + f, mask=f_mask, other=0.0)
            acc += tl.sum(e * x[None, :], axis=1)
        tl.store(out + p * NU + n, acc, mask=nu_mask)


@triton.jit
def _featsum_kernel(env, sens, first, order, ptr, out, NU, F, BLOCK_NU: tl.constexpr, BLOCK_F: tl.constexpr):
    j = tl.program_id(0).to(tl.int64)  # 64-bit row offsets
    f = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    f_mask = f < F
    acc = tl.zeros((BLOCK_F,), dtype=env.dtype.element_ty)
    for q in range(tl.load(ptr + j), tl.load(ptr + j + 1)):
        p = tl.load(order + q)
        i = tl.load(first + p).to(tl.int64)
        for n0 in range(0, NU, BLOCK_NU):
            n = n0 + tl.arange(0, BLOCK_NU)
            nu_mask = n < NU
            e = tl.load(env + i * NU * F + n[:, None] * F + f[None, :], mask=nu_mask[:, None] & f_mask[None, :],
                        other=0.0)
            s = tl.load(sens + p * NU + n, mask=nu_mask, other=0.0)
            acc += tl.sum(e * s[:, None], axis=0)
    tl.store(out + j * F + f, acc, mask=f_mask)


def _blocks(nu: int, features: int) -> tuple[int, int]:
    """(BLOCK_NU, BLOCK_F) of the family's kernels."""
    return min(pow2(nu), 32), min(pow2(features), 64)
