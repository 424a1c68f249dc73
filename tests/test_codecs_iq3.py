"""IQ3_XXS and IQ3_S against llama.cpp: bytes, dequantization, grids and search state.

Both backends (the NumPy reference and the compiled kernels) on every synthetic family x imatrix
None/"meansq"/"lognormal", the real tensors, row splits across threads, and arbitrary blocks
through the dequantizers. ggml aborts (GGML_ASSERT) on the "huge" family, so that family checks
that ggml really aborts (in a subprocess) and that mlxquant raises a QuantInputError instead.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import mlxquant
from mlxquant.errors import QuantInputError
from mlxquant.quant.grids_iq3 import IQ3S_GRID, IQ3XXS_GRID, KGRID_256, KGRID_512, search_state
from mlxquant.quant.types import get_type
from mlxquant.testing.inputs import imatrices, synthetic_families

pytest.importorskip("numba")

TYPES = ["IQ3_XXS", "IQ3_S"]
BACKENDS = ["numpy", "numba"]
IMATRIX = [None, "meansq", "lognormal"]
SYNTH = synthetic_families()
FAMILIES = sorted(k for k in SYNTH if k != "huge")


def _compare(oracle, x: np.ndarray, qtype: str, backend: str, imatrix_name: str | None, label: str) -> None:
    assert backend in mlxquant.codecs_for(qtype), f"{qtype}: no {backend} codec"
    w = imatrices(x.shape[1])[imatrix_name] if imatrix_name else None
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
    assert np.array_equal(deq.view(np.uint32), deq_ref.view(np.uint32)), f"{qtype} {backend} {label}: dequantize differs"


@pytest.mark.parametrize("imatrix_name", IMATRIX)
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("qtype", TYPES)
def test_synthetic_bytes_match_ggml(oracle, qtype, backend, family, imatrix_name):
    _compare(oracle, SYNTH[family], qtype, backend, imatrix_name, family)


@pytest.mark.parametrize("imatrix_name", IMATRIX)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("qtype", TYPES)
def test_real_tensors_match_ggml(oracle, real, qtype, backend, imatrix_name):
    for name, x in real.items():
        _compare(oracle, x, qtype, backend, imatrix_name, name)


def test_types_need_no_imatrix(oracle):
    for qtype in TYPES:
        t = get_type(qtype)
        assert oracle.requires_imatrix(qtype) is False and t.requires_imatrix is False
        assert t.uses_imatrix, qtype


# -- where ggml aborts -------------------------------------------------------------------------------
_ABORT_SCRIPT = """
import sys, numpy as np
from mlxquant.testing.oracle import get_oracle
from mlxquant.testing.inputs import synthetic_families
x = synthetic_families()["huge"] if sys.argv[2] == "huge" else (
    np.random.default_rng(12).standard_normal((4, 512)) * float(sys.argv[2])).astype(np.float32)
