"""Parse and validate a GGUF header without trusting a single count in it.

gguf-py 0.19's ``GGUFReader`` trusts the file (a 49-byte file declaring an array of 2^63 elements
makes it allocate until killed; string lengths past the end are accepted) and mlx's ``mx.load``
can crash the process on crafted files. :func:`check_gguf` reads the header of a memory-mapped
file, checks every count, length, dimension and offset against the bytes actually left and against
llama.cpp's own limits (``ggml/src/gguf.cpp``) *before* using it, and returns the decoded header.
It never reads tensor data, so a header check costs milliseconds whatever the file size.

Layout (little-endian)::

    magic "GGUF" | version u32 | n_tensors u64 | n_kv u64
    n_kv x      (key: u64 len + utf-8 bytes) (value type u32) (value)
    n_tensors x (name: u64 len + bytes) (n_dims u32) (dims u64 x n_dims, fastest first)
                (ggml type u32) (offset u64, relative to the data section)
    padding to ``general.alignment`` (default 32) | tensor data
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FormatError, QuantTypeError
from ..quant.types import QuantType, get_type

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
MAX_STRING_BYTES = 1 << 30     # llama.cpp's GGUF_MAX_STRING_LENGTH
MAX_ARRAY_ITEMS = 1 << 30      # llama.cpp's GGUF_MAX_ARRAY_ELEMENTS
MAX_KEY_BYTES = 1 << 16
MAX_TENSOR_NAME_BYTES = 63     # GGML_MAX_NAME (64) including the terminating NUL
MAX_DIMS = 4                   # GGML_MAX_DIMS
MAX_ARRAY_DEPTH = 8            # llama.cpp refuses nested arrays; gguf-py writes them
# mlxquant's own limits, far above any real model (they hold < 100 keys, < 10,000 tensors and
# < 2 M array items: tokens, scores, types, merges) and low enough that a header at the limit
# decodes in well under a second: every key, tensor and array item becomes a Python object, and
# a crafted 100 MB header of 5 M keys took 58 s and 2 GB before these limits existed.
MAX_KV = 1 << 16
MAX_TENSORS = 1 << 16
MAX_TOTAL_ARRAY_ITEMS = 1 << 23


class ValueType(IntEnum):
    """GGUF metadata value types (``enum gguf_type``; same numbers as ``gguf.GGUFValueType``)."""

    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


# fixed-size scalar types: (numpy dtype, bytes)
_SCALAR = {
    ValueType.UINT8: ("<u1", 1), ValueType.INT8: ("<i1", 1),
    ValueType.UINT16: ("<u2", 2), ValueType.INT16: ("<i2", 2),
    ValueType.UINT32: ("<u4", 4), ValueType.INT32: ("<i4", 4),
    ValueType.FLOAT32: ("<f4", 4), ValueType.BOOL: ("<u1", 1),
    ValueType.UINT64: ("<u8", 8), ValueType.INT64: ("<i8", 8),
    ValueType.FLOAT64: ("<f8", 8),
}
# the fewest bytes one element of each type can occupy (a string: its u64 length; an array:
# its item type u32 and count u64)
_MIN_BYTES = {**{t: n for t, (_, n) in _SCALAR.items()}, ValueType.STRING: 8, ValueType.ARRAY: 12}


@dataclass(frozen=True)
class ValueTypeInfo:
    """The stored GGUF type of one metadata value: ``type`` and, for arrays, the ``item`` type
    (itself an array for nested arrays, described by ``nested``)."""

    type: ValueType
    item: ValueType | None = None
    nested: "ValueTypeInfo | None" = None


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a GGUF file.

    Attributes:
        name: GGUF tensor name, e.g. ``"blk.0.attn_q.weight"``.
        qtype: its GGML type (from mlxquant's registry).
        shape: NumPy order (slowest first), i.e. GGUF's ``ne`` reversed.
        offset: absolute byte offset of the data in the file.
        nbytes: bytes of data.
    """

    name: str
    qtype: QuantType
    shape: tuple[int, ...]
    offset: int
    nbytes: int

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


class GGUFMetadata(dict):
    """A GGUF file's metadata (key -> plain value) that remembers the file it came from, so that
    code turning it into a config or a tokenizer names the file in its errors."""

    source: Path | None = None


