"""End to end, judged by two engines: SmolLM2 GGUF -> HF folder -> F32 GGUF.

mlx-lm runs the HF folder, llama.cpp (through llama-cpp-python, f32 KV cache) runs the F32 GGUF;
over 128 tokens of real text their next-token distributions must agree (mean KL divergence
< 1e-4, same argmax everywhere) and greedy generation of 20 tokens must be the same and read as
words. A wrong Q/K permutation still produces plausible words, so the numbers are what count.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlxquant.convert import convert
from mlxquant.formats.gguf_read import GGUFModel
from mlxquant.testing.inputs import smollm2_gguf_path
from conftest import need

# Public domain: the US Declaration of Independence (1776).
TEXT = (
    "When in the Course of human events, it becomes necessary for one people to dissolve the "
    "political bands which have connected them with another, and to assume among the powers of "
    "the earth, the separate and equal station to which the Laws of Nature and of Nature's God "
    "entitle them, a decent respect to the opinions of mankind requires that they should declare "
    "the causes which impel them to the separation. We hold these truths to be self-evident, that "
    "all men are created equal, that they are endowed by their Creator with certain unalienable "
    "Rights, that among these are Life, Liberty and the pursuit of Happiness. That to secure "
    "these rights, Governments are instituted among Men, deriving their just powers from the "
    "consent of the governed."
)
N_TOKENS = 128
N_GENERATE = 20


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    src = smollm2_gguf_path()
    need(src is not None, "SmolLM2 GGUF (bash scripts/test.sh fetches it)")
    root = tmp_path_factory.mktemp("e2e")
    r1 = convert(src, root / "hf", to="hf", outtype="F32")
    r2 = convert(root / "hf", root / "f32.gguf", to="gguf", outtype="F32")
    return src, root / "hf", root / "f32.gguf", r1, r2


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_files_and_reports(converted):
    src, hf, gguf_path, r1, r2 = converted
    cfg = json.loads((hf / "config.json").read_text())
    assert cfg["model_type"] == "llama" and cfg["num_hidden_layers"] == 30
    assert cfg["tie_word_embeddings"] is True and cfg["torch_dtype"] == "float32"
    assert {"tokenizer.json", "tokenizer_config.json", "generation_config.json"} <= {p.name for p in hf.iterdir()}
    assert r1.tensors == 272 and r1.parameters == 134_515_008 and r1.types == {"F32": 272}
    assert r2.tensors == 272 and r2.bits_per_weight == 32.0
    with GGUFModel(src) as a, GGUFModel(gguf_path) as b:
        assert sorted(t.name for t in a.tensors) == sorted(t.name for t in b.tensors)
        assert {t.type for t in b.tensors} == {"F32"}
        for key in ("llama.block_count", "llama.embedding_length", "llama.attention.head_count_kv",
                    "llama.rope.freq_base", "tokenizer.ggml.pre", "tokenizer.ggml.merges",
                    "tokenizer.chat_template", "tokenizer.ggml.bos_token_id"):
            assert a.metadata[key] == b.metadata[key], key
        assert b.metadata["general.file_type"] == 0 and b.metadata["general.quantization_version"] == 2
        # the Q4_1 weights come back exactly: dequantized values are representable in f32
        for name in ("blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.7.ffn_down.weight"):
            np.testing.assert_array_equal(a.tensor(name), b.tensor(name))


def test_llama_cpp_and_mlx_lm_agree(converted):
    llama_cpp = pytest.importorskip("llama_cpp")
    mx = pytest.importorskip("mlx.core")
    from mlx_lm import load

    _, hf, gguf_path, _, _ = converted
    llm = llama_cpp.Llama(model_path=str(gguf_path), logits_all=True, n_ctx=256, type_k=0,
                          type_v=0, verbose=False)
    tokens = llm.tokenize(TEXT.encode(), add_bos=False)[:N_TOKENS]
    assert len(tokens) == N_TOKENS
    model, tok = load(str(hf))
    assert tok.encode(TEXT)[:N_TOKENS] == tokens  # the rebuilt HF tokenizer agrees with llama.cpp

    llm.eval(tokens)
    ref = np.array(llm.scores[:N_TOKENS], dtype=np.float64)
    got = np.array(model(mx.array(tokens)[None])[0].astype(mx.float32), dtype=np.float64)
    p, q = log_softmax(got), log_softmax(ref)
    kld = (np.exp(p) * (p - q)).sum(-1)
    assert kld.mean() < 1e-4, f"mean KLD {kld.mean():.3g}"
    assert (got.argmax(-1) == ref.argmax(-1)).all()

    # greedy: llama.cpp generates; mlx-lm, fed the same prefix, must pick the same token at every
    # step (teacher forcing: equivalent to generating with mlx-lm, at the cost of one pass)
    prompt = tokens[:16]
    llm.reset()
    llm.eval(prompt)
    generated = []
    for _ in range(N_GENERATE):
        nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        generated.append(nxt)
        llm.eval([nxt])
    seq = prompt + generated
    logits = model(mx.array(seq)[None])[0].astype(mx.float32)
    mlx_next = np.array(mx.argmax(logits, axis=-1)).tolist()[len(prompt) - 1 : len(seq) - 1]
    assert mlx_next == generated
    words = tok.decode(generated).split()
    assert len(words) >= 8 and sum(w.strip(".,;:'\"").isalpha() for w in words) >= 0.7 * len(words), words
