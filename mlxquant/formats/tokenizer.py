"""Hugging Face tokenizer files -> GGUF ``tokenizer.*`` metadata, as llama.cpp's converter does it.

Mirrors ``convert_hf_to_gguf.py`` (``_set_vocab_gpt2``, ``_set_vocab_sentencepiece``,
``_set_vocab_llama_hf``) and uses gguf-py's ``SpecialVocab`` for special token ids,
``add_*_token`` flags, merges and the chat template (copied as text, never executed):

- byte-level BPE ``tokenizer.json`` (GPT-2, Llama 3, SmolLM2, Qwen2) -> ``tokenizer.ggml.model``
  ``"gpt2"`` with tokens, token types, merges and the pre-tokenizer name ``tokenizer.ggml.pre``
  (llama.cpp's hash of a reference tokenization first, then the pre-tokenizer's structure);
- SentencePiece ``tokenizer.model`` (Llama 2, Mistral, Gemma) -> ``"llama"`` with scores;
- a Llama-style byte-fallback BPE ``tokenizer.json`` without ``tokenizer.model`` -> ``"llama"``.

The reverse (GGUF -> tokenizer files) is :mod:`mlxquant.formats.tokenizer_export`.
"""

from __future__ import annotations

import contextlib
import json
import logging
from hashlib import sha256
from pathlib import Path
from typing import Any, Iterator

from ..errors import FormatError, TokenizerError
from .json_file import MAX_TOKENIZER_JSON_BYTES, check_int, expect_dict, read_json

log = logging.getLogger(__name__)

# gguf TokenType / SentencePiece piece types
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# The text llama.cpp tokenizes to fingerprint a BPE pre-tokenizer (convert_hf_to_gguf.py).
CHECK_TEXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis "
    "concatenated) ✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 "
    "កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ ------======= нещо на Български "
    "''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? 'M not "
    "sure I'll make it, 'D you like some tea? We'Ve a'lL"
)

# sha256(str(ids)) of CHECK_TEXT -> llama.cpp pre-tokenizer, for the families mlxquant converts
# (from convert_hf_to_gguf.py's get_vocab_base_pre).
KNOWN_PRE_HASHES = {
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",  # Llama 3
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",
    "0fe1cf6eda062318a1af7270f3331a85c539a01778ff948e24388e949c5282f4": "gpt-2",
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",  # Qwen1.5/2/2.5
    "d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c": "qwen2",  # Qwen3
    "63b97e4253352e6f357cc59ea5b583e3a680eaeaf2632188c2b952de2588485e": "tekken",  # Mistral Nemo
    "9d032fcbd5501f4a38150912590928bfb36091efb5df11b8e2124b0390e3fb1e": "falcon3",
}

# The split regexes of HF tokenizer.json files, as llama-vocab.cpp quotes them.
LLAMA3_REGEX = (
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+"
    "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
)
QWEN2_REGEX = (
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+"
    "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
)


def library_error(e: BaseException) -> bool:
    """Whether ``e`` is a third-party library failing on a malformed file: ``tokenizers``,
    ``sentencepiece`` and gguf-py raise plain ``Exception``s, and a Rust panic inside
    ``tokenizers`` arrives as pyo3's ``PanicException``, a ``BaseException``. Interruptions,
    exits and ``MemoryError`` are not."""
    return not isinstance(e, (KeyboardInterrupt, SystemExit, GeneratorExit, MemoryError))


@contextlib.contextmanager
def library_errors(what: str, name_type: bool = False) -> Iterator[None]:
    """Re-raise a tokenizer library's failure (:func:`library_error`) as one-line
    :class:`TokenizerError` ``"{what}: {error}"`` (``name_type``: ``"{what}: {Type}: {error}"``)."""
    try:
        yield
    except BaseException as e:
        if not library_error(e):
            raise
        detail = f"{type(e).__name__}: {e}" if name_type else str(e)
        raise TokenizerError(f"{what}: {detail}") from None


