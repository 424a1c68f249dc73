"""Read GGUF models: metadata as plain Python values, tensors one at a time.

The header is parsed and validated by :func:`~mlxquant.formats.gguf_check.check_gguf` (which
decodes every key/value while checking it, ~25x faster than gguf-py's ``GGUFReader`` on SmolLM2
and safe on hostile files); tensor data is memory-mapped and decoded by mlxquant's codecs
(:func:`mlxquant.dequantize`), never by ``mx.load``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..errors import FormatError
from ..quant import dequantize
from .gguf_check import GGUFHeader, TensorInfo, ValueTypeInfo, check_gguf

# GGML types stored as plain NumPy arrays (no block codec needed)
_PLAIN_DTYPES = {"I8": np.int8, "I16": np.int16, "I32": np.int32, "I64": np.int64, "F64": np.float64}


@dataclass(frozen=True)
class GGUFTensor:
    """A tensor listed in a GGUF file.

    Attributes:
        name: GGUF name, e.g. ``"blk.0.ffn_down.weight"``.
        type: GGML type name, e.g. ``"Q4_K"``.
        shape: NumPy order (rows last-but-one, row length last).
        nbytes: stored size in bytes.
    """

    name: str
    type: str
    shape: tuple[int, ...]
    nbytes: int

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


class GGUFModel:
    """A GGUF file opened for reading.

    ``metadata`` maps every key to a plain Python value (str, int, float, bool, list; strings that
    are not valid UTF-8 stay ``bytes``); ``value_types`` keeps each key's stored GGUF type, so a
    copy can be written back unchanged. Tensor data stays on disk until :meth:`raw` or
    :meth:`tensor` is called for one tensor.

    Use as a context manager, or call :meth:`close`, to release the memory map.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.header: GGUFHeader = check_gguf(self.path)
        self._infos: dict[str, TensorInfo] = {t.name: t for t in self.header.tensors}
        self._mm: np.memmap | None = None
        self._check_vocab()

    def _check_vocab(self) -> None:
        """``{arch}.vocab_size`` must not exceed the embedding's rows (converters size the
        vocabulary from it)."""
        key = f"{self.architecture}.vocab_size"
        vocab, embd = self.metadata.get(key), self._infos.get("token_embd.weight")
        if isinstance(vocab, int) and embd is not None and len(embd.shape) == 2 and vocab > embd.shape[0]:
            raise FormatError(f"{self.path}: key {key!r} ({vocab}) exceeds the {embd.shape[0]} rows "
                              "of token_embd.weight")

    # -- metadata ------------------------------------------------------------------------------
    @property
    def metadata(self) -> dict[str, Any]:
        return self.header.metadata

    @property
    def value_types(self) -> dict[str, ValueTypeInfo]:
        return self.header.value_types

    @property
    def version(self) -> int:
        return self.header.version

    @property
    def architecture(self) -> str | None:
        arch = self.metadata.get("general.architecture")
        return arch if isinstance(arch, str) else None

    def get(self, key: str, default: Any = None) -> Any:
        """``metadata[key]``, or ``default`` when absent."""
        return self.metadata.get(key, default)

    # -- tensors -------------------------------------------------------------------------------
    @property
    def tensors(self) -> list[GGUFTensor]:
        """Every tensor, in file order."""
        return [GGUFTensor(t.name, t.qtype.name, t.shape, t.nbytes) for t in self.header.tensors]

    def __contains__(self, name: str) -> bool:
        return name in self._infos

    def __iter__(self) -> Iterator[str]:
        return iter(self._infos)

    def info(self, name: str) -> TensorInfo:
        try:
            return self._infos[name]
        except KeyError:
            raise KeyError(f"{self.path}: no tensor named {name!r}") from None

    def _map(self) -> np.memmap:
        if self._mm is None:
            self._mm = np.memmap(self.path, dtype=np.uint8, mode="r")
            if self._mm.size != self.header.file_size:
                raise FormatError(
                    f"{self.path}: file changed size while open "
                    f"({self.header.file_size} -> {self._mm.size} bytes)"
                )
        return self._mm

    def raw(self, name: str) -> np.ndarray:
        """The stored bytes of one tensor, memory-mapped (read-only): uint8 of shape
        ``(rows, row_bytes)`` where ``rows`` is the product of all but the last dimension."""
        t = self.info(name)
        rows = int(np.prod(t.shape[:-1], dtype=np.int64)) if len(t.shape) > 1 else 1
        data = self._map()[t.offset : t.offset + t.nbytes]
        return data.reshape(rows, t.nbytes // rows if rows else 0)

    def read(self, name: str) -> np.ndarray:
        """The stored bytes of one tensor read into a new array, shaped like :meth:`raw`.

        Unlike :meth:`raw` this does not go through the memory map, so the file's pages do not
        stay resident in this process once the array is dropped: a pass over every tensor of a
        large model costs the largest tensor in memory, not the file size. Thread-safe.
        """
        t = self.info(name)
        rows = int(np.prod(t.shape[:-1], dtype=np.int64)) if len(t.shape) > 1 else 1
        buf = np.empty(t.nbytes, dtype=np.uint8)
        with open(self.path, "rb") as f:
            f.seek(t.offset)
            got = f.readinto(memoryview(buf))
        if got != t.nbytes:
            raise FormatError(f"{self.path}: tensor {name!r} is truncated ({got} of {t.nbytes} bytes; "
                              "the file changed since it was opened?)")
        return buf.reshape(rows, t.nbytes // rows if rows else 0)

    def tensor(self, name: str) -> np.ndarray:
        """One tensor decoded to float32, in its NumPy shape (a new array, not a view; the file
        is read, not memory-mapped, see :meth:`read`)."""
        t = self.info(name)
        plain = _PLAIN_DTYPES.get(t.qtype.name)
        if plain is not None:
            return self.read(name).view(plain).reshape(t.shape).astype(np.float32)
        if t.qtype.name == "F32":
            return self.read(name).view("<f4").reshape(t.shape)
        return dequantize(self.read(name), t.qtype, t.shape)

    # -- lifecycle -----------------------------------------------------------------------------
    def close(self) -> None:
        """Drop the memory map (arrays returned by :meth:`raw` keep their own reference)."""
        self._mm = None

    def __enter__(self) -> "GGUFModel":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"GGUFModel({str(self.path)!r}, arch={self.architecture!r}, "
            f"tensors={len(self._infos)}, kv={len(self.metadata)})"
        )
