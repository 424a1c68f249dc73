"""Describe a model file or folder without loading its weights: ``mlxquant inspect``.

Works on GGUF files and Hugging Face (safetensors) folders. The summary is a plain dict so the
CLI can print it as text or JSON: ``format``, ``path``, ``architecture``, ``parameters``,
``tensors`` (name, type, shape, bytes), ``bits_per_weight`` (8 x tensor bytes / parameters, as
llama.cpp reports BPW; not rounded), ``bytes`` (on disk), ``tensor_bytes``, ``types`` (tensor count
per type) and ``metadata`` (scalar keys; long strings shortened, arrays summarized).

The keys shared with swift-bridge's ``mlxquant-inspect --json`` (``format``, ``architecture``,
``parameters``, ``tensors``, ``bits_per_weight``) hold the same values for the same file; its
``bytes`` is the sum of tensor bytes, which is ``tensor_bytes`` here.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

from ..errors import FormatError
from .gguf_read import GGUFModel
from .hf import HFModel

MAX_STRING = 120

# llama.cpp's LLAMA_FTYPE values -> names (general.file_type)
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
    17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS",
    23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M",
    30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4_MOE",
}


def _summarize(value: Any) -> Any:
    if isinstance(value, list):
        return f"<array of {len(value)}>"
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str) and len(value) > MAX_STRING:
        return value[:MAX_STRING] + f"... <{len(value)} chars>"
    return value


def detect_format(path: str | os.PathLike) -> str:
    """``"gguf"`` for a GGUF file, ``"hf"`` for a folder with config.json.

    Raises:
        FormatError: anything else; FileNotFoundError when ``path`` does not exist.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder")
    if p.is_dir():
        if (p / "config.json").is_file():
            return "hf"
        raise FormatError(f"{p}: a folder without config.json is not a Hugging Face model")
    with open(p, "rb") as f:
        if f.read(4) == b"GGUF":
            return "gguf"
    raise FormatError(f"{p}: not a GGUF file (no GGUF magic) nor a Hugging Face model folder")


def _totals(summary: dict[str, Any]) -> dict[str, Any]:
    params = sum(_count(t["shape"]) for t in summary["tensors"])
    tbytes = sum(t["bytes"] for t in summary["tensors"])
    summary["parameters"] = params
    summary["tensor_bytes"] = tbytes
    # unrounded, like swift-bridge's ModelSummary (the CLI's text output shows 4 decimals)
    summary["bits_per_weight"] = 8 * tbytes / params if params else 0.0
    summary["types"] = dict(Counter(t["type"] for t in summary["tensors"]))
    return summary


def _count(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def inspect_gguf(path: str | os.PathLike) -> dict[str, Any]:
    with GGUFModel(path) as g:
        meta = {k: _summarize(v) for k, v in g.metadata.items()}
        ft = g.get("general.file_type")
        if isinstance(ft, int) and ft in FILE_TYPES:
            meta["general.file_type"] = f"{ft} ({FILE_TYPES[ft]})"
        return _totals({
            "format": "gguf",
            "path": str(g.path),
            "version": g.version,
            "architecture": g.architecture,
            "tensors": [{"name": t.name, "type": t.type, "shape": list(t.shape), "bytes": t.nbytes}
                        for t in g.tensors],
            "bytes": g.header.file_size,
            "metadata": meta,
        })


def inspect_hf(path: str | os.PathLike) -> dict[str, Any]:
    with HFModel(path) as m:
        tensors = [m.info(n) for n in m.tensor_names]
        files = {t.file for t in tensors}
        meta = {k: _summarize(v) for k, v in m.config.items() if not isinstance(v, dict)}
        meta["tokenizer"] = [f for f in ("tokenizer.json", "tokenizer.model")
                             if (m.path / f).is_file()]
        meta["chat_template"] = m.chat_template is not None
        return _totals({
            "format": "hf",
            "path": str(m.path),
            "architecture": m.config.get("model_type"),
            "tensors": [{"name": t.name, "type": t.dtype, "shape": list(t.shape),
                         "bytes": t.end - t.start} for t in tensors],
            "bytes": sum(f.stat().st_size for f in files),
            "metadata": meta,
        })


def inspect(path: str | os.PathLike) -> dict[str, Any]:
    """Summarize the GGUF file or Hugging Face folder at ``path`` (see the module docstring).

    Raises:
        FormatError: not a supported model, or a malformed one.
    """
    fmt = detect_format(path)
    return inspect_gguf(path) if fmt == "gguf" else inspect_hf(path)