get_oracle().quantize(x, sys.argv[1])
print("returned")
"""


def _scaled(scale: float) -> np.ndarray:
    return (np.random.default_rng(12).standard_normal((4, 512)) * scale).astype(np.float32)


@pytest.mark.parametrize("qtype, fine, aborts", [("IQ3_XXS", 1e12, 3e12), ("IQ3_S", 5e12, 1e13)])
def test_where_ggml_aborts_we_raise(oracle, qtype, fine, aborts):
    """|x| of some 1e12 already overflows the neighbour distances (~ |x|**3) to inf: ggml's
    GGML_ASSERT(grid_index >= 0) aborts the process; mlxquant raises. Just below, the bytes are
    still ggml's."""
    env = dict(os.environ, GGML_NO_BACKTRACE="1")
    for arg in ("huge", str(aborts)):
        r = subprocess.run([sys.executable, "-c", _ABORT_SCRIPT, qtype, arg], env=env,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode != 0 and "returned" not in r.stdout, (qtype, arg, r.stdout[-500:])
        assert "GGML_ASSERT" in r.stderr, (qtype, arg, r.stderr[-500:])
        x = SYNTH["huge"] if arg == "huge" else _scaled(float(arg))
        for backend in BACKENDS:
            with pytest.raises(QuantInputError, match=f"{qtype}: ggml aborts"):
                mlxquant.quantize(x, qtype, backend=backend)
    x = _scaled(fine)
    ref = oracle.quantize(x, qtype)
    for backend in BACKENDS:
        assert np.array_equal(mlxquant.quantize(x, qtype, backend=backend), ref), backend


def test_iq3_s_zero_sub_block_shifts_the_following_ones(oracle):
    """ggml's IQ3_S does not advance its qs/signs pointers past an all-zero sub-block: the rows
    and signs of sub-blocks 2..7 land in slots 1..6 and slot 7 stays 0 (qh bits stay in place)."""
    x = np.random.default_rng(5).standard_normal((1, 256)).astype(np.float32)
    x[0, 32:64] = 0
    ref = oracle.quantize(x, "IQ3_S")[0]
    alone = oracle.quantize(np.concatenate([x[:, 64:96]] * 8, axis=1), "IQ3_S")[0]
    assert not ref[2 + 56 : 2 + 64].any() and not ref[74 + 28 : 74 + 32].any()
    assert ref[2 + 8 : 2 + 16].any()  # slot 1 holds sub-block 2, not sub-block 1's zeros
    assert np.array_equal(ref[74 + 4 : 74 + 8], alone[74:78])  # sub-block 2's signs in slot 1
    for backend in BACKENDS:
        assert np.array_equal(mlxquant.quantize(x, "IQ3_S", backend=backend)[0], ref), backend


def test_iq3_xxs_negative_scale_flips_the_signs(oracle):
    """IQ3_XXS's parity rule turns one |x| negative; with a huge importance on a tiny weight
    every trial's fit comes out negative and ggml's "should never happen" branch flips the
    scale and all 28 sign bits of the sub-block."""
    x = np.full((1, 256), 100, np.float32)
    w = np.full(256, 1e-6, np.float32)
    x[0, 0], w[0] = -1e-4, 7e5
    ref = oracle.quantize(x, "IQ3_XXS", imatrix=w)
    assert ref[0, 66:70].tolist() == [255, 255, 255, 15]       # signs 127 x 4, then scale 0
    for backend in BACKENDS:
        assert np.array_equal(mlxquant.quantize(x, "IQ3_XXS", imatrix=w, backend=backend), ref), backend


def _zero_fit() -> tuple[np.ndarray, np.ndarray]:
    """Weights that matter only where x is 0: every fit is 0 (IQ3_S then stores d = 0 and keeps
    its rows and signs), next to an ordinary super-block."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 512)).astype(np.float32)
    even = np.arange(512) % 2 == 0
    x[:, ~even] = 0
    x[1, 256:] = rng.standard_normal(256)
    return x, np.where(even, 0, 1).astype(np.float32)


@pytest.mark.parametrize("qtype", TYPES)
def test_zero_fit_blocks_match_ggml(oracle, qtype):
    x, w = _zero_fit()
    ref = oracle.quantize(x, qtype, imatrix=w)
    if qtype == "IQ3_S":
        assert not ref[0, :2].any() and ref[0, 2:66].any()
    for backend in BACKENDS:
        assert np.array_equal(mlxquant.quantize(x, qtype, imatrix=w, backend=backend), ref), backend


# -- threads -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("qtype", TYPES)
def test_numba_any_row_split_gives_the_same_bytes(oracle, qtype, monkeypatch):
    """Chunks of 1..n rows on 1 or 2 threads: the kernel keeps no state across rows or calls."""
    from mlxquant.quant import api

    rng = np.random.default_rng(7)
    x = (rng.standard_t(3, size=(37, 512)) * 0.05).astype(np.float32)
    x[5] = 0.0
    w = imatrices(512)["lognormal"]
    refs = {None: oracle.quantize(x, qtype), "w": oracle.quantize(x, qtype, imatrix=w)}
    for threads, chunk in (("1", 512), ("2", 512 * 3), ("2", 1 << 18)):
        monkeypatch.setenv("MLXQUANT_THREADS", threads)
        monkeypatch.setattr(api, "CHUNK_WEIGHTS", chunk)
        monkeypatch.setattr(api, "DEQUANT_CHUNK_WEIGHTS", chunk)
        assert np.array_equal(mlxquant.quantize(x, qtype, backend="numba"), refs[None]), (threads, chunk)
        assert np.array_equal(mlxquant.quantize(x, qtype, imatrix=w, backend="numba"), refs["w"])
        deq = mlxquant.dequantize(refs[None], qtype, x.shape, backend="numba")
        assert np.array_equal(deq.view(np.uint32), oracle.dequantize(refs[None], qtype, x.shape).view(np.uint32))


# -- dequantization and grids -----------------------------------------------------------------------
def _grid_blocks(qtype: str) -> np.ndarray:
    """Blocks with d = 1, the smallest sub-block scale, no signs, and grid rows 0, 1, 2, ...:
    each block shows 64 grid entries (XXS weights = entry / 4, S weights = entry)."""
    if qtype == "IQ3_XXS":
        b = np.zeros((4, 98), np.uint8)
        b[:, 1] = 0x3C                                          # f16 1.0
        b[:, 2:66] = np.arange(256).reshape(4, 64)
        return b
    b = np.zeros((8, 110), np.uint8)
    b[:, 1] = 0x3C
    rows = np.arange(512).reshape(8, 64)
    b[:, 2:66] = rows & 255
    b[:, 66:74] = np.where(rows.reshape(8, 8, 8)[:, :, 0] >= 256, 255, 0)  # high bit of every group
    return b


@pytest.mark.parametrize("qtype", TYPES)
def test_grids_are_ggmls(oracle, qtype):
    b = _grid_blocks(qtype)
    shape = (1, b.shape[0] * 256)
    ref = oracle.dequantize(b, qtype, shape).reshape(-1, 4)
    grid, div = (IQ3XXS_GRID, 4) if qtype == "IQ3_XXS" else (IQ3S_GRID, 1)
    assert np.array_equal(ref * div, grid.astype(np.float32))
    for backend in BACKENDS:
        ours = mlxquant.dequantize(b, qtype, shape, backend=backend)
        assert np.array_equal(ours.view(np.uint32), ref.reshape(shape).view(np.uint32)), backend


@pytest.mark.parametrize("qtype", TYPES)
def test_dequantize_any_bytes_like_ggml(oracle, qtype):
    """Random blocks (every sign, scale and row pattern), with inf and NaN scales among them:
    ggml's compiled sign flip makes a NaN weight negative; ours too."""
    t = get_type(qtype)
    b = np.random.default_rng(1).integers(0, 256, (96, t.type_size), dtype=np.uint8)
    b[:64, 1] &= 0x3B                                           # finite d
    b[64:72, 1] = 0x7C                                          # +inf or NaN
    b[72:80, 1] = 0xFC                                          # -inf or NaN
    b[64:68, 0] = 0                                             # +inf
    b[72:76, 0] = 0                                             # -inf
    b[80:88, 0:2] = 0                                           # d = 0
    shape = (2, 48 * 256)
    ref = oracle.dequantize(b, qtype, shape)
    assert np.isnan(ref).any() and np.isinf(ref).any()
    for backend in BACKENDS:
        ours = mlxquant.dequantize(b, qtype, shape, backend=backend)
        assert np.array_equal(ours.view(np.uint32), ref.view(np.uint32)), backend


def _neighbours_as_ggml(code: int, grid: np.ndarray, nwant: int) -> list[int]:
    """iq3xs_init_impl's loop for one off-grid code, written plainly."""
    pos = np.array([2 * ((code >> 3 * k) & 7) + 1 for k in range(4)])
    d2 = ((grid.astype(np.int64) - pos) ** 2).sum(axis=1)
    order = sorted(range(len(grid)), key=lambda j: (d2[j], j))
    out, have, last = [], 1, d2[order[0]]
    for j in order:
        if d2[j] > last:
            if have == nwant:
                break
            last, have = d2[j], have + 1
        out.append(j)
    return out


@pytest.mark.parametrize("grid_size", [256, 512])
def test_search_state_is_ggmls(grid_size):
    s = search_state(grid_size)
    codes = KGRID_256 if grid_size == 256 else KGRID_512
    assert s.grid.shape == (grid_size, 4) and s.grid.dtype == np.int8
    levels = (s.grid.astype(np.int64) - 1) // 2
    assert np.array_equal((levels << (3 * np.arange(4))).sum(axis=1), codes)
    assert np.array_equal(s.kmap[codes], np.arange(grid_size))
    off = np.flatnonzero(s.kmap < 0)
    assert off.size == 4096 - grid_size
    start = -s.kmap[off] - 1
    count = s.neighbours[start].astype(np.int64)
    assert np.array_equal(start[1:], start[:-1] + count[:-1] + 1) and start[0] == 0  # packed lists
    assert s.neighbours.size == start[-1] + count[-1] + 1
    for code in off[:: 37]:
        st = -s.kmap[code] - 1
        got = s.neighbours[st + 1 : st + 1 + s.neighbours[st]].tolist()
        assert got == _neighbours_as_ggml(int(code), s.grid, s.nwant), code
    assert search_state(grid_size) is s  # built once
