"""Benchmark harness shipped with the package (``hipnnts bench``; see docs/benchmarks.md).

- :mod:`.kernels`: every op x backend x size preset x derivative level, against a roofline of
  ceilings measured in the same run (``hipnnts bench kernels``).
- :mod:`.models`: HIP-NN and HIP-NN-TS of this package against hippynn 0.1.3 (identical weights)
  and TensorNet: inference, training step, memory, largest batch (``hipnnts bench models``).
- :mod:`.interaction`: the fused interaction at the SPEC section 9 batch, op level and layer level
  (the CUDA backend's CSR and molecule paths, hippynn's interaction layers).
- :mod:`.costs`: bytes and FLOPs of each op and level; :mod:`.timing`: CUDA-event timing, ceilings
  and provenance; :mod:`.report`: JSON, markdown and plots.
"""
