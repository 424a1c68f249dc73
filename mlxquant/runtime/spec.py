"""What a forward pass needs to know about a model, read once from its config.json-style dict.

:class:`ModelSpec` gathers, for llama / qwen2 / qwen3 / gemma2 / gemma3, the sizes, the RoPE
frequencies of every layer (with llama3 and linear scaling), the sliding window of every layer,
soft-capping, the attention scale, the activation and the gemma conventions, so that
:mod:`mlxquant.runtime.numpy_model` has no per-architecture branches beyond flags.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from ..errors import FormatError, UnsupportedArchitectureError
from ..formats.json_file import get_int
from ..models.base import find_hparam, rope_parameters, text_config
from ..models.hparams import check_hf_config

FAMILIES = ("llama", "qwen2", "qwen3", "gemma2", "gemma3")


def llama3_inv_freq(inv_freq: np.ndarray, rope: Mapping[str, Any]) -> np.ndarray:
    """Llama 3.x frequency scaling (transformers' ``_compute_llama3_parameters``), float64."""
    factor = float(rope.get("factor", 8.0))
    low = float(rope.get("low_freq_factor", 1.0))
    high = float(rope.get("high_freq_factor", 4.0))
    old_ctx = float(rope.get("original_max_position_embeddings", 8192))
    wavelen = 2 * math.pi / inv_freq
    smooth = (old_ctx / wavelen - low) / (high - low)
    mid = (1 - smooth) * inv_freq / factor + smooth * inv_freq
    out = np.where(wavelen > old_ctx / low, inv_freq / factor, inv_freq)
    is_mid = (wavelen >= old_ctx / high) & (wavelen <= old_ctx / low)
    return np.where(is_mid, mid, out)


def inv_frequencies(head_dim: int, theta: float, rope: Mapping[str, Any] | None) -> np.ndarray:
    """RoPE inverse frequencies (float64, ``head_dim // 2``) for base ``theta`` and a
    ``rope_scaling`` block (None, default, linear, llama3). Raises UnsupportedArchitectureError for
    other scaling types (yarn, longrope)."""
    inv = 1.0 / (float(theta) ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    rtype = str((rope or {}).get("rope_type") or (rope or {}).get("type") or "default").lower()
    if rtype in ("default", "none"):
        return inv
    if rtype == "linear":
        factor = (rope or {}).get("factor")
        if factor is None:
            raise FormatError("config.json: linear RoPE scaling without a 'factor'")
        return inv / float(factor)
    if rtype == "llama3":
        return llama3_inv_freq(inv, rope)  # type: ignore[arg-type]
    raise UnsupportedArchitectureError(f"RoPE scaling {rtype!r} is not supported by the runtime "
                                       "(supported: default, linear, llama3)")


@dataclass
class ModelSpec:
    """Hyper-parameters of one model, normalised for the runtime (see module docstring)."""

    family: str
    n_layers: int
    hidden: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    vocab: int
    eps: float
    activation: str  # "silu" or "gelu_tanh"
    attn_scale: float
    inv_freq: list[np.ndarray]  # per layer, float64 (head_dim // 2)
    window: list[int | None]  # per layer: sliding window in tokens, None = full attention
    attn_softcap: float | None = None
    final_softcap: float | None = None
    embed_scale: float | None = None  # gemma: sqrt(hidden)
    norm_offset: float = 0.0  # gemma: RMSNorm multiplies by (1 + w)
    qk_norm: bool = False
    sandwich_norms: bool = False  # gemma: post-attention and post-FFN norms
    tied: bool = False
    bos_token_id: int | None = None
    eos_token_ids: list[int] = field(default_factory=list)
    max_context: int = 4096

    def kv_bytes_per_token(self) -> int:
        """float32 KV-cache bytes per token of context, all layers."""
        return 2 * 4 * self.n_layers * self.n_kv_heads * self.head_dim


def _ids(v: Any) -> list[int]:
    if isinstance(v, int):
        return [v]
    if isinstance(v, (list, tuple)):
        return [int(x) for x in v if isinstance(x, int)]
    return []


def model_spec(family: str, config: Mapping[str, Any], tied: bool) -> ModelSpec:
    """A :class:`ModelSpec` for architecture ``family`` (GGUF name) and its config.json.

    Raises:
        UnsupportedArchitectureError: a family or RoPE scaling the runtime does not run.
        FormatError: a config missing a required size, or with a value of the wrong type or
            out of range (:func:`mlxquant.models.hparams.check_hf_config`).
    """
    if family not in FAMILIES:
        raise UnsupportedArchitectureError(
            f"the runtime has no forward pass for architecture {family!r} (supported: {', '.join(FAMILIES)})")
    c = text_config(config)
    where = getattr(config, "source", None) or "config.json"
    check_hf_config(c, where)
    hidden = get_int(c, "hidden_size", where)
    n_heads = get_int(c, "num_attention_heads", where)
    n_layers = get_int(c, "num_hidden_layers", where)
    vocab = get_int(c, "vocab_size", where)
    n_kv = get_int(c, "num_key_value_heads", where, default=n_heads)
    head_dim = get_int(c, "head_dim", where, default=hidden // n_heads)
    gemma = family.startswith("gemma")
    rp = rope_parameters(c)
    full = rp.get("full_attention", rp)
    theta = float(find_hparam(full, ("rope_theta",), find_hparam(c, ("rope_theta",), 10000.0)))
    global_inv = inv_frequencies(head_dim, theta, full)
    inv = [global_inv] * n_layers
    window: list[int | None] = [None] * n_layers
    spec_kw: dict[str, Any] = {}
    if family == "gemma2":
        w = int(c.get("sliding_window") or 4096)
        window = [w if i % 2 == 0 else None for i in range(n_layers)]
        spec_kw.update(attn_softcap=c.get("attn_logit_softcapping"),
                       final_softcap=c.get("final_logit_softcapping"))
    elif family == "gemma3":
        types = c.get("layer_types")
        if not types:
            pattern = int(c.get("sliding_window_pattern") or 6)
            types = ["sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(n_layers)]
        w = c.get("sliding_window")
        local_theta = float(c.get("rope_local_base_freq") or 10000.0)
        local_inv = inv_frequencies(head_dim, local_theta, None)
        for i, t in enumerate(types[:n_layers]):
            if t == "sliding_attention" and w:
                window[i] = int(w)
                inv[i] = local_inv
        spec_kw.update(final_softcap=c.get("final_logit_softcapping"),
                       attn_softcap=c.get("attn_logit_softcapping"))
    if gemma:
        scalar = float(c.get("query_pre_attn_scalar") or head_dim)
        spec_kw.update(embed_scale=float(np.float32(math.sqrt(hidden))), norm_offset=1.0,
                       sandwich_norms=True, attn_scale=scalar ** -0.5, activation="gelu_tanh")
    else:
        spec_kw.update(attn_scale=head_dim ** -0.5, activation="silu")
    act = str(c.get("hidden_activation") or c.get("hidden_act") or "")
    if act and act not in ("silu", "swish", "gelu_pytorch_tanh", "gelu_tanh", "gelu"):
        raise UnsupportedArchitectureError(f"activation {act!r} is not supported by the runtime")
    eos = _ids(c.get("eos_token_id"))
    return ModelSpec(
        family=family, n_layers=n_layers, hidden=hidden, n_heads=n_heads, n_kv_heads=n_kv,
        head_dim=head_dim, vocab=vocab, eps=float(c.get("rms_norm_eps") or 1e-6),
        inv_freq=inv, window=window, qk_norm=family in ("qwen3", "gemma3"), tied=tied,
        bos_token_id=c.get("bos_token_id") if isinstance(c.get("bos_token_id"), int) else None,
        eos_token_ids=eos, max_context=int(c.get("max_position_embeddings") or 4096), **spec_kw)
