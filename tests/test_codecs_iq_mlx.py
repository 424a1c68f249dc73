"""The 1-3 bit i-quants on MLX (IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ1_S, IQ1_M):
bytes == ggml's ``ggml_quantize_chunk``, dequantize == ggml's to_float bit for bit.

Every synthetic family x imatrix None/"meansq"/"lognormal" (types that require an imatrix: only
with one) and the real tensors. MLX runs on the CPU here and these searches are thousands of
small MLX ops per chunk, so the real tensors are cut to their first 8 rows (each still holds
every 256-weight block position of its row) and the chunk-split test uses 12 rows.

ggml aborts the process (GGML_ASSERT) on the "huge" family for the grid types (its neighbour
distances overflow float32); the NumPy reference raises GridSearchAbort / QuantInputError at
exactly those inputs (tests/test_codecs_iq2.py and test_codecs_iq3.py show in a subprocess that
ggml really aborts there), and so must MLX. Where ggml does not abort ("huge" for IQ2_XXS), the
bytes are compared with ggml's as for every other family.
"""

from __future__ import annotations

import importlib
import numpy as np
import pytest

import mlxquant
from mlxquant.errors import QuantInputError
from mlxquant.quant.types import get_type
from mlxquant.testing.inputs import imatrices, synthetic_families

mx = pytest.importorskip("mlx.core")



@pytest.fixture(scope="module", autouse=True)
def _registered():
    """Until mlx/codecs.py imports them, importing the modules registers their codecs. Done when
    the tests run, not at collection, so that test_codecs_mlx.py (whose type list is built at
    collection from the registry) does not pick these types up with inputs that ggml aborts on."""
    for name in sorted(set(MODULES.values())):
        importlib.import_module(f"mlxquant.quant.mlx.{name}")

TYPES = ["IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ1_S", "IQ1_M"]
IMATRIX = [None, "meansq", "lognormal"]
SYNTH = synthetic_families()
# (type, family) where ggml_quantize_chunk aborts, for every imatrix
GGML_ABORTS = {(t, "huge") for t in ("IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S")}
REAL_ROWS = 8
MODULES = {"IQ2_XXS": "iq2", "IQ2_XS": "iq2", "IQ2_S": "iq2s", "IQ3_XXS": "iq3", "IQ3_S": "iq3",
           "IQ1_S": "iq1", "IQ1_M": "iq1"}


def _cases() -> list[tuple[str, str, str | None]]:
    out = []
    for t in TYPES:
        for fam in sorted(SYNTH):
            for im in IMATRIX:
                if im is None and get_type(t).requires_imatrix:
                    continue
                out.append((t, fam, im))
    return out


def _check(oracle, x: np.ndarray, qtype: str, imatrix_name: str | None, label: str) -> None:
    w = imatrices(x.shape[1])[imatrix_name] if imatrix_name else None
    ref = oracle.quantize(x, qtype, imatrix=w)
    got = mlxquant.quantize(mx.array(x), qtype, imatrix=w, backend="mlx")
    assert isinstance(got, mx.array) and got.dtype == mx.uint8
    got = np.array(got)
    if not np.array_equal(got, ref):
        t = get_type(qtype)
        a, b = got.reshape(-1, t.type_size), ref.reshape(-1, t.type_size)
        bad = np.flatnonzero((a != b).any(axis=1))
        pytest.fail(f"{qtype} {label} imatrix={imatrix_name}: MLX differs from ggml in "
                    f"{bad.size}/{a.shape[0]} blocks (first {bad[0]}: {a[bad[0]][:16]} vs {b[bad[0]][:16]})")
    deq = mlxquant.dequantize(mx.array(ref), qtype, x.shape, backend="mlx")
    assert isinstance(deq, mx.array) and deq.dtype == mx.float32
    deq_ref = oracle.dequantize(ref, qtype, x.shape)
    assert np.array_equal(np.array(deq).view(np.uint32), deq_ref.view(np.uint32)), \
        f"{qtype} {label}: dequantize"


@pytest.mark.parametrize("qtype, family, imatrix_name", _cases())
def test_mlx_iq_synthetic_bytes(oracle, qtype, family, imatrix_name):
    x = SYNTH[family]
    if (qtype, family) in GGML_ABORTS:
        w = imatrices(x.shape[1])[imatrix_name] if imatrix_name else None
        with pytest.raises(QuantInputError, match=f"{qtype}: .*ggml"):
            mlxquant.quantize(x, qtype, imatrix=w, backend="numpy")
        with pytest.raises(QuantInputError, match=f"{qtype}: .*ggml"):
            mlxquant.quantize(mx.array(x), qtype, imatrix=w, backend="mlx")
        return
    _check(oracle, x, qtype, imatrix_name, family)


@pytest.mark.parametrize("imatrix_name", IMATRIX)
@pytest.mark.parametrize("qtype", TYPES)
def test_mlx_iq_real_tensors(oracle, real, qtype, imatrix_name):
    if imatrix_name is None and get_type(qtype).requires_imatrix:
        with pytest.raises(QuantInputError, match="imatrix"):
            mlxquant.quantize(mx.array(next(iter(real.values()))), qtype, backend="mlx")
        return
    for name, x in real.items():
        _check(oracle, np.ascontiguousarray(x[:REAL_ROWS]), qtype, imatrix_name, name)


