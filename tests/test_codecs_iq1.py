"""IQ1_S and IQ1_M (NumPy reference and compiled Numba): bytes == ggml's, dequantize == ggml's.

Besides the usual families, imatrices and real tensors, this checks what is particular to these
types: the iq1s_grid table entry by entry, IQ1_S's required imatrix, ggml's aborts, and the order
of tied values in ggml's ``qsort`` (stable with glibc; see :mod:`mlxquant.quant.numpy.iq1`), with
inputs full of ties and an emulation of Apple's (BSD) qsort showing that the order decides bytes.
"""

from __future__ import annotations

import ctypes
import platform

import numpy as np
import pytest

import mlxquant
from mlxquant.errors import QuantInputError
from mlxquant.quant.backends import get_codec
from mlxquant.quant.grids_iq1 import IQ1S_GRID
from mlxquant.quant.numpy import iq1 as np_iq1
from mlxquant.quant.types import get_type
from mlxquant.testing.inputs import imatrices, synthetic_families

pytest.importorskip("numba")

TYPES = ("IQ1_S", "IQ1_M")
BACKENDS = ("numpy", "numba")
SYNTH = synthetic_families()


def _imatrix_names(qtype: str) -> list:
    return ["meansq", "lognormal"] + ([None] if qtype == "IQ1_M" else [])  # IQ1_S needs one


CASES = [(q, im) for q in TYPES for im in _imatrix_names(q)]


