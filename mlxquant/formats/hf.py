"""Hugging Face model folders: config.json, safetensors shards, tokenizer and generation files.

Reading is lazy: shard headers are parsed and checked up front (names, dtypes, shapes, offsets
inside the file), tensors are read one at a time through ``safetensors.safe_open(framework=
"numpy")``; bfloat16, which NumPy lacks, is read as raw bytes and widened to float32 here.
Writing streams safetensors shards tensor by tensor into a temporary folder that is renamed into
place when complete (:func:`mlxquant.formats.atomic.atomic_dir`).
"""

from __future__ import annotations

import json
import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import FormatError
from .atomic import atomic_dir

log = logging.getLogger(__name__)

INDEX_FILE = "model.safetensors.index.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json",
                   "special_tokens_map.json", "added_tokens.json", "chat_template.jinja",
                   "chat_template.json", "generation_config.json")
MAX_HEADER_BYTES = 100 << 20  # the safetensors library's own limit

# safetensors dtype -> (numpy dtype or None for bfloat16, bytes per element)
_DTYPES: dict[str, tuple[Any, int]] = {
    "F64": (np.float64, 8), "F32": (np.float32, 4), "F16": (np.float16, 2), "BF16": (None, 2),
    "I64": (np.int64, 8), "I32": (np.int32, 4), "I16": (np.int16, 2), "I8": (np.int8, 1),
    "U8": (np.uint8, 1), "BOOL": (np.bool_, 1),
}


def bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    """uint16 bfloat16 bit patterns -> float32 (exact)."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16(x: np.ndarray) -> np.ndarray:
    """float32 -> uint16 bfloat16 bit patterns, rounding to nearest even (NaN stays NaN)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(np.isnan(x), np.uint16(0x7FC0), rounded)


