"""Triton kernels of the ``"triton"`` backend.

The modules here import Triton; :mod:`hipnnts_kernels.ops` loads them lazily, on the first call
that resolves to the Triton backend, so the package imports without Triton and the interpreter
(``TRITON_INTERPRET=1``, read by Triton when a kernel is defined) can be switched on at any time
before that first call.

- :mod:`.envsum`: ``envsum``, ``sensesum``, ``featsum`` (per-atom segments, no atomics).
- :mod:`.geometry`: ``sensitivity`` and ``tensor_factors`` (elementwise).
- :mod:`.interaction`: the fused interaction, its backward and its double backward.
"""