def _tie_families(rows: int = 8, cols: int = 512) -> dict[str, np.ndarray]:
    """Inputs whose sub-blocks hold many equal values (the sort's ties)."""
    rng = np.random.default_rng(31)
    fam = {}
    fam["few_values"] = rng.choice(np.float32([-1, -0.5, 0, 0.5, 1]), (rows, cols))
    z = rng.choice(np.float32([0.0, -0.0]), (rows, cols))
    z[rng.random((rows, cols)) < 0.15] = rng.choice(np.float32([-1, 1]), 1)
    fam["signed_zeros"] = z
    fam["pairs"] = np.repeat(rng.standard_normal((rows, cols // 2)), 2, axis=1)
    fam["constant_blocks"] = np.repeat(rng.standard_normal((rows, cols // 16)), 16, axis=1)
    lo_hi = rng.standard_normal((rows, cols // 32, 2))
    pick = rng.integers(0, 2, (rows, cols // 32, 32))
    fam["two_levels"] = np.take_along_axis(lo_hi, pick, axis=2).reshape(rows, cols)
    # dequantized Q4_1-like weights (16 levels per 32): what requantizing a GGUF feeds the codec
    q = rng.integers(0, 16, (rows, cols // 32, 32))
    d, m = rng.random((rows, cols // 32, 1)) * 0.01, rng.standard_normal((rows, cols // 32, 1)) * 0.05
    fam["q4_levels"] = (q * d - m).reshape(rows, cols)
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in fam.items()}


TIES = _tie_families()


def _compare(oracle, x: np.ndarray, qtype: str, imatrix_name: str | None, backend: str,
             label: str) -> None:
    if backend not in mlxquant.codecs_for(qtype):
        pytest.fail(f"{qtype}: no {backend} codec")
    w = imatrices(x.shape[1])[imatrix_name] if imatrix_name else None
    ref = oracle.quantize(x, qtype, imatrix=w)
    ours = mlxquant.quantize(x, qtype, imatrix=w, backend=backend)
    if not np.array_equal(ours, ref):
        t = get_type(qtype)
        a, b = ours.reshape(-1, t.type_size), ref.reshape(-1, t.type_size)
        bad = np.flatnonzero((a != b).any(axis=1))
        pytest.fail(f"{qtype} {backend} {label} imatrix={imatrix_name}: {bad.size}/{len(a)} blocks "
                    f"differ (first {bad[0]}: ours {a[bad[0]][:16]} ref {b[bad[0]][:16]})")
    deq = mlxquant.dequantize(ref, qtype, x.shape, backend=backend)
    deq_ref = oracle.dequantize(ref, qtype, x.shape)
    assert deq.dtype == np.float32 and deq.shape == x.shape
    assert np.array_equal(deq.view(np.uint32), deq_ref.view(np.uint32)), f"{qtype} {label}: dequantize"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("family", sorted(SYNTH))
@pytest.mark.parametrize("qtype,imatrix_name", CASES)
def test_iq1_synthetic_bytes_match_ggml(oracle, qtype, imatrix_name, family, backend):
    _compare(oracle, SYNTH[family], qtype, imatrix_name, backend, family)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("qtype,imatrix_name", CASES)
def test_iq1_real_tensors_match_ggml(oracle, real, qtype, imatrix_name, backend):
    for name, x in real.items():
        _compare(oracle, x, qtype, imatrix_name, backend, name)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("family", sorted(TIES))
@pytest.mark.parametrize("qtype,imatrix_name", CASES)
def test_iq1_tied_values_match_ggml(oracle, qtype, imatrix_name, family, backend):
    _compare(oracle, TIES[family], qtype, imatrix_name, backend, family)


@pytest.mark.parametrize("qtype", TYPES)
def test_iq1_any_row_split_gives_the_same_bytes(oracle, qtype, monkeypatch):
    """Chunks of 1..n rows on 1 or 2 threads: a kernel keeps no state across rows or calls."""
    from mlxquant.quant import api

    rng = np.random.default_rng(7)
    x = (rng.standard_t(3, size=(37, 512)) * 0.05).astype(np.float32)
    x[5] = 0.0
    w = imatrices(512)["lognormal"]
    ref = oracle.quantize(x, qtype, imatrix=w)
    for threads, chunk in (("1", 512), ("2", 512 * 3), ("2", 1 << 18)):
        monkeypatch.setenv("MLXQUANT_THREADS", threads)
        monkeypatch.setattr(api, "CHUNK_WEIGHTS", chunk)
        monkeypatch.setattr(api, "DEQUANT_CHUNK_WEIGHTS", chunk)
        for backend in BACKENDS:
            got = mlxquant.quantize(x, qtype, imatrix=w, backend=backend)
            assert np.array_equal(got, ref), (qtype, backend, threads, chunk)
            deq = mlxquant.dequantize(ref, qtype, x.shape, backend=backend)
            assert np.array_equal(deq.view(np.uint32), oracle.dequantize(ref, qtype, x.shape).view(np.uint32))


# -- the grid and the dequantizers ---------------------------------------------------------------

def _grid_blocks(qtype: str) -> np.ndarray:
    """Blocks that decode every iq1s_grid entry once: d = 1, scale code 0 (dl = 1), delta +0.125
    (IQ1_S) or -0.125 on every second group (IQ1_M); entry e sits in group e % 32 of block e // 32."""
    e = np.arange(2048).reshape(64, 32)                        # (blocks, groups of 8)
    if qtype == "IQ1_S":
        b = np.zeros((64, 50), np.uint8)
        b[:, 0:2] = np.array([1], "<f2").view(np.uint8)
        b[:, 2:34] = e & 255
        hi = (e >> 8).reshape(64, 8, 4)
        qh = (hi << (3 * np.arange(4))).sum(axis=2)            # (64, 8), scale bits 0
        b[:, 34:50] = qh.astype("<u2").view(np.uint8).reshape(64, 16)
        return b
    b = np.zeros((64, 56), np.uint8)
    b[:, 0:32] = e & 255
    hi = (e >> 8).reshape(64, 16, 2)
    b[:, 32:48] = hi[:, :, 0] | (hi[:, :, 1] << 4) | 0x80    # group 1 of each sub-block: delta -
    h = int(np.float16(1).view(np.uint16))
    sc = np.array([((h >> (4 * j)) & 0xF) << 12 for j in range(4)])
    b[:, 48:56] = np.tile(sc.astype("<u2").view(np.uint8), (64, 1))
    return b


@pytest.mark.parametrize("qtype", TYPES)
def test_iq1s_grid_matches_ggml_table(oracle, qtype):
    blocks = _grid_blocks(qtype)
    y = oracle.dequantize(blocks, qtype, (64, 256)).reshape(2048, 8)
    delta = np.full(2048, 0.125, np.float32)
    if qtype == "IQ1_M":
        delta[1::2] = -0.125
    assert np.array_equal(y - delta[:, None], IQ1S_GRID.astype(np.float32))
    for backend in BACKENDS:
        ours = mlxquant.dequantize(blocks, qtype, (64, 256), backend=backend)
        assert np.array_equal(ours.view(np.uint32), y.reshape(64, 256).view(np.uint32)), backend


def _set_d(blocks: np.ndarray, qtype: str, h: np.ndarray) -> None:
    """Store float16 bit patterns ``h`` (n,) as the blocks' super-block scale."""
    if qtype == "IQ1_S":
        blocks[:, 0:2] = h.astype("<u2").view(np.uint8).reshape(-1, 2)
        return
    sc = blocks[:, 48:56].copy().view("<u2") & 0x0FFF           # (n, 4): keep the 3-bit scales
    sc |= ((h[:, None].astype(np.uint16) >> (4 * np.arange(4, dtype=np.uint16))) & 0xF) << 12
    blocks[:, 48:56] = sc.view(np.uint8)


@pytest.mark.parametrize("qtype", TYPES)
def test_iq1_dequantize_any_bytes_like_ggml(oracle, qtype):
    """Random blocks, with scales set to +-inf, quiet and signalling NaN, 0, -0 and subnormals."""
    t = get_type(qtype)
    blocks = np.random.default_rng(3).integers(0, 256, (96, t.type_size), dtype=np.uint8)
    special = np.array([0x7C00, 0xFC00, 0x7E00, 0x7C01, 0xFE55, 0x0000, 0x8000, 0x0001, 0x83FF, 0x7BFF])
    _set_d(blocks[: len(special)], qtype, special)
    ref = oracle.dequantize(blocks, qtype, (96, 256))
    assert np.isnan(ref).any() and np.isinf(ref).any()
    for backend in BACKENDS:
        ours = mlxquant.dequantize(blocks, qtype, (96, 256), backend=backend)
        assert np.array_equal(ours.view(np.uint32), ref.view(np.uint32)), backend


# -- the imatrix and ggml's aborts ---------------------------------------------------------------

def test_iq1_imatrix_requirements_match_ggml(oracle):
    assert oracle.requires_imatrix("IQ1_S") and get_type("IQ1_S").requires_imatrix
    assert not oracle.requires_imatrix("IQ1_M") and not get_type("IQ1_M").requires_imatrix
    x = SYNTH["normal"]
    for backend in BACKENDS:
        with pytest.raises(QuantInputError, match="IQ1_S"):
            mlxquant.quantize(x, "IQ1_S", backend=backend)
        codec = get_codec("IQ1_S", backend)
        with pytest.raises(QuantInputError, match="IQ1_S.*imatrix"):
            codec.quantize_rows(x, None)


@pytest.mark.parametrize("qtype", TYPES)
def test_iq1_nan_scale_raises_where_ggml_aborts(qtype):
    """An importance of 3e38 makes the weights inf; the first split's scale is inf/inf = NaN and
    ggml stops on ``GGML_ASSERT(scale >= 0)`` (checked by hand: exit status 134)."""
    x = np.abs(np.random.default_rng(1).standard_normal((1, 256)).astype(np.float32)) + 1
    w = np.full(256, 3e38, np.float32)
    for backend in BACKENDS:
        with pytest.raises(QuantInputError, match=f"{qtype}.*NaN"):
            mlxquant.quantize(x, qtype, imatrix=w, backend=backend)


def test_iq1_neighbour_search_refuses_infinite_distances():
    """Where every neighbour's distance overflows, ggml scans the whole grid reading past the
    block (undefined); the reference raises instead."""
    from mlxquant.quant.grids_iq2 import search_state

    st = search_state("IQ1_S")
    u = np.array([int(np.flatnonzero(st.kmap < 0)[0])])
    xv = np.ones((1, 8), np.float32)
    wv = np.full((1, 8), np.inf, np.float32)
    with pytest.raises(QuantInputError, match="IQ1_S"):
        np_iq1._best_neighbours(st, u, xv, wv, np.ones(1, np.float32), np_iq1.X_PM[:1], "IQ1_S")
    wv[:] = 1
    assert np_iq1._best_neighbours(st, u, xv, wv, np.ones(1, np.float32), np_iq1.X_PM[:1], "IQ1_S")[0] >= 0


# -- the order of ties ---------------------------------------------------------------------------

def bsd_qsort_order(values: np.ndarray) -> np.ndarray:
    """Apple Libc's ``qsort`` (stdlib/FreeBSD/qsort.c, Libc-1244 to 1725: Bentley-McIlroy with a
    three-way partition, insertion sort up to 7 elements) on (value, index) pairs compared by
    value, as ggml calls it; returns the indices in their final order."""
    v = [float(t) for t in values]
    a = list(range(len(v)))

    def cmp(i, j):
        return (v[a[i]] > v[a[j]]) - (v[a[i]] < v[a[j]])

    def swap(i, j):
        a[i], a[j] = a[j], a[i]

    def med3(p, q, r):
        if cmp(p, q) < 0:
            return q if cmp(q, r) < 0 else (r if cmp(p, r) < 0 else p)
        return q if cmp(q, r) > 0 else (p if cmp(p, r) < 0 else r)

    def isort(base, n, limit):
        moved = 0
        for pm in range(base + 1, base + n):
            pl = pm
            while pl > base and cmp(pl - 1, pl) > 0:
                swap(pl, pl - 1)
                moved += 1
                if limit and moved > limit:
                    return False
                pl -= 1
        return True

    def qsort(base, n, depth):
        while True:
            assert depth > 0  # the heapsort fallback needs n in the thousands
            depth -= 1
            if n <= 7:
                isort(base, n, 0)
                return
            pl, pm, pn = base, base + n // 2, base + n - 1
            if n > 40:
                d = n // 8
                pl, pm, pn = med3(pl, pl + d, pl + 2 * d), med3(pm - d, pm, pm + d), med3(pn - 2 * d, pn - d, pn)
            swap(base, med3(pl, pm, pn))
            pa = pb = base + 1
            pc = pd = base + n - 1
            swapped = False
            while True:
                while pb <= pc and cmp(pb, base) <= 0:
                    if cmp(pb, base) == 0:
                        swapped = True
                        swap(pa, pb)
                        pa += 1
                    pb += 1
                while pb <= pc and cmp(pc, base) >= 0:
                    if cmp(pc, base) == 0:
                        swapped = True
                        swap(pc, pd)
                        pd -= 1
                    pc -= 1
                if pb > pc:
                    break
                swap(pb, pc)
                swapped = True
                pb += 1
                pc -= 1
            pn = base + n
            for lo, hi, k in ((base, pb, min(pa - base, pb - pa)), (pb, pn, min(pd - pc, pn - pd - 1))):
                for i in range(k):
                    swap(lo + i, hi - k + i)
            if not swapped and isort(base, n, 1 + n // 4):
                return
            d1, d2 = pb - pa, pd - pc
            if d1 <= d2:
                if d1 > 1:
                    qsort(base, d1, depth)
                if d2 <= 1:
                    return
                base, n = pn - d2, d2
            else:
                if d2 > 1:
                    qsort(pn - d2, d2, depth)
                if d1 <= 1:
                    return
                n = d1

    qsort(0, len(v), 2 * (len(v).bit_length() - 1))
    return np.array(a)


def _libc_qsort_order(values: np.ndarray) -> np.ndarray:
    """The process's C library ``qsort`` (the one libggml-base calls) on ggml's (value, index)
    float pairs with ``iq1_sort_helper``'s comparison."""
    libc = ctypes.CDLL(None)
    cmp_t = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)

    def helper(a, b):
        x = ctypes.c_float.from_address(a).value
        y = ctypes.c_float.from_address(b).value
        return -1 if x < y else (1 if x > y else 0)

    pairs = np.zeros((len(values), 2), np.float32)
    pairs[:, 0] = values
    pairs[:, 1].view(np.int32)[:] = np.arange(len(values))
    libc.qsort.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, cmp_t]
    libc.qsort(pairs.ctypes.data, len(values), 8, cmp_t(helper))
    return pairs[:, 1].view(np.int32).copy()


def _tie_rows() -> np.ndarray:
    """Sub-block rows (32 and 16 values) that are all or mostly ties."""
    rng = np.random.default_rng(5)
    rows = [np.zeros(32), np.float32([0.0, -0.0] * 16), np.full(32, 0.7)]
    rows += [rng.choice(np.float32([-1, 0, 1]), 32) for _ in range(20)]
    rows += [np.concatenate([SYNTH[f][r, :32]]) for f in ("grid_ties", "sparse_mixed", "constant_rows") for r in range(4)]
    return np.array(rows, np.float32)


def test_libc_qsort_orders_ties_as_the_codecs_do():
    """glibc's qsort (merge sort below 1024 bytes of pairs) keeps equal values in index order,
    which is :func:`sort_order`; on macOS the libc is Apple's, emulated by bsd_qsort_order."""
    rows = _tie_rows()
    for n in (32, 16):
        for r in rows[:, :n]:
            libc = _libc_qsort_order(r)
            expected = bsd_qsort_order(r) if platform.system() == "Darwin" else np_iq1.sort_order(r[None])[0]
            assert np.array_equal(libc, expected), r


def test_bsd_qsort_sorts_but_reorders_ties():
    rng = np.random.default_rng(2)
    for n in (5, 7, 16, 32, 45):
        for _ in range(40):
            v = rng.integers(-3, 4, n).astype(np.float32)
            o = bsd_qsort_order(v)
            assert sorted(o) == list(range(n)) and (np.diff(v[o]) >= 0).all()
    zeros = np.zeros(32, np.float32)
    assert not np.array_equal(bsd_qsort_order(zeros), np.arange(32))   # unstable at 32
    assert np.array_equal(bsd_qsort_order(zeros[:7]), np.arange(7))      # insertion sort: stable


@pytest.mark.parametrize("qtype", TYPES)
def test_iq1_tie_order_decides_bytes(oracle, monkeypatch, qtype):
    """With Apple's tie order the reference writes other bytes for tie-heavy inputs (what
    llama.cpp built on macOS can do), so the tie tests above do test the order."""
    x = np.concatenate([TIES["constant_blocks"], SYNTH["constant_rows"][:8], TIES["q4_levels"]])
    w = imatrices(512)["meansq"]
    ref = oracle.quantize(x, qtype, imatrix=w)
    assert np.array_equal(mlxquant.quantize(x, qtype, imatrix=w, backend="numpy"), ref)
    monkeypatch.setattr(np_iq1, "sort_order", lambda xb: np.stack([bsd_qsort_order(r) for r in xb]))
    apple = mlxquant.quantize(x, qtype, imatrix=w, backend="numpy")
    t = get_type(qtype)
    differ = (apple.reshape(-1, t.type_size) != ref.reshape(-1, t.type_size)).any(axis=1)
    assert differ[:32].mean() > 0.5, differ[:32].mean()    # constant blocks and rows: both types
    if qtype == "IQ1_M":                                    # Q4_1-like levels: ties across halves
        assert differ[32:].mean() > 0.1, differ[32:].mean()