# The most tokens a vocabulary may have (the same bound as mlxquant.models.hparams.MAX_VOCAB:
# padded token lists are built in Python, so this keeps them small whatever a file claims).
MAX_VOCAB = 1 << 21


# Bounds on a tokenizer.json's normalizer / pre-tokenizer / decoder / post-processor pipelines,
# checked before the tokenizers library runs them: steps can grow the text (ByteLevel maps each
# byte of its input to a 1-2 byte character, so 1,000 ByteLevel steps never return from Rust), and
# real files use at most ~5 steps, at most one ByteLevel step, and replacements of a few chars.
MAX_PIPELINE_STEPS = 16
MAX_GROWING_STEPS = 2
_GROWING = {"ByteLevel", "Precompiled", "NFKC", "NFKD"}


def check_pipeline(tj: dict, path: Path) -> None:
    """Refuse a tokenizer.json whose pipelines could grow a text without bound (see
    ``MAX_PIPELINE_STEPS``): more than 16 steps in one pipeline, or more than 2 steps that can
    lengthen the text (ByteLevel, Precompiled, NFKC/NFKD, a Replace with a longer content)."""
    for section in ("normalizer", "pre_tokenizer", "decoder", "post_processor"):
        steps = growing = 0
        stack = [tj.get(section)]
        while stack:
            v = stack.pop()
            if isinstance(v, list):
                stack.extend(v)
            elif isinstance(v, dict):
                kind = v.get("type")
                if isinstance(kind, str):
                    steps += 1
                    content, pattern = v.get("content"), v.get("pattern")
                    pat = next(iter(pattern.values()), "") if isinstance(pattern, dict) else pattern
                    longer = (kind == "Replace" and isinstance(content, str)
                              and len(content) > len(pat if isinstance(pat, str) else ""))
                    growing += kind in _GROWING or longer
                stack.extend(x for x in v.values() if isinstance(x, (dict, list)))
            if steps > MAX_PIPELINE_STEPS or growing > MAX_GROWING_STEPS:
                raise TokenizerError(
                    f"{path}: the {section} has more than {MAX_PIPELINE_STEPS} steps or more than "
                    f"{MAX_GROWING_STEPS} steps that lengthen the text (mlxquant's limit)")


def _byte_level(pt: Any, use_regex: bool) -> bool:
    return (isinstance(pt, dict) and pt.get("type") == "ByteLevel"
            and bool(pt.get("use_regex", True)) == use_regex)


def pre_from_structure(pre_tokenizer: dict | None) -> str | None:
    """llama.cpp's pre-tokenizer name for a tokenizer.json ``pre_tokenizer`` it is equivalent to,
    or None. A plain byte-level BPE needs "gpt-2" (with "default" llama.cpp splits differently)."""
    if _byte_level(pre_tokenizer, True):
        return "gpt-2"
    if not isinstance(pre_tokenizer, dict) or pre_tokenizer.get("type") != "Sequence":
        return None
    steps = pre_tokenizer.get("pretokenizers") or []
    if not isinstance(steps, list) or not all(isinstance(x, dict) for x in steps):
        return None
    if (len(steps) == 2 and steps[0].get("type") == "Digits"
            and steps[0].get("individual_digits") and _byte_level(steps[1], True)):
        return "smollm"
    if len(steps) == 2 and steps[0].get("type") == "Split" and _byte_level(steps[1], False):
        pattern = steps[0].get("pattern")
        regex = pattern.get("Regex") if isinstance(pattern, dict) else None
        return {LLAMA3_REGEX: "llama-bpe", QWEN2_REGEX: "qwen2"}.get(regex) if isinstance(regex, str) else None
    return None


