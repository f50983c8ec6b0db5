"""One small case of every CUDA kernel, checked against the reference: the program that
bench/gpu_verify.sh runs under compute-sanitizer (memcheck, racecheck).

    PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck python bench/sanitizer_case.py

The interaction runs forward, backward and double backward (through autograd, as force training
does) at lmax 0, 1, 2 in float32 and at lmax 2 in float64; envsum, sensesum and featsum run forward
and backward; everything on both CUDA paths (per-atom: the split kernels and CSR; molecule blocks,
which change the interaction and featsum). The
molecules include single atoms (no neighbours) and the pairs are shuffled. Each result is compared
with the reference, so a kernel that writes nothing fails too. Exit status 1 on any mismatch.
"""
from __future__ import annotations

import sys

import torch

from hipnnts_kernels import cuda_backend, ops, pairs_within_cutoff
from hipnnts_kernels.checks import value_checks
from hipnnts_kernels.synthetic import random_molecules

DEVICE = torch.device("cuda")
CUTOFF = 4.0
TOLERANCE = {torch.float32: 2e-4, torch.float64: 1e-10}


def problem(dtype: torch.dtype, nu: int = 5, features: int = 40, seed: int = 0) -> dict:
    _, positions, mol_index = random_molecules(6, 1, 9, seed=seed)
    first, second = pairs_within_cutoff(positions, mol_index, CUTOFF)
    order = torch.randperm(first.shape[0], generator=torch.Generator().manual_seed(seed))
    first, second = first[order], second[order]
    g = torch.Generator().manual_seed(seed + 1)
    n = positions.shape[0]
    x = dict(Y=torch.randn(n, nu, features, generator=g), pair_coord=positions[second] - positions[first],
             mu=torch.linspace(0.8, CUTOFF - 1, nu), sigma=torch.linspace(1.5, 3.0, nu),
             vecscales=torch.randn(features, generator=g), quadscales=torch.randn(features, generator=g),
             sens=torch.rand(first.shape[0], nu, generator=g), feat=torch.randn(n, features, generator=g))
    x = {k: v.to(DEVICE, dtype) for k, v in x.items()}
    return dict(x, pair_first=first.to(DEVICE), pair_second=second.to(DEVICE))


def interaction_levels(x: dict, lmax: int, backend: str) -> list[torch.Tensor]:
    leaves = {k: x[k].detach().clone().requires_grad_() for k in ("Y", "pair_coord", "mu", "sigma")}
    scales = {k: x[k].detach().clone().requires_grad_() for k in ("vecscales", "quadscales")[:lmax]}
    out = ops.interaction(**leaves, pair_first=x["pair_first"], pair_second=x["pair_second"], cutoff=CUTOFF,
                          lmax=lmax, backend=backend, **scales)
    inputs = [*leaves.values(), *scales.values()]
    first = torch.autograd.grad(out.sin().sum(), inputs, create_graph=True)
    second = torch.autograd.grad(sum((g * g).sum() for g in first), inputs)
    return [out, *first, *second]


def family_levels(x: dict, backend: str) -> list[torch.Tensor]:
    results = []
    for name, a, b in (("envsum", "sens", "feat"), ("sensesum", "Y", "feat"), ("featsum", "Y", "sens")):
        a, b = x[a].detach().clone().requires_grad_(), x[b].detach().clone().requires_grad_()
        out = getattr(ops, name)(a, b, x["pair_first"], x["pair_second"], backend=backend)
        results += [out, *torch.autograd.grad(out.sin().sum(), (a, b))]
    return results


def main(backend: str = "cuda") -> int:
    failures = 0
    for molecule_max_atoms, path in ((0, "per-atom"), (64, "molecule")):
        cuda_backend.KERNELS.molecule_max_atoms = molecule_max_atoms
        cases = [(torch.float32, lmax) for lmax in (0, 1, 2)] + [(torch.float64, 2)]
        for dtype, lmax in cases + [(dtype, None) for dtype in (torch.float32, torch.float64)]:
            x = problem(dtype)
            with value_checks(False):
                if lmax is None:
                    what, got, want = "envsum family", family_levels(x, backend), family_levels(x, "reference")
                else:
                    what = f"interaction lmax {lmax}"
                    got, want = interaction_levels(x, lmax, backend), interaction_levels(x, lmax, "reference")
            if DEVICE.type == "cuda":
                torch.cuda.synchronize()
            error = max(float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30))
                        for a, b in zip(got, want) if b.numel())
            ok = error <= TOLERANCE[dtype]
            failures += not ok
            print(f"{'ok ' if ok else 'BAD'} {path:8s} {what:18s} {str(dtype)[6:]}: relative error {error:.1e}",
                  flush=True)
    print("sanitizer case:", "all kernels agree with the reference" if not failures else f"{failures} mismatches")
    return 1 if failures else 0


if __name__ == "__main__":
    if not torch.cuda.is_available():
        sys.exit("bench/sanitizer_case.py needs a CUDA GPU")
    reason = cuda_backend.device_problem(torch.device("cuda"))
    if reason is not None:
        sys.exit(f"bench/sanitizer_case.py: the cuda backend cannot run here: {reason}")
    sys.exit(main())
