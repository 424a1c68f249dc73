"""The qwen2 and qwen3 architectures (Qwen1.5/2/2.5 and Qwen3 dense models).

llama.cpp's converter (``conversion/qwen.py``, ``Qwen2Model`` / ``Qwen3Model``) stores their
tensors unchanged (no Q/K permutation: llama.cpp runs them with NEOX-style RoPE). Qwen2 has biases
on the Q/K/V projections; Qwen3 drops them and adds per-head RMS norms on Q and K
(``attn_q_norm`` / ``attn_k_norm``). Neither writes ``vocab_size`` or ``rope.dimension_count``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gguf.constants import Keys

from .base import LLAMA_LIKE_LAYER, Architecture


class Qwen2Architecture(Architecture):
    name = "qwen2"
    hf_architectures = ("Qwen2ForCausalLM", "Qwen2Model")
    hf_model_types = ("qwen2",)
    hf_class = "Qwen2ForCausalLM"
    hf_model_type = "qwen2"
    default_tied = False

    @staticmethod
    def normalize_hf_name(hf_name: str) -> str:
        name = Architecture.normalize_hf_name(hf_name)
        # a bare Qwen2Model checkpoint has no "model." prefix (Qwen2Model.modify_tensors)
        if name.startswith(("layers.", "embed_tokens.", "norm.")):
            name = "model." + name
        return name

    def _finish_hf_config(self, cfg: dict[str, Any], get: Any, names: set[str] | None,
                          rope_freqs: np.ndarray | None) -> None:
        cfg["hidden_act"] = "silu"
        cfg["rope_theta"] = float(get(Keys.Rope.FREQ_BASE, 1000000.0))
        cfg["use_sliding_window"] = False
        cfg["attention_dropout"] = 0.0


class Qwen3Architecture(Qwen2Architecture):
    name = "qwen3"
    hf_architectures = ("Qwen3ForCausalLM", "Qwen3Model")
    hf_model_types = ("qwen3",)
    hf_class = "Qwen3ForCausalLM"
    hf_model_type = "qwen3"
    layer_tensors = {
        **LLAMA_LIKE_LAYER,
        "self_attn.q_norm": "attn_q_norm",
        "self_attn.k_norm": "attn_k_norm",
    }

    def _finish_hf_config(self, cfg: dict[str, Any], get: Any, names: set[str] | None,
                          rope_freqs: np.ndarray | None) -> None:
        super()._finish_hf_config(cfg, get, names, rope_freqs)
        cfg["attention_bias"] = bool(names and "blk.0.attn_q.bias" in names)
