#!/usr/bin/env bash
# GPU verification of the Triton and CUDA backends in one command for the device tool (see
# docs/kernels.md): build the CUDA extension and the CMake targets, run the C++ kernel test under
# compute-sanitizer, the GPU tests on CUDA tensors, the interaction microbenchmark at the SPEC
# section 9 batch, then the comparison suite (hipnnts bench kernels / models). Logs and results land
# in $OUT (device tool) or bench/results/gpu; copy the .md, .json and .png files into bench/results/
# and commit them. hippynn 0.1.3 and torchmd-net 3.0.2 (the peers) are not on the GPU image: carry
# their wheels in .whl/ (see docs/kernels.md).
set -uo pipefail
OUT=${OUT:-bench/results/gpu}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_verify.log") 2>&1
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"
status=0
step() { echo "== $1"; shift; "$@" || { echo "FAILED: $*"; status=1; }; }
step "extension" python3 setup.py build_ext --inplace
step "cmake" cmake -S . -B build/cmake -DCMAKE_CUDA_ARCHITECTURES=90
step "cmake build" cmake --build build/cmake -j 16
step "ctest" ctest --test-dir build/cmake --output-on-failure
step "memcheck" compute-sanitizer --tool memcheck --error-exitcode 1 build/cmake/hipnnts_cuda_tests
step "racecheck" compute-sanitizer --tool racecheck --error-exitcode 1 build/cmake/hipnnts_cuda_tests
step "memcheck (python)" compute-sanitizer --tool memcheck --error-exitcode 1 python3 -m pytest -q -x \
    -p no:cacheprovider tests/test_cuda_kernels.py -k "gpu and levels and random"
step "tests" python3 -m pytest -q -p no:cacheprovider tests/test_cuda_kernels.py tests/test_triton.py \
    tests/test_triton_compile.py tests/test_ops.py tests/test_backends.py tests/test_model.py
step "benchmark" python3 -m hipnnts_kernels.benchmarks.interaction --out "$OUT"
step "bench kernels" python3 -m hipnnts_kernels.cli bench kernels --out "$OUT"
step "bench models" python3 -m hipnnts_kernels.cli bench models --out "$OUT"
step "bench suite" python3 -m pytest -q -p no:cacheprovider bench/ --preset spec9 --benchmark-json "$OUT/bench_suite.json"
exit $status
