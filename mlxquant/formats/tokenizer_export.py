"""GGUF ``tokenizer.*`` metadata -> Hugging Face tokenizer files that transformers and mlx-lm load.

- ``tokenizer.ggml.model = "gpt2"`` (byte-level BPE) -> ``tokenizer.json`` (BPE model, vocab,
  merges, added tokens for CONTROL/USER_DEFINED tokens, the pre-tokenizer that llama.cpp's
  ``tokenizer.ggml.pre`` stands for) + ``tokenizer_config.json``;
- ``"llama"`` (SentencePiece) -> ``tokenizer.model`` (a SentencePiece ModelProto rebuilt from tokens,
  scores and types) + ``tokenizer_config.json``.

The chat template is copied as text. The inverse of :mod:`mlxquant.formats.tokenizer`.
"""

from __future__ import annotations

import logging
from typing import Any

from ..errors import TokenizerError
from .gguf_check import metadata_source
from .tokenizer import (BYTE, CONTROL, LLAMA3_REGEX, MAX_VOCAB, NORMAL, QWEN2_REGEX, UNKNOWN,
                        USER_DEFINED)

log = logging.getLogger(__name__)

_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}


def _split(regex: str) -> dict:
    return {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False},
        {**_BYTE_LEVEL, "use_regex": False},
    ]}


