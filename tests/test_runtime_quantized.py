"""Whole models on the runtime's quantized path (GGUF linears kept in their blocks, fused kernels)
against the same files widened to float32 (``open_weights(..., fused=False)``, the old path):
logits within 1e-4 of the largest logit, the same greedy tokens, what-if swaps, and the blocks
served from the memory-mapped file. Models: SmolLM2 Q4_K_M and Q8_0 (converted by mlxquant from
the fetched GGUF) and the float tiny-shakespeare model converted to several types (its rows are
multiples of 256, so the K and i-quant kernels carry it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import need
from mlxquant.runtime import generate_tokens
from mlxquant.runtime.kernels import QuantMatrix
from mlxquant.runtime.numpy_model import NumpyModel
from mlxquant.runtime.spec import model_spec
from mlxquant.runtime.weights import open_weights

REL = 1e-4
SHAKESPEARE_TYPES = ("Q4_K_M", "Q2_K", "IQ4_XS", "IQ3_S", "TQ2_0", "BF16")


def _model(path: Path, fused: bool) -> NumpyModel:
    w = open_weights(path, fused=fused)
    return NumpyModel(w, model_spec(w.arch.name, w.config, "lm_head.weight" not in w))


def _file_backed(a: np.ndarray) -> bool:
    while a is not None:
        if isinstance(a, np.memmap):
            return True
        a = a.base
    return False


@pytest.fixture(scope="module")
def models(tmp_path_factory, shakespeare):
    from mlxquant.convert import convert
    from mlxquant.testing.inputs import smollm2_gguf_path

    src = smollm2_gguf_path()
    need(src is not None, "SmolLM2 GGUF (bash scripts/test.sh fetches it)")
    d = tmp_path_factory.mktemp("quantized")
    out = {}
    for t in ("Q4_K_M", "Q8_0"):
        out[f"smollm2-{t}"] = d / f"smollm2-{t}.gguf"
        convert(src, out[f"smollm2-{t}"], outtype=t, force=True)
    for t in SHAKESPEARE_TYPES:
        out[f"shakespeare-{t}"] = d / f"shakespeare-{t}.gguf"
        convert(shakespeare, out[f"shakespeare-{t}"], outtype=t, force=True)
    return out


@pytest.mark.parametrize("name", ["smollm2-Q4_K_M", "smollm2-Q8_0"] + [f"shakespeare-{t}" for t in SHAKESPEARE_TYPES])
def test_logits_and_tokens_match_widened(models, name):
    fused, wide = _model(models[name], True), _model(models[name], False)
    qm = [fused.weights.linear(n) for n in fused.weights.quantized]
    assert qm and all(isinstance(m, QuantMatrix) and _file_backed(m.raw) for m in qm)
    assert not wide.weights.quantized
    assert fused.weights.resident_bytes < 0.6 * fused.weights.float_bytes  # BF16: about half
    assert len(fused.weights.quantized) >= 7 * fused.spec.n_layers  # every projection
    vocab = fused.weights.shape("model.embed_tokens.weight")[0]
    ids = np.random.default_rng(0).integers(0, vocab, 40)
    a, b = fused.forward(ids), wide.forward(ids)  # a prompt: decoded tiles + sgemm
    assert np.abs(a - b).max() <= REL * np.abs(b).max()
    ca, cb = fused.new_cache(48), wide.new_cache(48)
    fused.forward(ids[:30], ca)
    wide.forward(ids[:30], cb)
    for t in ids[30:34]:  # decoding: the fused kernels
        a, b = fused.forward([int(t)], ca), wide.forward([int(t)], cb)
        assert np.abs(a - b).max() <= REL * np.abs(b).max()
    ga = generate_tokens(fused, list(ids[:12]), max_tokens=8, stop_at_eos=False)
    gb = generate_tokens(wide, list(ids[:12]), max_tokens=8, stop_at_eos=False)
    assert ga.tokens == gb.tokens


def test_swapped_and_get_keep_their_contract(models):
    m = _model(models["shakespeare-Q4_K_M"], True)
    w = m.weights
    assert w.preload()
    name = "model.layers.0.self_attn.q_proj.weight"
    assert name in w.quantized
    dense = w.get(name)  # float32, HF layout (Q rows un-permuted)
    wide = _model(models["shakespeare-Q4_K_M"], False)
    assert np.array_equal(dense, wide.weights.get(name))
    ids = np.arange(1, 17)
    base = m.forward(ids)
    with w.swapped(name, dense):  # the same values as a plain float32 matrix
        assert isinstance(w.linear(name), np.ndarray)
        assert np.abs(m.forward(ids) - base).max() <= REL * np.abs(base).max()
    with w.swapped(name, np.zeros_like(dense)):
        assert np.abs(m.forward(ids) - base).max() > 1e-3
    assert np.array_equal(m.forward(ids), base)
    with pytest.raises(ValueError):
        with w.swapped(name, dense[:-1]):
            pass


def test_threads_share_a_model(models):
    """Forward passes on several threads at once (the imatrix does) give each its own answer."""
    from concurrent.futures import ThreadPoolExecutor

    m = _model(models["smollm2-Q4_K_M"], True)
    seqs = [np.arange(s, s + 3) for s in (5, 500, 5000, 7)]
    want = [m.forward(s) for s in seqs]
    with ThreadPoolExecutor(4) as ex:
        got = list(ex.map(m.forward, seqs * 2))
    for g, w in zip(got, want * 2):
        assert np.array_equal(g, w)
