"""Hugging Face model folders: config.json, safetensors shards, tokenizer and generation files.

Reading is lazy: shard headers are parsed and checked up front (names, dtypes, shapes, offsets
inside the file: :mod:`.safetensors_read`), config.json's values are checked
(:func:`mlxquant.models.hparams.check_hf_config`), tensors are read one at a time through ``safetensors.safe_open(framework=
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
from .ownership import PROVENANCE_FILE
from .json_file import MAX_JSON_BYTES, read_json_object
from .json_file import read_json as _read_json
from .safetensors_read import (SAFETENSORS_DTYPES, INDEX_FILE, HFTensor, check_biases, embedding_rows,
                               index_safetensors)

log = logging.getLogger(__name__)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json",
                   "special_tokens_map.json", "added_tokens.json", "chat_template.jinja",
                   "chat_template.json", "generation_config.json")


def bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    """uint16 bfloat16 bit patterns -> float32 (exact)."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16(x: np.ndarray) -> np.ndarray:
    """float32 -> uint16 bfloat16 bit patterns, rounding to nearest even (NaN stays NaN)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(np.isnan(x), np.uint16(0x7FC0), rounded)


def read_json(path: Path, what: str = "JSON") -> Any:
    """One JSON file of a model folder (bounded size and depth; see :mod:`.json_file`)."""
    return _read_json(path, what)


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
        from ..models.hparams import check_hf_config

        cfg_path = self.path / "config.json"
        self.config: dict = read_json_object(cfg_path, "config.json")
        tc = self.path / "tokenizer_config.json"
        self.tokenizer_config: dict = (read_json_object(tc, "tokenizer config") if tc.is_file()
                                       else {})
        gc = self.path / "generation_config.json"
        self.generation_config: dict | None = (read_json_object(gc, "generation config")
                                               if gc.is_file() else None)
        self._tensors = self._index()
        check_biases(self._tensors)
        check_hf_config(self.config, cfg_path, embedding_rows(self._tensors))

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
            try:
                if jinja.stat().st_size > MAX_JSON_BYTES:
                    raise FormatError(f"{jinja}: chat template larger than {MAX_JSON_BYTES} bytes")
                return jinja.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as e:
                raise FormatError(f"{jinja}: cannot read chat template: {e}") from None
        js = self.path / "chat_template.json"
        if js.is_file():
            t = read_json_object(js, "chat template").get("chat_template")
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
        np_dtype, _ = SAFETENSORS_DTYPES[t.dtype]
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
        return int(np.prod(self.shape, dtype=np.int64)) * SAFETENSORS_DTYPES[self.dtype][1]


def _encode(spec: HFTensorSpec, arr: np.ndarray) -> np.ndarray:
    if tuple(arr.shape) != tuple(spec.shape):
        raise FormatError(f"tensor {spec.name!r}: got shape {arr.shape}, expected {spec.shape}")
    if spec.dtype == "BF16":
        return f32_to_bf16(arr)
    return np.ascontiguousarray(arr, dtype=np.dtype(SAFETENSORS_DTYPES[spec.dtype][0]).newbyteorder("<"))


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


def _shard_header(specs: Sequence[Any], fmt: str) -> bytes:
    """A shard's JSON header as written (padded with spaces to a multiple of 8 bytes)."""
    header: dict[str, Any] = {"__metadata__": {"format": fmt}}
    offset = 0
    for s in specs:
        header[s.name] = {"dtype": s.dtype, "shape": list(s.shape), "data_offsets": [offset, offset + s.nbytes]}
        offset += s.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    return blob + b" " * (-len(blob) % 8)


def _shard_names(n: int) -> list[str]:
    return (["model.safetensors"] if n == 1 else
            [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)])


def _index_text(tensors: Sequence[Any], names: list[str], shards: list[list[Any]]) -> str:
    index = {"metadata": {"total_size": sum(s.nbytes for s in tensors)},
             "weight_map": {s.name: n for n, specs in zip(names, shards) for s in specs}}
    return json.dumps(index, indent=2)


def safetensors_files_size(tensors: Sequence[Any], *, fmt: str, always_index: bool,
                           max_shard_bytes: int) -> int:
    """Bytes of the shards (8-byte length, header, data) and the index that
    :func:`write_safetensors_folder` writes for ``tensors``: exact, nothing written."""
    shards = _shards(tensors, max_shard_bytes)
    names = _shard_names(len(shards))
    total = sum(8 + len(_shard_header(specs, fmt)) + sum(s.nbytes for s in specs) for specs in shards)
    if always_index or len(shards) > 1:
        total += len(_index_text(tensors, names, shards).encode("utf-8"))
    return total


def _write_shard(path: Path, specs: list[Any], data: Callable[[Any], np.ndarray],
                 to_bytes: Callable[[Any, np.ndarray], Any], fmt: str,
                 progress: Callable[[Any], None] | None) -> None:
    blob = _shard_header(specs, fmt)
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
        names = _shard_names(len(shards))
        for name, specs in zip(names, shards):
            _write_shard(tmp / name, specs, data, to_bytes, fmt, progress)
        if always_index or len(shards) > 1:
            (tmp / INDEX_FILE).write_text(_index_text(tensors, names, shards), encoding="utf-8")
        (tmp / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")
        for name, content in _record_written(files, [p.name for p in tmp.iterdir()]).items():
            p = tmp / name
            if isinstance(content, bytes):
                p.write_bytes(content)
            elif isinstance(content, str):
                p.write_text(content, encoding="utf-8")
            else:
                p.write_text(json.dumps(content, indent=2, ensure_ascii=False), encoding="utf-8")
    log.info("wrote %s (%d tensors, %d shard(s))", out, len(tensors), len(shards))
    return out


def _record_written(files: dict[str, Any] | None, written: list[str]) -> dict[str, Any]:
    """``files`` with the list of every file of the folder (``written`` + ``files``) recorded in
    ``mlxquant.json`` as ``output.files`` (added when absent): what lets ``force`` replace this
    folder later, and nothing a user added to it (:mod:`mlxquant.formats.ownership`)."""
    out = dict(files or {})
    record = out.get(PROVENANCE_FILE, {"mlxquant_version": _version()})
    if isinstance(record, dict):
        listed = sorted({*written, *out, PROVENANCE_FILE})
        out[PROVENANCE_FILE] = {**record, "output": {"files": listed}}
    return out


def _version() -> str:
    from .. import __version__

    return __version__


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
