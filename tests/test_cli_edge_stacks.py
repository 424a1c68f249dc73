"""The convert command's flags for the other edge stacks: ``--to onnx [--block-size]`` and
``--ollama`` (the modules themselves are tested in test_onnx_export.py and test_modelfile.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from click.testing import CliRunner

from mlxquant.cli import main
from mlxquant.formats.modelfile import parse_modelfile


def test_convert_to_onnx_with_a_block_size(shakespeare, tmp_path):
    r = CliRunner().invoke(main, ["convert", str(shakespeare), "-o", str(tmp_path / "o"), "--to", "onnx",
                                  "--outtype", "int4", "--block-size", "64"])
    assert r.exit_code == 0, r.output
    assert "int4/g64+zp" in r.output and (tmp_path / "o" / "model.onnx").is_file()
    assert (tmp_path / "o" / "genai_config.json").is_file()
    r = CliRunner().invoke(main, ["convert", str(shakespeare), "-o", str(tmp_path / "p"), "--to", "gguf",
                                  "--block-size", "32"])
    assert r.exit_code == 1 and "--block-size" in r.output and not (tmp_path / "p").exists()


def test_convert_ollama_writes_a_modelfile_and_never_over_a_users(shakespeare, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(shakespeare, src)
    (src / "generation_config.json").write_text(json.dumps({"temperature": 0.7, "top_p": 0.9}))
    out = tmp_path / "out"
    out.mkdir()
    r = CliRunner().invoke(main, ["convert", str(src), "-o", str(out / "m.gguf"), "--outtype", "Q8_0",
                                  "--ollama", "--json"])
    assert r.exit_code == 0, r.output
    mf = Path(json.loads(r.stdout)["modelfile"])
    parsed = parse_modelfile(mf.read_text())
    assert [c.args for c in parsed if c.name == "from"] == ["./m.gguf"]
    params = {c.name: c.args for c in parsed}
    assert float(params["temperature"]) == 0.7 and float(params["top_p"]) == 0.9
    # a user's own Modelfile: refused before anything is converted
    user = tmp_path / "user"
    user.mkdir()
    (user / "Modelfile").write_text("FROM ./mine.gguf\n")
    r = CliRunner().invoke(main, ["convert", str(src), "-o", str(user / "m.gguf"), "--outtype", "Q8_0",
                                  "--ollama", "--force"])
    assert r.exit_code == 1 and "Modelfile" in r.output
    assert (user / "Modelfile").read_text() == "FROM ./mine.gguf\n" and not (user / "m.gguf").exists()
    r = CliRunner().invoke(main, ["convert", str(src), "-o", str(tmp_path / "x"), "--to", "hf", "--ollama"])
    assert r.exit_code == 1 and "--ollama" in r.output
