"""How each GGUF tensor type is held on MLX without requantizing, and its values decoded in MLX.

Three forms, chosen per tensor by its GGUF type (:func:`plan_weight`):

- ``quantized``: the codes as MLX packed uint32 plus scales/biases, for the types whose
  every value ``scale*q + bias`` MLX's affine (or mxfp4/nvfp4) mode reproduces bit for bit. Those
  of :data:`mlxquant.quant.transcode.EXACT_FROM_GGUF` come from
  :func:`~mlxquant.quant.transcode.from_gguf`; three more map here:

      Q1_0   affine 1-bit g128   scale 2d   bias -d     bit b -> b ? d : -d (2d*b - d is exact)
      Q2_0   affine 2-bit g64    scale d    bias -d     code q -> (q-1)*d
      Q8_1   affine 8-bit g32    scale d    bias -128d  int8 q -> code q+128 (as Q8_0)

  (ggml-common.h: ``block_q1_0`` = d:f16, 1 bit a weight, bit ``j%8`` of byte ``j/8``;
  ``block_q2_0`` = d:f16, 2 bits a weight at ``(j%4)*2`` of byte ``j/4``; ``block_q8_1`` =
  d:f16, s:f16, qs[32] int8. Each is MLX's little-endian code stream already.) MLX 0.32 takes
  groups of 32/64/128 only, so Q2_K, Q3_K and Q6_K (sub-blocks of 16) cannot map. Scales and
  biases are stored in float16 where every one is a float16 value (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0:
  ``d``, ``m``, ``-8d``...; checked per tensor by :func:`~mlxquant.quant.transcode.cast_params`),
  else in float32 (the K-quants' ``d*sc`` needs up to 17 bits); they are widened to float32
  before use (``mx.quantized_matmul`` does so for float32 activations), so values stay exact.
- ``blocks``: the raw GGUF bytes, ``(rows, row_bytes)`` uint8, decoded when used (a Metal kernel
  on an Apple GPU, the MLX twin codecs of :mod:`mlxquant.quant.mlx` elsewhere): Q2_K, Q3_K, Q6_K,
  Q8_K and every IQ type.
- ``float``: F32, F16 and BF16 kept in their own dtype; the integer/F64 types widened to float32.

Rows of every form are whole GGUF rows, so the Q/K un-permutation moves them unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from ..errors import QuantInputError
from ..quant.backends import get_codec
from ..quant.transcode import EXACT_FROM_GGUF, MLXQuant, cast_params, from_gguf, pack_codes
from ..quant.types import QuantType, get_type

F32 = np.float32
# GGUF types held as MLX quantized matrices (exact), the rest of the quantized types as blocks
EXTRA_EXACT = ("Q1_0", "Q2_0", "Q8_1")
QUANTIZED_TYPES = tuple(EXACT_FROM_GGUF) + EXTRA_EXACT
FLOAT_KEPT = {"F32": mx.float32, "F16": mx.float16, "BF16": mx.bfloat16}
PLAIN_WIDENED = {"I8": "<i1", "I16": "<i2", "I32": "<i4", "I64": "<i8", "F64": "<f8"}


@dataclass
class GGUFWeight:
    """One 2-D GGUF tensor in the form MLX holds it (see the module docstring).

    Attributes:
        qtype: the GGUF type name.
        rows, cols: the logical shape.
        form: ``"quantized"``, ``"blocks"`` or ``"float"``.
        arrays: ``weight``/``scales``/``biases`` (quantized), ``blocks`` or ``weight`` (float).
        bits, group_size, mode: MLX quantization parameters (``quantized`` only).
    """

    qtype: str
    rows: int
    cols: int
    form: str
    arrays: dict[str, mx.array]
    bits: int = 0
    group_size: int = 0
    mode: str = ""


def _f16(b: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(b).view("<f2").astype(F32).reshape(-1)


def _extra_exact(raw: np.ndarray, t: QuantType, cols: int) -> MLXQuant:
    """Q1_0 / Q2_0 / Q8_1 rows (rows, row_bytes) -> MLX affine codes with float32 parameters."""
    rows = raw.shape[0]
    blocks = raw.reshape(-1, t.type_size)
    d = _f16(blocks[:, 0:2])                                      # (nb,)
    if t.name == "Q1_0":
        bits = np.unpackbits(blocks[:, 2:], axis=1, bitorder="little")   # (nb, 128)
        scale, bias, codes, nbits = d * F32(2), -d, bits, 1
    elif t.name == "Q2_0":
        qs = blocks[:, 2:]
        codes = (qs[:, :, None] >> np.array([0, 2, 4, 6], np.uint8)) & 3  # (nb, 16, 4)
        scale, bias, nbits = d, -d, 2
    else:  # Q8_1: d, s, qs[32] int8
        codes = blocks[:, 4:] ^ np.uint8(0x80)
        scale, bias, nbits = d, d * F32(-128), 8
    packed = pack_codes(codes.reshape(rows, cols), nbits)
    return MLXQuant(packed, scale.reshape(rows, -1), bias.reshape(rows, -1), nbits, t.block_size,
                    "affine", cols)


def plan_weight(raw: np.ndarray, qtype: str, cols: int, name: str = "tensor") -> GGUFWeight:
    """A GGUF matrix's stored bytes ``raw`` (rows, row_bytes) uint8 -> its MLX form.

    Raises:
        QuantInputError: the bytes do not hold rows of ``cols`` weights of ``qtype`` (the
            message names ``name``).
    """
    t = get_type(qtype)
    raw = np.ascontiguousarray(raw, dtype=np.uint8)
    if raw.ndim != 2 or cols <= 0 or cols % t.block_size or raw.shape[1] != t.row_bytes(cols):
        raise QuantInputError(f"{name}: {qtype} data of shape {raw.shape} does not hold rows of "
                              f"{cols} weights")
    rows = raw.shape[0]
    if t.name in QUANTIZED_TYPES:
        q = from_gguf(raw, t.name, cols) if t.name in EXACT_FROM_GGUF else _extra_exact(raw, t, cols)
        arrays = {"weight": mx.array(q.weight), "scales": mx.array(q.scales)}
        if q.biases is not None:
            exact = cast_params(q, "float16")[1]
            pdt = mx.float16 if exact else mx.float32
            arrays["scales"] = mx.array(np.asarray(q.scales, F32)).astype(pdt)
            arrays["biases"] = mx.array(np.asarray(q.biases, F32)).astype(pdt)
        return GGUFWeight(t.name, rows, cols, "quantized", arrays, q.bits, q.group_size, q.mode)
    if t.name in FLOAT_KEPT:
        if t.name == "BF16":
            w = mx.array(raw.view("<u2").reshape(rows, cols)).view(mx.bfloat16)
        else:
            w = mx.array(raw.view("<f4" if t.name == "F32" else "<f2").reshape(rows, cols))
        return GGUFWeight(t.name, rows, cols, "float", {"weight": w})
    if t.name in PLAIN_WIDENED:
        w = raw.view(PLAIN_WIDENED[t.name]).reshape(rows, cols).astype(F32)
        return GGUFWeight(t.name, rows, cols, "float", {"weight": mx.array(w)})
    return GGUFWeight(t.name, rows, cols, "blocks", {"blocks": mx.array(raw)})


def decode_blocks(qtype: str, blocks: mx.array) -> mx.array:
    """(n_blocks, type_size) uint8 -> (n_blocks, block_size) float32 values, ggml's
    ``dequantize_row_*`` bit for bit: the MLX twin codec, or (Q8_K, which is only an activation
    type in ggml and has no codec) ``d * q`` with d float32 and q int8."""
    t = get_type(qtype)
    if t.name == "Q8_K":
        d = blocks[:, 0:4].view(mx.float32)                          # (n, 1)
        q = blocks[:, 4:4 + 256].view(mx.int8).astype(mx.float32)    # (n, 256)
        return d * q
    return get_codec(t.name, "mlx").decode_blocks(blocks)


def dequantize_weight(w: GGUFWeight, rows: mx.array | None = None) -> mx.array:
    """Float32 values of ``w`` (or of its rows at the indices ``rows``, any shape), shaped
    ``(*rows.shape, cols)`` or ``(w.rows, w.cols)``."""
    a = w.arrays
    lead = (w.rows,) if rows is None else tuple(rows.shape)

    def pick(x: mx.array) -> mx.array:
        return x if rows is None else x[rows.reshape(-1)]

    if w.form == "float":
        return pick(a["weight"]).astype(mx.float32).reshape(*lead, w.cols)
    if w.form == "quantized":
        affine = "biases" in a                   # float16 parameters widen exactly before use
        out = mx.dequantize(pick(a["weight"]),
                            pick(a["scales"]).astype(mx.float32) if affine else pick(a["scales"]),
                            pick(a["biases"]).astype(mx.float32) if affine else None,
                            group_size=w.group_size, bits=w.bits, mode=w.mode, dtype=mx.float32)
        return out.reshape(*lead, w.cols)
    t = get_type(w.qtype)
    blocks = pick(a["blocks"]).reshape(-1, t.type_size)
    return decode_blocks(w.qtype, blocks).reshape(*lead, w.cols)
