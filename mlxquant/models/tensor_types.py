"""Per-tensor type overrides in ``llama-quantize``'s syntax: ``--tensor-type PATTERN=TYPE`` and
``--tensor-type-file FILE`` (tools/quantize/quantize.cpp, applied in src/llama-quant.cpp).

What llama-quantize does, and this module with it: each argument is split at its first ``=``; the
pattern is lower-cased and used as a regular expression *searched* in the tensor name
(``std::regex_search``: ``attn_v`` matches ``blk.3.attn_v.weight``, so a file that must name
tensors exactly anchors them, ``^blk\\.3\\.attn_v\\.weight$``); the type is a GGML type name in any
case. A file holds such arguments separated by white space. For a tensor the preset would
quantize, the first matching pattern wins over the preset's rule for it (a "manual" type: the
mixture's per-tensor rules are skipped), and the row-size fallback still applies afterwards.
Tensors the preset keeps in float (norms, a float outtype) are never overridden.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import OptionError, QuantTypeError
from ..quant.types import get_type

MAX_FILE_BYTES = 16 << 20  # a recipe names each tensor once: megabytes at most
TensorTypes = tuple[tuple[str, str], ...]
"""Parsed overrides: ``(lower-cased pattern, GGML type name)`` in the order given."""


def parse_tensor_type(arg: str) -> tuple[str, str]:
    """``"PATTERN=TYPE"`` -> ``(pattern.lower(), TYPE)``.

    Raises:
        OptionError: no ``=``, an empty pattern or type, an invalid regular expression, or an
            unknown type (the message quotes the argument).
    """
    pattern, sep, tname = str(arg).partition("=")
    if not sep:
        raise OptionError(f"tensor type {arg!r}: expected PATTERN=TYPE (e.g. attn_v=q8_0)")
    if not pattern:
        raise OptionError(f"tensor type {arg!r}: missing tensor name pattern")
    if not tname:
        raise OptionError(f"tensor type {arg!r}: missing quantization type")
    pattern = pattern.lower()
    try:
        re.compile(pattern)
    except re.error as e:
        raise OptionError(f"tensor type {arg!r}: invalid regular expression ({e})") from None
    try:
        t = get_type(tname.upper())
    except QuantTypeError:
        raise OptionError(f"tensor type {arg!r}: unknown GGML type {tname!r}") from None
    return pattern, t.name


def read_tensor_type_file(path: str | os.PathLike) -> TensorTypes:
    """The arguments of a ``--tensor-type-file`` (white-space separated ``PATTERN=TYPE``).

    Raises:
        OptionError: a malformed entry (naming the file); OSError naming the file.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_FILE_BYTES:
            raise OptionError(f"{p}: {size} bytes is too large for a tensor type file "
                              f"(at most {MAX_FILE_BYTES})")
        text = p.read_bytes().decode("utf-8", errors="replace")
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(p)) from None
    out = []
    for arg in text.split():
        try:
            out.append(parse_tensor_type(arg))
        except OptionError as e:
            raise OptionError(f"{p}: {e}") from None
    return tuple(out)


def tensor_types_from(args: Iterable[str] = (), file: str | os.PathLike | None = None) -> TensorTypes:
    """The overrides of ``--tensor-type`` arguments followed by those of a file."""
    parsed = tuple(parse_tensor_type(a) for a in args)
    return parsed + (read_tensor_type_file(file) if file is not None else ())


def manual_type(name: str, overrides: Sequence[tuple[str, str]]) -> str | None:
    """The type of the first pattern found in ``name`` (None: no override)."""
    for pattern, t in overrides:
        if re.search(pattern, name):
            return t
    return None


def recipe_lines(plan: dict[str, str]) -> list[str]:
    """A ``--tensor-type-file`` that makes llama-quantize give every quantized tensor of ``plan``
    its type: one anchored, escaped pattern per tensor (every one, so that none is left to the
    preset's mixture rules)."""
    return [f"^{re.escape(n)}$={t.lower()}" for n, t in plan.items() if get_type(t).is_quantized]
