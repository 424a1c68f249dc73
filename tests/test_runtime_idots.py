"""The integer-dot kernels (mlxquant.runtime.kernels.idots): the exact split of the activations into
three signed bytes, and the K-quant, IQ4_XS, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL and MXFP4 products on it against ``dequantize`` +
a float64 product, within the float32 tolerance of tests/test_runtime_kernels.py. The float
kernels they replace (Apple Silicon's path, and the fallback) are checked here alongside. The
integer kernels need AVX-512 VNNI; where the CPU lacks it, the tests check that the float kernels
are the ones in use instead."""

from __future__ import annotations

import os

import numpy as np
import pytest
from test_runtime_kernels import TOL, _close, _quantized

from mlxquant.runtime.kernels import fused, idots

BLOCK = 256
KINDS = ["normal", "heavy", "outliers", "tiny", "zero groups", "huge"]
INT_TYPES = ["Q4_K", "Q5_K", "Q6_K", "Q3_K", "Q2_K", "IQ4_XS", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "IQ4_NL",
             "MXFP4"]
GROUPED_INT = [t for t in INT_TYPES if t in fused.GROUPED]


def _x(kind: str, T: int, cols: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, cols))
    if kind == "heavy":
        x = rng.standard_t(1.5, (T, cols))
    elif kind == "outliers":  # a few channels 1000x the rest, as in real activations
        x[:, rng.choice(cols, 5, replace=False)] *= 1000.0
    elif kind == "tiny":
        x *= 1e-15
    elif kind == "zero groups":
        x[:, 16:48] = 0.0
        x[:, -16:] = 0.0
    elif kind == "huge":
        x *= 1e15
    return x.astype(np.float32)


