"""Pieces shared by the Triton kernels: per-pair geometry as ``@triton.jit`` device functions, and
launch helpers (block sizes, warps, dtype-exact constants, placeholders for empty tensors).

Floating literals inside kernels are limited to values exact in float32 (0.5, 1.0, 2.0): Triton
types a Python float as float32, which would round constants such as 1/3 in float64 kernels.
Such constants travel in a small tensor of the input dtype instead (:func:`constants`).
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import math

import torch
import triton
import triton.language as tl
from torch import Tensor

# Order of the values in the constants tensor the kernels read with load_constants.
_CONSTANT_NAMES = ("k", "cutoff", "cusp_reg", "third")


@functools.lru_cache(maxsize=64)
def _constants_cached(cutoff: float, cusp_reg: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    values = {"k": math.pi / (2.0 * cutoff), "cutoff": cutoff, "cusp_reg": cusp_reg, "third": 1.0 / 3.0}
    return torch.tensor([values[name] for name in _CONSTANT_NAMES], dtype=dtype, device=device)


def constants(cutoff: float, cusp_reg: float, like: Tensor) -> Tensor:
    """(k = pi / (2 r_c), r_c, cusp_reg, 1/3) in ``like``'s dtype and device, cached per value."""
    return _constants_cached(float(cutoff), float(cusp_reg), like.dtype, like.device)


def pow2(n: int, minimum: int = 2) -> int:
    """Smallest power of two >= max(n, minimum) (Triton block sizes are powers of two)."""
    return max(minimum, triton.next_power_of_2(max(n, 1)))


