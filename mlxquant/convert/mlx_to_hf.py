"""MLX folder -> Hugging Face folder: every quantized module dequantized (``mx.dequantize``
semantics), written as F32, F16 or BF16 with the MLX folder's config and tokenizer files."""

from __future__ import annotations

from pathlib import Path

from ..errors import FormatError
from ..formats.hf import HFTensorSpec, write_hf_folder
from . import provenance
from .gguf_to_hf import TORCH_DTYPES
from .options import HFOptions, hf_dtype
from .report import Progress, RouteResult, TensorRecord, n_elements, tensor_counter
from .sources import MLXSource


def mlx_to_hf(src_path: Path, out: Path, opts: HFOptions, force: bool,
              progress: Progress | None) -> RouteResult:
    """Dequantize the MLX folder ``src_path`` to a float Hugging Face folder ``out``. Nothing is
    left at ``out`` on failure."""
    dt = hf_dtype(opts)
    src = MLXSource(src_path)
    cfg = dict(src.config)
    cfg["torch_dtype"] = TORCH_DTYPES[dt]
    if not src.names:
        raise FormatError(f"{src_path}: no tensors to convert")
    specs = [HFTensorSpec(n, src.shapes[n], dt) for n in src.names]
    records = [TensorRecord(n, dt, src.kind[n], "float") for n in src.names]
    files = dict(src.files)
    files[provenance.PROVENANCE_FILE] = provenance.build(src_path, {"to": "hf", "outtype": dt},
                                                         [r.as_dict() for r in records])
    write_hf_folder(out, cfg, specs, lambda s: src.float(s.name), files=files, force=force,
                    progress=tensor_counter(progress, len(specs)))
    return RouteResult(src.arch.name, records, sum(n_elements(s.shape) for s in specs),
                       sum(s.nbytes for s in specs))
