"""IQ2_S against llama.cpp: bytes, dequantization and grid, both backends.

Every synthetic family x imatrix None/"meansq"/"lognormal", the real tensors, row splits across
threads, and arbitrary blocks through the dequantizers. ggml aborts (GGML_ASSERT) on the "huge"
family; there we check that ggml really aborts (in a subprocess) and that mlxquant raises.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import mlxquant
import mlxquant.quant.jit.iq2s  # noqa: F401 - registers the compiled codec
import mlxquant.quant.numpy.iq2s  # noqa: F401 - registers the NumPy codec
from mlxquant.errors import QuantInputError
from mlxquant.quant.grids_iq2 import IQ2S_GRID
from mlxquant.quant.types import get_type
from mlxquant.testing.inputs import imatrices, synthetic_families

pytest.importorskip("numba")

QTYPE = "IQ2_S"
BACKENDS = ["numpy", "numba"]
IMATRIX = [None, "meansq", "lognormal"]
SYNTH = synthetic_families()
FAMILIES = sorted(k for k in SYNTH if k != "huge")


def _compare(oracle, x: np.ndarray, backend: str, imatrix_name: str | None, label: str) -> None:
    assert backend in mlxquant.codecs_for(QTYPE), f"{QTYPE}: no {backend} codec"
    w = imatrices(x.shape[1])[imatrix_name] if imatrix_name else None
    ref = oracle.quantize(x, QTYPE, imatrix=w)
    ours = mlxquant.quantize(x, QTYPE, imatrix=w, backend=backend)
    if not np.array_equal(ours, ref):
        a, b = ours.reshape(-1, 82), ref.reshape(-1, 82)
        bad = np.flatnonzero((a != b).any(axis=1))
        pytest.fail(
            f"{QTYPE} {backend} {label} imatrix={imatrix_name}: {bad.size}/{a.shape[0]} blocks differ "
            f"(first block {bad[0]}: ours {a[bad[0]][:16]} ref {b[bad[0]][:16]})"
        )
    deq = mlxquant.dequantize(ref, QTYPE, x.shape, backend=backend)
    deq_ref = oracle.dequantize(ref, QTYPE, x.shape)
    assert deq.dtype == np.float32 and deq.shape == x.shape
    assert np.array_equal(deq.view(np.uint32), deq_ref.view(np.uint32)), f"{backend} {label}: dequantize differs"


@pytest.mark.parametrize("imatrix_name", IMATRIX)
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_synthetic_bytes_match_ggml(oracle, backend, family, imatrix_name):
    _compare(oracle, SYNTH[family], backend, imatrix_name, family)


@pytest.mark.parametrize("imatrix_name", IMATRIX)
@pytest.mark.parametrize("backend", BACKENDS)
def test_real_tensors_match_ggml(oracle, real, backend, imatrix_name):
    for name, x in real.items():
        _compare(oracle, x, backend, imatrix_name, name)


def test_needs_no_imatrix(oracle):
    t = get_type(QTYPE)
    assert oracle.requires_imatrix(QTYPE) is False and t.requires_imatrix is False and t.uses_imatrix


_ABORT_SCRIPT = """
import sys, numpy as np
from mlxquant.testing.oracle import get_oracle
from mlxquant.testing.inputs import synthetic_families
x = synthetic_families()["huge"] if sys.argv[1] == "huge" else (
    np.random.default_rng(12).standard_normal((4, 512)) * float(sys.argv[1])).astype(np.float32)
