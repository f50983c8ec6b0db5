"""hippynn's kernel family in Triton: ``envsum``, ``sensesum``, ``featsum`` (SPEC section 8).

``envsum`` runs one program per (receiver, nu block, feature block) over the receiver's CSR
segment, ``featsum`` one per (sender, feature block) over the sender's segment, and ``sensesum``
one per (pair, nu block). Each output row has exactly one writer: no atomics, deterministic.
"""
from __future__ import annotations

import triton
import triton.language as tl
from torch import Tensor

from ..pair_index import pair_index
from ._common import pow2, warps_for


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
def _sensesum_kernel(env, feat, first, second, out, NU, F, BLOCK_NU: tl.constexpr, BLOCK_F: tl.constexpr):
    p = tl.program_id(0).to(tl.int64)  # 64-bit row offsets
    n = tl.program_id(1) * BLOCK_NU + tl.arange(0, BLOCK_NU)
    nu_mask = n < NU
    i = tl.load(first + p).to(tl.int64)
    j = tl.load(second + p).to(tl.int64)
    acc = tl.zeros((BLOCK_NU,), dtype=feat.dtype.element_ty)
    for f0 in range(0, F, BLOCK_F):
        f = f0 + tl.arange(0, BLOCK_F)
        f_mask = f < F
        e = tl.load(env + i * NU * F + n[:, None] * F + f[None, :], mask=nu_mask[:, None] & f_mask[None, :], other=0.0)
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
    return min(pow2(nu), 32), min(pow2(features), 64)


def envsum(sens: Tensor, feat: Tensor, pair_first: Tensor, pair_second: Tensor) -> Tensor:
    """(P, nu), (N, F) -> (N, nu, F); see :func:`hipnnts_kernels.reference.envsum`."""
    (n_pairs, nu), (n_atoms, features) = sens.shape, feat.shape
    out = feat.new_zeros(n_atoms, nu, features)
    if out.numel() == 0 or n_pairs == 0:
        return out
    index = pair_index(pair_first, pair_second, n_atoms)
    block_nu, block_f = _blocks(nu, features)
    grid = (n_atoms, triton.cdiv(nu, block_nu), triton.cdiv(features, block_f))
    _envsum_kernel[grid](sens.contiguous(), feat.contiguous(), pair_second.contiguous(), index.receiver_order,
                         index.receiver_ptr, out, nu, features, BLOCK_NU=block_nu, BLOCK_F=block_f,
                         num_warps=warps_for(block_nu * block_f))
    return out


def sensesum(env: Tensor, feat: Tensor, pair_first: Tensor, pair_second: Tensor) -> Tensor:
    """(N, nu, F), (N, F) -> (P, nu); see :func:`hipnnts_kernels.reference.sensesum`."""
    (_, nu, features), n_pairs = env.shape, pair_first.shape[0]
    out = env.new_zeros(n_pairs, nu)
    if out.numel() == 0 or features == 0:
        return out
    block_nu, block_f = _blocks(nu, features)
    _sensesum_kernel[(n_pairs, triton.cdiv(nu, block_nu))](
        env.contiguous(), feat.contiguous(), pair_first.contiguous(), pair_second.contiguous(), out, nu, features,
        BLOCK_NU=block_nu, BLOCK_F=block_f, num_warps=warps_for(block_nu * block_f))
    return out


def featsum(env: Tensor, sens: Tensor, pair_first: Tensor, pair_second: Tensor) -> Tensor:
    """(N, nu, F), (P, nu) -> (N, F); see :func:`hipnnts_kernels.reference.featsum`."""
    (n_atoms, nu, features), n_pairs = env.shape, sens.shape[0]
    out = env.new_zeros(n_atoms, features)
    if out.numel() == 0 or n_pairs == 0 or nu == 0:
        return out
    index = pair_index(pair_first, pair_second, n_atoms)
    block_nu, block_f = _blocks(nu, features)
    _featsum_kernel[(n_atoms, triton.cdiv(features, block_f))](
        env.contiguous(), sens.contiguous(), pair_first.contiguous(), index.sender_order, index.sender_ptr, out, nu,
        features, BLOCK_NU=block_nu, BLOCK_F=block_f, num_warps=warps_for(block_nu * block_f))
    return out
