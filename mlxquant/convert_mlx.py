"""Conversions with an MLX side: HF / GGUF / MLX -> MLX folder, MLX folder -> GGUF or HF.

The work is split by what it holds: :mod:`mlxquant.to_mlx` (options, mlx-lm's mixed recipes and
the MLX writer, including which GGUF types keep their codes), :mod:`mlxquant.mlx_to_gguf` (MLX
folder -> GGUF), :mod:`mlxquant.mlx_sources` (HF / MLX / GGUF tensor sources, with the Q/K row
permutations) and :mod:`mlxquant.mlx_records` (per-tensor records). This module keeps the MLX ->
HF dequantization and the entry point from :func:`mlxquant.convert.convert`, and re-exports the
public names under their old home.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np

from . import provenance
from .errors import QuantTypeError
from .formats.mlx_folder import MLXModel
from .mlx_records import Progress, TensorRecord
from .mlx_sources import _MLXSource, open_source
from .mlx_to_gguf import mlx_to_gguf
from .to_mlx import QUANT_RECIPES, MLXOptions, mixed_predicate, to_mlx

__all__ = [  # with names re-exported from the modules they moved to
    "Progress", "TensorRecord", "open_source", "QUANT_RECIPES", "MLXOptions", "mixed_predicate",
    "to_mlx", "mlx_to_gguf", "convert_with_mlx",
]

log = logging.getLogger(__name__)


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
