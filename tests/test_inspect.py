"""``mlxquant inspect`` and ``mlxquant types``: the library summary (GGUF, HF and MLX folders) and
the CLI around it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from mlxquant.cli import main
from mlxquant.errors import FormatError
from mlxquant.formats.gguf_write import Metadata, TensorSpec, write_gguf
from mlxquant.formats.inspect import inspect
from mlxquant.testing.inputs import shakespeare_model_dir, smollm2_gguf_path
from conftest import need

KEYS = {"format", "architecture", "parameters", "tensors", "bits_per_weight", "bytes", "metadata"}


def test_inspect_smollm2_gguf():
    p = smollm2_gguf_path()
    need(p is not None, "SmolLM2 GGUF (bash scripts/test.sh fetches it)")
    s = inspect(p)
    assert KEYS <= set(s)
    assert s["format"] == "gguf" and s["architecture"] == "llama"
    assert s["parameters"] == 134_515_008 and len(s["tensors"]) == 272
    assert s["types"] == {"F32": 61, "Q4_1": 210, "Q8_0": 1}
    assert s["bytes"] == p.stat().st_size
    assert 5.5 < s["bits_per_weight"] < 6.0
    assert s["tensors"][0] == {"name": "token_embd.weight", "type": "Q8_0", "shape": [49152, 576],
                               "bytes": 30_081_024}
    assert s["metadata"]["general.file_type"] == "3 (Q4_1)"
    assert s["metadata"]["tokenizer.ggml.tokens"] == "<array of 49152>"


def test_inspect_hf_folder():
    d = shakespeare_model_dir()
    need(d is not None, "tiny-shakespeare-llama model")
    s = inspect(d)
    assert s["format"] == "hf" and s["architecture"] == "llama"
    assert s["parameters"] == sum(int(np.prod(t["shape"])) for t in s["tensors"])
    assert s["bits_per_weight"] == 32.0 and s["types"] == {"F32": len(s["tensors"])}
    assert s["metadata"]["tokenizer"] == ["tokenizer.json"]


def test_cli_inspect_json_and_text(tmp_path):
    md = Metadata()
    md.set("general.architecture", "llama")
    md.set("general.name", "tiny")
    out = write_gguf(tmp_path / "t.gguf", md, [TensorSpec("w", "F16", (4, 32))],
                     iter([np.ones((4, 32), np.float16)]))
    r = CliRunner().invoke(main, ["inspect", str(out), "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.output)
    assert KEYS <= set(s)
    assert s["tensors"] == [{"name": "w", "type": "F16", "shape": [4, 32], "bytes": 256}]
    assert s["parameters"] == 128 and s["bits_per_weight"] == 16.0
    r = CliRunner().invoke(main, ["inspect", str(out)])
    assert r.exit_code == 0 and "architecture:  llama" in r.output and "F16 x1" in r.output


@pytest.mark.parametrize("content,match", [
    (b"", "not a GGUF file"),
    (b"GGUF\3\0\0", "too short"),
    (b"not a model at all, just text" * 4, "not a GGUF file"),
    (b"GGUF" + (3).to_bytes(4, "little") + (1).to_bytes(8, "little") + (0).to_bytes(8, "little")
     + b"\0" * 30, "truncated: data section starts at 64"),
])
def test_cli_inspect_bad_files_one_line_exit_1(tmp_path, content, match):
    p = tmp_path / "bad.gguf"
    p.write_bytes(content)
    r = CliRunner().invoke(main, ["inspect", str(p)])
    assert r.exit_code == 1
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mlxquant: error: ") and match in lines[0]
    with pytest.raises((FormatError, FileNotFoundError)):
        inspect(p)


def test_cli_inspect_missing_path(tmp_path):
    r = CliRunner().invoke(main, ["inspect", str(tmp_path / "nope.gguf")])
    assert r.exit_code == 1 and r.output.strip() == f"mlxquant: error: {tmp_path / 'nope.gguf'}: no such file or folder"


def test_cli_types():
    r = CliRunner().invoke(main, ["types", "--json"])
    assert r.exit_code == 0
    rows = {row["name"]: row for row in json.loads(r.output)["types"]}
    assert rows["Q4_K"] == {**rows["Q4_K"], "id": 12, "block": 256, "bytes": 144, "bpw": 4.5}
    assert rows["IQ2_XXS"]["imatrix"] == "required"
    assert "numpy" in rows["Q8_0"]["codecs"]
    r = CliRunner().invoke(main, ["types"])
    assert r.exit_code == 0 and r.output.splitlines()[0].split()[:5] == ["name", "id", "block", "bytes", "bpw"]


# ---- MLX folders (issue 11: "unsupported dtype U32") -----------------------------------------

@pytest.fixture(scope="module")
def mlx_mixed(tmp_path_factory):
    """The float base model converted by mlxquant to MLX with mlx-lm's mixed_3_6 recipe, one
    module marked ``false`` (left unquantized) as mlx-lm writes it."""
    from mlxquant.convert import convert

    d = shakespeare_model_dir()
    need(d is not None, "tiny-shakespeare-llama model")
    out = tmp_path_factory.mktemp("mlx") / "shk-mixed"
    convert(d, out, to="mlx", quant_predicate="mixed_3_6")
    return out


def test_inspect_mlx_folder(mlx_mixed):
    cfg = json.loads((mlx_mixed / "config.json").read_text())
    s = inspect(mlx_mixed)
    assert KEYS <= set(s) and s["format"] == "mlx" and s["architecture"] == "llama"
    hf = inspect(shakespeare_model_dir())
    # logical weights, not packed uint32 words: the same count as the float model's
    assert s["parameters"] == hf["parameters"] == sum(int(np.prod(t["shape"])) for t in s["tensors"])
    names = [t["name"] for t in s["tensors"]]
    assert names == sorted(names) and not any(n.endswith((".scales", ".biases")) for n in names)
    assert sorted(names) == sorted(t["name"] for t in hf["tensors"])
    q = s["quantization"]
    assert (q["bits"], q["group_size"], q["mode"]) == (3, 64, "affine")
    overrides = {k: v for k, v in cfg["quantization"].items() if isinstance(v, dict)}
    assert q["overrides"] == overrides and len(overrides) >= 2
    by_name = {t["name"]: t for t in s["tensors"]}
    for mod, o in overrides.items():
        assert by_name[f"{mod}.weight"]["type"] == f"MLX_Q{o['bits']}_G{o['group_size']}"
    assert s["types"]["MLX_Q6_G64"] == len(overrides) and s["types"]["MLX_Q3_G64"] > 10
    assert q["modules"] == {k: v for k, v in s["types"].items() if k.startswith("MLX_")}
    q_proj = by_name["model.layers.0.self_attn.q_proj.weight"]
    assert q_proj["shape"] == [256, 256] and q_proj["type"] == "MLX_Q3_G64"
    # codes (3 bits) + float32 scales and biases (one each per 64 weights)
    assert q_proj["bytes"] == 256 * 256 * 3 // 8 + 2 * 256 * 4 * 4
    assert by_name["model.norm.weight"]["type"] == "F32"
    assert s["tensor_bytes"] == sum(t["bytes"] for t in s["tensors"])
    assert s["bytes"] == sum(f.stat().st_size for f in mlx_mixed.glob("*.safetensors"))
    assert s["bits_per_weight"] == 8 * s["tensor_bytes"] / s["parameters"]
    assert 3.0 < s["bits_per_weight"] < 5.0


def test_inspect_mlx_false_entries_and_cli(mlx_mixed, tmp_path):
    import shutil

    d = tmp_path / "m"
    shutil.copytree(mlx_mixed, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["quantization"]["model.layers.9.mlp.up_proj"] = False  # a module mlx-lm left unquantized
    cfg["quantization_config"] = cfg["quantization"]
    (d / "config.json").write_text(json.dumps(cfg))
    s = inspect(d)
    assert s["quantization"]["unquantized"] == ["model.layers.9.mlp.up_proj"]
    r = CliRunner().invoke(main, ["inspect", str(d)])
    assert r.exit_code == 0, r.output
    assert "format:        mlx" in r.output and "MLX_Q6_G64 x4" in r.output
    assert "quantization:  3 bits, group size 64, affine" in r.output
    assert "override model.layers.2.mlp.down_proj: group_size 64, bits 6" in r.output
    assert "unquantized (false): model.layers.9.mlp.up_proj" in r.output
    r = CliRunner().invoke(main, ["inspect", str(d), "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["quantization"] == s["quantization"]


def test_cli_types_lists_presets():
    r = CliRunner().invoke(main, ["types", "--json"])
    assert r.exit_code == 0
    presets = {p["name"]: p for p in json.loads(r.output)["presets"]}
    assert presets["Q4_K_M"] == {"name": "Q4_K_M", "ftype": 15, "default_type": "Q4_K",
                                 "imatrix": "-", "makeable": True, "reason": None}
    assert presets["Q2_K_S"]["imatrix"] == presets["IQ2_XXS"]["imatrix"] == "required"
    assert presets["IQ3_M"]["ftype"] == 27 and presets["IQ3_M"]["default_type"] == "IQ3_S"
    assert presets["IQ3_M"]["makeable"] and presets["IQ3_XXS"]["makeable"] and presets["Q2_K_S"]["makeable"]
    assert not presets["Q1_0"]["makeable"] and "Q1_0" in presets["Q1_0"]["reason"]
    r = CliRunner().invoke(main, ["types"])
    lines = r.output.splitlines()
    head = lines.index(next(l for l in lines if l.startswith("preset")))
    assert lines[head].split() == ["preset", "ftype", "default", "imatrix", "makeable"]
    rows = {l.split()[0]: l for l in lines[head + 1:]}
    assert rows["Q4_K_M"].split() == ["Q4_K_M", "15", "Q4_K", "-", "yes"]
    assert rows["Q2_K_S"].split() == ["Q2_K_S", "21", "Q2_K", "required", "yes"]
    assert rows["IQ3_M"].split()[:5] == ["IQ3_M", "27", "IQ3_S", "-", "yes"]
    assert rows["Q1_0"].split()[4] == "no:"
