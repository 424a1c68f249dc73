"""The 1-3 bit i-quants through the rest of the pipeline (issue 14): GGUF -> MLX requantizes them
to the nearest MLX mode and reports the error per tensor, mlx-lm runs the result, and ``inspect``
lists them (Python and the type registry agree on sizes)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from mlxquant.cli import main
from mlxquant.convert import convert
from mlxquant.quant.types import get_type

IQ = ("IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S")


@pytest.fixture(scope="module")
def low_bit(shakespeare, calib_file, tmp_path_factory):
    from mlxquant.calib import imatrix

    d = tmp_path_factory.mktemp("iq")
    f32 = d / "f32.gguf"
    convert(shakespeare, f32, outtype="F32")
    im = imatrix(f32, calib_file, d / "im.gguf", ctx=128, chunks=4).out
    out = {}
    for preset in ("IQ1_M", "IQ2_XXS", "IQ3_M"):
        out[preset] = d / f"{preset}.gguf"
        convert(f32, out[preset], outtype=preset, imatrix=im)
    return d, f32, out


def test_gguf_to_mlx_requantizes_and_reports(low_bit, tmp_path):
    import mlx.core as mx
    from mlx_lm.utils import load_model as mlx_load

    d, f32, files = low_bit
    seen = set()
    for preset, path in files.items():
        r = convert(path, tmp_path / preset, to="mlx")
        for t in r.details:
            if t["source_type"] in IQ:
                seen.add(t["source_type"])
                assert t["status"] == "requantized" and t["max_abs_error"] > 0, t
                bits = int(t["type"].split("/")[0].removeprefix("affine"))
                assert bits >= int(get_type(t["source_type"]).bits_per_weight), t  # never fewer bits
        model, _ = mlx_load(tmp_path / preset)
        logits = model(mx.array(np.arange(1, 33, dtype=np.int32))[None])
        assert np.isfinite(np.array(logits.astype(mx.float32))).all()
    assert seen >= {"IQ1_M", "IQ2_XXS", "IQ3_S"}


def test_inspect_lists_the_i_quants(low_bit):
    d, f32, files = low_bit
    r = CliRunner().invoke(main, ["inspect", str(files["IQ2_XXS"]), "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    types = {t["type"] for t in info["tensors"]}
    assert "IQ2_XXS" in types
    for t in info["tensors"]:
        qt = get_type(t["type"])
        assert t["bytes"] == int(np.prod(t["shape"][:-1])) * qt.row_bytes(t["shape"][-1]), t