def _split(x: np.ndarray, slots: np.ndarray):
    T, cols = x.shape
    xq = np.full((T, 3 * cols), 99, np.int8)
    xs = np.full((T, cols // 8), np.nan, np.float32)
    return idots.split_x(x, slots, xq, xs), xq, xs


def _unsplit(xq: np.ndarray, xs: np.ndarray, slots: np.ndarray, cols: int):
    """(values ``s·(a1·2^14 + a2·2^7 + a3)`` in column order, the parts, the scales per column)."""
    T = xq.shape[0]
    parts = xq.reshape(T, cols // BLOCK, 3, 16, 16).astype(np.int64)[:, :, :, slots, :]  # group order
    a1, a2, a3 = (parts[:, :, k].reshape(T, cols) for k in range(3))
    s = np.repeat(xs.reshape(T, cols // BLOCK, 2, 16)[:, :, 0].reshape(T, -1), 16, axis=1)
    return s.astype(np.float64) * (a1 * 2 ** 14 + a2 * 2 ** 7 + a3), (a1, a2, a3), s


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("slots", ["Q4_K", "Q6_K"])
def test_split_is_exact_to_21_bits(kind, slots):
    slots = {"Q4_K": idots.Q4_K_SLOTS, "Q6_K": idots.Q6_K_SLOTS}[slots]
    cols = 3 * BLOCK
    x = _x(kind, 3, cols)
    ok, xq, xs = _split(x, slots)
    assert ok
    back, (a1, a2, a3), s = _unsplit(xq, xs, slots, cols)
    assert a1.min() >= -127 and a1.max() <= 127
    assert a2.min() >= -64 and a2.max() <= 63 and a3.min() >= -64 and a3.max() <= 63
    groups = np.abs(x.astype(np.float64)).reshape(3, -1, 16).max(axis=2)
    assert np.array_equal(xs.reshape(3, -1, 2, 16)[:, :, 0].reshape(3, -1), (groups / idots.SPLIT).astype(np.float32))
    # each value within one step s = max|group| / (127·2^14) of x: 21 bits below its group's largest
    assert np.all(np.abs(back - x) <= s), np.abs(back - x).max()
    assert np.all(back[x == 0] == 0)
    # the sums are of the split values (what the codes multiply), to float32 rounding
    sums = back.reshape(3, -1, 16).sum(axis=2)
    got = xs.reshape(3, -1, 2, 16)[:, :, 1].reshape(3, -1)
    assert np.all(np.abs(got - sums) <= 2 ** -23 * np.abs(back).reshape(3, -1, 16).sum(axis=2))


@pytest.mark.parametrize("kind", KINDS)
def test_pair_split_is_the_same_split_by_64_columns(kind):
    """The 32-weight types' split (64 columns at a time, parts and groups in column order) holds
    exactly the parts, scales and sums of the K-quants' split, laid out by 64 columns."""
    cols = 3 * BLOCK
    x = _x(kind, 3, cols, seed=9)
    ok, xq, xs = _split(x, idots.Q6_K_SLOTS)  # Q6_K's groups are in column order
    xq64 = np.full((3, 3 * cols), 99, np.int8)
    xs64 = np.full((3, cols // 8), np.nan, np.float32)
    assert ok and idots.split_x64(x, xq64, xs64)
    by256 = xq.reshape(3, cols // BLOCK, 3, BLOCK).transpose(0, 2, 1, 3).reshape(3, 3, cols)
    by64 = xq64.reshape(3, cols // 64, 3, 64).transpose(0, 2, 1, 3).reshape(3, 3, cols)
    assert np.array_equal(by256, by64)
    assert np.array_equal(xs.reshape(3, -1, 2, 16).transpose(0, 2, 1, 3).reshape(3, 2, -1),
                          xs64.reshape(3, -1, 2, 4).transpose(0, 2, 1, 3).reshape(3, 2, -1))
    bad = x.copy()
    bad[1, 100] = np.inf
    assert not idots.split_x64(bad, xq64, xs64)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 2.0 ** 61, 2.0 ** -61])
def test_split_refuses_what_it_cannot_hold(bad):
    x = _x("normal", 2, 2 * BLOCK)
    x[1, 300] = bad
    if abs(bad) < 1:  # a tiny group: every value of it tiny
        x[1, 288:304] = bad
    assert not _split(x, idots.Q6_K_SLOTS)[0]
    x[1, 288:304] = 2.0 ** -60  # the limits themselves are taken
    x[0, 5] = 2.0 ** 60
    assert _split(x, idots.Q6_K_SLOTS)[0]


def test_available_follows_the_cpu():
    import llvmlite.binding as ll

    feats = ll.get_host_cpu_features()
    want = all(feats.get(f, False) for f in ("avx512vnni", "avx512bw", "avx512f")) \
        and os.environ.get("MLXQUANT_INT_DOTS", "1") != "0"
    assert idots.AVAILABLE == want
    assert fused.DOTS["Q4_K"][0] is (fused.fused_q4_k_int if want else fused.fused_q4_k)
    assert fused.DOTS["Q5_K"][0] is (fused.fused_q5_k_int if want else fused.fused_q5_k)
    assert fused.DOTS["Q6_K"][0] is (fused.fused_q6_k_int if want else fused.fused_q6_k)
    assert fused.GROUPED["Q4_K"] is (fused.fused3_q4_k_int if want else fused.fused3_q4_k)
    for t in ("q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "iq4_nl", "iq4_xs", "q2_k", "q3_k", "mxfp4"):
        assert fused.DOTS[t.upper()][0] is getattr(fused, f"fused_{t}_int" if want else f"fused_{t}")
        if t.upper() in fused.GROUPED:
            assert fused.GROUPED[t.upper()] is getattr(fused, f"fused3_{t}_int" if want else f"fused3_{t}")


@pytest.mark.parametrize("env", [{"MLXQUANT_INT_DOTS": "0"}, {"NUMBA_CPU_NAME": "generic"}])
def test_turned_off_or_compiled_for_another_cpu(env):
    """``MLXQUANT_INT_DOTS=0``, and Numba compiling for a named CPU without listed features (whose
    target may lack VNNI: the intrinsic would not compile), keep the float kernels."""
    import subprocess
    import sys

    code = ("from mlxquant.runtime.kernels import fused, idots; "
            "print(idots.AVAILABLE, fused.DOTS['Q4_K'][0] is fused.fused_q4_k)")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True,
                         text=True, check=True)
    assert out.stdout.split() == ["False", "True"]


def _kernels(qtype: str):
    """(name, kernel) of the float kernel and, where the CPU runs it, the integer one."""
    low = qtype.lower()
    out = [("float", getattr(fused, f"fused_{low}"))]
    if idots.AVAILABLE:
        out.append(("int", getattr(fused, f"fused_{low}_int")))
    return out


@pytest.mark.parametrize("qtype", INT_TYPES)
@pytest.mark.parametrize("imatrix", [False, True])
def test_kernels_match_dequantize(qtype, imatrix):
    rows, cols = 77, 4 * BLOCK
    if imatrix:
        from mlxquant.quant import dequantize, quantize

        rng = np.random.default_rng(5)
        w0 = rng.standard_t(3, (rows, cols)).astype(np.float32)
        raw = np.asarray(quantize(w0, qtype, imatrix=rng.uniform(0.1, 5.0, cols).astype(np.float32))).reshape(rows, -1)
        w = dequantize(raw, qtype, (rows, cols))
    else:
        raw, w = _quantized(qtype, rows, cols, seed=3)
    for name, kernel in _kernels(qtype):
        for kind in KINDS:
            for T in (1, 4):
                x = _x(kind, T, cols, seed=T)
                y = np.full((T, rows), np.nan, np.float32)
                kernel(raw, x, y, 8, 16)
                assert _close(y, x, w) < TOL, (name, kind, T)


@pytest.mark.parametrize("qtype", INT_TYPES)
def test_unsplittable_activations_take_the_float_kernel(qtype):
    """Activations the split refuses (NaN, inf, past 2^60) go to the float row dots, inlined into
    the integer kernel: the float kernel's values to float32 rounding (two compilations of the
    same loops may contract them differently: a CI run's first compilation differed from the
    float kernel's by 3e-7 relative), with its NaN and inf."""
    raw, w = _quantized(qtype, 40, 2 * BLOCK, seed=4)
    kernels = dict(_kernels(qtype))
    for bad in (np.nan, np.inf, 1e30):
        x = _x("normal", 2, 2 * BLOCK)
        x[1, 7] = bad
        assert not idots.split_x64(x, np.empty((2, 6 * BLOCK), np.int8), np.empty((2, BLOCK // 4), np.float32))
        ys = {}
        for name, kernel in kernels.items():
            ys[name] = np.zeros((2, 40), np.float32)
            kernel(raw, x, ys[name], 8, 16)
        bound = np.abs(x[:1]).astype(np.float64) @ np.abs(w).T.astype(np.float64)
        got = ys.get("int", ys["float"])
        assert np.all(np.abs(got[0] - ys["float"][0]) <= 1e-6 * bound[0])
        assert np.array_equal(np.isnan(got[1]), np.isnan(ys["float"][1]))
        assert np.array_equal(got[1][np.isinf(got[1])], ys["float"][1][np.isinf(got[1])])
        if not np.isfinite(bad):
            assert np.isnan(ys["float"][1]).all() or np.isinf(ys["float"][1]).any()


@pytest.mark.parametrize("qtype", GROUPED_INT)
def test_grouped_kernel_equals_the_single_one(qtype):
    """The kernels in use (integer ones where the CPU has them): one launch for three matrices
    gives each what its own launch gives, to float32 rounding (LLVM may contract the two copies
    differently)."""
    made = [_quantized(qtype, r, 2 * BLOCK, seed=r) for r in (24, 8, 8)]
    x = _x("outliers", 2, 2 * BLOCK)
    single = fused.DOTS[qtype][0]
    ys = [np.empty((2, raw.shape[0]), np.float32) for raw, _ in made]
    fused.GROUPED[qtype](*(raw for raw, _ in made), x, *ys, 8)
    for (raw, w), y in zip(made, ys):
        want = np.empty_like(y)
        single(raw, x, want, 8, 16)
        assert _close(y, x, w) < TOL
        bound = np.abs(x).astype(np.float64) @ np.abs(w).T.astype(np.float64)
        assert np.all(np.abs(y - want) <= 1e-6 * bound)


@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "IQ4_NL", "MXFP4"])
@pytest.mark.parametrize("cols", [64, 576, 96])
def test_pair_kernels_on_narrow_and_odd_rows(qtype, cols):
    """Rows of 64 columns (one pair), of SmolLM2's 576 (an odd number of pairs: the unrolled loop's
    remainder), and of 96 (not a multiple of 64: the float kernel) match ``dequantize``; the
    integer kernel's result equals the float one's within float32 rounding."""
    raw, w = _quantized(qtype, 33, cols, seed=cols)
    kernels = dict(_kernels(qtype))
    ys = {}
    for name, kernel in kernels.items():
        for kind in KINDS:
            x = _x(kind, 3, cols, seed=1)
            y = np.full((3, 33), np.nan, np.float32)
            kernel(raw, x, y, 8, 16)
            assert _close(y, x, w) < TOL, (name, kind)
            ys[name, kind] = y
    if "int" in kernels and cols % 64:  # not taken by the integer path: the float kernel's bits
        assert all(np.array_equal(ys["int", k], ys["float", k]) for k in KINDS)
