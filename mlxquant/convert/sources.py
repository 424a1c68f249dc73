"""Tensor sources for the MLX writer: a Hugging Face folder, an MLX folder or a GGUF file.

Each source gives HF tensor names, shapes, source types, the config and tokenizer files, and each
tensor as float values or -- when the source holds one -- as an MLX quantized matrix with its own
codes. Rows of Q/K projections are permuted from the llama.cpp to the Hugging Face layout by
moving whole quantized rows (rows are independent in both formats).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import FormatError
from ..formats.mlx_folder import FLOAT_DTYPES, MLXModel, tokenizer_files
from ..quant.transcode import EXACT_FROM_GGUF, MLXQuant, dequantize_mlx, from_gguf


class Source:
    """What the MLX writer needs from any source: HF names/shapes, config, files, tensors."""

    config: dict
    files: dict[str, Any]
    names: list[str]                     # HF tensor names to write (weights, norms, biases)
    shapes: dict[str, tuple[int, ...]]
    kind: dict[str, str]                 # HF name -> source type ("F32", "Q4_K", "affine4/g64", ...)
    default_dtype: str

    def float(self, name: str) -> np.ndarray:
        raise NotImplementedError

    def exact(self, name: str) -> MLXQuant | None:
        """The tensor as an MLX quantized matrix with its own codes, when the source has one."""
        return None


def row_permutation(fn: Callable[[np.ndarray], np.ndarray], rows: int, what: str) -> np.ndarray | None:
    """Rows order of a layout transform (None when it leaves rows alone); FormatError when it
    changes values rather than moving rows (then quantized rows cannot be carried over)."""
    probe = np.arange(rows, dtype=np.float32)[:, None]
    moved = np.asarray(fn(probe))
    if moved.shape != probe.shape or not np.array_equal(np.sort(moved[:, 0]), probe[:, 0]):
        raise FormatError(f"{what}: its layout transform changes values; cannot move quantized rows")
    idx = moved[:, 0].astype(np.int64)
    return None if np.array_equal(idx, np.arange(rows)) else idx


class HFSource(Source):
    """A Hugging Face folder (float safetensors)."""

    def __init__(self, src: Path):
        from ..formats.hf import HFModel
        from ..models import get_architecture

        self.hf = HFModel(src)
        self.config = {k: v for k, v in self.hf.config.items() if k not in ("quantization", "quantization_config")}
        self.arch = get_architecture(self.config)
        tied = self.arch.tie_word_embeddings(self.config)
        self.names = [n for n in self.hf.tensor_names
                      if not self.arch.skips_hf_tensor(n) and not (tied and n == "lm_head.weight")]
        self.shapes = {n: tuple(self.hf.info(n).shape) for n in self.names}
        self.kind = {n: self.hf.info(n).dtype for n in self.names}
        self.files = tokenizer_files(src)
        dt = str(self.config.get("torch_dtype") or "")
        self.default_dtype = dt if dt in FLOAT_DTYPES else "float16"

    def float(self, name: str) -> np.ndarray:
        return self.hf.tensor(name)


class MLXSource(Source):
    """An MLX folder: quantized modules come out with their own codes."""

    def __init__(self, src: Path):
        from ..models import get_architecture

        self.m = MLXModel(src)
        self.config = {k: v for k, v in self.m.config.items() if k not in ("quantization", "quantization_config")}
        self.arch = get_architecture(self.config)
        mods = self.m.quantized_modules
        self.names, self.shapes, self.kind = [], {}, {}
        for n in self.m.tensor_names:
            if n.endswith((".scales", ".biases")) and n.rsplit(".", 1)[0] in mods:
                continue
            mod = n[: -len(".weight")] if n.endswith(".weight") else None
            if mod in mods:
                w = self.m.info(n)
                self.shapes[n] = (*w.shape[:-1], mods[mod]["cols"])
                p = mods[mod]
                self.kind[n] = f"{p['mode']}{p['bits']}/g{p['group_size']}" if p["mode"] == "affine" else p["mode"]
            else:
                self.shapes[n] = tuple(self.m.info(n).shape)
                self.kind[n] = self.m.info(n).dtype
            self.names.append(n)
        self.files = tokenizer_files(src)
        sd = self.m.scales_dtype
        dt = str(self.config.get("torch_dtype") or "")
        self.default_dtype = ({"F16": "float16", "BF16": "bfloat16", "F32": "float32"}.get(sd or "")
                              or (dt if dt in FLOAT_DTYPES else "float16"))

    def _module(self, name: str) -> str | None:
        mod = name[: -len(".weight")] if name.endswith(".weight") else None
        return mod if mod in self.m.quantized_modules else None

    def exact(self, name: str) -> MLXQuant | None:
        mod = self._module(name)
        return self.m.quantized(mod) if mod else None

    def float(self, name: str) -> np.ndarray:
        q = self.exact(name)
        return dequantize_mlx(q) if q is not None else self.m.tensor(name)


class GGUFSource(Source):
    """A GGUF file: types that carry over (:data:`~mlxquant.quant.transcode.EXACT_FROM_GGUF`)
    come out with their own codes, rows moved to the Hugging Face layout."""

    def __init__(self, src: Path):
        from ..formats.gguf_read import GGUFModel
        from ..formats.tokenizer_export import tokenizer_from_gguf
        from ..models import get_architecture_by_gguf

        self.g = GGUFModel(src)
        self.arch = get_architecture_by_gguf(self.g.architecture or "")
        rope = self.g.tensor("rope_freqs.weight") if "rope_freqs.weight" in self.g else None
        self.config = self.arch.hparams_from_gguf(self.g.metadata, [t.name for t in self.g.tensors], rope)
        self.files = tokenizer_from_gguf(self.g.metadata)
        gen = {k: self.g.get(f"tokenizer.ggml.{key}") for k, key in
               (("bos_token_id", "bos_token_id"), ("eos_token_id", "eos_token_id"),
                ("pad_token_id", "padding_token_id"))}
        self.files["generation_config.json"] = {**{k: v for k, v in gen.items() if isinstance(v, int)},
                                                "_from_model_config": True}
        self.gname: dict[str, str] = {}
        for t in self.g.tensors:
            h = self.arch.tensor_name_from_gguf(t.name)
            if h is not None:
                self.gname[h] = t.name
        self.names = list(self.gname)
        self.shapes = {h: tuple(self.g.info(gn).shape) for h, gn in self.gname.items()}
        self.kind = {h: self.g.info(gn).qtype.name for h, gn in self.gname.items()}
        self.default_dtype = "float16"

    def float(self, name: str) -> np.ndarray:
        gn = self.gname[name]
        return self.arch.tensor_from_gguf(gn, self.g.tensor(gn), self.config)

    def exact(self, name: str) -> MLXQuant | None:
        gn = self.gname[name]
        info = self.g.info(gn)
        if info.qtype.name not in EXACT_FROM_GGUF or len(info.shape) != 2:
            return None
        raw = self.g.raw(gn)
        perm = row_permutation(lambda a: self.arch.tensor_from_gguf(gn, a, self.config),
                                raw.shape[0], f"{self.g.path}: tensor {gn!r}")
        if perm is not None:
            raw = raw[perm]
        return from_gguf(raw, info.qtype.name, info.shape[-1])


def open_source(src: Path, fmt: str) -> Source:
    """The source at ``src``: ``fmt`` is ``"gguf"``, ``"hf"`` or ``"mlx"``."""
    if fmt == "gguf":
        return GGUFSource(src)
    return MLXSource(src) if fmt == "mlx" else HFSource(src)
