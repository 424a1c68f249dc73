"""Safetensors shards read without trusting them: header checks and the shard index.

A header is refused before it is parsed when it is larger than ``MAX_HEADER_BYTES`` or holds
more than ``MAX_SHARD_TENSORS`` entries; each entry's dtype, shape and data offsets are then
type-checked and compared, in Python integers (no int64 wrap-around), with the bytes the file
holds. The shard index (``model.safetensors.index.json``) must map tensor names to plain file
names in the same folder. Used by the Hugging Face (:mod:`.hf`) and MLX (:mod:`.mlx_folder`)
folder readers.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FormatError
from .json_file import loads as _loads
from .json_file import read_json_object, reading

INDEX_FILE = "model.safetensors.index.json"

# Limits on a safetensors header, checked before it is parsed. 100 MB is the safetensors
# library's own limit; real shards hold at most a few thousand tensors (a 99 MB header of 1.7 M
# entries took 38 s and 2.2 GB to parse and check), dimensions stay far below 2**40.
MAX_HEADER_BYTES = 100 << 20
MAX_SHARD_TENSORS = 1 << 17
MAX_INDEX_TENSORS = 1 << 20
MAX_SAFETENSORS_DIMS = 16
MAX_DIM = 1 << 40

# safetensors dtype -> (numpy dtype or None for bfloat16, bytes per element)
SAFETENSORS_DTYPES: dict[str, tuple[Any, int]] = {
    "F64": (np.float64, 8), "F32": (np.float32, 4), "F16": (np.float16, 2), "BF16": (None, 2),
    "I64": (np.int64, 8), "I32": (np.int32, 4), "I16": (np.int16, 2), "I8": (np.int8, 1),
    "U8": (np.uint8, 1), "BOOL": (np.bool_, 1),
}


@dataclass(frozen=True)
class HFTensor:
    """A tensor in a safetensors shard: name, dtype (safetensors spelling), shape, file."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    file: Path
    start: int  # absolute byte offsets in the file
    end: int


