"""The gemma2 and gemma3 architectures (Gemma 2, Gemma 3 text and the text half of Gemma 3 VLMs).

What llama.cpp's converter (``conversion/gemma.py``, ``Gemma2Model`` / ``Gemma3Model``) does:

- every RMS-norm weight (HF names ending in ``norm.weight``) is stored as ``w + 1``: Gemma's
  RMSNorm multiplies by ``1 + w``, llama.cpp's by ``w``. The sum is taken in the tensor's own
  dtype (float16 stays float16; bfloat16 is widened to float32 first, as the converter does);
- four norms per block: ``input_layernorm`` -> ``attn_norm``, ``post_attention_layernorm`` ->
  ``post_attention_norm``, ``pre_feedforward_layernorm`` -> ``ffn_norm``,
  ``post_feedforward_layernorm`` -> ``post_ffw_norm`` (gemma3 adds ``attn_q_norm``/``attn_k_norm``);
- embeddings are always tied: gemma2 drops any ``lm_head.weight``;
- gemma2 writes soft-capping and the sliding window; gemma3 writes the sliding window (unless
  ``sliding_window_pattern`` is 1), the SWA RoPE base and its defaults; llama.cpp assumes every
  6th gemma3 layer is global, so a different ``layer_types`` pattern is written as a bool array;
- gemma3 drops ``token_embd`` rows past the tokenizer's size (``trims_vocab_to_tokenizer``).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from gguf.constants import Keys

from .base import (GLOBAL_TENSORS, LLAMA_LIKE_LAYER, Architecture, find_hparam, key, rope_parameters,
                   text_config)
from .hparams import require_hparams

GEMMA_LAYER = {
    **{k: v for k, v in LLAMA_LIKE_LAYER.items() if k != "post_attention_layernorm"},
    "post_attention_layernorm": "post_attention_norm",
    "pre_feedforward_layernorm": "ffn_norm",
    "post_feedforward_layernorm": "post_ffw_norm",
}

GELU_TANH = "gelu_pytorch_tanh"


def _is_norm(name: str) -> bool:
    return name.endswith("norm.weight")


class _Gemma(Architecture):
    default_tied = True

    def tensor_to_gguf(self, hf_name: str, array: np.ndarray, hf_config: Mapping[str, Any]) -> np.ndarray:
        if _is_norm(self.normalize_hf_name(hf_name)):
            return array + array.dtype.type(1)
        return array

    def tensor_from_gguf(self, gguf_name: str, array: np.ndarray, hf_config: Mapping[str, Any]) -> np.ndarray:
        if _is_norm(gguf_name):
            return array - array.dtype.type(1)
        return array

    @staticmethod
    def _attention_scalar(n_layers: int, big_layers: int, n_embd: int, n_head: int, head_dim: int) -> int:
        """HF ``query_pre_attn_scalar`` llama.cpp implies: n_embd / n_head for the 27B models,
        head_dim otherwise (llama-model: ``f_attention_scale``)."""
        return n_embd // n_head if n_layers == big_layers else head_dim


class Gemma2Architecture(_Gemma):
    name = "gemma2"
    hf_architectures = ("Gemma2ForCausalLM",)
    hf_model_types = ("gemma2",)
    hf_class = "Gemma2ForCausalLM"
    hf_model_type = "gemma2"
    layer_tensors = GEMMA_LAYER
    # lm_head is skipped by Gemma2Model.filter_tensors: no "output" tensor for gemma2
    global_tensors = {k: v for k, v in GLOBAL_TENSORS.items() if k != "lm_head"}

    def tensor_name_to_gguf(self, hf_name: str, hf_config: Mapping[str, Any] | None = None) -> str | None:
        if self.normalize_hf_name(hf_name) == "lm_head.weight":
            return None
        return super().tensor_name_to_gguf(hf_name, hf_config)

    def tie_word_embeddings(self, hf_config: Mapping[str, Any]) -> bool:
        return True

    def required_hparams(self, c: Mapping[str, Any]) -> tuple[str, ...]:
        return (*super().required_hparams(c), "max_position_embeddings", "rms_norm_eps", "head_dim")

    def hparams_to_gguf(self, hf_config: Mapping[str, Any]) -> dict[str, object]:
        c = require_hparams(self, hf_config)
        a = self.name
        n_head = int(c["num_attention_heads"])
        return {
            key(Keys.LLM.CONTEXT_LENGTH, a): int(c["max_position_embeddings"]),
            key(Keys.LLM.EMBEDDING_LENGTH, a): int(c["hidden_size"]),
            key(Keys.LLM.BLOCK_COUNT, a): self.n_layers(c),
            key(Keys.LLM.FEED_FORWARD_LENGTH, a): int(c["intermediate_size"]),
            key(Keys.Attention.HEAD_COUNT, a): n_head,
            key(Keys.Attention.HEAD_COUNT_KV, a): int(c.get("num_key_value_heads") or n_head),
            key(Keys.Attention.LAYERNORM_RMS_EPS, a): float(c["rms_norm_eps"]),
            key(Keys.Attention.KEY_LENGTH, a): int(c["head_dim"]),
            key(Keys.Attention.VALUE_LENGTH, a): int(c["head_dim"]),
            key(Keys.LLM.ATTN_LOGIT_SOFTCAPPING, a): float(find_hparam(c, ("attn_logit_softcapping",), 50.0)),
            key(Keys.LLM.FINAL_LOGIT_SOFTCAPPING, a): float(find_hparam(c, ("final_logit_softcapping",), 30.0)),
            key(Keys.Attention.SLIDING_WINDOW, a): int(find_hparam(c, ("sliding_window",), 4096)),
        }

    def _finish_hf_config(self, cfg: dict[str, Any], get: Any, names: set[str] | None,
                          rope_freqs: np.ndarray | None) -> None:
        cfg["hidden_act"] = GELU_TANH
        cfg["hidden_activation"] = GELU_TANH
        cfg["rope_theta"] = float(get(Keys.Rope.FREQ_BASE, 10000.0))
        cfg["attn_logit_softcapping"] = float(get(Keys.LLM.ATTN_LOGIT_SOFTCAPPING, 50.0))
        cfg["final_logit_softcapping"] = float(get(Keys.LLM.FINAL_LOGIT_SOFTCAPPING, 30.0))
        cfg["sliding_window"] = int(get(Keys.Attention.SLIDING_WINDOW, 4096))
        cfg["query_pre_attn_scalar"] = self._attention_scalar(
            cfg["num_hidden_layers"], 46, cfg["hidden_size"], cfg["num_attention_heads"], cfg["head_dim"])
        cfg["tie_word_embeddings"] = True


def gemma3_default_layer_types(n_layers: int, pattern: int = 6) -> list[str]:
    """transformers' Gemma3 layer types for a sliding-window pattern: every ``pattern``-th layer
    is global (llama.cpp's ``set_swa_pattern`` agrees)."""
    return ["sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(n_layers)]


class Gemma3Architecture(_Gemma):
    name = "gemma3"
    hf_architectures = ("Gemma3ForCausalLM", "Gemma3ForConditionalGeneration")
    hf_model_types = ("gemma3", "gemma3_text")
    hf_class = "Gemma3ForCausalLM"
    hf_model_type = "gemma3_text"
    trims_vocab_to_tokenizer = True
    layer_tensors = {
        **GEMMA_LAYER,
        "self_attn.q_norm": "attn_q_norm",
        "self_attn.k_norm": "attn_k_norm",
    }

    def required_hparams(self, c: Mapping[str, Any]) -> tuple[str, ...]:
        window = () if c.get("sliding_window_pattern") == 1 else ("sliding_window",)
        return (*super().required_hparams(c), *window)

    def hparams_to_gguf(self, hf_config: Mapping[str, Any]) -> dict[str, object]:
        kv = super().hparams_to_gguf(hf_config)
        c = text_config(hf_config)
        a = self.name
        rp = rope_parameters(c)
        kv[key(Keys.LLM.CONTEXT_LENGTH, a)] = int(find_hparam(c, ("max_position_embeddings",), 131072))
        kv[key(Keys.Attention.HEAD_COUNT, a)] = int(find_hparam(c, ("num_attention_heads",), 8))
        kv[key(Keys.Attention.LAYERNORM_RMS_EPS, a)] = float(find_hparam(c, ("rms_norm_eps",), 1e-6))
        kv[key(Keys.Attention.KEY_LENGTH, a)] = int(find_hparam(c, ("head_dim",), 256))
        kv[key(Keys.Attention.VALUE_LENGTH, a)] = int(find_hparam(c, ("head_dim",), 256))
        kv[key(Keys.Rope.FREQ_BASE, a)] = float(rp.get("full_attention", rp).get("rope_theta", 1_000_000.0))
        if c.get("final_logit_softcapping"):
            kv[key(Keys.LLM.FINAL_LOGIT_SOFTCAPPING, a)] = float(c["final_logit_softcapping"])
        if c.get("sliding_window_pattern") != 1:
            kv[key(Keys.Attention.SLIDING_WINDOW, a)] = int(c["sliding_window"])
        kv[key(Keys.Attention.HEAD_COUNT_KV, a)] = int(find_hparam(c, ("num_key_value_heads",), 4))
        n_layers = self.n_layers(c)
        types = c.get("layer_types")
        if types and list(types) != gemma3_default_layer_types(n_layers):
            # not llama.cpp's default pattern of 6: say which layers use the sliding window
            kv[key(Keys.Attention.SLIDING_WINDOW_PATTERN, a)] = [t == "sliding_attention" for t in types]
        return kv

    def _finish_hf_config(self, cfg: dict[str, Any], get: Any, names: set[str] | None,
                          rope_freqs: np.ndarray | None) -> None:
        n_layers = cfg["num_hidden_layers"]
        cfg["hidden_activation"] = GELU_TANH
        cfg["hidden_act"] = GELU_TANH
        cfg["rope_theta"] = float(get(Keys.Rope.FREQ_BASE, 1_000_000.0))
        cfg["rope_local_base_freq"] = float(get(Keys.Rope.FREQ_BASE_SWA, 10000.0))
        cfg["query_pre_attn_scalar"] = self._attention_scalar(
            n_layers, 62, cfg["hidden_size"], cfg["num_attention_heads"], cfg["head_dim"])
        cfg["final_logit_softcapping"] = get(Keys.LLM.FINAL_LOGIT_SOFTCAPPING)
        cfg["attn_logit_softcapping"] = None
        window = get(Keys.Attention.SLIDING_WINDOW)
        pattern = get(Keys.Attention.SLIDING_WINDOW_PATTERN, 6)
        if window is None or int(window) == 0:
            cfg["sliding_window"] = None
            cfg["sliding_window_pattern"] = 1
            cfg["layer_types"] = ["full_attention"] * n_layers
        elif isinstance(pattern, list):
            cfg["sliding_window"] = int(window)
            cfg["layer_types"] = ["sliding_attention" if s else "full_attention" for s in pattern]
        else:
            cfg["sliding_window"] = int(window)
            cfg["sliding_window_pattern"] = int(pattern)
            cfg["layer_types"] = gemma3_default_layer_types(n_layers, int(pattern))
