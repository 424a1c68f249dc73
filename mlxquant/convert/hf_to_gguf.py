"""Hugging Face folder -> GGUF.

Tensors are mapped to GGUF names and layout (:mod:`mlxquant.models`), their types chosen by
llama.cpp's rules for the preset (:func:`.plan.plan_types`), quantized from float32 as
``llama-quantize`` does from an F32 GGUF, and written one at a time with the full metadata
(hyper-parameters, tokenizer, provenance).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import FormatError
from ..formats.gguf_write import Metadata, TensorSpec, gguf_file_size, write_gguf
from ..formats.hf import HFModel
from ..formats.imatrix import importance_for, read_imatrix
from ..formats.tokenizer import tokenizer_to_gguf
from .budget import Types, resolve_types, write_recipe
from .options import GGUFOptions
from .provenance import BackgroundHashes
from .plan import (QUANTIZATION_VERSION, block_order, encode, imatrix_recipe, plan_types,
                   preload_outtype, set_imatrix_keys, set_provenance)
from .report import Progress, RouteResult, TensorRecord, float_status, n_elements, tensor_counter

log = logging.getLogger(__name__)


def hf_to_gguf(src: Path, out: Path, opts: GGUFOptions, force: bool,
               progress: Progress | None) -> RouteResult:
    """Convert the Hugging Face folder ``src`` to the GGUF file ``out`` (see the module
    docstring). Nothing is left at ``out`` on failure."""
    from ..models import get_architecture

    preload_outtype(opts.outtype)
    hf = HFModel(src)
    cfg = hf.config
    arch = get_architecture(cfg)
    tok_meta = tokenizer_to_gguf(src, cfg, arch.name)  # fails early on a missing tokenizer
    imatrix = read_imatrix(opts.imatrix) if opts.imatrix is not None else None
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
    shapes = [(g, shape_of[g]) for g in sorted(shape_of, key=block_order)]
    if not shapes:
        raise FormatError(f"{src}: no tensors to convert")
    hp = arch.hparams_to_gguf(cfg)
    source_types = {g: hf.info(h).dtype for g, h in names.items()}
    hashes = BackgroundHashes(src)

    def layout(types: Types) -> tuple[Metadata, list[TensorSpec]]:
        """The file's metadata and tensors for ``types``."""
        plan, file_type = plan_types(types.outtype, shapes, arch, hp, imatrix is not None,
                                     tensor_types=types.overrides)
        specs = [TensorSpec(g, plan[g], s).check() for g, s in shapes]
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
        set_imatrix_keys(meta, opts.imatrix)
        recipe = {"to": "gguf", "from": "hf", "outtype": types.outtype.upper(),
                  "imatrix": imatrix_recipe(opts.imatrix), **types.recipe}
        set_provenance(meta, src, recipe, specs, source_types, hashes)
        return meta, specs

    types = resolve_types(src, out, opts, force, size_of=lambda t: gguf_file_size(*layout(t)))
    meta, specs = layout(types)

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
        return encode(arr, spec.type, w, spec.name)

    write_gguf(out, meta, specs, produce, force=force, progress=tensor_counter(progress, len(specs)),
               workers=None, finish=hashes.patch)
    write_recipe(out, types, force, src)
    records = [TensorRecord(s.name, s.type, source_types.get(s.name, "generated"),
                            float_status(source_types.get(s.name, ""), s.type, s.qtype.is_quantized))
               for s in specs]
    return RouteResult(arch.name, records, sum(n_elements(s.shape) for s in specs),
                       sum(s.nbytes for s in specs))