def detect_bpe_pre(folder: Path, tokenizer_json: dict) -> str:
    """The ``tokenizer.ggml.pre`` value for a byte-level BPE tokenizer.json.

    Raises:
        TokenizerError: neither llama.cpp's fingerprint nor the structure is recognized.
    """
    from tokenizers import Tokenizer

    with library_errors(f"{folder / 'tokenizer.json'}: cannot load"):
        ids = Tokenizer.from_file(str(folder / "tokenizer.json")).encode(CHECK_TEXT).ids
    chkhsh = sha256(str(ids).encode()).hexdigest()
    pre = KNOWN_PRE_HASHES.get(chkhsh) or pre_from_structure(tokenizer_json.get("pre_tokenizer"))
    if pre is None:
        raise TokenizerError(
            f"{folder / 'tokenizer.json'}: BPE pre-tokenizer not recognized (hash {chkhsh[:16]}..., "
            f"pre_tokenizer {json.dumps(tokenizer_json.get('pre_tokenizer'))[:120]})"
        )
    log.info("tokenizer.ggml.pre = %s (hash %s)", pre, chkhsh[:16])
    return pre


def looks_special(token: str) -> bool:
    """convert_hf_to_gguf.py's ``does_token_look_special``."""
    return (
        token in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
        or (token.startswith("<|") and token.endswith("|>"))
        or (token.startswith("<｜") and token.endswith("｜>"))
        or (token.startswith("<unused") and token.endswith(">"))
    )


def _tok_int(v: Any, path: Path, what: str, hi: int | None = MAX_VOCAB - 1) -> int:
    """A token id from a tokenizer file: an int in [0, hi], else TokenizerError naming the file."""
    try:
        return check_int(v, path, what, 0, hi)
    except FormatError as e:
        raise TokenizerError(str(e)) from None


def _bpe_tables(path: Path, tj: dict) -> tuple[dict[str, int], dict[int, dict]]:
    """A BPE tokenizer.json's ``model.vocab`` (token -> id) and ``added_tokens`` (id -> entry),
    every id an int in [0, MAX_VOCAB) and every token a string."""
    vocab = tj["model"].get("vocab")
    vocab = {} if vocab is None else vocab
    if not isinstance(vocab, dict):
        raise TokenizerError(f"{path}: model.vocab must be a JSON object (token -> id)")
    for t, i in vocab.items():
        _tok_int(i, path, f"model.vocab entry {t[:40]!r}")
    entries = tj.get("added_tokens")
    entries = [] if entries is None else entries
    if not isinstance(entries, list):
        raise TokenizerError(f"{path}: added_tokens must be a JSON array")
    added: dict[int, dict] = {}
    for n, a in enumerate(entries):
        if not isinstance(a, dict) or not isinstance(a.get("content"), str):
            raise TokenizerError(f"{path}: added_tokens[{n}] must be an object with a string content")
        added[_tok_int(a.get("id"), path, f"added_tokens[{n}] id")] = a
    return vocab, added


def _bpe_vocab(folder: Path, tj: dict, vocab_size: int) -> tuple[list[str], list[int]]:
    """Tokens and types of a byte-level BPE tokenizer.json (``get_vocab_base``)."""
    from tokenizers import Tokenizer

    vocab, added = _bpe_tables(folder / "tokenizer.json", tj)
    vocab = dict(vocab)
    for a in added.values():
        vocab[a["content"]] = a["id"]
    if vocab and max(vocab.values()) >= vocab_size:
        raise TokenizerError(
            f"{folder}: token id {max(vocab.values())} is beyond vocab_size {vocab_size}"
        )
    reverse = {i: t for t, i in vocab.items()}
    tok = None
    tokens: list[str] = []
    types: list[int] = []
    for i in range(vocab_size):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
            continue
        token = reverse[i]
        if i in added:
            if not added[i].get("normalized", False):
                with library_errors(f"{folder / 'tokenizer.json'}: cannot load"):
                    if tok is None:
                        tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
                    token = tok.decode(tok.encode(token, add_special_tokens=False).ids,
                                       skip_special_tokens=False)
            if added[i].get("special") or looks_special(token):
                types.append(CONTROL)
            else:
                token = token.replace("\u2581", " ")
                types.append(USER_DEFINED)
        else:
            types.append(NORMAL)
        tokens.append(token)
    return tokens, types


