#!/usr/bin/env bash
# GPU verification of the CUDA and Triton backends in one command of at most 8 minutes, made for
# the device tool's GPU machine (docs/kernels.md, "GPU verification", says how to call it and what
# to carry). Steps in priority order, each under `timeout` and one shared deadline, so that a run
# cut short still returns the most important results:
#   0. set-up: the peers' wheels (.whl/), the prebuilt extension (.device/) if it matches the
#      torch here (else a build here), versions and GPU;
#   1. GPU tests of the cuda and triton backends: every level against the reference in float32 and
#      float64, both CUDA paths, bitwise reproducibility, the documented launch limits;
#   2. compute-sanitizer memcheck and racecheck on one small case of every CUDA kernel
#      (bench/sanitizer_case.py, PyTorch's caching allocator off); skipped where the machine
#      refuses the sanitizer;
#   3. hipnnts bench kernels at the SPEC section 9 batch: every op, level and lmax, backends cuda,
#      cuda-molecules, triton, reference and hippynn, against the roofline;
#   4. hipnnts bench models at one large batch (28k atoms), lmax 2 first, then lmax 0 and 1.
# The benchmarks rewrite their reports as they go, so a step stopped by its timeout keeps what it
# measured. Results, at most 8 files, in $OUT (bench/results/gpu when unset): summary.md (one line
# per step, rewritten as each ends), gpu_verify.log, kernels_<GPU>.md/.json, models_<GPU>.md/.json
# and extras.tar.gz (plots, the other reports, test XML, sanitizer logs, pip list, nvidia-smi -q).
#
#   bash bench/gpu_verify.sh     # settings: BUDGET=460 (seconds for all steps), PYTHON=python3
#
# Without a GPU it runs what it can (set-up, the test step, whose GPU tests skip) and lists the GPU
# steps as skipped: a dry run of the script and of the extension here.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/gpu}
BUDGET=${BUDGET:-460}
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/gpu_verify.XXXXXX)
exec > >(tee "$OUT/gpu_verify.log") 2>&1
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
PY=${PYTHON:-python3}
DEADLINE=$((SECONDS + BUDGET))
STATUS=0
SUMMARY=$WORK/summary.md
printf '# GPU verification (%s, commit %s)\n\n' "$(date -u +%FT%TZ)" "$(git rev-parse --short HEAD 2>/dev/null)" >"$SUMMARY"

# Copy the results so far to $OUT: the top reports, the summary, everything else packed.
publish() {
    cp "$SUMMARY" "$OUT/summary.md"
    for kind in kernels models; do
        for ext in md json; do
            found=$(ls "$WORK/$kind"/${kind}_*."$ext" 2>/dev/null | grep -v tiny | head -1)
            [ -n "$found" ] && cp "$found" "$OUT/"
        done
    done
    tar -czf "$OUT/extras.tar.gz.tmp" -C "$WORK" --exclude=summary.md . 2>/dev/null && mv "$OUT/extras.tar.gz.tmp" "$OUT/extras.tar.gz"
}

note() { printf '| %s | %s | %s | %s |\n' "$1" "$2" "$3" "$4" >>"$SUMMARY"; }

# step NAME BUDGET_S LOG COMMAND...: run COMMAND under timeout (its budget or what is left of the
# deadline), its output to the console and $WORK/LOG; record the result in the summary.
step() {
    local name=$1 budget=$2 log=$3
    shift 3
    local left=$((DEADLINE - SECONDS))
    ((budget > left)) && budget=$left
    echo "== $name (at most ${budget} s): $*"
    if ((budget < 20)); then
        note "$name" "not run" 0 "no time left in the ${BUDGET} s budget"
        return 1
    fi
    local start=$SECONDS rc
    timeout --kill-after=10 "$budget" "$@" 2>&1 | tee "$WORK/$log"
    rc=${PIPESTATUS[0]}
    local took=$((SECONDS - start)) result=passed last
    last=$(grep -E "passed|failed|error|agree|mismatch" "$WORK/$log" | tail -1 | tr '|' '/' | cut -c1-160)
    if ((rc == 124 || rc == 137)); then
        result="cut at ${budget} s"
        STATUS=1
    elif ((rc != 0)); then
        if grep -qE "Device not supported|unsupported device|error 999|Unable to find injection" "$WORK/$log"; then
            result="refused"
            last="this machine refuses compute-sanitizer"
        else
            result="FAILED (exit $rc)"
            STATUS=1
        fi
    fi
    note "$name" "$result" "$took" "$last"
    publish
    return $rc
}

