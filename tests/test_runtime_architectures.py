"""The NumPy runtime on a small random model of every architecture, against mlx-lm running the same
HF folder (and the same weights read back from an F32 GGUF): next-token distributions, argmax,
greedy continuation through the KV cache, and the per-layer (memory-budget) path."""

from __future__ import annotations

import numpy as np
import pytest

from mlxquant.formats.hf import HFTensorSpec, write_hf_folder
from mlxquant.runtime import generate_tokens, load_model
from mlxquant.testing.f32_gguf import TINY_CONFIGS, tiny_hf_model, write_f32_gguf

SEQ = 96  # within gemma2's window of 128, which mlx-lm's gemma2 does not implement
LONG = 200  # past the window of 128: exercises gemma3's sliding-window layers


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def mean_kld(ref: np.ndarray, other: np.ndarray) -> float:
    a, b = log_softmax(ref), log_softmax(other)
    return float((np.exp(a) * (a - b)).sum(-1).mean())


def write_tiny(arch: str, out, **overrides):
    """A tiny random model whose final norm is rescaled until its next-token distributions have
    an entropy of 2-4.5 nats: random weights otherwise give near one-hot distributions, on which a
    KLD says little."""
    cfg, tensors = tiny_hf_model(arch, seed=3, **overrides)
    offset = 1.0 if arch.startswith("gemma") else 0.0  # gemma's norm multiplies by (1 + w)
    w0 = tensors["model.norm.weight"] + offset
    tokens = np.random.default_rng(0).integers(0, cfg["vocab_size"], 32)
    scale = 1.0
    for _ in range(30):
        tensors["model.norm.weight"] = (w0 * scale - offset).astype(np.float32)
        _write(out, cfg, tensors, force=True)
        lp = log_softmax(load_model(out, backend="numpy", tokenizer=False).forward(tokens))
        entropy = float(-(np.exp(lp) * lp).sum(-1).mean())
        if 2.0 <= entropy <= 4.5:
            break
        scale *= 0.6 if entropy < 2.0 else 1.4
    return cfg, tensors


def _write(out, cfg, tensors, force: bool = False) -> None:
    specs = [HFTensorSpec(n, a.shape, "F32") for n, a in tensors.items()]
    write_hf_folder(out, cfg, specs, lambda s: tensors[s.name], force=force)


def mlx_logits(folder, tokens: np.ndarray) -> np.ndarray:
    import mlx.core as mx
    from mlx_lm.utils import load_model as mlx_load

    model, _ = mlx_load(folder)
    out = model(mx.array(tokens[None].astype(np.int32)))[0].astype(mx.float32)
    return np.array(out)


@pytest.mark.parametrize("arch", list(TINY_CONFIGS))
def test_tiny_model_matches_mlx_lm(arch, tmp_path):
    pytest.importorskip("mlx_lm")
    folder = tmp_path / arch
    cfg, tensors = write_tiny(arch, folder)
    n = LONG if arch == "gemma3" else SEQ
    tokens = np.random.default_rng(7).integers(0, cfg["vocab_size"], n)
    ref = mlx_logits(folder, tokens)
    model = load_model(folder, backend="numpy", tokenizer=False)
    ours = model.forward(tokens)
    assert ours.shape == ref.shape
    entropy = float(-(np.exp(log_softmax(ref)) * log_softmax(ref)).sum(-1).mean())
    assert entropy > 0.5, f"{arch}: degenerate test model (entropy {entropy:.3f} nats)"
    kld = mean_kld(ref, ours)
    assert kld < 1e-6, f"{arch}: mean KLD {kld:.2e} vs mlx-lm"
    assert np.abs(ours - ref).max() < 1e-3 * (1 + np.abs(ref).max())
    assert np.array_equal(ours.argmax(-1), ref.argmax(-1))

    # the same weights through a GGUF file (names, Q/K permutation, gemma norms undone)
    gguf = write_f32_gguf(cfg, tensors, tmp_path / f"{arch}.gguf")
    from_gguf = load_model(gguf, backend="numpy", tokenizer=False).forward(tokens)
    assert mean_kld(ours, from_gguf) < 1e-8
    assert np.array_equal(from_gguf.argmax(-1), ours.argmax(-1))


def test_kv_cache_and_memory_budget_give_the_same_logits(tmp_path):
    """Prefill + one token at a time through the cache == one forward pass; a budget too small to
    keep any tensor (decode per layer on each use) changes nothing but speed."""
    folder = tmp_path / "qwen3"
    cfg, _ = write_tiny("qwen3", folder)
    tokens = np.random.default_rng(1).integers(0, cfg["vocab_size"], 40)
    model = load_model(folder, backend="numpy", tokenizer=False)
    full = model.forward(tokens)
    cache = model.new_cache(4)  # grows while decoding
    steps = [model.forward(tokens[:30], cache)]
    steps += [model.forward(tokens[i:i + 1], cache) for i in range(30, 40)]
    np.testing.assert_allclose(np.concatenate(steps), full, atol=2e-4, rtol=0)

    lean = load_model(folder, backend="numpy", tokenizer=False, budget=0, batch=16)
    np.testing.assert_allclose(lean.forward(tokens), full, atol=2e-4, rtol=0)
    assert lean.weights.float_bytes > lean.weights.budget

    gen = generate_tokens(model, list(tokens[:8]), max_tokens=12, stop_at_eos=False)
    ref, ctx = [], list(tokens[:8])
    for _ in range(12):  # greedy without a cache, one full pass per token
        ref.append(int(model.forward(ctx)[-1].argmax()))
        ctx.append(ref[-1])
    assert gen.tokens == ref
