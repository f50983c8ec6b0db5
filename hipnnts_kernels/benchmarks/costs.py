"""Bytes and FLOPs of each op at each derivative level: the numerator of achieved GB/s and GFLOP/s.

Bytes are the compulsory memory traffic: every input read once and every output written once;
intermediates and re-reads are not counted, so a kernel at 100 % of the measured copy
bandwidth by this count is at the memory floor. For an op with differentiable inputs of I bytes,
an output of O bytes and index (or other non-differentiable) inputs of X bytes:

- ``forward`` reads I + X and writes O;
- the backward reads the output gradient, the inputs and X, and writes the input gradients: O + 2I + X;
- the double backward reads the output gradient, the inputs, their cotangents and X, and writes
  the output gradient's gradient and the inputs' gradients: 2O + 3I + X.

Levels are cumulative, as a model runs them: ``forward+backward`` = forward + backward,
``training`` = forward + backward + double backward. Parameter vectors (mu, sigma, lambda: nu or
F numbers) are left out.

FLOPs count the op's arithmetic in its efficient form, one FLOP per add, multiply or elementary
function. Each op is (multi)linear in its heavy inputs, so the backward costs two forwards (one
vector-Jacobian product per input pair) and the double backward four; the levels are therefore
1, 3 and 7 forwards. That is exact for the envsum family and the contraction part of the
interaction, and an approximation for the elementwise geometry ops, which are memory-bound anyway.
"""
from __future__ import annotations

from dataclasses import dataclass

LEVELS = ("forward", "forward+backward", "training")
_FORWARDS_PER_LEVEL = {"forward": 1, "forward+backward": 3, "training": 7}
#: Angular components per pair for lmax 0, 1, 2 (SPEC section 3).
COMPONENTS = {0: 1, 1: 4, 2: 9}


@dataclass(frozen=True)
class OpCost:
    """Sizes of one op call in bytes, and its forward FLOPs."""

    input_bytes: int  #: differentiable inputs (I)
    output_bytes: int  #: the output (O)
    index_bytes: int  #: pair indices and other non-differentiable inputs (X)
    forward_flops: int

    def pass_bytes(self, name: str) -> int:
        """Compulsory traffic of one pass: ``forward``, ``backward`` or ``double`` (backward)."""
        i, o, x = self.input_bytes, self.output_bytes, self.index_bytes
        return {"forward": i + o + x, "backward": o + 2 * i + x, "double": 2 * o + 3 * i + x}[name]

    def bytes(self, level: str) -> int:
        """Compulsory traffic of ``level`` (cumulative, see the module docstring)."""
        passes = {"forward": ("forward",), "forward+backward": ("forward", "backward"),
                  "training": ("forward", "backward", "double")}[level]
        return sum(self.pass_bytes(p) for p in passes)

    def flops(self, level: str) -> int:
        return _FORWARDS_PER_LEVEL[level] * self.forward_flops


def op_cost(op: str, n_atoms: int, n_pairs: int, nu: int, features: int, lmax: int, itemsize: int,
            index_itemsize: int = 8) -> OpCost:
    """Cost of ``op`` on N atoms, P pairs, nu sensitivities and F features (SPEC sections 3, 4, 8).

    ``lmax`` matters for ``tensor_factors`` and ``interaction`` only. The envsum family and the
    interaction read two pair-index vectors (P each); the interaction also reads the receivers'
    CSR segment starts (N + 1).
    """
    s, n, p = itemsize, n_atoms, n_pairs
    pairs_index = 2 * p * index_itemsize
    c = COMPONENTS[lmax]
    env, feat, sens = n * nu * features * s, n * features * s, p * nu * s
    if op == "envsum":  # sens (P, nu), feat (N, F) -> env (N, nu, F)
        return OpCost(sens + feat, env, pairs_index, 2 * p * nu * features)
    if op == "sensesum":  # env, feat -> sens
        return OpCost(env + feat, sens, pairs_index, 2 * p * nu * features)
    if op == "featsum":  # env, sens -> feat
        return OpCost(env + sens, feat, pairs_index, 2 * p * nu * features)
    if op == "sensitivity":  # dist (P,) -> (P, nu): 1/r, difference, square, two multiplies, exp, cutoff product
        return OpCost(p * s, sens, 0, 8 * p * nu)
    if op == "tensor_factors":  # unit (P, 3) -> (P, C): one multiply-add per component
        return OpCost(3 * p * s, c * p * s, 0, 2 * c * p)
    if op == "interaction":
        # Y (N, nu, F) and pair vectors (P, 3) -> (N, F). Contraction u[p] = sum_nu s[p, nu] Y[j, nu]
        # (2 P nu F), then m[i, c] += Y_c(r_hat_p) u[p] (2 P C F); invariants and sensitivities are small.
        return OpCost(env + 3 * p * s, feat, pairs_index + (n + 1) * index_itemsize,
                      2 * p * features * (nu + c))
    raise ValueError(f"unknown op {op!r}")
