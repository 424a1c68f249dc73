"""NVFP4 (ggml type 40, 64-weight blocks with four UE4M3 scales) against llama.cpp's own codec.

Not in the issue #2 set, so it lives apart from tests/test_codecs_oracle.py; the comparison is
the same: quantized bytes identical, dequantized float32 bits identical.
"""

from __future__ import annotations

import numpy as np
import pytest

import mlxquant
from mlxquant.testing.inputs import imatrices, real_families, synthetic_families

from conftest import need

QTYPE = "NVFP4"
SYNTH = synthetic_families()


def _extra_families() -> dict[str, np.ndarray]:
    """Inputs that reach the UE4M3 corners: saturated scales, subnormal scales, huge values."""
    rng = np.random.default_rng(40)
    return {
        "saturated": (rng.standard_normal((8, 512)) * 1e4).astype(np.float32),
        "huge": (rng.uniform(-1, 1, (8, 512)) * 1e38).astype(np.float32),
        "subnormal_scale": (rng.standard_normal((8, 512)) * 1e-2).astype(np.float32),
        "below_scale": (rng.standard_normal((8, 512)) * 1e-4).astype(np.float32),
        "denormal": (rng.standard_normal((8, 512)) * 1e-40).astype(np.float32),
        "fp4_grid": (rng.integers(-24, 25, (8, 512)) / 4.0).astype(np.float32),
    }


def _compare(oracle, x: np.ndarray, imatrix: np.ndarray | None, label: str) -> None:
    t = mlxquant.get_type(QTYPE)
    ref = oracle.quantize(x, QTYPE, imatrix=imatrix)
    ours = mlxquant.quantize(x, QTYPE, imatrix=imatrix, backend="numpy")
    a = ours.reshape(-1, t.type_size)
    b = ref.reshape(-1, t.type_size)
    bad = np.flatnonzero((a != b).any(axis=1))
    assert bad.size == 0, f"{label}: {bad.size}/{a.shape[0]} blocks differ (first {bad[:1]})"
    deq_ref = oracle.dequantize(ref, QTYPE, x.shape)
    deq = mlxquant.dequantize(ref, QTYPE, x.shape, backend="numpy")
    same = np.array_equal(deq.view(np.uint32), deq_ref.view(np.uint32))
    assert same, f"{label}: dequantize differs"


@pytest.mark.parametrize("imatrix_name", [None, "meansq"])
@pytest.mark.parametrize("family", sorted(SYNTH) + sorted(_extra_families()))
def test_nvfp4_synthetic_bytes_match_ggml(oracle, family, imatrix_name):
    x = SYNTH.get(family)
    if x is None:
        x = _extra_families()[family]
    w = imatrices(x.shape[1])[imatrix_name] if imatrix_name else None
    _compare(oracle, x, w, family)


def test_nvfp4_real_tensors_match_ggml(oracle):
    fam = real_families()
    need(bool(fam), "real weights (SmolLM2 GGUF or tiny-shakespeare-llama)")
    for name, x in fam.items():
        _compare(oracle, x, None, name)


def test_nvfp4_decodes_every_scale_byte(oracle):
    """All 256 scale bytes (incl. 0x7F and the sign bit ggml ignores) and all 16 codes."""
    t = mlxquant.get_type(QTYPE)
    rng = np.random.default_rng(41)
    blocks = rng.integers(0, 256, (256, t.type_size), dtype=np.uint8)
    blocks[:, 0] = np.arange(256)
    data = blocks.reshape(16, -1)
    shape = (16, data.shape[1] // t.type_size * t.block_size)
    ref = oracle.dequantize(data, QTYPE, shape)
    ours = mlxquant.dequantize(data, QTYPE, shape, backend="numpy")
    assert np.array_equal(ours.view(np.uint32), ref.view(np.uint32))
