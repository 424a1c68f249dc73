"""GGUF -> GGUF: metadata copied, tensors re-typed by the preset's rules (a tensor that keeps
its type is copied byte for byte)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import FormatError
from ..formats.gguf_read import GGUFModel
from ..formats.gguf_write import Metadata, TensorSpec, gguf_file_size, write_gguf
from ..formats.imatrix import importance_for, read_imatrix
from .budget import Types, resolve_types, write_recipe
from .options import GGUFOptions
from .provenance import BackgroundHashes
from .plan import (QUANTIZATION_VERSION, encode, imatrix_recipe, plan_types,
                   preload_outtype, set_imatrix_keys, set_provenance)
from .report import Progress, RouteResult, TensorRecord, float_status, n_elements, tensor_counter

log = logging.getLogger(__name__)


def gguf_to_gguf(src: Path, out: Path, opts: GGUFOptions, force: bool,
                 progress: Progress | None) -> RouteResult:
    """Re-type the GGUF file ``src`` into ``out``. Re-quantizing already quantized tensors is
    allowed, with a warning (it compounds their error). Nothing is left at ``out`` on failure."""
    from ..models import get_architecture_by_gguf

    preload_outtype(opts.outtype)
    g = GGUFModel(src)
    arch = get_architecture_by_gguf(g.architecture or "")
    imatrix = read_imatrix(opts.imatrix) if opts.imatrix is not None else None
    shapes = [(t.name, t.shape) for t in g.tensors]
    if not shapes:
        raise FormatError(f"{src}: no tensors to convert")
    source_types = {t.name: t.type for t in g.tensors}
    hashes = BackgroundHashes(src)

    def layout(types: Types) -> tuple[Metadata, list[TensorSpec]]:
        """The file's metadata and tensors for ``types``."""
        plan, file_type = plan_types(types.outtype, shapes, arch, g.metadata, imatrix is not None,
                                     source_types, types.overrides)
        specs = [TensorSpec(name, plan.get(name, g.info(name).qtype.name), s).check() for name, s in shapes]
        meta = Metadata()
        for k, v in g.metadata.items():
            if k not in ("general.file_type", "general.quantization_version") and not k.startswith("mlxquant."):
                meta.set(k, v, g.value_types[k])  # the source's own provenance is replaced below
        meta.set("general.file_type", int(file_type))
        meta.set("general.quantization_version", QUANTIZATION_VERSION)
        set_imatrix_keys(meta, opts.imatrix)
        recipe = {"to": "gguf", "from": "gguf", "outtype": types.outtype.upper(),
                  "imatrix": imatrix_recipe(opts.imatrix), **types.recipe}
        set_provenance(meta, src, recipe, specs, source_types, hashes)
        return meta, specs

    types = resolve_types(src, out, opts, force, size_of=lambda t: gguf_file_size(*layout(t)))
    meta, specs = layout(types)
    requant = sorted({f"{g.info(s.name).qtype.name}->{s.type}" for s in specs
                      if g.info(s.name).qtype.is_quantized and s.qtype.is_quantized
                      and g.info(s.name).qtype.name != s.type})
    if requant:
        log.warning("%s: re-quantizing already quantized tensors (%s) compounds their error "
                    "(llama-quantize needs --allow-requantize for this)", src, ", ".join(requant))

    def produce(spec: TensorSpec) -> np.ndarray:
        if g.info(spec.name).qtype.name == spec.type:
            return g.read(spec.name)
        w = None
        if imatrix is not None and spec.qtype.is_quantized:
            w = importance_for(imatrix, spec.name, spec.shape[-1])
        return encode(g.tensor(spec.name), spec.type, w, spec.name)

    write_gguf(out, meta, specs, produce, force=force, progress=tensor_counter(progress, len(specs)),
               workers=None, finish=hashes.patch)
    write_recipe(out, types, force, src)
    records = [TensorRecord(s.name, s.type, source_types[s.name],
                            float_status(source_types[s.name], s.type, s.qtype.is_quantized))
               for s in specs]
    return RouteResult(arch.name, records, sum(n_elements(s.shape) for s in specs),
                       sum(s.nbytes for s in specs))
