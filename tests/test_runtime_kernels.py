"""The runtime's quantized matrix products (mlxquant.runtime.kernels) against the codecs: for every
type, ``QuantMatrix.matmul(x)`` equals ``dequantize(W) @ x.T`` in float32 within 1e-5 of the
product's magnitude (``|x| @ |W|.T``, the bound float32 rounding of a sum scales with), on
random weights quantized by mlxquant's codecs and on real SmolLM2 tensors; 1 and several
activation rows (the fused kernel) and a prompt's worth (the tiled path), row counts that do not
divide among the threads, 1 and 2 threads, and the stored-to-HF row order."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

from conftest import need
from mlxquant.quant import dequantize, quantize
from mlxquant.quant.types import TYPES
from mlxquant.runtime.kernels import DOTS, FUSED_MAX_ROWS, QuantMatrix, kernel_for, set_kernel_threads

TOL = 1e-5
# every type with a codec (each has a fused kernel; prompts take the tiles for all)
CODEC_TYPES = [t for t, q in TYPES.items() if q.codecs and t != "F32"]
# the i-quant grids and NVFP4: each row decoded by the codec, then dotted (fused._decoded)
DECODED = ["IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ1_S", "IQ1_M", "NVFP4"]


def _close(y: np.ndarray, x: np.ndarray, w: np.ndarray) -> float:
    """Largest error of ``y`` against ``x @ w.T`` relative to ``|x| @ |w|.T`` (computed in float64)."""
    ref = x.astype(np.float64) @ w.T.astype(np.float64)
    bound = np.abs(x).astype(np.float64) @ np.abs(w).T.astype(np.float64)
    return float((np.abs(y - ref) / np.maximum(bound, 1e-30)).max())


def _quantized(qtype: str, rows: int, cols: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((rows, cols)).astype(np.float32) * rng.uniform(0.5, 2.0, (rows, 1)).astype(np.float32)
    imatrix = rng.uniform(0.5, 2.0, cols).astype(np.float32) if TYPES[qtype].requires_imatrix else None
    raw = np.asarray(quantize(w, qtype, imatrix=imatrix)).reshape(rows, -1)
    return raw, dequantize(raw, qtype, (rows, cols))


def test_every_codec_type_has_a_fused_kernel():
    assert set(DOTS) == set(CODEC_TYPES)
    assert set(DECODED) <= set(DOTS)
    assert {"Q8_0", "Q4_0", "Q4_K", "Q5_K", "Q6_K", "Q5_0", "Q4_1", "Q5_1", "Q3_K", "Q2_K", "IQ4_NL",
            "IQ4_XS", "F16", "BF16"} <= set(DOTS)


@pytest.mark.parametrize("qtype", sorted(DOTS))
def test_fused_matches_dequantize(qtype):
    rows, cols = 203, 512  # 203: not a multiple of any chunk or thread split
    raw, w = _quantized(qtype, rows, cols)
    m = QuantMatrix(raw, qtype, cols, qtype)
    assert m.fused
    rng = np.random.default_rng(1)
    for threads in (1, 2):
        old = set_kernel_threads(threads)
        try:
            for T in (1, FUSED_MAX_ROWS, 3):
                x = rng.standard_normal((T, cols)).astype(np.float32)
                y = m.matmul(x)
                assert y.shape == (T, rows) and y.dtype == np.float32
                assert _close(y, x, w) < TOL, (threads, T)
            xv = rng.standard_normal(cols).astype(np.float32)
            assert _close(m.matmul(xv)[None], xv[None], w) < TOL
            x = rng.standard_normal((5, cols)).astype(np.float32)  # the kernel itself, 5 rows
            y = np.full((5, rows), np.nan, np.float32)
            m.kernel.fused(raw, x, y, 16, 16)
            assert _close(y, x, w) < TOL
        finally:
            set_kernel_threads(old)
    x = rng.standard_normal((37, cols)).astype(np.float32)  # a prompt: decoded tiles + sgemm
    assert _close(m.matmul(x), x, w) < TOL


# byte offsets of the float16 fields in one block (ggml-common.h; see mlxquant.runtime.kernels.layout)
HALVES = {"Q4_0": (0,), "Q4_1": (0, 2), "Q5_0": (0,), "Q5_1": (0, 2), "Q8_0": (0,), "IQ4_NL": (0,),
          "Q2_K": (80, 82), "Q3_K": (108,), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,),
          "IQ4_XS": (0,)}


@pytest.mark.parametrize("qtype", sorted(HALVES))
def test_fused_on_random_bits(qtype):
    """Blocks of random bytes (every code, high bit and sub-block scale a quantizer may not write)
    with finite float16 scales: the bit unpacking of every lane against the codec's dequantize.
    Rows of 11 32-weight blocks: the kernels taking 4 blocks per loop also run their 1-block tail."""
    k = kernel_for(qtype)
    rows, cols = 37, 11 * 32 if k.block == 32 else 3 * 256
    rng = np.random.default_rng(10)
    raw = rng.integers(0, 256, (rows, cols // k.block * k.block_bytes), dtype=np.uint8)
    blocks = raw.reshape(rows, -1, k.block_bytes)
    for off in HALVES[qtype]:
        half = rng.uniform(-2.0, 2.0, blocks.shape[:2]).astype(np.float16)
        blocks[:, :, off:off + 2] = half.view(np.uint8).reshape(rows, -1, 2)
    w = dequantize(raw, qtype, (rows, cols))
    assert np.isfinite(w).all()
    m = QuantMatrix(raw, qtype, cols, qtype)
    for T in (1, 2):
        x = rng.standard_normal((T, cols)).astype(np.float32)
        assert _close(m.matmul(x), x, w) < TOL, T


def test_iq4nl_value_is_the_table():
    """The IQ4 kernels compute the code values with a rounded polynomial instead of a lookup."""
    from numba import njit

    from mlxquant.runtime.kernels.layout import KVALUES_IQ4NL, iq4nl_value

    value = njit(lambda q: iq4nl_value(q))
    assert [value(np.int32(q)) for q in range(16)] == KVALUES_IQ4NL.tolist()


@pytest.mark.parametrize("qtype", DECODED)
def test_tiles_match_dequantize_for_few_rows_too(qtype):
    """The tile path (a prompt's, for every type) on few rows as well, where the fused kernel
    would run: a matrix without a kernel (rows it cannot take) still multiplies right."""
    rows, cols = 70, 512
    raw, w = _quantized(qtype, rows, cols, seed=2)
    m = QuantMatrix(raw, qtype, cols, qtype)
    m.kernel = None
    assert not m.fused
    rng = np.random.default_rng(3)
    for T in (1, 5):
        x = rng.standard_normal((T, cols)).astype(np.float32)
        assert _close(m.matmul(x), x, w) < TOL


@pytest.mark.parametrize("qtype", DECODED)
def test_decoded_kernels_equal_the_codec_rows(qtype):
    """A decoded-row kernel multiplies exactly the codec's values: against float64 products of
    :func:`dequantize`'s rows, to float32 summation, on rows of three blocks, rows of all-zero
    blocks, and with activations that hold NaN (propagated to every output)."""
    rng = np.random.default_rng(11)
    cols = 3 * 256
    raw, w = _quantized(qtype, 37, cols, seed=12)
    zero = np.zeros_like(raw[:2])  # all-zero bytes: a zero scale
    raw = np.ascontiguousarray(np.concatenate([raw, zero]))
    w = np.concatenate([w, np.zeros((2, cols), np.float32)])
    x = rng.standard_normal((3, cols)).astype(np.float32) * np.float32(1e-3)
    y = np.full((3, raw.shape[0]), np.nan, np.float32)
    DOTS[qtype][0](raw, x, y, 5, 16)
    assert _close(y, x, w) < TOL and not y[:, -2:].any()
    x[1, 7] = np.nan
    DOTS[qtype][0](raw, x, y, 5, 16)
    assert np.isnan(y[1]).all() and not np.isnan(y[0]).any()


def test_many_tiles_and_output_order(monkeypatch):
    """A matrix spanning several decoded tiles, with rows stored in another order than HF's."""
    from mlxquant.runtime.kernels import matrix

    monkeypatch.setattr(matrix, "TILE_BYTES", 1 << 18)  # 256 rows of 256 a tile: 5 tiles here
    rows, cols = 1100, 256
    raw, w = _quantized("Q4_K", rows, cols, seed=4)
    order = np.random.default_rng(5).permutation(rows)  # HF row i is stored row order[i]
    m = QuantMatrix(raw, "Q4_K", cols, "perm", order)
    hf = w[order]
    rng = np.random.default_rng(6)
    for T in (1, 2, 300):
        x = rng.standard_normal((T, cols)).astype(np.float32)
        assert _close(m.matmul(x), x, hf) < TOL
    idx = np.array([5, 0, 1099, 5])
    assert np.array_equal(m.rows(idx), hf[idx])
    assert np.array_equal(m.dequantize(), hf)


def test_special_values_propagate():
    rows, cols = 9, 64
    raw, w = _quantized("Q8_0", rows, cols, seed=7)
    m = QuantMatrix(raw, "Q8_0", cols)
    x = np.ones((1, cols), np.float32)
    x[0, 3] = np.nan
    assert np.isnan(m.matmul(x)).all()
    x = np.zeros((2, cols), np.float32)
    assert not m.matmul(x).any()


def test_no_fused_kernel_for_odd_rows():
    """F16 rows whose length is not a multiple of 32 go through the tiles."""
    rng = np.random.default_rng(8)
    w = rng.standard_normal((5, 40)).astype(np.float16)
    m = QuantMatrix(w.view(np.uint8).reshape(5, -1), "F16", 40)
    assert not m.fused
    x = rng.standard_normal((1, 40)).astype(np.float32)
    assert _close(m.matmul(x), x, w.astype(np.float32)) < TOL
    assert kernel_for("Q8_K") is None  # an activation type: no weights of it to multiply


def test_real_smollm2_tensors():
    """The tensors of the SmolLM2 GGUF as stored (Q4_1, Q8_0), and one re-quantized to K types."""
    from mlxquant.formats.gguf_read import GGUFModel
    from mlxquant.testing.inputs import smollm2_gguf_path

    path = smollm2_gguf_path()
    need(path is not None, "SmolLM2 GGUF (bash scripts/test.sh fetches it)")
    rng = np.random.default_rng(9)
    with GGUFModel(path) as g:
        seen = set()
        for t in g.tensors:
            if len(t.shape) != 2 or t.type in seen or t.type not in DOTS:
                continue
            seen.add(t.type)
            w = g.tensor(t.name)
            m = QuantMatrix(g.raw(t.name), t.type, t.shape[1], t.name)
            for T in (1, 2, 40):
                x = rng.standard_normal((T, t.shape[1])).astype(np.float32)
                assert _close(m.matmul(x), x, w) < TOL, t.name
        assert {"Q4_1", "Q8_0"} <= seen
        w = g.tensor("blk.0.ffn_down.weight")[:, :1280]  # rows of 1280 = 5 x 256
    for qtype in ("Q4_K", "Q6_K", "IQ4_XS"):
        raw = np.asarray(quantize(w, qtype)).reshape(w.shape[0], -1)
        ref = dequantize(raw, qtype, w.shape)
        x = rng.standard_normal((1, w.shape[1])).astype(np.float32)
        assert _close(QuantMatrix(raw, qtype, w.shape[1]).matmul(x), x, ref) < TOL, qtype


@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K"])
def test_grouped_products_equal_the_single_ones(qtype):
    """``linear_group``: two or three matrices of one type in one launch (rows of 75, 203 and 32:
    chunks that end inside each matrix; the second in another stored row order) give what
    ``dequantize(W) @ x.T`` gives; mixed types fall back to one product each."""
    from mlxquant.runtime.kernels import linear_group
    from mlxquant.runtime.kernels.fused import GROUPED

    assert qtype in GROUPED
    cols = 512
    mats, dense = [], []
    for i, rows in enumerate((75, 203, 32)):
        raw, w = _quantized(qtype, rows, cols, seed=20 + i)
        order = np.random.default_rng(i).permutation(rows) if i == 1 else None
        mats.append(QuantMatrix(raw, qtype, cols, f"m{i}", order))
        dense.append(w if order is None else w[order])
    rng = np.random.default_rng(9)
    for threads in (1, 2):
        old = set_kernel_threads(threads)
        try:
            for T in (1, 3):
                x = rng.standard_normal((T, cols)).astype(np.float32)
                for k in (2, 3):
                    ys = linear_group(x, tuple(mats[:k]))
                    assert len(ys) == k
                    for y, w in zip(ys, dense):
                        assert y.shape == (T, w.shape[0]) and _close(y, x, w) < TOL
        finally:
            set_kernel_threads(old)
    other = "Q8_0" if qtype != "Q8_0" else "Q4_0"
    raw, w = _quantized(other, 40, cols, seed=30)
    x = rng.standard_normal((1, cols)).astype(np.float32)
    ys = linear_group(x, (mats[0], QuantMatrix(raw, other, cols)))
    assert _close(ys[0], x, dense[0]) < TOL and _close(ys[1], x, w) < TOL


def test_float32_rows_through_the_kernel():
    """A float32 matrix times few rows goes to the compiled row kernel (not BLAS) when its width
    is a multiple of 32, with BLAS's result within float32 rounding; other widths and many rows
    stay on BLAS; NaN propagates."""
    from mlxquant.runtime.kernels import linear
    from mlxquant.runtime.kernels.matrix import kernel_rows

    rng = np.random.default_rng(11)
    w = rng.standard_normal((203, 576)).astype(np.float32)
    assert kernel_rows(w) and not kernel_rows(w[:, :40].copy()) and not kernel_rows(w.astype(np.float64))
    for threads in (1, 2):
        old = set_kernel_threads(threads)
        try:
            for T in (1, 3, FUSED_MAX_ROWS, 40):
                x = rng.standard_normal((T, 576)).astype(np.float32)
                y = linear(x, w)
                assert y.shape == (T, 203) and y.dtype == np.float32 and _close(y, x, w) < TOL
            xv = rng.standard_normal(576).astype(np.float32)
            assert linear(xv, w).shape == (203,) and _close(linear(xv, w)[None], xv[None], w) < TOL
        finally:
            set_kernel_threads(old)
    x = np.ones((1, 576), np.float32)
    x[0, 7] = np.nan
    assert np.isnan(linear(x, w)).all()
    narrow = w[:, :40].copy()
    x = rng.standard_normal((1, 40)).astype(np.float32)
    assert _close(linear(x, narrow), x, narrow) < TOL


def test_strided_bytes_are_made_contiguous():
    """Rows taken with a stride (not C-contiguous) still multiply, single and grouped."""
    from mlxquant.runtime.kernels import linear_group

    raw, w = _quantized("Q4_K", 80, 512, seed=40)
    m = QuantMatrix(raw[::2], "Q4_K", 512)
    assert m.raw.flags.c_contiguous and m.fused
    x = np.random.default_rng(41).standard_normal((1, 512)).astype(np.float32)
    assert _close(m.matmul(x), x, w[::2]) < TOL
    ys = linear_group(x, (m, QuantMatrix(raw, "Q4_K", 512)))
    assert _close(ys[0], x, w[::2]) < TOL and _close(ys[1], x, w) < TOL


@pytest.fixture
def one_thread_blas():
    """BLAS on one thread, as a prompt whose tiles are split over threads runs it."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"):
        yield


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_K", "Q6_K", "IQ2_XS", "F16"])
def test_split_tiles_equal_one_thread(qtype, monkeypatch, one_thread_blas):
    """A prompt's tiles split over 2 and 3 threads (each decoding its own rows into its own
    scratch tile) give the one-thread product, across several tiles per thread, with rows that
    do not divide among the threads and a stored row order."""
    from mlxquant.runtime.kernels import matrix

    monkeypatch.setattr(matrix, "TILE_BYTES", 1 << 16)  # 64 rows of 256 a tile
    monkeypatch.setattr(matrix, "SPLIT_MIN_MACS", 0)  # split however small
    rows, cols = 403, 256
    raw, w = _quantized(qtype, rows, cols, seed=7)
    order = np.random.default_rng(8).permutation(rows)
    m = QuantMatrix(raw, qtype, cols, qtype, order)
    x = np.random.default_rng(9).standard_normal((40, cols)).astype(np.float32)
    one = m.matmul(x)
    assert _close(one, x, w[order]) < TOL
    for n in (2, 3):
        old = matrix.set_tile_threads(n)
        try:
            split = m.matmul(x)
        finally:
            matrix.set_tile_threads(old)
        assert _close(split, x, w[order]) < TOL
        np.testing.assert_allclose(split, one, rtol=0, atol=1e-6 * float(np.abs(one).max()))


@pytest.mark.parametrize("act", ["silu", "gelu_tanh"])
@pytest.mark.parametrize("threads", [1, 2])
def test_gated_equals_the_plain_form(act, threads, one_thread_blas, monkeypatch):
    """``gated`` (each tile thread computes its own columns of gate, up and the activation)
    gives ``act(x @ gate.T) * (x @ up.T)``; mixed types and few rows take the plain path."""
    from mlxquant.runtime import ops
    from mlxquant.runtime.kernels import matrix

    fn = getattr(ops, act)
    monkeypatch.setattr(matrix, "SPLIT_MIN_MACS", 0)
    rows, cols = 300, 256
    graw, gw = _quantized("Q4_K", rows, cols, seed=10)
    uraw, uw = _quantized("Q6_K", rows, cols, seed=11)
    gate, up = QuantMatrix(graw, "Q4_K", cols, "g"), QuantMatrix(uraw, "Q6_K", cols, "u")
    up4 = QuantMatrix(_quantized("Q4_K", rows, cols, seed=11)[0], "Q4_K", cols, "u4")
    rng = np.random.default_rng(12)
    old = matrix.set_tile_threads(threads)
    try:
        for u, T in ((up4, 33), (up, 33), (up4, 3)):  # split, mixed types, few rows
            x = (0.1 * rng.standard_normal((T, cols))).astype(np.float32)
            got = matrix.gated(x, gate, u, fn)
            want = fn(gate.matmul(x)) * u.matmul(x)
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * float(np.abs(want).max()))
    finally:
        matrix.set_tile_threads(old)


def test_gated_in_one_part_leaves_blas_its_threads(monkeypatch):
    """Outside a split prompt (``eval``, ``imatrix``: tile threads 1), ``gated`` computes its tiles
    with BLAS on its own threads, as a plain product would: it never pins BLAS to one thread;
    split over tile threads it does, in each part. Tiles of several rows each (TILE_BYTES made
    small) give the plain form's values."""
    from mlxquant.runtime import ops
    from mlxquant.runtime.kernels import matrix

    pinned = []

    @contextlib.contextmanager
    def spy():
        pinned.append(1)
        yield

    monkeypatch.setattr(matrix, "on_this_thread", spy)
    monkeypatch.setattr(matrix, "SPLIT_MIN_MACS", 0)
    monkeypatch.setattr(matrix, "TILE_BYTES", 64 * 4 * 256)  # 64 rows a tile: 5 tiles of 300 rows
    rows, cols = 300, 256
    gate = QuantMatrix(_quantized("Q4_K", rows, cols, seed=20)[0], "Q4_K", cols, "g")
    up = QuantMatrix(_quantized("Q4_K", rows, cols, seed=21)[0], "Q4_K", cols, "u")
    x = (0.1 * np.random.default_rng(22).standard_normal((40, cols))).astype(np.float32)
    want = ops.silu(gate.matmul(x)) * up.matmul(x)
    for threads, pins in ((1, 0), (2, 2 * 3 * 2)):  # 2 parts x 3 tiles x (gate, up)
        old = matrix.set_tile_threads(threads)
        try:
            pinned.clear()
            got = matrix.gated(x, gate, up, ops.silu)
        finally:
            matrix.set_tile_threads(old)
        assert len(pinned) == pins, threads
        # BLAS sums in its own order per thread count: float32 rounding apart
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * float(np.abs(want).max()))


