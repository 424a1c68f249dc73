"""MLX's own formats through mlxquant.quantize/dequantize: identical to mx.quantize, right shapes,
the error bound that follows from affine rounding, and named errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import mlxquant
from mlxquant.quant.mlx_native import AFFINE_BITS, AFFINE_GROUPS, parse_mlx_format

mx = pytest.importorskip("mlx.core")

SHAPES = [(4, 128), (3, 384)]


def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("bits,group,shape", list(itertools.product(AFFINE_BITS, AFFINE_GROUPS, SHAPES)))
def test_affine_equals_mx_quantize_and_error_bound(bits, group, shape):
    x = _x(shape)
    q = mlxquant.quantize(mx.array(x), f"MLX_Q{bits}_G{group}")
    ref = mx.quantize(mx.array(x), group_size=group, bits=bits, mode="affine")
    for a, b in zip(q, ref):
        assert np.array_equal(np.array(a), np.array(b))
    assert q.weight.shape == (shape[0], shape[1] * bits // 32)
    deq = np.array(mlxquant.dequantize(q, f"MLX_Q{bits}_G{group}", shape))
    assert deq.dtype == np.float32
    # affine rounding with clamping: each value is a grid point bias + scale*k, k in [0, 2^bits-1],
    # and the nearest one to w: within half a step, unless w lies beyond the grid's end point.
    scale = np.repeat(np.array(q.scales), group, axis=1)
    bias = np.repeat(np.array(q.biases), group, axis=1)
    k = np.rint((deq - bias) / scale)
    assert np.all((k >= 0) & (k <= 2**bits - 1))
    tol = 1e-5 * (1 + np.abs(x))
    inside = np.abs(deq - x) <= np.abs(scale) / 2 + tol
    t = (x - bias) / scale  # position of w on the grid, in steps
    beyond = ((k == 0) & (t <= 0.5)) | ((k == 2**bits - 1) & (t >= 2**bits - 1.5))
    assert np.all(inside | beyond)


@pytest.mark.parametrize("name,mode,bits,group", [
    ("MLX_MXFP4", "mxfp4", 4, 32), ("MLX_NVFP4", "nvfp4", 4, 16), ("MLX_MXFP8", "mxfp8", 8, 32)])
def test_fp_modes_equal_mx(name, mode, bits, group):
    x = _x((4, 256), seed=1)
    q = mlxquant.quantize(x, name)
    assert isinstance(q.weight, np.ndarray) and q.biases is None
    w, s = mx.quantize(mx.array(x), group_size=group, bits=bits, mode=mode)
    assert np.array_equal(q.weight, np.array(w)) and np.array_equal(q.scales, np.array(s))
    deq = mlxquant.dequantize(q, name, x.shape)
    ref = mx.dequantize(w, s, group_size=group, bits=bits, mode=mode, dtype=mx.float32)
    assert np.array_equal(deq, np.array(ref))


def test_spellings():
    assert parse_mlx_format("mlx4") == parse_mlx_format("MLX_Q4_G64")
    assert parse_mlx_format("mlx_mxfp4").mode == "mxfp4"
    assert parse_mlx_format("Q4_K") is None
    assert parse_mlx_format("MLX_Q4_G64").bits_per_weight == 4.5


@pytest.mark.parametrize("name", ["MLX_Q7_G64", "MLX_Q4_G16", "mlx7", "MLX_FOO"])
def test_bad_names(name):
    with pytest.raises(mlxquant.QuantTypeError, match="MLX"):
        mlxquant.quantize(_x((2, 128)), name)


def test_bad_inputs_named():
    with pytest.raises(mlxquant.QuantInputError, match="MLX_Q4_G64.*multiple of the group size 64"):
        mlxquant.quantize(_x((2, 96)), "mlx4")
    x = _x((2, 128))
    x[1, 5] = np.inf
    with pytest.raises(mlxquant.QuantInputError, match=r"MLX_Q4_G64.*NaN or Inf.*row 1, col 5"):
        mlxquant.quantize(x, "mlx4")
    with pytest.raises(mlxquant.QuantTypeError, match="MLX_Q4_G64.*no numpy codec"):
        mlxquant.quantize(_x((2, 128)), "mlx4", backend="numpy")
    q = mlxquant.quantize(_x((2, 128)), "mlx4")
    with pytest.raises(mlxquant.QuantInputError, match="MLX_Q4_G64.*do not hold"):
        mlxquant.dequantize(q, "mlx4", (2, 256))
    with pytest.raises(mlxquant.QuantInputError, match="MLX_Q4_G64.*biases are missing"):
        mlxquant.dequantize(q[:2], "mlx4", (2, 128))