def _spm_vocab(folder: Path, vocab_size: int | None) -> tuple[list[str], list[float], list[int]]:
    """Tokens, scores and types of a SentencePiece tokenizer.model (``_create_vocab_sentencepiece``)."""
    from sentencepiece import SentencePieceProcessor

    sp = SentencePieceProcessor()
    with library_errors(f"{folder / 'tokenizer.model'}: cannot load"):
        sp.LoadFromFile(str(folder / "tokenizer.model"))
    n = vocab_size or sp.vocab_size()
    if n > MAX_VOCAB:
        raise TokenizerError(f"{folder / 'tokenizer.model'}: {n} tokens (more than {MAX_VOCAB})")
    tokens = [f"[PAD{i}]" for i in range(n)]
    scores = [-10000.0] * n
    types = [UNUSED] * n
    for i in range(min(n, sp.vocab_size())):
        tokens[i], scores[i] = sp.IdToPiece(i), sp.GetScore(i)
        types[i] = (UNKNOWN if sp.IsUnknown(i) else CONTROL if sp.IsControl(i)
                    else UNUSED if sp.IsUnused(i) else BYTE if sp.IsByte(i) else NORMAL)
    added_file = folder / "added_tokens.json"
    if added_file.is_file():
        for text, i in _load_json(added_file).items():
            if _tok_int(i, added_file, f"entry {text[:40]!r}", None) < n:
                tokens[i], scores[i], types[i] = text, -1000.0, USER_DEFINED
    cfg_file = folder / "tokenizer_config.json"
    decoder = _load_json(cfg_file).get("added_tokens_decoder") if cfg_file.is_file() else None
    for key, data in _as_dict(decoder, cfg_file, "added_tokens_decoder").items():
        if not key.isdigit() or not isinstance(data, dict) or not isinstance(data.get("content"), str):
            raise TokenizerError(f"{cfg_file}: added_tokens_decoder entry {key[:40]!r} must map a "
                                 "token id to an object with a string content")
        i, text = int(key), data["content"]
        if i >= n:
            continue
        if data.get("special") or looks_special(text):
            types[i] = CONTROL
        else:
            text, types[i] = text.replace("\u2581", " "), USER_DEFINED
        tokens[i], scores[i] = text, -1000.0
    return tokens, scores, types


def _load_json(path: Path) -> dict:
    """A tokenizer file's JSON object (bounded size and depth: :mod:`.json_file`)."""
    try:
        return expect_dict(read_json(path, "JSON", MAX_TOKENIZER_JSON_BYTES), path, "the file")
    except FormatError as e:
        raise TokenizerError(str(e)) from None


def _as_dict(v: Any, path: Path, what: str) -> dict:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise TokenizerError(f"{path}: {what} must be a JSON object")
    return v


def _special(folder: Path, n_vocab: int, load_merges: bool, out: dict[str, Any]) -> None:
    """Special ids, add_*_token flags, merges and chat template, via gguf-py's SpecialVocab."""
    from gguf import SpecialVocab

    # gguf-py indexes the files' JSON without checking its shape
    with library_errors(f"{folder}: cannot read tokenizer files", name_type=True):
        sv = SpecialVocab(folder, load_merges=load_merges, n_vocab=n_vocab)
    if load_merges and not sv.merges:
        raise TokenizerError(f"{folder / 'tokenizer.json'}: a BPE tokenizer without merges")
    # let SpecialVocab write into a scratch GGUFWriter: the same keys llama.cpp's converter writes
    from gguf import GGUFWriter

    w = GGUFWriter(path=None, arch="scratch")
    # values of the wrong type for their GGUF keys
    with library_errors(f"{folder}: cannot convert special tokens", name_type=True):
        sv.add_to_gguf(w, quiet=True)
    for key, val in w.kv_data[0].items():
        if key != "general.architecture":
            out[key] = val.value


