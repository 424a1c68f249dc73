"""Float32 GGUF files for tests: the inputs ``llama_model_quantize`` (the judge) starts from.

- :func:`write_f32_gguf` writes any HF-layout model held in memory (config + tensors, with or
  without tokenizer metadata) the way llama.cpp's ``convert_hf_to_gguf.py --outtype f32`` lays it
  out, through mlxquant's architecture maps (names, Q/K permutation, gemma norms, generated
  ``rope_freqs``) and :func:`mlxquant.formats.gguf_write.write_gguf`, one tensor at a time;
- :func:`shakespeare_f32_gguf` and :func:`smollm2_f32_gguf` are ``mlxquant.convert(...,
  outtype="F32")`` of the tiny-shakespeare-llama folder and of the SmolLM2 Q4_1 GGUF;
- :func:`tiny_hf_model` builds a small random HF-layout model of any supported architecture.

Test support only: nothing here validates untrusted files.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..formats.gguf_write import Metadata, TensorSpec, write_gguf
from ..models import get_architecture
from .inputs import shakespeare_model_dir, smollm2_gguf

log = logging.getLogger(__name__)

F32_FILE_TYPE = 0  # LLAMA_FTYPE_ALL_F32


def write_f32_gguf(hf_config: Mapping[str, Any], tensors: Mapping[str, np.ndarray], out: str | Path,
                   extra_metadata: Mapping[str, Any] | None = None, name: str = "test model") -> Path:
    """Write an HF-layout model (``tensors``: HF name -> array, any float dtype) as a float32 GGUF:
    GGUF names, converter value transforms, generated tensors (``rope_freqs``), the architecture's
    hyper-parameters, ``general.file_type = 0`` and ``extra_metadata`` (e.g. ``tokenizer.*``; plain
    Python values, typed as :func:`~mlxquant.formats.gguf_write.infer_type` does). A tied
    ``lm_head.weight`` is left out. Returns ``out``."""
    out = Path(out)
    arch = get_architecture(hf_config)
    plan: dict[str, tuple[str | None, tuple[int, ...]]] = {}
    for hf_name in sorted(tensors):
        g = arch.tensor_name_to_gguf(hf_name, hf_config)
        if g is not None:
            plan[g] = (hf_name, tuple(tensors[hf_name].shape))
    extra = arch.extra_tensors(hf_config)
    for g, arr in extra.items():
        plan[g] = (None, tuple(arr.shape))
    meta = Metadata()
    meta.set("general.architecture", arch.name)
    meta.set("general.name", name)
    meta.set("general.file_type", F32_FILE_TYPE)
    meta.update({**arch.hparams_to_gguf(hf_config), **(extra_metadata or {})})

    def data(spec: TensorSpec) -> np.ndarray:
        hf_name = plan[spec.name][0]
        if hf_name is None:
            a = extra[spec.name]
        else:
            a = np.asarray(tensors[hf_name])
            a = a.astype(np.float32) if a.dtype not in (np.float16, np.float32) else a
            a = arch.tensor_to_gguf(hf_name, a, hf_config)
        a = np.ascontiguousarray(a, dtype=np.float32)
        if a.shape != spec.shape:
            raise ValueError(f"{out}: tensor {spec.name} has shape {a.shape}, expected {spec.shape}")
        return a

    specs = [TensorSpec(g, "F32", s) for g, (_, s) in plan.items()]
    return write_gguf(out, meta, specs, data, force=True)


def shakespeare_f32_gguf(out: str | Path, tokenizer: bool = True) -> Path:
    """The tiny-shakespeare-llama folder as a float32 GGUF: ``mlxquant.convert(folder, out,
    outtype="F32")``, or without tokenizer metadata when not ``tokenizer``. Raises
    FileNotFoundError when the folder is not there."""
    folder = shakespeare_model_dir()
    if folder is None:
        raise FileNotFoundError("tiny-shakespeare-llama not found: it is committed in "
                                "tests/data/tiny-shakespeare-llama (or set MLXQUANT_SHAKESPEARE_MODEL)")
    if tokenizer:
        from ..convert import convert

        convert(folder, out, outtype="F32", force=True)
        return Path(out)
    from safetensors.numpy import load_file

    config = json.loads((folder / "config.json").read_text())
    return write_f32_gguf(config, load_file(str(folder / "model.safetensors")), out,
                          name="tiny-shakespeare-llama")


def smollm2_f32_gguf(out: str | Path) -> Path:
    """The SmolLM2-135M-Instruct Q4_1 GGUF (:func:`~mlxquant.testing.inputs.smollm2_gguf`)
    dequantized to float32 (about 540 MB; same names, shapes and metadata, ``general.file_type``
    0): ``mlxquant.convert(gguf, out, outtype="F32")``. Raises FileNotFoundError, saying how to get
    it, when the GGUF is not there."""
    src = smollm2_gguf()
    from ..convert import convert

    convert(src, out, outtype="F32", force=True)
    return Path(out)


# ---- tiny random models ---------------------------------------------------------------------

_TINY_BASE = {
    "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 8,
    "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 32, "vocab_size": 512,
    "rms_norm_eps": 1e-6, "max_position_embeddings": 512, "torch_dtype": "float32",
}
TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "llama": {**_TINY_BASE, "architectures": ["LlamaForCausalLM"], "model_type": "llama",
              "rope_theta": 10000.0, "tie_word_embeddings": False, "hidden_act": "silu"},
    "qwen2": {**_TINY_BASE, "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
              "rope_theta": 1000000.0, "tie_word_embeddings": False, "hidden_act": "silu",
              "num_key_value_heads": 4},
    "qwen3": {**_TINY_BASE, "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
              "rope_theta": 1000000.0, "tie_word_embeddings": True, "hidden_act": "silu",
              "head_dim": 64, "num_attention_heads": 4},
    "gemma2": {**_TINY_BASE, "architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2",
               "head_dim": 64, "num_attention_heads": 4, "query_pre_attn_scalar": 64,
               "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0,
               "sliding_window": 128, "hidden_activation": "gelu_pytorch_tanh",
               "rope_theta": 10000.0, "tie_word_embeddings": True},
    "gemma3": {**_TINY_BASE, "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text",
               "head_dim": 64, "num_attention_heads": 4, "num_key_value_heads": 1,
               "query_pre_attn_scalar": 64, "sliding_window": 128, "sliding_window_pattern": 6,
               "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0,
               "hidden_activation": "gelu_pytorch_tanh", "tie_word_embeddings": True,
               "final_logit_softcapping": None, "attn_logit_softcapping": None},
}


def tiny_hf_model(arch: str, seed: int = 0, **overrides: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A small random float32 model in Hugging Face layout: ``(config, {hf_name: array})``.

    Sizes are multiples of 256 where K-quants need it (hidden 256); ``overrides`` change the
    config (e.g. ``num_hidden_layers=80``, ``tie_word_embeddings=False``)."""
    cfg = {**TINY_CONFIGS[arch], **overrides}
    rng = np.random.default_rng(seed)
    h, ff, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    nh, nkv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]

    def w(*shape: int, scale: float = 0.05) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    def norm(n: int) -> np.ndarray:
        base = 0.0 if arch.startswith("gemma") else 1.0  # gemma stores norms as w, used as 1 + w
        return (base + rng.standard_normal(n) * 0.1).astype(np.float32)

    t: dict[str, np.ndarray] = {"model.embed_tokens.weight": w(v, h, scale=0.5), "model.norm.weight": norm(h)}
    if not cfg.get("tie_word_embeddings", False):
        t["lm_head.weight"] = w(v, h)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"] = norm(h)
        t[p + "post_attention_layernorm.weight"] = norm(h)
        t[p + "self_attn.q_proj.weight"] = w(nh * hd, h)
        t[p + "self_attn.k_proj.weight"] = w(nkv * hd, h)
        t[p + "self_attn.v_proj.weight"] = w(nkv * hd, h)
        t[p + "self_attn.o_proj.weight"] = w(h, nh * hd)
        t[p + "mlp.gate_proj.weight"] = w(ff, h)
        t[p + "mlp.up_proj.weight"] = w(ff, h)
        t[p + "mlp.down_proj.weight"] = w(h, ff)
        if arch == "qwen2" or cfg.get("attention_bias"):
            for proj, rows in (("q", nh * hd), ("k", nkv * hd), ("v", nkv * hd)):
                t[p + f"self_attn.{proj}_proj.bias"] = w(rows)
        if arch == "llama" and cfg.get("attention_bias"):  # Llama's o_proj shares the flag
            t[p + "self_attn.o_proj.bias"] = w(h)
        if arch in ("qwen3", "gemma3"):
            t[p + "self_attn.q_norm.weight"] = norm(hd)
            t[p + "self_attn.k_norm.weight"] = norm(hd)
        if arch.startswith("gemma"):
            t[p + "pre_feedforward_layernorm.weight"] = norm(h)
            t[p + "post_feedforward_layernorm.weight"] = norm(h)
    return cfg, t
