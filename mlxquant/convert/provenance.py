"""Provenance: what an output was made from and how.

Every mlxquant output records the SHA-256 of each source file, the mlxquant version, the recipe
(the conversion's options) and the per-tensor types (with, for MLX outputs, whether each tensor
was transcoded exactly or requantized and its max abs error). MLX folders get it as
``mlxquant.json``; GGUF files as ``mlxquant.*`` metadata keys (JSON strings for the nested parts).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import secrets
import threading
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
    return [{"name": f.name, "bytes": f.stat().st_size, "sha256": sha256_file(f)} for f in _files_of(src)]


def _files_of(src: str | os.PathLike) -> list[Path]:
    p = Path(src)
    return [p] if p.is_file() else sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith("."))


class BackgroundHashes:
    """The SHA-256 of a source's files, computed on a thread while a conversion runs.

    Hashing a 0.5 GB source takes ~0.4 s of one core, a third of llama-quantize's whole run on
    SmolLM2; a GGUF's header (which holds the digests) is written before its tensors, so the
    header gets :attr:`files` with a random 64-hex-digit placeholder per file and
    :meth:`patch` swaps in the real digests, same length, before the output is renamed into
    place. An output whose hashes could not be computed is not finished (the error propagates).
    """

    def __init__(self, src: str | os.PathLike):
        self._paths = _files_of(src)
        self.files = [{"name": f.name, "bytes": f.stat().st_size, "sha256": secrets.token_hex(32)}
                      for f in self._paths]
        self._digests: list[str] | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="mlxquant-sha256", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._digests = [sha256_file(f) for f in self._paths]
        except BaseException as e:  # noqa: BLE001 - raised in digests()
            self._error = e

    def digests(self) -> list[str]:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._digests is not None
        return self._digests

    def patch(self, path: str | os.PathLike, end: int) -> None:
        """Replace each placeholder in ``path``'s first ``end`` bytes with its file's digest."""
        real = self.digests()
        with open(path, "r+b") as f:
            head = f.read(end)
            for rec, digest in zip(self.files, real):
                ph = rec["sha256"].encode()
                at = head.find(ph)
                if at < 0:
                    raise RuntimeError(f"{path}: provenance placeholder for {rec['name']} not found")
                while at >= 0:
                    f.seek(at)
                    f.write(digest.encode())
                    at = head.find(ph, at + len(ph))


def version() -> str:
    """The installed mlxquant version (``"unknown"`` when run from an uninstalled tree)."""
    try:
        return importlib.metadata.version("mlxquant")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover
        return "unknown"


def build(src: str | os.PathLike, recipe: dict[str, Any], tensors: Iterable[dict[str, Any]],
          files: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The provenance record: ``{"mlxquant_version", "source": {"path", "files"}, "recipe",
    "tensors": [{"name", "type", ...}]}``. ``files``: the source files' records when already
    known (:class:`BackgroundHashes`), else hashed now."""
    return {
        "mlxquant_version": version(),
        "source": {"path": str(src), "files": source_files(src) if files is None else files},
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
