"""Exact transcoding between GGUF blocks and MLX quantized tensors (the integer codes are kept).

MLX stores a quantized matrix as codes packed into uint32 words plus one scale (and, for the
``affine`` mode, one bias) per group of ``group_size`` weights along a row; the value of code
``q`` is ``scale * q + bias`` (affine) or ``e2m1[q] * 2**(s - 127)`` (``mxfp4``) or
``e2m1[q] * e4m3(s)`` (``nvfp4``). Codes are a little-endian bit stream: code ``i`` of a row
occupies bits ``[bits*i, bits*(i+1))`` of the row's words (checked against ``mx.quantize`` for
bits 2..8 in the tests).

GGUF type -> MLX, same codes, float32 parameters (``scale*q + bias`` in float32 reproduces
ggml's ``dequantize_row_*`` bit for bit; the tests compare with ggml's own C):

    Q4_0   affine 4-bit g32   scale d        bias -8d      (q-8)*d: every product is exact
    Q5_0   affine 5-bit g32   scale d        bias -16d
    Q8_0   affine 8-bit g32   scale d        bias -128d    code q+128
    Q4_1   affine 4-bit g32   scale d        bias m
    Q5_1   affine 5-bit g32   scale d        bias m
    Q4_K   affine 4-bit g32   scale d*sc     bias -dmin*m  per 32-weight sub-block
    Q5_K   affine 5-bit g32   scale d*sc     bias -dmin*m
    TQ1_0  affine 2-bit g128  scale d        bias -d       trit t -> (t-1)*d
    TQ2_0  affine 2-bit g128  scale d        bias -d
    MXFP4  mxfp4 g32          the E8M0 byte                (ggml doubles the values, halves d)
    NVFP4  nvfp4 g16          the UE4M3 byte               (0x7F, zero in ggml, becomes 0)

In float16 (the usual model dtype) ``d``, ``m`` and ``-8d`` stay exact; ``d*sc`` of the K-quants
needs up to 17 significant bits and is rounded, so those keep their codes but not ggml's exact
values unless the scales are kept in float32 (``exact_scales``). :func:`cast_params` reports which.

MLX -> GGUF, exact when the parameters fit: affine 4-bit (any group size) -> Q4_1, 5-bit -> Q5_1
(``d = scale``, ``m = bias``, both must be float16 values), 8-bit with ``bias == -128*scale`` ->
Q8_0, mxfp4 -> MXFP4, nvfp4 -> NVFP4 (scale bytes must be valid UE4M3). Everything else is
requantized by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..errors import QuantInputError, QuantTypeError
from .numpy.legacy import BLOCK_LAYOUT, unpack_qs, unpack_qh
from .numpy.kquants_affine import Q4_K, Q5_K, unpack_scales_k4
from .types import get_type

F32 = np.float32
MODES = ("affine", "mxfp4", "nvfp4", "mxfp8")
AFFINE_BITS = (1, 2, 3, 4, 5, 6, 8)
AFFINE_GROUPS = (32, 64, 128)
MODE_GEOMETRY = {"mxfp4": (4, 32), "nvfp4": (4, 16), "mxfp8": (8, 32)}  # mode -> (bits, group)

# GGUF types whose codes MLX holds as they are
EXACT_FROM_GGUF = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "TQ1_0", "TQ2_0",
                   "MXFP4", "NVFP4")
# Everything else is requantized: the smallest affine bits not coarser than the source's codes
REQUANT_BITS = {"Q2_K": 2, "Q3_K": 3, "Q6_K": 6, "IQ4_NL": 4, "IQ4_XS": 4, "IQ3_XXS": 3,
                "IQ3_S": 3, "IQ2_XXS": 2, "IQ2_XS": 2, "IQ2_S": 2, "IQ1_S": 2, "IQ1_M": 2,
                "Q1_0": 1, "Q2_0": 2, "Q8_1": 8, "Q8_K": 8}


@dataclass(frozen=True)
class MLXQuant:
    """One MLX quantized matrix, NumPy side.

    Attributes:
        weight: uint32 ``(rows, cols * bits / 32)`` packed codes.
        scales: float32 ``(rows, cols / group_size)`` for affine; uint8 exponent/E4M3 bytes for
            the float modes.
        biases: float32 like ``scales`` (affine), else None.
        bits, group_size, mode: MLX's quantization parameters.
        cols: row length in weights.
    """

    weight: np.ndarray
    scales: np.ndarray
    biases: np.ndarray | None
    bits: int
    group_size: int
    mode: str
    cols: int

    @property
    def params(self) -> dict:
        """The ``quantization`` entry of config.json for this tensor."""
        return {"group_size": self.group_size, "bits": self.bits, "mode": self.mode}


# -- code packing ---------------------------------------------------------------------------------
def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """(rows, cols) integer codes < 2**bits -> (rows, cols*bits/32) uint32, little-endian bit
    stream (MLX's layout for every bit width)."""
    rows, cols = codes.shape
    if (cols * bits) % 32:
        raise QuantInputError(f"{cols} codes of {bits} bits do not fill whole 32-bit words")
    c = np.ascontiguousarray(codes, dtype=np.uint8)
    if bits == 8:
        return c.view("<u4").copy()
    if bits == 4:
        b = c.reshape(rows, -1, 2)
        return (b[..., 0] | (b[..., 1] << 4)).view("<u4").copy()
    bitplanes = (c[..., None] >> np.arange(bits, dtype=np.uint8)) & 1    # (rows, cols, bits)
    return np.packbits(bitplanes.reshape(rows, cols * bits), axis=-1, bitorder="little").view("<u4")


def unpack_codes(weight: np.ndarray, bits: int, cols: int) -> np.ndarray:
    """The inverse of :func:`pack_codes`: (rows, words) uint32 -> (rows, cols) uint8."""
    w = np.ascontiguousarray(weight, dtype="<u4")
    rows = w.shape[0]
    if w.shape[-1] * 32 != cols * bits:
        raise QuantInputError(f"{w.shape[-1]} words per row do not hold {cols} codes of {bits} bits")
    b = w.view(np.uint8).reshape(rows, -1)
    if bits == 8:
        return b.copy()
    if bits == 4:
        return np.stack([b & 15, b >> 4], axis=-1).reshape(rows, cols)
    planes = np.unpackbits(b, axis=-1, bitorder="little").reshape(rows, cols, bits)
    return (planes << np.arange(bits, dtype=np.uint8)).sum(-1, dtype=np.uint8)


# -- GGUF -> MLX ----------------------------------------------------------------------------------
def _f16(b: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(b).view("<f2").astype(F32).reshape(b.shape[0], -1)


def _legacy(raw: np.ndarray, qtype: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(n_blocks, type_size) -> codes (n, 32), scale (n,), bias (n,), bits."""
    rec = np.ascontiguousarray(raw).view(BLOCK_LAYOUT[qtype]).reshape(-1)
    d = rec["d"].astype(F32)
    if qtype == "Q8_0":
        return (rec["qs"].view(np.uint8) ^ np.uint8(0x80)), d, d * F32(-128), 8
    q = unpack_qs(rec["qs"])
    if "qh" in BLOCK_LAYOUT[qtype].names:
        q = q | unpack_qh(rec["qh"])
    bits = 5 if "qh" in BLOCK_LAYOUT[qtype].names else 4
    if qtype in ("Q4_1", "Q5_1"):
        return q, d, rec["m"].astype(F32), bits
    return q, d, d * F32(-(1 << (bits - 1))), bits


def from_gguf(raw: np.ndarray, qtype: str, cols: int) -> MLXQuant:
    """GGUF blocks of one matrix, ``raw`` (rows, row_bytes) uint8, -> the same codes as an MLX
    quantized matrix with float32 parameters. Raises QuantTypeError for types MLX cannot hold
    exactly (see :data:`REQUANT_BITS`)."""
    t = get_type(qtype)
    if t.name not in EXACT_FROM_GGUF:
        raise QuantTypeError(f"{t.name}: MLX has no exact equivalent (requantize instead)")
    raw = np.ascontiguousarray(raw, dtype=np.uint8)
    rows = raw.shape[0]
    if raw.shape[1] != t.row_bytes(cols) or cols % t.block_size:
        raise QuantInputError(f"{t.name}: {raw.shape[1]} bytes per row do not hold {cols} weights")
    blocks = raw.reshape(-1, t.type_size)
    nb = blocks.shape[0]
    if t.name in ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"):
        q, d, b, bits = _legacy(blocks, t.name)
        return MLXQuant(pack_codes(q.reshape(rows, cols), bits), d.reshape(rows, -1),
                        b.reshape(rows, -1), bits, 32, "affine", cols)
    if t.name in ("Q4_K", "Q5_K"):
        codec = Q4_K if t.name == "Q4_K" else Q5_K
        d = _f16(blocks[:, 0:2])                                  # (nb, 1)
        dmin = _f16(blocks[:, 2:4])
        sc, m = unpack_scales_k4(blocks[:, 4:16])                 # (nb, 8) uint8
        scale = d * sc.astype(F32)                                # exact: 11 x 6 bits
        bias = -(dmin * m.astype(F32))
        q = codec._codes(blocks)                                   # (nb, 256)
        bits = 4 if t.name == "Q4_K" else 5
        return MLXQuant(pack_codes(q.reshape(rows, cols), bits), scale.reshape(rows, -1),
                        bias.reshape(rows, -1), bits, 32, "affine", cols)
    if t.name in ("TQ1_0", "TQ2_0"):
        from .api import dequantize

        x = dequantize(raw, t.name, (rows, cols)).reshape(nb, 256)
        d = _f16(blocks[:, t.type_size - 2:])                     # (nb, 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            trit = np.where(d != 0, np.rint(x / d), F32(0)) + F32(1)  # x = k*d exactly
        scale = np.repeat(d, 2, axis=1)                           # two groups of 128
        return MLXQuant(pack_codes(trit.astype(np.uint8).reshape(rows, cols), 2),
                        scale.reshape(rows, -1), (-scale).reshape(rows, -1), 2, 128, "affine", cols)
    if t.name == "MXFP4":
        qs = blocks[:, 1:17]
        codes = np.concatenate([qs & 15, qs >> 4], axis=1)       # (nb, 32) weight order
        return MLXQuant(pack_codes(codes.reshape(rows, cols), 4),
                        blocks[:, 0].reshape(rows, -1).copy(), None, 4, 32, "mxfp4", cols)
    # NVFP4: 4 sub-blocks of 16; qs[8s + j] holds weights j (low) and j + 8 (high) of sub-block s
    qs = blocks[:, 4:36].reshape(nb, 4, 8)
    codes = np.concatenate([qs & 15, qs >> 4], axis=2)           # (nb, 4, 16)
    s = blocks[:, 0:4].copy()
    s[s == 0x7F] = 0                                              # ggml reads 0x7F as 0
    return MLXQuant(pack_codes(codes.reshape(rows, cols), 4), s.reshape(rows, -1), None, 4, 16,
                    "nvfp4", cols)


def merge_groups(q: MLXQuant, max_group: int = 128) -> MLXQuant:
    """Double the group size while neighbouring groups have bit-identical scales and biases (a
    Q4_1 file made from a g64 MLX model comes back as g64). Values are unchanged."""
    if q.mode != "affine" or q.biases is None:
        return q
    s, b, g = q.scales, q.biases, q.group_size
    while g < max_group and s.shape[1] % 2 == 0:
        sv, bv = s.view(np.uint32), b.view(np.uint32)
        if not (np.array_equal(sv[:, 0::2], sv[:, 1::2]) and np.array_equal(bv[:, 0::2], bv[:, 1::2])):
            break
        s, b, g = s[:, 0::2].copy(), b[:, 0::2].copy(), g * 2
    return replace(q, scales=s, biases=b, group_size=g)


def round_to_dtype(x: np.ndarray, dtype: str) -> np.ndarray:
    """float32 values rounded to ``dtype`` ("float16", "bfloat16", "float32") and back."""
    x = np.asarray(x, dtype=F32)
    if dtype == "float32":
        return x
    if dtype == "float16":
        with np.errstate(over="ignore"):
            return x.astype(np.float16).astype(F32)
    if dtype == "bfloat16":
        from ..formats.hf import bf16_to_f32, f32_to_bf16

        return bf16_to_f32(f32_to_bf16(x))
    raise QuantTypeError(f"unknown dtype {dtype!r} (float16, bfloat16, float32)")


def cast_params(q: MLXQuant, dtype: str) -> tuple[MLXQuant, bool]:
    """Round affine scales/biases to ``dtype`` (values stay float32 arrays holding ``dtype``
    values). Returns the new tensor and whether nothing changed (the cast was exact)."""
    if q.mode != "affine" or dtype == "float32":
        return q, True
    s, b = round_to_dtype(q.scales, dtype), round_to_dtype(q.biases, dtype)
    same = (np.array_equal(s.view(np.uint32), np.asarray(q.scales, F32).view(np.uint32))
            and np.array_equal(b.view(np.uint32), np.asarray(q.biases, F32).view(np.uint32)))
    return replace(q, scales=s, biases=b), same


# -- MLX side: values, requantization -------------------------------------------------------------
def dequantize_mlx(q: MLXQuant) -> np.ndarray:
    """float32 values of an MLX quantized matrix, computed by ``mx.dequantize`` (float32)."""
    import mlx.core as mx

    scales = mx.array(q.scales)
    biases = None if q.biases is None else mx.array(np.asarray(q.biases, F32))
    if q.mode == "affine":
        scales = scales.astype(mx.float32)
    out = mx.dequantize(mx.array(q.weight), scales, biases, group_size=q.group_size, bits=q.bits,
                        mode=q.mode, dtype=mx.float32)
    return np.array(out)


def quantize_mlx(x: np.ndarray, bits: int, group_size: int, mode: str = "affine",
                 dtype: str = "float32") -> MLXQuant:
    """``mx.quantize`` of a float matrix after casting it to ``dtype`` (as mlx-lm casts the
    model before quantizing): affine scales/biases come out in ``dtype``, returned as float32."""
    import mlx.core as mx

    check_params(bits, group_size, mode, x.shape[-1], "tensor")
    w = mx.array(np.ascontiguousarray(x, dtype=F32)).astype(getattr(mx, dtype))
    res = mx.quantize(w, group_size=group_size, bits=bits, mode=mode)
    weight, scales = np.array(res[0]), res[1]
    biases = None
    if mode == "affine":
        scales = np.array(scales.astype(mx.float32))
        biases = np.array(res[2].astype(mx.float32))
    else:
        scales = np.array(scales)
    return MLXQuant(weight, scales, biases, bits, group_size, mode, int(x.shape[-1]))


def check_params(bits: int, group_size: int, mode: str, cols: int, name: str) -> None:
    """Raise QuantInputError (naming ``name``) for parameters MLX refuses for a row of ``cols``."""
    if mode not in MODES:
        raise QuantInputError(f"{name}: unknown quantization mode {mode!r} ({', '.join(MODES)})")
    if mode == "affine":
        if bits not in AFFINE_BITS or group_size not in AFFINE_GROUPS:
            raise QuantInputError(f"{name}: affine quantization takes bits {AFFINE_BITS} and group "
                                  f"sizes {AFFINE_GROUPS}, not {bits} bits / group {group_size}")
    elif (bits, group_size) != MODE_GEOMETRY[mode]:
        b, g = MODE_GEOMETRY[mode]
        raise QuantInputError(f"{name}: mode {mode} is {b} bits in groups of {g}, not {bits}/{group_size}")
    if cols % group_size:
        raise QuantInputError(f"{name}: rows of {cols} weights are not a multiple of the "
                              f"{mode} group size {group_size}")


# -- MLX -> GGUF ----------------------------------------------------------------------------------
def _fits_f16(x: np.ndarray) -> bool:
    x = np.asarray(x, dtype=F32)
    with np.errstate(over="ignore"):
        return bool(np.array_equal(x.astype(np.float16).astype(F32).view(np.uint32), x.view(np.uint32)))


def exact_gguf_type(q: MLXQuant) -> tuple[str | None, str]:
    """The GGUF type that holds ``q`` exactly, or (None, reason)."""
    if q.mode == "mxfp4":
        return "MXFP4", ""
    if q.mode == "nvfp4":
        if q.cols % 64:
            return None, f"NVFP4 needs rows that are a multiple of 64 (rows of {q.cols})"
        if (q.scales & 0x80).any() or (q.scales == 0x7F).any():
            return None, "negative or NaN E4M3 scales"
        return "NVFP4", ""
    if q.mode != "affine":
        return None, f"no GGUF type holds mode {q.mode}"
    target = {4: "Q4_1", 5: "Q5_1", 8: "Q8_0"}.get(q.bits)
    if target is None:
        return None, f"no GGUF type holds {q.bits}-bit affine codes"
    if q.group_size % 32:
        return None, f"group size {q.group_size} is not a multiple of 32"
    if target == "Q8_0":
        if not (_fits_f16(q.scales) and np.array_equal(q.biases, q.scales * F32(-128))):
            return None, "8-bit affine biases are not -128*scale (Q8_0 is symmetric)"
        return target, ""
    if not (_fits_f16(q.scales) and _fits_f16(q.biases)):
        return None, "scales/biases are not all float16 values"
    return target, ""


def to_gguf(q: MLXQuant, qtype: str) -> np.ndarray:
    """Encode ``q`` as GGUF blocks of ``qtype`` (from :func:`exact_gguf_type`) -> (rows,
    row_bytes) uint8."""
    rows, cols = q.weight.shape[0], q.cols
    codes = unpack_codes(q.weight, q.bits, cols)
    if qtype == "MXFP4":
        c = codes.reshape(-1, 32)
        out = np.empty((c.shape[0], 17), np.uint8)
        out[:, 0] = q.scales.reshape(-1)
        out[:, 1:] = c[:, :16] | (c[:, 16:] << 4)
        return out.reshape(rows, -1)
    if qtype == "NVFP4":
        c = codes.reshape(-1, 4, 16)
        out = np.empty((c.shape[0], 36), np.uint8)
        out[:, 0:4] = q.scales.reshape(-1, 4)
        out[:, 4:] = (c[..., :8] | (c[..., 8:] << 4)).reshape(-1, 32)
        return out.reshape(rows, -1)
    per = q.group_size // 32
    d = np.repeat(q.scales, per, axis=1).reshape(-1)                # one per 32-block
    m = np.repeat(q.biases, per, axis=1).reshape(-1)
    c = codes.reshape(-1, 32)
    rec = np.empty(c.shape[0], BLOCK_LAYOUT[qtype])
    rec["d"] = d
    if qtype == "Q8_0":
        rec["qs"] = (c ^ np.uint8(0x80)).view(np.int8)
    else:
        rec["m"] = m
        from .numpy.legacy import pack_qs, pack_qh

        rec["qs"] = pack_qs(c)
        if qtype == "Q5_1":
            rec["qh"] = pack_qh(c)
    return rec.view(np.uint8).reshape(rows, -1)


def nearest_gguf_type(q: MLXQuant) -> str:
    """The GGUF type a non-exact MLX tensor is requantized to: the K-quant of the same bits
    where rows allow (multiples of 256), else the nearest legacy type not coarser."""
    bits = q.bits
    k_ok = q.cols % 256 == 0
    if q.mode in ("mxfp8",) or bits >= 7:
        return "Q8_0"
    table = {1: ("Q2_K", "Q4_0"), 2: ("Q2_K", "Q4_0"), 3: ("Q3_K", "Q4_1"), 4: ("Q4_K", "Q4_1"),
             5: ("Q5_K", "Q5_1"), 6: ("Q6_K", "Q8_0")}
    k, legacy = table[bits]
    return k if k_ok else legacy
