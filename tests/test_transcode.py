"""GGUF blocks <-> MLX quantized tensors with the same codes: the math, checked bit for bit.

The reference for GGUF values is ggml's own ``to_float`` (the oracle); the reference for MLX
values is ``mx.dequantize`` in float32. Codes are packed the way ``mx.quantize`` packs them.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import mlxquant
from mlxquant.quant.transcode import (
    EXACT_FROM_GGUF, MLXQuant, cast_params, dequantize_mlx, exact_gguf_type, from_gguf,
    merge_groups, pack_codes, quantize_mlx, to_gguf, unpack_codes,
)
from mlxquant.testing.inputs import synthetic_families

mx = pytest.importorskip("mlx.core")

SIGNED_ZERO = ("Q4_0", "Q5_0", "Q8_0", "TQ1_0", "TQ2_0")  # (q - k)*d: -0.0 when d <= 0
FAMILIES = {k: v for k, v in synthetic_families(rows=16, cols=512).items() if k != "huge"}


@pytest.mark.parametrize("bits,group", list(itertools.product((2, 3, 4, 5, 6, 8), (32, 64, 128))))
def test_packing_matches_mx_quantize(bits, group):
    rng = np.random.default_rng(bits * 1000 + group)
    codes = rng.integers(0, 2**bits, (4, 256)).astype(np.uint8).reshape(4, -1, group)
    codes[:, :, 0], codes[:, :, 1] = 0, 2**bits - 1  # min and max in every group: scale = ±1
    codes = codes.reshape(4, 256)
    q, s, b = mx.quantize(mx.array(codes.astype(np.float32)), group_size=group, bits=bits)
    s, b = np.array(s), np.array(b)
    # mx.quantize may flip the sign of the scale (codes become max - code)
    expect = np.where(np.repeat(s, group, 1) < 0, 2**bits - 1 - codes, codes).astype(np.uint8)
    assert np.array_equal(np.array(q), pack_codes(expect, bits))
    assert np.array_equal(unpack_codes(np.array(q), bits, 256), expect)


@pytest.mark.parametrize("qtype", EXACT_FROM_GGUF)
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_gguf_to_mlx_is_bit_exact(oracle, qtype, family):
    x = FAMILIES[family]
    raw = mlxquant.quantize(x, qtype)
    ggml = oracle.dequantize(raw, qtype, x.shape)
    q = from_gguf(raw, qtype, x.shape[1])
    got = dequantize_mlx(q)
    assert np.array_equal(got, ggml), f"{qtype}/{family}: {(got != ggml).sum()} values differ"
    bits_differ = got.view(np.uint32) != ggml.view(np.uint32)
    if qtype in SIGNED_ZERO:
        # ggml's (q-8)*d is -0.0 for q = 8 and d < 0; scale*q + bias can only give +0.0 there
        assert (ggml[bits_differ] == 0).all() and (got[bits_differ] == 0).all()
    else:
        assert not bits_differ.any(), f"{qtype}/{family}: {bits_differ.sum()} values differ in bits"
    # and merging equal neighbouring groups changes nothing
    assert np.array_equal(dequantize_mlx(merge_groups(q)).view(np.uint32), got.view(np.uint32))


def test_legacy_scales_are_float16_exact():
    x = FAMILIES["normal"]
    for qtype in ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"):
        _, exact = cast_params(from_gguf(mlxquant.quantize(x, qtype), qtype, 512), "float16")
        assert exact, qtype
    # K-quant sub-block scales d*sc need more than float16's 11 significant bits
    _, exact = cast_params(from_gguf(mlxquant.quantize(x, "Q4_K"), "Q4_K", 512), "float16")
    assert not exact


@pytest.mark.parametrize("bits,group", [(4, 32), (4, 64), (4, 128), (5, 64), (5, 128)])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_mlx_affine_to_gguf_round_trip(oracle, bits, group, dtype):
    x = FAMILIES["normal"]
    q = quantize_mlx(x, bits, group, dtype=dtype)
    qtype, why = exact_gguf_type(q)
    assert qtype == ("Q4_1" if bits == 4 else "Q5_1"), why
    raw = to_gguf(q, qtype)
    ggml = oracle.dequantize(raw, qtype, x.shape)
    mlx_vals = dequantize_mlx(q)
    assert np.array_equal(ggml.view(np.uint32), mlx_vals.view(np.uint32))
    back = merge_groups(from_gguf(raw, qtype, 512))
    assert back.group_size == group and back.bits == bits
    assert np.array_equal(back.weight, q.weight)
    assert np.array_equal(back.scales, q.scales) and np.array_equal(back.biases, q.biases)


def test_float32_scales_are_reported_not_exact():
    q = quantize_mlx(FAMILIES["normal"], 4, 64, dtype="float32")
    qtype, why = exact_gguf_type(q)
    assert qtype is None and "float16" in why


def test_mxfp4_round_trip(oracle):
    x = FAMILIES["student_t2"]
    q = quantize_mlx(x, 4, 32, mode="mxfp4")
    assert exact_gguf_type(q)[0] == "MXFP4"
    raw = to_gguf(q, "MXFP4")
    assert np.array_equal(oracle.dequantize(raw, "MXFP4", x.shape), dequantize_mlx(q))
    back = from_gguf(raw, "MXFP4", 512)
    assert np.array_equal(back.weight, q.weight) and np.array_equal(back.scales, q.scales)


def test_requantized_error_is_bounded():
    """mx.quantize's affine error stays within one step per group (MLX rounds the bias so that
    an edge of the group is exact, which can cost up to a full step elsewhere: measured 0.98-0.998)."""
    x = FAMILIES["normal"]
    for bits in (2, 3, 6):
        q = quantize_mlx(x, bits, 32)
        err = np.abs(dequantize_mlx(q) - x).reshape(16, -1, 32)
        step = np.abs(q.scales)[..., None]
        assert (err <= step * (1 + 1e-5)).all()


def test_bad_parameters():
    x = FAMILIES["normal"][:, :96]
    with pytest.raises(mlxquant.QuantInputError, match="multiple of"):
        quantize_mlx(x, 4, 64)
    with pytest.raises(mlxquant.QuantInputError, match="bits"):
        quantize_mlx(FAMILIES["normal"], 7, 64)
    with pytest.raises(mlxquant.QuantInputError, match="nvfp4"):
        quantize_mlx(FAMILIES["normal"], 4, 32, mode="nvfp4")
    with pytest.raises(mlxquant.QuantTypeError, match="Q6_K"):
        from_gguf(mlxquant.quantize(FAMILIES["normal"], "Q6_K"), "Q6_K", 512)