@pytest.mark.parametrize("qtype", TYPES)
def test_mlx_iq_chunks_give_the_same_bytes(oracle, qtype, monkeypatch):
    """Chunks of one or a few rows (the codecs evaluate chunk by chunk, with host syncs inside):
    the bytes do not depend on the split."""
    mod = importlib.import_module("mlxquant.quant.mlx." + MODULES[qtype])
    rng = np.random.default_rng(7)
    x = (rng.standard_t(3, size=(12, 512)) * 0.05).astype(np.float32)
    x[5] = 0.0
    x[7, 256:288] = 0.0
    ws = [imatrices(512)["lognormal"]] + ([] if get_type(qtype).requires_imatrix else [None])
    for w in ws:
        ref = oracle.quantize(x, qtype, imatrix=w)
        for chunk in (512, 512 * 5):                            # 2 or 10 blocks per chunk
            monkeypatch.setattr(mod, "CHUNK_WEIGHTS", chunk)
            got = np.array(mlxquant.quantize(mx.array(x), qtype, imatrix=w, backend="mlx"))
            assert np.array_equal(got, ref), (qtype, chunk, w is None)


def _any_blocks(qtype: str) -> np.ndarray:
    """Random blocks (every sign, scale and row pattern) with +-inf, NaN and 0 super-block scales."""
    t = get_type(qtype)
    b = np.random.default_rng(1).integers(0, 256, (96, t.type_size), dtype=np.uint8)
    if qtype == "IQ1_M":                                        # d's nibbles: bits 12..15 of sc[j]
        d = np.random.default_rng(2).integers(0, 1 << 16, 96).astype(np.uint16)
        d[:64] &= 0xBBFF                                        # finite
        d[64:80] |= 0x7C00                                      # exponent 31: +-inf or NaN
        d[72:80] |= 0x8000
        d[64:68] &= 0xFC00                                      # mantissa 0: +inf
        d[72:76] &= 0xFC00                                      # -inf
        d[80:88] = 0
        sc = b[:, 48:56].view("<u2")
        sc &= 0x0FFF
        sc |= ((d[:, None] >> (4 * np.arange(4, dtype=np.uint16))) & 0xF) << 12
        return b
    b[:64, 1] &= 0x3B                                           # finite d
    b[64:72, 1] = 0x7C                                          # +inf or NaN
    b[72:80, 1] = 0xFC                                          # -inf or NaN
    b[64:68, 0] = 0
    b[72:76, 0] = 0
    b[80:88, 0:2] = 0                                           # d = 0
    return b


@pytest.mark.parametrize("qtype", TYPES)
def test_mlx_iq_dequantize_any_bytes_like_ggml(oracle, qtype):
    b = _any_blocks(qtype)
    shape = (2, 48 * 256)
    ref = oracle.dequantize(b, qtype, shape)
    assert np.isnan(ref).any() and np.isinf(ref).any()
    ours = mlxquant.dequantize(mx.array(b), qtype, shape, backend="mlx")
    assert np.array_equal(np.array(ours).view(np.uint32), ref.view(np.uint32))


def test_mlx_iq_types_registered():
    for qtype in TYPES:
        assert "mlx" in mlxquant.codecs_for(qtype), qtype


def _scaled(scale: float) -> np.ndarray:
    return (np.random.default_rng(12).standard_normal((4, 512)) * scale).astype(np.float32)


@pytest.mark.parametrize("qtype, fine, aborts", [("IQ3_XXS", 1e12, 3e12), ("IQ3_S", 5e12, 1e13)])
def test_mlx_iq3_raises_where_ggml_aborts(oracle, qtype, fine, aborts):
    """The overflow threshold of test_codecs_iq3.py (where a subprocess shows ggml aborting):
    ggml's bytes just below it, GridSearchAbort at it, as the NumPy reference."""
    x = _scaled(fine)
    got = mlxquant.quantize(mx.array(x), qtype, backend="mlx")
    assert np.array_equal(np.array(got), oracle.quantize(x, qtype))
    for backend in ("numpy", "mlx"):
        with pytest.raises(QuantInputError, match=f"{qtype}: ggml aborts"):
            mlxquant.quantize(mx.array(_scaled(aborts)) if backend == "mlx" else _scaled(aborts),
                              qtype, backend=backend)


def _special_inputs() -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """ggml's rare paths (see test_codecs_iq3.py): an all-zero IQ3_S sub-block (the following
    sub-blocks move down one slot), a fit that comes out negative (signs flipped), weights that
    matter only where x is 0 (every fit 0: d = 0 with rows and signs kept)."""
    rng = np.random.default_rng(5)
    hole = rng.standard_normal((1, 256)).astype(np.float32)
    hole[0, 32:64] = 0
    flip = np.full((1, 256), 100, np.float32)
    w_flip = np.full(256, 1e-6, np.float32)
    flip[0, 0], w_flip[0] = -1e-4, 7e5
    rng = np.random.default_rng(3)
    zfit = rng.standard_normal((3, 512)).astype(np.float32)
    even = np.arange(512) % 2 == 0
    zfit[:, ~even] = 0
    zfit[1, 256:] = rng.standard_normal(256)
    w_zfit = np.where(even, 0, 1).astype(np.float32)
    return {"hole": (hole, None), "hole_w": (hole, np.ones(256, np.float32)),
            "negative_fit": (flip, w_flip), "zero_fit": (zfit, w_zfit)}


@pytest.mark.parametrize("case", sorted(_special_inputs()))
@pytest.mark.parametrize("qtype", TYPES)
def test_mlx_iq_rare_paths_match_ggml(oracle, qtype, case):
    x, w = _special_inputs()[case]
    if w is None and get_type(qtype).requires_imatrix:
        w = np.ones(x.shape[1], np.float32)
    ref = oracle.quantize(x, qtype, imatrix=w)
    got = mlxquant.quantize(mx.array(x), qtype, imatrix=w, backend="mlx")
    assert np.array_equal(np.array(got), ref)
