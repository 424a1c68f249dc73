"""The conversion pipeline: Hugging Face / GGUF models -> GGUF (any type or llama.cpp preset) or
a Hugging Face folder, one tensor at a time.

``formats`` reads and writes the containers, ``models`` knows each architecture (names,
hyper-parameters, Q/K permutation, norm offsets) and llama.cpp's per-tensor type rules, ``quant``
encodes the blocks. Peak memory follows the largest tensor: each tensor is read, transformed,
quantized and written before the next one is touched.

- HF -> GGUF: tensors mapped to GGUF names and layout, types chosen by llama.cpp's rules for the
  preset, quantized from float32 (as ``llama-quantize`` does from an F32 GGUF), full metadata.
- GGUF -> GGUF: metadata copied, tensors re-typed (same type: bytes copied unchanged).
- GGUF -> HF: tensors dequantized, GGUF transforms undone, config.json + tokenizer files.

Every output records its provenance (:mod:`mlxquant.provenance`): ``mlxquant.*`` GGUF metadata
keys, or ``mlxquant.json`` in an HF folder.
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import provenance
from .errors import FormatError, QuantTypeError
from .formats.atomic import check_output
from .formats.gguf_read import GGUFModel
from .formats.gguf_write import Metadata, TensorSpec, write_gguf
from .formats.hf import HFModel, HFTensorSpec, f32_to_bf16, write_hf_folder
from .formats.imatrix import importance_for, read_imatrix
from .formats.inspect import detect_format
from .formats.tokenizer import tokenizer_to_gguf
from .formats.tokenizer_export import tokenizer_from_gguf
from .quant import get_type, quantize
from .quant.api import preload

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]
"""``progress(done, total, tensor_name)``, called after each tensor is written."""

QUANTIZATION_VERSION = 2
HF_OUTTYPES = ("F32", "F16", "BF16")


@dataclass
class ConversionReport:
    """What :func:`convert` wrote."""

    src: str
    out: str
    to: str
    outtype: str
    architecture: str
    tensors: int
    parameters: int
    bytes: int  # on disk (the GGUF file, or every file of the HF folder)
    bits_per_weight: float  # 8 x tensor bytes / parameters, as llama.cpp reports BPW
    seconds: float
    types: dict[str, int] = field(default_factory=dict)
    imatrix: str | None = None
    # MLX conversions: one dict per tensor (name, type, source_type, status, max_abs_error)
    details: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _block_index(name: str) -> tuple[int, int, str]:
    """Sort key: token embedding first, then blocks in numeric order, then the rest."""
    m = re.match(r"blk\.(\d+)\.", name)
    if m:
        return (1, int(m.group(1)), name)
    return (0 if name.startswith("token_embd") else 2, 0, name)


def _encode(arr: np.ndarray, qtype: str, imatrix: np.ndarray | None, name: str) -> np.ndarray:
    """float32 tensor -> stored bytes (or values whose bytes are the stored form) of ``qtype``."""
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


def _plan(outtype: str, shapes: list[tuple[str, tuple[int, ...]]], arch: Any, meta: Any,
          has_imatrix: bool, source_types: dict[str, str] | None = None) -> tuple[dict[str, str], int]:
    """Per-tensor GGML types and ``general.file_type`` for ``outtype`` (a llama.cpp preset, or a
    single type for every quantizable tensor), by llama-quantize's rules (:mod:`mlxquant.models.presets`).
    ``meta`` is the GGUF hyper-parameter metadata (block count, head counts)."""
    from .models import plan_tensor_types, preset_file_type

    def hp(name: str) -> int | None:
        v = meta.get(f"{arch.name}.{name}")
        return int(v) if isinstance(v, (int, np.integer)) else None

    plan = plan_tensor_types(outtype, shapes, arch.name, hp("block_count") or 0,
                             has_imatrix=has_imatrix, source_types=source_types,
                             n_head=hp("attention.head_count"),
                             n_head_kv=hp("attention.head_count_kv"))
    return {k: get_type(v).name for k, v in plan.items()}, preset_file_type(outtype)


def _report(src: Path, out: Path, to: str, outtype: str, arch: str,
            specs: list[tuple[str, tuple[int, ...], str]], started: float,
            imatrix: str | None) -> ConversionReport:
    params = sum(int(np.prod(s, dtype=np.int64)) for _, s, _ in specs)
    if out.is_file():
        nbytes = out.stat().st_size
        tensor_bytes = sum(TensorSpec(n, t, s).nbytes for n, s, t in specs)
    else:
        nbytes = sum(p.stat().st_size for p in out.iterdir())
        tensor_bytes = sum(HFTensorSpec(n, s, t).nbytes for n, s, t in specs)
    types: dict[str, int] = {}
    for _, _, t in specs:
        types[t] = types.get(t, 0) + 1
    return ConversionReport(str(src), str(out), to, outtype, arch, len(specs), params, nbytes,
                            round(8 * tensor_bytes / params, 4) if params else 0.0,
                            round(time.perf_counter() - started, 3), types, imatrix)


def _set_provenance(meta: Metadata, src: Path, recipe: dict[str, Any],
                    specs: list[TensorSpec], source_types: dict[str, str]) -> provenance.BackgroundHashes:
    """Add the ``mlxquant.*`` provenance keys (source hashes, version, recipe, per-tensor types).
    The source is hashed on a thread while the conversion runs: pass the returned object's
    ``patch`` as ``write_gguf(finish=...)`` to put the digests in."""
    hashes = provenance.BackgroundHashes(src)
    tensors = [{"name": s.name, "type": s.type, "source_type": source_types.get(s.name, "generated")}
               for s in specs]
    for k, v in provenance.gguf_keys(provenance.build(src, recipe, tensors, hashes.files)).items():
        meta.set(k, v)
    return hashes


def _counter(progress: Progress | None, total: int) -> Callable[[Any], None] | None:
    if progress is None:
        return None
    done = [0]

    def tick(spec: Any) -> None:
        done[0] += 1
        progress(done[0], total, spec.name)

    return tick


def _hf_to_gguf(src: Path, out: Path, outtype: str, imatrix: dict | None, force: bool,
                progress: Progress | None, recipe: dict[str, Any]) -> tuple[str, list[tuple[str, tuple[int, ...], str]]]:
    from .models import get_architecture

    hf = HFModel(src)
    cfg = hf.config
    arch = get_architecture(cfg)
    tok_meta = tokenizer_to_gguf(src, cfg, arch.name)  # fails early on a missing tokenizer
    names: dict[str, str] = {}
    for hf_name in hf.tensor_names:
        g = arch.tensor_name_to_gguf(hf_name, cfg)
        if g is None:
            log.debug("skipping %s (no GGUF counterpart)", hf_name)
            continue
        if g in names:
            raise FormatError(f"{src}: tensors {names[g]!r} and {hf_name!r} both map to {g!r}")
        names[g] = hf_name
    extra = {k: np.asarray(v, dtype=np.float32) for k, v in arch.extra_tensors(cfg).items()}
    shape_of = {g: tuple(hf.info(h).shape) for g, h in names.items()}
    shape_of.update({k: tuple(v.shape) for k, v in extra.items()})
    n_vocab = len(tok_meta.get("tokenizer.ggml.tokens") or [])
    trim = getattr(arch, "trims_vocab_to_tokenizer", False) and n_vocab > 0
    if trim and "token_embd.weight" in shape_of and shape_of["token_embd.weight"][0] > n_vocab:
        shape_of["token_embd.weight"] = (n_vocab, *shape_of["token_embd.weight"][1:])
    order = sorted(shape_of, key=_block_index)
    shapes = [(g, shape_of[g]) for g in order]
    hp = arch.hparams_to_gguf(cfg)
    plan, file_type = _plan(outtype, shapes, arch, hp, imatrix is not None)
    specs = [TensorSpec(g, plan[g], s).check() for g, s in shapes]
    preload(sorted(set(plan.values())))  # their kernels load while the header is written

    meta = Metadata()
    meta.set("general.architecture", arch.name)
    meta.set("general.type", "model")
    meta.set("general.name", str(cfg.get("_name_or_path") or src.name).rstrip("/").split("/")[-1])
    for k, v in hp.items():
        meta.set(k, v)
    meta.set("general.file_type", int(file_type))
    for k, v in tok_meta.items():
        meta.set(k, v)
    meta.set("general.quantization_version", QUANTIZATION_VERSION)
    hashes = _set_provenance(meta, src, recipe, specs, {g: hf.info(h).dtype for g, h in names.items()})

    def produce(spec: TensorSpec) -> np.ndarray:
        if spec.name in extra:
            arr = extra[spec.name]
        else:
            arr = arch.tensor_to_gguf(names[spec.name], hf.tensor(names[spec.name]), cfg)
            if spec.name == "token_embd.weight" and arr.shape[0] > spec.shape[0]:
                arr = arr[: spec.shape[0]]  # llama.cpp keeps only the tokenizer's rows
        if tuple(arr.shape) != tuple(spec.shape):
            raise FormatError(f"{src}: tensor {names.get(spec.name, spec.name)!r} became shape "
                              f"{arr.shape}, expected {spec.shape}")
        w = None
        if imatrix is not None and spec.qtype.is_quantized:
            w = importance_for(imatrix, spec.name, spec.shape[-1])
        return _encode(arr, spec.type, w, spec.name)

    write_gguf(out, meta, specs, produce, force=force, progress=_counter(progress, len(specs)),
               workers=None, finish=hashes.patch)
    return arch.name, [(s.name, s.shape, s.type) for s in specs]


def _gguf_to_gguf(src: Path, out: Path, outtype: str, imatrix: dict | None, force: bool,
                  progress: Progress | None, recipe: dict[str, Any]) -> tuple[str, list[tuple[str, tuple[int, ...], str]]]:
    from .models import get_architecture_by_gguf

    g = GGUFModel(src)
    arch = get_architecture_by_gguf(g.architecture or "")
    shapes = [(t.name, t.shape) for t in g.tensors]
    plan, file_type = _plan(outtype, shapes, arch, g.metadata, imatrix is not None,
                            {t.name: t.type for t in g.tensors})
    specs = [TensorSpec(name, plan.get(name, g.info(name).qtype.name), s).check() for name, s in shapes]
    preload(sorted(set(plan.values())))  # their kernels load while the header is written

    requant = sorted({f"{g.info(n).qtype.name}->{t}" for n, t in plan.items()
                      if g.info(n).qtype.is_quantized and get_type(t).is_quantized
                      and g.info(n).qtype.name != t})
    if requant:
        log.warning("%s: re-quantizing already quantized tensors (%s) compounds their error "
                    "(llama-quantize needs --allow-requantize for this)", src, ", ".join(requant))
    meta = Metadata()
    for k, v in g.metadata.items():
        if k not in ("general.file_type", "general.quantization_version") and not k.startswith("mlxquant."):
            meta.set(k, v, g.value_types[k])  # the source's own provenance is replaced below
    meta.set("general.file_type", int(file_type))
    meta.set("general.quantization_version", QUANTIZATION_VERSION)
    hashes = _set_provenance(meta, src, recipe, specs, {t.name: t.type for t in g.tensors})

    def produce(spec: TensorSpec) -> np.ndarray:
        if g.info(spec.name).qtype.name == spec.type:
            return g.read(spec.name)
        w = None
        if imatrix is not None and spec.qtype.is_quantized:
            w = importance_for(imatrix, spec.name, spec.shape[-1])
        return _encode(g.tensor(spec.name), spec.type, w, spec.name)

    write_gguf(out, meta, specs, produce, force=force, progress=_counter(progress, len(specs)),
               workers=None, finish=hashes.patch)
    return arch.name, [(s.name, s.shape, s.type) for s in specs]


def _gguf_to_hf(src: Path, out: Path, outtype: str, force: bool,
                progress: Progress | None, recipe: dict[str, Any]) -> tuple[str, list[tuple[str, tuple[int, ...], str]]]:
    from .models import get_architecture_by_gguf

    dtype = outtype.upper()
    if dtype not in HF_OUTTYPES:
        raise QuantTypeError(f"--to hf writes {', '.join(HF_OUTTYPES)}, not {outtype!r}")
    g = GGUFModel(src)
    arch = get_architecture_by_gguf(g.architecture or "")
    rope_freqs = g.tensor("rope_freqs.weight") if "rope_freqs.weight" in g else None
    cfg = arch.hparams_from_gguf(g.metadata, [t.name for t in g.tensors], rope_freqs)
    files: dict[str, Any] = tokenizer_from_gguf(g.metadata)
    cfg["torch_dtype"] = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}[dtype]
    gen = {k: g.get(f"tokenizer.ggml.{key}") for k, key in
           (("bos_token_id", "bos_token_id"), ("eos_token_id", "eos_token_id"),
            ("pad_token_id", "padding_token_id"))}
    gen = {k: v for k, v in gen.items() if isinstance(v, int)}
    for k, v in gen.items():
        cfg.setdefault(k, v)
    files["generation_config.json"] = {**gen, "_from_model_config": True}

    names: dict[str, str] = {}
    for t in g.tensors:
        h = arch.tensor_name_from_gguf(t.name)
        if h is not None:
            names[h] = t.name
    specs = [HFTensorSpec(h, g.info(gname).shape, dtype) for h, gname in names.items()]

    def produce(spec: HFTensorSpec) -> np.ndarray:
        gname = names[spec.name]
        return arch.tensor_from_gguf(gname, g.tensor(gname), cfg)

    files[provenance.PROVENANCE_FILE] = provenance.build(
        src, recipe, [{"name": s.name, "type": dtype, "source_type": g.info(names[s.name]).qtype.name}
                      for s in specs])
    write_hf_folder(out, cfg, specs, produce, files=files, force=force,
                    progress=_counter(progress, len(specs)))
    return arch.name, [(s.name, s.shape, dtype) for s in specs]


def convert(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    to: str = "gguf",
    outtype: str = "F16",
    imatrix: str | os.PathLike | None = None,
    force: bool = False,
    progress: Progress | None = None,
    q_bits: int | None = None,
    q_group_size: int | None = None,
    q_mode: str = "affine",
    quant_predicate: str | None = None,
    dtype: str | None = None,
    exact_scales: bool = False,
) -> ConversionReport:
    """Convert a model.

    ``to="mlx"`` (and any MLX folder source) goes through :mod:`mlxquant.convert_mlx`, with
    mlx-lm's options ``q_bits``, ``q_group_size``, ``q_mode``, ``quant_predicate``, ``dtype``
    and mlxquant's ``exact_scales`` (float32 scales: GGUF values reproduced bit for bit).

    Args:
        src: a GGUF file or a Hugging Face model folder (config.json + safetensors + tokenizer).
        out: the GGUF file (``to="gguf"``) or folder (``to="hf"``) to create.
        to: ``"gguf"`` or ``"hf"``.
        outtype: for GGUF, a llama.cpp preset (``"Q4_K_M"``, ``"Q8_0"``, ``"F16"``, ...) whose
            per-tensor type rules are applied as llama-quantize does, or a single GGML type
            (``"Q4_K"``: every quantizable tensor that type, with llama.cpp's row-size fallbacks,
            like ``llama-quantize --pure``); for HF, ``"F32"``, ``"F16"`` or ``"BF16"``.
            Default ``"F16"``.
        imatrix: llama.cpp importance-matrix file (GGUF or legacy .dat), GGUF output only.
        force: overwrite an existing ``out``.
        progress: ``progress(done, total, tensor_name)`` after each tensor.

    Returns:
        A :class:`ConversionReport`.

    Raises:
        OutputExistsError, FormatError, TokenizerError, QuantTypeError, QuantInputError,
        UnsupportedArchitectureError (from :mod:`mlxquant.models`), OSError. Nothing is left at
        ``out`` on failure.
    """
    started = time.perf_counter()
    src, out, to = Path(src), Path(out), to.lower()
    if to not in ("gguf", "hf", "mlx"):
        raise ValueError(f"to must be 'gguf', 'hf' or 'mlx', not {to!r}")
    check_output(out, force)
    fmt = detect_format(src)
    from .formats.mlx_folder import is_mlx_folder

    if to == "mlx" or (fmt == "hf" and is_mlx_folder(src)):
        from .convert_mlx import MLXOptions, convert_with_mlx

        if imatrix is not None:
            raise ValueError("an imatrix applies to GGUF quantization of float models only")
        opts = MLXOptions(q_bits, q_group_size, q_mode, quant_predicate, dtype, exact_scales)
        return convert_with_mlx(src, out, fmt, to, outtype, opts, force, progress, started)
    if to == "hf" and imatrix is not None:
        raise ValueError("an imatrix applies to GGUF quantization only (to='gguf')")
    im = read_imatrix(imatrix) if imatrix is not None else None
    recipe: dict[str, Any] = {"to": to, "from": fmt, "outtype": outtype.upper()}
    if to == "gguf":
        recipe["imatrix"] = None if imatrix is None else {
            "name": Path(imatrix).name, "sha256": provenance.sha256_file(imatrix)}
    if to == "gguf" and outtype.upper() not in ("F32", "F16", "BF16"):
        # the codecs (Numba, ~0.5 s to start in a new process) load on a thread while the
        # source's header is read; the other kernels of the plan follow once it is known
        from .models.presets import preset_default_type

        try:
            preload([preset_default_type(outtype)])
        except QuantTypeError:
            pass  # an unknown outtype is reported below, with the full message
    if to == "gguf" and fmt == "hf":
        arch, specs = _hf_to_gguf(src, out, outtype, im, force, progress, recipe)
    elif to == "gguf":
        arch, specs = _gguf_to_gguf(src, out, outtype, im, force, progress, recipe)
    elif fmt == "gguf":
        arch, specs = _gguf_to_hf(src, out, outtype, force, progress, recipe)
    else:
        raise FormatError(f"{src}: HF -> HF conversion is not supported (use to='gguf')")
    report = _report(src, out, to, outtype.upper(), arch, specs, started,
                     str(imatrix) if imatrix is not None else None)
    log.info("converted %s -> %s (%s, %d tensors, %.2f bpw) in %.1f s", src, out, report.outtype,
             report.tensors, report.bits_per_weight, report.seconds)
    return report
