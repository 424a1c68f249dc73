"""The llama architecture: Llama 2/3, SmolLM2, Mistral (``general.architecture = "llama"``).

What llama.cpp's converter (``conversion/llama.py``, ``LlamaModel``) does beyond the generic map:

- permutes the rows of ``q_proj`` / ``k_proj`` (weights and biases) from Hugging Face's
  "rotate half" RoPE layout to llama.cpp's interleaved one: per head, rows ``(2, head_dim/2)``
  become ``(head_dim/2, 2)``. ``k_proj`` uses the key-value head count;
- writes ``llama.vocab_size`` and ``llama.rope.dimension_count``;
- turns ``rope_type: llama3`` scaling into a ``rope_freqs.weight`` tensor of per-frequency
  factors (no metadata key), which :func:`llama3_rope_scaling_from_freqs` reverses.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
from gguf.constants import Keys

from ..errors import FormatError
from .base import Architecture, key, rope_parameters
from .hparams import require_hparams


def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF -> llama.cpp row order of a Q or K projection (weight ``(rows, cols)`` or bias ``(rows,)``)
    with ``n_head`` heads: inside each head, rows ``[0..d/2) ++ [d/2..d)`` are interleaved."""
    rows = w.shape[0]
    if rows % (2 * n_head):
        raise FormatError(f"cannot permute {rows} rows into {n_head} heads of even size")
    return (w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2)
            .reshape(w.shape))


def unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """The exact inverse of :func:`permute_qk` (llama.cpp -> HF row order)."""
    rows = w.shape[0]
    if rows % (2 * n_head):
        raise FormatError(f"cannot un-permute {rows} rows into {n_head} heads of even size")
    return (w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:])
            .swapaxes(1, 2)
            .reshape(w.shape))


def llama3_rope_factors(rope: Mapping[str, Any], dim: int) -> np.ndarray:
    """The ``rope_freqs`` factors (float32, ``dim // 2``) of a ``rope_type: llama3`` config, as
    ``LlamaModel.generate_extra_tensors`` computes them."""
    base = float(rope.get("rope_theta", 10000.0))
    factor = float(rope.get("factor", 8.0))
    low = float(rope.get("low_freq_factor", 1.0))
    high = float(rope.get("high_freq_factor", 4.0))
    old_ctx = float(rope.get("original_max_position_embeddings", 8192))
    # the converter computes in torch float32 (python scalars act as float32): emulate that with
    # NumPy float32 scalars, whose arithmetic with python floats stays float32 (NEP 50)
    expo = np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)
    freqs = (np.float32(1.0) / (np.float32(base) ** expo)).astype(np.float32)
    low_wl, high_wl = old_ctx / low, old_ctx / high
    out = []
    for f in freqs:
        wl = np.float32(2 * math.pi) / f
        if wl < np.float32(high_wl):
            out.append(np.float32(1.0))
        elif wl > np.float32(low_wl):
            out.append(np.float32(factor))
        else:
            smooth = (np.float32(old_ctx) / wl - np.float32(low)) / np.float32(high - low)
            out.append(np.float32(1.0) / ((np.float32(1.0) - smooth) / np.float32(factor) + smooth))
    return np.asarray(out, dtype=np.float32)


def llama3_rope_scaling_from_freqs(freqs: np.ndarray, rope_theta: float, dim: int) -> dict[str, Any]:
    """Recover a ``rope_type: llama3`` ``rope_scaling`` block from a GGUF ``rope_freqs`` tensor.

    ``factor`` is the largest factor; low/high frequency factors are Llama 3.x's 1 and 4, and the
    original context is solved from a smoothed frequency (8192 when none is smoothed). Raises
    FormatError when the tensor is not reproduced to 1e-5 by those values."""
    f = np.asarray(freqs, dtype=np.float64).reshape(-1)
    factor = float(f.max())
    rope: dict[str, Any] = {"rope_type": "llama3", "factor": factor, "low_freq_factor": 1.0,
                            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192,
                            "rope_theta": float(rope_theta)}
    if factor > 1.0:
        expo = np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)
        wl = 2 * np.pi / (np.float32(1.0) / (np.float32(rope_theta) ** expo)).astype(np.float64)
        mid = np.nonzero((f > 1.0 + 1e-6) & (f < factor - 1e-6))[0]
        if mid.size:
            i = int(mid[0])
            smooth = (1 / f[i] - 1 / factor) / (1 - 1 / factor)
            rope["original_max_position_embeddings"] = int(round(wl[i] * (1.0 + 3.0 * smooth)))
    rebuilt = llama3_rope_factors(rope, dim)
    if rebuilt.shape != f.shape or not np.allclose(rebuilt, f, rtol=1e-5, atol=1e-5):
        raise FormatError("rope_freqs.weight does not match llama3 RoPE scaling with "
                          "low/high frequency factors 1 and 4")
    del rope["rope_theta"]
    return rope


