"""Conversions with an MLX side: HF / GGUF / MLX -> MLX folder, and MLX folder -> GGUF.

- HF (or MLX) -> MLX: ``mx.quantize`` semantics, as ``mlx_lm convert -q`` does it: the model is
  cast to ``dtype`` (default: config.json's ``torch_dtype``, else float16), then every linear /
  embedding weight (2-D ``*.weight``) whose rows divide by the group size is quantized with
  ``(q_bits, q_group_size, q_mode)`` or per module by a mixed recipe (mlx-lm's
  ``mixed_2_6``/``mixed_3_4``/``mixed_3_6``/``mixed_4_6``, re-implemented here with the same rule).
- GGUF -> MLX: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, TQ1_0, TQ2_0, MXFP4, NVFP4 keep their
  integer codes (:mod:`mlxquant.quant.transcode`); other types are requantized to the smallest
  affine bits not coarser than the source, group 32. Scales/biases are stored in the model dtype
  (float16 by default) or, with ``exact_scales``, float32. Each tensor is reported "exact"
  (ggml's values, reproduced by ``scale*q + bias`` in float32), "codes kept" (same codes, scales
  rounded to the dtype) or "requantized", with the max abs error against ggml's values.
- MLX -> GGUF: affine 4/5-bit -> Q4_1/Q5_1 (exact when scales fit float16), symmetric 8-bit ->
  Q8_0, mxfp4 -> MXFP4, nvfp4 -> NVFP4; anything else is requantized to the nearest GGUF type.

Rows of Q/K projections are permuted between the Hugging Face and llama.cpp layouts by moving
whole quantized rows (rows are independent in both formats).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from . import provenance
from .errors import FormatError, QuantInputError, QuantTypeError
from .formats.mlx_folder import FLOAT_DTYPES, MLXModel, MLXTensorSpec, tokenizer_files, write_mlx_folder
from .quant import dequantize, get_type, quantize
from .quant.transcode import (
    EXACT_FROM_GGUF, MODE_GEOMETRY, MLXQuant, REQUANT_BITS, cast_params, check_params,
    dequantize_mlx, exact_gguf_type, from_gguf, merge_groups, nearest_gguf_type, quantize_mlx, to_gguf,
)

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]
QUANT_RECIPES = ("mixed_2_6", "mixed_3_4", "mixed_3_6", "mixed_4_6")


@dataclass
class TensorRecord:
    """One output tensor: its name, type (``"affine4/g32"``, ``"Q4_1"``, ``"F16"``, ...), the
    source type, status (``"exact"``, ``"codes kept"``, ``"requantized"``, ``"float"``) and the
    max abs error against the source values (None when exact or float)."""

    name: str
    type: str
    source_type: str
    status: str
    max_abs_error: float | None = None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        d = {"name": self.name, "type": self.type, "source_type": self.source_type, "status": self.status}
        if self.max_abs_error is not None:
            d["max_abs_error"] = self.max_abs_error
        if self.note:
            d["note"] = self.note
        return d


@dataclass
class MLXOptions:
    """mlx-lm's conversion flags. ``q_bits=None``: 4 for float sources; for GGUF sources, keep
    each tensor's own precision (exact transcoding). ``q_bits=0``: no quantization."""

    q_bits: int | None = None
    q_group_size: int | None = None
    q_mode: str = "affine"
    quant_predicate: str | None = None
    dtype: str | None = None
    exact_scales: bool = False

    def recipe(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


def _qtype_name(q: MLXQuant) -> str:
    return f"{q.mode}{q.bits}/g{q.group_size}" if q.mode == "affine" else q.mode


def _err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0


# -- mlx-lm's mixed recipes -----------------------------------------------------------------------
def mixed_predicate(recipe: str, n_layers: int, group_size: int) -> Callable[[str], dict]:
    """mlx-lm's ``mixed_quant_predicate_builder`` rule for a module path: 6 (or 4) bits for
    ``v_proj`` and ``down_proj`` of the first and last eighth of the layers and every third layer
    between, and for ``lm_head``; the low bits elsewhere."""
    lows = {"mixed_2_6": (2, 6), "mixed_3_4": (3, 4), "mixed_3_6": (3, 6), "mixed_4_6": (4, 6)}
    if recipe not in lows:
        raise ValueError(f"unknown quant predicate {recipe!r} (choose from {', '.join(QUANT_RECIPES)})")
    low, high = lows[recipe]

    def pred(path: str) -> dict:
        parts = path.split(".")
        index = int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else 0
        more = (index < n_layers // 8 or index >= 7 * n_layers // 8
                or (index - n_layers // 8) % 3 == 2)
        bits = high if ((("v_proj" in path or "down_proj" in path) and more) or "lm_head" in path) else low
        return {"group_size": group_size, "bits": bits, "mode": "affine"}

    return pred


# -- sources ----------------------------------------------------------------------------------------
class _Source:
    """What the MLX writer needs from any source: HF names/shapes, config, files, tensors."""

    config: dict
    files: dict[str, Any]
    names: list[str]                     # HF tensor names to write (weights, norms, biases)
    shapes: dict[str, tuple[int, ...]]
    kind: dict[str, str]                 # HF name -> source type ("F32", "Q4_K", "affine4/g64", ...)
    default_dtype: str

    def float(self, name: str) -> np.ndarray:
        raise NotImplementedError

    def exact(self, name: str) -> MLXQuant | None:
        """The tensor as an MLX quantized matrix with its own codes, when the source has one."""
        return None


def _row_permutation(fn: Callable[[np.ndarray], np.ndarray], rows: int, what: str) -> np.ndarray | None:
    """Rows order of a layout transform (None when it leaves rows alone); FormatError when it
    changes values rather than moving rows (then quantized rows cannot be carried over)."""
    probe = np.arange(rows, dtype=np.float32)[:, None]
    moved = np.asarray(fn(probe))
    if moved.shape != probe.shape or not np.array_equal(np.sort(moved[:, 0]), probe[:, 0]):
        raise FormatError(f"{what}: its layout transform changes values; cannot move quantized rows")
    idx = moved[:, 0].astype(np.int64)
    return None if np.array_equal(idx, np.arange(rows)) else idx


class _HFSource(_Source):
    def __init__(self, src: Path):
        from .formats.hf import HFModel
        from .models import get_architecture

        self.hf = HFModel(src)
        self.config = {k: v for k, v in self.hf.config.items() if k not in ("quantization", "quantization_config")}
        self.arch = get_architecture(self.config)
        tied = self.arch.tie_word_embeddings(self.config)
        self.names = [n for n in self.hf.tensor_names
                      if not self.arch.skips_hf_tensor(n) and not (tied and n == "lm_head.weight")]
        self.shapes = {n: tuple(self.hf.info(n).shape) for n in self.names}
        self.kind = {n: self.hf.info(n).dtype for n in self.names}
        self.files = tokenizer_files(src)
        dt = str(self.config.get("torch_dtype") or "")
        self.default_dtype = dt if dt in FLOAT_DTYPES else "float16"

    def float(self, name: str) -> np.ndarray:
        return self.hf.tensor(name)


class _MLXSource(_Source):
    def __init__(self, src: Path):
        from .models import get_architecture

        self.m = MLXModel(src)
        self.config = {k: v for k, v in self.m.config.items() if k not in ("quantization", "quantization_config")}
        self.arch = get_architecture(self.config)
        mods = self.m.quantized_modules
        self.names, self.shapes, self.kind = [], {}, {}
        for n in self.m.tensor_names:
            if n.endswith((".scales", ".biases")) and n.rsplit(".", 1)[0] in mods:
                continue
            mod = n[: -len(".weight")] if n.endswith(".weight") else None
            if mod in mods:
                w = self.m.info(n)
                self.shapes[n] = (*w.shape[:-1], mods[mod]["cols"])
                p = mods[mod]
                self.kind[n] = f"{p['mode']}{p['bits']}/g{p['group_size']}" if p["mode"] == "affine" else p["mode"]
            else:
                self.shapes[n] = tuple(self.m.info(n).shape)
                self.kind[n] = self.m.info(n).dtype
            self.names.append(n)
        self.files = tokenizer_files(src)
        sd = self.m.scales_dtype
        dt = str(self.config.get("torch_dtype") or "")
        self.default_dtype = ({"F16": "float16", "BF16": "bfloat16", "F32": "float32"}.get(sd or "")
                              or (dt if dt in FLOAT_DTYPES else "float16"))

    def _module(self, name: str) -> str | None:
        mod = name[: -len(".weight")] if name.endswith(".weight") else None
        return mod if mod in self.m.quantized_modules else None

    def exact(self, name: str) -> MLXQuant | None:
        mod = self._module(name)
        return self.m.quantized(mod) if mod else None

    def float(self, name: str) -> np.ndarray:
        q = self.exact(name)
        return dequantize_mlx(q) if q is not None else self.m.tensor(name)


class _GGUFSource(_Source):
    def __init__(self, src: Path):
        from .formats.gguf_read import GGUFModel
        from .formats.tokenizer_export import tokenizer_from_gguf
        from .models import get_architecture_by_gguf

        self.g = GGUFModel(src)
        self.arch = get_architecture_by_gguf(self.g.architecture or "")
        rope = self.g.tensor("rope_freqs.weight") if "rope_freqs.weight" in self.g else None
        self.config = self.arch.hparams_from_gguf(self.g.metadata, [t.name for t in self.g.tensors], rope)
        self.files = tokenizer_from_gguf(self.g.metadata)
        gen = {k: self.g.get(f"tokenizer.ggml.{key}") for k, key in
               (("bos_token_id", "bos_token_id"), ("eos_token_id", "eos_token_id"),
                ("pad_token_id", "padding_token_id"))}
        self.files["generation_config.json"] = {**{k: v for k, v in gen.items() if isinstance(v, int)},
                                                "_from_model_config": True}
        self.gname: dict[str, str] = {}
        for t in self.g.tensors:
            h = self.arch.tensor_name_from_gguf(t.name)
            if h is not None:
                self.gname[h] = t.name
        self.names = list(self.gname)
        self.shapes = {h: tuple(self.g.info(gn).shape) for h, gn in self.gname.items()}
        self.kind = {h: self.g.info(gn).qtype.name for h, gn in self.gname.items()}
        self.default_dtype = "float16"

    def float(self, name: str) -> np.ndarray:
        gn = self.gname[name]
        return self.arch.tensor_from_gguf(gn, self.g.tensor(gn), self.config)

    def exact(self, name: str) -> MLXQuant | None:
        gn = self.gname[name]
        info = self.g.info(gn)
        if info.qtype.name not in EXACT_FROM_GGUF or len(info.shape) != 2:
            return None
        raw = self.g.raw(gn)
        perm = _row_permutation(lambda a: self.arch.tensor_from_gguf(gn, a, self.config),
                                raw.shape[0], f"{self.g.path}: tensor {gn!r}")
        if perm is not None:
            raw = raw[perm]
        return from_gguf(raw, info.qtype.name, info.shape[-1])


def open_source(src: Path, fmt: str) -> _Source:
    if fmt == "gguf":
        return _GGUFSource(src)
    from .formats.mlx_folder import is_mlx_folder

    return _MLXSource(src) if is_mlx_folder(src) else _HFSource(src)


# -- to MLX ---------------------------------------------------------------------------------------
def _target(src: _Source, name: str, opts: MLXOptions, pred: Callable[[str], dict] | None) -> dict | None:
    """Requested quantization of an HF tensor (float sources, or explicit flags), None = float."""
    shape = src.shapes[name]
    if len(shape) != 2 or not name.endswith(".weight") or opts.q_bits == 0:
        return None
    is_gguf = isinstance(src, _GGUFSource)
    is_quantized_mlx = isinstance(src, _MLXSource) and src.exact(name) is not None
    explicit = opts.q_bits is not None or opts.q_group_size is not None or pred is not None or opts.q_mode != "affine"
    if (is_gguf or is_quantized_mlx) and not explicit:
        return None  # keep the source's own precision
    if isinstance(src, _MLXSource) and not explicit:
        return None
    if pred is not None:
        p = pred(name[: -len(".weight")])
    else:
        bits_g = MODE_GEOMETRY.get(opts.q_mode, (4, 64))
        p = {"group_size": opts.q_group_size or bits_g[1], "bits": opts.q_bits or bits_g[0], "mode": opts.q_mode}
    if shape[-1] % p["group_size"]:
        log.info("%s: rows of %d are not a multiple of group %d; left unquantized", name, shape[-1], p["group_size"])
        return None
    return p


def _plan_tensor(src: _Source, name: str, opts: MLXOptions, dtype: str,
                 pred: Callable[[str], dict] | None) -> tuple[MLXQuant | None, np.ndarray | None, TensorRecord]:
    """Produce one tensor: (quantized, or None and float values) and its record."""
    kind = src.kind[name]
    target = _target(src, name, opts, pred)
    exact = None
    if target is None or (target is not None and isinstance(src, _GGUFSource)):
        exact = src.exact(name)
    if exact is not None and (target is None or (exact.bits, exact.mode) == (target["bits"], target["mode"])):
        q = merge_groups(exact)
        reference = None
        if not opts.exact_scales:
            q, same = cast_params(q, dtype)
            if not same:
                reference = dequantize_mlx(exact)
        if reference is None:
            return q, None, TensorRecord(name, _qtype_name(q), kind, "exact")
        return q, None, TensorRecord(name, _qtype_name(q), kind, "codes kept",
                                     _err(dequantize_mlx(q), reference), f"scales rounded to {dtype}")
    if target is None and isinstance(src, _GGUFSource) and get_type(kind).is_quantized and len(src.shapes[name]) == 2:
        bits = REQUANT_BITS.get(kind, 8)
        target = {"group_size": 32, "bits": bits, "mode": "affine"}
    x = src.float(name)
    if target is None:
        return None, x, TensorRecord(name, dtype.replace("float", "F").replace("bF", "BF"), kind, "float")
    check_params(target["bits"], target["group_size"], target["mode"], x.shape[-1], name)
    q = quantize_mlx(x, target["bits"], target["group_size"], target["mode"],
                     "float32" if opts.exact_scales else dtype)
    return q, None, TensorRecord(name, _qtype_name(q), kind, "requantized", _err(dequantize_mlx(q), x))


def to_mlx(src_path: Path, fmt: str, out: Path, opts: MLXOptions, force: bool,
           progress: Progress | None) -> tuple[str, list[TensorRecord], dict]:
    """Convert ``src_path`` (format ``fmt``: "hf" or "gguf"; MLX folders are detected) to an MLX
    folder at ``out``. Returns (architecture, per-tensor records, provenance)."""
    if opts.q_mode not in ("affine", "mxfp4", "nvfp4", "mxfp8"):
        raise QuantInputError(f"unknown --q-mode {opts.q_mode!r} (affine, mxfp4, nvfp4, mxfp8)")
    if opts.quant_predicate is not None and opts.q_mode != "affine":
        raise ValueError("quant predicates only support 'affine' quantization (as in mlx-lm)")
    if opts.dtype is not None and opts.dtype not in FLOAT_DTYPES:
        raise QuantTypeError(f"--dtype must be one of {', '.join(FLOAT_DTYPES)}, not {opts.dtype!r}")
    src = open_source(src_path, fmt)
    dtype = opts.dtype or src.default_dtype
    pred = None
    if opts.quant_predicate is not None:
        n_layers = src.arch.n_layers(src.config)
        pred = mixed_predicate(opts.quant_predicate, n_layers, opts.q_group_size or 64)

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

    record = provenance.build(src_path, {"to": "mlx", **opts.recipe(), "dtype": dtype},
                              [r.as_dict() for r in records])
    files = dict(src.files)
    files[provenance.PROVENANCE_FILE] = record
    write_mlx_folder(out, config, specs, data, files=files, force=force)
    return src.arch.name, records, record


# -- MLX -> GGUF ----------------------------------------------------------------------------------
def mlx_to_gguf(src_path: Path, out: Path, force: bool,
                progress: Progress | None) -> tuple[str, list[TensorRecord], list[tuple[str, tuple[int, ...], str]]]:
    """Transcode an MLX folder to GGUF (see the module docstring). Returns (architecture,
    records, [(gguf name, shape, type)])."""
    from .convert import QUANTIZATION_VERSION, _block_index
    from .formats.gguf_write import Metadata, TensorSpec, write_gguf
    from .formats.inspect import FILE_TYPES
    from .formats.tokenizer import tokenizer_to_gguf
    from .models import get_architecture

    m = MLXModel(src_path)
    cfg = {k: v for k, v in m.config.items() if k not in ("quantization", "quantization_config")}
    arch = get_architecture(cfg)
    tok_meta = tokenizer_to_gguf(src_path, cfg, arch.name)
    mods = m.quantized_modules
    jobs: dict[str, tuple[str, str]] = {}   # gguf name -> (hf name, kind)
    for n in m.tensor_names:
        if n.endswith((".scales", ".biases")) and n.rsplit(".", 1)[0] in mods:
            continue
        g = arch.tensor_name_to_gguf(n, cfg)
        if g is None:
            continue
        jobs[g] = (n, "quant" if n.endswith(".weight") and n[:-7] in mods else "float")
    extra = {k: np.asarray(v, dtype=np.float32) for k, v in arch.extra_tensors(cfg).items()}

    records: dict[str, TensorRecord] = {}
    encoded: dict[str, np.ndarray] = {}
    specs: list[TensorSpec] = []
    order = sorted([*jobs, *extra], key=_block_index)
    for i, g in enumerate(order):
        if g in extra:
            arr, qtype, rec = extra[g], "F32", TensorRecord(g, "F32", "generated", "float")
        else:
            hf, kind = jobs[g]
            if kind == "quant":
                q = m.quantized(hf[:-7])
                src_kind = _qtype_name(q)
                qtype, why = exact_gguf_type(q)
                if qtype is not None:
                    arr = to_gguf(q, qtype)
                    rec = TensorRecord(g, qtype, src_kind, "exact")
                else:
                    x = dequantize_mlx(q)
                    qtype = nearest_gguf_type(q)
                    arr = quantize(x, qtype)
                    rec = TensorRecord(g, qtype, src_kind, "requantized",
                                       _err(dequantize(arr, qtype, x.shape), x), why)
                perm = _row_permutation(lambda a: arch.tensor_to_gguf(hf, a, cfg), arr.shape[0],
                                        f"{src_path}: tensor {hf!r}")
                if perm is not None:
                    arr = arr[perm]
            else:
                from .formats.hf import f32_to_bf16

                info = m.info(hf)
                x = arch.tensor_to_gguf(hf, m.tensor(hf), cfg)
                if x.ndim == 1 or info.dtype not in ("F16", "BF16"):
                    qtype, arr = "F32", x.astype(np.float32)
                elif info.dtype == "F16":
                    qtype, arr = "F16", x.astype(np.float16)
                else:
                    qtype, arr = "BF16", f32_to_bf16(x)  # exact: the values are bfloat16
                rec = TensorRecord(g, qtype, info.dtype, "float")
        encoded[g] = np.ascontiguousarray(arr)
        if g in extra:
            shape = tuple(extra[g].shape)
        else:
            hf, kind = jobs[g]
            shape = (m.info(hf).shape[0], mods[hf[:-7]]["cols"]) if kind == "quant" else tuple(m.info(hf).shape)
        specs.append(TensorSpec(g, qtype, tuple(int(d) for d in shape)))
        records[g] = rec
        if progress is not None:
            progress(i + 1, len(order), g)

    counts = Counter(s.type for s in specs if get_type(s.type).is_quantized)
    main = counts.most_common(1)[0][0] if counts else "F16"
    ftypes = {v: k for k, v in FILE_TYPES.items()}
    meta = Metadata()
    meta.set("general.architecture", arch.name)
    meta.set("general.type", "model")
    meta.set("general.name", str(cfg.get("_name_or_path") or src_path.name).rstrip("/").split("/")[-1])
    for k, v in arch.hparams_to_gguf(cfg).items():
        meta.set(k, v)
    meta.set("general.file_type", int(ftypes.get(main, 1)))
    for k, v in tok_meta.items():
        meta.set(k, v)
    meta.set("general.quantization_version", QUANTIZATION_VERSION)
    rec_list = [records[g].as_dict() for g in order]
    record = provenance.build(src_path, {"to": "gguf", "from": "mlx", "outtype": "AUTO"}, rec_list)
    for k, v in provenance.gguf_keys(record).items():
        meta.set(k, v)
    write_gguf(out, meta, specs, lambda s: encoded.pop(s.name), force=force)
    return arch.name, [records[g] for g in order], [(s.name, s.shape, s.type) for s in specs]


# -- entry point from :func:`mlxquant.convert.convert` --------------------------------------------
def _mlx_to_hf(src_path: Path, out: Path, outtype: str, force: bool,
               progress: Progress | None) -> tuple[str, list[TensorRecord]]:
    """Dequantize an MLX folder to a float Hugging Face folder (F32, F16 or BF16)."""
    from .formats.hf import HFTensorSpec, write_hf_folder

    dt = outtype.upper()
    if dt not in ("F32", "F16", "BF16"):
        raise QuantTypeError(f"--to hf writes F32, F16 or BF16, not {outtype!r}")
    src = _MLXSource(src_path)
    cfg = dict(src.config)
    cfg["torch_dtype"] = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}[dt]
    specs = [HFTensorSpec(n, src.shapes[n], dt) for n in src.names]
    records = [TensorRecord(n, dt, src.kind[n], "float") for n in src.names]
    done = [0]

    def tick(spec: HFTensorSpec) -> None:
        done[0] += 1
        if progress is not None:
            progress(done[0], len(specs), spec.name)

    files = dict(src.files)
    files[provenance.PROVENANCE_FILE] = provenance.build(src_path, {"to": "hf", "outtype": dt},
                                                         [r.as_dict() for r in records])
    write_hf_folder(out, cfg, specs, lambda s: src.float(s.name), files=files, force=force, progress=tick)
    return src.arch.name, records


def _folder_stats(out: Path) -> tuple[int, int]:
    """(parameters, tensor bytes) of a written MLX/HF folder."""
    m = MLXModel(out)
    mods = m.quantized_modules
    params = tensor_bytes = 0
    for n in m.tensor_names:
        t = m.info(n)
        tensor_bytes += t.end - t.start
        base = n.rsplit(".", 1)[0]
        if base in mods and n.endswith((".scales", ".biases")):
            continue
        if base in mods:
            params += int(np.prod(t.shape[:-1], dtype=np.int64)) * mods[base]["cols"]
        else:
            params += int(np.prod(t.shape, dtype=np.int64))
    return params, tensor_bytes


def convert_with_mlx(src: Path, out: Path, fmt: str, to: str, outtype: str, opts: MLXOptions,
                     force: bool, progress: Progress | None, started: float):
    """:func:`mlxquant.convert.convert` for ``to="mlx"`` and for MLX folder sources."""
    import time

    from .convert import ConversionReport

    if to == "mlx":
        arch, records, _ = to_mlx(src, fmt, out, opts, force, progress)
        label = "MLX"
    elif to == "gguf":
        if outtype.upper() not in ("F16", "AUTO"):
            raise ValueError(f"{src}: an MLX folder is transcoded tensor by tensor (exact where "
                             f"possible); --outtype {outtype} is not supported for MLX sources")
        arch, records, _ = mlx_to_gguf(src, out, force, progress)
        label = "AUTO"
    else:
        arch, records = _mlx_to_hf(src, out, outtype, force, progress)
        label = outtype.upper()
    if out.is_file():
        from .formats.gguf_read import GGUFModel

        with GGUFModel(out) as g:
            params = sum(t.n_elements for t in g.tensors)
            tensor_bytes = sum(t.nbytes for t in g.tensors)
        nbytes = out.stat().st_size
    else:
        params, tensor_bytes = _folder_stats(out)
        nbytes = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    types = dict(Counter(r.type for r in records))
    report = ConversionReport(str(src), str(out), to, label, arch, len(records), params, nbytes,
                              round(8 * tensor_bytes / params, 4) if params else 0.0,
                              round(time.perf_counter() - started, 3), types, None,
                              [r.as_dict() for r in records])
    log.info("converted %s -> %s (%s, %d tensors, %.2f bpw) in %.1f s", src, out, label,
             report.tensors, report.bits_per_weight, report.seconds)
    return report
