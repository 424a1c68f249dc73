"""Pieces shared by the routes that write GGUF: tensor order, per-tensor type plan, encoding,
provenance keys.

The plan follows llama-quantize's rules (:mod:`mlxquant.models.presets`); the order is
llama.cpp's (token embedding, then blocks in numeric order, then the rest).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import QuantTypeError
from ..formats.gguf_write import Metadata, TensorSpec
from ..formats.hf import f32_to_bf16
from ..quant import get_type, quantize
from ..quant.api import preload
from . import provenance

log = logging.getLogger(__name__)

QUANTIZATION_VERSION = 2
"""``general.quantization_version`` of every GGUF mlxquant writes (llama.cpp's current one)."""


def block_order(name: str) -> tuple[int, int, str]:
    """Sort key of a GGUF tensor name: token embedding first, then blocks in numeric order,
    then the rest."""
    m = re.match(r"blk\.(\d+)\.", name)
    if m:
        return (1, int(m.group(1)), name)
    return (0 if name.startswith("token_embd") else 2, 0, name)


def preload_outtype(outtype: str) -> None:
    """Start loading the compiled codecs of ``outtype``'s main type on a thread (Numba takes
    ~0.5 s to start in a new process) while the source's header is read. Unknown types are
    ignored here: the plan reports them with the full message."""
    if outtype.upper() in ("F32", "F16", "BF16"):
        return
    from ..models.presets import preset_default_type

    try:
        preload([preset_default_type(outtype)])
    except QuantTypeError:
        pass


def plan_types(outtype: str, shapes: list[tuple[str, tuple[int, ...]]], arch: Any, meta: Any,
               has_imatrix: bool, source_types: dict[str, str] | None = None,
               tensor_types: Sequence[tuple[str, str]] = ()) -> tuple[dict[str, str], int]:
    """Per-tensor GGML types and ``general.file_type`` for ``outtype`` (a llama.cpp preset, or a
    single type for every quantizable tensor), by llama-quantize's rules. ``meta`` is the GGUF
    hyper-parameter metadata (block count, head counts); ``tensor_types`` are per-tensor
    overrides (:mod:`mlxquant.models.tensor_types`). The kernels of the planned types start
    loading on a thread. Row-size fallbacks (rows that are not a multiple of a type's block) are
    logged at INFO by :func:`mlxquant.models.presets.plan_tensor_types`."""
    from ..models import plan_tensor_types, preset_file_type

    def hp(name: str) -> int | None:
        v = meta.get(f"{arch.name}.{name}")
        return int(v) if isinstance(v, (int, np.integer)) else None

    plan = plan_tensor_types(outtype, shapes, arch.name, hp("block_count") or 0,
                             has_imatrix=has_imatrix, source_types=source_types,
                             n_head=hp("attention.head_count"),
                             n_head_kv=hp("attention.head_count_kv"), tensor_types=tensor_types)
    plan = {k: get_type(v).name for k, v in plan.items()}
    preload(sorted(set(plan.values())))  # their kernels load while the header is written
    return plan, preset_file_type(outtype)


def encode(arr: np.ndarray, qtype: str, imatrix: np.ndarray | None, name: str) -> np.ndarray:
    """float32 tensor -> stored bytes (or values whose bytes are the stored form) of ``qtype``.

    Raises:
        QuantTypeError: no codec for ``qtype`` (the message names the tensor).
    """
    t = get_type(qtype)
    x = np.ascontiguousarray(arr, dtype=np.float32)
    if t.name == "F32":
        return x
    if t.name == "F16":
        return x.astype(np.float16)
    if t.name == "BF16":
        return f32_to_bf16(x)
    cols = x.shape[-1]
    try:
        return quantize(x.reshape(-1, cols), t, imatrix=imatrix)
    except QuantTypeError as e:
        raise QuantTypeError(f"tensor {name!r}: {e}") from None


def set_provenance(meta: Metadata, src: Path, recipe: dict[str, Any], specs: list[TensorSpec],
                   source_types: dict[str, str],
                   hashes: provenance.BackgroundHashes | None = None) -> provenance.BackgroundHashes:
    """Add the ``mlxquant.*`` provenance keys (source hashes, version, recipe, per-tensor types).
    The source is hashed on a thread while the conversion runs (``hashes``, or one started here):
    pass the returned object's ``patch`` as ``write_gguf(finish=...)`` to put the digests in."""
    hashes = hashes if hashes is not None else provenance.BackgroundHashes(src)
    tensors = [{"name": s.name, "type": s.type, "source_type": source_types.get(s.name, "generated")}
               for s in specs]
    for k, v in provenance.gguf_keys(provenance.build(src, recipe, tensors, hashes.files)).items():
        meta.set(k, v)
    return hashes


def set_imatrix_keys(meta: Metadata, imatrix: str | Path | None) -> None:
    """The ``quantize.imatrix.*`` keys ``llama-quantize --imatrix FILE`` writes: the file as given
    and the first dataset (each cut to 127 bytes, as its fixed buffers do), the entry count and
    the chunk count when positive (both UINT32). Nothing without an imatrix."""
    if imatrix is None:
        return
    from ..formats.gguf_check import ValueType
    from ..formats.imatrix import imatrix_summary

    info = imatrix_summary(imatrix)

    def cut(text: str) -> str:
        return text.encode("utf-8")[:127].decode("utf-8", "ignore")

    meta.set("quantize.imatrix.file", cut(str(imatrix)))
    if info.datasets:
        meta.set("quantize.imatrix.dataset", cut(info.datasets[0]))
    meta.set("quantize.imatrix.entries_count", info.entries, ValueType.UINT32)
    if info.chunk_count > 0:
        meta.set("quantize.imatrix.chunks_count", info.chunk_count, ValueType.UINT32)


def imatrix_recipe(imatrix: str | Path | None) -> dict[str, str] | None:
    """The provenance entry of an imatrix file: its name and SHA-256 (None without one)."""
    if imatrix is None:
        return None
    return {"name": Path(imatrix).name, "sha256": provenance.sha256_file(imatrix)}
