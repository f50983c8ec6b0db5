"""Benchmark harness shipped with the package (run the modules with ``python -m``).

- :mod:`.interaction`: the fused interaction at the SPEC section 9 batch, op level (three
  derivative levels, against a device-to-device copy roofline) and layer level (against hippynn).
- :mod:`.timing`: CUDA-event timing (wall clock on CPU), medians and environment records.
"""
