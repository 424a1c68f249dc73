"""Tokenizers between Hugging Face files and GGUF metadata, judged by llama.cpp's tokenizer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mlxquant.convert import convert
from mlxquant.errors import TokenizerError
from mlxquant.formats.gguf_read import GGUFModel
from mlxquant.formats.gguf_write import Metadata, write_gguf
from mlxquant.formats.tokenizer import pre_from_structure, tokenizer_to_gguf
from mlxquant.formats.tokenizer_export import tokenizer_from_gguf
from mlxquant.testing.inputs import shakespeare_model_dir, smollm2_gguf_path
from conftest import need

# Public-domain text with digits, emoji, punctuation and whitespace runs.
TEXTS = [
    "When in the Course of human events, it becomes necessary for one people to dissolve the "
    "political bands which have connected them with another (July 4, 1776).",
    "We hold these truths to be self-evident, that all men are created equal, that they are "
    "endowed by their Creator with certain unalienable Rights; 13 colonies, 56 signers.",
    "Numbers 3 33 333 3333 3.14159 and 1,000,000 -- emoji 🚀🦙 ✅ café naïve 我想在apple工作",
    "  Two leading spaces,\ttabs\t\tand\n\nblank lines   then    runs of spaces.  ",
    "It's 'quoted', they'll say; I've been told he's there -- WE'VE a'lL gone!!!???",
]

# A few paragraphs of real text for the converted SmolLM2: prose, digits and numbers, emoji (also
# ZWJ sequences and skin tones), whitespace runs, tabs, blank lines and CRLF, punctuation,
# contractions, code, and non-ASCII scripts (Latin accents, Greek, Cyrillic, CJK, Arabic, Hindi).
PARAGRAPHS = [
    "When in the Course of human events, it becomes necessary for one people to dissolve the "
    "political bands which have connected them with another, and to assume among the powers of the "
    "earth, the separate and equal station to which the Laws of Nature and of Nature's God entitle "
    "them, a decent respect to the opinions of mankind requires that they should declare the causes "
    "which impel them to the separation.\n\nIn Congress, July 4, 1776.",
    "Invoice #2024-0042: 3 items @ $19.99 = $59.97 (+8.25% tax -> $64.92); ref 0x1F, 1e-5, 3.14159, "
    "1,000,000 and 10_000; call +1 (555) 010-9999 before 23:59:59 on 2024/12/31.",
    "Emoji: 🚀🦙 ✅ 👍🏽 👩‍👩‍👧‍👦 🇫🇷 ❤️ — done! 😂😂😂\nMixed: café, naïve, Straße, Ångström, "
    "Ελληνικά, Русский текст, 日本語のテキスト, 我想在apple工作, 한국어, العربية, हिन्दी.",
    "    Indented four spaces,\ttab,\t\ttwo tabs   three spaces\n\n\n\nfour newlines\r\nCRLF "
    "line;   trailing spaces   \n \n\t\n  end.  ",
    "It's 'quoted', they'll say; I've been told he's there -- WE'VE a'lL gone!!!??? "
    "(Parentheses) [brackets] {braces} <angles> \"double\" «guillemets» …ellipsis… "
    "def f(x):\n    return x**2 + 1  # comment\nprint(f(3))\n",
]

LLAMA_HPARAMS = {
    "llama.context_length": 256, "llama.embedding_length": 64, "llama.block_count": 1,
    "llama.feed_forward_length": 128, "llama.attention.head_count": 2,
    "llama.attention.head_count_kv": 2, "llama.attention.layer_norm_rms_epsilon": 1e-5,
}


def write_files(folder: Path, files: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        p = folder / name
        p.write_bytes(content) if isinstance(content, bytes) else p.write_text(
            json.dumps(content, ensure_ascii=False), encoding="utf-8")
    return folder


def vocab_gguf(path: Path, tok_meta: dict) -> Path:
    """A weightless llama GGUF that llama.cpp can load with vocab_only=True."""
    md = Metadata()
    md.set("general.architecture", "llama")
    for k, v in {**LLAMA_HPARAMS, **tok_meta}.items():
        md.set(k, v)
    return write_gguf(path, md, [], [])


def llama_tokenizer(path: Path):
    llama_cpp = pytest.importorskip("llama_cpp")
    return llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)


@pytest.fixture(scope="module")
def smollm2_meta():
    p = smollm2_gguf_path()
    need(p is not None, "SmolLM2 GGUF (bash scripts/test.sh fetches it)")
    return p, GGUFModel(p).metadata


def test_smollm2_round_trip_reproduces_the_gguf_tokenizer(tmp_path, smollm2_meta):
    _, meta = smollm2_meta
    folder = write_files(tmp_path / "tok", tokenizer_from_gguf(meta))
    (folder / "config.json").write_text(json.dumps({"vocab_size": 49152}))
    back = tokenizer_to_gguf(folder, {"vocab_size": 49152}, "llama")
    for key in ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens",
                "tokenizer.ggml.token_type", "tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id",
                "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id",
                "tokenizer.ggml.padding_token_id", "tokenizer.ggml.add_bos_token",
                "tokenizer.ggml.add_space_prefix", "tokenizer.chat_template"):
        assert back[key] == meta[key], key


def test_smollm2_hf_tokenizer_matches_llama_cpp(tmp_path, smollm2_meta):
    path, meta = smollm2_meta
    folder = write_files(tmp_path / "tok", tokenizer_from_gguf(meta))
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(folder))
    llm = llama_tokenizer(path)
    for text in TEXTS:
        ids = hf(text)["input_ids"]
        assert ids == llm.tokenize(text.encode(), add_bos=False, special=False), text
        assert hf.decode(ids) == text
    chat = hf.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False)
    assert chat.startswith("<|im_start|>system")


@pytest.fixture(scope="module")
def smollm2_converted(tmp_path_factory):
    """SmolLM2 GGUF -> HF folder -> GGUF, both steps by :func:`mlxquant.convert` (BF16: the
    tokenizer is what matters here, and BF16 keeps the files half the F32 size)."""
    src = smollm2_gguf_path()
    need(src is not None, "SmolLM2 GGUF (bash scripts/test.sh fetches it)")
    root = tmp_path_factory.mktemp("smollm2-tok")
    convert(src, root / "hf", to="hf", outtype="BF16")
    convert(root / "hf", root / "back.gguf", outtype="BF16")
    return src, root / "hf", root / "back.gguf"


def test_converted_smollm2_tokenizes_like_hf(smollm2_converted):
    """llama.cpp on the converted GGUF, the HF tokenizer of the HF folder, and llama.cpp on the
    original GGUF give the same ids for every paragraph; HF decodes them back to the text."""
    src, hf_dir, back = smollm2_converted
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(hf_dir))
    ours, orig = llama_tokenizer(back), llama_tokenizer(src)
    total = 0
    for text in PARAGRAPHS:
        ids = hf(text, add_special_tokens=False)["input_ids"]
        assert ours.tokenize(text.encode(), add_bos=False, special=False) == ids, text[:40]
        assert orig.tokenize(text.encode(), add_bos=False, special=False) == ids, text[:40]
        assert hf.decode(ids) == text
        total += len(ids)
    assert total > 300
    # the chat template came along: its special tokens are single ids on both sides
    chat = hf.apply_chat_template([{"role": "user", "content": "Hi 👋, what's 2+2?"}], tokenize=False,
                                  add_generation_prompt=True)
    ids = hf(chat, add_special_tokens=False)["input_ids"]
    assert ours.tokenize(chat.encode(), add_bos=False, special=True) == ids
    assert ids[0] == hf.convert_tokens_to_ids("<|im_start|>")
    with GGUFModel(src) as a, GGUFModel(back) as b:
        for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type",
                    "tokenizer.ggml.pre", "tokenizer.chat_template", "tokenizer.ggml.eos_token_id"):
            assert a.metadata[key] == b.metadata[key], key


def test_plain_byte_level_bpe_is_gpt2(tmp_path):
    d = shakespeare_model_dir()
    need(d is not None, "tiny-shakespeare-llama model")
    cfg = json.loads((d / "config.json").read_text())
    meta = tokenizer_to_gguf(d, cfg, "llama")
    assert meta["tokenizer.ggml.model"] == "gpt2" and meta["tokenizer.ggml.pre"] == "gpt-2"
    assert len(meta["tokenizer.ggml.tokens"]) == 4096 and meta["tokenizer.ggml.token_type"][0] == 3
    assert meta["tokenizer.ggml.bos_token_id"] == 0 and meta["tokenizer.ggml.eos_token_id"] == 0
    llm = llama_tokenizer(vocab_gguf(tmp_path / "v.gguf", meta))
    from tokenizers import Tokenizer

    hf = Tokenizer.from_file(str(d / "tokenizer.json"))
    for text in TEXTS:
        assert hf.encode(text).ids == llm.tokenize(text.encode(), add_bos=False, special=False)


def test_pre_tokenizer_structures():
    assert pre_from_structure({"type": "ByteLevel", "use_regex": True}) == "gpt-2"
    assert pre_from_structure({"type": "Whitespace"}) is None
    from mlxquant.formats.tokenizer_export import _PRE_TOKENIZERS

    for name in ("gpt-2", "smollm", "llama-bpe", "qwen2"):
        assert pre_from_structure(_PRE_TOKENIZERS[name][0]) == name


@pytest.fixture(scope="module")
def spm_folder(tmp_path_factory):
    """A real SentencePiece BPE model (byte fallback, split digits) trained here on public text."""
    import sentencepiece as spm

    root = tmp_path_factory.mktemp("spm")
    (root / "corpus.txt").write_text("\n".join(TEXTS[:2] + TEXTS[4:]) * 20, encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(root / "corpus.txt"), model_prefix=str(root / "sp"), vocab_size=400,
        model_type="bpe", byte_fallback=True, character_coverage=1.0, split_digits=True,
        bos_id=1, eos_id=2, unk_id=0, pad_id=-1, normalization_rule_name="identity",
        remove_extra_whitespaces=False, minloglevel=2)
    folder = root / "hf"
    folder.mkdir()
    shutil.copy(root / "sp.model", folder / "tokenizer.model")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<s>", "eos_token": "</s>", "add_bos_token": True,
        "tokenizer_class": "LlamaTokenizer", "chat_template": "{{ messages }}"}))
    return folder


def test_sentencepiece_to_gguf_tokenizes_like_sentencepiece(tmp_path, spm_folder):
    import sentencepiece as spm

    meta = tokenizer_to_gguf(spm_folder, {"vocab_size": 400, "bos_token_id": 1}, "llama")
    assert meta["tokenizer.ggml.model"] == "llama" and len(meta["tokenizer.ggml.scores"]) == 400
    assert meta["tokenizer.ggml.token_type"][3] == 6  # <0x00> byte token
    assert meta["tokenizer.chat_template"] == "{{ messages }}"
    llm = llama_tokenizer(vocab_gguf(tmp_path / "v.gguf", meta))
    sp = spm.SentencePieceProcessor(model_file=str(spm_folder / "tokenizer.model"))
    for text in TEXTS:
        text = text.strip()  # transformers and sentencepiece differ on leading spaces; not here
        assert llm.tokenize(text.encode(), add_bos=True) == [1] + sp.encode(text), text


def test_sentencepiece_gguf_back_to_tokenizer_model(tmp_path, spm_folder):
    import sentencepiece as spm

    meta = tokenizer_to_gguf(spm_folder, {"vocab_size": 400}, "llama")
    meta = {**meta, "general.architecture": "llama", "llama.context_length": 256}
    files = tokenizer_from_gguf(meta)
    out = write_files(tmp_path / "exp", files)
    sp0 = spm.SentencePieceProcessor(model_file=str(spm_folder / "tokenizer.model"))
    sp1 = spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model"))
    assert [sp1.IdToPiece(i) for i in range(400)] == [sp0.IdToPiece(i) for i in range(400)]
    assert [sp1.GetScore(i) for i in range(400)] == [sp0.GetScore(i) for i in range(400)]
    for text in TEXTS:
        assert sp1.encode(text) == sp0.encode(text)
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(out))
    assert hf(TEXTS[0].strip())["input_ids"] == [1] + sp0.encode(TEXTS[0].strip())


def test_missing_or_unsupported_tokenizers(tmp_path):
    with pytest.raises(TokenizerError, match="no tokenizer"):
        tokenizer_to_gguf(tmp_path, {}, "llama")
    (tmp_path / "tokenizer.json").write_text(json.dumps({"model": {"type": "Unigram"}}))
    with pytest.raises(TokenizerError, match="'Unigram' is not supported"):
        tokenizer_to_gguf(tmp_path, {}, "llama")
    (tmp_path / "tokenizer.json").write_text("{broken")
    with pytest.raises(TokenizerError, match="cannot read JSON"):
        tokenizer_to_gguf(tmp_path, {}, "llama")
    with pytest.raises(TokenizerError, match="no tokenizer"):
        tokenizer_from_gguf({"general.architecture": "llama"})
    with pytest.raises(TokenizerError, match="'rwkv' cannot be exported"):
        tokenizer_from_gguf({"tokenizer.ggml.model": "rwkv", "tokenizer.ggml.tokens": ["a"]})
