"""MLX codecs: MLX bytes == NumPy bytes == ggml bytes, and MLX dequantize == NumPy dequantize.

Runs on MLX's CPU device here (no GPU on the project's machines); the same code runs on Metal.
"""

from __future__ import annotations

import numpy as np
import pytest

import mlxquant
from mlxquant.quant.types import get_type
from mlxquant.testing.inputs import imatrices, synthetic_families

mx = pytest.importorskip("mlx.core")

IMATRIX = [None, "meansq", "lognormal"]
SYNTH = synthetic_families()
# the 1-3 bit i-quants have their own file (tests/test_codecs_iq_mlx.py): ggml aborts the process
# on some of this file's inputs for them, and three require an imatrix
IQ_LOW = {"IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S"}
MLX_TYPES = [t for t in mlxquant.TYPES if "mlx" in mlxquant.codecs_for(t) and t not in IQ_LOW]


def _check(oracle, x: np.ndarray, qtype: str, imatrix_name: str | None, label: str) -> None:
    w = imatrices(x.shape[1])[imatrix_name] if imatrix_name else None
    ref = oracle.quantize(x, qtype, imatrix=w)
    got = mlxquant.quantize(mx.array(x), qtype, imatrix=w, backend="mlx")
    assert isinstance(got, mx.array) and got.dtype == mx.uint8
    got = np.array(got)
    if not np.array_equal(got, ref):
        t = get_type(qtype)
        bad = np.flatnonzero((got.reshape(-1, t.type_size) != ref.reshape(-1, t.type_size)).any(axis=1))
        pytest.fail(f"{qtype} {label} imatrix={imatrix_name}: MLX differs from ggml in {bad.size} blocks")
    assert np.array_equal(got, mlxquant.quantize(x, qtype, imatrix=w, backend="numpy"))
    deq = mlxquant.dequantize(mx.array(ref), qtype, x.shape, backend="mlx")
    assert isinstance(deq, mx.array)
    deq_np = mlxquant.dequantize(ref, qtype, x.shape, backend="numpy")
    assert np.array_equal(np.array(deq).view(np.uint32), deq_np.view(np.uint32)), f"{qtype} {label}: dequantize"


@pytest.mark.parametrize("imatrix_name", IMATRIX)
@pytest.mark.parametrize("family", sorted(SYNTH))
@pytest.mark.parametrize("qtype", MLX_TYPES)
def test_mlx_synthetic_bytes(oracle, qtype, family, imatrix_name):
    _check(oracle, SYNTH[family], qtype, imatrix_name, family)


@pytest.mark.parametrize("imatrix_name", IMATRIX)
@pytest.mark.parametrize("qtype", MLX_TYPES)
def test_mlx_real_tensors(oracle, real, qtype, imatrix_name):
    for name, x in real.items():
        _check(oracle, x, qtype, imatrix_name, name)


def test_mlx_numpy_input_gives_numpy_output():
    x = SYNTH["normal"]
    out = mlxquant.quantize(x, "F16", backend="mlx")
    assert isinstance(out, np.ndarray)
    back = mlxquant.dequantize(out, "F16", x.shape, backend="mlx")
    assert isinstance(back, np.ndarray) and back.dtype == np.float32


def test_mlx_bad_input_named():
    x = mx.array(SYNTH["normal"])
    x = mx.where(mx.arange(x.size).reshape(x.shape) == 37, mx.array(float("nan")), x)
    with pytest.raises(mlxquant.QuantInputError, match=r"F16.*NaN or Inf.*row 0, col 37"):
        mlxquant.quantize(x, "F16", backend="mlx")
    with pytest.raises(mlxquant.QuantInputError, match="F16.*2-D"):
        mlxquant.quantize(mx.zeros((4,)), "F16", backend="mlx")
    with pytest.raises(mlxquant.QuantInputError, match="F16.*bytes"):
        mlxquant.dequantize(mx.zeros((7,), dtype=mx.uint8), "F16", (2, 2), backend="mlx")


def test_auto_backend_is_not_mlx_on_cpu():
    from mlxquant.quant.api import _backend, mlx_on_gpu

    if not mlx_on_gpu():
        assert _backend("auto", get_type("Q4_K")) in ("numpy", "numba")
