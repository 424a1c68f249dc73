"""The element-wise pieces of the NumPy forward pass (:mod:`mlxquant.runtime.numpy_model`):
RMS norm, activations, rotate-half RoPE tables and their application, the additive causal /
sliding-window attention mask. All float32, computed as llama.cpp does (norms and softmax in
float32, RoPE angles in float64 then rounded).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

_GELU_C = np.float32(math.sqrt(2.0 / math.pi))


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """``x / sqrt(mean(x^2) + eps) * w`` over the last axis (float32).

    The same operations as ``np.mean`` (a float32 pairwise sum divided by the ``intp`` count), without
    its Python-level overhead (a quarter of a decode step's norms on a small model)."""
    ms = np.add.reduce(np.square(x), axis=-1, keepdims=True, dtype=np.float32)
    np.true_divide(ms, np.intp(x.shape[-1]), out=ms, casting="unsafe")
    ms += np.float32(eps)
    np.sqrt(ms, out=ms)
    np.divide(1.0, ms, out=ms)
    y = x * ms
    y *= w
    return y


def silu(x: np.ndarray) -> np.ndarray:
    """``x / (1 + exp(-x))`` (one temporary, written in place: a prompt's MLP is memory passes)."""
    t = np.negative(x)
    np.exp(t, out=t)
    t += np.float32(1.0)
    np.divide(x, t, out=t)
    return t


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    return np.float32(0.5) * x * (np.float32(1.0) + np.tanh(_GELU_C * (x + np.float32(0.044715) * x * x * x)))


class Rope(NamedTuple):
    """Rotate-half RoPE tables of positions ``p0..p0 + T``, float32 ``(T, head_dim)``: ``cos`` is
    ``[cos, cos]`` and ``sin`` is ``[-sin, sin]``, so that ``x * cos + [x2, x1] * sin`` is ``[x1 cos -
    x2 sin, x2 cos + x1 sin]`` bit for bit (``a + (-b)`` rounds as ``a - b``)."""

    cos: np.ndarray
    sin: np.ndarray


def rope_tables(inv_freq: np.ndarray, positions: np.ndarray) -> Rope:
    """The :class:`Rope` tables of ``positions``, angles computed in float64."""
    ang = positions.astype(np.float64)[:, None] * inv_freq[None, :]
    cos, sin = np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)
    return Rope(np.concatenate([cos, cos], axis=-1), np.concatenate([-sin, sin], axis=-1))


def apply_rope(x: np.ndarray, rope: Rope) -> np.ndarray:
    """Rotate-half RoPE on ``x`` of shape ``(heads, T, head_dim)``: ``x * cos + [x2, x1] * sin``,
    the swapped halves taken as slices (gathering them with an index array took 3.4 ns an
    element, half of a small model's prompt RoPE)."""
    h = x.shape[-1] // 2
    y = x * rope.cos
    y[..., :h] += x[..., h:] * rope.sin[..., :h]
    y[..., h:] += x[..., :h] * rope.sin[..., h:]
    return y


def attention_mask(p0: int, T: int, window: int | None) -> np.ndarray:
    """Additive attention mask ``(T, p0 + T)``: 0 where query ``p0 + t`` may see key ``j`` (causal,
    and ``p0 + t - j < window`` for a sliding window), -inf elsewhere."""
    qpos = np.arange(p0, p0 + T)[:, None]
    kpos = np.arange(p0 + T)[None, :]
    hidden = kpos > qpos
    if window is not None:
        hidden |= (qpos - kpos) >= window
    return np.where(hidden, np.float32(-np.inf), np.float32(0.0))
