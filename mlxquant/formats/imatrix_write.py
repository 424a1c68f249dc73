"""Write importance matrices in llama.cpp's two formats, as ``llama-imatrix`` writes them
(:mod:`mlxquant.formats.imatrix` reads them: ``read_imatrix`` the importance, ``in_sum2 /
counts``; ``read_imatrix_data`` the raw sums and counts that merging and comparing need).

Follows ``IMatrixCollector::save_imatrix`` / ``save_imatrix_legacy`` in llama.cpp's
``tools/imatrix/imatrix.cpp``:

- GGUF: keys ``general.type = "imatrix"``, ``imatrix.datasets`` (string array),
  ``imatrix.chunk_count``, ``imatrix.chunk_size`` (u32), in that order, and no
  ``general.architecture``; per tensor, in sorted name order, ``<name>.in_sum2`` (F32, ggml ne
  ``(n_per_row, n_mat)``) then ``<name>.counts`` (F32, ne ``(1, n_mat)``). mlxquant adds one key,
  ``mlxquant.version``, so that ``--force`` may later replace the file (:mod:`.ownership`);
  llama.cpp ignores it.
- Legacy ``.dat``: i32 entry count; per entry (sorted) i32 name length, name, i32 ``ncall =
  ceil(count / chunk_size)``, i32 value count, f32 ``(sum / count) * ncall``; then i32 chunk count
  and the dataset file name (i32 length + bytes). A ``.dat`` has no room for provenance, so
  ``--force`` never replaces one.

Both are written all-or-nothing (:func:`mlxquant.formats.atomic.atomic_file`).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import FormatError
from .atomic import Sources, atomic_file
from .imatrix import ImatrixData, ImatrixEntry

FORMATS = ("gguf", "dat")


def format_for(out: str | os.PathLike, fmt: str | None = None) -> str:
    """``"gguf"`` or ``"dat"``: ``fmt`` when given, else ``dat`` for a ``.dat`` name, else ``gguf``
    (llama-imatrix's default)."""
    if fmt is not None:
        f = fmt.lower()
        if f not in FORMATS:
            raise FormatError(f"unknown imatrix format {fmt!r} (choose from {', '.join(FORMATS)})")
        return f
    return "dat" if str(out).lower().endswith(".dat") else "gguf"


def write_imatrix(out: str | os.PathLike, data: ImatrixData, fmt: str | None = None, *,
                  force: bool = False, sources: Sources = ()) -> Path:
    """Write ``data`` to ``out`` in ``fmt`` (see :func:`format_for`); returns ``out``.

    Raises:
        OutputExistsError, UnsafeOutputError (see :func:`mlxquant.formats.atomic.check_output`),
        FormatError (no entries), OSError; nothing is left at ``out`` on error.
    """
    if not data.entries:
        raise FormatError(f"{out}: no imatrix entries to write")
    f = format_for(out, fmt)
    with atomic_file(out, force=force, sources=sources) as tmp:
        if f == "gguf":
            _write_gguf(tmp, data)
        else:
            tmp.write_bytes(_legacy_bytes(data))
    return Path(out)


def _write_gguf(path: Path, data: ImatrixData) -> None:
    from gguf import GGMLQuantizationType, GGUFValueType, GGUFWriter

    from .. import __version__

    w = GGUFWriter(path=None, arch="")
    w.kv_data[0].pop("general.architecture", None)  # llama-imatrix writes none
    w.add_string("general.type", "imatrix")
    w.add_array("imatrix.datasets", list(data.datasets))
    w.add_uint32("imatrix.chunk_count", int(data.chunk_count))
    w.add_uint32("imatrix.chunk_size", int(data.chunk_size))
    w.add_key_value("mlxquant.version", __version__, GGUFValueType.STRING)
    arrays = []
    for name in sorted(data.entries):
        e = data.entries[name]
        s = np.ascontiguousarray(e.in_sum2, dtype=np.float32).reshape(len(e.counts), -1)
        c = np.ascontiguousarray(e.counts, dtype=np.float32).reshape(-1, 1)
        for suffix, a in ((".in_sum2", s), (".counts", c)):
            w.add_tensor_info(name + suffix, a.shape, np.dtype(np.float32), a.nbytes,
                              raw_dtype=GGMLQuantizationType.F32)
            arrays.append(a)
    w.write_header_to_file(path=path)
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for a in arrays:
        w.write_tensor_data(a)
    w.close()


def _legacy_bytes(data: ImatrixData) -> bytes:
    cs = max(1, int(data.chunk_size))
    parts = [struct.pack("<i", len(data.entries))]
    for name in sorted(data.entries):
        e = data.entries[name]
        counts = np.asarray(e.counts, dtype=np.int64).reshape(-1)
        sums = np.asarray(e.in_sum2, dtype=np.float32).reshape(len(counts), -1)
        ncall = (int(counts.max()) + cs - 1) // cs
        cnt = counts.astype(np.float32)[:, None]
        vals = np.where(cnt == 0, np.float32(1.0), sums / np.where(cnt == 0, np.float32(1.0), cnt))
        vals = (vals * np.float32(ncall)).astype(np.float32)  # (value / count) * ncall, in float
        raw = name.encode("utf-8")
        parts += [struct.pack("<i", len(raw)), raw, struct.pack("<ii", ncall, vals.size),
                  vals.astype("<f4").tobytes()]
    dataset = (data.datasets[-1] if data.datasets else "").encode("utf-8")
    parts += [struct.pack("<i", int(data.chunk_count)), struct.pack("<i", len(dataset)), dataset]
    return b"".join(parts)


def entries_from(stats: Iterable[tuple[str, np.ndarray, int]]) -> dict[str, ImatrixEntry]:
    """``{name: ImatrixEntry}`` from ``(name, in_sum2 (n_per_row,), count)`` of dense tensors."""
    return {n: ImatrixEntry(np.asarray(s, np.float32).reshape(1, -1), np.array([c], np.int64))
            for n, s, c in stats}
