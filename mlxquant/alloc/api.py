"""``allocate``: the GGUF type of every tensor of a float model for a size budget (``--target-bpw``).

1. The model's tensors under their GGUF names (HF folder or float GGUF, opened as the runtime
   opens them); the ones llama-quantize would quantize (the Q4_K_M plan says which) are the
   variables, the rest (norms, generated tensors) keep their type and bytes.
2. Candidates per tensor (:func:`~.costs.candidates`: types that fit its rows, have a codec, and
   get an importance vector where ggml requires one), each with its exact bytes and an estimated
   cost (:mod:`.costs`: imatrix-weighted distortion x a gain measured on calibration text, plus
   what llama.cpp's rounding of the product's activations adds for that type, :mod:`.activations`).
3. The choice that minimizes the total cost within the budget (:func:`.solve.allocate`): tensor
   bytes <= ``target_bpw`` x weights / 8 (llama.cpp's BPW: tensor bytes over weights), never over.

The result names a preset for ``general.file_type`` (the K-quant preset of the type holding most
weights) and the recipe :func:`mlxquant.models.tensor_types.recipe_lines` turns into a
``--tensor-type-file`` with which ``llama-quantize`` makes the same GGUF.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..errors import FormatError, MlxquantError
from ..quant.types import get_type
from .activations import rounding_errors, rounding_of
from .costs import (GAIN_LAYERS, GainMeter, candidates, distortions, gain_layers, measure_gains,
                    probe_type, quantized_kl)
from .solve import Option, allocate as solve, refine as refine_costs

log = logging.getLogger(__name__)

# the preset whose general.file_type a plan takes, by the type holding most weights
_PRESET_OF = {"Q2_K": "Q2_K", "Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M", "Q6_K": "Q6_K",
              "Q8_0": "Q8_0", "IQ4_XS": "IQ4_XS", "IQ4_NL": "IQ4_NL", "Q4_0": "Q4_0", "Q4_1": "Q4_1",
              "Q5_0": "Q5_0", "Q5_1": "Q5_1", "IQ2_XXS": "IQ2_XXS", "IQ2_XS": "IQ2_XS",
              "IQ2_S": "IQ2_M", "IQ3_XXS": "IQ3_XXS", "IQ3_S": "IQ3_S"}
Progress = Callable[[int, int, str], None]


class AllocationError(MlxquantError, ValueError):
    """A target the model cannot meet, or a source the allocator cannot read."""


@dataclass
class Allocation:
    """Per-tensor types for a budget, and why.

    Attributes:
        plan: GGUF tensor name -> type, every quantized tensor (the others keep their type).
        preset: the preset for ``general.file_type`` (and llama-quantize's command line).
        target_bpw: the budget; ``bpw``: what the plan gives (tensor bytes x 8 / weights).
        tensor_bytes, weights: totals over every tensor of the file.
        predicted_kl: the summed estimated costs (KL units when gains were measured).
        measured: gains were measured on calibration text.
        details: GGUF name -> {type, cost, gain, rounding, candidates: {type: [bytes, cost]}};
            ``rounding``: the part of ``cost`` that llama.cpp's rounding of the product's
            activations adds (:mod:`.activations`; 0 without calibration text).
        seconds: wall time of the allocation.
        options: every variable tensor's options (for :meth:`within`); fixed: the bytes of the
            tensors that keep their type.
    """

    plan: dict[str, str]
    preset: str
    target_bpw: float
    bpw: float
    tensor_bytes: int
    weights: int
    predicted_kl: float
    measured: bool
    details: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0
    options: dict[str, list[Option]] = field(default_factory=dict, repr=False)
    fixed: int = 0
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict, repr=False)
    gains: dict[str, float] = field(default_factory=dict, repr=False)
    rounding: dict[str, dict[str, float]] = field(default_factory=dict, repr=False)

    def within(self, tensor_bytes: int) -> "Allocation":
        """The allocation for a smaller budget of ``tensor_bytes`` (all tensors), from the same
        costs: no measurement is repeated."""
        choice = solve(self.options, tensor_bytes - self.fixed)
        return _result(choice, self.options, self.fixed, self.shapes, self.gains, self.rounding,
                       self.target_bpw, self.weights, self.measured, self.seconds)

    def recipe(self) -> dict[str, Any]:
        """The provenance entry: the budget, the result, every tensor's type, cost, gain and
        rounding cost (``[type, cost, gain, rounding]``)."""
        return {"target_bpw": self.target_bpw, "bpw": round(self.bpw, 4), "preset": self.preset,
                "predicted_kl": self.predicted_kl, "measured_gains": self.measured,
                "tensors": {n: [d["type"], d["cost"], d["gain"], d["rounding"]]
                            for n, d in self.details.items()}}


def _row_bytes(t: str, shape: tuple[int, ...]) -> int:
    n = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
    return n * get_type(t).row_bytes(shape[-1])


def allocate(src: str | os.PathLike, target_bpw: float | None = None,
             imatrix: str | os.PathLike | None = None, calib_text: str | os.PathLike | None = None,
             *, tensor_bytes: int | None = None, ctx: int = 128, chunks: int = 2,
             refine: bool | None = None, layers: int = GAIN_LAYERS,
             progress: Progress | None = None) -> Allocation:
    """Choose every tensor's GGUF type for ``target_bpw`` (see the module docstring).

    Args:
        src: a Hugging Face folder or a float GGUF.
        target_bpw: bits per weight of the whole file's tensors (llama.cpp's BPW), a ceiling.
        tensor_bytes: instead of ``target_bpw``, a ceiling on the bytes of all the tensors
            (``--target-size``: the file size less its header and padding).
        imatrix: an importance matrix (llama.cpp's formats) weighting the distortions and given
            to the quantizer.
        calib_text: text to measure the gains on (``chunks`` windows of ``ctx`` tokens); without
            it the costs are distortions alone.
        refine: with calibration text, measure the KL of each tensor's chosen type and its
            neighbours and solve again with those (:func:`.solve.refine`); default: when every
            block's gains are measured (models of at most ``layers`` blocks).
        layers: blocks whose gains are measured (evenly spaced; the others interpolated per
            tensor kind, :func:`~.costs.interpolate_gains`).
        progress: ``progress(done, total, label)`` while distortions and gains are computed.

    Raises:
        AllocationError (a budget under the smallest types, a quantized source), BudgetError,
        FormatError, OSError.
    """
    from ..formats.imatrix import importance_for, read_imatrix
    from ..models.presets import plan_tensor_types
    from ..runtime.backend import load_model

    if (target_bpw is None) == (tensor_bytes is None):
        raise ValueError("give either target_bpw or tensor_bytes")
    t0 = time.perf_counter()
    m = load_model(src, backend="numpy", tokenizer=calib_text is not None)
    w = m.weights
    if w.format == "mlx":
        raise AllocationError(f"{src}: an MLX folder is already quantized; allocate from the float "
                              "model (HF folder or F32/F16/BF16 GGUF)")
    im = read_imatrix(imatrix) if imatrix is not None else None
    names: dict[str, str] = {}
    for hf in w.names():
        g = w.arch.tensor_name_to_gguf(hf, w.config)
        if g is not None:
            names[g] = hf
    shapes = {g: tuple(w.get(hf).shape) for g, hf in names.items()}  # decodes: sources are float
    extra = {k: tuple(np.shape(v)) for k, v in w.arch.extra_tensors(w.config).items()}
    base = plan_tensor_types("Q4_K_M", [*shapes.items(), *extra.items()], w.arch.name,
                             int(w.config.get("num_hidden_layers") or 0), has_imatrix=im is not None,
                             check_codecs=False)
    variables = [g for g, t in base.items() if get_type(t).is_quantized and g in names]
    fixed = sum(_row_bytes(t, shapes.get(g) or extra[g]) for g, t in base.items() if g not in variables)
    n_weights = sum(int(np.prod(s)) for s in [*shapes.values(), *extra.values()])
    if target_bpw is None:
        target_bpw = 8 * int(tensor_bytes) / n_weights  # the candidates' floor follows it
        budget = int(tensor_bytes) - fixed
    else:
        budget = int(target_bpw * n_weights / 8) - fixed

    tensors: dict[str, tuple[str, np.ndarray, np.ndarray | None]] = {}
    options: dict[str, list[Option]] = {}
    dist: dict[str, dict[str, float]] = {}
    probes: dict[str, str] = {}
    cands: dict[str, list[str]] = {}
    for g in variables:
        arr = w.get(names[g])
        cols = arr.shape[-1]
        imp = importance_for(im, g, cols) if im is not None else None
        types = cands[g] = candidates(cols, imp is not None, target_bpw=target_bpw)
        if not types:
            raise AllocationError(f"{src}: tensor {g!r} (rows of {cols}) fits no quantized type")
        probes[g] = probe_type(cols, imp is not None, target_bpw)
        tensors[g] = (names[g], arr, imp)
    for k, (g, d) in enumerate(_distortions(tensors, {g: sorted({*cands[g], probes[g]}) for g in variables}), 1):
        dist[g] = d
        if progress is not None:
            progress(k, len(variables), f"distortion {g}")
    for g in variables:
        # a probe that reproduces the tensor exactly (a "float" model dequantized from that type)
        # measures nothing: probe with the smallest candidate that changes it instead
        if dist[g][probes[g]] <= 0:
            lossy = [t for t in cands[g] if dist[g][t] > 0]
            if lossy:
                probes[g] = min(lossy, key=lambda t: _row_bytes(t, shapes[g]))
    gains = {g: 1.0 for g in variables}
    meter = None
    rounding: dict[str, dict[str, float]] = {}
    if calib_text is not None:
        meter = GainMeter(m, calibration_windows(m, calib_text, ctx, chunks))
        rounding = rounding_errors(m, meter.windows, tensors)
        n_layers = int(m.spec.n_layers)
        measured = gain_layers(n_layers, layers)
        gains = measure_gains(meter, tensors, {g: dist[g][probes[g]] for g in variables}, probes,
                              None if progress is None else lambda i, n, g: progress(i, n, f"gain {g}"),
                              measured)
        refine = len(measured) == n_layers if refine is None else refine

    def act(g: str, t: str) -> float:
        return _rounding_cost(rounding, gains, g, t)

    for g in variables:  # the probe type is measured but may not be a candidate
        options[g] = [Option(t, _row_bytes(t, shapes[g]), gains[g] * dist[g][t] + act(g, t))
                      for t in cands[g]]
    choice = solve(options, budget)
    if meter is not None and refine:
        options = refine_costs(options, choice,
                               lambda g, t: quantized_kl(meter, g, tensors[g], t) + act(g, t))
        choice = solve(options, budget)
    return _result(choice, options, fixed, shapes, gains, rounding, target_bpw, n_weights, calib_text is not None,
                   round(time.perf_counter() - t0, 2))


def _distortions(tensors: dict[str, tuple[str, np.ndarray, np.ndarray | None]],
                 types: dict[str, list[str]]) -> Iterator[tuple[str, dict[str, float]]]:
    """``(name, {type: distortion})`` of every tensor, in order; tensors side by side on one
    thread per core, each codec call on its thread alone (:func:`~mlxquant.quant.api.on_this_thread`):
    the sampled rows are too few for a call's own chunks to be worth the pool's hand-offs."""
    from concurrent.futures import ThreadPoolExecutor

    from ..quant.api import on_this_thread
    from ..runtime.blas import cpu_cores

    def one(g: str) -> dict[str, float]:
        _, arr, imp = tensors[g]
        with on_this_thread():
            return distortions(arr.reshape(-1, arr.shape[-1]), types[g], imp)

    names = list(tensors)
    workers = min(cpu_cores(), len(names))
    if workers <= 1:
        for g in names:
            yield g, one(g)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="mlxquant-alloc") as ex:
        futures = [ex.submit(one, g) for g in names]
        try:
            for g, f in zip(names, futures):
                yield g, f.result()
        finally:
            for f in futures:
                f.cancel()


def _rounding_cost(rounding: dict[str, dict[str, float]], gains: dict[str, float], g: str, t: str) -> float:
    """What llama.cpp's rounding of tensor ``g``'s activations costs with weights of type ``t``,
    in KL units (the tensor's gain times the rounding's error, :mod:`.activations`)."""
    r = rounding_of(t)
    return gains[g] * rounding.get(g, {}).get(r, 0.0) if r is not None else 0.0


def _result(choice: dict[str, Option], options: dict[str, list[Option]], fixed: int,
            shapes: dict[str, tuple[int, ...]], gains: dict[str, float],
            rounding: dict[str, dict[str, float]], target_bpw: float, n_weights: int,
            measured: bool, seconds: float) -> Allocation:
    plan = {g: o.type for g, o in choice.items()}
    used = fixed + sum(o.nbytes for o in choice.values())
    by_type: dict[str, int] = {}
    for g, t in plan.items():
        by_type[t] = by_type.get(t, 0) + int(np.prod(shapes[g]))
    main = max(by_type, key=by_type.get) if by_type else "Q4_K"
    details = {g: {"type": o.type, "cost": float(f"{o.cost:.4g}"), "gain": float(f"{gains[g]:.4g}"),
                   "rounding": float(f"{_rounding_cost(rounding, gains, g, o.type):.4g}"),
                   "candidates": {p.type: [p.nbytes, float(f"{p.cost:.4g}")] for p in options[g]}}
               for g, o in choice.items()}
    a = Allocation(plan, _PRESET_OF.get(main, "Q4_K_M"), target_bpw, used * 8 / n_weights, used,
                   n_weights, float(sum(o.cost for o in choice.values())), measured, details, seconds,
                   options, fixed, shapes, gains, rounding)
    log.info("allocation for %.3f bpw: %.4f bpw, predicted cost %.4g, %s", target_bpw, a.bpw,
             a.predicted_kl, ", ".join(f"{t} x{sum(1 for v in plan.values() if v == t)}"
                                       for t in sorted(by_type)))
    return a


def calibration_windows(m: Any, calib_text: str | os.PathLike, ctx: int, chunks: int) -> list[np.ndarray]:
    """``chunks`` windows of ``ctx`` tokens of ``calib_text`` read with the model's tokenizer."""
    from ..eval.evaluate import make_windows

    if m.tokenizer is None:
        raise FormatError(f"{m.weights.path}: no tokenizer to read the calibration text with")
    try:
        text = Path(calib_text).read_bytes().decode("utf-8", errors="replace")
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(calib_text)) from None
    ids = m.tokenizer.encode(text, add_special=True)
    if len(ids) < ctx:
        raise AllocationError(f"{calib_text}: {len(ids)} tokens, fewer than one window of {ctx}")
    return make_windows(ids, ctx, chunks, None)
