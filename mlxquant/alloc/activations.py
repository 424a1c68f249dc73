"""The error llama.cpp's CPU backend adds by rounding a product's activations, per weight type.

ggml's CPU backend never multiplies a quantized weight by float activations: each product first
rounds its input rows to the weight type's ``vec_dot_type`` (ggml-cpu.c's ``type_traits_cpu``) and
multiplies integers. K-quants and most i-quants take ``Q8_K`` (8 bits, one scale per 256 values);
the 32-weight types (Q4_0 ... Q8_0, IQ4_NL, MXFP4) take ``Q8_0``/``Q8_1`` (one scale per 32, the
same rounded values); F16 and BF16 weights take activations rounded to their own type. With
heavy-tailed inputs (an MLP's down projection) one outlier sets the step of all 256 values of a
``Q8_K`` block, and that rounding can cost as much KL divergence as the weights' own: on the float
base model at Q5_K_M's size it was 23 % of the preset's KL divergence.

The allocator counts it: for tensor ``W`` and rounding ``r``, ``A_r = mean over tokens of
|| W (x - r(x)) ||^2`` on the calibration text, the same unit (expected squared output error per
token) as the weights' distortion, so a tensor's cost for type ``t`` is
``gain * (D(t) + A_{r(t)})``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..models.base import OBSERVED_INPUTS
from .costs import sample_rows

# weight type -> how ggml's CPU backend rounds its activations (ggml-cpu.c's vec_dot_type; Q8_1
# rounds values as Q8_0 does, and only adds the block's sum)
_Q8_0 = ("Q1_0", "Q2_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "IQ4_NL", "MXFP4", "NVFP4")
_FLOAT = {"F32": None, "F16": "F16", "BF16": "BF16"}  # rounded to the weights' own float type


def rounding_of(t: str) -> str | None:
    """The rounding ggml's CPU backend gives the activations of a product with weights of type
    ``t`` (``None``: float32, unrounded)."""
    t = t.upper()
    if t in _FLOAT:
        return _FLOAT[t]
    return "Q8_0" if t in _Q8_0 else "Q8_K"


def round_activations(x: np.ndarray, rounding: str) -> np.ndarray:
    """``x`` (float32 ``(tokens, columns)``) as ggml's CPU backend reads it back after
    ``rounding``, in float32:

    - ``Q8_K`` (quantize_row_q8_K_ref): per 256 values, ``q = min(127, round(-127 / m * x))``
      with ``m`` the value of largest magnitude (signed), read as ``q * (1 / (-127 / m))``;
    - ``Q8_0`` (quantize_row_q8_0 on x86): per 32, ``q = round(x * (127 / max|x|))``, read as
      ``q`` times the half-float step ``max|x| / 127``.

    Rounding is to nearest even, as ggml's ``nearest_int`` and ``_mm256_round_ps`` do."""
    x = np.asarray(x, dtype=np.float32)
    T, n = x.shape
    one, k127 = np.float32(1), np.float32(127)
    if rounding == "Q8_K":
        b = x.reshape(T, n // 256, 256)
        m = np.take_along_axis(b, np.abs(b).argmax(axis=-1)[..., None], axis=-1)
        safe = np.where(m != 0, m, one)
        iscale = -k127 / safe
        q = np.minimum(np.rint(iscale * b), k127) + np.float32(0)  # an integer: no -0
        d = np.where(m != 0, one / iscale, np.float32(0))
        return (q * d).reshape(T, n)
    if rounding == "Q8_0":
        b = x.reshape(T, n // 32, 32)
        amax = np.abs(b).max(axis=-1, keepdims=True)
        d = (amax / k127).astype(np.float16).astype(np.float32)
        inv = np.where(amax != 0, k127 / np.where(amax != 0, amax, one), np.float32(0))
        return ((np.rint(b * inv) + np.float32(0)) * d).reshape(T, n)
    raise ValueError(f"unknown activation rounding {rounding!r}")


def _roundings_for(ncols: int) -> list[str]:
    """The roundings a product with rows of ``ncols`` can get (the block must divide the row)."""
    return [r for r, block in (("Q8_K", 256), ("Q8_0", 32)) if ncols % block == 0]


def rounding_errors(model: Any, windows: list[np.ndarray],
                    tensors: dict[str, tuple[str, np.ndarray, np.ndarray | None]]) -> dict[str, dict[str, float]]:
    """``A_r`` (module docstring) of every tensor of ``tensors`` (GGUF name -> (HF name, float32
    HF-layout values, importance)) the float model multiplies activations with, for every rounding
    its rows allow, in the units of its distortion (:func:`~.costs.distortion`: per token where it
    has an importance vector, else over the activations' mean square): the model runs the
    calibration ``windows`` once with an observer. The token
    embedding counts only when it is also the output head (tied embeddings); a tensor the model
    reads no activations with (an embedding) gets no entry."""
    by_hf = {hf: g for g, (hf, _, _) in tensors.items()}
    w = model.weights
    head = "lm_head.weight" if "lm_head.weight" in w else "model.embed_tokens.weight"
    sums: dict[str, dict[str, float]] = {}
    tokens: dict[str, int] = {}
    sampled: dict[str, tuple[np.ndarray, float]] = {}
    power: dict[str, float] = {}  # summed mean squared activation of each token

    def observe(layer: int, role: str, x: np.ndarray) -> None:
        hfs = (head,) if role == "output" else [f"model.layers.{layer}.{n}"
                                                for n in OBSERVED_INPUTS.get(role, ())]
        gs = [by_hf[h] for h in hfs if h in by_hf]
        if not gs:
            return
        x = np.ascontiguousarray(x, dtype=np.float32)
        errs = {r: (x - round_activations(x, r)) for r in _roundings_for(x.shape[1])}
        for g in gs:
            if g not in sampled:
                arr = tensors[g][1]
                sampled[g] = sample_rows(np.ascontiguousarray(arr.reshape(-1, arr.shape[-1]), dtype=np.float32))
            rows, scale = sampled[g]
            acc = sums.setdefault(g, {})
            for r, e in errs.items():
                y = e @ rows.T
                acc[r] = acc.get(r, 0.0) + float(np.einsum("ij,ij->", y, y, dtype=np.float64)) * scale
            tokens[g] = tokens.get(g, 0) + x.shape[0]
            power[g] = power.get(g, 0.0) + float(np.einsum("ij,ij->", x, x, dtype=np.float64)) / x.shape[1]

    for win in windows:
        with model.blas_threads["prefill"].step(len(win)):
            model.forward(win, observer=observe)
    out = {}
    for g, acc in sums.items():
        # a tensor without an importance vector has its distortion weighted by ones, not by its
        # activations' mean squares: A is put in those units (divided by their mean)
        unit = 1.0 if tensors[g][2] is not None else power[g] / tokens[g]
        out[g] = {r: v / tokens[g] / unit if unit > 0 else 0.0 for r, v in acc.items()}
    return out
