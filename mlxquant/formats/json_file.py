"""JSON files from model folders, read without trusting them, and typed access to their values.

config.json, tokenizer.json, tokenizer_config.json, generation_config.json, chat_template.json
and safetensors index files come from whoever published the model. :func:`read_json` bounds the
bytes read (before reading), the nesting depth (Python's ``json`` recurses: 100,000 nested
brackets raise ``RecursionError``; a depth check over the parsed value runs without recursion so
later consumers cannot recurse either), and turns every decoding problem into one
:class:`~mlxquant.errors.FormatError` naming the file. The accessors (:func:`get_int`,
:func:`get_float`, ...) check one value's type and range and name the file and the key::

    config.json: key 'num_attention_heads' must be a positive integer, got 0
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from ..errors import FormatError

# Largest JSON files read (checked with stat() before reading). Real config.json,
# tokenizer_config.json, generation_config.json and shard index files are kilobytes to a few MB;
# the largest real tokenizer.json files (Gemma 3, 262k tokens) are ~35 MB.
MAX_JSON_BYTES = 64 << 20
MAX_TOKENIZER_JSON_BYTES = 256 << 20
# Deepest nesting accepted (real files nest < 10 levels: tokenizer.json's pre-tokenizers).
MAX_JSON_DEPTH = 64

_MISSING = object()


class JSONObject(dict):
    """A JSON object read from a file, remembering the file (``source``), so that code using
    its values later can name the file in its errors (:func:`source_of`)."""

    source: Path | None = None


def source_of(value: Any, default: str = "config.json") -> str:
    """The file a :class:`JSONObject` (or GGUF metadata) was read from, else ``default``."""
    src = getattr(value, "source", None)
    return str(src) if src is not None else default


def _depth_ok(value: Any, limit: int) -> bool:
    """Whether ``value`` nests at most ``limit`` containers deep (an explicit stack: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if d > limit:
            return False
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values() if isinstance(x, (dict, list)))
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v if isinstance(x, (dict, list)))
    return True