def tokenizer_to_gguf(folder: str | Path, config: dict, arch: str) -> dict[str, Any]:
    """GGUF ``tokenizer.*`` metadata for the tokenizer files in a Hugging Face model folder.

    Args:
        folder: the model folder (tokenizer.json and/or tokenizer.model, tokenizer_config.json).
        config: its config.json (``vocab_size`` pads the vocabulary as llama.cpp does).
        arch: the GGUF architecture (``"llama"``, ``"qwen2"``, ``"gemma2"``, ...): selects the
            small per-architecture rules of convert_hf_to_gguf.py.

    Returns:
        key -> plain value, in the order llama.cpp writes them.

    Raises:
        TokenizerError: no tokenizer files, or one that cannot be converted.
    """
    folder = Path(folder)
    tj_path, spm_path = folder / "tokenizer.json", folder / "tokenizer.model"
    cfg_path = folder / "tokenizer_config.json"
    tcfg = _load_json(cfg_path) if cfg_path.is_file() else {}
    text = config.get("text_config")
    vocab_size = config.get("vocab_size") or (text.get("vocab_size") if isinstance(text, dict) else None)
    if vocab_size is not None:
        try:
            vocab_size = check_int(vocab_size, "config.json", "key 'vocab_size'", 1, MAX_VOCAB)
        except FormatError as e:
            raise TokenizerError(f"{folder}: {e}") from None
    out: dict[str, Any] = {}
    if arch == "llama" and isinstance(tcfg.get("add_prefix_space"), bool):
        out["tokenizer.ggml.add_space_prefix"] = tcfg["add_prefix_space"]
    tj = _load_json(tj_path) if tj_path.is_file() else None
    if tj is not None:
        check_pipeline(tj, tj_path)
    model = tj.get("model") if tj is not None else None
    if tj is not None and not isinstance(model, dict):
        raise TokenizerError(f"{tj_path}: 'model' must be a JSON object")

    if spm_path.is_file():
        tokens, scores, types = _spm_vocab(folder, vocab_size)
        out.update({"tokenizer.ggml.model": "llama", "tokenizer.ggml.pre": "default"})
        out.update({"tokenizer.ggml.tokens": tokens, "tokenizer.ggml.scores": scores,
                    "tokenizer.ggml.token_type": types})
        _special(folder, len(tokens), False, out)
    elif tj is not None and model.get("type") == "BPE" and model.get("byte_fallback"):
        from gguf import LlamaHfVocab

        _bpe_tables(tj_path, tj)
        # gguf-py and tokenizers raise whatever the file provokes
        with library_errors(f"{tj_path}: unsupported byte-fallback BPE tokenizer", name_type=True):
            vocab = LlamaHfVocab(folder)
            toks = list(vocab.all_tokens())
        out.update({"tokenizer.ggml.model": "llama", "tokenizer.ggml.pre": "default",
                    "tokenizer.ggml.tokens": [t.decode("utf-8", "replace") for t, _, _ in toks],
                    "tokenizer.ggml.scores": [float(s) for _, s, _ in toks],
                    "tokenizer.ggml.token_type": [int(k) for _, _, k in toks]})
        _special(folder, len(toks), False, out)
    elif tj is not None and model.get("type") == "BPE":
        bpe_vocab, added = _bpe_tables(tj_path, tj)
        n = vocab_size or max(len(bpe_vocab), 1 + max(added, default=0))
        if n > MAX_VOCAB:
            raise TokenizerError(f"{tj_path}: {n} tokens (more than {MAX_VOCAB})")
        tokens, types = _bpe_vocab(folder, tj, int(n))
        out.update({"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": detect_bpe_pre(folder, tj),
                    "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.token_type": types})
        _special(folder, len(tokens), True, out)
    elif tj is not None:
        raise TokenizerError(
            f"{tj_path}: tokenizer model type {str(model.get('type'))[:40]!r} is not supported "
            "(BPE or a SentencePiece tokenizer.model)"
        )
    else:
        raise TokenizerError(f"{folder}: no tokenizer (tokenizer.json or tokenizer.model)")

    # per-architecture rules of convert_hf_to_gguf.py
    if arch == "llama" and vocab_size == 49152:  # SmolLM/Granite small models
        out["tokenizer.ggml.add_bos_token"] = False
    if arch in ("gemma2", "gemma3") or (arch in ("qwen2", "qwen3") and spm_path.is_file()):
        out["tokenizer.ggml.add_space_prefix"] = False
    return out
