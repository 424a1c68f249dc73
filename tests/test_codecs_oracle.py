"""Every codec against llama.cpp's own quantizer and dequantizer: bytes must be identical."""

from __future__ import annotations

import numpy as np
import pytest

import mlxquant
from mlxquant.quant.types import get_type
from mlxquant.testing.inputs import imatrices, synthetic_families


# The types issue #2 promises, in llama.cpp's spelling.
REQUIRED = (
    "F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K Q4_K Q5_K Q6_K "
    "IQ4_NL IQ4_XS TQ1_0 TQ2_0 MXFP4"
).split()

IMATRIX = [None, "meansq", "lognormal"]
SYNTH = synthetic_families()


def _codec_or_fail(qtype: str) -> None:
    if "numpy" not in mlxquant.codecs_for(qtype):
        pytest.fail(f"{qtype}: no NumPy codec")


def _compare(oracle, x: np.ndarray, qtype: str, imatrix_name: str | None, label: str) -> None:
    _codec_or_fail(qtype)
    w = imatrices(x.shape[1])[imatrix_name] if imatrix_name else None
    ref = oracle.quantize(x, qtype, imatrix=w)
    ours = mlxquant.quantize(x, qtype, imatrix=w, backend="numpy")
    if not np.array_equal(ours, ref):
        t = get_type(qtype)
        a = ours.reshape(-1, t.type_size)
        b = ref.reshape(-1, t.type_size)
        bad = np.flatnonzero((a != b).any(axis=1))
        pytest.fail(
            f"{qtype} {label} imatrix={imatrix_name}: {bad.size}/{a.shape[0]} blocks differ "
            f"(first block {bad[0]}: ours {a[bad[0]][:16]} ref {b[bad[0]][:16]})"
        )
    # dequantize the reference bytes with both
    deq_ref = oracle.dequantize(ref, qtype, x.shape) if oracle.traits(qtype)["has_to_float"] else x
    deq = mlxquant.dequantize(ref, qtype, x.shape, backend="numpy")
    assert deq.dtype == np.float32 and deq.shape == x.shape
    assert np.array_equal(deq.view(np.uint32), deq_ref.view(np.uint32)), f"{qtype} {label}: dequantize differs"


@pytest.mark.parametrize("imatrix_name", IMATRIX)
@pytest.mark.parametrize("family", sorted(SYNTH))
@pytest.mark.parametrize("qtype", REQUIRED)
def test_synthetic_bytes_match_ggml(oracle, qtype, family, imatrix_name):
    _compare(oracle, SYNTH[family], qtype, imatrix_name, family)


@pytest.mark.parametrize("imatrix_name", IMATRIX)
@pytest.mark.parametrize("qtype", REQUIRED)
def test_real_tensors_match_ggml(oracle, real, qtype, imatrix_name):
    for name, x in real.items():
        _compare(oracle, x, qtype, imatrix_name, name)


def test_registry_matches_ggml(oracle):
    for t in mlxquant.TYPES.values():
        tr = oracle.traits(t.name)
        assert (tr["block_size"], tr["type_size"]) == (t.block_size, t.type_size), t.name
        assert oracle.requires_imatrix(t.name) == t.requires_imatrix, t.name