def test_run_parts_waits_for_every_part_and_raises():
    import threading
    import time

    from mlxquant.runtime.kernels.matrix import run_parts

    done, names = [], set()

    def part(k: int) -> None:
        names.add(threading.current_thread().name)
        if k == 1:
            raise ValueError("part 1")
        time.sleep(0.05)
        done.append(k)

    with pytest.raises(ValueError, match="part 1"):
        run_parts(part, 3)
    assert sorted(done) == [0, 2]  # the slow parts finished before the error was raised
    assert threading.current_thread().name in names  # part 0 ran on the caller
    seen = []
    run_parts(seen.append, 1)
    assert seen == [0]


@pytest.mark.parametrize("n", [2, 3])
def test_split_group_equals_the_single_products(n, monkeypatch, one_thread_blas):
    """A prompt's q/k/v (matrices of different types and heights, one in another row order) split
    together over the tile threads equal their one-thread products."""
    from mlxquant.runtime.kernels import matrix

    monkeypatch.setattr(matrix, "SPLIT_MIN_MACS", 0)
    cols = 256
    mats = []
    for i, (qtype, rows) in enumerate((("Q4_K", 200), ("Q6_K", 64), ("Q8_0", 96))):
        raw, _ = _quantized(qtype, rows, cols, seed=20 + i)
        order = np.random.default_rng(30 + i).permutation(rows) if i == 0 else None
        mats.append(QuantMatrix(raw, qtype, cols, qtype, order))
    x = np.random.default_rng(40).standard_normal((37, cols)).astype(np.float32)
    single = [m.matmul(x) for m in mats]
    old = matrix.set_tile_threads(n)
    try:
        got = matrix.linear_group(x, tuple(mats))
    finally:
        matrix.set_tile_threads(old)
    for g, s in zip(got, single):
        np.testing.assert_allclose(g, s, rtol=0, atol=1e-6 * float(np.abs(s).max()))