def _check_entry(path: Path, name: str, e: Any, dtypes: dict[str, tuple[Any, int]],
                 data_size: int) -> tuple[str, tuple[int, ...], int, int]:
    """One header entry's dtype, shape and data offsets, each checked in Python ints (no int64
    wrap-around): dims in [0, MAX_DIM], ``begin <= end <= data_size``, ``end - begin`` equal to
    the elements times the dtype's size."""
    if not isinstance(e, dict):
        raise FormatError(f"{path}: tensor {name!r}: header entry must be a JSON object")
    dtype, shape, offsets = e.get("dtype"), e.get("shape"), e.get("data_offsets")
    if not isinstance(dtype, str):
        raise FormatError(f"{path}: tensor {name!r}: dtype must be a string, got {dtype!r:.40}")
    if dtype not in dtypes:
        raise FormatError(f"{path}: tensor {name!r} has unsupported dtype {dtype[:40]}")
    if not (isinstance(shape, list) and len(shape) <= MAX_SAFETENSORS_DIMS and all(
            type(d) is int and 0 <= d <= MAX_DIM for d in shape)):
        raise FormatError(f"{path}: tensor {name!r}: shape must be a list of at most "
                          f"{MAX_SAFETENSORS_DIMS} integers in [0, 2**40], got {str(shape)[:60]}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)):
        raise FormatError(f"{path}: tensor {name!r}: data_offsets must be two integers, "
                          f"got {str(offsets)[:60]}")
    b, end = offsets
    count = 1
    for d in shape:
        count *= d
    if not (0 <= b <= end <= data_size and end - b == count * dtypes[dtype][1]):
        raise FormatError(f"{path}: tensor {name!r} ({dtype}, {shape}) has bad data "
                          f"offsets {b}..{end} ({data_size} data bytes)")
    return dtype, tuple(shape), b, end


def read_safetensors_header(
    path: Path, dtypes: dict[str, tuple[Any, int]] = SAFETENSORS_DTYPES
) -> dict[str, HFTensor]:
    """Parse and check a safetensors header (no tensor data is read): at most
    ``MAX_HEADER_BYTES`` and ``MAX_SHARD_TENSORS`` entries (refused before parsing), types of
    every field, offsets inside the file, sizes matching shapes, dtypes among ``dtypes``
    (name -> (NumPy dtype, bytes))."""
    with reading(path, "safetensors shard"):
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise FormatError(f"{path}: truncated safetensors file ({size} bytes)")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER_BYTES:
                raise FormatError(f"{path}: safetensors header of {n} bytes exceeds the limit of "
                                  f"{MAX_HEADER_BYTES} bytes")
            if 8 + n > size:
                raise FormatError(f"{path}: safetensors header of {n} bytes does not fit the file "
                                  f"({size} bytes)")
            raw = f.read(n)
    # every entry is a JSON object, so it holds a "{": counting them bounds the entries before
    # json.loads builds (slowly, in a lot of memory) a header no real model has
    if raw.count(b"{") > MAX_SHARD_TENSORS + 2:
        raise FormatError(f"{path}: safetensors header has more than {MAX_SHARD_TENSORS} entries")
    try:
        header = _loads(raw, path, "safetensors header")
    except FormatError as e:  # keep the safetensors wording: "<file>: corrupt safetensors header"
        raise FormatError(f"{path}: corrupt safetensors header ({str(e).split(': ', 1)[-1]})") from None
    if not isinstance(header, dict):
        raise FormatError(f"{path}: corrupt safetensors header (not a JSON object)")
    base, out = 8 + n, {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        dtype, shape, b, end = _check_entry(path, name, e, dtypes, size - base)
        out[name] = HFTensor(name, dtype, shape, path, base + b, base + end)
    return out


def _read_index(index: Path) -> dict[str, str]:
    """The ``weight_map`` of a shard index: tensor name -> shard file name in the same folder."""
    weight_map = read_json_object(index, "safetensors index").get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise FormatError(f"{index}: no weight_map")
    if len(weight_map) > MAX_INDEX_TENSORS:
        raise FormatError(f"{index}: weight_map lists {len(weight_map)} tensors (more than "
                          f"{MAX_INDEX_TENSORS})")
    for name, shard in weight_map.items():
        if (not isinstance(shard, str) or not shard or len(shard.encode("utf-8", "replace")) > 255
                or "/" in shard or "\\" in shard or "\0" in shard or shard in (".", "..")):
            raise FormatError(f"{index}: weight_map entry {name!r} must be a shard file name, "
                              f"got {str(shard)[:60]}")
    return weight_map


def index_safetensors(
    folder: Path, pattern: str = "*.safetensors", dtypes: dict[str, tuple[Any, int]] = SAFETENSORS_DTYPES
) -> dict[str, HFTensor]:
    """Every tensor of a folder's safetensors shards: those of ``model.safetensors.index.json``
    when present (each listed shard must exist and hold its tensors), else of the files matching
    ``pattern`` (a tensor name may appear in one shard only)."""
    index = folder / INDEX_FILE
    tensors: dict[str, HFTensor] = {}
    if index.is_file():
        weight_map = _read_index(index)
        shards = sorted(set(weight_map.values()))
        for shard in shards:
            try:
                present = (folder / shard).is_file()
            except (OSError, ValueError):  # a name the file system cannot even look up
                present = False
            if not present:
                raise FormatError(f"{folder / shard!s:.300}: missing safetensors shard (listed in "
                                  f"{INDEX_FILE})")
        for shard in shards:
            found = read_safetensors_header(folder / shard, dtypes)
            for name, file in weight_map.items():
                if file == shard and name not in found:
                    raise FormatError(f"{folder / shard}: tensor {name!r} listed in {INDEX_FILE} is missing")
            tensors.update({k: v for k, v in found.items() if weight_map.get(k) == shard})
    else:
        files = sorted(folder.glob(pattern))
        if not files:
            raise FormatError(f"{folder}: no {pattern} weights")
        for shard in files:
            for name, t in read_safetensors_header(shard, dtypes).items():
                if name in tensors:
                    raise FormatError(f"{shard}: tensor {name!r} also in {tensors[name].file.name}")
                tensors[name] = t
    return tensors


def check_biases(tensors: dict[str, HFTensor]) -> None:
    """Bias tensors (``*.bias``) must be vectors: converters map and quantize by name, and a 2-D
    ``bias`` would be taken for a weight matrix."""
    for name, t in tensors.items():
        if name.endswith(".bias") and len(t.shape) != 1:
            raise FormatError(f"{t.file}: tensor {name!r} is a bias of shape {list(t.shape)} "
                              "(a bias must be 1-D)")


def embedding_rows(tensors: dict[str, HFTensor]) -> int | None:
    """Rows of the token embedding (``*embed_tokens.weight``), or None when there is none."""
    for name, t in tensors.items():
        if name.endswith("embed_tokens.weight") and t.shape:
            return t.shape[0]
    return None
