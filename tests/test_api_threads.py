"""The API's row-chunk scheduling: results never depend on threads or chunking, errors name the
first bad row whichever thread met it, and small calls stay on the calling thread."""

from __future__ import annotations

import numpy as np
import pytest

import mlxquant
from mlxquant.quant import api


@pytest.fixture
def parallel(monkeypatch):
    """Force the threaded path with many small chunks."""
    monkeypatch.setenv("MLXQUANT_THREADS", "2")
    monkeypatch.setattr(api, "PARALLEL_MIN_SECONDS", 0.0)
    monkeypatch.setattr(api, "MIN_PARALLEL_WEIGHTS", 1)
    monkeypatch.setattr(api, "PROBE_WEIGHTS", 0)
    monkeypatch.setattr(api, "_RATE", {})


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_first_bad_row_is_named_from_any_thread(parallel, backend):
    x = np.random.default_rng(2).standard_normal((512, 256)).astype(np.float32)
    x[300, 5] = np.nan
    x[41, 7] = np.inf
    with pytest.raises(mlxquant.QuantInputError, match=r"Q4_K.*row 41, col 7"):
        mlxquant.quantize(x, "Q4_K", backend=backend)
    x[41, 7] = 0
    with pytest.raises(mlxquant.QuantInputError, match=r"Q4_K.*row 300, col 5"):
        mlxquant.quantize(x, "Q4_K", backend=backend)


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_K", "IQ4_XS", "BF16"])
def test_threads_and_chunks_do_not_change_results(parallel, qtype, monkeypatch):
    x = np.random.default_rng(3).standard_normal((300, 512)).astype(np.float32)
    w = np.random.default_rng(4).random(512).astype(np.float32)
    want = mlxquant.quantize(x, qtype, imatrix=w, backend="numpy")
    for chunk in (512, 512 * 7, 1 << 22):
        monkeypatch.setattr(api, "CHUNK_WEIGHTS", chunk)
        monkeypatch.setattr(api, "DEQUANT_CHUNK_WEIGHTS", chunk)
        got = mlxquant.quantize(x, qtype, imatrix=w, backend="numba")
        assert np.array_equal(got, want)
        a = mlxquant.dequantize(got, qtype, x.shape, backend="numba")
        b = mlxquant.dequantize(got, qtype, x.shape, backend="numpy")
        assert np.array_equal(a.view(np.uint32), b.view(np.uint32))


def test_a_fast_call_stays_on_the_calling_thread(monkeypatch):
    """Once a codec's cost per weight is known (from its calls on one thread, not counting the
    first), a call it finishes within PARALLEL_MIN_SECONDS does not wake the pool."""
    from mlxquant.quant.backends import get_codec

    monkeypatch.setenv("MLXQUANT_THREADS", "2")
    monkeypatch.setattr(api, "_RATE", {})
    monkeypatch.setattr(api, "_SEEN", set())
    x = np.random.default_rng(5).standard_normal((256, 1024)).astype(np.float32)
    q = mlxquant.quantize(x, "Q8_0", backend="numba")
    mlxquant.dequantize(q, "Q8_0", x.shape, backend="numba")  # a first call: not counted
    mlxquant.dequantize(q, "Q8_0", x.shape, backend="numba")  # measures the rate
    used = []
    real = api._run_spans
    monkeypatch.setattr(api, "_run_spans", lambda fn, spans, out, n, threads: (used.append(n), real(fn, spans, out, n, threads)))
    monkeypatch.setattr(api, "PARALLEL_MIN_SECONDS", 10.0)
    mlxquant.dequantize(q, "Q8_0", x.shape, backend="numba")
    monkeypatch.setattr(api, "PARALLEL_MIN_SECONDS", 0.0)
    mlxquant.dequantize(q, "Q8_0", x.shape, backend="numba")
    assert used == [1, 2]
    assert api._RATE[(get_codec("Q8_0", "numba"), "dq")] > 0


def test_preload_loads_kernels():
    from mlxquant.quant.api import preload
    from mlxquant.quant.backends import get_codec

    th = preload(["Q5_1", "not-a-type"])  # unknown names are skipped, not raised
    if th is not None:
        th.join()
    assert get_codec("Q5_1", "numba").quantize_kernel.signatures


def test_auto_does_not_wait_for_a_first_compile(monkeypatch):
    """While a compiled kernel is neither loaded nor cached on disk, "auto" uses the NumPy
    codec (same bytes) and compiles on a thread; once it is there, "auto" uses it."""
    from mlxquant.quant.backends import get_codec

    calls = []
    monkeypatch.setattr(api, "_READY", set())
    monkeypatch.setattr(api, "_kernel_ready", lambda k: False)
    monkeypatch.setattr(api, "preload", lambda names, background=True: calls.append(list(names)))
    x = np.random.default_rng(6).standard_normal((8, 256)).astype(np.float32)
    used = []
    real = get_codec("Q4_K", "numpy").quantize_rows
    monkeypatch.setattr(get_codec("Q4_K", "numpy"), "quantize_rows",
                        classmethod(lambda cls, a, w: (used.append("numpy"), real(a, w))[1]))
    got = mlxquant.quantize(x, "Q4_K")
    assert used == ["numpy"] and calls == [["Q4_K"]]
    assert np.array_equal(got, mlxquant.quantize(x, "Q4_K", backend="numba"))
    monkeypatch.setattr(api, "_kernel_ready", lambda k: True)
    used.clear()
    mlxquant.quantize(x, "Q4_K")
    assert used == []


def test_dequantize_into_a_given_buffer():
    """``dequantize(..., out=)`` decodes into the caller's array (a reused scratch tile) and
    returns it; a wrong shape, dtype or layout is refused with the type's name."""
    from mlxquant.errors import QuantInputError
    from mlxquant.quant import dequantize, quantize

    x = np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32)
    raw = quantize(x, "Q8_0")
    want = dequantize(raw, "Q8_0", (8, 64))
    buf = np.full((8, 64), np.nan, np.float32)
    assert dequantize(raw, "Q8_0", (8, 64), out=buf) is buf
    assert np.array_equal(buf, want)
    for bad in (np.empty((8, 32), np.float32), np.empty((8, 64), np.float64),
                np.empty((64, 8), np.float32).T):
        with pytest.raises(QuantInputError, match="Q8_0"):
            dequantize(raw, "Q8_0", (8, 64), out=bad)
