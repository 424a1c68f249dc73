"""GGUF -> Hugging Face folder: tensors dequantized, GGUF layout transforms undone (Q/K
permutations, norm offsets), config.json, generation_config.json and tokenizer files rebuilt
from the metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FormatError
from ..formats.gguf_read import GGUFModel
from ..formats.hf import HFTensorSpec, write_hf_folder
from ..formats.tokenizer_export import tokenizer_from_gguf
from . import provenance
from .options import HFOptions, hf_dtype
from .report import Progress, RouteResult, TensorRecord, n_elements, tensor_counter

TORCH_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}


def gguf_to_hf(src: Path, out: Path, opts: HFOptions, force: bool,
               progress: Progress | None) -> RouteResult:
    """Write the GGUF file ``src`` as a float Hugging Face folder ``out`` (F32, F16 or BF16).
    Nothing is left at ``out`` on failure."""
    from ..models import get_architecture_by_gguf

    dtype = hf_dtype(opts)
    g = GGUFModel(src)
    arch = get_architecture_by_gguf(g.architecture or "")
    rope_freqs = g.tensor("rope_freqs.weight") if "rope_freqs.weight" in g else None
    cfg = arch.hparams_from_gguf(g.metadata, [t.name for t in g.tensors], rope_freqs)
    files: dict[str, Any] = tokenizer_from_gguf(g.metadata)
    cfg["torch_dtype"] = TORCH_DTYPES[dtype]
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
    if not specs:
        raise FormatError(f"{src}: no tensors to convert")
    records = [TensorRecord(s.name, dtype, g.info(names[s.name]).qtype.name, "float") for s in specs]

    def produce(spec: HFTensorSpec) -> np.ndarray:
        gname = names[spec.name]
        return arch.tensor_from_gguf(gname, g.tensor(gname), cfg)

    files[provenance.PROVENANCE_FILE] = provenance.build(
        src, {"to": "hf", "from": "gguf", "outtype": dtype}, [r.as_dict() for r in records])
    write_hf_folder(out, cfg, specs, produce, files=files, force=force,
                    progress=tensor_counter(progress, len(specs)))
    return RouteResult(arch.name, records, sum(n_elements(s.shape) for s in specs),
                       sum(s.nbytes for s in specs))