class LlamaArchitecture(Architecture):
    name = "llama"
    hf_architectures = ("LlamaForCausalLM", "LLaMAForCausalLM", "MistralForCausalLM")
    hf_model_types = ("llama", "mistral")
    hf_class = "LlamaForCausalLM"
    hf_model_type = "llama"
    default_tied = False
    generated_tensors = ("rope_freqs",)

    def _heads(self, hf_config: Mapping[str, Any]) -> tuple[int, int]:
        c = require_hparams(self, hf_config)
        n_head = int(c["num_attention_heads"])
        return n_head, int(c.get("num_key_value_heads") or n_head)

    def _qk_heads(self, name: str, hf_config: Mapping[str, Any]) -> int | None:
        """Heads to permute over for a Q/K tensor (HF or GGUF name), None for other tensors."""
        n_head, n_head_kv = self._heads(hf_config)
        if name.endswith(("q_proj.weight", "q_proj.bias", "attn_q.weight", "attn_q.bias")):
            return n_head
        if name.endswith(("k_proj.weight", "k_proj.bias", "attn_k.weight", "attn_k.bias")):
            return n_head_kv
        return None

    def tensor_to_gguf(self, hf_name: str, array: np.ndarray, hf_config: Mapping[str, Any]) -> np.ndarray:
        heads = self._qk_heads(hf_name, hf_config)
        return array if heads is None else permute_qk(array, heads)

    def tensor_from_gguf(self, gguf_name: str, array: np.ndarray, hf_config: Mapping[str, Any]) -> np.ndarray:
        heads = self._qk_heads(gguf_name, hf_config)
        return array if heads is None else unpermute_qk(array, heads)

    @staticmethod
    def _rope_dim(c: Mapping[str, Any]) -> int:
        if c.get("head_dim") is not None:
            return int(c["head_dim"])
        return int(c["hidden_size"]) // int(c["num_attention_heads"])

    def extra_tensors(self, hf_config: Mapping[str, Any]) -> dict[str, np.ndarray]:
        c = require_hparams(self, hf_config)
        rp = rope_parameters(c)
        full = rp.get("full_attention", rp)
        if str(full.get("rope_type", "")).lower() != "llama3":
            return {}
        return {"rope_freqs.weight": llama3_rope_factors(full, self._rope_dim(c))}

    def hparams_to_gguf(self, hf_config: Mapping[str, Any]) -> dict[str, object]:
        kv = super().hparams_to_gguf(hf_config)
        c = require_hparams(self, hf_config)
        kv[key(Keys.LLM.VOCAB_SIZE, self.name)] = int(c["vocab_size"])
        kv[key(Keys.Rope.DIMENSION_COUNT, self.name)] = self._rope_dim(c)
        return kv

    def _finish_hf_config(self, cfg: dict[str, Any], get: Any, names: set[str] | None,
                          rope_freqs: np.ndarray | None) -> None:
        cfg["hidden_act"] = "silu"
        cfg["rope_theta"] = float(get(Keys.Rope.FREQ_BASE, 10000.0))
        cfg["attention_bias"] = bool(names and "blk.0.attn_q.bias" in names)
        cfg["mlp_bias"] = bool(names and "blk.0.ffn_down.bias" in names)
        if rope_freqs is not None:
            dim = int(get(Keys.Rope.DIMENSION_COUNT, cfg["head_dim"]))
            cfg["rope_scaling"] = llama3_rope_scaling_from_freqs(rope_freqs, cfg["rope_theta"], dim)