def metadata_source(meta: Any) -> str:
    """The file GGUF metadata was read from, or ``"GGUF metadata"`` when it is a plain dict."""
    src = getattr(meta, "source", None)
    return str(src) if src is not None else "GGUF metadata"


@dataclass
class GGUFHeader:
    """A validated GGUF header: metadata as plain Python values, their stored types, tensors."""

    path: Path
    version: int
    file_size: int
    alignment: int
    data_offset: int
    metadata: GGUFMetadata = field(default_factory=GGUFMetadata)
    value_types: dict[str, ValueTypeInfo] = field(default_factory=dict)
    tensors: list[TensorInfo] = field(default_factory=list)


class _Cursor:
    """Bounds-checked little-endian reads from a buffer; every failure names the file."""

    def __init__(self, buf: Any, size: int, path: Path):
        self.buf, self.size, self.path, self.pos = buf, size, path, 0
        self.items_left = MAX_TOTAL_ARRAY_ITEMS  # array items the header may still declare

    def fail(self, problem: str) -> FormatError:
        return FormatError(f"{self.path}: {problem}")

    @property
    def left(self) -> int:
        return self.size - self.pos

    def need(self, n: int, what: str) -> None:
        if n > self.left:
            raise self.fail(
                f"truncated: {what} needs {n} bytes at offset {self.pos}, only {self.left} left"
            )

    def unpack(self, fmt: str, n: int, what: str) -> int:
        self.need(n, what)
        (v,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return v

    def u32(self, what: str) -> int:
        return self.unpack("<I", 4, what)

    def u64(self, what: str) -> int:
        return self.unpack("<Q", 8, what)

    def raw_string(self, what: str, limit: int = MAX_STRING_BYTES) -> bytes:
        n = self.u64(f"{what} length")
        if n > limit:
            raise self.fail(f"{what}: length {n} exceeds the limit of {limit} bytes")
        self.need(n, what)
        s = self.buf[self.pos : self.pos + n]
        self.pos += n
        return s


def _decode(b: bytes) -> str | bytes:
    """UTF-8 text, or the raw bytes when they are not valid UTF-8 (kept losslessly)."""
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return b


def _read_array(cur: _Cursor, what: str, depth: int) -> tuple[list, ValueTypeInfo]:
    if depth > MAX_ARRAY_DEPTH:
        raise cur.fail(f"{what}: arrays nested deeper than {MAX_ARRAY_DEPTH} levels")
    raw_item = cur.u32(f"{what} item type")
    try:
        item = ValueType(raw_item)
    except ValueError:
        raise cur.fail(f"{what}: unknown array item type {raw_item}") from None
    count = cur.u64(f"{what} count")
    if count > MAX_ARRAY_ITEMS:
        raise cur.fail(f"{what}: array of {count} items exceeds the limit of {MAX_ARRAY_ITEMS}")
    if count * _MIN_BYTES[item] > cur.left:
        raise cur.fail(
            f"truncated: {what}: array of {count} {item.name} items cannot fit in the "
            f"{cur.left} bytes left"
        )
    if count > cur.items_left:
        raise cur.fail(f"{what}: array of {count} items takes the header past "
                       f"{MAX_TOTAL_ARRAY_ITEMS} array items in total (mlxquant's limit)")
    cur.items_left -= count
    if item in _SCALAR:
        dtype, size = _SCALAR[item]
        nbytes = count * size
        arr = np.frombuffer(cur.buf[cur.pos : cur.pos + nbytes], dtype=dtype)
        cur.pos += nbytes
        values = arr.astype(bool).tolist() if item == ValueType.BOOL else arr.tolist()
        return values, ValueTypeInfo(ValueType.ARRAY, item)
    if item == ValueType.STRING:
        buf, pos, size, unpack = cur.buf, cur.pos, cur.size, struct.unpack_from
        out: list = []
        append = out.append
        for i in range(count):
            if pos + 8 > size:
                cur.pos = pos
                cur.need(8, f"{what}[{i}] length")
            (n,) = unpack("<Q", buf, pos)
            pos += 8
            if n > size - pos:
                cur.pos = pos
                raise cur.fail(
                    f"truncated: {what}[{i}]: string of {n} bytes at offset {pos}, only "
                    f"{size - pos} left"
                )
            b = buf[pos : pos + n]
            pos += n
            try:
                append(b.decode("utf-8"))
            except UnicodeDecodeError:
                append(b)
        cur.pos = pos
        return out, ValueTypeInfo(ValueType.ARRAY, item)
    # nested arrays
    out = []
    inner: ValueTypeInfo | None = None
    for i in range(count):
        v, inner = _read_array(cur, f"{what}[{i}]", depth + 1)
        out.append(v)
    return out, ValueTypeInfo(ValueType.ARRAY, item, inner)


def _read_value(cur: _Cursor, vtype: ValueType, what: str) -> tuple[Any, ValueTypeInfo]:
    if vtype in _SCALAR:
        dtype, size = _SCALAR[vtype]
        cur.need(size, what)
        v = np.frombuffer(cur.buf[cur.pos : cur.pos + size], dtype=dtype)[0].item()
        cur.pos += size
        return (bool(v) if vtype == ValueType.BOOL else v), ValueTypeInfo(vtype)
    if vtype == ValueType.STRING:
        return _decode(cur.raw_string(what)), ValueTypeInfo(vtype)
    return _read_array(cur, what, 1)


def _tensor_bytes(cur: _Cursor, name: str, qtype: QuantType, ne: list[int]) -> int:
    if ne[0] % qtype.block_size:
        raise cur.fail(
            f"tensor {name!r}: row of {ne[0]} elements is not a multiple of the {qtype.name} "
            f"block size {qtype.block_size}"
        )
    n = qtype.row_bytes(ne[0])
    for d in ne[1:]:
        n *= d
    return n


def check_gguf(path: str | os.PathLike) -> GGUFHeader:
    """Validate the header of the GGUF file at ``path`` and return it decoded.

    Checks: magic, version (2 or 3, little-endian), tensor and key/value counts against the file
    size and ``MAX_TENSORS`` / ``MAX_KV``, array items against ``MAX_TOTAL_ARRAY_ITEMS``, every key and value (all types, nested arrays up to 8 levels; no allocation before a
    declared count is checked against the bytes left), unique non-empty keys,
    ``general.alignment`` (u32, power of two), tensor names (unique, < 64 bytes), dimensions
    (at most 4, non-negative, no int64 overflow), GGML types (known to mlxquant's registry), rows a
    multiple of the block size, data offsets aligned, inside the file and not overlapping.

    Raises:
        FormatError: one line naming the file and the first problem found.
        FileNotFoundError / IsADirectoryError / PermissionError: from opening the file.
    """
    path = Path(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < 24:
            raise FormatError(
                f"{path}: truncated: {size} bytes is too short for a GGUF header (24 bytes)"
            )
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            return _parse(_Cursor(mm, size, path))


def _parse(cur: _Cursor) -> GGUFHeader:
    magic = cur.buf[0:4]
    if magic != GGUF_MAGIC:
        raise cur.fail(f"not a GGUF file (magic {bytes(magic)!r}, expected b'GGUF')")
    cur.pos = 4
    version = cur.u32("version")
    if version in (2, 3):
        pass
    elif version & 0xFFFF == 0:
        raise cur.fail(f"big-endian GGUF (version field {version:#x}) is not supported")
    elif version == 1:
        raise cur.fail("GGUF version 1 is not supported (only 2 and 3)")
    else:
        raise cur.fail(f"unsupported GGUF version {version} (only 2 and 3)")
    n_tensors = cur.u64("tensor count")
    n_kv = cur.u64("key/value count")
    # each key/value needs >= 8 (key length) + 4 (type) + 1 (smallest value) bytes
    if n_kv * 13 > cur.left:
        raise cur.fail(f"truncated: {n_kv} key/value pairs cannot fit in the {cur.left} bytes left")
    # each tensor info needs >= 8 (name length) + 4 (n_dims) + 4 (type) + 8 (offset) bytes
    if n_tensors * 24 > cur.left:
        raise cur.fail(f"truncated: {n_tensors} tensor infos cannot fit in the {cur.left} bytes left")
    if n_kv > MAX_KV:
        raise cur.fail(f"{n_kv} key/value pairs exceed mlxquant's limit of {MAX_KV}")
    if n_tensors > MAX_TENSORS:
        raise cur.fail(f"{n_tensors} tensors exceed mlxquant's limit of {MAX_TENSORS}")

    hdr = GGUFHeader(cur.path, version, cur.size, DEFAULT_ALIGNMENT, 0)
    hdr.metadata.source = cur.path
    for i in range(n_kv):
        kb = cur.raw_string(f"key {i}", MAX_KEY_BYTES)
        if not kb:
            raise cur.fail(f"key {i} is empty")
        try:
            key = kb.decode("utf-8")
        except UnicodeDecodeError:
            raise cur.fail(f"key {i} is not valid UTF-8: {kb[:40]!r}") from None
        if key in hdr.metadata:
            raise cur.fail(f"duplicate key {key!r}")
        raw_type = cur.u32(f"type of {key!r}")
        try:
            vtype = ValueType(raw_type)
        except ValueError:
            raise cur.fail(f"key {key!r} has unknown value type {raw_type}") from None
        hdr.metadata[key], hdr.value_types[key] = _read_value(cur, vtype, f"value of {key!r}")

    if "general.alignment" in hdr.metadata:
        a, t = hdr.metadata["general.alignment"], hdr.value_types["general.alignment"]
        if t.type != ValueType.UINT32:
            raise cur.fail(f"general.alignment must be a UINT32, not {t.type.name}")
        if a == 0 or a & (a - 1):
            raise cur.fail(f"general.alignment {a} is not a power of two")
        hdr.alignment = a

    seen: set[str] = set()
    raw_infos: list[tuple[str, QuantType, list[int], int, int]] = []
    for i in range(n_tensors):
        nb = cur.raw_string(f"name of tensor {i}", MAX_TENSOR_NAME_BYTES)
        name = nb.decode("utf-8", errors="replace")
        if name in seen:
            raise cur.fail(f"duplicate tensor name {name!r}")
        seen.add(name)
        n_dims = cur.u32(f"tensor {name!r} dimension count")
        if n_dims > MAX_DIMS:
            raise cur.fail(f"tensor {name!r} has {n_dims} dimensions (at most {MAX_DIMS})")
        ne = [cur.u64(f"tensor {name!r} dimension {j}") for j in range(n_dims)] or [1]
        total = nonzero = 1
        for j, d in enumerate(ne):
            if d >= 1 << 63:
                raise cur.fail(f"tensor {name!r} dimension {j} is negative or too large ({d})")
            total *= d
            nonzero *= max(d, 1)
            # NumPy refuses shapes whose non-zero dims multiply past its limit, even for an
            # empty tensor: keep room for a float64 decode (8 bytes per element)
            if total >= 1 << 63 or nonzero >= 1 << 59:
                raise cur.fail(f"tensor {name!r}: shape {ne} overflows int64")
        type_id = cur.u32(f"tensor {name!r} type")
        try:
            qtype = get_type(type_id)
        except QuantTypeError:
            raise cur.fail(f"tensor {name!r} has unknown GGML type id {type_id}") from None
        nbytes = _tensor_bytes(cur, name, qtype, ne)
        offset = cur.u64(f"tensor {name!r} offset")
        raw_infos.append((name, qtype, ne, offset, nbytes))

    a = hdr.alignment
    hdr.data_offset = (cur.pos + a - 1) // a * a if n_tensors else cur.pos
    if n_tensors and hdr.data_offset > cur.size:
        raise cur.fail(
            f"truncated: data section starts at {hdr.data_offset}, past the end ({cur.size} bytes)"
        )
    data_size = cur.size - hdr.data_offset
    for name, qtype, ne, offset, nbytes in raw_infos:
        if offset % a:
            raise cur.fail(f"tensor {name!r} data offset {offset} is not a multiple of {a}")
        if offset > data_size or nbytes > data_size - offset:
            raise cur.fail(
                f"truncated: tensor {name!r} ({qtype.name}, {nbytes} bytes at data offset "
                f"{offset}) extends past the end of the file ({data_size} data bytes)"
            )
        shape = tuple(reversed(ne))
        hdr.tensors.append(TensorInfo(name, qtype, shape, hdr.data_offset + offset, nbytes))
    spans = sorted((t.offset, t.offset + t.nbytes, t.name) for t in hdr.tensors if t.nbytes)
    for (s0, e0, n0), (s1, _e1, n1) in zip(spans, spans[1:]):
        if s1 < e0:
            raise cur.fail(f"tensors {n0!r} and {n1!r} overlap (bytes {s1}..{e0})")
    return hdr
