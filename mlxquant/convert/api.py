"""The entry point: :func:`convert` picks the route for (source format, target) and reports.

=============  ==========  ==========================================
source         target      route
=============  ==========  ==========================================
HF folder      gguf        :func:`.hf_to_gguf.hf_to_gguf`
GGUF file      gguf        :func:`.gguf_to_gguf.gguf_to_gguf`
GGUF file      hf          :func:`.gguf_to_hf.gguf_to_hf`
any            mlx         :func:`.to_mlx.to_mlx`
MLX folder     gguf        :func:`.mlx_to_gguf.mlx_to_gguf`
MLX folder     hf          :func:`.mlx_to_hf.mlx_to_hf`
any            onnx        :func:`mlxquant.onnx_export.export_onnx`
=============  ==========  ==========================================
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

from ..errors import FormatError, OptionError
from ..formats.atomic import check_output
from ..formats.inspect import detect_format
from ..formats.mlx_folder import is_mlx_folder
from .gguf_to_gguf import gguf_to_gguf
from .gguf_to_hf import gguf_to_hf
from .hf_to_gguf import hf_to_gguf
from .mlx_to_gguf import mlx_to_gguf
from .mlx_to_hf import mlx_to_hf
from .options import GGUFOptions, HFOptions, MLXOptions, Options, check_target, options_from_keywords
from .report import ConversionReport, Progress, RouteResult, build_report
from .to_mlx import to_mlx

log = logging.getLogger(__name__)

ROUTES: dict[tuple[str, str], Callable[..., RouteResult]] = {
    ("hf", "gguf"): hf_to_gguf,
    ("gguf", "gguf"): gguf_to_gguf,
    ("gguf", "hf"): gguf_to_hf,
    ("mlx", "gguf"): mlx_to_gguf,
    ("mlx", "hf"): mlx_to_hf,
}
"""(source format, target) -> route; every source goes to MLX through :func:`.to_mlx.to_mlx`."""

def source_format(src: Path) -> str:
    """``"gguf"``, ``"hf"`` or ``"mlx"`` (an HF-style folder with a quantization block)."""
    fmt = detect_format(src)
    return "mlx" if fmt == "hf" and is_mlx_folder(src) else fmt


def convert(
    src: str | os.PathLike,
    out: str | os.PathLike,
    options: Options | None = None,
    *,
    to: str | None = None,
    force: bool = False,
    progress: Progress | None = None,
    **keywords: Any,
) -> ConversionReport:
    """Convert a model between Hugging Face folders, GGUF files and MLX folders.

    Either pass an options object, whose type chooses the target (:class:`GGUFOptions`,
    :class:`HFOptions`, :class:`MLXOptions`), or ``to=`` and the options as keywords
    (``convert(src, out, to="mlx", q_bits=4)``); a keyword that belongs to another target
    raises :class:`~mlxquant.errors.OptionError`.

    Args:
        src: a GGUF file, a Hugging Face model folder (config.json + safetensors + tokenizer) or
            an MLX folder.
        out: the GGUF file or the folder to create.
        options: the target's options; default ``GGUFOptions()`` (F16 GGUF).
        to: ``"gguf"``, ``"hf"``, ``"mlx"`` or ``"onnx"`` (default: the options' target, else
            ``"gguf"``). ``"onnx"`` takes keywords only: ``outtype`` (int4, int8, f16, f32),
            ``block_size``, ``symmetric``, ``float_zero_points`` (see
            :func:`mlxquant.onnx_export.export_onnx`).
        force: overwrite an existing ``out``.
        progress: ``progress(done, total, tensor_name)`` after each tensor.
        **keywords: the keyword form of the options (``outtype``, ``imatrix``; ``q_bits``,
            ``q_group_size``, ``q_mode``, ``quant_predicate``, ``dtype``, ``exact_scales``).

    Returns:
        A :class:`ConversionReport`.

    Raises:
        OptionError, OutputExistsError, FormatError, TokenizerError, QuantTypeError,
        QuantInputError, UnsupportedArchitectureError, OSError. Nothing is left at ``out`` on
        failure.
    """
    started = time.perf_counter()
    src, out = Path(src), Path(out)
    if options is None and str(to or "").lower() == "onnx":
        from ..onnx_export import export_onnx

        allowed = ("outtype", "block_size", "symmetric", "float_zero_points")
        unknown = sorted(set(keywords) - set(allowed))
        if unknown:
            raise OptionError(f"{', '.join(unknown)}: not an option of to='onnx' "
                              f"(its options: {', '.join(allowed)})")
        return export_onnx(src, out, keywords.get("outtype") or "int4", keywords.get("block_size"),
                           force, bool(keywords.get("symmetric")), bool(keywords.get("float_zero_points")))
    if options is not None:
        if keywords:
            raise OptionError(f"give either an options object or keywords, not both "
                              f"({', '.join(sorted(keywords))})")
        if not isinstance(options, (GGUFOptions, HFOptions, MLXOptions)):
            raise OptionError(f"options must be GGUFOptions, HFOptions or MLXOptions, not "
                              f"{type(options).__name__}")
        if to is not None and check_target(to) != options.target:
            raise OptionError(f"to={to!r} but the options are {type(options).__name__} "
                              f"(to={options.target!r})")
        target = options.target
    else:
        target = check_target(to or "gguf")
        options = options_from_keywords(target, keywords)
    imatrix = getattr(options, "imatrix", None)
    extra = [Path(p) for p in (imatrix, getattr(options, "calib_text", None)) if p is not None]
    check_output(out, force, sources=[src] + extra)
    fmt = source_format(src)
    if target == "mlx":
        result = to_mlx(src, out, options, force, progress, fmt)
    elif (fmt, target) in ROUTES:
        result = ROUTES[(fmt, target)](src, out, options, force, progress)
    else:
        raise FormatError(f"{src}: HF -> HF conversion is not supported (use to='gguf' or 'mlx')")
    if target == "mlx":
        label = "MLX"
    elif fmt == "mlx" and target == "gguf":
        label = "AUTO"
    elif getattr(options, "target_bpw", None) is not None:
        label = f"{float(options.target_bpw):g} BPW (allocated)"
    elif getattr(options, "target_size", None) is not None:
        label = f"{int(options.target_size):,} bytes (allocated)"
    else:
        label = options.outtype.upper()
    report = build_report(src, out, target, label, result, started,
                          str(imatrix) if imatrix is not None else None)
    log.info("converted %s -> %s (%s, %d tensors, %.2f bpw) in %.1f s", src, out, report.outtype,
             report.tensors, report.bits_per_weight, report.seconds)
    return report

