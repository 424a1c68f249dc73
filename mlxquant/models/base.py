"""What every supported architecture shares: tensor-name maps, config reading, GGUF hyper-parameters.

An :class:`Architecture` knows, for one llama.cpp architecture (``general.architecture``):

- how Hugging Face tensor names map to GGUF names and back (``model.layers.3.self_attn.q_proj.weight``
  <-> ``blk.3.attn_q.weight``), which HF tensors llama.cpp skips (rotary ``inv_freq``, vision towers,
  a tied ``lm_head``), and which GGUF tensors are generated from the config (``rope_freqs``);
- what llama.cpp's ``convert_hf_to_gguf.py`` does to tensor values (the llama Q/K row permutation,
  gemma's ``norm + 1``) and the exact inverse;
- the GGUF keys the converter writes from ``config.json`` and the ``config.json`` that transformers
  and mlx-lm load from a GGUF file's metadata.

Shapes and arrays are in NumPy order throughout: a linear weight is ``(out_features, in_features)``,
which is ggml's ``(ne1, ne0)``.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Iterable, Mapping

import numpy as np
from gguf.constants import Keys

from ..errors import FormatError
from .hparams import check_gguf_hparams, require_hparams, text_config

log = logging.getLogger(__name__)

# role the NumPy runtime's observer reports (NumpyModel.observer) -> the HF tensors of a block that
# read that input (the imatrix's statistics, mlxquant.calib.collect; the allocator's rounding
# errors, mlxquant.alloc.activations)
OBSERVED_INPUTS = {
    "attn_qkv": ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"),
    "attn_output": ("self_attn.o_proj.weight",),
    "ffn_gate_up": ("mlp.gate_proj.weight", "mlp.up_proj.weight"),
    "ffn_down": ("mlp.down_proj.weight",),
}

_LAYER_HF = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
_LAYER_GGUF = re.compile(r"^blk\.(\d+)\.(.+)$")

# HF tensors llama.cpp's converter never writes (TextModel.filter_tensors and prepare_tensors).
_SKIP_SUFFIXES = (".rotary_emb.inv_freq", ".attention.masked_bias", ".attention.bias")
_SKIP_PREFIXES = ("vision_tower.", "vision_model.", "multi_modal_projector.", "visual.", "audio_tower.")

# Generic per-layer modules: HF module path (after "model.layers.N.") -> GGUF name (after "blk.N.").
LLAMA_LIKE_LAYER = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
GLOBAL_TENSORS = {
    "model.embed_tokens": "token_embd",
    "model.norm": "output_norm",
    "lm_head": "output",
}


def key(template: str, arch: str) -> str:
    """A gguf-py key template (``Keys.LLM.CONTEXT_LENGTH``) for one architecture."""
    return template.format(arch=arch)


def find_hparam(c: Mapping[str, Any], keys: Iterable[str], default: Any = None) -> Any:
    """The first of ``keys`` present (and not None) in ``c``, else ``default``."""
    for k in keys:
        if c.get(k) is not None:
            return c[k]
    return default


def rope_parameters(c: Mapping[str, Any]) -> dict[str, Any]:
    """RoPE settings normalised the way ``TextModel.__init__`` does it: transformers 5
    ``rope_parameters`` or legacy ``rope_scaling`` + ``rope_theta`` (+ a local/SWA theta)."""
    rp = dict(c.get("rope_parameters") or c.get("rope_scaling") or {})
    if "full_attention" in rp or "sliding_attention" in rp:
        return rp
    theta = find_hparam(c, ("global_rope_theta", "rope_global_theta", "rope_theta_global",
                            "rope_theta", "rotary_emb_base"))
    local = find_hparam(c, ("local_rope_theta", "rope_local_theta", "rope_theta_local",
                            "swa_rope_theta", "rope_local_base_freq"))
    orig_ctx = c.get("original_max_position_embeddings")
    if local is not None:
        rp["sliding_attention"] = {"rope_theta": local}
    if "rope_theta" not in rp and theta is not None:
        rp["rope_theta"] = theta
    if "rope_type" not in rp and rp.get("type") is not None:
        rp["rope_type"] = rp["type"]
    if "original_max_position_embeddings" not in rp and orig_ctx is not None:
        rp["original_max_position_embeddings"] = orig_ctx
    return rp


def rope_scaling_to_gguf(arch: str, rope: Mapping[str, Any]) -> dict[str, object]:
    """GGUF ``{arch}.rope.scaling.*`` keys for a (full-attention) RoPE parameter dict. ``llama3``
    scaling writes no key: it becomes the ``rope_freqs`` tensor (see the llama module)."""
    kv: dict[str, object] = {}
    rtype = rope.get("rope_type")
    factor = rope.get("factor")
    if rtype is None:
        return kv
    if rtype == "linear" and factor is not None:
        kv[key(Keys.Rope.SCALING_TYPE, arch)] = "linear"
        kv[key(Keys.Rope.SCALING_FACTOR, arch)] = float(factor)
    elif rtype == "yarn" and factor is not None:
        kv[key(Keys.Rope.SCALING_TYPE, arch)] = "yarn"
        kv[key(Keys.Rope.SCALING_FACTOR, arch)] = float(factor)
        orig = rope.get("original_max_position_embeddings")
        if orig is None:
            raise FormatError(f"config.json: {arch} yarn RoPE scaling without "
                              "'original_max_position_embeddings'")
        kv[key(Keys.Rope.SCALING_ORIG_CTX_LEN, arch)] = int(orig)
        for src, dst in (("extrapolation_factor", Keys.Rope.SCALING_YARN_EXT_FACTOR),
                         ("beta_fast", Keys.Rope.SCALING_YARN_BETA_FAST),
                         ("beta_slow", Keys.Rope.SCALING_YARN_BETA_SLOW)):
            if rope.get(src) is not None:
                kv[key(dst, arch)] = float(rope[src])
        attn = rope.get("attention_factor", rope.get("attn_factor"))
        if attn is not None:
            kv[key(Keys.Rope.SCALING_YARN_ATTN_FACTOR, arch)] = float(attn)
    elif rtype in ("su", "longrope"):
        kv[key(Keys.Rope.SCALING_TYPE, arch)] = "longrope"
    elif rtype not in ("default", "dynamic", "llama3"):
        log.warning("%s: unknown RoPE scaling type %r left out of the GGUF", arch, rtype)
    return kv


def rope_scaling_from_gguf(arch: str, meta: Mapping[str, Any]) -> dict[str, Any] | None:
    """The config.json ``rope_scaling`` for a GGUF's ``rope.scaling.*`` keys (None when absent)."""
    rtype = meta.get(key(Keys.Rope.SCALING_TYPE, arch))
    factor = meta.get(key(Keys.Rope.SCALING_FACTOR, arch))
    if rtype in (None, "none"):
        return None
    out: dict[str, Any] = {"rope_type": str(rtype), "type": str(rtype)}
    if factor is not None:
        out["factor"] = float(factor)
    if rtype == "yarn":
        orig = meta.get(key(Keys.Rope.SCALING_ORIG_CTX_LEN, arch))
        if orig is not None:
            out["original_max_position_embeddings"] = int(orig)
        for dst, src in (("extrapolation_factor", Keys.Rope.SCALING_YARN_EXT_FACTOR),
                         ("attention_factor", Keys.Rope.SCALING_YARN_ATTN_FACTOR),
                         ("beta_fast", Keys.Rope.SCALING_YARN_BETA_FAST),
                         ("beta_slow", Keys.Rope.SCALING_YARN_BETA_SLOW)):
            if meta.get(key(src, arch)) is not None:
                out[dst] = float(meta[key(src, arch)])
    return out


