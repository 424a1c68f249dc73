"""Issue 11: ``mlxquant inspect --json`` describes an MLX folder written by mlxquant as
swift-bridge's ``mlxquant-inspect --json`` does (``MLXModelFolder``): format, architecture, logical
parameter count, every logical tensor (name, ``MLX_Q{bits}_G{group}`` or dtype, unpacked shape,
bytes with scales and biases, sorted by name) and bits per weight."""

from __future__ import annotations

import pytest

from mlxquant.testing.inputs import shakespeare_model_dir
from conftest import need
from test_swift_inspect_parity import _assert_same, _both, inspect_bin  # noqa: F401 (fixture)


@pytest.mark.parametrize("options", [{}, {"quant_predicate": "mixed_3_6"}, {"q_bits": 8, "q_group_size": 32},
                                     {"q_mode": "mxfp4"}])
def test_mlx_folder(inspect_bin, tmp_path, options):  # noqa: F811
    from mlxquant.convert import convert

    d = shakespeare_model_dir()
    need(d is not None, "tiny-shakespeare-llama model")
    convert(d, tmp_path / "m", to="mlx", **options)
    swift, py = _both(inspect_bin, tmp_path / "m")
    assert py["format"] == "mlx"
    _assert_same(swift, py)
    assert any(t["type"].startswith("MLX_") for t in py["tensors"])
