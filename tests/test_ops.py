"""The ops against the reference math and hippynn's own PyTorch kernels; autograd to any order."""
from __future__ import annotations

import math

import pytest
import torch

from hipnnts_kernels import ops, reference
from hipnnts_kernels.ops._composite import composite_vjp
from hipnnts_kernels.ops.envsum import _envsum, _featsum, _sensesum
from hipnnts_kernels.ops.geometry import _chebyshev_radial, _sensitivity, _tensor_factors
from hipnnts_kernels.ops.interaction import _interaction, _interaction_backward, _interaction_double_backward

F64 = torch.float64
CUTOFF = 3.5


def pair_list(n_atoms: int, n_pairs: int, seed: int, isolated: int | None = None):
    """Random unsorted pairs with duplicates; atom ``isolated`` (if given) takes part in none."""
    g = torch.Generator().manual_seed(seed)
    pool = torch.tensor([a for a in range(n_atoms) if a != isolated])
    pf = pool[torch.randint(0, len(pool), (n_pairs,), generator=g)]
    ps = pool[torch.randint(0, len(pool), (n_pairs,), generator=g)]
    pf, ps = torch.cat([pf, pf[:3]]), torch.cat([ps, ps[:3]])  # duplicated pairs
    return pf, ps


def interaction_inputs(lmax: int, n_atoms=6, n_pairs=15, nu=3, features=4, seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    pf, ps = pair_list(n_atoms, n_pairs, seed, isolated=n_atoms - 1)
    coord = torch.randn(pf.shape[0], 3, generator=g, dtype=dtype) * 1.4
    coord[0] *= CUTOFF * 1.5 / coord[0].norm()  # one pair beyond the cutoff
    return dict(
        Y=torch.randn(n_atoms, nu, features, generator=g, dtype=dtype),
        pair_coord=coord, pair_first=pf, pair_second=ps,
        mu=torch.linspace(0.8, 2.5, nu, dtype=dtype), sigma=torch.linspace(1.5, 3.0, nu, dtype=dtype),
        vecscales=torch.randn(features, generator=g, dtype=dtype) if lmax >= 1 else None,
        quadscales=torch.randn(features, generator=g, dtype=dtype) if lmax >= 2 else None,
    )


FLOAT_KEYS = ("Y", "pair_coord", "mu", "sigma", "vecscales", "quadscales")


def interaction_fn(inputs, lmax):
    """(function of the float inputs, list of those inputs) for gradcheck."""
    keys = [k for k in FLOAT_KEYS if inputs[k] is not None]
    leaves = [inputs[k].clone().requires_grad_() for k in keys]

    def fn(*xs, backend="auto"):
        kwargs = dict(inputs, **dict(zip(keys, xs)))
        return ops.interaction(**kwargs, cutoff=CUTOFF, lmax=lmax, backend=backend)

    return fn, leaves


def reference_interaction(inputs, lmax):
    i = inputs
    return reference.interaction(i["Y"], i["pair_coord"], i["pair_first"], i["pair_second"], i["mu"], i["sigma"],
                                 i["vecscales"], i["quadscales"], CUTOFF, 1e-6, lmax)


# ---------------------------------------------------------------------------------------------
# envsum family
# ---------------------------------------------------------------------------------------------
def envsum_inputs(seed=0, n_atoms=7, n_pairs=16, nu=3, features=5):
    g = torch.Generator().manual_seed(seed)
    pf, ps = pair_list(n_atoms, n_pairs, seed, isolated=2)
    return dict(
        sens=torch.randn(pf.shape[0], nu, generator=g, dtype=F64),
        feat=torch.randn(n_atoms, features, generator=g, dtype=F64),
        env=torch.randn(n_atoms, nu, features, generator=g, dtype=F64),
        pf=pf, ps=ps,
    )


def test_envsum_family_matches_hippynn_pytorch_kernels():
    env_pytorch = pytest.importorskip("hippynn.custom_kernels.env_pytorch")
    x = envsum_inputs()
    torch.testing.assert_close(ops.envsum(x["sens"], x["feat"], x["pf"], x["ps"]),
                               env_pytorch.envsum(x["sens"], x["feat"], x["pf"], x["ps"]), rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(ops.sensesum(x["env"], x["feat"], x["pf"], x["ps"]),
                               env_pytorch.sensesum(x["env"], x["feat"], x["pf"], x["ps"]), rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(ops.featsum(x["env"], x["sens"], x["pf"], x["ps"]),
                               env_pytorch.featsum(x["env"], x["sens"], x["pf"], x["ps"]), rtol=1e-13, atol=1e-13)


def test_envsum_by_explicit_loop():
    x = envsum_inputs(seed=3)
    expected = torch.zeros(7, 3, 5, dtype=F64)
    for p, (i, j) in enumerate(zip(x["pf"].tolist(), x["ps"].tolist())):
        expected[i] += torch.outer(x["sens"][p], x["feat"][j])
    torch.testing.assert_close(ops.envsum(x["sens"], x["feat"], x["pf"], x["ps"]), expected)
    assert ops.envsum(x["sens"], x["feat"], x["pf"], x["ps"])[2].abs().max() == 0  # atom 2 has no pairs


@pytest.mark.parametrize("name", ["envsum", "sensesum", "featsum"])
def test_envsum_family_gradcheck(name):
    x = envsum_inputs(seed=1)
    first, second = {"envsum": ("sens", "feat"), "sensesum": ("env", "feat"), "featsum": ("env", "sens")}[name]
    op = getattr(ops, name)
    a, b = x[first].requires_grad_(), x[second].requires_grad_()
    fn = lambda a, b: op(a, b, x["pf"], x["ps"])  # noqa: E731
    assert torch.autograd.gradcheck(fn, (a, b))
    assert torch.autograd.gradgradcheck(fn, (a, b))


def test_envsum_backward_is_built_from_sensesum_and_featsum():
    x = envsum_inputs(seed=2)
    sens, feat = x["sens"].requires_grad_(), x["feat"].requires_grad_()
    out = ops.envsum(sens, feat, x["pf"], x["ps"])
    grad = torch.randn_like(out)
    d_sens, d_feat = torch.autograd.grad(out, (sens, feat), grad)
    assert torch.equal(d_sens, ops.sensesum(grad, feat.detach(), x["pf"], x["ps"]))
    assert torch.equal(d_feat, ops.featsum(grad, sens.detach(), x["pf"], x["ps"]))


def test_envsum_family_empty_pair_list():
    x = envsum_inputs()
    empty = torch.zeros(0, dtype=torch.long)
    sens = torch.zeros(0, 3, dtype=F64, requires_grad=True)
    env = ops.envsum(sens, x["feat"], empty, empty)
    assert env.shape == (7, 3, 5) and env.abs().max() == 0
    assert ops.sensesum(x["env"], x["feat"], empty, empty).shape == (0, 3)
    assert ops.featsum(x["env"], sens, empty, empty).abs().max() == 0
    (grad,) = torch.autograd.grad(env.sum(), sens)
    assert grad.shape == (0, 3)


# ---------------------------------------------------------------------------------------------
# sensitivities and tensor factors
# ---------------------------------------------------------------------------------------------
def test_sensitivity_formula_and_cutoff():
    dist = torch.tensor([0.9, 2.0, CUTOFF, CUTOFF + 0.1], dtype=F64)
    mu, sigma = torch.tensor([1.0, 2.5], dtype=F64), torch.tensor([2.0, 3.0], dtype=F64)
    s = ops.sensitivity(dist, mu, sigma, CUTOFF)
    r, m, sg = 2.0, 2.5, 3.0
    expected = math.exp(-0.5 * sg**2 * (1 / r - 1 / m) ** 2) * math.cos(math.pi * r / (2 * CUTOFF)) ** 2
    assert s[1, 1].item() == pytest.approx(expected, rel=1e-14)
    assert s[2].abs().max() < 1e-30 and s[3].abs().max() == 0  # at and beyond r_c
    assert torch.autograd.gradcheck(lambda d, m, s: ops.sensitivity(d, m, s, CUTOFF),
                                    (dist[:2].clone().requires_grad_(), mu.requires_grad_(), sigma.requires_grad_()))
    assert torch.autograd.gradgradcheck(lambda d, m, s: ops.sensitivity(d, m, s, CUTOFF),
                                        (dist[:2].clone().requires_grad_(), mu, sigma))


def test_chebyshev_radial_formula_cutoff_and_derivatives():
    dist = torch.tensor([0.0, 0.4, 1.7, 3.2, CUTOFF, CUTOFF + 0.1, 1e4], dtype=F64)
    q = ops.chebyshev_radial(dist, 6, CUTOFF)
    x = (2 * dist[:4] / CUTOFF - 1).clamp(-1, 1)
    k = torch.arange(6, dtype=F64)
    expected = torch.cos(k * torch.acos(x).unsqueeze(1)) * ((1 - dist[:4] / CUTOFF) ** 2).unsqueeze(1)
    torch.testing.assert_close(q[:4], expected, rtol=1e-12, atol=1e-14)
    assert torch.equal(q[4:], torch.zeros(3, 6, dtype=F64))  # at and beyond r_c, however far
    # value and first derivative vanish at r_c from below
    r = torch.tensor([CUTOFF - 1e-7], dtype=F64, requires_grad=True)
    (slope,) = torch.autograd.grad(ops.chebyshev_radial(r, 6, CUTOFF).sum(), r)
    assert abs(float(slope)) < 1e-6
    d = dist[1:4].clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda r: ops.chebyshev_radial(r, 6, CUTOFF), (d,))
    assert torch.autograd.gradgradcheck(lambda r: ops.chebyshev_radial(r, 6, CUTOFF), (d,))
    assert ops.chebyshev_radial(dist, 1, CUTOFF).shape == (7, 1)
    assert ops.chebyshev_radial(dist[:0], 4, CUTOFF).shape == (0, 4)


@pytest.mark.parametrize("n_basis, cutoff, match", [(0, CUTOFF, "n_basis"), (2.0, CUTOFF, "n_basis"),
                                                    (True, CUTOFF, "n_basis"), (3, 0.0, "cutoff")])
def test_chebyshev_radial_bad_arguments(n_basis, cutoff, match):
    with pytest.raises(ValueError, match=match):
        ops.chebyshev_radial(torch.ones(3, dtype=F64), n_basis, cutoff)


def test_sensitivity_matches_hippynn_module():
    sensitivity = pytest.importorskip("hippynn.layers.hiplayers.sensitivity")
    module = sensitivity.InverseSensitivityModule(6, 0.85, 3.0, CUTOFF).double()
    dist = torch.linspace(0.9, CUTOFF + 0.5, 40, dtype=F64)
    expected = module(dist, warn_low_distances=False)
    got = ops.sensitivity(dist, module.mu.detach().reshape(-1), module.sigma.detach().reshape(-1), CUTOFF)
    torch.testing.assert_close(got, expected, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("lmax", [0, 1, 2])
def test_tensor_factors(lmax):
    unit = torch.nn.functional.normalize(torch.randn(11, 3, dtype=F64), dim=1)
    factors = ops.tensor_factors(unit, lmax)
    assert factors.shape == (11, (1, 4, 9)[lmax])
    assert torch.equal(factors[:, 0], torch.ones(11, dtype=F64))
    if lmax == 2:
        q = torch.einsum("pa,pb->pab", unit, unit) - torch.eye(3, dtype=F64) / 3
        torch.testing.assert_close(factors[:, 4:], q.reshape(-1, 9)[:, [0, 1, 2, 4, 5]])
    unit.requires_grad_()
    assert torch.autograd.gradcheck(lambda u: ops.tensor_factors(u, lmax), (unit,))
    assert torch.autograd.gradgradcheck(lambda u: ops.tensor_factors(u, lmax), (unit,))


# ---------------------------------------------------------------------------------------------
# fused interaction
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("lmax", [0, 1, 2])
def test_interaction_matches_env_route(lmax):
    """Y-route == hippynn's env route: envsum of the stacked sensitivities, then W per component."""
    x = interaction_inputs(lmax, features=4, seed=5)
    n_atoms, nu, n_in = 6, 3, 5
    W = torch.randn(nu, 4, n_in, dtype=F64)
    z = torch.randn(n_atoms, n_in, dtype=F64)
    stack = reference.sensitivity_stack(x["pair_coord"], x["mu"], x["sigma"], CUTOFF, lmax)
    env = ops.envsum(stack, z, x["pair_first"], x["pair_second"]).reshape(n_atoms, -1, nu, n_in)
    m = torch.einsum("icnf,nof->ico", env, W)
    expected = m[:, 0]
    if lmax >= 1:
        expected = expected + x["vecscales"] * (m[:, 1:4].square().sum(1) + 1e-6).sqrt()
    if lmax >= 2:
        q = m[:, 4:]
        expected = expected + x["quadscales"] * (2 * (q.square().sum(1) + q[:, 0] * q[:, 3]) + 1e-6).sqrt()
    x["Y"] = torch.einsum("nof,jf->jno", W, z)
    torch.testing.assert_close(ops.interaction(**x, cutoff=CUTOFF, lmax=lmax), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("lmax", [0, 1, 2])
def test_interaction_gradcheck_and_gradgradcheck(lmax):
    fn, leaves = interaction_fn(interaction_inputs(lmax, seed=lmax), lmax)
    assert torch.autograd.gradcheck(fn, leaves)
    assert torch.autograd.gradgradcheck(fn, leaves)


@pytest.mark.parametrize("lmax", [0, 1, 2])
def test_interaction_derivatives_match_reference_autograd(lmax):
    """First, second and third derivatives of the op against autograd of the pure composite."""
    x = interaction_inputs(lmax, seed=10 + lmax)
    fn, leaves = interaction_fn(x, lmax)
    keys = [k for k in FLOAT_KEYS if x[k] is not None]

    def ref(*xs):
        return reference_interaction(dict(x, **dict(zip(keys, xs))), lmax)

    def three_orders(f):
        out = f(*leaves)
        g1 = torch.autograd.grad(out.square().sum(), leaves, create_graph=True)
        g2 = torch.autograd.grad(sum((g**3).sum() for g in g1), leaves, create_graph=True)
        g3 = torch.autograd.grad(sum((g**2).sum() for g in g2), leaves)
        return g1, g2, g3

    for got, want in zip(three_orders(fn), three_orders(ref)):
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10 * float(b.detach().abs().max()))


@pytest.mark.parametrize("lmax", [0, 1, 2])
def test_analytic_double_backward_matches_autograd_of_the_backward(lmax):
    """reference.interaction_double_backward == autograd VJP of reference.interaction_backward, for
    every cotangent alone and all together."""
    x = interaction_inputs(lmax, seed=90 + lmax)
    args = (torch.randn(6, 4, dtype=F64), x["Y"], x["pair_coord"], x["pair_first"], x["pair_second"], x["mu"],
            x["sigma"], x["vecscales"], x["quadscales"])
    shapes = [x[k] for k in FLOAT_KEYS]
    subsets = [list(range(6))] + [[k] for k in range(6) if shapes[k] is not None]
    for subset in subsets:
        cot = [torch.randn_like(v) if v is not None and k in subset else None for k, v in enumerate(shapes)]
        got = reference.interaction_double_backward(*args, *cot, CUTOFF, 1e-6, lmax)
        want = composite_vjp(reference.interaction_backward, (*args, CUTOFF, 1e-6, lmax), cot)
        want = [want[i] for i in (0, 1, 2, 5, 6, 7, 8)]
        for a, b in zip(got, want):
            if b is None:
                assert a.numel() == 0
            else:
                torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12 * float(b.abs().max()))


@pytest.mark.parametrize("lmax", [0, 1, 2])
def test_interaction_opcheck(lmax):
    x = interaction_inputs(lmax, seed=20 + lmax)
    for k in FLOAT_KEYS:
        if x[k] is not None:
            x[k].requires_grad_()
    args = (x["Y"], x["pair_coord"], x["pair_first"], x["pair_second"], x["mu"], x["sigma"], x["vecscales"],
            x["quadscales"], CUTOFF, 1e-6, lmax, "reference")
    torch.library.opcheck(_interaction, args)
    grad_out = torch.randn(6, 4, dtype=F64, requires_grad=True)
    torch.library.opcheck(_interaction_backward, (grad_out, *args))
    cotangents = [None if x[k] is None else torch.randn_like(x[k]).requires_grad_() for k in FLOAT_KEYS]
    torch.library.opcheck(_interaction_double_backward, (grad_out, *args[:8], *cotangents, *args[8:]))


def test_opcheck_envsum_family_and_geometry():
    x = envsum_inputs(seed=4)
    for k in ("sens", "feat", "env"):
        x[k].requires_grad_()
    torch.library.opcheck(_envsum, (x["sens"], x["feat"], x["pf"], x["ps"], "reference"))
    torch.library.opcheck(_sensesum, (x["env"], x["feat"], x["pf"], x["ps"], "reference"))
    torch.library.opcheck(_featsum, (x["env"], x["sens"], x["pf"], x["ps"], "reference"))
    dist = (torch.rand(9, dtype=F64) + 0.5).requires_grad_()
    mu = (torch.rand(4, dtype=F64) + 1).requires_grad_()
    torch.library.opcheck(_sensitivity, (dist, mu, mu.detach().clone().requires_grad_(), CUTOFF, "reference"))
    unit = torch.nn.functional.normalize(torch.randn(9, 3, dtype=F64), dim=1).requires_grad_()
    torch.library.opcheck(_tensor_factors, (unit, 2, "reference"))
    torch.library.opcheck(_chebyshev_radial, (dist, 6, CUTOFF, "reference"))


@pytest.mark.parametrize("lmax", [0, 1, 2])
def test_interaction_edge_cases(lmax):
    x = interaction_inputs(lmax, seed=30)
    out = ops.interaction(**x, cutoff=CUTOFF, lmax=lmax)
    # the isolated atom (last) sees only sqrt(eps) terms
    iso = torch.zeros(4, dtype=F64)
    if lmax >= 1:
        iso = iso + x["vecscales"] * math.sqrt(1e-6)
    if lmax >= 2:
        iso = iso + x["quadscales"] * math.sqrt(1e-6)
    torch.testing.assert_close(out[-1], iso)
    # a duplicated pair counts twice
    dup = dict(x, pair_coord=x["pair_coord"][[1, 1]], pair_first=x["pair_first"][[1, 1]],
               pair_second=x["pair_second"][[1, 1]])
    one = dict(dup, pair_coord=x["pair_coord"][[1]], pair_first=x["pair_first"][[1]],
               pair_second=x["pair_second"][[1]])
    receiver = int(x["pair_first"][1])
    doubled = dict(one, Y=2 * x["Y"])
    torch.testing.assert_close(ops.interaction(**dup, cutoff=CUTOFF, lmax=lmax)[receiver],
                               ops.interaction(**doubled, cutoff=CUTOFF, lmax=lmax)[receiver])
    # empty pair list: every atom is isolated; gradients keep their shapes
    empty = dict(x, pair_coord=x["pair_coord"][:0].requires_grad_(), pair_first=x["pair_first"][:0],
                 pair_second=x["pair_second"][:0], Y=x["Y"].clone().requires_grad_())
    out = ops.interaction(**empty, cutoff=CUTOFF, lmax=lmax)
    torch.testing.assert_close(out, iso.expand(6, 4))
    g_coord, g_y = torch.autograd.grad(out.sum(), (empty["pair_coord"], empty["Y"]))
    assert g_coord.shape == (0, 3) and g_y.abs().max() == 0


def test_interaction_pair_exactly_at_cutoff_contributes_nothing():
    x = interaction_inputs(2, seed=40)
    at_cut = dict(x, pair_coord=x["pair_coord"][:1] / x["pair_coord"][:1].norm() * CUTOFF,
                  pair_first=x["pair_first"][:1], pair_second=x["pair_second"][:1])
    at_cut["pair_coord"].requires_grad_()
    out = ops.interaction(**at_cut, cutoff=CUTOFF, lmax=2)
    base = ops.interaction(**dict(at_cut, pair_coord=at_cut["pair_coord"][:0], pair_first=at_cut["pair_first"][:0],
                                  pair_second=at_cut["pair_second"][:0]), cutoff=CUTOFF, lmax=2)
    torch.testing.assert_close(out, base, rtol=0, atol=1e-14)
    (grad,) = torch.autograd.grad(out.sum(), at_cut["pair_coord"])
    assert torch.isfinite(grad).all() and grad.abs().max() < 1e-12


def test_interaction_float32_error_within_float32_rounding():
    """float32 against float64: the error stays at float32 rounding level (flash-attention rule)."""
    x64 = interaction_inputs(2, n_atoms=30, n_pairs=200, nu=8, features=16, seed=50)
    x32 = {k: v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in x64.items()}
    exact = ops.interaction(**x64, cutoff=CUTOFF, lmax=2)
    err = (ops.interaction(**x32, cutoff=CUTOFF, lmax=2).double() - exact).abs().max()
    assert err <= 50 * torch.finfo(torch.float32).eps * exact.abs().max()


def test_torch_compile_traces_the_ops():
    x = interaction_inputs(2, seed=60)
    leaves = {k: x[k].clone().requires_grad_() for k in ("Y", "pair_coord")}

    def f(Y, pair_coord):
        out = ops.interaction(**dict(x, Y=Y, pair_coord=pair_coord), cutoff=CUTOFF, lmax=2)
        env = ops.envsum(out[x["pair_second"]][:, :2], out, x["pair_first"], x["pair_second"])
        return env.square().sum()

    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    got = compiled(**leaves)
    want = f(**leaves)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(torch.autograd.grad(got, list(leaves.values())),
                               torch.autograd.grad(want, list(leaves.values())))


@pytest.mark.parametrize("change, error, match", [
    (lambda x: x.update(Y=x["Y"][0]), ValueError, r"Y must have shape \(\*, \*, \*\)"),
    (lambda x: x.update(Y=x["Y"].float()), TypeError, "pair_coord has dtype float64 but the other floating"),
    (lambda x: x.update(mu=x["mu"][:2]), ValueError, r"mu must have shape \(3,\)"),
    (lambda x: x.update(pair_coord=x["pair_coord"][:, :2]), ValueError, "pair_coord must have shape"),
    (lambda x: x.update(quadscales=None), ValueError, "quadscales is required for lmax=2"),
    (lambda x: x.update(vecscales=x["vecscales"][:2]), ValueError, r"vecscales must have shape \(4,\)"),
    (lambda x: x.update(pair_second=x["pair_second"].float()), TypeError, "pair_second must have dtype int64"),
    (lambda x: x["pair_coord"].__setitem__((3, 0), math.nan), ValueError, "pair_coord holds a non-finite"),
    (lambda x: x["pair_coord"].__setitem__(2, 0.0), ValueError, r"pair_coord\[2\] is zero"),
])
def test_interaction_bad_inputs(change, error, match):
    x = interaction_inputs(2, seed=70)
    change(x)
    with pytest.raises(error, match=match):
        ops.interaction(**x, cutoff=CUTOFF, lmax=2)


def test_interaction_bad_options():
    x = interaction_inputs(1, seed=71)
    with pytest.raises(ValueError, match="lmax must be one of"):
        ops.interaction(**x, cutoff=CUTOFF, lmax=3)
    with pytest.raises(ValueError, match="quadscales must be None for lmax=1"):
        ops.interaction(**dict(x, quadscales=x["vecscales"]), cutoff=CUTOFF, lmax=1)
    with pytest.raises(ValueError, match="cutoff must be a positive number"):
        ops.interaction(**x, cutoff=-1.0, lmax=1)
    with pytest.raises(ValueError, match="feat must have shape"):
        ops.sensesum(torch.zeros(3, 2, 4), torch.zeros(3, 5), torch.tensor([0]), torch.tensor([1]))
