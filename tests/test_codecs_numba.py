"""Compiled CPU codecs (Numba): bytes == ggml's, dequantize == ggml's to_float, every type.

The same input families and importance matrices as tests/test_codecs_oracle.py (the NumPy
reference), plus what is particular to compiled kernels: chunking across threads, odd row
counts, and the choice ``backend="auto"`` makes on a CPU.
"""

from __future__ import annotations

import numpy as np
import pytest

import mlxquant
from mlxquant.quant.types import get_type
from mlxquant.testing.inputs import imatrices, synthetic_families

pytest.importorskip("numba")

# Every type of the codecs issue that is not a plain copy (F32 stays a NumPy view).
REQUIRED = (
    "F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K Q4_K Q5_K Q6_K "
    "IQ4_NL IQ4_XS TQ1_0 TQ2_0 MXFP4 NVFP4"
).split()
IMATRIX = [None, "meansq", "lognormal"]
SYNTH = synthetic_families()


def _compare(oracle, x: np.ndarray, qtype: str, imatrix_name: str | None, label: str) -> None:
    if "numba" not in mlxquant.codecs_for(qtype):
        pytest.fail(f"{qtype}: no compiled (numba) codec")
    w = imatrices(x.shape[1])[imatrix_name] if imatrix_name else None
    ref = oracle.quantize(x, qtype, imatrix=w)
    ours = mlxquant.quantize(x, qtype, imatrix=w, backend="numba")
    if not np.array_equal(ours, ref):
        t = get_type(qtype)
        a, b = ours.reshape(-1, t.type_size), ref.reshape(-1, t.type_size)
        bad = np.flatnonzero((a != b).any(axis=1))
        pytest.fail(
            f"{qtype} {label} imatrix={imatrix_name}: {bad.size}/{a.shape[0]} blocks differ "
            f"(first block {bad[0]}: ours {a[bad[0]][:16]} ref {b[bad[0]][:16]})"
        )
    deq = mlxquant.dequantize(ref, qtype, x.shape, backend="numba")
    deq_ref = oracle.dequantize(ref, qtype, x.shape)
    assert deq.dtype == np.float32 and deq.shape == x.shape
    assert np.array_equal(deq.view(np.uint32), deq_ref.view(np.uint32)), f"{qtype} {label}: dequantize differs"


@pytest.mark.parametrize("imatrix_name", IMATRIX)
@pytest.mark.parametrize("family", sorted(SYNTH))
@pytest.mark.parametrize("qtype", REQUIRED)
def test_numba_synthetic_bytes_match_ggml(oracle, qtype, family, imatrix_name):
    _compare(oracle, SYNTH[family], qtype, imatrix_name, family)


@pytest.mark.parametrize("imatrix_name", IMATRIX)
@pytest.mark.parametrize("qtype", REQUIRED)
def test_numba_real_tensors_match_ggml(oracle, real, qtype, imatrix_name):
    for name, x in real.items():
        _compare(oracle, x, qtype, imatrix_name, name)


@pytest.mark.parametrize("qtype", REQUIRED)
def test_numba_any_row_split_gives_the_same_bytes(oracle, qtype, monkeypatch):
    """Chunks of 1..n rows on 1 or 2 threads: a kernel keeps no state across rows or calls."""
    from mlxquant.quant import api

    rng = np.random.default_rng(7)
    x = (rng.standard_t(3, size=(37, 512)) * 0.05).astype(np.float32)
    x[5] = 0.0
    ref = oracle.quantize(x, qtype)
    for threads, chunk in (("1", 512), ("2", 512 * 3), ("2", 1 << 18)):
        monkeypatch.setenv("MLXQUANT_THREADS", threads)
        monkeypatch.setattr(api, "CHUNK_WEIGHTS", chunk)
        monkeypatch.setattr(api, "DEQUANT_CHUNK_WEIGHTS", chunk)
        assert np.array_equal(mlxquant.quantize(x, qtype, backend="numba"), ref), (qtype, threads, chunk)
        deq = mlxquant.dequantize(ref, qtype, x.shape, backend="numba")
        assert np.array_equal(deq.view(np.uint32), oracle.dequantize(ref, qtype, x.shape).view(np.uint32))


def test_numba_takes_any_float_layout(oracle):
    """float64 and non-contiguous input are converted first, as for every backend."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 1024))
    ref = oracle.quantize(x.astype(np.float32), "Q4_K")
    assert np.array_equal(mlxquant.quantize(x, "Q4_K", backend="numba"), ref)
    xt = np.asfortranarray(x.astype(np.float32))
    assert np.array_equal(mlxquant.quantize(xt, "Q4_K", backend="numba"), ref)


def test_auto_backend_on_a_cpu_is_the_compiled_codec():
    from mlxquant.quant.api import _backend, mlx_on_gpu

    if mlx_on_gpu():
        pytest.skip("MLX runs on a GPU here: auto picks MLX")
    for name in REQUIRED:
        assert _backend("auto", get_type(name)) == "numba", name
    assert _backend("auto", get_type("F32")) == "numpy"  # a copy: no kernel
