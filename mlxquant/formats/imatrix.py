"""Importance matrices in llama.cpp's formats (what ``llama-imatrix`` writes).

GGUF format (current): ``general.type = "imatrix"``, and per weight tensor ``<name>.in_sum2``
(F32, NumPy shape ``(n_mat, n_per_row)``: sums of squared activations) and ``<name>.counts``
(F32, ``(n_mat, 1)``: activations seen). The importance llama-quantize hands to the quantizer is
``in_sum2 / counts`` per matrix (``n_mat`` > 1 for expert tensors), or 1.0 where a count is 0
(``tools/quantize/quantize.cpp: load_imatrix``).

Legacy ``.dat`` format: i32 entry count, then per entry i32 name length, name, i32 ncall, i32
nval, f32 values (already mean * ncall); importance = values / ncall.
"""

from __future__ import annotations

import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from ..errors import FormatError
from .gguf_read import GGUFModel

log = logging.getLogger(__name__)


def read_imatrix(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """GGUF tensor name -> float32 importance vector (length ``n_mat * n_per_row``).

    Raises:
        FormatError: a malformed file, sums without counts (or the reverse), non-F32 data,
            non-finite or negative values.
    """
    path = Path(path)
    with open(path, "rb") as f:
        magic = f.read(4)
    out = _read_gguf(path) if magic == b"GGUF" else _read_legacy(path)
    if not out:
        raise FormatError(f"{path}: imatrix has no entries")
    for name, w in out.items():
        if not np.isfinite(w).all() or (w < 0).any():
            raise FormatError(f"{path}: imatrix entry {name!r} has non-finite or negative values")
    log.info("%s: %d imatrix entries", path, len(out))
    return out


@dataclass(frozen=True)
class ImatrixEntry:
    """One tensor's statistics: ``in_sum2`` float32 ``(n_mat, n_per_row)``, ``counts`` ``(n_mat,)``."""

    in_sum2: np.ndarray
    counts: np.ndarray


@dataclass(frozen=True)
class ImatrixData:
    """An importance matrix as llama-imatrix stores it (GGUF format), entries by GGUF tensor name."""

    entries: Mapping[str, ImatrixEntry]
    datasets: tuple[str, ...]
    chunk_count: int
    chunk_size: int
    metadata: Mapping[str, object] | None = None


def _gguf_entries(g: GGUFModel, path: Path) -> dict[str, ImatrixEntry]:
    """The ``<name>.in_sum2`` / ``<name>.counts`` pairs of a GGUF imatrix, checked, by name."""
    sums: dict[str, str] = {}
    counts: dict[str, str] = {}
    for t in g.tensors:
        if t.name.endswith(".in_sum2"):
            sums[t.name[: -len(".in_sum2")]] = t.name
        elif t.name.endswith(".counts"):
            counts[t.name[: -len(".counts")]] = t.name
    out: dict[str, ImatrixEntry] = {}
    for name in sorted(set(sums) | set(counts)):
        if name not in sums or name not in counts:
            raise FormatError(f"{path}: imatrix entry {name!r} has sums without counts or the reverse")
        if g.info(sums[name]).qtype.name != "F32" or g.info(counts[name]).qtype.name != "F32":
            raise FormatError(f"{path}: imatrix entry {name!r} must be F32")
        s = np.array(g.tensor(sums[name]), dtype=np.float32).reshape(-1)
        c = np.array(g.tensor(counts[name]), dtype=np.float32).reshape(-1)
        if c.size == 0 or s.size % c.size:
            raise FormatError(
                f"{path}: imatrix entry {name!r}: {s.size} sums do not split into {c.size} matrices"
            )
        out[name] = ImatrixEntry(s.reshape(c.size, -1), c)
    return out


def read_imatrix_data(path: str | os.PathLike) -> ImatrixData:
    """A GGUF imatrix's raw sums, counts and metadata (merging and comparing need the sums; the
    legacy format keeps only means: use :func:`read_imatrix`).

    Raises:
        FormatError: not a GGUF imatrix, sums without counts, non-F32 data, mismatched sizes.
    """
    path = Path(path)
    with GGUFModel(path) as g:
        if g.get("general.type") != "imatrix":
            raise FormatError(f"{path}: general.type is {g.get('general.type')!r}, not an imatrix")
        entries = _gguf_entries(g, path)
        meta = dict(g.metadata)
    ds = meta.get("imatrix.datasets", [])
    return ImatrixData(entries, tuple(ds) if isinstance(ds, (list, tuple)) else (str(ds),),
                       int(meta.get("imatrix.chunk_count", 0)), int(meta.get("imatrix.chunk_size", 0)),
                       meta)


def _read_gguf(path: Path) -> dict[str, np.ndarray]:
    with GGUFModel(path) as g:
        if g.get("general.type") not in (None, "imatrix"):
            raise FormatError(f"{path}: general.type is {g.get('general.type')!r}, not an imatrix")
        entries = _gguf_entries(g, path)
    out: dict[str, np.ndarray] = {}
    for name, e in entries.items():
        n = np.rint(e.counts).astype(np.int64)  # llama.cpp: std::lround
        w = np.where(n[:, None] > 0, e.in_sum2 / np.maximum(n, 1)[:, None].astype(np.float32),
                     np.float32(1.0))
        out[name] = np.ascontiguousarray(w.reshape(-1), dtype=np.float32)
    return out


def _read_legacy(path: Path) -> dict[str, np.ndarray]:
    return _parse_legacy(path)[0]


def _parse_legacy(path: Path) -> tuple[dict[str, np.ndarray], int, tuple[str, ...]]:
    """Importances, chunk count and datasets of a legacy file (the last two from the optional
    tail ``i32 chunks, i32 length, dataset name`` as llama.cpp reads it; 0 and () without)."""
    data = path.read_bytes()
    pos = 0

    def take(n: int, what: str) -> bytes:
        nonlocal pos
        if n < 0 or pos + n > len(data):
            raise FormatError(f"{path}: not a GGUF file, and truncated as a legacy imatrix ({what})")
        b = data[pos : pos + n]
        pos += n
        return b

    (n_entries,) = struct.unpack("<i", take(4, "entry count"))
    if n_entries < 1 or n_entries * 16 > len(data):
        raise FormatError(f"{path}: not a GGUF file, nor a legacy imatrix ({n_entries} entries)")
    out: dict[str, np.ndarray] = {}
    for i in range(n_entries):
        (n,) = struct.unpack("<i", take(4, f"entry {i} name length"))
        name = take(n, f"entry {i} name").decode("utf-8", "replace")
        ncall, nval = struct.unpack("<ii", take(8, f"entry {i} counts"))
        if nval < 1:
            raise FormatError(f"{path}: legacy imatrix entry {name!r} has {nval} values")
        vals = np.frombuffer(take(4 * nval, f"entry {name!r} values"), dtype="<f4")
        out[name] = (vals / ncall if ncall > 0 else vals).astype(np.float32)
    chunks, datasets = 0, ()
    if pos + 4 <= len(data):
        (chunks,) = struct.unpack_from("<i", data, pos)
        if pos + 8 <= len(data):
            (n,) = struct.unpack_from("<i", data, pos + 4)
            if 0 < n <= len(data) - pos - 8:
                datasets = (data[pos + 8:pos + 8 + n].split(b"\0")[0].decode("utf-8", "replace"),)
    return out, chunks, datasets


@dataclass(frozen=True)
class ImatrixSummary:
    """What ``llama-quantize`` records of the imatrix it used (``quantize.imatrix.*`` keys)."""

    entries: int
    datasets: tuple[str, ...]
    chunk_count: int


def imatrix_summary(path: str | os.PathLike) -> ImatrixSummary:
    """Entry count, datasets and chunk count of a GGUF or legacy imatrix file.

    Raises:
        FormatError: a malformed file (as :func:`read_imatrix`).
    """
    path = Path(path)
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        out, chunks, datasets = _parse_legacy(path)
        return ImatrixSummary(len(out), datasets, chunks)
    weights = _read_gguf(path)
    with GGUFModel(path) as g:
        ds = g.get("imatrix.datasets", [])
        chunks = g.get("imatrix.chunk_count", 0)
    ds = tuple(str(d) for d in ds) if isinstance(ds, (list, tuple)) else (str(ds),)
    return ImatrixSummary(len(weights), ds, int(chunks) if isinstance(chunks, (int, np.integer)) else 0)


def importance_for(imatrix: dict[str, np.ndarray], name: str, n_per_row: int,
                   n_mat: int = 1) -> np.ndarray | None:
    """The importance vector for one GGUF tensor, as llama-quantize picks it.

    None when the imatrix has no entry for ``name``. A size mismatch is an error, except for
    ``token_embd.weight`` (llama.cpp ignores it there: embeddings see no activations).

    Raises:
        FormatError: the entry's size differs from ``n_per_row * n_mat``.
    """
    w = imatrix.get(name)
    if w is None:
        log.debug("imatrix: no entry for %s", name)
        return None
    if w.size != n_per_row * n_mat:
        if name.startswith("token_embd."):
            return None
        raise FormatError(
            f"imatrix entry {name!r} has {w.size} values, the tensor needs {n_per_row * n_mat}"
        )
    return w
