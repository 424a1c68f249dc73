"""Tokenizers for the runtime: the HF ``tokenizers`` library on a tokenizer.json.

The tokenizer.json comes from the model folder, or is rebuilt from a GGUF file's metadata by
:func:`mlxquant.formats.tokenizer_export.tokenizer_from_gguf`. SentencePiece models (a folder's
``tokenizer.model`` or a GGUF with ``tokenizer.ggml.model = "llama"``) go through the
``sentencepiece`` package when it is installed. Nothing here executes code from the model files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

from ..errors import FormatError, TokenizerError
from ..formats.json_file import MAX_TOKENIZER_JSON_BYTES, loads, read_json
from ..formats.tokenizer import check_pipeline, library_errors


class Tokenizer(Protocol):
    """What the runtime needs from a tokenizer."""

    vocab_size: int
    bos_token_id: int | None
    eos_token_ids: list[int]

    def encode(self, text: str, add_special: bool = True) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def vocabulary(self) -> list[str]: ...


class HFTokenizer:
    """A ``tokenizers.Tokenizer`` from tokenizer.json text."""

    def __init__(self, tokenizer_json: str, bos: int | None, eos: list[int], add_bos: bool | None,
                 where: str = "tokenizer.json"):
        from tokenizers import Tokenizer as _T

        self.where = where
        with library_errors(f"{where}: tokenizer.json cannot be loaded"):
            self._t = _T.from_str(tokenizer_json)
        self.vocab_size = self._t.get_vocab_size(with_added_tokens=True)
        self.bos_token_id, self.eos_token_ids = bos, eos
        self._add_bos = add_bos

    def encode(self, text: str, add_special: bool = True) -> list[int]:
        with library_errors(f"{self.where}: cannot tokenize"):
            ids = list(self._t.encode(text, add_special_tokens=add_special).ids)
        if (add_special and self._add_bos and self.bos_token_id is not None
                and (not ids or ids[0] != self.bos_token_id)):
            ids.insert(0, self.bos_token_id)  # tokenizer_config add_bos_token without a post-processor
        return ids

    def decode(self, ids: list[int]) -> str:
        with library_errors(f"{self.where}: cannot decode token ids"):
            return self._t.decode(list(ids), skip_special_tokens=False)

    def vocabulary(self) -> list[str]:
        v = self._t.get_vocab(with_added_tokens=True)
        out = [""] * (max(v.values()) + 1 if v else 0)
        for t, i in v.items():
            out[i] = t
        return out


class SPTokenizer:
    """A SentencePiece model (serialized ModelProto bytes)."""

    def __init__(self, proto: bytes, bos: int | None, eos: list[int], add_bos: bool):
        try:
            import sentencepiece as spm
        except ImportError:
            raise TokenizerError("SentencePiece tokenizers need the sentencepiece package") from None
        self._sp = spm.SentencePieceProcessor()
        with library_errors("tokenizer.model cannot be loaded"):
            self._sp.LoadFromSerializedProto(proto)
        self.vocab_size = self._sp.GetPieceSize()
        self.bos_token_id, self.eos_token_ids, self._add_bos = bos, eos, add_bos

    def encode(self, text: str, add_special: bool = True) -> list[int]:
        ids = list(self._sp.EncodeAsIds(text))
        if add_special and self._add_bos and self.bos_token_id is not None:
            ids.insert(0, self.bos_token_id)
        return ids

    def decode(self, ids: list[int]) -> str:
        return self._sp.DecodeIds(list(ids))

    def vocabulary(self) -> list[str]:
        return [self._sp.IdToPiece(i) for i in range(self.vocab_size)]


def _ids(v: Any) -> list[int]:
    if isinstance(v, int):
        return [v]
    return [int(x) for x in v] if isinstance(v, list) else []


def _from_files(files: dict[str, Any], bos: int | None, eos: list[int], where: str) -> Tokenizer:
    cfg = files.get("tokenizer_config.json") or {}
    add_bos = cfg.get("add_bos_token") if isinstance(cfg, dict) else None
    if "tokenizer.json" in files:
        tj = files["tokenizer.json"]
        return HFTokenizer(tj if isinstance(tj, str) else json.dumps(tj), bos, eos, add_bos, where)
    if "tokenizer.model" in files:
        return SPTokenizer(files["tokenizer.model"], bos, eos, bool(add_bos if add_bos is not None else True))
    raise TokenizerError(f"{where}: no tokenizer.json or tokenizer.model")


def load_tokenizer(path: str | Path, config: dict[str, Any], metadata: dict[str, Any] | None = None) -> Tokenizer:
    """The tokenizer of the model at ``path`` (a folder, or a GGUF file whose ``metadata`` is given).

    Raises:
        TokenizerError: no tokenizer, or one that cannot be loaded.
    """
    p = Path(path)
    bos = config.get("bos_token_id") if isinstance(config.get("bos_token_id"), int) else None
    eos = _ids(config.get("eos_token_id"))
    if p.is_dir():
        files: dict[str, Any] = {}
        for name in ("tokenizer.json", "tokenizer_config.json"):
            f = p / name
            if f.is_file():
                try:  # bounded size and depth, one-line errors naming the file
                    value = read_json(f, name, MAX_TOKENIZER_JSON_BYTES)
                except FormatError as e:
                    raise TokenizerError(str(e)) from None
                if name == "tokenizer.json" and isinstance(value, dict):
                    check_pipeline(value, f)
                files[name] = json.dumps(value) if name == "tokenizer.json" else value
        if "tokenizer.json" not in files and (p / "tokenizer.model").is_file():
            files["tokenizer.model"] = (p / "tokenizer.model").read_bytes()
        tc = files.get("tokenizer_config.json") or {}
        if bos is None and isinstance(tc, dict):
            bos = _special_id(files, tc.get("bos_token"))
        if not eos and isinstance(tc, dict):
            eos = _ids(_special_id(files, tc.get("eos_token")))
        return _from_files(files, bos, eos, str(p))
    from ..formats.tokenizer_export import tokenizer_from_gguf

    meta = metadata or {}
    files = tokenizer_from_gguf(meta)
    if bos is None and isinstance(meta.get("tokenizer.ggml.bos_token_id"), int):
        bos = int(meta["tokenizer.ggml.bos_token_id"])
    if not eos and isinstance(meta.get("tokenizer.ggml.eos_token_id"), int):
        eos = [int(meta["tokenizer.ggml.eos_token_id"])]
    return _from_files(files, bos, eos, str(p))


def _special_id(files: dict[str, Any], token: Any) -> int | None:
    """Id of a special token given as text or ``{"content": ...}`` in tokenizer_config.json."""
    if isinstance(token, dict):
        token = token.get("content")
    if not isinstance(token, str) or "tokenizer.json" not in files:
        return None
    try:
        tj = loads(files["tokenizer.json"], "tokenizer.json")
    except FormatError:
        return None
    if not isinstance(tj, dict):
        return None
    added = tj.get("added_tokens")
    for a in added if isinstance(added, list) else []:
        if isinstance(a, dict) and a.get("content") == token and type(a.get("id")) is int:
            return a["id"]
    model = tj.get("model")
    v = model.get("vocab") if isinstance(model, dict) else None
    i = v.get(token) if isinstance(v, dict) else None
    return i if type(i) is int else None
