"""Bad input raises a ValueError subclass that names the type and the problem; never a crash."""

from __future__ import annotations

import numpy as np
import pytest

import mlxquant
from mlxquant import QuantInputError, QuantTypeError

TYPES = ["Q4_0", "Q8_0", "Q4_K", "Q6_K", "IQ4_XS", "TQ1_0", "MXFP4", "F16"]


def _x(rows=2, cols=256):
    return np.random.default_rng(0).standard_normal((rows, cols)).astype(np.float32)


@pytest.mark.parametrize("qtype", TYPES)
def test_not_2d(qtype):
    for bad in (np.zeros(256, np.float32), np.zeros((2, 2, 256), np.float32)):
        with pytest.raises(QuantInputError, match=f"{qtype}.*2-D"):
            mlxquant.quantize(bad, qtype)


@pytest.mark.parametrize("qtype", [t for t in TYPES if t != "F16"])
def test_row_not_multiple_of_block(qtype):
    with pytest.raises(QuantInputError, match=f"{qtype}.*block size"):
        mlxquant.quantize(_x(cols=256 + 16), qtype)


@pytest.mark.parametrize("backend", ["auto", "numpy"])
@pytest.mark.parametrize("qtype", TYPES)
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite(qtype, value, backend):
    x = _x()
    x[1, 7] = value
    with pytest.raises(QuantInputError, match=rf"{qtype}.*NaN or Inf.*row 1, col 7"):
        mlxquant.quantize(x, qtype, backend=backend)


@pytest.mark.parametrize("qtype", TYPES)
def test_non_float_input(qtype):
    with pytest.raises(QuantInputError, match=f"{qtype}.*float"):
        mlxquant.quantize(np.ones((2, 256), dtype=np.int32), qtype)


@pytest.mark.parametrize("qtype", TYPES)
def test_imatrix_wrong_length_or_negative(qtype):
    x = _x()
    with pytest.raises(QuantInputError, match=f"{qtype}.*imatrix.*shape"):
        mlxquant.quantize(x, qtype, imatrix=np.ones(128, np.float32))
    with pytest.raises(QuantInputError, match=f"{qtype}.*imatrix.*shape"):
        mlxquant.quantize(x, qtype, imatrix=np.ones((2, 256), np.float32))
    w = np.ones(256, np.float32)
    w[3] = -1
    with pytest.raises(QuantInputError, match=f"{qtype}.*imatrix.*negative"):
        mlxquant.quantize(x, qtype, imatrix=w)
    w[3] = np.nan
    with pytest.raises(QuantInputError, match=f"{qtype}.*imatrix.*NaN"):
        mlxquant.quantize(x, qtype, imatrix=w)


@pytest.mark.parametrize("qtype", TYPES)
def test_wrong_byte_count(qtype):
    x = _x()
    q = mlxquant.quantize(x, qtype)
    for bad in (q.reshape(-1)[:-1], np.concatenate([q.reshape(-1), [0]]).astype(np.uint8)):
        with pytest.raises(QuantInputError, match=f"{qtype}.*bytes"):
            mlxquant.dequantize(bad, qtype, x.shape)
    with pytest.raises(QuantInputError, match=f"{qtype}"):
        mlxquant.dequantize(q.astype(np.int16), qtype, x.shape)
    # bytes objects work too
    assert mlxquant.dequantize(q.tobytes(), qtype, x.shape).shape == x.shape


def test_dequantize_bad_shape():
    q = mlxquant.quantize(_x(), "Q4_0")
    with pytest.raises(QuantInputError, match="Q4_0.*block size"):
        mlxquant.dequantize(q, "Q4_0", (4, 100))
    with pytest.raises(QuantInputError, match="Q4_0.*invalid shape"):
        mlxquant.dequantize(q, "Q4_0", (-2, 256))


@pytest.mark.parametrize("name", ["Q4_Z", "", "q9_k", 999, None, 3.5])
def test_unknown_type(name):
    with pytest.raises(QuantTypeError, match="unknown"):
        mlxquant.quantize(_x(), name)


def test_type_without_codec():
    with pytest.raises(QuantTypeError, match="Q1_0.*no numpy codec"):
        mlxquant.quantize(_x(), "Q1_0", imatrix=np.ones(256, np.float32))


def test_requires_imatrix():
    # IQ1_S requires an imatrix in ggml; asking without one must not reach a codec.
    with pytest.raises(QuantInputError, match="IQ1_S.*importance matrix"):
        mlxquant.quantize(_x(), "IQ1_S")


def test_unknown_backend():
    with pytest.raises(QuantTypeError, match="Q4_0.*backend"):
        mlxquant.quantize(_x(), "Q4_0", backend="cuda")


def test_errors_are_value_errors():
    assert issubclass(QuantInputError, ValueError) and issubclass(QuantTypeError, ValueError)


def test_case_insensitive_and_ids():
    x = _x()
    a = mlxquant.quantize(x, "q4_0")
    b = mlxquant.quantize(x, 2)
    assert np.array_equal(a, b)
    assert mlxquant.get_type("iq4_xs").name == "IQ4_XS"


def test_non_finite_found_across_row_chunks():
    # large enough to be split over several row chunks (and threads): the error names the first
    # bad row of the whole matrix, and the pool keeps working afterwards
    x = np.random.default_rng(1).standard_normal((2048, 512)).astype(np.float32)
    x[1500, 3] = np.nan
    x[700, 9] = -np.inf
    with pytest.raises(QuantInputError, match=r"Q4_K.*NaN or Inf.*row 700, col 9"):
        mlxquant.quantize(x, "Q4_K")
    x[700, 9] = 0.0
    with pytest.raises(QuantInputError, match=r"Q4_K.*row 1500, col 3"):
        mlxquant.quantize(x, "Q4_K")
    x[1500, 3] = 0.0
    assert mlxquant.quantize(x, "Q8_0").shape == (2048, 512 // 32 * 34)
