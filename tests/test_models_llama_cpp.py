"""The architecture maps end to end: a tiny random HF model of each architecture, written as a
float32 GGUF through our maps (names, Q/K permutation, gemma norms, rope_freqs, hyper-parameters),
runs in llama.cpp and gives the logits mlx-lm computes from the HF weights.

A wrong permutation, a missing ``+1`` or a wrong RoPE/SWA key changes the logits by O(1); the two
float32 engines agree to ~1e-6 (llama, qwen) and ~1e-4 (gemma, soft-capped) of the logit scale.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from mlxquant.models import get_architecture
from mlxquant.testing.f32_gguf import tiny_hf_model, write_f32_gguf

from conftest import need

LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 16}
VARIANTS = {
    "llama": ("llama", {}),
    "llama-bias-llama3-rope": ("llama", {"attention_bias": True, "rope_scaling": LLAMA3}),
    "llama-linear-rope-tied": ("llama", {"rope_scaling": {"rope_type": "linear", "factor": 4.0},
                                         "tie_word_embeddings": True}),
    "qwen2": ("qwen2", {}),
    "qwen3": ("qwen3", {}),
    "qwen3-untied": ("qwen3", {"tie_word_embeddings": False}),
    "gemma2": ("gemma2", {}),
    "gemma3-swa4": ("gemma3", {"sliding_window": 4}),
    "gemma3-swa4-linear-rope": ("gemma3", {"sliding_window": 4,
                                           "rope_scaling": {"rope_type": "linear", "factor": 8.0}}),
}


def _mlx_logits(cfg: dict, tensors: dict[str, np.ndarray], tokens: list[int]) -> np.ndarray:
    import mlx.core as mx

    mod = importlib.import_module(f"mlx_lm.models.{cfg['model_type']}")
    model = mod.Model(mod.ModelArgs.from_dict(cfg))
    weights = {k: mx.array(v) for k, v in tensors.items()}
    if hasattr(model, "sanitize"):
        weights = model.sanitize(weights)
    model.load_weights(list(weights.items()))
    return np.array(model(mx.array([tokens]))[0].astype(mx.float32))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_llama_cpp_runs_our_gguf_like_mlx_lm_runs_the_hf_weights(tmp_path, variant):
    try:
        import llama_cpp
    except ImportError:
        llama_cpp = None
    need(llama_cpp is not None, "llama-cpp-python (the llama.cpp oracle)")
    arch, overrides = VARIANTS[variant]
    cfg, tensors = tiny_hf_model(arch, seed=2, **overrides)
    a = get_architecture(cfg)
    # no tokenizer: llama.cpp's "none" vocabulary with {arch}.vocab_size dummy tokens
    extra = {"tokenizer.ggml.model": "none", f"{a.name}.vocab_size": cfg["vocab_size"]}
    path = write_f32_gguf(cfg, tensors, tmp_path / f"{variant}.gguf", extra)
    tokens = [int(t) for t in np.random.default_rng(0).integers(0, cfg["vocab_size"], 24)]

    llm = llama_cpp.Llama(model_path=str(path), logits_all=True, n_ctx=64, type_k=0, type_v=0,
                          n_threads=2, verbose=False)
    try:
        llm.eval(tokens)
        ref = np.array(llm.scores[: len(tokens)], dtype=np.float32)
    finally:
        llm.close()
    ours = _mlx_logits(cfg, tensors, tokens)
    scale = float(np.abs(ref).max())
    assert np.abs(ours - ref).max() <= 3e-4 * scale + 1e-5, (variant, np.abs(ours - ref).max(), scale)
    assert (ours.argmax(-1) == ref.argmax(-1)).all()
