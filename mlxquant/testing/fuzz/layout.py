"""Where the integer fields of a seed file sit, so mutations can aim at them.

A byte flip rarely lands on a count or an offset; a fuzzer that knows where the counts, lengths,
type ids, dimensions and offsets are can write boundary values (0, -1, 2**31, 2**64-1, ...) into
exactly those bytes. These walkers read *our own* well-formed seeds (never a mutated file), so they
trust what they read.

- :func:`gguf_fields`: every header field of a GGUF file (version, counts, key/string lengths,
  value types, scalar values, array item types and counts, tensor dims/types/offsets).
- :func:`safetensors_fields`: the u64 header length and the JSON header's byte span.
- :func:`dat_fields`: the i32 fields of a legacy llama.cpp imatrix (``.dat``).
"""

from __future__ import annotations

import struct

Field = tuple[int, int]
"""(byte offset, width in bytes) of a little-endian integer field."""

# GGUF value type -> size of a scalar (strings and arrays are walked)
_SCALAR_SIZE = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9
MAX_ITEMS_LISTED = 4  # per array: only the first items' fields are listed


def gguf_fields(data: bytes) -> tuple[list[Field], int]:
    """The integer fields of a well-formed GGUF file and the offset where its header ends.

    Float scalars are listed too (their bytes are as good a target as any). For arrays only the
    first :data:`MAX_ITEMS_LISTED` items are listed, so a vocabulary does not drown the rest.
    """
    fields: list[Field] = [(4, 4), (8, 8), (16, 8)]
    n_tensors, n_kv = struct.unpack_from("<QQ", data, 8)
    pos = 24

    def string(pos: int) -> int:
        fields.append((pos, 8))
        (n,) = struct.unpack_from("<Q", data, pos)
        return pos + 8 + n

    def value(pos: int, vtype: int, listed: bool) -> int:
        if vtype in _SCALAR_SIZE:
            if listed:
                fields.append((pos, _SCALAR_SIZE[vtype]))
            return pos + _SCALAR_SIZE[vtype]
        if vtype == _STRING:
            if not listed:
                (n,) = struct.unpack_from("<Q", data, pos)
                return pos + 8 + n
            return string(pos)
        item, count = struct.unpack_from("<IQ", data, pos)
        if listed:
            fields.extend([(pos, 4), (pos + 4, 8)])
        pos += 12
        if item in _SCALAR_SIZE:
            if listed:
                fields.extend((pos + i * _SCALAR_SIZE[item], _SCALAR_SIZE[item])
                              for i in range(min(count, MAX_ITEMS_LISTED)))
            return pos + count * _SCALAR_SIZE[item]
        for i in range(count):
            pos = value(pos, item, listed and i < MAX_ITEMS_LISTED)
        return pos

    for _ in range(n_kv):
        pos = string(pos)
        fields.append((pos, 4))
        (vtype,) = struct.unpack_from("<I", data, pos)
        pos = value(pos + 4, vtype, True)
    for _ in range(n_tensors):
        pos = string(pos)
        fields.append((pos, 4))
        (n_dims,) = struct.unpack_from("<I", data, pos)
        pos += 4
        fields.extend((pos + 8 * j, 8) for j in range(n_dims))
        pos += 8 * n_dims
        fields.extend([(pos, 4), (pos + 4, 8)])
        pos += 12
    return fields, pos


def safetensors_fields(data: bytes) -> tuple[list[Field], int]:
    """The u64 header length field and the offset where the JSON header ends."""
    (n,) = struct.unpack_from("<Q", data, 0)
    return [(0, 8)], 8 + n


def dat_fields(data: bytes) -> tuple[list[Field], int]:
    """The i32 fields of a legacy imatrix: entry count, then per entry name length, ncall, nval.
    The second value is the offset of the first entry's values (the "header" end)."""
    fields: list[Field] = [(0, 4)]
    (n_entries,) = struct.unpack_from("<i", data, 0)
    pos, header_end = 4, len(data)
    for i in range(n_entries):
        fields.append((pos, 4))
        (n,) = struct.unpack_from("<i", data, pos)
        pos += 4 + n
        fields.extend([(pos, 4), (pos + 4, 4)])
        (nval,) = struct.unpack_from("<i", data, pos + 4)
        pos += 8
        if i == 0:
            header_end = pos
        pos += 4 * nval
    return fields, header_end