@dataclass(frozen=True)
class HFTensor:
    """A tensor in a safetensors shard: name, dtype (safetensors spelling), shape, file."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    file: Path
    start: int  # absolute byte offsets in the file
    end: int


def read_json(path: Path, what: str = "JSON") -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FormatError(f"{path}: missing {what} file") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise FormatError(f"{path}: cannot read {what}: {e}") from None


def read_safetensors_header(
    path: Path, dtypes: dict[str, tuple[Any, int]] = _DTYPES
) -> dict[str, HFTensor]:
    """Parse and check a safetensors header (no tensor data is read): offsets inside the file,
    sizes matching shapes, dtypes among ``dtypes`` (name -> (NumPy dtype, bytes))."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise FormatError(f"{path}: truncated safetensors file ({size} bytes)")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER_BYTES or 8 + n > size:
                raise FormatError(f"{path}: safetensors header of {n} bytes does not fit the file "
                                  f"({size} bytes)")
            header = json.loads(f.read(n))
    except FileNotFoundError:
        raise FormatError(f"{path}: missing safetensors shard") from None
    except FormatError:
        raise
    except (UnicodeDecodeError, ValueError) as e:
        raise FormatError(f"{path}: corrupt safetensors header: {e}") from None
    if not isinstance(header, dict):
        raise FormatError(f"{path}: corrupt safetensors header (not a JSON object)")
    base, out = 8 + n, {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (b, end) = e["dtype"], tuple(int(d) for d in e["shape"]), e["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise FormatError(f"{path}: corrupt safetensors entry for {name!r}") from None
        if dtype not in dtypes:
            raise FormatError(f"{path}: tensor {name!r} has unsupported dtype {dtype}")
        count = int(np.prod(shape, dtype=np.int64))
        if any(d < 0 for d in shape) or not (
            0 <= b <= end and base + end <= size and end - b == count * dtypes[dtype][1]
        ):
            raise FormatError(f"{path}: tensor {name!r} ({dtype}, {list(shape)}) has bad data "
                              f"offsets {b}..{end} (file {size} bytes)")
        out[name] = HFTensor(name, dtype, shape, path, base + b, base + end)
    return out


def index_safetensors(
    folder: Path, pattern: str = "*.safetensors", dtypes: dict[str, tuple[Any, int]] = _DTYPES
) -> dict[str, HFTensor]:
    """Every tensor of a folder's safetensors shards: those of ``model.safetensors.index.json``
    when present (each listed shard must exist and hold its tensors), else of the files matching
    ``pattern`` (a tensor name may appear in one shard only)."""
    index = folder / INDEX_FILE
    tensors: dict[str, HFTensor] = {}
    if index.is_file():
        weight_map = read_json(index, "safetensors index").get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise FormatError(f"{index}: no weight_map")
        shards = sorted(set(weight_map.values()), key=str)
        for shard in shards:
            if not isinstance(shard, str) or "/" in shard or not (folder / shard).is_file():
                raise FormatError(f"{folder / str(shard)}: missing safetensors shard (listed in {INDEX_FILE})")
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


class HFModel:
    """A Hugging Face model folder opened for reading.

    Attributes:
        path: the folder.
        config: config.json.
        tokenizer_config: tokenizer_config.json ({} when absent).
        generation_config: generation_config.json, or None.
        chat_template: from tokenizer_config.json or chat_template.jinja/.json (text), or None.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_dir():
            raise FormatError(f"{self.path}: not a Hugging Face model folder")
        self.config: dict = read_json(self.path / "config.json", "config.json")
        if not isinstance(self.config, dict):
            raise FormatError(f"{self.path / 'config.json'}: not a JSON object")
        tc = self.path / "tokenizer_config.json"
        self.tokenizer_config: dict = read_json(tc, "tokenizer config") if tc.is_file() else {}
        gc = self.path / "generation_config.json"
        self.generation_config: dict | None = read_json(gc, "generation config") if gc.is_file() else None
        self._tensors = self._index()

    def _index(self) -> dict[str, HFTensor]:
        return index_safetensors(self.path)

    # -- tokenizer -----------------------------------------------------------------------------
    @property
    def has_tokenizer(self) -> bool:
        return (self.path / "tokenizer.json").is_file() or (self.path / "tokenizer.model").is_file()

    @property
    def chat_template(self) -> str | None:
        t = self.tokenizer_config.get("chat_template")
        if isinstance(t, str):
            return t
        jinja = self.path / "chat_template.jinja"
        if jinja.is_file():
            return jinja.read_text(encoding="utf-8")
        js = self.path / "chat_template.json"
        if js.is_file():
            t = read_json(js, "chat template").get("chat_template")
            return t if isinstance(t, str) else None
        return None

    # -- tensors -------------------------------------------------------------------------------
    @property
    def tensor_names(self) -> list[str]:
        return list(self._tensors)

    def info(self, name: str) -> HFTensor:
        try:
            return self._tensors[name]
        except KeyError:
            raise KeyError(f"{self.path}: no tensor named {name!r}") from None

    def tensor(self, name: str) -> np.ndarray:
        """One tensor as float32 (integer tensors keep their dtype)."""
        t = self.info(name)
        np_dtype, _ = _DTYPES[t.dtype]
        if np_dtype is None:  # bfloat16
            raw = np.fromfile(t.file, dtype="<u2", count=(t.end - t.start) // 2, offset=t.start)
            return bf16_to_f32(raw).reshape(t.shape)
        from safetensors import SafetensorError, safe_open

        try:
            # opened per tensor: closing unmaps the file, so pages read for earlier tensors do
            # not accumulate in this process's resident memory
            with safe_open(str(t.file), framework="numpy") as f:
                arr = f.get_tensor(name)
        except (SafetensorError, OSError) as e:
            raise FormatError(f"{t.file}: cannot read tensor {name!r}: {e}") from None
        return arr.astype(np.float32) if np.issubdtype(arr.dtype, np.floating) else arr

    def close(self) -> None:
        """Nothing stays open between :meth:`tensor` calls; kept for the context manager."""

    def __enter__(self) -> "HFModel":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class HFTensorSpec:
    """A tensor to write: name, NumPy shape, safetensors dtype ("F32", "F16" or "BF16")."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "F32"

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * _DTYPES[self.dtype][1]


def _encode(spec: HFTensorSpec, arr: np.ndarray) -> np.ndarray:
    if tuple(arr.shape) != tuple(spec.shape):
        raise FormatError(f"tensor {spec.name!r}: got shape {arr.shape}, expected {spec.shape}")
    if spec.dtype == "BF16":
        return f32_to_bf16(arr)
    return np.ascontiguousarray(arr, dtype=np.dtype(_DTYPES[spec.dtype][0]).newbyteorder("<"))


def _shards(specs: Sequence[Any], max_bytes: int) -> list[list[Any]]:
    shards: list[list[Any]] = [[]]
    size = 0
    for s in specs:
        if shards[-1] and size + s.nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(s)
        size += s.nbytes
    return shards


def _write_shard(path: Path, specs: list[Any], data: Callable[[Any], np.ndarray],
                 to_bytes: Callable[[Any, np.ndarray], Any], fmt: str,
                 progress: Callable[[Any], None] | None) -> None:
    header: dict[str, Any] = {"__metadata__": {"format": fmt}}
    offset = 0
    for s in specs:
        header[s.name] = {"dtype": s.dtype, "shape": list(s.shape), "data_offsets": [offset, offset + s.nbytes]}
        offset += s.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for s in specs:
            f.write(to_bytes(s, data(s)))
            if progress is not None:
                progress(s)
        f.flush()
        os.fsync(f.fileno())


def write_safetensors_folder(
    out: str | os.PathLike,
    config: dict,
    tensors: Sequence[Any],
    data: Callable[[Any], np.ndarray],
    to_bytes: Callable[[Any, np.ndarray], Any],
    *,
    fmt: str,
    always_index: bool,
    files: dict[str, Any] | None,
    max_shard_bytes: int,
    force: bool,
    progress: Callable[[Any], None] | None,
) -> Path:
    """The writer behind :func:`write_hf_folder` and ``mlx_folder.write_mlx_folder``: safetensors
    shards (``__metadata__.format`` = ``fmt``; specs have ``name``, ``shape``, ``dtype`` and
    ``nbytes``; ``to_bytes(spec, array)`` checks and encodes one tensor), the shard index
    (``always_index``, or when there is more than one shard), config.json and ``files``, all in
    a temporary folder renamed when complete."""
    out = Path(out)
    with atomic_dir(out, force=force) as tmp:
        shards = _shards(tensors, max_shard_bytes)
        names = (["model.safetensors"] if len(shards) == 1 else
                 [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
        for name, specs in zip(names, shards):
            _write_shard(tmp / name, specs, data, to_bytes, fmt, progress)
        if always_index or len(shards) > 1:
            index = {"metadata": {"total_size": sum(s.nbytes for s in tensors)},
                     "weight_map": {s.name: n for n, specs in zip(names, shards) for s in specs}}
            (tmp / INDEX_FILE).write_text(json.dumps(index, indent=2), encoding="utf-8")
        (tmp / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")
        for name, content in (files or {}).items():
            p = tmp / name
            if isinstance(content, bytes):
                p.write_bytes(content)
            elif isinstance(content, str):
                p.write_text(content, encoding="utf-8")
            else:
                p.write_text(json.dumps(content, indent=2, ensure_ascii=False), encoding="utf-8")
    log.info("wrote %s (%d tensors, %d shard(s))", out, len(tensors), len(shards))
    return out


def write_hf_folder(
    out: str | os.PathLike,
    config: dict,
    tensors: Sequence[HFTensorSpec],
    data: Callable[[HFTensorSpec], np.ndarray],
    *,
    files: dict[str, Any] | None = None,
    max_shard_bytes: int = 5 << 30,
    force: bool = False,
    progress: Callable[[HFTensorSpec], None] | None = None,
) -> Path:
    """Write a Hugging Face model folder atomically.

    Args:
        out: the folder to create (must not exist unless ``force``).
        config: written as config.json.
        tensors: tensor specs, in order.
        data: ``spec -> float array`` of ``spec.shape``, called once per tensor (streaming).
        files: extra files, name -> dict (written as JSON), str or bytes (tokenizer files,
            generation_config.json, ...).
        max_shard_bytes: shard size limit (default 5 GiB); more than one shard adds
            ``model.safetensors.index.json``.
        force: replace an existing ``out``.
        progress: called after each tensor.
    """
    return write_safetensors_folder(
        out, config, tensors, data, lambda s, a: _encode(s, a).tobytes(), fmt="pt", always_index=False,
        files=files, max_shard_bytes=max_shard_bytes, force=force, progress=progress)
