"""Provenance: what an output was made from and how.

Every mlxquant output records the SHA-256 of each source file, the mlxquant version, the recipe
(the conversion's options) and the per-tensor types (with, for MLX outputs, whether each tensor
was transcoded exactly or requantized and its max abs error). MLX folders get it as
``mlxquant.json``; GGUF files as ``mlxquant.*`` metadata keys (JSON strings for the nested parts).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable

PROVENANCE_FILE = "mlxquant.json"
_CHUNK = 1 << 22  # 4 MiB reads


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def source_files(src: str | os.PathLike) -> list[dict[str, Any]]:
    """``[{"name", "bytes", "sha256"}]`` for a source file, or for every regular file of a source
    folder (sorted by name; hidden files skipped)."""
    p = Path(src)
    files = [p] if p.is_file() else sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith("."))
    return [{"name": f.name, "bytes": f.stat().st_size, "sha256": sha256_file(f)} for f in files]


def version() -> str:
    from . import __version__

    return __version__


def build(src: str | os.PathLike, recipe: dict[str, Any], tensors: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The provenance record: ``{"mlxquant_version", "source": {"path", "files"}, "recipe",
    "tensors": [{"name", "type", ...}]}``."""
    return {
        "mlxquant_version": version(),
        "source": {"path": str(src), "files": source_files(src)},
        "recipe": recipe,
        "tensors": list(tensors),
    }


def gguf_keys(record: dict[str, Any]) -> dict[str, Any]:
    """GGUF metadata for a provenance record (strings and string arrays only)."""
    return {
        "mlxquant.version": record["mlxquant_version"],
        "mlxquant.source.files": [f"{f['sha256']}  {f['name']}" for f in record["source"]["files"]],
        "mlxquant.recipe": json.dumps(record["recipe"], sort_keys=True),
        "mlxquant.tensors": json.dumps(record["tensors"], separators=(",", ":")),
    }


def from_gguf_metadata(meta: dict[str, Any]) -> dict[str, Any] | None:
    """Read :func:`gguf_keys` back (None when the file has no mlxquant provenance)."""
    if "mlxquant.version" not in meta:
        return None
    files = []
    for line in meta.get("mlxquant.source.files", []):
        digest, _, name = str(line).partition("  ")
        files.append({"name": name, "sha256": digest})
    return {
        "mlxquant_version": meta["mlxquant.version"],
        "source": {"files": files},
        "recipe": json.loads(meta.get("mlxquant.recipe", "{}")),
        "tensors": json.loads(meta.get("mlxquant.tensors", "[]")),
    }
