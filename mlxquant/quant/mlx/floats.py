"""F32, F16, BF16 on MLX arrays (twin of ``mlxquant/quant/numpy/floats.py``)."""

from __future__ import annotations

import mlx.core as mx

from ..codec import Codec


class F32(Codec, qtype="F32", backend="mlx"):
    @classmethod
    def encode_blocks(cls, x: mx.array) -> mx.array:
        return x.astype(mx.float32).view(mx.uint8).reshape(-1, 4)

    @classmethod
    def decode_blocks(cls, blocks: mx.array) -> mx.array:
        return blocks.reshape(-1).view(mx.float32).reshape(-1, 1)


class F16(Codec, qtype="F16", backend="mlx"):
    @classmethod
    def encode_blocks(cls, x: mx.array) -> mx.array:
        return x.astype(mx.float16).view(mx.uint8).reshape(-1, 2)

    @classmethod
    def decode_blocks(cls, blocks: mx.array) -> mx.array:
        return blocks.reshape(-1).view(mx.float16).astype(mx.float32).reshape(-1, 1)


class BF16(Codec, qtype="BF16", backend="mlx"):
    @classmethod
    def encode_blocks(cls, x: mx.array) -> mx.array:
        # ggml's round-to-nearest-even on the upper 16 bits (finite input only).
        u = x.astype(mx.float32).view(mx.uint32)
        h = ((u + (0x7FFF + ((u >> 16) & 1))) >> 16).astype(mx.uint16)
        return h.view(mx.uint8).reshape(-1, 2)

    @classmethod
    def decode_blocks(cls, blocks: mx.array) -> mx.array:
        h = blocks.reshape(-1).view(mx.uint16).astype(mx.uint32) << 16
        return h.view(mx.float32).reshape(-1, 1)
