"""What each (tensor, type) choice costs: an estimate from the weights, scaled by a measured gain.

Distortion (cheap, every candidate). For a weight ``W`` (rows = outputs, columns = inputs) and its
quantized ``Q``, the imatrix holds each input column's mean squared activation ``a_j``; with
uncorrelated inputs, the expected squared error of the layer's output per token is
``D = sum_ij a_j (W_ij - Q_ij)^2``. Without an importance vector (the token embedding, or no
imatrix) ``a_j = 1``. Large tensors are estimated on evenly spaced rows (at most
:data:`SAMPLE_ROWS`), scaled to all rows; every ggml quantizer works row by row, so a sampled row
quantizes exactly as it would in the file.

Gain (measured once per tensor). The same output error does not hurt the model equally everywhere
(a value projection of the first layer, a query projection of the last). The gain ``g`` of a
tensor is measured on the calibration text: the model runs with only that tensor quantized to a
probe type, and ``g = KL(float || that model) / D(probe)``; the cost of a candidate is then
``g * D(type)``, in KL units (to second order a small perturbation's KL grows linearly with its
squared size, so one probe per tensor carries over to the other types). Without calibration text
every gain is 1 (costs are then the distortions alone).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable

import numpy as np

from ..quant import dequantize, quantize
from ..quant.types import get_type

log = logging.getLogger(__name__)

SAMPLE_ROWS = 128  # rows per tensor the distortions are estimated on (256 gave the same KLD on the
# float base model at Q4_K_M's and Q5_K_M's sizes, in twice the time)
# candidates at most this many bits per weight under the target: a tensor that far below the
# average is never the cheapest way to meet it on the models measured, and the 2-bit i-quants'
# searches are the slowest codecs (5-20x a K-quant)
BELOW_TARGET = 2.0
# models with more blocks than ALL_LAYERS have their gains measured on GAIN_LAYERS evenly spaced
# blocks (first and last included) and interpolated per tensor kind over the others (SmolLM2, 30
# blocks, at Q2_K's size: KLD 0.0197 with 4 blocks measured, 0.0201 with 6, in 70 % of the time)
ALL_LAYERS = 6
GAIN_LAYERS = 4
# the ladder, by bits per weight; types mlxquant has no CPU codec for are left out at run time
K_LADDER = ("IQ2_XXS", "IQ2_XS", "IQ2_S", "Q2_K", "IQ3_XXS", "IQ3_S", "Q3_K", "IQ4_XS", "Q4_K",
            "Q5_K", "Q6_K", "Q8_0")
SMALL_LADDER = ("Q4_0", "IQ4_NL", "Q4_1", "Q5_0", "Q5_1", "Q8_0")  # 32-weight blocks
# the probe type of the gains, by target bits per weight: near where the tensors will end up
# (the KL/distortion ratio is constant only to second order): K-quant rows, else 32-weight rows
PROBES = ((4.0, ("Q3_K", "Q4_0")), (5.0, ("Q4_K", "Q4_0")), (6.0, ("Q5_K", "Q5_0")),
          (99.0, ("Q6_K", "Q8_0")))


def _has_codec(t: str) -> bool:
    from ..quant import codecs_for

    return any(b in ("numpy", "numba") for b in codecs_for(t))


def candidates(ncols: int, has_importance: bool, ladder: Iterable[str] | None = None,
               target_bpw: float | None = None) -> list[str]:
    """The types a tensor with rows of ``ncols`` can take without a fallback, that mlxquant can
    make, and (types ggml only makes with an imatrix) that have an importance vector; with
    ``target_bpw``, none more than :data:`BELOW_TARGET` bits per weight under it."""
    from ..models.presets import type_needs_imatrix

    types = list(ladder) if ladder is not None else [*K_LADDER, *SMALL_LADDER]
    floor = -1.0 if target_bpw is None else target_bpw - BELOW_TARGET
    out = []
    for t in dict.fromkeys(types):
        qt = get_type(t)
        if ncols % qt.block_size or not _has_codec(t) or 8 * qt.type_size / qt.block_size < floor:
            continue
        if type_needs_imatrix(t) and not has_importance:  # llama-quantize's rule (and ggml's)
            continue
        out.append(t)
    return out


def sample_rows(w: np.ndarray, limit: int = SAMPLE_ROWS) -> tuple[np.ndarray, float]:
    """Evenly spaced rows of ``w`` (at most ``limit``) and the factor that scales their sum to all
    rows."""
    rows = w.shape[0]
    if rows <= limit:
        return w, 1.0
    idx = np.linspace(0, rows - 1, limit).round().astype(np.int64)
    return np.ascontiguousarray(w[idx]), rows / limit


def distortion(w: np.ndarray, t: str, importance: np.ndarray | None) -> float:
    """``sum_ij a_j (W_ij - Q_ij)^2`` of ``w`` (float32 ``(rows, cols)``, all rows) quantized to
    ``t`` with ``importance`` (``a``; None: ones), in float64."""
    q = quantize(w, t, imatrix=importance)
    err = dequantize(q, t, w.shape).astype(np.float64) - w
    col = np.einsum("ij,ij->j", err, err)
    return float(col @ importance) if importance is not None else float(col.sum())


def distortions(w: np.ndarray, types: Iterable[str], importance: np.ndarray | None) -> dict[str, float]:
    """:func:`distortion` of every type, on the sampled rows of ``w`` scaled to all rows."""
    rows, scale = sample_rows(np.ascontiguousarray(w, dtype=np.float32))
    return {t: distortion(rows, t, importance) * scale for t in types}


def probe_type(ncols: int, has_importance: bool, target_bpw: float = 4.5) -> str:
    """The type a tensor is quantized to when its gain is measured (:data:`PROBES`)."""
    probes = next(p for limit, p in PROBES if target_bpw < limit)
    for t in probes:
        if t in candidates(ncols, has_importance, (t,)):
            return t
    return "Q8_0"


class GainMeter:
    """Measures gains on the NumPy runtime: the float model's hidden states entering every block
    and its log-probabilities on the calibration windows once, then per tensor the KL divergence
    with only that tensor replaced by its quantized values (swapped into the runtime's decoded
    weights and back), running only the blocks from the tensor's own on (the output head alone for
    ``output.weight``; the whole model for the token embedding).

    Args:
        model: the runtime model (:func:`mlxquant.runtime.load_model`, ``backend="numpy"``); its
            weights must fit in its memory budget (they are all decoded once).
        windows: token windows of the calibration text (each at most the model's batch).
    """

    def __init__(self, model: Any, windows: list[np.ndarray]):
        from .kl import Reference

        self.m, self.windows = model, windows
        if not model.weights.preload():
            raise MemoryError(f"{model.weights.path}: the float32 weights do not fit in memory; "
                              "gains cannot be measured")
        self._inputs, self._refs = [], []
        for w in windows:
            with model.blas_threads["prefill"].step(len(w)):
                hs = model.block_inputs(w)
                self._refs.append(Reference(model.forward_from(len(hs) - 1, hs[-1])))
            self._inputs.append(hs)

    def kl(self, hf_name: str, values: np.ndarray, layer: int | None) -> float:
        """Mean KL(float || model with ``hf_name`` := ``values``) over every token; ``layer``: the
        block the tensor belongs to (``n_layers`` for the output head, None: run everything).

        The windows run side by side on threads of their own (one per core, BLAS on
        ``cores // workers`` threads each), as the imatrix computation does: much of a forward
        pass is NumPy's single-threaded element-wise work, and one-thread BLAS spends nothing on
        synchronization."""
        from concurrent.futures import ThreadPoolExecutor

        from ..runtime.blas import cpu_cores, pinned_blas_threads, set_blas_threads

        def logits(k: int) -> np.ndarray:
            w, hs = self.windows[k], self._inputs[k]
            return self.m.forward(w) if layer is None else self.m.forward_from(layer, hs[layer])

        total, n = 0.0, 0
        workers = min(cpu_cores(), len(self.windows), 4)
        with self.m.weights.swapped(hf_name, values):
            if workers <= 1:
                for k, (w, ref) in enumerate(zip(self.windows, self._refs)):
                    with self.m.blas_threads["prefill"].step(len(w)):
                        out = logits(k)
                    total += float(ref.kl(out).sum())
                    n += len(w)
                return total / max(n, 1)
            old = set_blas_threads(pinned_blas_threads() or max(1, cpu_cores() // workers))
            try:
                with ThreadPoolExecutor(workers, thread_name_prefix="mlxquant-gain") as ex:
                    # ``workers`` windows at a time, so at most that many logits are held; the
                    # (compiled, parallel) KL runs between batches, never beside another launch
                    for b in range(0, len(self.windows), workers):
                        ks = range(b, min(len(self.windows), b + workers))
                        for k, out in zip(ks, list(ex.map(logits, ks))):
                            total += float(self._refs[k].kl(out).sum())
                            n += len(self.windows[k])
            finally:
                if old is not None:
                    set_blas_threads(old)
        return total / max(n, 1)


def tensor_layer(gguf_name: str, n_layers: int) -> int | None:
    """The first block a tensor's change reaches: its block, ``n_layers`` for ``output.weight``,
    None (everything) for the token embedding and anything else."""
    import re

    m = re.match(r"blk\.(\d+)\.", gguf_name)
    if m:
        return int(m.group(1))
    return n_layers if gguf_name == "output.weight" else None


def quantized_kl(meter: GainMeter, name: str, tensor: tuple[str, np.ndarray, np.ndarray | None],
                 t: str) -> float:
    """The measured KL with only tensor ``name`` (GGUF; ``tensor`` = HF name, float32 HF-layout
    values, importance) quantized to ``t``."""
    hf_name, w, imp = tensor
    flat = w.reshape(-1, w.shape[-1])
    q = dequantize(quantize(flat, t, imatrix=imp), t, flat.shape).reshape(w.shape)
    return meter.kl(hf_name, q, tensor_layer(name, meter.m.spec.n_layers))


def gain_layers(n_layers: int, limit: int = GAIN_LAYERS) -> list[int]:
    """The blocks whose tensors' gains are measured: all of them in a model of at most
    ``max(limit, ALL_LAYERS)`` blocks, else ``limit`` evenly spaced ones, the first and the last
    included."""
    if n_layers <= max(limit, ALL_LAYERS):
        return list(range(n_layers))
    return sorted({int(round(i * (n_layers - 1) / (limit - 1))) for i in range(limit)})


def _kind(gguf_name: str) -> tuple[int, str] | None:
    import re

    m = re.match(r"blk\.(\d+)\.(.+)$", gguf_name)
    return (int(m.group(1)), m.group(2)) if m else None


def interpolate_gains(gains: dict[str, float], names: Iterable[str]) -> dict[str, float]:
    """The gain of every tensor of ``names``: measured where ``gains`` has it, else linear in the
    block index between the nearest measured blocks' tensors of the same kind (``attn_q.weight``
    of block 7 from blocks 5 and 10), the nearest one's past the ends."""
    by_kind: dict[str, list[tuple[int, float]]] = {}
    for name, g in gains.items():
        k = _kind(name)
        if k is not None:
            by_kind.setdefault(k[1], []).append((k[0], g))
    out = {}
    for name in names:
        k = _kind(name)
        if name in gains:
            out[name] = gains[name]
        elif k is None or k[1] not in by_kind:
            raise KeyError(f"no measured gain for tensor {name!r} nor for its kind")
        else:
            pts = sorted(by_kind[k[1]])
            xs = np.array([p[0] for p in pts], dtype=np.float64)
            out[name] = float(np.interp(k[0], xs, np.array([p[1] for p in pts], dtype=np.float64)))
    return out


def measure_gains(meter: GainMeter, tensors: dict[str, tuple[str, np.ndarray, np.ndarray | None]],
                  probe_distortion: dict[str, float], probes: dict[str, str],
                  progress: Callable[[int, int, str], None] | None = None,
                  layers: Iterable[int] | None = None) -> dict[str, float]:
    """Gain of every tensor: ``KL / D(probe)``, measured for the tensors of ``layers`` (None: all)
    and the ones outside the blocks, interpolated (:func:`interpolate_gains`) for the others.
    ``tensors``: GGUF name -> (HF name, float32 HF-layout values, importance)."""
    keep = None if layers is None else set(layers)
    todo = [n for n in tensors if keep is None or _kind(n) is None or _kind(n)[0] in keep]
    gains = {}
    for k, name in enumerate(todo, 1):
        kl = quantized_kl(meter, name, tensors[name], probes[name])
        d = probe_distortion[name]
        gains[name] = kl / d if d > 0 else 0.0
        if progress is not None:
            progress(k, len(todo), name)
    return interpolate_gains(gains, tensors)
