"""hippynn's kernel family ``envsum``, ``sensesum``, ``featsum`` (SPEC section 8).

Each op is a ``torch.library`` custom op with a fake kernel; its backward is built from the other
two ops, so derivatives of any order stay on the registered kernels of the chosen backend.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .. import backends, reference
from ..checks import check_pairs, check_tensor

for _name in ("envsum", "sensesum", "featsum"):
    backends.register(_name, "reference")(getattr(reference, _name))
    backends.register_lazy(_name, "triton", "hipnnts_kernels.triton_kernels.launchers", f"KERNELS.{_name}")
    backends.register_lazy(_name, "cuda", "hipnnts_kernels.cuda_backend", f"KERNELS.{_name}")
    backends.register_lazy(_name, "cpu", "hipnnts_kernels.cpu_backend", f"KERNELS.{_name}")


@torch.library.custom_op("hipnnts::envsum", mutates_args=())
def _envsum(sens: Tensor, feat: Tensor, pair_first: Tensor, pair_second: Tensor, backend: str) -> Tensor:
    return backends.implementation("envsum", backend)(sens, feat, pair_first, pair_second)


@torch.library.custom_op("hipnnts::sensesum", mutates_args=())
def _sensesum(env: Tensor, feat: Tensor, pair_first: Tensor, pair_second: Tensor, backend: str) -> Tensor:
    return backends.implementation("sensesum", backend)(env, feat, pair_first, pair_second)


@torch.library.custom_op("hipnnts::featsum", mutates_args=())
def _featsum(env: Tensor, sens: Tensor, pair_first: Tensor, pair_second: Tensor, backend: str) -> Tensor:
    return backends.implementation("featsum", backend)(env, sens, pair_first, pair_second)


@_envsum.register_fake
def _(sens, feat, pair_first, pair_second, backend):
    return sens.new_empty(feat.shape[0], sens.shape[1], feat.shape[1])


@_sensesum.register_fake
def _(env, feat, pair_first, pair_second, backend):
    return env.new_empty(pair_first.shape[0], env.shape[1])


@_featsum.register_fake
def _(env, sens, pair_first, pair_second, backend):
    return env.new_empty(env.shape[0], env.shape[2])


def _save_all(ctx, inputs, output):
    a, b, pair_first, pair_second, backend = inputs
    ctx.save_for_backward(a, b, pair_first, pair_second)
    ctx.backend = backend


def _envsum_backward(ctx, grad):
    sens, feat, pf, ps = ctx.saved_tensors
    d_sens = _sensesum(grad, feat, pf, ps, ctx.backend) if ctx.needs_input_grad[0] else None
    d_feat = _featsum(grad, sens, pf, ps, ctx.backend) if ctx.needs_input_grad[1] else None
    return d_sens, d_feat, None, None, None


def _sensesum_backward(ctx, grad):
    env, feat, pf, ps = ctx.saved_tensors
    d_env = _envsum(grad, feat, pf, ps, ctx.backend) if ctx.needs_input_grad[0] else None
    d_feat = _featsum(env, grad, pf, ps, ctx.backend) if ctx.needs_input_grad[1] else None
    return d_env, d_feat, None, None, None


def _featsum_backward(ctx, grad):
    env, sens, pf, ps = ctx.saved_tensors
    d_env = _envsum(sens, grad, pf, ps, ctx.backend) if ctx.needs_input_grad[0] else None
    d_sens = _sensesum(env, grad, pf, ps, ctx.backend) if ctx.needs_input_grad[1] else None
    return d_env, d_sens, None, None, None


_envsum.register_autograd(_envsum_backward, setup_context=_save_all)
_sensesum.register_autograd(_sensesum_backward, setup_context=_save_all)
_featsum.register_autograd(_featsum_backward, setup_context=_save_all)


def envsum(sens: Tensor, feat: Tensor, pair_first: Tensor, pair_second: Tensor, *, backend: str = "auto") -> Tensor:
    """Environment sum: env[i, nu, f] = sum over pairs p with first(p) = i of sens[p, nu] feat[second(p), f].

    Args:
        sens: (P, nu) pair sensitivities, float32 or float64.
        feat: (N, F) atom features, same dtype and device.
        pair_first, pair_second: (P,) int64/int32 receiver and sender atom of each pair, any order,
            duplicates allowed.
        backend: "auto" or a backend name (see :mod:`hipnnts_kernels.backends`).

    Returns:
        env: (N, nu, F).
    """
    check_tensor("sens", sens, (None, None))
    check_tensor("feat", feat, (None, None), like=sens)
    n_pairs = check_pairs(pair_first, pair_second, feat.shape[0], sens)
    check_tensor("sens", sens, (n_pairs, None))
    return _envsum(sens, feat, pair_first, pair_second, backends.resolve("envsum", backend, sens.device))


def sensesum(env: Tensor, feat: Tensor, pair_first: Tensor, pair_second: Tensor, *, backend: str = "auto") -> Tensor:
    """Sensitivity sum: sens[p, nu] = sum_f env[first(p), nu, f] feat[second(p), f].

    Args:
        env: (N, nu, F); feat: (N, F); pair_first, pair_second: (P,) indices.

    Returns:
        sens: (P, nu).
    """
    check_tensor("env", env, (None, None, None))
    check_tensor("feat", feat, (env.shape[0], env.shape[2]), like=env)
    check_pairs(pair_first, pair_second, env.shape[0], env)
    return _sensesum(env, feat, pair_first, pair_second, backends.resolve("sensesum", backend, env.device))


def featsum(env: Tensor, sens: Tensor, pair_first: Tensor, pair_second: Tensor, *, backend: str = "auto") -> Tensor:
    """Feature sum: feat[j, f] = sum over pairs p with second(p) = j of sum_nu env[first(p), nu, f] sens[p, nu].

    Args:
        env: (N, nu, F); sens: (P, nu); pair_first, pair_second: (P,) indices.

    Returns:
        feat: (N, F).
    """
    check_tensor("env", env, (None, None, None))
    n_pairs = check_pairs(pair_first, pair_second, env.shape[0], env)
    check_tensor("sens", sens, (n_pairs, env.shape[1]), like=env)
    return _featsum(env, sens, pair_first, pair_second, backends.resolve("featsum", backend, env.device))
