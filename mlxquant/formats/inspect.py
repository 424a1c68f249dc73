"""Describe a model file or folder without loading its weights: ``mlxquant inspect``.

Works on GGUF files, Hugging Face (safetensors) folders and MLX folders (mlx-lm's layout: a
``quantization`` block in config.json, packed ``uint32`` weights with ``scales``/``biases``). The
summary is a plain dict so the CLI can print it as text or JSON: ``format`` (``gguf``, ``hf``,
``mlx``), ``path``, ``architecture``, ``parameters``, ``tensors`` (name, type, shape, bytes),
``bits_per_weight`` (8 x tensor bytes / parameters, as llama.cpp reports BPW; not rounded),
``bytes`` (on disk), ``tensor_bytes``, ``types`` (tensor count per type) and ``metadata``
(scalar keys; long strings shortened, arrays summarized).

An MLX folder is described by its logical tensors, as swift-bridge's ``MLXModelFolder`` lists
them: a quantized module is one tensor named ``<module>.weight`` with its unpacked shape, type
``MLX_Q{bits}_G{group}`` (affine) or ``MLX_{MODE}_G{group}`` (``MLX_MXFP4_G32``...) and the bytes of
its codes, scales and biases; other tensors keep their safetensors dtype; tensors are sorted by
name. ``parameters`` counts logical weights, not packed words. Its ``quantization`` key gives the
config's defaults (bits, group_size, mode), per-module ``overrides`` and the ``unquantized``
modules (``false`` entries), and ``modules``: the count of quantized modules per type.

The keys shared with swift-bridge's ``mlxquant-inspect --json`` (``format``, ``architecture``,
``parameters``, ``tensors``, ``bits_per_weight``) hold the same values for the same file or
folder; its ``bytes`` is the sum of tensor bytes, which is ``tensor_bytes`` here.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

from ..errors import FormatError
from .gguf_read import GGUFModel
from .hf import HFModel, read_json
from .mlx_folder import MLXModel, is_mlx_folder

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


def mlx_type_name(bits: int, group_size: int, mode: str) -> str:
    """``MLX_Q4_G64`` for affine, ``MLX_MXFP4_G32`` for the other modes (swift-bridge's names)."""
    if mode == "affine":
        return f"MLX_Q{bits}_G{group_size}"
    return f"MLX_{mode.upper()}_G{group_size}"


def _quant_block(q: dict[str, Any]) -> dict[str, Any]:
    """The config's quantization defaults, per-module overrides and ``false`` entries."""
    defaults = {"bits": q.get("bits"), "group_size": q.get("group_size"), "mode": q.get("mode", "affine")}
    overrides = {k: v for k, v in q.items() if isinstance(v, dict)}
    unquantized = sorted(k for k, v in q.items() if v is False)
    return {**defaults, "overrides": overrides, "unquantized": unquantized}


def inspect_mlx(path: str | os.PathLike) -> dict[str, Any]:
    """Summarize an MLX model folder (see the module docstring)."""
    m = MLXModel(path)
    mods = m.quantized_modules
    consumed: set[str] = set()
    tensors = []
    for mod, p in mods.items():
        parts = [f"{mod}.weight", f"{mod}.scales"] + ([f"{mod}.biases"] if f"{mod}.biases" in m.tensor_names else [])
        consumed.update(parts)
        w = m.info(f"{mod}.weight")
        tensors.append({"name": f"{mod}.weight", "type": mlx_type_name(p["bits"], p["group_size"], p["mode"]),
                        "shape": [*w.shape[:-1], p["cols"]],
                        "bytes": sum(m.info(n).end - m.info(n).start for n in parts)})
    for name in m.tensor_names:
        if name not in consumed:
            t = m.info(name)
            tensors.append({"name": name, "type": t.dtype, "shape": list(t.shape), "bytes": t.end - t.start})
    tensors.sort(key=lambda t: t["name"])
    files = {m.info(n).file for n in m.tensor_names}
    meta = {k: _summarize(v) for k, v in m.config.items() if not isinstance(v, dict)}
    meta["tokenizer"] = [f for f in ("tokenizer.json", "tokenizer.model") if (m.path / f).is_file()]
    meta["chat_template"] = (isinstance(_tokenizer_config(m.path).get("chat_template"), str)
                             or any((m.path / f).is_file() for f in ("chat_template.jinja", "chat_template.json")))
    quant = _quant_block(m.quantization)
    quant["modules"] = dict(Counter(t["type"] for t in tensors if t["name"][:-len(".weight")] in mods))
    return _totals({
        "format": "mlx",
        "path": str(m.path),
        "architecture": m.config.get("model_type"),
        "tensors": tensors,
        "bytes": sum(f.stat().st_size for f in files),
        "quantization": quant,
        "metadata": meta,
    })


def _tokenizer_config(folder: Path) -> dict:
    f = folder / "tokenizer_config.json"
    cfg = read_json(f, "tokenizer config") if f.is_file() else {}
    return cfg if isinstance(cfg, dict) else {}


def inspect(path: str | os.PathLike) -> dict[str, Any]:
    """Summarize the GGUF file, Hugging Face folder or MLX folder at ``path`` (see the module
    docstring).

    Raises:
        FormatError: not a supported model, or a malformed one.
    """
    fmt = detect_format(path)
    if fmt == "gguf":
        return inspect_gguf(path)
    return inspect_mlx(path) if is_mlx_folder(path) else inspect_hf(path)
