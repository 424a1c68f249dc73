"""Unquantized float types: F32, F16, BF16 (one weight per "block").

BF16 rounding follows ggml's ``ggml_compute_fp32_to_bf16``: round to nearest even on the upper
16 bits; NaN never reaches a codec (the API rejects it).
"""

from __future__ import annotations

import numpy as np

from ..codec import Codec
from ..buffers import output
from .numeric import f16_to_f32


class F32(Codec, qtype="F32"):
    @classmethod
    def encode_blocks(cls, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x, dtype="<f4").view(np.uint8).reshape(-1, 4)

    @classmethod
    def decode_blocks(cls, blocks: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(blocks).view("<f4").astype(np.float32).reshape(-1, 1)


class F16(Codec, qtype="F16"):
    @classmethod
    def encode_blocks(cls, x: np.ndarray) -> np.ndarray:
        h = output((x.shape[0], 2), np.uint8).view("<f2")  # (n, 1)
        np.copyto(h, x, casting="same_kind")  # round to nearest even, as GGML_FP32_TO_FP16
        return h.view(np.uint8)

    @classmethod
    def decode_blocks(cls, blocks: np.ndarray) -> np.ndarray:
        h = np.ascontiguousarray(blocks).view("<u2")  # (n, 1)
        return f16_to_f32(h, output(h.shape, np.float32))


class BF16(Codec, qtype="BF16"):
    @classmethod
    def encode_blocks(cls, x: np.ndarray) -> np.ndarray:
        u = np.ascontiguousarray(x, dtype="<f4").view("<u4")
        # (u + 0x7fff + ((u >> 16) & 1)) >> 16: cannot overflow 32 bits for finite input (the
        # largest finite pattern is 0xff7fffff), and the API rejects NaN and Inf.
        t = u >> 16
        t &= np.uint32(1)
        t += np.uint32(0x7FFF)
        t += u
        t >>= 16
        h = output((x.shape[0], 2), np.uint8).view("<u2")  # (n, 1)
        np.copyto(h, t, casting="unsafe")  # the low 16 bits
        return h.view(np.uint8)

    @classmethod
    def decode_blocks(cls, blocks: np.ndarray) -> np.ndarray:
        h = np.ascontiguousarray(blocks).view("<u2")  # (n, 1)
        out = output(h.shape, np.float32)
        np.left_shift(h, 16, out=out.view(np.uint32), dtype=np.uint32)
        return out