def _plain(v: Any) -> Any:
    """GGUF metadata values as plain Python (numpy scalars/arrays -> int/float/list)."""
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v


class Architecture:
    """Per-architecture knowledge; subclasses fill in the class attributes and override hooks.

    Attributes:
        name: the GGUF architecture string (``general.architecture``), e.g. ``"llama"``.
        hf_architectures: config.json ``architectures`` entries this class converts.
        hf_model_types: config.json ``model_type`` values this class converts.
        hf_class / hf_model_type: what :meth:`hparams_from_gguf` writes.
        default_tied: transformers' default for ``tie_word_embeddings`` of this family.
        trims_vocab_to_tokenizer: llama.cpp drops ``token_embd`` rows past the tokenizer's
            token count (gemma3); the converter must slice ``token_embd`` to that count.
    """

    name: str = ""
    hf_architectures: tuple[str, ...] = ()
    hf_model_types: tuple[str, ...] = ()
    hf_class: str = ""
    hf_model_type: str = ""
    default_tied: bool = False
    trims_vocab_to_tokenizer: bool = False
    layer_tensors: Mapping[str, str] = LLAMA_LIKE_LAYER
    global_tensors: Mapping[str, str] = GLOBAL_TENSORS
    # GGUF names (without suffix) generated from the config rather than copied from HF
    generated_tensors: tuple[str, ...] = ()

    def __init__(self) -> None:
        self._layer_inv = {v: k for k, v in self.layer_tensors.items()}
        self._global_inv = {v: k for k, v in self.global_tensors.items()}

    def __repr__(self) -> str:
        return f"<Architecture {self.name}>"

    # ---- tied embeddings -------------------------------------------------------------------

    def tie_word_embeddings(self, hf_config: Mapping[str, Any]) -> bool:
        """Whether the output projection is the token embedding (no ``output.weight`` written)."""
        c = text_config(hf_config)
        return bool(c.get("tie_word_embeddings", hf_config.get("tie_word_embeddings", self.default_tied)))

    # ---- tensor names ----------------------------------------------------------------------

    @staticmethod
    def normalize_hf_name(hf_name: str) -> str:
        """Drop the ``language_model.`` wrapper of multimodal checkpoints, as the converter does."""
        return hf_name.replace("language_model.", "")

    def skips_hf_tensor(self, hf_name: str) -> bool:
        """HF tensors the converter drops: rotary caches and non-text towers."""
        return hf_name.endswith(_SKIP_SUFFIXES) or hf_name.startswith(_SKIP_PREFIXES)

    def tensor_name_to_gguf(self, hf_name: str, hf_config: Mapping[str, Any] | None = None) -> str | None:
        """GGUF name of an HF tensor, or None when llama.cpp does not store it (rotary
        ``inv_freq``, vision towers, and ``lm_head.weight`` when ``hf_config`` says the
        embeddings are tied). Raises FormatError for a tensor the architecture does not know."""
        name = self.normalize_hf_name(hf_name)
        if self.skips_hf_tensor(name):
            return None
        base, dot, suffix = name.rpartition(".")
        if suffix not in ("weight", "bias") or not dot:
            raise FormatError(f"{self.name}: no GGUF name for tensor {hf_name!r}")
        m = _LAYER_HF.match(base)
        if m:
            mapped = self.layer_tensors.get(m.group(2))
            if mapped is not None:
                return f"blk.{int(m.group(1))}.{mapped}.{suffix}"
        else:
            mapped = self.global_tensors.get(base)
            if mapped == "output" and hf_config is not None and self.tie_word_embeddings(hf_config):
                return None
            if mapped is not None:
                return f"{mapped}.{suffix}"
        raise FormatError(f"{self.name}: no GGUF name for tensor {hf_name!r}")

    def tensor_name_from_gguf(self, gguf_name: str) -> str | None:
        """HF name of a GGUF tensor; None for tensors generated from the config (``rope_freqs``)
        that have no HF counterpart. Raises FormatError for an unknown tensor."""
        base, dot, suffix = gguf_name.rpartition(".")
        if dot and base in self.generated_tensors:
            return None
        if suffix in ("weight", "bias") and dot:
            m = _LAYER_GGUF.match(base)
            if m:
                mapped = self._layer_inv.get(m.group(2))
                if mapped is not None:
                    return f"model.layers.{int(m.group(1))}.{mapped}.{suffix}"
            else:
                mapped = self._global_inv.get(base)
                if mapped is not None:
                    return f"{mapped}.{suffix}"
        raise FormatError(f"{self.name}: no Hugging Face name for GGUF tensor {gguf_name!r}")

    # ---- tensor values ---------------------------------------------------------------------

    def tensor_to_gguf(self, hf_name: str, array: np.ndarray, hf_config: Mapping[str, Any]) -> np.ndarray:
        """The values llama.cpp's converter stores for an HF tensor (NumPy order, same dtype).
        The base architecture stores them unchanged."""
        return array

    def tensor_from_gguf(self, gguf_name: str, array: np.ndarray, hf_config: Mapping[str, Any]) -> np.ndarray:
        """The exact inverse of :meth:`tensor_to_gguf` for a GGUF tensor (NumPy order)."""
        return array

    def extra_tensors(self, hf_config: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """GGUF tensors the converter generates from the config (float32), e.g. ``rope_freqs``."""
        return {}

    # ---- hyper-parameters ------------------------------------------------------------------

    def hparams_to_gguf(self, hf_config: Mapping[str, Any]) -> dict[str, object]:
        """GGUF metadata keys (``"{arch}.…"``) that ``convert_hf_to_gguf.py`` writes for this
        config: ints are u32 keys, floats f32, strings and bools as such. ``general.*`` and
        ``tokenizer.*`` keys are not included."""
        c = require_hparams(self, hf_config)
        a = self.name
        kv: dict[str, object] = {key(Keys.LLM.BLOCK_COUNT, a): int(self.n_layers(c))}
        n_ctx = find_hparam(c, ("max_position_embeddings", "n_ctx", "n_positions", "max_length",
                                "max_sequence_length", "model_max_length"))
        if n_ctx is not None:
            kv[key(Keys.LLM.CONTEXT_LENGTH, a)] = int(n_ctx)
        if (n_embd := find_hparam(c, ("hidden_size", "n_embd", "dim"))) is not None:
            kv[key(Keys.LLM.EMBEDDING_LENGTH, a)] = int(n_embd)
        n_ff = find_hparam(c, ("prefix_dense_intermediate_size", "dense_intermediate_size",
                               "intermediate_size", "n_inner", "hidden_dim"))
        if n_ff is not None:
            kv[key(Keys.LLM.FEED_FORWARD_LENGTH, a)] = int(n_ff)
        if (n_head := find_hparam(c, ("num_attention_heads", "n_head", "n_heads"))) is not None:
            kv[key(Keys.Attention.HEAD_COUNT, a)] = int(n_head)
        if (n_head_kv := find_hparam(c, ("num_key_value_heads", "n_kv_heads"))) is not None:
            kv[key(Keys.Attention.HEAD_COUNT_KV, a)] = int(n_head_kv)
        if c.get("is_causal") is False:
            kv[key(Keys.Attention.CAUSAL, a)] = False
        rp = rope_parameters(c)
        full = rp.get("full_attention", rp)
        kv.update(rope_scaling_to_gguf(a, full))
        if full.get("rope_theta") is not None:
            kv[key(Keys.Rope.FREQ_BASE, a)] = float(full["rope_theta"])
        local = rp.get("sliding_attention", {}).get("rope_theta")
        if local is not None:
            kv[key(Keys.Rope.FREQ_BASE_SWA, a)] = float(local)
        if (eps := find_hparam(c, ("rms_norm_eps", "norm_eps"))) is not None:
            kv[key(Keys.Attention.LAYERNORM_RMS_EPS, a)] = float(eps)
        if c.get("head_dim") is not None:
            kv[key(Keys.Attention.KEY_LENGTH, a)] = int(c["head_dim"])
            kv[key(Keys.Attention.VALUE_LENGTH, a)] = int(c["head_dim"])
        return kv

    def required_hparams(self, c: Mapping[str, Any]) -> tuple[str, ...]:
        """config.json keys (after ``text_config`` is merged) this architecture cannot do without;
        checked by :func:`mlxquant.models.hparams.require_hparams` where they are used."""
        return ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "vocab_size")

    def n_layers(self, c: Mapping[str, Any]) -> int:
        n = find_hparam(text_config(c), ("n_layers", "num_hidden_layers", "n_layer", "num_layers"))
        if n is None:
            raise FormatError(f"{self.name}: config.json has no num_hidden_layers")
        return int(n)

    def hparams_from_gguf(self, metadata: Mapping[str, Any],
                          tensors: Iterable[str] | Mapping[str, tuple[int, ...]] | None = None,
                          rope_freqs: np.ndarray | None = None) -> dict[str, Any]:
        """A config.json (transformers and mlx-lm) for a GGUF file's metadata.

        ``tensors`` (the GGUF's tensor names, or names -> NumPy-order shapes) decide
        ``tie_word_embeddings`` (no ``output.weight``) and bias flags, and give ``vocab_size``
        from ``token_embd`` rows when the metadata has neither ``{arch}.vocab_size`` nor
        ``tokenizer.ggml.tokens``; without them the family's default tie applies.
        ``rope_freqs`` (the ``rope_freqs.weight`` tensor) restores llama3 RoPE scaling.

        Raises:
            FormatError: a hyper-parameter missing, of the wrong type or out of range, naming the
                file when ``metadata`` is a GGUF file's (:func:`~.hparams.check_gguf_hparams`).
        """
        from ..formats.gguf_check import metadata_source

        meta = {k: _plain(v) for k, v in metadata.items()}
        a = self.name
        shapes = tensors if isinstance(tensors, Mapping) else {}
        embd = shapes.get("token_embd.weight")
        # types, ranges and relations first: nothing below is sized or divided by a bad value
        check_gguf_hparams(a, meta, metadata_source(metadata), int(embd[0]) if embd else None)

        def get(template: str, default: Any = None) -> Any:
            v = meta.get(key(template, a))
            return default if v is None else v

        names = set(tensors) if tensors is not None else None
        n_embd = int(get(Keys.LLM.EMBEDDING_LENGTH))
        n_head = int(get(Keys.Attention.HEAD_COUNT))
        n_head_kv = int(get(Keys.Attention.HEAD_COUNT_KV, n_head))
        head_dim = int(get(Keys.Attention.KEY_LENGTH, n_embd // n_head))
        vocab = get(Keys.LLM.VOCAB_SIZE)
        if vocab is None and meta.get("tokenizer.ggml.tokens") is not None:
            vocab = len(meta["tokenizer.ggml.tokens"])
        if vocab is None and "token_embd.weight" in shapes:
            vocab = shapes["token_embd.weight"][0]
        cfg: dict[str, Any] = {
            "architectures": [self.hf_class],
            "model_type": self.hf_model_type,
            "hidden_size": n_embd,
            "intermediate_size": int(get(Keys.LLM.FEED_FORWARD_LENGTH)),
            "num_hidden_layers": int(get(Keys.LLM.BLOCK_COUNT)),
            "num_attention_heads": n_head,
            "num_key_value_heads": n_head_kv,
            "head_dim": head_dim,
            "rms_norm_eps": float(get(Keys.Attention.LAYERNORM_RMS_EPS, 1e-6)),
            "max_position_embeddings": int(get(Keys.LLM.CONTEXT_LENGTH, 2048)),
            "tie_word_embeddings": (self.default_tied if names is None else "output.weight" not in names),
            "torch_dtype": "float32",
        }
        if vocab is not None:
            cfg["vocab_size"] = int(vocab)
        for hf_key, gguf_key in (("bos_token_id", "tokenizer.ggml.bos_token_id"),
                                 ("eos_token_id", "tokenizer.ggml.eos_token_id"),
                                 ("pad_token_id", "tokenizer.ggml.padding_token_id")):
            if meta.get(gguf_key) is not None:
                cfg[hf_key] = int(meta[gguf_key])
        scaling = rope_scaling_from_gguf(a, meta)
        if scaling is not None:
            cfg["rope_scaling"] = scaling
        self._finish_hf_config(cfg, get, names, rope_freqs)
        return cfg

    def _finish_hf_config(self, cfg: dict[str, Any], get: Any, names: set[str] | None,
                          rope_freqs: np.ndarray | None) -> None:
        """Architecture-specific config.json fields; ``get(template, default)`` reads a key."""
