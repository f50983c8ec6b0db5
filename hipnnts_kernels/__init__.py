"""hipnnts-kernels: fused kernels and a reference implementation of HIP-NN and HIP-NN-TS.

- :mod:`hipnnts_kernels.ops`: the ops (envsum family, sensitivities, tensor factors, the fused
  interaction), each with a ``backend=`` argument.
- :class:`HipnnTS`: the model (lmax = 0 is plain HIP-NN), with its hierarchical energy head.
- :class:`TensorNetModel`: torchmd-net's TensorNet behind the same interface (for comparisons;
  needs ``pip install --no-deps torchmd-net==3.0.2``).
- :class:`ETN`: an equivariant tensor network potential on the package's ops (docs/etn.md).
- :mod:`hipnnts_kernels.reference`: the pure-PyTorch math every kernel is tested against.
"""
from . import backends, ops, reference
from .checks import set_value_checks
from .etn import ETN
from .model import HipnnTS, ModelOutput
from .pairs import flatten_padded, pairs_within_cutoff
from .tensornet import TensorNetModel

__version__ = "0.1.0"

__all__ = [
    "HipnnTS", "TensorNetModel", "ETN", "ModelOutput", "ops", "reference", "backends", "flatten_padded",
    "pairs_within_cutoff", "set_value_checks", "__version__",
]
