"""Golden files: the codecs reproduce llama.cpp's bytes even without the oracle, and the committed
files still match the oracle."""

from __future__ import annotations

import numpy as np
import pytest

import mlxquant
from mlxquant.errors import QuantInputError
from mlxquant.testing import golden


@pytest.mark.parametrize("qtype", golden.GOLDEN_TYPES)
def test_codecs_reproduce_golden_bytes(qtype):
    g = golden.load(qtype)
    x, w = golden.golden_input()
    if golden.needs_imatrix(qtype):
        # ggml cannot make these without an imatrix: no "q", and "deq" decodes "qw"
        assert set(g) == {"qw", "deq"}
        with pytest.raises(QuantInputError, match="imatrix"):
            mlxquant.quantize(x, qtype, backend="numpy")
    else:
        assert set(g) == {"q", "qw", "deq"}
        assert np.array_equal(mlxquant.quantize(x, qtype, backend="numpy"), g["q"])
    assert np.array_equal(mlxquant.quantize(x, qtype, imatrix=w, backend="numpy"), g["qw"])
    deq = mlxquant.dequantize(g.get("q", g["qw"]), qtype, x.shape, backend="numpy")
    assert np.array_equal(deq.view(np.uint32), g["deq"].view(np.uint32))


def test_golden_files_match_oracle(oracle):
    assert golden.stale() == []
