"""Hyper-parameters checked once, where a file's values become an architecture's config.

config.json (Hugging Face and MLX folders) and GGUF metadata come from whoever published the
model. Before any of their values is used as a size (an allocation, a loop bound, a divisor),
:func:`check_hf_config` and :func:`check_gguf_hparams` check each known key's type and range and
the relations between them (heads divide the width, the vocabulary fits the embedding), and
raise one :class:`~mlxquant.errors.FormatError` naming the file and the key::

    model/config.json: key 'num_attention_heads' must be a positive integer, got 0

The limits below are far above every released model and small enough that nothing sized by them
can exhaust memory before the tensors themselves are read.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from gguf.constants import Keys

from ..errors import FormatError
from ..formats.json_file import (check_int, expect_dict, get_bool, get_dict, get_float, get_int,
                                  source_of)

# The largest released models have 262,144 tokens (Gemma 3), 126 layers and 128 heads (Llama 3.1
# 405B), a width of 16,384 and a feed-forward size of 53,248. Vocabularies are padded in Python
# lists (tokenizer export), so their bound is kept where a padded list stays small (< 200 MB).
MAX_VOCAB = 1 << 21
MAX_LAYERS = 1 << 12
MAX_HEADS = 1 << 12
MAX_WIDTH = 1 << 20          # hidden size, feed-forward size, head size
MAX_CONTEXT = (1 << 32) - 1  # stored as a u32 in GGUF; never used to allocate

# config.json integer keys: (smallest, largest) accepted
_HF_INTS: dict[str, tuple[int, int]] = {
    "hidden_size": (1, MAX_WIDTH), "intermediate_size": (1, MAX_WIDTH),
    "num_hidden_layers": (1, MAX_LAYERS), "num_attention_heads": (1, MAX_HEADS),
    "num_key_value_heads": (1, MAX_HEADS), "head_dim": (1, MAX_WIDTH),
    "vocab_size": (1, MAX_VOCAB), "max_position_embeddings": (1, MAX_CONTEXT),
    "sliding_window": (0, MAX_CONTEXT), "sliding_window_pattern": (1, MAX_LAYERS),
    "original_max_position_embeddings": (1, MAX_CONTEXT),
}
# config.json float keys that must be finite and > 0 when present
_HF_POSITIVE = ("rms_norm_eps", "rope_theta", "rope_local_base_freq", "query_pre_attn_scalar",
                "attn_logit_softcapping", "final_logit_softcapping")


def text_config(hf_config: Mapping[str, Any]) -> dict[str, Any]:
    """config.json with a multimodal model's ``text_config`` merged into the root, as the
    converter does (the text values win)."""
    c = dict(hf_config)
    if isinstance(c.get("text_config"), Mapping):
        c = {**c, **c["text_config"]}
    return c


def _token_ids(c: Mapping[str, Any], key: str, where: str | os.PathLike) -> None:
    v = c.get(key)
    for x in (v if isinstance(v, list) else [] if v is None else [v]):
        check_int(x, where, f"key {key!r}", 0, MAX_VOCAB - 1)


def _check_rope(rope: Any, where: str | os.PathLike, what: str) -> None:
    r = expect_dict(rope, where, f"key {what!r}")
    for k in ("factor", "low_freq_factor", "high_freq_factor", "rope_theta", "beta_fast",
              "beta_slow", "extrapolation_factor", "attention_factor", "attn_factor"):
        get_float(r, k, where, positive=True, default=None)
    get_int(r, "original_max_position_embeddings", where, lo=1, hi=MAX_CONTEXT, default=None)
    rtype = r.get("rope_type", r.get("type"))
    if rtype is not None and not isinstance(rtype, str):
        raise FormatError(f"{where}: key {what!r}: rope_type must be a string")
    if rtype == "llama3" and r.get("low_freq_factor", 1.0) == r.get("high_freq_factor", 4.0):
        raise FormatError(f"{where}: key {what!r}: low_freq_factor equals high_freq_factor")
    if rtype in ("linear", "yarn") and r.get("factor") is None:
        raise FormatError(f"{where}: key {what!r}: {rtype} scaling needs a 'factor'")
    for sub in ("full_attention", "sliding_attention"):
        if r.get(sub) is not None:
            _check_rope(r[sub], where, f"{what}.{sub}")


def _check_heads(where: str | os.PathLike, width: int | None, n_head: int | None,
                 n_kv: int | None, head_dim: int | None, names: tuple[str, str, str]) -> None:
    if n_head is None:
        return
    if n_kv is not None and n_head % n_kv:
        raise FormatError(f"{where}: key {names[1]!r} ({n_kv}) must divide {names[0]!r} ({n_head})")
    if head_dim is None and width is not None and width % n_head:
        raise FormatError(f"{where}: key {names[0]!r} ({n_head}) must divide the width "
                          f"{names[2]!r} ({width})")


def check_hf_config(config: Any, where: str | os.PathLike,
                    embed_rows: int | None = None) -> dict[str, Any]:
    """Check a config.json's hyper-parameters (``text_config`` merged in), returning it.

    Every known key that is present must have the right type and range (the keys an architecture
    cannot do without are checked where it uses them: :func:`require_hparams`); heads must
    divide the width and the KV heads the heads; ``vocab_size`` must not exceed ``embed_rows`` (the
    embedding tensor's rows, when known).

    Raises:
        FormatError: naming ``where`` and the key.
    """
    cfg = expect_dict(config, where, "config")
    if cfg.get("text_config") is not None:
        expect_dict(cfg["text_config"], where, "key 'text_config'")
    c = text_config(cfg)
    for k in ("architectures",):
        v = c.get(k)
        if v is not None and not (isinstance(v, list) and all(isinstance(x, str) for x in v)):
            raise FormatError(f"{where}: key {k!r} must be a list of strings")
    for k in ("model_type", "hidden_act", "hidden_activation", "torch_dtype"):
        if c.get(k) is not None and not isinstance(c[k], str):
            raise FormatError(f"{where}: key {k!r} must be a string, got {type(c[k]).__name__}")
    ints = {k: get_int(c, k, where, lo=lo, hi=hi, default=None) for k, (lo, hi) in _HF_INTS.items()}
    for k in _HF_POSITIVE:
        get_float(c, k, where, positive=True, default=None)
    get_bool(c, "tie_word_embeddings", where, default=None)
    for k in ("bos_token_id", "eos_token_id", "pad_token_id"):
        _token_ids(c, k, where)
    for k in ("rope_scaling", "rope_parameters"):
        if c.get(k) is not None:
            _check_rope(c[k], where, k)
    types = c.get("layer_types")
    if types is not None and not (isinstance(types, list) and all(isinstance(t, str) for t in types)):
        raise FormatError(f"{where}: key 'layer_types' must be a list of strings")
    _check_heads(where, ints["hidden_size"], ints["num_attention_heads"],
                 ints["num_key_value_heads"], ints["head_dim"],
                 ("num_attention_heads", "num_key_value_heads", "hidden_size"))
    if embed_rows is not None and ints["vocab_size"] is not None and ints["vocab_size"] > embed_rows:
        raise FormatError(f"{where}: key 'vocab_size' ({ints['vocab_size']}) exceeds the "
                          f"{embed_rows} rows of the embedding tensor")
    return cfg


def require_hparams(arch: Any, config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with ``text_config`` merged, after checking it (:func:`check_hf_config`: the
    architecture's entry point checks again whatever a caller built or read) and that the keys
    ``arch`` (an :class:`~mlxquant.models.base.Architecture`) cannot do without are present.

    Raises:
        FormatError: ``"<config.json>: missing key 'hidden_size' (needed for a llama model)"``.
    """
    where = source_of(config)
    check_hf_config(config, where)
    c = text_config(config)
    for k in arch.required_hparams(c):
        if c.get(k) is None:
            raise FormatError(f"{where}: missing key {k!r} (needed for a {arch.name} model)")
    return c


def check_gguf_hparams(arch: str, meta: Mapping[str, Any], where: str | os.PathLike,
                       embed_rows: int | None = None) -> None:
    """Check the ``{arch}.*`` hyper-parameters of GGUF metadata that a config.json is built from:
    required keys present, integers and finite floats in range, heads dividing the width, the
    vocabulary (``{arch}.vocab_size`` or the token count) within ``MAX_VOCAB`` and the embedding.

    Raises:
        FormatError: naming ``where`` and the key.
    """
    def k(template: str) -> str:
        return template.format(arch=arch)

    width = get_int(meta, k(Keys.LLM.EMBEDDING_LENGTH), where, lo=1, hi=MAX_WIDTH)
    get_int(meta, k(Keys.LLM.FEED_FORWARD_LENGTH), where, lo=1, hi=MAX_WIDTH)
    get_int(meta, k(Keys.LLM.BLOCK_COUNT), where, lo=1, hi=MAX_LAYERS)
    n_head = get_int(meta, k(Keys.Attention.HEAD_COUNT), where, lo=1, hi=MAX_HEADS)
    n_kv = get_int(meta, k(Keys.Attention.HEAD_COUNT_KV), where, lo=1, hi=MAX_HEADS, default=None)
    head_dim = get_int(meta, k(Keys.Attention.KEY_LENGTH), where, lo=1, hi=MAX_WIDTH, default=None)
    get_int(meta, k(Keys.Attention.VALUE_LENGTH), where, lo=1, hi=MAX_WIDTH, default=None)
    get_int(meta, k(Keys.Rope.DIMENSION_COUNT), where, lo=2, hi=MAX_WIDTH, default=None)
    get_int(meta, k(Keys.LLM.CONTEXT_LENGTH), where, lo=1, hi=MAX_CONTEXT, default=None)
    get_int(meta, k(Keys.Rope.SCALING_ORIG_CTX_LEN), where, lo=1, hi=MAX_CONTEXT, default=None)
    get_int(meta, k(Keys.Attention.SLIDING_WINDOW), where, lo=0, hi=MAX_CONTEXT, default=None)
    vocab = get_int(meta, k(Keys.LLM.VOCAB_SIZE), where, lo=1, hi=MAX_VOCAB, default=None)
    for t in (Keys.Attention.LAYERNORM_RMS_EPS, Keys.Rope.FREQ_BASE, Keys.Rope.FREQ_BASE_SWA,
              Keys.Rope.SCALING_FACTOR, Keys.LLM.ATTN_LOGIT_SOFTCAPPING,
              Keys.LLM.FINAL_LOGIT_SOFTCAPPING, Keys.Rope.SCALING_YARN_EXT_FACTOR,
              Keys.Rope.SCALING_YARN_ATTN_FACTOR, Keys.Rope.SCALING_YARN_BETA_FAST,
              Keys.Rope.SCALING_YARN_BETA_SLOW):
        get_float(meta, k(t), where, positive=True, default=None)
    rtype = meta.get(k(Keys.Rope.SCALING_TYPE))
    if rtype is not None and not isinstance(rtype, str):
        raise FormatError(f"{where}: key {k(Keys.Rope.SCALING_TYPE)!r} must be a string")
    pattern = meta.get(k(Keys.Attention.SLIDING_WINDOW_PATTERN))
    if isinstance(pattern, list):
        if not all(isinstance(x, bool) for x in pattern):
            raise FormatError(f"{where}: key {k(Keys.Attention.SLIDING_WINDOW_PATTERN)!r} must be "
                              "an integer or an array of bools")
    elif pattern is not None:
        check_int(pattern, where, f"key {k(Keys.Attention.SLIDING_WINDOW_PATTERN)!r}", 1, MAX_LAYERS)
    for key in ("tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                "tokenizer.ggml.padding_token_id"):
        get_int(meta, key, where, lo=0, hi=MAX_VOCAB - 1, default=None)
    _check_heads(where, width, n_head, n_kv, head_dim,
                 (k(Keys.Attention.HEAD_COUNT), k(Keys.Attention.HEAD_COUNT_KV),
                  k(Keys.LLM.EMBEDDING_LENGTH)))
    tokens = meta.get("tokenizer.ggml.tokens")
    if tokens is not None and (not isinstance(tokens, list) or len(tokens) > MAX_VOCAB):
        raise FormatError(f"{where}: key 'tokenizer.ggml.tokens' must be an array of at most "
                          f"{MAX_VOCAB} strings")
    if vocab is not None and embed_rows is not None and vocab > embed_rows:
        raise FormatError(f"{where}: key {k(Keys.LLM.VOCAB_SIZE)!r} ({vocab}) exceeds the "
                          f"{embed_rows} rows of token_embd.weight")


def check_quantization(q: Any, where: str | os.PathLike) -> dict[str, Any]:
    """An MLX config.json ``quantization`` block: defaults ``group_size`` (1..65536), ``bits``
    (1..8), ``mode`` (a string) and per-module entries (false, or an object with the same keys;
    other values, e.g. a Hugging Face ``quant_method``, are left alone)."""
    block = get_dict({"quantization": q}, "quantization", where)

    def one(entry: Mapping[str, Any], what: str) -> None:
        for name, (lo, hi) in (("group_size", (1, 1 << 16)), ("bits", (1, 8))):
            if name in entry:  # present means usable: null is refused like any non-integer
                check_int(entry[name], where, f"quantization{what} {name!r}", lo, hi)
        if "mode" in entry and not isinstance(entry["mode"], str):
            raise FormatError(f"{where}: quantization{what} 'mode' must be a string")

    one(block, "")
    for key, v in block.items():
        if key in ("group_size", "bits", "mode"):
            continue
        if isinstance(v, dict):  # a module's own parameters (false: left unquantized)
            one(v, f"[{key!r}]")
    return block