def warps_for(elements: int, per_thread: int = 16) -> int:
    """Warps (a power of two, 1 to 16) that give a program's largest tile of ``elements`` entries
    about ``per_thread`` entries per thread."""
    return int(min(16, max(1, triton.next_power_of_2(max(1, elements // (32 * per_thread))))))


def on_device(t: Tensor) -> contextlib.AbstractContextManager:
    """``t``'s GPU as the current device (Triton launches on the current device); nothing for CPU
    tensors (the interpreter)."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def launches_on(argument: str):
    """Decorator: run a launcher with the GPU of its tensor argument ``argument`` current, so that
    tensors on another GPU than the current one get their kernels on their own GPU."""
    def wrap(fn):
        index = list(inspect.signature(fn).parameters).index(argument)

        @functools.wraps(fn)
        def run(*args, **kwargs):
            with on_device(kwargs[argument] if argument in kwargs else args[index]):
                return fn(*args, **kwargs)
        return run
    return wrap


def pointer(t: Tensor | None, like: Tensor) -> Tensor:
    """A tensor a kernel can take as a pointer: ``t`` itself, or a one-element placeholder when
    ``t`` is None or empty, which the kernel must never read. Floating placeholders hold NaN, so
    a kernel that reads one anyway shows it in its results (and in the tests)."""
    if t is None or t.numel() == 0:
        return like.new_full((1,), float("nan") if like.is_floating_point() else -1)
    return t


def per_feature(t: Tensor | None, like: Tensor, features: int) -> Tensor:
    """A (F,) vector the kernels read, or zeros of that shape when it is absent."""
    return like.new_zeros(features) if t is None else t.contiguous()


# ------------------------------------------------------------------------------------------------
# Device functions
# ------------------------------------------------------------------------------------------------
@triton.jit
def load_constants(consts):
    return tl.load(consts), tl.load(consts + 1), tl.load(consts + 2), tl.load(consts + 3)


@triton.jit
def load_sensitivity_params(mu_ptr, sigma_ptr, n, nu_mask):
    """1/mu and sigma as (NU_PAD,) vectors; padded lanes hold 1 and 0."""
    mu = tl.load(mu_ptr + n, mask=nu_mask, other=1.0)
    sigma = tl.load(sigma_ptr + n, mask=nu_mask, other=0.0)
    return 1.0 / mu, sigma


@triton.jit
def load_unit(coord_ptr, p):
    """Unit vector, distance and inverse distance of pair p from its (P, 3) pair vector."""
    x = tl.load(coord_ptr + p * 3)
    y = tl.load(coord_ptr + p * 3 + 1)
    z = tl.load(coord_ptr + p * 3 + 2)
    r = tl.sqrt(x * x + y * y + z * z)
    inv_r = 1.0 / r
    return x * inv_r, y * inv_r, z * inv_r, r, inv_r


@triton.jit
def sensitivity_value(r, inv_r, inv_mu, sigma, nu_mask, k, rc):
    """s_nu(r) = exp(-sigma^2 (1/r - 1/mu)^2 / 2) cos^2(k r) for r <= r_c, as (NU_PAD,); zero on padded lanes."""
    d = inv_r - inv_mu
    cos_a = tl.cos(r * k)
    gauss = tl.where(nu_mask, tl.exp(-0.5 * sigma * sigma * d * d), 0.0)
    return tl.where(r <= rc, gauss * cos_a * cos_a, 0.0)


@triton.jit
def sensitivity_first(r, inv_r, inv_mu, sigma, nu_mask, k, rc):
    """s_nu(r) and its partials (d/dr, d/dmu, d/dsigma), each (NU_PAD,), zero on padded lanes.

    s = G phi with G = exp(-sigma^2 d^2 / 2), d = 1/r - 1/mu and phi = cos^2(k r) for r <= r_c.
    """
    d = inv_r - inv_mu
    sig2 = sigma * sigma
    gauss = tl.where(nu_mask, tl.exp(-0.5 * sig2 * d * d), 0.0)
    cos_a = tl.cos(r * k)
    sin_a = tl.sin(r * k)
    inside = r <= rc
    phi = tl.where(inside, cos_a * cos_a, 0.0)
    dphi = tl.where(inside, -2.0 * k * sin_a * cos_a, 0.0)
    g_r = gauss * sig2 * d * inv_r * inv_r
    g_mu = -gauss * sig2 * d * inv_mu * inv_mu
    g_sigma = -gauss * sigma * d * d
    return gauss * phi, g_r * phi + gauss * dphi, g_mu * phi, g_sigma * phi


@triton.jit
def sensitivity_second(r, inv_r, inv_mu, sigma, nu_mask, k, rc):
    """Second partials of s: (rr, r mu, r sigma, mu mu, mu sigma, sigma sigma), each (NU_PAD,)."""
    d = inv_r - inv_mu
    sig2 = sigma * sigma
    sd2 = sig2 * d * d
    gauss = tl.where(nu_mask, tl.exp(-0.5 * sd2), 0.0)
    cos_a = tl.cos(r * k)
    sin_a = tl.sin(r * k)
    inside = r <= rc
    phi = tl.where(inside, cos_a * cos_a, 0.0)
    dphi = tl.where(inside, -2.0 * k * sin_a * cos_a, 0.0)
    ddphi = tl.where(inside, -2.0 * k * k * (cos_a * cos_a - sin_a * sin_a), 0.0)
    g_r = gauss * sig2 * d * inv_r * inv_r
    g_mu = -gauss * sig2 * d * inv_mu * inv_mu
    g_sigma = -gauss * sigma * d * d
    g_rr = gauss * sig2 * inv_r * inv_r * inv_r * ((sd2 - 1.0) * inv_r - 2.0 * d)
    g_rmu = gauss * sig2 * inv_r * inv_r * inv_mu * inv_mu * (1.0 - sd2)
    g_rsigma = gauss * sigma * d * inv_r * inv_r * (2.0 - sd2)
    g_mumu = gauss * sig2 * inv_mu * inv_mu * inv_mu * ((sd2 - 1.0) * inv_mu + 2.0 * d)
    g_musigma = gauss * sigma * d * inv_mu * inv_mu * (sd2 - 2.0)
    g_sigmasigma = gauss * d * d * (sd2 - 1.0)
    return (g_rr * phi + 2.0 * g_r * dphi + gauss * ddphi, g_rmu * phi + g_mu * dphi, g_rsigma * phi + g_sigma * dphi,
            g_mumu * phi, g_musigma * phi, g_sigmasigma * phi)


@triton.jit
def angular_factors(ux, uy, uz, third, c, LMAX: tl.constexpr):
    """Factors [1 | x, y, z | Qxx, Qxy, Qxz, Qyy, Qyz] as a (C_PAD,) vector over component index c."""
    a = tl.where(c == 0, 1.0, 0.0).to(ux.dtype)
    if LMAX >= 1:
        a = tl.where(c == 1, ux, a)
        a = tl.where(c == 2, uy, a)
        a = tl.where(c == 3, uz, a)
    if LMAX >= 2:
        a = tl.where(c == 4, ux * ux - third, a)
        a = tl.where(c == 5, ux * uy, a)
        a = tl.where(c == 6, ux * uz, a)
        a = tl.where(c == 7, uy * uy - third, a)
        a = tl.where(c == 8, uy * uz, a)
    return a


@triton.jit
def quad_jacobian(vx, vy, vz, c):
    """Columns d/du_x, d/du_y, d/du_z of the quadrupole factors' Jacobian at u = v, as (C_PAD,)
    vectors (zero outside rows 4-8). Linear in v, so evaluated at a tangent t it is the Hessian
    of the factors applied to t."""
    jx = tl.where(c == 4, 2.0 * vx, tl.where(c == 5, vy, tl.where(c == 6, vz, 0.0)))
    jy = tl.where(c == 5, vx, tl.where(c == 7, 2.0 * vy, tl.where(c == 8, vz, 0.0)))
    jz = tl.where(c == 6, vx, tl.where(c == 8, vy, 0.0))
    return jx, jy, jz


@triton.jit
def factor_jacobian(ux, uy, uz, c, LMAX: tl.constexpr):
    """Columns d(factors)/du_x, /du_y, /du_z at the unit vector u, as (C_PAD,) vectors.

    The gradient with respect to u from a gradient g of the factors is (sum g jx, sum g jy,
    sum g jz); the directional derivative of the factors along t is jx tx + jy ty + jz tz.
    """
    jx = tl.zeros(c.shape, dtype=ux.dtype)
    jy = tl.zeros(c.shape, dtype=ux.dtype)
    jz = tl.zeros(c.shape, dtype=ux.dtype)
    if LMAX >= 1:
        jx = tl.where(c == 1, 1.0, jx)
        jy = tl.where(c == 2, 1.0, jy)
        jz = tl.where(c == 3, 1.0, jz)
    if LMAX >= 2:
        qx, qy, qz = quad_jacobian(ux, uy, uz, c)
        jx += qx
        jy += qy
        jz += qz
    return jx, jy, jz


@triton.jit
def row(tile, c, index: tl.constexpr):
    """Row ``index`` of a (C_PAD, BLOCK_F) tile."""
    return tl.sum(tl.where(c[:, None] == index, tile, 0.0), axis=0)


@triton.jit
def chain_to_coord(gx, gy, gz, g_dist, ux, uy, uz, inv_r):
    """Gradient with respect to the pair vector from gradients with respect to r_hat and r."""
    radial = gx * ux + gy * uy + gz * uz
    return ((gx - radial * ux) * inv_r + g_dist * ux, (gy - radial * uy) * inv_r + g_dist * uy,
            (gz - radial * uz) * inv_r + g_dist * uz)