get_oracle().quantize(x, "IQ2_S")
print("returned")
"""


def _scaled(scale: float) -> np.ndarray:
    return (np.random.default_rng(12).standard_normal((4, 512)) * scale).astype(np.float32)


def test_where_ggml_aborts_we_raise(oracle):
    """From |x| ~ 5e12 the neighbour distances (~ |x|**3) overflow: ggml's
    GGML_ASSERT(grid_index >= 0) aborts the process; mlxquant raises. At 3e12 the bytes are ggml's."""
    env = dict(os.environ, GGML_NO_BACKTRACE="1")
    for arg in ("huge", "5e12"):
        r = subprocess.run([sys.executable, "-c", _ABORT_SCRIPT, arg], env=env,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode != 0 and "returned" not in r.stdout, (arg, r.stdout[-500:])
        assert "GGML_ASSERT" in r.stderr, (arg, r.stderr[-500:])
        x = SYNTH["huge"] if arg == "huge" else _scaled(float(arg))
        for backend in BACKENDS:
            with pytest.raises(QuantInputError, match="IQ2_S: ggml aborts"):
                mlxquant.quantize(x, QTYPE, backend=backend)
    x = _scaled(3e12)
    ref = oracle.quantize(x, QTYPE)
    for backend in BACKENDS:
        assert np.array_equal(mlxquant.quantize(x, QTYPE, backend=backend), ref), backend


def test_zero_fit_blocks_match_ggml(oracle):
    """Weights that matter only where x is 0 (degenerate fits: no trial wins, the refit can give
    scale 0), next to an ordinary super-block."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 512)).astype(np.float32)
    even = np.arange(512) % 2 == 0
    x[:, ~even] = 0
    x[1, 256:] = rng.standard_normal(256)
    w = np.where(even, 0, 1).astype(np.float32)
    ref = oracle.quantize(x, QTYPE, imatrix=w)
    for backend in BACKENDS:
        assert np.array_equal(mlxquant.quantize(x, QTYPE, imatrix=w, backend=backend), ref), backend


def test_numba_any_row_split_gives_the_same_bytes(oracle, monkeypatch):
    """Chunks of 1..n rows on 1 or 2 threads: the kernel keeps no state across rows or calls."""
    from mlxquant.quant import api

    rng = np.random.default_rng(7)
    x = (rng.standard_t(3, size=(37, 512)) * 0.05).astype(np.float32)
    x[5] = 0.0
    w = imatrices(512)["lognormal"]
    refs = {None: oracle.quantize(x, QTYPE), "w": oracle.quantize(x, QTYPE, imatrix=w)}
    for threads, chunk in (("1", 512), ("2", 512 * 3), ("2", 1 << 18)):
        monkeypatch.setenv("MLXQUANT_THREADS", threads)
        monkeypatch.setattr(api, "CHUNK_WEIGHTS", chunk)
        monkeypatch.setattr(api, "DEQUANT_CHUNK_WEIGHTS", chunk)
        assert np.array_equal(mlxquant.quantize(x, QTYPE, backend="numba"), refs[None]), (threads, chunk)
        assert np.array_equal(mlxquant.quantize(x, QTYPE, imatrix=w, backend="numba"), refs["w"])
        deq = mlxquant.dequantize(refs[None], QTYPE, x.shape, backend="numba")
        assert np.array_equal(deq.view(np.uint32), oracle.dequantize(refs[None], QTYPE, x.shape).view(np.uint32))


def test_grid_is_ggmls(oracle):
    """Blocks with d = 1, the smallest scale (weights = entry / 8), no signs and grid rows
    0..1023 in order: every entry of iq2s_grid goes through ggml's dequantizer and ours."""
    b = np.zeros((32, 82), np.uint8)
    b[:, 1] = 0x3C                                              # f16 1.0
    rows = np.arange(1024).reshape(32, 32)
    b[:, 2:34] = rows & 255
    b[:, 66:74] = ((rows >> 8).reshape(32, 8, 4) << (2 * np.arange(4))).sum(axis=2)
    shape = (1, 32 * 256)
    ref = oracle.dequantize(b, QTYPE, shape)
    assert np.array_equal(ref.reshape(-1, 8) * 8, IQ2S_GRID.astype(np.float32))
    for backend in BACKENDS:
        ours = mlxquant.dequantize(b, QTYPE, shape, backend=backend)
        assert np.array_equal(ours.view(np.uint32), ref.view(np.uint32)), backend


def test_dequantize_any_bytes_like_ggml(oracle):
    """Random blocks (every sign, scale and row pattern), with inf, NaN and zero scales."""
    b = np.random.default_rng(1).integers(0, 256, (96, 82), dtype=np.uint8)
    b[:64, 1] &= 0x3B                                           # finite d
    b[64:72, 1] = 0x7C                                          # +inf or NaN
    b[64:68, 0] = 0
    b[72:80, 1] = 0xFC                                          # -inf or NaN
    b[72:76, 0] = 0
    b[80:88, 0:2] = 0                                           # d = 0
    shape = (2, 48 * 256)
    ref = oracle.dequantize(b, QTYPE, shape)
    assert np.isnan(ref).any() and np.isinf(ref).any()
    for backend in BACKENDS:
        ours = mlxquant.dequantize(b, QTYPE, shape, backend=backend)
        assert np.array_equal(ours.view(np.uint32), ref.view(np.uint32)), backend
