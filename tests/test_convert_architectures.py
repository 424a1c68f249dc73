"""Every supported architecture through the pipeline: a small random HF model (hidden 256) ->
F32 GGUF that llama.cpp runs like mlx-lm runs the HF folder -> back to an HF folder with the
same tensors; and HF folder -> presets byte-identical to ``llama_model_quantize`` applied to the
F32 GGUF."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlxquant.convert import convert
from mlxquant.formats.hf import HFModel, HFTensorSpec, write_hf_folder
from mlxquant.formats.tokenizer import QWEN2_REGEX
from mlxquant.testing.f32_gguf import TINY_CONFIGS, tiny_hf_model
from test_convert_presets import assert_same_gguf, llama_quantize

# Public domain: the US Declaration of Independence (1776), as tokenizer training text.
CORPUS = (
    "When in the Course of human events, it becomes necessary for one people to dissolve the "
    "political bands which have connected them with another, and to assume among the powers of "
    "the earth, the separate and equal station to which the Laws of Nature and of Nature's God "
    "entitle them, a decent respect to the opinions of mankind requires that they should declare "
    "the causes which impel them to the separation. 1776, 13 states, 56 signatures."
)
TEXT = "We hold these truths to be self-evident, that all men are created equal: 1776 & 2024!"
# Two presets with different mixtures (Q4_K_M: Q6_K for the tied embedding / output and more-bits
# attn_v, ffn_down; Q5_K_S: Q5_K everywhere but the output rule).
PRESETS = ("Q4_K_M", "Q5_K_S")


@pytest.fixture(scope="module")
def tokenizers_json(tmp_path_factory) -> dict[str, str]:
    """Two byte-level BPE tokenizers of 512 tokens trained here: GPT-2 style (llama, gemma)
    and Qwen2 style (qwen2/qwen3, whose transformers tokenizer class imposes that split)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([CORPUS] * 3, trainers.BpeTrainer(
        vocab_size=512, special_tokens=["<|endoftext|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    gpt2 = tok.to_str()
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    return {"gpt2": gpt2, "qwen": tok.to_str()}


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


@pytest.mark.parametrize("arch", list(TINY_CONFIGS))
def test_architecture_round_trip(arch, tmp_path, tokenizers_json):
    llama_cpp = pytest.importorskip("llama_cpp")
    mx = pytest.importorskip("mlx.core")
    from mlx_lm import load

    cfg, tensors = tiny_hf_model(arch)
    cfg = {**cfg, "bos_token_id": 0, "eos_token_id": 0}
    files = {"tokenizer.json": tokenizers_json["qwen" if arch.startswith("qwen") else "gpt2"],
             "tokenizer_config.json": {"tokenizer_class": "PreTrainedTokenizerFast",
                                       "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}}
    hf = write_hf_folder(tmp_path / "hf", cfg, [HFTensorSpec(n, a.shape) for n, a in tensors.items()],
                         lambda s: tensors[s.name], files=files)
    report = convert(hf, tmp_path / "f32.gguf", outtype="F32")
    assert report.architecture == arch and report.types == {"F32": report.tensors}

    llm = llama_cpp.Llama(model_path=str(tmp_path / "f32.gguf"), logits_all=True, n_ctx=128,
                          type_k=0, type_v=0, verbose=False)
    tokens = llm.tokenize(TEXT.encode(), add_bos=False)
    model, tok = load(str(hf))
    assert tok.encode(TEXT) == tokens
    llm.eval(tokens)
    ref = np.array(llm.scores[: len(tokens)], dtype=np.float64)
    got = np.array(model(mx.array(tokens)[None])[0].astype(mx.float32), dtype=np.float64)
    assert ref.std() > 0.3 and len(set(ref.argmax(-1).tolist())) > 3  # not a degenerate output
    p, q = log_softmax(got), log_softmax(ref)
    assert (np.exp(p) * (p - q)).sum(-1).mean() < 1e-4
    assert (got.argmax(-1) == ref.argmax(-1)).all()

    convert(tmp_path / "f32.gguf", tmp_path / "back", to="hf", outtype="F32")
    back_cfg = json.loads((tmp_path / "back" / "config.json").read_text())
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                "vocab_size", "tie_word_embeddings"):
        assert back_cfg[key] == cfg[key], key
    with HFModel(tmp_path / "back") as back:
        assert sorted(back.tensor_names) == sorted(tensors)
        for name, a in tensors.items():
            if arch.startswith("gemma") and name.endswith("norm.weight"):
                # llama.cpp stores gemma norms as 1 + w in float32: w comes back within rounding
                np.testing.assert_allclose(back.tensor(name), a, rtol=0, atol=2e-7)
            else:
                np.testing.assert_array_equal(back.tensor(name), a, err_msg=name)

    for preset in PRESETS:
        ref, ours = tmp_path / f"ref-{preset}.gguf", tmp_path / f"ours-{preset}.gguf"
        llama_quantize(tmp_path / "f32.gguf", ref, preset)
        report = convert(hf, ours, outtype=preset)
        counts = assert_same_gguf(ref, ours)
        assert report.types == counts and {"Q5_K", "Q6_K"} & set(counts), counts
