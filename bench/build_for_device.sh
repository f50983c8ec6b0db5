#!/usr/bin/env bash
# Builds the CUDA extension hipnnts_kernels._C here, without a GPU, for the device tool's GPU
# machine: the versions of bench/gpu-stack.txt (PyPI's torch 2.11.0, its CUDA 13.0 build; triton
# 3.6.0), Python 3.12, sm_90 (H200). The extension lands in .device/ (ignored by git) with
# build_info.json; carry it with carry=[".device", ".whl"]: bench/gpu_verify.sh installs it when
# the machine's torch matches, and builds there otherwise.
#
#   bash bench/build_for_device.sh     # about 20 s of 2 CPU cores (plus, once, the 4.7 GB venv)
#
# Settings (environment): ARCHS (TORCH_CUDA_ARCH_LIST, 9.0), PYTHON (a Python 3.12; default: the
# first that runs of python3.12 and ~/.pyenv/versions/3.12*), VENV (build/device-venv: a virtual
# environment with the GPU machine's versions, made on first use; CI uses it for its tests too).
set -euo pipefail
cd "$(dirname "$0")/.."
ARCHS=${ARCHS:-9.0}
VENV=${VENV:-build/device-venv}
if [ -z "${PYTHON:-}" ]; then
    for candidate in python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3; do
        if "$candidate" -c "import sys; sys.exit(sys.version_info[:2] != (3, 12))" 2>/dev/null; then
            PYTHON=$candidate
            break
        fi
    done
fi
[ -n "${PYTHON:-}" ] || { echo "build_for_device: no Python 3.12 runs here; set PYTHON=/path/to/python3.12" >&2; exit 2; }
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r bench/gpu-stack.txt ninja wheel "setuptools>=70.1"
rm -rf .device build/device-ext
mkdir -p .device
start=$SECONDS
TORCH_CUDA_ARCH_LIST=$ARCHS MAX_JOBS=${MAX_JOBS:-2} "$VENV/bin/python" setup.py -q build_ext \
    --build-lib .device --build-temp build/device-ext
so=$(ls .device/hipnnts_kernels/_C*.so)
strip --strip-debug "$so"
TORCH_CUDA_ARCH_LIST=$ARCHS "$VENV/bin/python" - "$so" "$((SECONDS - start))" <<'EOF'
import datetime, json, os, subprocess, sys, sysconfig

import torch

so, seconds = sys.argv[1], int(sys.argv[2])
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
dirty = bool(subprocess.run(["git", "status", "--porcelain", "csrc", "setup.py"], capture_output=True,
                            text=True).stdout.strip())
info = {"extension": os.path.relpath(so, ".device"), "torch": torch.__version__, "cuda": torch.version.cuda,
        "archs": os.environ.get("TORCH_CUDA_ARCH_LIST", "9.0"), "python": sysconfig.get_config_var("SOABI"),
        "commit": commit + ("+uncommitted csrc changes" if dirty else ""), "built_seconds": seconds,
        "bytes": os.path.getsize(so), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
json.dump(info, open(".device/build_info.json", "w"), indent=1)
print(json.dumps(info))
EOF
