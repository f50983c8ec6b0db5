#!/usr/bin/env bash
# GPU verification of the Triton backend, in one command for the device tool (docs/kernels.md):
#   GPU tests on CUDA tensors at realistic sizes, the compile check, and the interaction
#   microbenchmark at the SPEC section 9 batch. Results land in $OUT (device tool) or
#   bench/results/gpu; copy the .md and .json into bench/results/ and commit them.
# hippynn 0.1.3 (the comparison) is not on the GPU image: carry its wheel in .whl/ (see docs).
set -uo pipefail
OUT=${OUT:-bench/results/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; python3 -c \
  "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"; } \
  2>&1 | tee "$OUT/environment.txt"
status=0
python3 -m pytest -q -p no:cacheprovider tests/test_triton.py tests/test_triton_compile.py tests/test_ops.py \
    tests/test_backends.py tests/test_model.py 2>&1 | tee "$OUT/tests.log" || status=1
python3 -m hipnnts_kernels.benchmarks.interaction --out "$OUT" 2>&1 | tee "$OUT/benchmark.log" || status=1
exit $status
