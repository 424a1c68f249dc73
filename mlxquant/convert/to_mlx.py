"""HF / GGUF / MLX -> MLX folder.

- HF (or MLX) -> MLX: ``mx.quantize`` semantics, as ``mlx_lm convert -q`` does it: the model is
  cast to ``dtype`` (default: config.json's ``torch_dtype``, else float16), then every linear /
  embedding weight (2-D ``*.weight``) whose rows divide by the group size is quantized with
  ``(q_bits, q_group_size, q_mode)`` or per module by a mixed recipe (mlx-lm's
  ``mixed_2_6``/``mixed_3_4``/``mixed_3_6``/``mixed_4_6``, re-implemented here with the same rule),
  or, with ``target_bpw``, per module by the budget allocation of :mod:`mlxquant.alloc.mlx_budget`
  (written the way mlx-lm writes a mixed recipe; the allocation goes into the provenance).
- GGUF -> MLX: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, TQ1_0, TQ2_0, MXFP4, NVFP4 keep their
  integer codes (:mod:`mlxquant.quant.transcode`); other types are requantized to the smallest
  affine bits not coarser than the source, group 32. Scales/biases are stored in the model dtype
  (float16 by default) or, with ``exact_scales``, float32. Each tensor is reported "exact"
  (ggml's values, reproduced by ``scale*q + bias`` in float32), "codes kept" (same codes, scales
  rounded to the dtype) or "requantized", with the max abs error against ggml's values.

Rows of Q/K projections are permuted from the llama.cpp to the Hugging Face layout by moving
whole quantized rows (see :mod:`.sources`).
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import FormatError, OptionError, QuantInputError, QuantTypeError
from ..formats.mlx_folder import FLOAT_DTYPES, MLXTensorSpec, weight_files_size, write_mlx_folder
from ..quant import get_type
from ..quant.transcode import (
    MODE_GEOMETRY, MLXQuant, REQUANT_BITS, cast_params, check_params, dequantize_mlx, merge_groups,
    quantize_mlx,
)
from . import provenance
from .options import MLX_MODES, MLXOptions
from .report import Progress, RouteResult, TensorRecord, max_abs_error, n_elements, qtype_name
from .sources import GGUFSource, MLXSource, Source, open_source

log = logging.getLogger(__name__)

QUANT_RECIPES = ("mixed_2_6", "mixed_3_4", "mixed_3_6", "mixed_4_6")


# -- mlx-lm's mixed recipes -----------------------------------------------------------------------
def mixed_predicate(recipe: str, n_layers: int, group_size: int) -> Callable[[str], dict]:
    """mlx-lm's ``mixed_quant_predicate_builder`` rule for a module path: 6 (or 4) bits for
    ``v_proj`` and ``down_proj`` of the first and last eighth of the layers and every third layer
    between, and for ``lm_head``; the low bits elsewhere."""
    lows = {"mixed_2_6": (2, 6), "mixed_3_4": (3, 4), "mixed_3_6": (3, 6), "mixed_4_6": (4, 6)}
    if recipe not in lows:
        raise OptionError(f"unknown quant predicate {recipe!r} (choose from {', '.join(QUANT_RECIPES)})")
    low, high = lows[recipe]

    def pred(path: str) -> dict:
        parts = path.split(".")
        index = int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else 0
        more = (index < n_layers // 8 or index >= 7 * n_layers // 8
                or (index - n_layers // 8) % 3 == 2)
        bits = high if ((("v_proj" in path or "down_proj" in path) and more) or "lm_head" in path) else low
        return {"group_size": group_size, "bits": bits, "mode": "affine"}

    return pred


def _target(src: Source, name: str, opts: MLXOptions, pred: Callable[[str], dict | None] | None) -> dict | None:
    """Requested quantization of an HF tensor (float sources, or explicit flags), None = float."""
    shape = src.shapes[name]
    if len(shape) != 2 or not name.endswith(".weight") or opts.q_bits == 0:
        return None
    is_gguf = isinstance(src, GGUFSource)
    is_quantized_mlx = isinstance(src, MLXSource) and src.exact(name) is not None
    explicit = opts.explicit
    if (is_gguf or is_quantized_mlx) and not explicit:
        return None  # keep the source's own precision
    if isinstance(src, MLXSource) and not explicit:
        return None
    if pred is not None:
        p = pred(name[: -len(".weight")])
        if p is None:
            return None
    else:
        bits_g = MODE_GEOMETRY.get(opts.q_mode, (4, 64))
        p = {"group_size": opts.q_group_size or bits_g[1], "bits": opts.q_bits or bits_g[0], "mode": opts.q_mode}
    if shape[-1] % p["group_size"]:
        log.info("%s: rows of %d are not a multiple of group %d; left unquantized", name, shape[-1], p["group_size"])
        return None
    return p


def _files_overhead_bound(src: Source, total: int) -> int:
    """An upper bound on what the weight files of a folder of at most ``total`` bytes hold besides
    tensor data, whatever the modules' formats: every 2-D ``*.weight`` counted as quantized (a
    ``.scales`` and a ``.biases`` entry beside it), every entry with the longest dtype, its float
    shape (a packed or per-group shape has no more digits) and offsets of ``total``; as many
    shards as could be cut, each with its length field, metadata and padding; an index naming the
    longest shard file. Budgeting ``total`` less this keeps the files within ``total`` (checked
    exactly before writing, :func:`~mlxquant.formats.mlx_folder.weight_files_size`) and wastes a
    few tens of bytes per tensor."""
    import json

    from ..formats.mlx_folder import DEFAULT_SHARD_BYTES

    entries: list[tuple[str, list[int]]] = []
    for name in src.names:
        shape = [int(d) for d in src.shapes[name]]
        entries.append((name, shape))
        if len(shape) == 2 and name.endswith(".weight"):
            entries += [(name[: -len(".weight")] + ".scales", shape), (name[: -len(".weight")] + ".biases", shape)]
    per_entry = sum(len(json.dumps(n)) + 2 + len(json.dumps(
        {"dtype": "BF16", "shape": shape, "data_offsets": [total, total]}, separators=(",", ":")))
        for n, shape in entries)
    shards = min(len(entries), total // DEFAULT_SHARD_BYTES + 2)
    header = shards * (8 + len(json.dumps({"__metadata__": {"format": "mlx"}}, separators=(",", ":"))) + 7)
    longest = f"model-{shards:05d}-of-{shards:05d}.safetensors"
    index = json.dumps({"metadata": {"total_size": total}, "weight_map": {n: longest for n, _ in entries}},
                       indent=2)
    return header + per_entry + len(index.encode("utf-8"))


def _plan_tensor(src: Source, name: str, opts: MLXOptions, dtype: str,
                 pred: Callable[[str], dict | None] | None) -> tuple[MLXQuant | None, np.ndarray | None, TensorRecord]:
    """Produce one tensor: (quantized, or None and float values) and its record."""
    kind = src.kind[name]
    target = _target(src, name, opts, pred)
    exact = None
    if target is None or (target is not None and isinstance(src, GGUFSource)):
        exact = src.exact(name)
    if exact is not None and (target is None or (exact.bits, exact.mode) == (target["bits"], target["mode"])):
        q = merge_groups(exact)
        reference = None
        if not opts.exact_scales:
            q, same = cast_params(q, dtype)
            if not same:
                reference = dequantize_mlx(exact)
        if reference is None:
            return q, None, TensorRecord(name, qtype_name(q), kind, "exact")
        return q, None, TensorRecord(name, qtype_name(q), kind, "codes kept",
                                     max_abs_error(dequantize_mlx(q), reference), f"scales rounded to {dtype}")
    if target is None and isinstance(src, GGUFSource) and get_type(kind).is_quantized and len(src.shapes[name]) == 2:
        bits = REQUANT_BITS.get(kind, 8)
        target = {"group_size": 32, "bits": bits, "mode": "affine"}
    x = src.float(name)
    if target is None:
        return None, x, TensorRecord(name, dtype.replace("float", "F").replace("bF", "BF"), kind, "float")
    check_params(target["bits"], target["group_size"], target["mode"], x.shape[-1], name)
    q = quantize_mlx(x, target["bits"], target["group_size"], target["mode"],
                     "float32" if opts.exact_scales else dtype)
    return q, None, TensorRecord(name, qtype_name(q), kind, "requantized", max_abs_error(dequantize_mlx(q), x))


def to_mlx(src_path: Path, out: Path, opts: MLXOptions, force: bool,
           progress: Progress | None, fmt: str) -> RouteResult:
    """Convert ``src_path`` (format ``fmt``: ``"hf"``, ``"mlx"`` or ``"gguf"``) to an MLX folder
    at ``out``. Every tensor is produced and checked before anything is written; nothing is
    left at ``out`` on failure.

    Raises:
        OptionError, QuantInputError, QuantTypeError: options mlx-lm would refuse.
        FormatError: a source with no tensors, or one that cannot be read.
        MLXAllocationError, OSError: a ``target_bpw`` the source cannot meet, unreadable
            calibration text or imatrix.
    """
    if opts.q_mode not in MLX_MODES:
        raise QuantInputError(f"unknown --q-mode {opts.q_mode!r} ({', '.join(MLX_MODES)})")
    if opts.quant_predicate is not None and opts.q_mode != "affine":
        raise OptionError("quant predicates only support 'affine' quantization (as in mlx-lm)")
    if opts.dtype is not None and opts.dtype not in FLOAT_DTYPES:
        raise QuantTypeError(f"--dtype must be one of {', '.join(FLOAT_DTYPES)}, not {opts.dtype!r}")
    src = open_source(src_path, fmt)
    if not src.names:
        raise FormatError(f"{src_path}: no tensors to convert")
    dtype = opts.dtype or src.default_dtype
    pred: Callable[[str], dict | None] | None = None
    allocation = None
    if opts.quant_predicate is not None:
        n_layers = src.arch.n_layers(src.config)
        pred = mixed_predicate(opts.quant_predicate, n_layers, opts.q_group_size or 64)
    elif opts.target_bpw is not None or opts.target_size is not None:
        from ..alloc.mlx_budget import MLXAllocationError, allocate_mlx

        tensor_bytes = None
        if opts.target_size is not None:
            tensor_bytes = opts.target_size - _files_overhead_bound(src, opts.target_size)
            if tensor_bytes <= 0:
                raise MLXAllocationError(f"{src_path}: {opts.target_size:,} bytes do not even hold "
                                         "the weight files' headers")
        allocation = allocate_mlx(src, src_path, None if opts.target_bpw is None else float(opts.target_bpw),
                                  dtype, "float32" if opts.exact_scales else dtype, opts.imatrix,
                                  opts.calib_text, total_bytes=tensor_bytes, progress=progress)
        pred = allocation.predicate

    # Every tensor is produced once, up front for its shapes; kept until written. Memory: the
    # quantized model (a quarter of float32) -- the float values are dropped as soon as encoded.
    produced: dict[str, tuple[MLXQuant | None, np.ndarray | None]] = {}
    records: list[TensorRecord] = []
    specs: list[MLXTensorSpec] = []
    qcfg: dict[str, Any] = {}
    scale_dt = "F32" if opts.exact_scales else FLOAT_DTYPES[dtype]
    for i, name in enumerate(src.names):
        q, x, rec = _plan_tensor(src, name, opts, dtype, pred)
        records.append(rec)
        if q is not None:
            mod = name[: -len(".weight")]
            qcfg[mod] = q.params
            specs.append(MLXTensorSpec(name, tuple(q.weight.shape), "U32"))
            sdt = scale_dt if q.mode == "affine" else "U8"
            specs.append(MLXTensorSpec(f"{mod}.scales", tuple(q.scales.shape), sdt))
            if q.biases is not None:
                specs.append(MLXTensorSpec(f"{mod}.biases", tuple(q.biases.shape), sdt))
        else:
            assert x is not None
            if name.endswith(".weight") and x.ndim == 2:
                qcfg[name[: -len(".weight")]] = False
            specs.append(MLXTensorSpec(name, tuple(x.shape), FLOAT_DTYPES[dtype] if np.issubdtype(x.dtype, np.floating) else "I32"))
        produced[name] = (q, x)
        if progress is not None:
            progress(i + 1, len(src.names), name)

    params = [tuple(sorted(p.items())) for p in qcfg.values() if p]
    config = dict(src.config)
    if params:
        default = dict(Counter(params).most_common(1)[0][0])
        block: dict[str, Any] = dict(default)
        for mod, p in qcfg.items():
            if p != default:
                block[mod] = p
        config["quantization"] = block
    config["torch_dtype"] = dtype

    def data(spec: MLXTensorSpec) -> np.ndarray:
        base = spec.name
        for suffix in (".scales", ".biases"):
            if base.endswith(suffix):
                q = produced[base[: -len(suffix)] + ".weight"][0]
                assert q is not None
                return q.scales if suffix == ".scales" else q.biases
        q, x = produced[base]
        if q is not None:
            return q.weight
        return x.astype(np.int32) if spec.dtype == "I32" else x

    if opts.target_size is not None:
        size = weight_files_size(specs)
        if size > opts.target_size:  # the bound above makes this impossible; never write over
            raise RuntimeError(f"{src_path}: the weight files would take {size:,} bytes, over "
                               f"--target-size {opts.target_size:,}")
    recipe = {"to": "mlx", **opts.recipe(), "dtype": dtype}
    if allocation is not None:
        recipe["allocation"] = allocation.recipe()
        if opts.target_size is not None:
            recipe["allocation"]["target_size"] = opts.target_size
    record = provenance.build(src_path, recipe, [r.as_dict() for r in records])
    files = dict(src.files)
    files[provenance.PROVENANCE_FILE] = record
    write_mlx_folder(out, config, specs, data, files=files, force=force)
    return RouteResult(src.arch.name, records, sum(n_elements(src.shapes[n]) for n in src.names),
                       sum(s.nbytes for s in specs))