# gpu_step NAME ...: step, or a summary line saying it needs a GPU.
gpu_step() {
    if [ "$HAVE_GPU" = 1 ]; then
        step "$@"
    else
        note "$1" "skipped" 0 "needs a GPU"
    fi
}

# -- 0. set-up -------------------------------------------------------------------------------------
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv || true
nvidia-smi -q >"$WORK/nvidia-smi.txt" 2>&1 || true
if compgen -G ".whl/*.whl" >/dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="$PYTHONPATH:/tmp/site"
else
    echo "no .whl/: hippynn and torchmd-net are missing, so the benchmarks run without those peers"
fi
$PY -m pip list 2>/dev/null >"$WORK/pip-list.txt"
{
    echo "- GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo none)"
    $PY -c "import torch, triton, numpy, sys; print(f'- python {sys.version.split()[0]}, torch {torch.__version__}, \
CUDA {torch.version.cuda}, triton {triton.__version__}, numpy {numpy.__version__}')"
    printf '\n| step | result | seconds | note |\n|---|---|---:|---|\n'
} >>"$SUMMARY"
cat "$SUMMARY"
HAVE_GPU=$($PY -c "import torch; print(int(torch.cuda.is_available()))")
extension_problem() { $PY -c "from hipnnts_kernels import cuda_backend as c; print(c.EXTENSION_PROBLEM or '')"; }
# The extension: the tree's own if it loads with this torch; else the prebuilt one of .device/ if
# it does (installed by rename, so a process that has the tree's file loaded keeps its copy, and
# removed at exit unless it replaced a file); else a build here.
problem=$(extension_problem)
prebuilt=$(ls .device/hipnnts_kernels/_C*.so 2>/dev/null | head -1)
if [ -z "$problem" ]; then
    note "extension" "the tree's" 0 "hipnnts_kernels/_C loads with this torch"
elif [ -n "$prebuilt" ]; then
    installed=hipnnts_kernels/$(basename "$prebuilt")
    [ -e "$installed" ] && keep=1 || keep=0
    cp "$prebuilt" "$installed.tmp" && mv -f "$installed.tmp" "$installed"
    ((keep)) || trap 'rm -f "$installed"' EXIT
    problem=$(extension_problem)
    if [ -z "$problem" ]; then
        note "extension" "prebuilt" 0 "$($PY -c "import json; i = json.load(open('.device/build_info.json')); \
print(f\"built here for torch {i['torch']}, sm {i['archs']}, commit {i['commit']}, {i['date'][:10]}\")")"
    else
        echo "the prebuilt extension does not fit here: $problem"
    fi
fi
if [ -n "$problem" ]; then
    step "extension build" 240 extension-build.log env MAX_JOBS=16 $PY setup.py -q build_ext --inplace
    echo "extension: $(extension_problem)"
fi
publish

# -- 1. GPU tests ----------------------------------------------------------------------------------
step "GPU tests" 200 tests.log $PY -m pytest -q -p no:cacheprovider -rfEs --durations=15 \
    --junitxml="$WORK/tests.xml" tests/test_cuda_kernels.py tests/test_triton.py tests/test_backends.py \
    -k "not emulated"

# -- 2. compute-sanitizer --------------------------------------------------------------------------
SANITIZER=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
if [ -z "$SANITIZER" ] && [ "$HAVE_GPU" = 1 ]; then
    note "memcheck, racecheck" "not run" 0 "compute-sanitizer is not on this machine"
else
    for tool in memcheck racecheck; do
        gpu_step "$tool" 80 "$tool.log" env PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$SANITIZER" --tool "$tool" \
            --error-exitcode 1 $PY bench/sanitizer_case.py
    done
fi

# -- 3. kernel benchmark ---------------------------------------------------------------------------
gpu_step "bench kernels spec9" 150 bench-kernels.log $PY -m hipnnts_kernels.cli bench kernels --device cuda --preset spec9 \
    --backend cuda cuda-molecules triton reference hippynn --warmup 3 --repeats 20 --out "$WORK/kernels"

# -- 4. model benchmark ----------------------------------------------------------------------------
gpu_step "bench models 28k, lmax 2" 110 bench-models.log $PY -m hipnnts_kernels.cli bench models --device cuda --size 28k \
    --lmax 2 --no-max-batch --warmup 2 --repeats 5 --out "$WORK/models"
gpu_step "bench models 28k, lmax 0 1" 90 bench-models-01.log $PY -m hipnnts_kernels.cli bench models --device cuda \
    --size 28k --lmax 0 1 --peers hippynn --no-max-batch --warmup 2 --repeats 5 --out "$WORK/models-01"

publish
echo "== summary"
cat "$SUMMARY"
echo "files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
rm -rf "$WORK"
exit $STATUS