# llama.cpp pre-tokenizer name -> (tokenizer.json pre_tokenizer, normalizer, clean_up_spaces)
_PRE_TOKENIZERS: dict[str, tuple[dict, dict | None, bool]] = {
    "gpt-2": (_BYTE_LEVEL, None, True),
    "smollm": ({"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True}, _BYTE_LEVEL]}, None, False),
    "llama-bpe": (_split(LLAMA3_REGEX), None, True),
    "llama3": (_split(LLAMA3_REGEX), None, True),
    "falcon3": (_split(LLAMA3_REGEX), None, True),
    "qwen2": (_split(QWEN2_REGEX), {"type": "NFC"}, False),
}
# pre-tokenizers whose llama.cpp tokenizer ignores merges when a whole word is a token
_IGNORE_MERGES = {"llama-bpe", "llama3", "falcon3", "tekken"}

_SPECIAL_KEYS = {"bos": "bos_token_id", "eos": "eos_token_id", "unk": "unknown_token_id",
                 "pad": "padding_token_id", "sep": "seperator_token_id", "mask": "mask_token_id"}


def _special_tokens(meta: dict[str, Any], tokens: list[str]) -> dict[str, str]:
    out = {}
    for name, key in _SPECIAL_KEYS.items():
        tid = meta.get(f"tokenizer.ggml.{key}")
        if isinstance(tid, int) and 0 <= tid < len(tokens):
            out[name] = tokens[tid]
    return out


def _template(meta: dict[str, Any], tokens: list[str]) -> dict | None:
    """A TemplateProcessing post-processor for add_bos/add_eos, or None when neither is set."""
    specials = _special_tokens(meta, tokens)
    bos = specials.get("bos") if meta.get("tokenizer.ggml.add_bos_token") else None
    eos = specials.get("eos") if meta.get("tokenizer.ggml.add_eos_token") else None
    if bos is None and eos is None:
        return None

    def seq(tid: int) -> list:
        s = [{"SpecialToken": {"id": bos, "type_id": tid}}] if bos else []
        s.append({"Sequence": {"id": "A" if tid == 0 else "B", "type_id": tid}})
        return s + ([{"SpecialToken": {"id": eos, "type_id": tid}}] if eos else [])

    ids = {t: tokens.index(t) for t in (bos, eos) if t}
    return {"type": "TemplateProcessing", "single": seq(0), "pair": seq(0) + seq(1),
            "special_tokens": {t: {"id": t, "ids": [i], "tokens": [t]} for t, i in ids.items()}}


def _tokenizer_config(meta: dict[str, Any], tokens: list[str], cls: str, clean: bool,
                      added: list[dict]) -> dict:
    cfg: dict[str, Any] = {
        "tokenizer_class": cls,
        "clean_up_tokenization_spaces": clean,
        "added_tokens_decoder": {
            str(a["id"]): {k: a[k] for k in ("content", "lstrip", "normalized", "rstrip",
                                              "single_word", "special")} for a in added},
    }
    for flag in ("bos", "eos"):
        if f"tokenizer.ggml.add_{flag}_token" in meta:
            cfg[f"add_{flag}_token"] = bool(meta[f"tokenizer.ggml.add_{flag}_token"])
    for name, text in _special_tokens(meta, tokens).items():
        cfg[f"{name}_token"] = text
    arch = meta.get("general.architecture")
    ctx = meta.get(f"{arch}.context_length")
    if isinstance(ctx, int):
        cfg["model_max_length"] = ctx
    template = meta.get("tokenizer.chat_template")
    if isinstance(template, str):
        cfg["chat_template"] = template
    return cfg


def _added_tokens(tokens: list[str], types: list[int]) -> list[dict]:
    return [
        {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": k == USER_DEFINED, "special": k == CONTROL}
        for i, (t, k) in enumerate(zip(tokens, types)) if k in (CONTROL, USER_DEFINED)
    ]


def _bpe_files(meta: dict[str, Any], tokens: list[str], types: list[int]) -> dict[str, Any]:
    pre = meta.get("tokenizer.ggml.pre") or "default"
    if pre not in _PRE_TOKENIZERS:
        log.warning("tokenizer.ggml.pre %r has no tokenizer.json equivalent here; using gpt-2's "
                    "byte-level split", pre)
    pre_tok, normalizer, clean = _PRE_TOKENIZERS.get(pre, _PRE_TOKENIZERS["gpt-2"])
    merges = meta.get("tokenizer.ggml.merges") or []
    pairs = []
    for m in merges:
        parts = m.split(" ")
        if len(parts) != 2:
            raise TokenizerError(f"{metadata_source(meta)}: tokenizer.ggml.merges: malformed merge {m[:60]!r}")
        pairs.append(parts)
    added = _added_tokens(tokens, types)
    post = _template(meta, tokens) or {"type": "ByteLevel", "add_prefix_space": True,
                                       "trim_offsets": False, "use_regex": True}
    tokenizer_json = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": pre_tok,
        "post_processor": post,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": pre in _IGNORE_MERGES,
                  "vocab": {t: i for i, t in enumerate(tokens)}, "merges": pairs},
    }
    cfg = _tokenizer_config(meta, tokens, "PreTrainedTokenizerFast", clean, added)
    cfg["add_prefix_space"] = False
    return {"tokenizer.json": tokenizer_json, "tokenizer_config.json": cfg}


def _spm_files(meta: dict[str, Any], tokens: list[str], types: list[int]) -> dict[str, Any]:
    from sentencepiece import sentencepiece_model_pb2 as pb

    scores = meta.get("tokenizer.ggml.scores") or [0.0] * len(tokens)
    m = pb.ModelProto()
    for t, s, k in zip(tokens, scores, types):
        p = m.pieces.add()
        p.piece, p.score, p.type = t, float(s), int(k) if 1 <= int(k) <= 6 else NORMAL
    ts = m.trainer_spec
    ts.model_type = pb.TrainerSpec.BPE
    ts.vocab_size = len(tokens)
    ts.byte_fallback = BYTE in types
    specials = {name: meta.get(f"tokenizer.ggml.{key}") for name, key in _SPECIAL_KEYS.items()}
    ts.unk_id = types.index(UNKNOWN) if UNKNOWN in types else -1
    def sid(v: Any) -> int:  # an id outside the vocabulary (or not an int) means "none"
        return v if type(v) is int and 0 <= v < len(tokens) else -1

    ts.bos_id, ts.eos_id, ts.pad_id = sid(specials["bos"]), sid(specials["eos"]), sid(specials["pad"])
    ns = m.normalizer_spec
    ns.name = "identity"
    ns.add_dummy_prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", True))
    ns.remove_extra_whitespaces = bool(meta.get("tokenizer.ggml.remove_extra_whitespaces", False))
    ns.escape_whitespaces = True
    arch = meta.get("general.architecture", "")
    cls = "GemmaTokenizer" if str(arch).startswith("gemma") else "LlamaTokenizer"
    added = [a for a in _added_tokens(tokens, types) if a["special"] or types[a["id"]] == USER_DEFINED]
    cfg = _tokenizer_config(meta, tokens, cls, False, added)
    cfg["legacy"] = False
    cfg["add_prefix_space"] = ns.add_dummy_prefix
    return {"tokenizer.model": m.SerializeToString(), "tokenizer_config.json": cfg}


def _check_types(meta: dict[str, Any], where: str) -> tuple[str, list[str], list[int]]:
    """The model name, tokens (text) and token types of GGUF tokenizer metadata, after checking
    the type of every ``tokenizer.*`` key this module reads (gguf-py writes whatever it is given,
    so a file can hold e.g. an array where a string belongs)."""
    model = meta.get("tokenizer.ggml.model")
    tokens = meta.get("tokenizer.ggml.tokens")
    if not model or not tokens:
        raise TokenizerError(f"{where}: the GGUF file has no tokenizer (tokenizer.ggml.model / .tokens)")

    def bad(key: str, want: str) -> TokenizerError:
        return TokenizerError(f"{where}: key {key!r} must be {want}")

    if not isinstance(model, str):
        raise bad("tokenizer.ggml.model", "a string")
    if not isinstance(tokens, list) or len(tokens) > MAX_VOCAB or not all(
            isinstance(t, (str, bytes)) for t in tokens):
        raise bad("tokenizer.ggml.tokens", f"an array of at most {MAX_VOCAB} strings")
    tokens = [t if isinstance(t, str) else t.decode("utf-8", "replace") for t in tokens]
    types = meta.get("tokenizer.ggml.token_type")
    if types is None:
        types = [NORMAL] * len(tokens)
    if not isinstance(types, list) or not all(type(k) is int for k in types):
        raise bad("tokenizer.ggml.token_type", "an array of integers")
    if len(types) != len(tokens):
        raise TokenizerError(
            f"{where}: tokenizer.ggml.token_type has {len(types)} entries for {len(tokens)} tokens")
    scores = meta.get("tokenizer.ggml.scores")
    if scores is not None and (not isinstance(scores, list) or len(scores) != len(tokens) or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in scores)):
        raise bad("tokenizer.ggml.scores", "an array of numbers, one per token")
    merges = meta.get("tokenizer.ggml.merges")
    if merges is not None and (not isinstance(merges, list) or not all(isinstance(m, str) for m in merges)):
        raise bad("tokenizer.ggml.merges", "an array of strings")
    for key in ("tokenizer.ggml.pre", "tokenizer.chat_template"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            raise bad(key, "a string")
    return model, tokens, types


def tokenizer_from_gguf(meta: dict[str, Any]) -> dict[str, Any]:
    """Hugging Face tokenizer files for a GGUF file's metadata.

    Returns:
        file name -> content: a dict (written as JSON) or bytes (``tokenizer.model``).

    Raises:
        TokenizerError: no ``tokenizer.ggml.tokens``, a ``tokenizer.*`` value of the wrong type
            (naming the file when ``meta`` is a :class:`~.gguf_check.GGUFMetadata`), or a
            tokenizer model other than ``"gpt2"`` (byte-level BPE) and ``"llama"`` (SentencePiece).
    """
    where = metadata_source(meta)
    model, tokens, types = _check_types(meta, where)
    if model == "gpt2":
        files = _bpe_files(meta, tokens, types)
    elif model == "llama":
        files = _spm_files(meta, tokens, types)
    else:
        raise TokenizerError(
            f"{where}: tokenizer.ggml.model {model[:40]!r} cannot be exported (supported: gpt2, llama)"
        )
    return files
