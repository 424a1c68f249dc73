"""``allocate_mlx``: the MLX format of every quantizable module of a float model for a size budget
(``convert --to mlx --target-bpw``), the MLX twin of :func:`mlxquant.alloc.api.allocate`.

1. Variables: every 2-D ``*.weight`` the MLX writer would quantize (linear layers, the token
   embedding, ``lm_head`` unless tied -- the modules mlx-lm's ``nn.quantize`` reaches); norms and
   other 1-D tensors stay float and count as fixed bytes.
2. Candidates per module (:data:`FORMATS` whose group divides its rows): affine 2, 3, 4, 5, 6, 8
   bits x group 32/64/128, mxfp4 (g32), nvfp4 (g16), mxfp8 (g32), computed by ``mx.quantize``
   (:func:`mlxquant.quant.transcode.quantize_mlx`, the codec the writer uses, so an estimate is
   made on the very values the folder will hold).
3. Costs as in :mod:`.costs`: the importance-weighted squared error of evenly sampled rows
   (:func:`~.costs.sample_rows`; MLX quantizes group by group inside a row, so a sampled row
   quantizes as in the file) x a gain measured on calibration text by :class:`~.costs.GainMeter`
   (KL of the float model vs the model with only that module quantized to a probe format); with
   every block measured, the chosen format and its Pareto neighbours are measured directly and
   the solve is repeated (:func:`.solve.refine`). Without calibration text the gains are 1.
4. :func:`.solve.allocate` picks the least total cost within the budget, never over it.

Bits per weight are mlx-lm's (``mlx_lm.utils.compute_bits_per_weight``, the figure ``mlx_lm
convert`` prints): the bytes of every tensor of the folder (packed codes, scales, biases, float
tensors) x 8 over the model's parameters (a quantized module counts its unquantized weights).
Affine scales and biases take the folder's scale dtype (the model dtype, float32 with
``exact_scales``); the fp modes store one uint8 scale per group. The budget is
``floor(target_bpw x parameters / 8)`` bytes for the whole folder.
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import MlxquantError
from ..quant.transcode import dequantize_mlx, quantize_mlx
from .costs import GAIN_LAYERS, GainMeter, gain_layers, interpolate_gains, sample_rows, tensor_layer
from .solve import Option, allocate as solve, refine as refine_costs

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]
Format = tuple[str, int, int]  # (mode, bits, group_size)
FORMATS: tuple[Format, ...] = (
    *(("affine", b, g) for b in (2, 3, 4, 5, 6, 8) for g in (32, 64, 128)),
    ("mxfp4", 4, 32), ("nvfp4", 4, 16), ("mxfp8", 8, 32))
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
FLOAT_KINDS = ("F32", "F16", "BF16", "F64")  # source tensor types that are not quantized


class MLXAllocationError(MlxquantError, ValueError):
    """A target the model cannot meet, or a source the MLX allocator cannot use."""


def format_name(f: Format) -> str:
    """``"affine4/g64"``, ``"mxfp4"``: the spelling of a format in reports and provenance."""
    return f"affine{f[1]}/g{f[2]}" if f[0] == "affine" else f[0]


def module_bytes(shape: tuple[int, ...], f: Format, scale_bytes: int) -> int:
    """Bytes of a ``(rows, cols)`` weight in format ``f``: packed codes, plus per group a scale
    and a bias of ``scale_bytes`` each (affine) or one uint8 scale (mxfp4, nvfp4, mxfp8)."""
    rows, cols = int(shape[0]), int(shape[1])
    per_group = 2 * scale_bytes if f[0] == "affine" else 1
    return rows * cols * f[1] // 8 + rows * (cols // f[2]) * per_group


def params_of(f: Format) -> dict[str, Any]:
    """The config.json ``quantization`` entry of format ``f`` (as mlx-lm writes it)."""
    return {"group_size": f[2], "bits": f[1], "mode": f[0]}


def _values(w: np.ndarray, f: Format, dtype: str) -> np.ndarray:
    """``w`` (float32 ``(rows, cols)``) quantized to ``f`` as the writer does it, dequantized."""
    return dequantize_mlx(quantize_mlx(w, f[1], f[2], f[0], dtype))


def _distortion(w: np.ndarray, f: Format, dtype: str, importance: np.ndarray | None) -> float:
    err = _values(w, f, dtype).astype(np.float64) - w
    col = np.einsum("ij,ij->j", err, err)
    return float(col @ importance) if importance is not None else float(col.sum())


def _probe(target_bpw: float, cols: int) -> Format:
    """The format a module's gain is measured with: affine near the target, group 64 (or 32;
    nvfp4 for rows of 16k)."""
    if cols % 32:
        return ("nvfp4", 4, 16)
    bits = 3 if target_bpw < 4.5 else 4 if target_bpw < 5.5 else 5 if target_bpw < 6.5 else 6
    return ("affine", bits, 64 if cols % 64 == 0 else 32)


@dataclass
class MLXAllocation:
    """Per-module MLX formats for a budget, and why.

    Attributes:
        plan: module path (``model.layers.0.mlp.down_proj``) -> config ``{group_size, bits, mode}``.
        target_bpw: the budget; ``bpw``: what the plan gives (mlx-lm's bits per weight).
        total_bytes, parameters: the folder's tensor bytes and the model's parameters.
        predicted_kl: the summed costs (KL units when gains were measured).
        measured: gains were measured on calibration text.
        details: module -> {format, cost, gain, candidates: {format: [bytes, cost]}}.
        seconds: wall time of the allocation.
    """

    plan: dict[str, dict[str, Any]]
    target_bpw: float
    bpw: float
    total_bytes: int
    parameters: int
    predicted_kl: float
    measured: bool
    details: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0

    def predicate(self, path: str) -> dict[str, Any] | None:
        """The quantization of module ``path`` (None: left float), for the MLX writer."""
        p = self.plan.get(path)
        return dict(p) if p is not None else None

    def recipe(self) -> dict[str, Any]:
        """The provenance entry: the budget, the result, every module's format, cost and gain."""
        return {"target_bpw": self.target_bpw, "bpw": round(self.bpw, 4), "bits_per_weight":
                "mlx-lm's: folder tensor bytes x 8 / parameters", "predicted_kl": self.predicted_kl,
                "measured_gains": self.measured, "seconds": self.seconds,
                "modules": {m: [d["format"], d["cost"], d["gain"]] for m, d in self.details.items()}}


def allocate_mlx(src: Any, src_path: str | os.PathLike, target_bpw: float | None, dtype: str,
                 scale_dtype: str | None = None, imatrix: str | os.PathLike | None = None,
                 calib_text: str | os.PathLike | None = None, *, total_bytes: int | None = None,
                 ctx: int = 128, chunks: int = 4,
                 refine: bool | None = None, layers: int = GAIN_LAYERS,
                 progress: Progress | None = None) -> MLXAllocation:
    """Choose every quantizable module's MLX format for ``target_bpw`` (module docstring).

    Args:
        src: the opened conversion source (:func:`mlxquant.convert.sources.open_source`) at
            ``src_path``: an HF folder or a float GGUF.
        target_bpw: mlx-lm's bits per weight of the whole folder, a ceiling.
        total_bytes: instead of ``target_bpw``, a ceiling on the bytes of all the folder's
            tensors (``--target-size``, less the files' headers).
        dtype: the folder's float dtype (of the tensors left float).
        scale_dtype: dtype of affine scales/biases, and the one weights are cast to before
            quantizing, as the writer does (default ``dtype``; "float32" with exact scales).
        imatrix: an importance matrix (llama.cpp's formats) weighting the errors.
        calib_text: text to measure the gains on (``chunks`` windows of ``ctx`` tokens).
        refine: measure the chosen formats' KL and solve again (default: when every block's
            gains are measured, i.e. models of at most ``layers`` blocks).
        progress: ``progress(done, total, label)`` while errors and gains are computed.

    Raises:
        MLXAllocationError (a quantized source, a module no format fits, a budget under the
        smallest formats), FormatError, OSError.
    """
    from ..formats.imatrix import importance_for, read_imatrix

    t0 = time.perf_counter()
    variables = [n for n in src.names if len(src.shapes[n]) == 2 and n.endswith(".weight")]
    quantized = [n for n in variables if str(src.kind[n]).upper() not in FLOAT_KINDS]
    if quantized:
        raise MLXAllocationError(f"{src_path}: tensor {quantized[0]!r} is already quantized "
                                 f"({src.kind[quantized[0]]}); allocate from the float model "
                                 "(HF folder or F32/F16/BF16 GGUF)")
    qdtype = scale_dtype or dtype  # what the writer casts a weight to before mx.quantize
    scale_bytes = DTYPE_BYTES[qdtype]
    im = read_imatrix(imatrix) if imatrix is not None else None
    n_params = sum(int(np.prod(s, dtype=np.int64)) for s in src.shapes.values())
    fixed = sum(int(np.prod(src.shapes[n], dtype=np.int64)) * DTYPE_BYTES[dtype]
                for n in src.names if n not in variables)
    if (target_bpw is None) == (total_bytes is None):
        raise ValueError("give either target_bpw or total_bytes")
    if total_bytes is not None:
        ceiling = int(total_bytes)
        target_bpw = 8 * ceiling / n_params  # the probe formats follow it
    else:
        ceiling = int(target_bpw * n_params / 8)  # bytes of the whole folder's tensors
    gguf = {n: src.arch.tensor_name_to_gguf(n, src.config) or n for n in variables}
    cands: dict[str, list[Format]] = {}
    for n in variables:
        cands[n] = [f for f in FORMATS if src.shapes[n][1] % f[2] == 0]
        if not cands[n]:
            raise MLXAllocationError(f"{src_path}: tensor {n!r} (rows of {src.shapes[n][1]}) fits no MLX format")
    floor = fixed + sum(min(module_bytes(src.shapes[n], f, scale_bytes) for f in cands[n]) for n in variables)
    if floor > ceiling:
        what = (f"target {target_bpw:g} bits per weight" if total_bytes is None
                else f"a budget of {ceiling:,} tensor bytes")
        raise MLXAllocationError(f"{src_path}: {what} is below the smallest MLX formats "
                                 f"({floor * 8 / n_params:.3f} bpw, {floor:,} bytes)")

    tensors: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    dist: dict[str, dict[Format, float]] = {}
    probes: dict[str, Format] = {}
    for k, n in enumerate(variables, 1):
        w = np.ascontiguousarray(src.float(n), dtype=np.float32)
        cols = w.shape[1]
        imp = importance_for(im, gguf[n], cols) if im is not None else None
        rows, scale = sample_rows(w)
        probes[n] = _probe(target_bpw, cols)
        dist[n] = {f: _distortion(rows, f, qdtype, imp) * scale for f in cands[n]}
        tensors[n] = (w, imp)
        if progress is not None:
            progress(k, len(variables), f"error {n}")
    gains = {n: 1.0 for n in variables}
    meter = None
    if calib_text is not None:
        meter, gains = _measure_gains(src_path, calib_text, ctx, chunks, layers, tensors, dist,
                                      probes, gguf, qdtype, progress)
        refine = len(gain_layers(int(meter.m.spec.n_layers), layers)) == int(meter.m.spec.n_layers) \
            if refine is None else refine
    options = {n: [Option(format_name(f), module_bytes(src.shapes[n], f, scale_bytes), gains[n] * d)
                   for f, d in dist[n].items()]
               for n in variables}
    by_name = {format_name(f): f for f in FORMATS}
    choice = solve(options, ceiling - fixed)  # fits: checked against the floor above
    if meter is not None and refine:
        options = refine_costs(options, choice, lambda n, t: meter.kl(
            n, _values(tensors[n][0], by_name[t], qdtype), _layer(meter, gguf[n])))
        choice = solve(options, ceiling - fixed)
    plan = {n[: -len(".weight")]: params_of(by_name[o.type]) for n, o in choice.items()}
    used = fixed + sum(o.nbytes for o in choice.values())
    details = {n[: -len(".weight")]: {
        "format": o.type, "cost": float(f"{o.cost:.4g}"), "gain": float(f"{gains[n]:.4g}"),
        "candidates": {p.type: [p.nbytes, float(f"{p.cost:.4g}")] for p in options[n]}}
        for n, o in choice.items()}
    a = MLXAllocation(plan, float(target_bpw), used * 8 / n_params, used, n_params,
                      float(sum(o.cost for o in choice.values())), meter is not None, details,
                      round(time.perf_counter() - t0, 2))
    counts: dict[str, int] = {}
    for o in choice.values():
        counts[o.type] = counts.get(o.type, 0) + 1
    log.info("MLX allocation for %.3f bpw: %.4f bpw, predicted cost %.4g, %s", target_bpw, a.bpw,
             a.predicted_kl, ", ".join(f"{t} x{c}" for t, c in sorted(counts.items())))
    return a


def _layer(meter: GainMeter, gguf_name: str) -> int | None:
    return tensor_layer(gguf_name, int(meter.m.spec.n_layers))


def _measure_gains(src_path: str | os.PathLike, calib_text: str | os.PathLike, ctx: int, chunks: int,
                   layers: int, tensors: dict[str, tuple[np.ndarray, np.ndarray | None]],
                   dist: dict[str, dict[Format, float]], probes: dict[str, Format],
                   gguf: dict[str, str], dtype: str, progress: Progress | None,
                   ) -> tuple[GainMeter, dict[str, float]]:
    """The meter on the NumPy runtime and every module's gain ``KL(probe) / D(probe)``: measured
    on the blocks of :func:`~.costs.gain_layers` and outside the blocks, interpolated elsewhere.
    ``tensors`` is updated to the runtime's values of each module (see the comment below)."""
    from ..runtime.backend import load_model
    from .api import calibration_windows

    m = load_model(Path(src_path), backend="numpy", tokenizer=True)
    meter = GainMeter(m, calibration_windows(m, calib_text, ctx, chunks))
    # what-if values go in the runtime's own row order (a GGUF's Q/K rows stay in file order
    # there); MLX quantizes row by row, so permuted rows quantize to the same permuted values
    for n, (_, imp) in tensors.items():
        tensors[n] = (np.ascontiguousarray(m.weights.get(n), dtype=np.float32), imp)
    keep = set(gain_layers(int(m.spec.n_layers), layers))
    todo = [n for n in tensors if (b := re.match(r"blk\.(\d+)\.", gguf[n])) is None or int(b.group(1)) in keep]
    measured: dict[str, float] = {}
    for k, n in enumerate(todo, 1):
        w = tensors[n][0]
        kl = meter.kl(n, _values(w, probes[n], dtype), _layer(meter, gguf[n]))
        d = dist[n][probes[n]]
        measured[gguf[n]] = kl / d if d > 0 else 0.0
        if progress is not None:
            progress(k, len(todo), f"gain {n}")
    by_gguf = interpolate_gains(measured, gguf.values())
    return meter, {n: by_gguf[gguf[n]] for n in tensors}
