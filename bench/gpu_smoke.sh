#!/usr/bin/env bash
# The GPU smoke check of the PPO client and the reward service's CUDA path (a few minutes).
#
#   bash bench/gpu_smoke.sh            # on a machine with an NVIDIA GPU, from the repository root
#
# Installs what it needs into $VENV (default .venv-gpu; set VENV to an existing environment with
# CUDA torch to skip the downloads), then runs bench/gpu_smoke.py: a tiny reward model served on
# ONNX Runtime's CUDA provider, PPO in bf16 on the GPU (full and LoRA), sampling from the merged
# LoRA policy. Figures go to $OUT (default runs/gpu-smoke)/summary.json; the exit code is the
# number of failed checks.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv-gpu}
OUT=${OUT:-runs/gpu-smoke}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PY="$VENV/bin/python"
if ! "$PY" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
    "$PY" -m pip install -q --upgrade pip
    "$PY" -m pip install -q torch  # PyPI's Linux wheel is the CUDA build
fi
"$PY" -m pip install -q -e ".[train,dev]"
# onnxruntime and onnxruntime-gpu install the same module: keep only the GPU build.
"$PY" -m pip uninstall -q -y onnxruntime
"$PY" -m pip install -q --force-reinstall --no-deps "onnxruntime-gpu>=1.17"
"$PY" -c 'import onnxruntime as ort; print("onnxruntime providers:", ort.get_available_providers())'

export HF_HUB_OFFLINE=1
"$PY" bench/gpu_smoke.py --output "$OUT"
