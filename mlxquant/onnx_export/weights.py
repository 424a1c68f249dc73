"""Linear weights for ONNX: block quantization (int4 for ``MatMulNBits``, int8 for QDQ) and the
exact carry-over of a GGUF's or MLX folder's integer codes.

Facts this module relies on (onnxruntime's contrib op spec, checked against onnxruntime 1.32 on
the CPU in the tests):

- ``com.microsoft.MatMulNBits`` computes ``A @ W.T`` with ``W[n, k] = (q - zero_point) * scale``
  per block of ``block_size`` weights along K. ``B`` is uint8 ``(N, ceil(K / block), block * bits
  / 8)``: weight ``2i`` of a block in the low nibble of byte ``i``, weight ``2i + 1`` in the high
  one. ``scales`` is ``(N, k_blocks)`` in A's type. ``zero_points`` is either uint8 packed like
  ``B`` along each row, ``(N, ceil(k_blocks / 2))``, or unpacked floats ``(N, k_blocks)`` in
  A's type; absent, it is ``2**(bits - 1)`` (8 for 4-bit). A ``K`` that is not a multiple of
  ``block_size`` is padded inside the last block (the padding codes are never read).
- ONNX ``DequantizeLinear`` (opset 21) takes a blocked int8 tensor with ``axis`` and
  ``block_size``: ``W = q * scale`` with scales ``(ceil(K / block), N)`` for ``W.T`` ``(K, N)``.

GGUF/MLX blocks reach this module as :class:`~mlxquant.quant.transcode.MLXQuant` (``value =
scale * q + bias`` per group; :func:`mlxquant.quant.transcode.from_gguf` gives that form for every
GGUF type whose codes MLX keeps). In MatMulNBits' form ``(q - z) * s`` the zero point is
``z = -bias / scale``: Q4_0 gives ``z = 8`` exactly (ggml's own ``(q - 8) * d``), Q4_1 / Q4_K /
MLX affine give an integer ``z`` only by chance; otherwise the caller requantizes, or keeps the
codes with float zero points when asked (one rounding of ``-bias/scale``, value error ~1e-7
relative, reported per tensor; slower in onnxruntime's CPU kernel).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import QuantInputError
from ..quant.transcode import MLXQuant, unpack_codes

F32 = np.float32
BLOCK_SIZES = (16, 32, 64, 128, 256)


@dataclass(frozen=True)
class BlockQuant:
    """One block-quantized matrix ``(rows = N, cols = K)`` in ONNX Runtime's terms.

    Attributes:
        codes: ``(N, k_blocks * block_size)`` uint8 (4-bit: 0..15) or int8 (8-bit, symmetric);
            columns past ``cols`` are padding (zero point codes, value 0).
        scales: ``(N, k_blocks)`` float32.
        zero_points: ``(N, k_blocks)`` uint8 (integer zero points), float32 (float zero points)
            or None (the default: 8 for 4-bit, 0 for int8).
        bits: 4 or 8.
        block_size: weights per block along K.
        cols: K.
    """

    codes: np.ndarray
    scales: np.ndarray
    zero_points: np.ndarray | None
    bits: int
    block_size: int
    cols: int

    @property
    def rows(self) -> int:
        return int(self.codes.shape[0])

    @property
    def k_blocks(self) -> int:
        return int(self.scales.shape[1])

    def zero_point_values(self) -> np.ndarray:
        """float32 ``(N, k_blocks)`` zero points, the default filled in."""
        if self.zero_points is None:
            return np.full(self.scales.shape, 8.0 if self.bits == 4 else 0.0, F32)
        return self.zero_points.astype(F32)

    def dequantize(self) -> np.ndarray:
        """float32 ``(N, K)``: ``(q - z) * s`` in float32, as onnxruntime computes it."""
        q = self.codes.astype(F32).reshape(self.rows, self.k_blocks, self.block_size)
        w = (q - self.zero_point_values()[:, :, None]) * self.scales[:, :, None]
        return np.ascontiguousarray(w.reshape(self.rows, -1)[:, :self.cols])

    # -- onnxruntime layouts -------------------------------------------------------------------
    def matmulnbits_b(self) -> np.ndarray:
        """``B`` for MatMulNBits (4-bit): uint8 ``(N, k_blocks, block_size / 2)``."""
        c = self.codes
        return (c[:, 0::2] | (c[:, 1::2] << 4)).reshape(self.rows, self.k_blocks, self.block_size // 2)

    def matmulnbits_zero_points(self) -> np.ndarray | None:
        """``zero_points`` for MatMulNBits: uint8 ``(N, ceil(k_blocks / 2))`` nibble-packed per
        row, float32 ``(N, k_blocks)``, or None."""
        z = self.zero_points
        if z is None or z.dtype != np.uint8:
            return z
        padded = np.zeros((self.rows, 2 * ((self.k_blocks + 1) // 2)), np.uint8)
        padded[:, :self.k_blocks] = z
        return padded[:, 0::2] | (padded[:, 1::2] << 4)


def unpack_matmulnbits(b: np.ndarray, cols: int) -> np.ndarray:
    """The inverse of :meth:`BlockQuant.matmulnbits_b`: ``(N, K)`` uint8 codes."""
    n = b.shape[0]
    flat = b.reshape(n, -1)
    return np.stack([flat & 15, flat >> 4], axis=-1).reshape(n, -1)[:, :cols]


def _blocks(x: np.ndarray, block_size: int) -> np.ndarray:
    """``(N, K)`` float32 -> ``(N, k_blocks, block_size)``, zero-padded along K."""
    x = np.ascontiguousarray(x, dtype=F32)
    n, k = x.shape
    kb = -(-k // block_size)
    if kb * block_size != k:
        x = np.concatenate([x, np.zeros((n, kb * block_size - k), F32)], axis=1)
    return x.reshape(n, kb, block_size)


def check_block_size(block_size: int, name: str = "block size") -> None:
    if block_size not in BLOCK_SIZES:
        raise QuantInputError(f"{name} {block_size}: MatMulNBits takes a power of two from 16 to 256 "
                              f"({', '.join(map(str, BLOCK_SIZES))})")


def quantize_int4(x: np.ndarray, block_size: int, symmetric: bool = False) -> BlockQuant:
    """4-bit block quantization of a float ``(N, K)`` matrix (min/max per block).

    Asymmetric (default): ``s = (max - min) / 15`` over the block with 0 included in the range,
    ``z = rint(-min / s)`` (0..15), ``q = clip(rint(x / s) + z, 0, 15)``. Symmetric: Q4_0's rule,
    ``s = m / -8`` where ``m`` is the value of largest magnitude, ``q = clip(rint(x / s) + 8, 0,
    15)``, zero point 8 (left to MatMulNBits' default). A zero block gets ``s = 0``.
    """
    check_block_size(block_size)
    if not np.isfinite(x).all():
        raise QuantInputError("cannot quantize non-finite weights to int4")
    blk = _blocks(x, block_size)                                     # (N, kb, bs)
    n, kb, _ = blk.shape
    if symmetric:
        idx = np.abs(blk).argmax(axis=-1)[..., None]
        m = np.take_along_axis(blk, idx, axis=-1)[..., 0]            # (N, kb) signed
        s = (m / F32(-8)).astype(F32)
        inv = np.divide(F32(1), s, out=np.zeros_like(s), where=s != 0)
        q = np.clip(np.rint(blk * inv[..., None]) + F32(8), 0, 15).astype(np.uint8)
        return BlockQuant(q.reshape(n, -1), s, None, 4, block_size, x.shape[1])
    lo = np.minimum(blk.min(axis=-1), F32(0))
    hi = np.maximum(blk.max(axis=-1), F32(0))
    s = ((hi - lo) / F32(15)).astype(F32)
    inv = np.divide(F32(1), s, out=np.zeros_like(s), where=s != 0)
    z = np.clip(np.rint(-lo * inv), 0, 15).astype(F32)
    t = blk * inv[..., None]                                         # one scratch array, in place
    np.rint(t, out=t)
    t += z[..., None]
    np.clip(t, 0, 15, out=t)
    return BlockQuant(t.astype(np.uint8).reshape(n, -1), s, z.astype(np.uint8), 4, block_size, x.shape[1])


def quantize_int8(x: np.ndarray, block_size: int) -> BlockQuant:
    """Symmetric 8-bit block quantization (Q8_0's rule): ``s = amax / 127``, ``q = rint(x / s)``."""
    check_block_size(block_size)
    if not np.isfinite(x).all():
        raise QuantInputError("cannot quantize non-finite weights to int8")
    blk = _blocks(x, block_size)
    n = blk.shape[0]
    s = (np.abs(blk).max(axis=-1) / F32(127)).astype(F32)
    inv = np.divide(F32(1), s, out=np.zeros_like(s), where=s != 0)
    q = np.clip(np.rint(blk * inv[..., None]), -127, 127).astype(np.int8)
    return BlockQuant(q.reshape(n, -1), s, None, 8, block_size, x.shape[1])


def carry_over(q: MLXQuant, bits: int, block_size: int | None,
               float_zero_points: bool = False) -> tuple[BlockQuant | None, str]:
    """The codes of an affine MLX-form tensor (from a GGUF or an MLX folder) as a
    :class:`BlockQuant` without requantizing, with ``"exact"`` (codes, scales and integer zero
    points as stored) or ``"float zero points"`` (codes and scales as stored); or ``(None,
    reason)``.

    ``bits`` is the ONNX side's (4 or 8); ``block_size`` None accepts the source's group size.
    4-bit: zero points ``-bias / scale`` (left out when all are 8; uint8 when all are integers in
    0..15; else float32 when ``float_zero_points``, refused otherwise: onnxruntime 1.32's CPU
    MatMulNBits decodes ~5x slower with float zero points than with uint8 ones, measured on
    SmolLM2). 8-bit: only symmetric codes (``bias == -128 * scale``, Q8_0) -> int8.
    """
    if q.mode != "affine" or q.biases is None:
        return None, f"{q.mode} codes have no affine form"
    if q.bits != bits:
        return None, f"{q.bits}-bit codes, not {bits}-bit"
    if block_size is not None and q.group_size != block_size:
        return None, f"source blocks of {q.group_size}, block size {block_size} asked for"
    if q.group_size not in BLOCK_SIZES:
        return None, f"source blocks of {q.group_size} (MatMulNBits: {BLOCK_SIZES})"
    codes = unpack_codes(q.weight, q.bits, q.cols)                  # (N, K) uint8
    s = np.ascontiguousarray(q.scales, dtype=F32)
    b = np.ascontiguousarray(q.biases, dtype=F32)
    pad = s.shape[1] * q.group_size - q.cols
    if pad:
        return None, f"rows of {q.cols} are not whole blocks of {q.group_size}"
    if bits == 8:
        if not np.array_equal(b, s * F32(-128)):
            return None, "8-bit codes with a zero point other than 128 (only Q8_0-style symmetric codes map to int8)"
        return BlockQuant((codes ^ np.uint8(0x80)).view(np.int8), s, None, 8, q.group_size, q.cols), "exact"
    zero_scale = s == 0
    if (b[zero_scale] != 0).any():
        return None, "blocks with scale 0 and a non-zero offset"
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(zero_scale, F32(8), -b / s).astype(F32)
    if (z == 8).all():
        return BlockQuant(codes, s, None, 4, q.group_size, q.cols), "exact"
    if ((z == np.rint(z)) & (z >= 0) & (z <= 15)).all():
        return BlockQuant(codes, s, z.astype(np.uint8), 4, q.group_size, q.cols), "exact"
    if not np.isfinite(z).all():
        return None, "zero points out of range"
    if not float_zero_points:
        return None, "zero points -bias/scale are not integers (float_zero_points keeps the codes)"
    return BlockQuant(codes, s, z, 4, q.group_size, q.cols), "float zero points"


def errors(reference: np.ndarray, values: np.ndarray) -> tuple[float, float]:
    """max and mean ``|reference - values|`` (the difference in float32, the mean summed in
    float64); 0 for the same array."""
    if values is reference or values.size == 0:
        return 0.0, 0.0
    d = np.abs(np.subtract(reference, values, dtype=F32))
    return float(d.max()), float(d.mean(dtype=np.float64))
