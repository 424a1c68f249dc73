#!/usr/bin/env bash
# Build llama.cpp's command-line tools that the tests use as oracles (llama-imatrix,
# llama-perplexity, llama-quantize) from the llama.cpp tree vendored in llama-cpp-python's source
# archive — the same pinned source as the oracle library — and cache the binaries in
# ${MLXQUANT_CACHE:-~/.cache/mlxquant}/llama-tools/<version>/bin (mlxquant.testing.llama_tools
# finds them there). Skipped when they are present. Only the three targets are built (static
# libraries, no CURL/OpenSSL, no -march=native): ~5 minutes on 2 cores the first time.
#
# Usage: bash scripts/build_llama_tools.sh        (sourced by scripts/test.sh; PY may be set)
set -euo pipefail
PY="${PYTHON:-${PY:-python3}}"
LLAMA_CPP_PYTHON_VERSION="0.3.36"
CACHE="${MLXQUANT_CACHE:-$HOME/.cache/mlxquant}"
DEST="$CACHE/llama-tools/$LLAMA_CPP_PYTHON_VERSION/bin"
TOOLS=(llama-imatrix llama-perplexity llama-quantize)

missing=0
for t in "${TOOLS[@]}"; do [ -x "$DEST/$t" ] || missing=1; done
[ "$missing" = 0 ] && exit 0

# cmake and ninja from PyPI where the system has none; their scripts land beside $PY's (a venv's
# bin is not necessarily on PATH)
PATH="$("$PY" -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
command -v cmake >/dev/null && command -v ninja >/dev/null || \
    "$PY" -m pip install --quiet --disable-pip-version-check cmake ninja
hash -r
# pip reads the archive's metadata through its build backend even for a download: have it here,
# so that pip does not build one (a source build of cmake) in an isolated environment
"$PY" -c "import scikit_build_core" 2>/dev/null || \
    "$PY" -m pip install --quiet --disable-pip-version-check scikit-build-core

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$PY" -m pip download --quiet --disable-pip-version-check --no-deps --no-build-isolation \
    --no-binary :all: "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" -d "$tmp" 2>/dev/null || true
archive="$tmp/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz"
if [ ! -f "$archive" ]; then
    echo "error: could not download llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION's source archive" >&2
    exit 1
fi
tar -xzf "$archive" -C "$tmp"
src="$tmp/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION/vendor/llama.cpp"

nice -n 19 cmake -S "$src" -B "$tmp/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
    -DGGML_NATIVE=OFF -DBUILD_SHARED_LIBS=OFF >/dev/null
nice -n 19 ninja -C "$tmp/build" -j "${MLXQUANT_BUILD_JOBS:-2}" "${TOOLS[@]}" >/dev/null

mkdir -p "$DEST"
for t in "${TOOLS[@]}"; do
    install -m 755 "$tmp/build/bin/$t" "$DEST/.$t.part"
    mv "$DEST/.$t.part" "$DEST/$t"
done
echo "llama.cpp tools ($LLAMA_CPP_PYTHON_VERSION): $DEST"
