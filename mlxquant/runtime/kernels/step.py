"""A whole decode-step block in one compiled call: :func:`decode_block`; every block of a step in
one call: :func:`decode_step`.

A decode step feeds one token, so each block's work is small (SmolLM2: ~3.5 MB of weights, a
few thousand activations) and the Python between its dozen operations (norms, the q/k/v, output,
gate/up and down products, the attention, the activation, the residual adds) cost about as much
as the arithmetic on small models: the tiny model's 6-block step took 0.5 ms where llama.cpp's
takes 0.38 (issue 16). Here a block is one call: the same kernels (:mod:`.fused`, the attention
of :mod:`.attention`, the one-row norm) called from compiled code, each product still launched
on Numba's threads (the caller's count, :func:`~.matrix.launch`), with nothing in between.

Matrices are passed as their stored bytes (uint8 rows; a float32 matrix viewed as bytes) with a
type code (:data:`CODES`) chosen per matrix, so one compiled function serves every mix of types
a file may hold. Same arithmetic as :meth:`NumpyModel._block
<mlxquant.runtime.numpy_model.NumpyModel._block>`'s decode path up to float32 rounding. Covered:
llama-style blocks (llama, qwen2's biases, gemma's GELU) without per-head q/k norms or the
sandwich norms; other blocks take the Python path.

Numba's disk cache of :func:`decode_block` is keyed on this file only: after editing
:mod:`.fused`, :mod:`.vdots`, :mod:`.idots` or :mod:`.attention`, delete ``__pycache__/step.*`` too.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numba.typed import List

from . import fused as fu
from .attention import attend_one, rms_norm_row

F32 = np.float32
OPTS = dict(nogil=True, cache=True, boundscheck=False, error_model="numpy",
            fastmath={"reassoc", "contract", "nsz"})

# type name -> code of :func:`matvec` (F32: a float32 matrix's bytes)
CODES = {"F32": 0, "Q4_0": 1, "Q4_1": 2, "Q5_0": 3, "Q5_1": 4, "Q8_0": 5, "IQ4_NL": 6, "MXFP4": 7,
         "F16": 8, "BF16": 9, "Q2_K": 10, "Q3_K": 11, "Q4_K": 12, "Q5_K": 13, "Q6_K": 14,
         "IQ4_XS": 15, "TQ1_0": 16, "TQ2_0": 17}
GROUPED = np.array([t in fu.GROUPED for t in CODES], np.bool_)  # by code: has a grouped kernel


@njit(**OPTS)
def matvec(code, W, X, Y, chunk):
    """``Y = X @ W.T`` by the fused kernel of type ``code`` (:data:`CODES`)."""
    if code == 0:
        fu.fused_f32(W, X, Y, chunk, 16)
    elif code == 1:
        fu.Q4_0_KERNEL(W, X, Y, chunk, 16)
    elif code == 2:
        fu.Q4_1_KERNEL(W, X, Y, chunk, 16)
    elif code == 3:
        fu.Q5_0_KERNEL(W, X, Y, chunk, 16)
    elif code == 4:
        fu.Q5_1_KERNEL(W, X, Y, chunk, 16)
    elif code == 5:
        fu.Q8_0_KERNEL(W, X, Y, chunk, 16)
    elif code == 6:
        fu.IQ4_NL_KERNEL(W, X, Y, chunk, 16)
    elif code == 7:
        fu.MXFP4_KERNEL(W, X, Y, chunk, 16)
    elif code == 8:
        fu.fused_f16(W, X, Y, chunk, 16)
    elif code == 9:
        fu.fused_bf16(W, X, Y, chunk, 16)
    elif code == 10:
        fu.Q2_K_KERNEL(W, X, Y, chunk, 16)
    elif code == 11:
        fu.Q3_K_KERNEL(W, X, Y, chunk, 16)
    elif code == 12:
        fu.Q4_K_KERNEL(W, X, Y, chunk, 16)
    elif code == 13:
        fu.Q5_K_KERNEL(W, X, Y, chunk, 16)
    elif code == 14:
        fu.Q6_K_KERNEL(W, X, Y, chunk, 16)
    elif code == 15:
        fu.IQ4_XS_KERNEL(W, X, Y, chunk, 16)
    elif code == 16:
        fu.fused_tq1_0(W, X, Y, chunk, 16)
    else:
        fu.fused_tq2_0(W, X, Y, chunk, 16)


@njit(**OPTS)
def matvec3(code, W0, W1, W2, X, Y0, Y1, Y2, chunk):
    """Three products of one grouped type (:data:`GROUPED`) in one launch."""
    if code == 1:
        fu.Q4_0_KERNEL3(W0, W1, W2, X, Y0, Y1, Y2, chunk)
    elif code == 2:
        fu.Q4_1_KERNEL3(W0, W1, W2, X, Y0, Y1, Y2, chunk)
    elif code == 3:
        fu.Q5_0_KERNEL3(W0, W1, W2, X, Y0, Y1, Y2, chunk)
    elif code == 4:
        fu.Q5_1_KERNEL3(W0, W1, W2, X, Y0, Y1, Y2, chunk)
    elif code == 5:
        fu.Q8_0_KERNEL3(W0, W1, W2, X, Y0, Y1, Y2, chunk)
    elif code == 12:
        fu.Q4_K_KERNEL3(W0, W1, W2, X, Y0, Y1, Y2, chunk)
    elif code == 13:
        fu.Q5_K_KERNEL3(W0, W1, W2, X, Y0, Y1, Y2, chunk)
    else:
        fu.Q6_K_KERNEL3(W0, W1, W2, X, Y0, Y1, Y2, chunk)


@njit(inline="always")
def _chunk(rows, threads):
    """:func:`~.matrix.row_chunk` in compiled code (the thread count passed in)."""
    return max(8, (rows + 4 * threads - 1) // (4 * threads))


@njit(inline="always")
def _hf_order(y, order):
    """``y`` (stored row order) in HF order: ``y[order]`` (``order`` empty: as is)."""
    if order.shape[0] == 0:
        return y
    out = np.empty_like(y)
    for i in range(order.shape[0]):
        out[i] = y[order[i]]
    return out


@njit(**OPTS)
def decode_block(h, attn_norm, ffn_norm, codes, Wq, Wk, Wv, Wo, Wg, Wu, Wd, q_order, k_order,
                 q_bias, k_bias, v_bias, o_bias, heads, kv_heads, cos, sin, K, V, pos, start,
                 scale, eps, gelu, threads):
    """One block of a decode step: the hidden state ``h`` (float32 ``(hidden,)``) after the block.

    Args:
        attn_norm, ffn_norm: the block's RMS norm weights (float32).
        codes: int64 ``[q, k, v, o, gate, up, down]`` type codes (:data:`CODES`).
        Wq .. Wd: the matrices' stored bytes, uint8 ``(rows, row_bytes)``.
        q_order, k_order: stored row of each HF row of q / k (empty: the same order).
        q_bias .. o_bias: biases (empty: none).
        heads, kv_heads: attention heads; the head size is ``q rows // heads``.
        cos, sin, K, V, pos, start, scale: as :func:`~.attention.attend_one`.
        eps: float32 norm epsilon; gelu: GELU (tanh) instead of SiLU.
        threads: the kernels' thread count (for the row chunks).
    """
    hidden = h.shape[0]
    x = np.empty((1, hidden), F32)
    rms_norm_row(h, attn_norm, eps, x[0])
    rq, rk, rv = Wq.shape[0], Wk.shape[0], Wv.shape[0]
    q2 = np.empty((1, rq), F32)
    k2 = np.empty((1, rk), F32)
    v2 = np.empty((1, rv), F32)
    if codes[0] == codes[1] and codes[1] == codes[2] and GROUPED[codes[0]]:
        matvec3(codes[0], Wq, Wk, Wv, x, q2, k2, v2, _chunk(rq + rk + rv, threads))
    else:
        matvec(codes[0], Wq, x, q2, _chunk(rq, threads))
        matvec(codes[1], Wk, x, k2, _chunk(rk, threads))
        matvec(codes[2], Wv, x, v2, _chunk(rv, threads))
    q = _hf_order(q2[0], q_order)
    k = _hf_order(k2[0], k_order)
    v = v2[0]
    if q_bias.shape[0]:
        q = q + q_bias
    if k_bias.shape[0]:
        k = k + k_bias
    if v_bias.shape[0]:
        v = v + v_bias
    hd = rq // heads
    att = np.empty((1, rq), F32)
    attend_one(q.reshape(heads, hd), k.reshape(kv_heads, hd), v.reshape(kv_heads, hd), cos, sin, K, V,
               pos, start, scale, att[0].reshape(heads, hd))
    o2 = np.empty((1, Wo.shape[0]), F32)
    matvec(codes[3], Wo, att, o2, _chunk(Wo.shape[0], threads))
    o = o2[0]
    if o_bias.shape[0]:
        o = o + o_bias
    h1 = h + o
    rms_norm_row(h1, ffn_norm, eps, x[0])
    ff = Wg.shape[0]
    g2 = np.empty((1, ff), F32)
    u2 = np.empty((1, Wu.shape[0]), F32)
    if codes[4] == codes[5] and GROUPED[codes[4]]:
        matvec3(codes[4], Wg, Wu, Wg[:0], x, g2, u2, np.empty((1, 0), F32),
                _chunk(2 * ff, threads))
    else:
        matvec(codes[4], Wg, x, g2, _chunk(ff, threads))
        matvec(codes[5], Wu, x, u2, _chunk(ff, threads))
    act = np.empty((1, ff), F32)
    c = F32(np.sqrt(2.0 / np.pi))
    for i in range(ff):
        g = g2[0, i]
        if gelu:
            a = F32(0.5) * g * (F32(1.0) + np.tanh(c * (g + F32(0.044715) * g * g * g)))
        else:
            a = g / (F32(1.0) + np.exp(-g))
        act[0, i] = a * u2[0, i]
    d2 = np.empty((1, Wd.shape[0]), F32)
    matvec(codes[6], Wd, act, d2, _chunk(Wd.shape[0], threads))
    return h1 + d2[0]


@njit(**OPTS)
def decode_step(h, plans, heads, kv_heads, cos, sin, K, V, pos, starts, scale, eps, gelu, threads):
    """Every block of a one-token step in one call: :func:`decode_block` for block ``i`` with the
    fixed arguments ``plans[i]`` (a typed list of one tuple type), RoPE tables ``cos[i]`` /
    ``sin[i]`` (``(blocks, head_dim)``), cache ``K[i]`` / ``V[i]`` (``(blocks, kv_heads,
    capacity, head_dim)``) and first visible position ``starts[i]``. Saves the Python between
    blocks (a launch each: ~5 us, a tenth of a tiny model's block)."""
    for i in range(len(plans)):
        p = plans[i]
        h = decode_block(h, p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[10], p[11],
                         p[12], p[13], p[14], p[15], heads, kv_heads, cos[i], sin[i], K[i], V[i], pos,
                         starts[i], scale, eps, gelu, threads)
    return h



@njit(cache=True)
def plan_list(p):
    """A typed list holding ``p`` (a block's fixed arguments of :func:`decode_step`). Made and
    filled (:func:`plan_push`) by cached compiled code: a typed list built from Python compiles
    its methods in every process (0.3 s and 14 MB of a 1.1B model's first token)."""
    out = List()
    out.append(p)
    return out


@njit(cache=True)
def plan_empty(p):
    """An empty list of :func:`plan_list`'s type for ``p``: :func:`decode_step` called with it
    runs no block, so it loads (or compiles) the step without reading a weight."""
    out = List()
    out.append(p)
    out.pop()
    return out


@njit(cache=True)
def plan_push(plans, p):
    """Append ``p`` to a list of :func:`plan_list` (of ``p``'s type)."""
    plans.append(p)


def release_ir(fn) -> int:
    """Free the LLVM IR Numba keeps beside each compiled version of ``fn`` (a dispatcher) for
    linking it into later compilations that call it: 12 MB for :func:`decode_step`, which no
    compiled function calls (only Python does), so nothing will link it; its machine code stays.
    Returns how many versions gave theirs up (0 where Numba keeps no such module)."""
    n = 0
    for cres in list(getattr(fn, "overloads", {}).values()):
        lib = getattr(cres, "library", None)
        if getattr(lib, "_shared_module", None) is not None:
            lib._shared_module = None
            n += 1
    return n
