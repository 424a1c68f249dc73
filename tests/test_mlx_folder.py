"""MLX folders on the tiny-shakespeare float model: HF -> MLX equals mlx-lm's own conversion,
mixed recipes, MLX -> GGUF -> llama.cpp, and bad input (one-line errors, nothing half-written)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from mlxquant.cli import main
from mlxquant.convert import convert
from mlxquant.errors import FormatError, QuantInputError
from mlxquant.formats.mlx_folder import MLXModel
from mlxquant.testing.inputs import shakespeare_model_dir
from conftest import need

mx = pytest.importorskip("mlx.core")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    d = shakespeare_model_dir()
    need(d is not None, "tests/data/tiny-shakespeare-llama")
    root = tmp_path_factory.mktemp("mlx_folder")
    convert(d, root / "q4", to="mlx", q_bits=4, q_group_size=64, dtype="float16")
    return d, root


def test_hf_to_mlx_equals_mlx_lm_convert(base):
    from mlx_lm.convert import convert as mlx_lm_convert

    d, root = base
    mlx_lm_convert(str(d), str(root / "ref"), quantize=True, q_bits=4, q_group_size=64, dtype="float16")
    ref = mx.load(str(root / "ref" / "model.safetensors"))
    ours = MLXModel(root / "q4")
    assert sorted(ref) == sorted(ours.tensor_names)
    for name, arr in ref.items():
        assert np.array_equal(np.array(arr.astype(mx.float32) if arr.dtype != mx.uint32 else arr),
                              ours.tensor(name)), name
    ref_q = json.loads((root / "ref" / "config.json").read_text())["quantization"]
    our_q = json.loads((root / "q4" / "config.json").read_text())["quantization"]
    assert {k: ref_q[k] for k in ("bits", "group_size")} == {k: our_q[k] for k in ("bits", "group_size")}


def test_mixed_recipe_follows_mlx_lm_rule(base, tmp_path):
    d, _ = base
    convert(d, tmp_path / "mixed", to="mlx", quant_predicate="mixed_3_6")
    m = MLXModel(tmp_path / "mixed")
    n = json.loads((d / "config.json").read_text())["num_hidden_layers"]
    for mod, p in m.quantized_modules.items():
        i = int(mod.split(".")[2]) if mod.startswith("model.layers.") else 0
        more = i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2
        high = ("v_proj" in mod or "down_proj" in mod) and more or "lm_head" in mod
        assert p["bits"] == (6 if high else 3), mod


def test_mlx_to_gguf_opens_in_llama_cpp(base, tmp_path):
    llama_cpp = pytest.importorskip("llama_cpp")
    _, root = base
    r = convert(root / "q4", tmp_path / "q4.gguf", to="gguf")
    assert {d["status"] for d in r.details if d["type"] == "Q4_1"} == {"exact"}
    from mlxquant.formats.gguf_read import GGUFModel
    from mlxquant.convert.provenance import from_gguf_metadata

    with GGUFModel(tmp_path / "q4.gguf") as g:
        prov = from_gguf_metadata(g.metadata)
    assert prov is not None and prov["mlxquant_version"] and len(prov["source"]["files"][0]["sha256"]) == 64
    # float32 scales do not fit Q4_1's float16 ones: requantized (K-quant, rows of 256), and said so
    d, _ = base
    convert(d, tmp_path / "q4f32", to="mlx", q_bits=4, q_group_size=64)
    r32 = convert(tmp_path / "q4f32", tmp_path / "q4f32.gguf", to="gguf")
    req = [x for x in r32.details if x["status"] == "requantized"]
    assert req and all(x["type"] == "Q4_K" and "float16" in x["note"] and x["max_abs_error"] > 0 for x in req)
    llm = llama_cpp.Llama(model_path=str(tmp_path / "q4.gguf"), n_ctx=64, verbose=False)
    out = llm("ROMEO:", max_tokens=8, temperature=0)["choices"][0]["text"]
    assert isinstance(out, str) and out.strip()


def test_cli_report_and_json(base, tmp_path):
    _, root = base
    res = CliRunner().invoke(main, ["convert", str(root / "q4"), "-o", str(tmp_path / "o.gguf"), "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["details"] and all("status" in d for d in rep["details"])
    res = CliRunner().invoke(main, ["-v", "convert", str(tmp_path / "o.gguf"), "-o", str(tmp_path / "m"),
                                    "--to", "mlx", "--exact-scales"])
    assert res.exit_code == 0, res.output
    assert "exact" in res.stdout and "summary:" in res.stdout


def _broken(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_missing_shard(base, tmp_path):
    _, root = base
    bad = _broken(root / "q4", tmp_path / "bad")
    (bad / "model.safetensors").unlink()
    with pytest.raises(FormatError, match="missing safetensors shard"):
        convert(bad, tmp_path / "out.gguf", to="gguf")
    assert not any(p.name.startswith(("out", ".out")) for p in tmp_path.iterdir())
    res = CliRunner().invoke(main, ["convert", str(bad), "-o", str(tmp_path / "o2"), "--to", "mlx"])
    assert res.exit_code == 1 and len(res.stderr.strip().splitlines()) == 1
    assert "model.safetensors" in res.stderr


def test_config_disagrees_with_tensors(base, tmp_path):
    _, root = base
    bad = _broken(root / "q4", tmp_path / "bad")
    cfg = json.loads((bad / "config.json").read_text())
    cfg["quantization"]["bits"] = 8
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(FormatError, match="disagrees with its tensors"):
        convert(bad, tmp_path / "out.gguf", to="gguf")
    assert not (tmp_path / "out.gguf").exists()


def test_unsupported_mode_for_shape(base, tmp_path):
    d, _ = base
    with pytest.raises(QuantInputError, match="bits"):
        convert(d, tmp_path / "a", to="mlx", q_bits=7)
    with pytest.raises(QuantInputError, match="nvfp4 is 4 bits in groups of 16"):
        convert(d, tmp_path / "b", to="mlx", q_mode="nvfp4", q_group_size=32)
    assert list(tmp_path.iterdir()) == []
