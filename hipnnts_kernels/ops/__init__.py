"""Public ops. Each takes ``backend=`` ("auto" or a name from :mod:`hipnnts_kernels.backends`).

| op | computes |
|----|----------|
| :func:`envsum` | env[i, nu, f] = sum_{p: first=i} sens[p, nu] feat[second(p), f] |
| :func:`sensesum` | sens[p, nu] = sum_f env[first(p), nu, f] feat[second(p), f] |
| :func:`featsum` | feat[j, f] = sum_{p: second=j} sum_nu env[first(p), nu, f] sens[p, nu] |
| :func:`sensitivity` | s_nu(r), the HIP-NN sensitivities with cosine cutoff |
| :func:`chebyshev_radial` | Q_k(r), ETN's Chebyshev radial basis with smooth cutoff |
| :func:`tensor_factors` | angular factors [1, r_hat, r_hat r_hat^T - I/3] of each pair |
| :func:`interaction` | fused HIP-NN-TS interaction a0 + l1 a1 + l2 a2 (Y-route) |
"""
from .envsum import envsum, featsum, sensesum
from .geometry import chebyshev_radial, sensitivity, tensor_factors
from .interaction import interaction

__all__ = ["envsum", "sensesum", "featsum", "sensitivity", "chebyshev_radial", "tensor_factors", "interaction"]
