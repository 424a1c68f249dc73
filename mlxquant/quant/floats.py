"""Unquantized float types: F32, F16, BF16 (one weight per "block").

BF16 rounding follows ggml's ``ggml_compute_fp32_to_bf16``: round to nearest even on the upper
16 bits; NaN never reaches a codec (the API rejects it).
"""

from __future__ import annotations

import numpy as np

from .codec import Codec


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
        return np.ascontiguousarray(x.astype("<f2")).view(np.uint8).reshape(-1, 2)

    @classmethod
    def decode_blocks(cls, blocks: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(blocks).view("<f2").astype(np.float32).reshape(-1, 1)


class BF16(Codec, qtype="BF16"):
    @classmethod
    def encode_blocks(cls, x: np.ndarray) -> np.ndarray:
        u = np.ascontiguousarray(x, dtype="<f4").view("<u4")
        # (u + 0x7fff + ((u >> 16) & 1)) >> 16: cannot overflow 32 bits for finite input (the
        # largest finite pattern is 0xff7fffff), and the API rejects NaN and Inf.
        h = ((u + (np.uint32(0x7FFF) + ((u >> 16) & np.uint32(1)))) >> 16).astype("<u2")
        return h.view(np.uint8).reshape(-1, 2)

    @classmethod
    def decode_blocks(cls, blocks: np.ndarray) -> np.ndarray:
        h = np.ascontiguousarray(blocks).view("<u2").astype(np.uint32) << 16
        return h.view(np.float32).reshape(-1, 1)