@pytest.mark.parametrize("qtype", CODEC_TYPES)
def test_tile_decode_equals_dequantize(qtype):
    """A prompt tile's decode (straight to the compiled decoder once it is loaded) gives
    :func:`dequantize`'s values bit for bit, for every type; an ``out`` the decoder cannot take
    goes through :func:`dequantize` and its checks."""
    from mlxquant.quant.api import compiled_row_decoder

    rows, cols = 40, 512
    raw, w = _quantized(qtype, rows, cols, seed=4)
    m = QuantMatrix(raw, qtype, cols, qtype)
    for r0, r1 in ((0, rows), (3, 17), (39, 40)):
        out = np.full((r1 - r0, cols), np.nan, np.float32)
        got = m.decode(r0, r1, out)
        assert got is out and np.array_equal(out.view(np.uint32), w[r0:r1].view(np.uint32)), (qtype, r0)
    assert m._decoder is compiled_row_decoder(qtype)
    if compiled_row_decoder(qtype) is not None:  # the compiled codec: it is the one used
        assert m._decoder is not None
    assert np.array_equal(m.decode(0, 5), w[:5])  # no out: a fresh array
    with pytest.raises(Exception, match="out="):
        m.decode(0, 5, np.empty((5, cols + 32), np.float32))


def test_attention_masks_are_made_once_per_prompt():
    from mlxquant.runtime import numpy_model as nm
    from mlxquant.runtime.ops import attention_mask

    a = nm._mask(0, 128, None)
    assert a is nm._mask(0, 128, None) and not a.flags.writeable
    assert np.array_equal(a, attention_mask(0, 128, None))
    b = nm._mask(128, 128, 64)
    assert np.array_equal(b, attention_mask(128, 128, 64)) and b is not a
    for k in range(nm.MASKS_KEPT + 1):  # bounded: the oldest go
        nm._mask(1000 + k, 4, None)
    assert len(nm._MASKS.d) <= nm.MASKS_KEPT
    assert np.array_equal(nm._mask(0, 128, None), a)


@pytest.mark.parametrize("qtype", [t for t in DOTS if t != "F32" and t not in DECODED])
def test_decode_step_dispatch_reaches_the_kernel_in_use(qtype):
    """The compiled decode step picks a matrix's kernel by type code (step.matvec): for every
    type, the values of that type's kernel in use (fused.DOTS: the integer one where the CPU has
    it) called directly, to float32 rounding (compiled into the step, LLVM may order a sum
    differently)."""
    from mlxquant.runtime.kernels import step

    rows, cols = 24, 512
    raw, w = _quantized(qtype, rows, cols, seed=8)
    x = np.random.default_rng(9).standard_normal((1, cols)).astype(np.float32)
    want, got = np.empty((1, rows), np.float32), np.empty((1, rows), np.float32)
    DOTS[qtype][0](raw, x, want, 8, 16)
    step.matvec(step.CODES[qtype], raw, x, got, 8)
    bound = np.abs(x).astype(np.float64) @ np.abs(w).T.astype(np.float64)
    assert np.all(np.abs(got - want) <= 1e-6 * bound) and _close(got, x, w) < TOL