def loads(data: str | bytes, where: str | os.PathLike, what: str = "JSON",
          max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Decode JSON text that came from ``where`` (named in errors), with the depth limit.

    Raises:
        FormatError: not UTF-8, not JSON, nested deeper than ``max_depth``.
    """
    try:
        value = json.loads(data)
    except RecursionError:
        raise FormatError(f"{where}: {what} nests deeper than {max_depth} levels") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise FormatError(f"{where}: cannot read {what}: {e}") from None
    if not _depth_ok(value, max_depth):
        raise FormatError(f"{where}: {what} nests deeper than {max_depth} levels")
    if _may_hold_surrogates(data):
        try:  # a lone \ud800 decodes, but no UTF-8 file (config.json we write) can hold it
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise FormatError(f"{where}: {what} holds a lone UTF-16 surrogate (\\uD800-\\uDFFF "
                              "escape without its pair), which is not text") from None
    return value


def _may_hold_surrogates(data: str | bytes) -> bool:
    """Whether JSON text has a \\uD8xx-\\uDFxx escape (the only way a surrogate gets in)."""
    low = data.lower() if isinstance(data, str) else data.lower().decode("latin-1")
    return any(f"\\u{c}" in low for c in ("d8", "d9", "da", "db", "dc", "dd", "de", "df"))


@contextlib.contextmanager
def reading(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Turn the OS errors of reading ``path`` (a ``what``: "config.json file", "safetensors
    shard") into one-line :class:`FormatError` s naming it."""
    try:
        yield
    except FileNotFoundError:
        raise FormatError(f"{path}: missing {what}") from None
    except IsADirectoryError:
        raise FormatError(f"{path}: {what} is a directory") from None
    except OSError as e:
        raise FormatError(f"{path}: cannot read {what}: {e.strerror or e}") from None


def read_json(path: str | os.PathLike, what: str = "JSON", max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Read and decode one JSON file, at most ``max_bytes`` long (an object comes back as a
    :class:`JSONObject` that remembers ``path``).

    Raises:
        FormatError: missing, unreadable, too large, not UTF-8, not JSON, nested too deep.
    """
    path = Path(path)
    with reading(path, f"{what} file"):
        size = path.stat().st_size
        if size > max_bytes:
            raise FormatError(f"{path}: {what} file of {size} bytes exceeds the limit of "
                              f"{max_bytes} bytes")
        data = path.read_bytes()
    value = loads(data, path, what)
    if isinstance(value, dict):  # remember the file, for errors raised where the values are used
        value = JSONObject(value)
        value.source = path
    return value


def read_json_object(path: str | os.PathLike, what: str = "JSON",
                     max_bytes: int = MAX_JSON_BYTES) -> dict[str, Any]:
    """:func:`read_json` for a file that must hold a JSON object; returned as a
    :class:`JSONObject` that remembers ``path``."""
    return expect_dict(read_json(path, what, max_bytes), path, what)


def _show(v: Any) -> str:
    s = json.dumps(v) if isinstance(v, (list, dict)) else repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def expect_dict(value: Any, where: str | os.PathLike, what: str) -> dict[str, Any]:
    """``value`` if it is a JSON object, else FormatError ``"<where>: <what> must be a JSON
    object, got list"``."""
    if not isinstance(value, dict):
        raise FormatError(f"{where}: {what} must be a JSON object, got {type(value).__name__}")
    return value


def expect_list(value: Any, where: str | os.PathLike, what: str) -> list[Any]:
    """``value`` if it is a JSON array, else FormatError naming ``where`` and ``what``."""
    if not isinstance(value, list):
        raise FormatError(f"{where}: {what} must be a JSON array, got {type(value).__name__}")
    return value


def check_int(v: Any, where: str | os.PathLike, what: str, lo: int | None = None,
              hi: int | None = None) -> int:
    """``v`` as an int in ``[lo, hi]`` (bools and floats refused; ``4.0`` is accepted as 4, as
    transformers' configs sometimes hold it)."""
    if isinstance(v, float) and v.is_integer() and abs(v) < 2 ** 53:
        v = int(v)
    if not isinstance(v, int) or isinstance(v, bool) or (lo is not None and v < lo) or (
            hi is not None and v > hi):
        if lo == 1:
            rng = "a positive integer" + ("" if hi is None else f" (at most {hi})")
        elif lo is not None and hi is not None:
            rng = f"an integer in [{lo}, {hi}]"
        elif lo is not None:
            rng = f"an integer >= {lo}"
        else:
            rng = "an integer"
        raise FormatError(f"{where}: {what} must be {rng}, got {_show(v)}")
    return v


def check_float(v: Any, where: str | os.PathLike, what: str, lo: float | None = None,
                hi: float | None = None, positive: bool = False) -> float:
    """``v`` as a finite float in ``[lo, hi]`` (``positive``: > 0); ints are accepted."""
    ok = isinstance(v, (int, float)) and not isinstance(v, bool)
    if ok:
        try:
            f = float(v)
        except OverflowError:
            ok = False
        else:
            ok = (math.isfinite(f) and (lo is None or f >= lo) and (hi is None or f <= hi)
                  and (not positive or f > 0))
    if not ok:
        rng = "a positive finite number" if positive else "a finite number"
        if lo is not None or hi is not None:
            rng += f" in [{lo}, {hi}]"
        raise FormatError(f"{where}: {what} must be {rng}, got {_show(v)}")
    return f


def _get(cfg: Mapping[str, Any], key: str, where: str | os.PathLike, default: Any,
         check: Callable[[Any, str], Any]) -> Any:
    """``check(cfg[key], "key 'name'")``; ``default`` when the key is absent or null (a
    :class:`FormatError` when no default is given: the key is required)."""
    v = cfg.get(key)
    if v is None:
        if default is _MISSING:
            raise FormatError(f"{where}: missing key {key!r}")
        return default
    return check(v, f"key {key!r}")


def _is(kind: type | tuple[type, ...], noun: str, where: str | os.PathLike) -> Callable[[Any, str], Any]:
    """A check that ``v`` is an instance of ``kind`` (bools are not ints here)."""

    def check(v: Any, what: str) -> Any:
        if not isinstance(v, kind) or (kind is not bool and isinstance(v, bool)):
            raise FormatError(f"{where}: {what} must be {noun}, got {_show(v)}")
        return v

    return check


def get_int(cfg: Mapping[str, Any], key: str, where: str | os.PathLike, *, lo: int | None = None,
            hi: int | None = None, default: Any = _MISSING) -> Any:
    """``cfg[key]`` checked by :func:`check_int`; ``default`` when absent or null (required when
    no default is given)."""
    return _get(cfg, key, where, default, lambda v, what: check_int(v, where, what, lo, hi))


def get_float(cfg: Mapping[str, Any], key: str, where: str | os.PathLike, *,
              lo: float | None = None, hi: float | None = None, positive: bool = False,
              default: Any = _MISSING) -> Any:
    """``cfg[key]`` checked by :func:`check_float`; ``default`` when absent or null."""
    return _get(cfg, key, where, default,
                lambda v, what: check_float(v, where, what, lo, hi, positive))


def get_str(cfg: Mapping[str, Any], key: str, where: str | os.PathLike, *,
            default: Any = _MISSING) -> Any:
    """``cfg[key]`` if it is a string; ``default`` when absent or null."""
    return _get(cfg, key, where, default, _is(str, "a string", where))


def get_bool(cfg: Mapping[str, Any], key: str, where: str | os.PathLike, *,
             default: Any = _MISSING) -> Any:
    """``cfg[key]`` if it is true or false; ``default`` when absent or null."""
    return _get(cfg, key, where, default, _is(bool, "true or false", where))


def get_dict(cfg: Mapping[str, Any], key: str, where: str | os.PathLike, *,
             default: Any = _MISSING) -> Any:
    """``cfg[key]`` if it is a JSON object; ``default`` when absent or null."""
    return _get(cfg, key, where, default, lambda v, what: expect_dict(v, where, what))
