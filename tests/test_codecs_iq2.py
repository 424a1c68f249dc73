"""IQ2_XXS and IQ2_XS, NumPy reference and compiled (Numba): bytes == ggml's, dequantize == ggml's
to_float; the shared 2-bit/1-bit grids (mlxquant.quant.grids_iq2) against ggml's own tables.

Both types require an importance matrix. Three are used: llama.cpp-like mean squares, lognormal,
and "sparse" (mean squares with half the entries 0, which drives ggml's zero-weight paths:
``sumq2 == 0``, ``sqrt(0)`` neighbour weights). On the "huge" family ggml's IQ2_XS quantizer
aborts the process (``GGML_ASSERT(grid_index >= 0)``: every neighbour distance overflows); ours
raises QuantInputError instead, and one test shows in a subprocess that ggml really aborts.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import mlxquant
from mlxquant.errors import QuantInputError
from mlxquant.quant import grids_iq2 as g
from mlxquant.quant.backends import get_codec
from mlxquant.quant.types import get_type
from mlxquant.testing.inputs import imatrices, synthetic_families

pytest.importorskip("numba")

TYPES = ["IQ2_XXS", "IQ2_XS"]
BACKENDS = ["numpy", "numba"]
IMATRIX = ["meansq", "lognormal", "sparse"]
SYNTH = synthetic_families()
GGML_ABORTS = {("IQ2_XS", "huge")}  # (type, family): ggml_quantize_chunk aborts, for every imatrix


def _imatrix(name: str, cols: int) -> np.ndarray:
    if name == "sparse":
        w = imatrices(cols)["meansq"].copy()
        w[np.random.default_rng(30).random(cols) < 0.5] = 0.0
        return w
    return imatrices(cols)[name]


def _compare(oracle, x: np.ndarray, qtype: str, backend: str, imatrix_name: str, label: str) -> None:
    w = _imatrix(imatrix_name, x.shape[1])
    ref = oracle.quantize(x, qtype, imatrix=w)
    ours = mlxquant.quantize(x, qtype, imatrix=w, backend=backend)
    if not np.array_equal(ours, ref):
        t = get_type(qtype)
        a, b = ours.reshape(-1, t.type_size), ref.reshape(-1, t.type_size)
        bad = np.flatnonzero((a != b).any(axis=1))
        pytest.fail(
            f"{qtype} {backend} {label} imatrix={imatrix_name}: {bad.size}/{a.shape[0]} blocks differ "
            f"(first block {bad[0]}: ours {a[bad[0]][:16]} ref {b[bad[0]][:16]})"
        )
    deq = mlxquant.dequantize(ref, qtype, x.shape, backend=backend)
    deq_ref = oracle.dequantize(ref, qtype, x.shape)
    assert deq.dtype == np.float32 and deq.shape == x.shape
    assert np.array_equal(deq.view(np.uint32), deq_ref.view(np.uint32)), f"{qtype} {backend} {label}: dequantize"


@pytest.mark.parametrize("imatrix_name", IMATRIX)
@pytest.mark.parametrize("family", sorted(SYNTH))
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("qtype", TYPES)
def test_iq2_synthetic_bytes_match_ggml(oracle, qtype, backend, family, imatrix_name):
    if (qtype, family) in GGML_ABORTS:
        with pytest.raises(QuantInputError, match=f"{qtype}: .*ggml's quantizer aborts"):
            mlxquant.quantize(SYNTH[family], qtype, imatrix=_imatrix(imatrix_name, 512), backend=backend)
        return
    _compare(oracle, SYNTH[family], qtype, backend, imatrix_name, family)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("qtype", TYPES)
def test_iq2_real_tensors_match_ggml(oracle, real, qtype, backend):
    for name, x in real.items():
        for imatrix_name in IMATRIX:
            _compare(oracle, x, qtype, backend, imatrix_name, name)


def test_ggml_really_aborts_where_we_raise():
    """The one input we refuse: ggml's IQ2_XS quantizer kills the process on it (subprocess)."""
    code = (
        "from mlxquant.testing.oracle import get_oracle\n"
        "from mlxquant.testing.inputs import imatrices, synthetic_families\n"
        "get_oracle().quantize(synthetic_families()['huge'][:1], 'IQ2_XS', imatrix=imatrices()['meansq'])\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "GGML_NO_BACKTRACE": "1"})
    assert r.returncode != 0 and "GGML_ASSERT(grid_index >= 0)" in r.stderr, r.stderr[-2000:]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("qtype", TYPES)
def test_iq2_any_row_split_gives_the_same_bytes(oracle, qtype, backend, monkeypatch):
    """Chunks of 1..n rows on 1 or 2 threads: no state is kept across rows or calls."""
    from mlxquant.quant import api

    rng = np.random.default_rng(7)
    x = (rng.standard_t(3, size=(37, 512)) * 0.05).astype(np.float32)
    x[5] = 0.0
    w = _imatrix("meansq", 512)
    ref = oracle.quantize(x, qtype, imatrix=w)
    deq_ref = oracle.dequantize(ref, qtype, x.shape).view(np.uint32)
    for threads, chunk in (("1", 512), ("2", 512 * 3), ("2", 1 << 18)):
        monkeypatch.setenv("MLXQUANT_THREADS", threads)
        monkeypatch.setattr(api, "CHUNK_WEIGHTS", chunk)
        monkeypatch.setattr(api, "DEQUANT_CHUNK_WEIGHTS", chunk)
        got = mlxquant.quantize(x, qtype, imatrix=w, backend=backend)
        assert np.array_equal(got, ref), (qtype, backend, threads, chunk)
        deq = mlxquant.dequantize(ref, qtype, x.shape, backend=backend)
        assert np.array_equal(deq.view(np.uint32), deq_ref), (qtype, backend, threads, chunk)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("qtype", TYPES)
def test_iq2_needs_an_imatrix_and_says_which_type(qtype, backend):
    x = SYNTH["normal"][:2]
    with pytest.raises(QuantInputError, match=f"{qtype}: .*importance matrix"):
        mlxquant.quantize(x, qtype, backend=backend)
    codec = get_codec(qtype, backend)
    with pytest.raises(QuantInputError, match=f"{qtype}: .*importance matrix"):
        codec.quantize_rows(x, None)  # the codec's own guard, below the API


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("qtype", TYPES)
def test_iq2_dequantize_random_blocks_match_ggml(oracle, qtype, backend):
    """Arbitrary bytes: every grid index, sign code and scale nibble, and fp16 scales that are
    NaN (ggml's ``* -1.f`` flips a NaN's sign), inf, -0 and subnormal besides normal ones."""
    t = get_type(qtype)
    rng = np.random.default_rng(5)
    data = rng.integers(0, 256, (64, t.type_size), dtype=np.uint8)
    d = rng.standard_normal(64).astype(np.float16)
    d[:6] = [np.nan, -np.nan, np.inf, -np.inf, -0.0, 6e-8]
    data[:, :2] = d.view(np.uint8).reshape(64, 2)
    shape = (8, 8 * 256)
    ours = mlxquant.dequantize(data, qtype, shape, backend=backend)
    assert np.array_equal(ours.view(np.uint32), oracle.dequantize(data, qtype, shape).view(np.uint32))


# -- the grids against ggml's tables, read back through ggml's own dequantizers ------------------

def _f16(v: float, n: int) -> np.ndarray:
    return np.tile(np.array([v], "<f2").view(np.uint8), (n, 1))


def _levels(codes: np.ndarray) -> np.ndarray:
    return g.code_levels(codes).astype(np.int64)


def test_iq2xxs_grid_and_signs_are_ggmls(oracle):
    idx = np.arange(256).reshape(8, 8, 4)                      # (block, sub-block, group)
    q2 = np.zeros((8, 8, 2), np.uint32)
    q2[:, :, 0] = (idx << (8 * np.arange(4))).sum(axis=2)      # signs 0, scale nibble 0
    blocks = np.concatenate([_f16(8.0, 8), q2.astype("<u4").view(np.uint8).reshape(8, 64)], axis=1)
    y = oracle.dequantize(blocks, "IQ2_XXS", (1, 8 * 256))     # db = 8 * 0.5 * 0.25 = 1
    assert np.array_equal(y.reshape(256, 8), g.IQ2XXS_GRID.astype(np.float32))
    # every 7-bit sign code on grid point 0 (all 8s): ggml's ksigns_iq2xs and kmask_iq2xs
    codes = np.arange(128).reshape(4, 8, 4)
    q2 = np.zeros((4, 8, 2), np.uint32)
    q2[:, :, 1] = (codes << (7 * np.arange(4))).sum(axis=2)
    blocks = np.concatenate([_f16(8.0, 4), q2.astype("<u4").view(np.uint8).reshape(4, 64)], axis=1)
    y = oracle.dequantize(blocks, "IQ2_XXS", (1, 4 * 256)).reshape(128, 8)
    neg = (g.KSIGNS_IQ2XS[:, None] & g.KMASK_IQ2XS[None, :]) != 0
    assert np.array_equal(y, np.where(neg, -8.0, 8.0).astype(np.float32))
    assert (np.unpackbits(g.KSIGNS_IQ2XS).reshape(128, 8).sum(axis=1) % 2 == 0).all()


def test_iq2xs_grid_is_ggmls(oracle):
    qs = np.arange(512, dtype="<u2").reshape(16, 32)           # signs 0
    blocks = np.concatenate([_f16(8.0, 16), qs.view(np.uint8), np.zeros((16, 8), np.uint8)], axis=1)
    y = oracle.dequantize(blocks, "IQ2_XS", (1, 16 * 256))
    assert np.array_equal(y.reshape(512, 8), g.IQ2XS_GRID.astype(np.float32))


def test_iq2s_grid_is_ggmls(oracle):
    idx = np.arange(1024).reshape(32, 8, 4)                    # (block, ib32, l)
    qs = np.zeros((32, 64), np.uint8)
    qs[:, :32] = (idx & 0xFF).reshape(32, 32)                  # signs (qs[32:]) 0
    qh = ((idx >> 8) << (2 * np.arange(4))).sum(axis=2).astype(np.uint8)
    blocks = np.concatenate([_f16(8.0, 32), qs, qh, np.zeros((32, 8), np.uint8)], axis=1)
    y = oracle.dequantize(blocks, "IQ2_S", (1, 32 * 256))
    assert np.array_equal(y.reshape(1024, 8), g.IQ2S_GRID.astype(np.float32))


def test_iq1_code_table_is_ggmls(oracle):
    """kgrid_1bit_2048 read back through IQ1_S (value = level - 1, plus delta 0.125, dl = 1)."""
    idx = np.arange(2048).reshape(64, 8, 4)
    qs = (idx & 0xFF).reshape(64, 32).astype(np.uint8)
    qh = ((idx >> 8) << (3 * np.arange(4))).sum(axis=2).astype("<u2")   # scale 0, delta +
    blocks = np.concatenate([_f16(1.0, 64), qs, qh.view(np.uint8)], axis=1)
    y = oracle.dequantize(blocks, "IQ1_S", (1, 64 * 256)).reshape(2048, 8)
    assert np.array_equal(y - np.float32(0.125), (_levels(g.KGRID_1BIT_2048) - 1).astype(np.float32))


# -- the search state ----------------------------------------------------------------------------

@pytest.mark.parametrize("qtype,size,nwant", [("IQ2_XXS", 256, 2), ("IQ2_XS", 512, 2), ("IQ2_S", 1024, 1),
                                              ("IQ1_S", 2048, 3), ("IQ1_M", 2048, 3)])
def test_search_state_is_consistent(qtype, size, nwant):
    st = g.search_state(qtype)
    assert st.nwant == nwant and st.grid.shape == (size, 8) and st.kmap.shape == (g.KMAP_SIZE,)
    assert np.array_equal(st.grid, 2 * _levels(st.codes) + 1)
    on = np.flatnonzero(st.kmap >= 0)
    assert len(on) == size                                     # every grid point, once
    assert np.array_equal(st.codes[st.kmap[on]], on)           # a map entry's code indexes back
    off = np.flatnonzero(st.kmap < 0)
    start = -st.kmap[off] - 1
    cnt = st.neighbours[start].astype(np.int64)
    assert (cnt > 0).all() and np.array_equal(start[1:], start[:-1] + cnt[:-1] + 1)
    assert start[-1] + cnt[-1] + 1 == len(st.neighbours)
    # a sample of off-grid points against a brute-force search over the whole grid
    pos = 2 * _levels(off) + 1
    for p in np.random.default_rng(1).choice(len(off), 300, replace=False):
        lst = st.neighbours[start[p] + 1 : start[p] + 1 + cnt[p]].astype(np.int64)
        d2 = ((st.grid.astype(np.int64) - pos[p]) ** 2).sum(axis=1)
        levels = np.unique(d2)[:nwant]
        want = np.lexsort((np.arange(size), d2))               # (distance, index) order
        want = want[np.isin(d2[want], levels)]
        assert np.array_equal(lst, want), (qtype, off[p])
    assert g.search_state("IQ1_M") is g.search_state("IQ1_S")


def test_search_state_rejects_other_types():
    with pytest.raises(KeyError):
        g.search_state("IQ3_XXS")
