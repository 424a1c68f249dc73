"""Bad input to ``mlxquant convert``: one-line errors, exit status 1, nothing at the output path."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mlxquant.cli import main
from mlxquant.convert import convert
from mlxquant.errors import (OutputExistsError, QuantTypeError, TokenizerError,
                             UnsupportedArchitectureError)
from mlxquant.formats.gguf_check import check_gguf
from mlxquant.formats.hf import HFTensorSpec, write_hf_folder
from mlxquant.testing.inputs import shakespeare_model_dir
from conftest import need


def tiny_hf(folder: Path, hidden: int = 64, model_type: str = "llama", tokenizer: bool = True) -> Path:
    """A random 1-layer llama-layout HF folder with the shakespeare tokenizer (vocab 4096)."""
    d = shakespeare_model_dir()
    need(d is not None, "tiny-shakespeare-llama model")
    cfg = {"architectures": ["LlamaForCausalLM"] if model_type == "llama" else ["GPTNeoXForCausalLM"],
           "model_type": model_type, "hidden_size": hidden, "intermediate_size": 2 * hidden,
           "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
           "vocab_size": 4096, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
           "max_position_embeddings": 256, "tie_word_embeddings": True, "bos_token_id": 0,
           "eos_token_id": 0}
    hd = hidden // 2
    shapes = {"model.embed_tokens.weight": (4096, hidden), "model.norm.weight": (hidden,),
              "model.layers.0.input_layernorm.weight": (hidden,),
              "model.layers.0.post_attention_layernorm.weight": (hidden,),
              "model.layers.0.self_attn.q_proj.weight": (hidden, hidden),
              "model.layers.0.self_attn.k_proj.weight": (hd, hidden),
              "model.layers.0.self_attn.v_proj.weight": (hd, hidden),
              "model.layers.0.self_attn.o_proj.weight": (hidden, hidden),
              "model.layers.0.mlp.gate_proj.weight": (2 * hidden, hidden),
              "model.layers.0.mlp.up_proj.weight": (2 * hidden, hidden),
              "model.layers.0.mlp.down_proj.weight": (hidden, 2 * hidden)}
    rng = np.random.default_rng(0)
    files = {}
    if tokenizer:
        files = {n: (d / n).read_text() for n in ("tokenizer.json", "tokenizer_config.json")}
    return write_hf_folder(folder, cfg, [HFTensorSpec(n, s) for n, s in shapes.items()],
                           lambda s: rng.standard_normal(s.shape).astype(np.float32) * 0.05,
                           files=files)


@pytest.fixture(scope="module")
def good_gguf(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad")
    hf = tiny_hf(root / "hf")
    return convert(hf, root / "good.gguf", outtype="Q8_0") and root / "good.gguf"


def run_cli(src: Path, out: Path, *extra: str) -> str:
    r = CliRunner().invoke(main, ["convert", str(src), "-o", str(out), *extra])
    assert r.exit_code == 1, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mlxquant: error: "), r.output
    return lines[0]


def assert_nothing_written(out: Path) -> None:
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def corrupt(good: Path, tmp_path: Path, edit) -> Path:
    data = bytearray(good.read_bytes())
    edit(data)
    p = tmp_path / "bad.gguf"
    p.write_bytes(bytes(data))
    return p


def test_truncated_gguf(good_gguf, tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(good_gguf.read_bytes()[: good_gguf.stat().st_size // 2])
    out = tmp_path / "out.gguf"
    line = run_cli(bad, out, "--outtype", "Q4_0")
    assert f"{bad}: truncated" in line and "extends past the end" in line
    assert_nothing_written(out)


def test_tensor_offset_past_the_end(good_gguf, tmp_path):
    h = check_gguf(good_gguf)
    last = h.tensors[-1]
    name = last.name.encode()
    # the offset field follows the name, n_dims, dims and type of the last tensor info
    def edit(data: bytearray) -> None:
        i = data.index(struct.pack("<Q", len(name)) + name)
        off = i + 8 + len(name) + 4 + 8 * len(last.shape) + 4
        data[off:off + 8] = struct.pack("<Q", 1 << 40)

    bad = corrupt(good_gguf, tmp_path, edit)
    out = tmp_path / "out"
    line = run_cli(bad, out, "--to", "hf", "--outtype", "F32")
    assert f"tensor {last.name!r}" in line and "past the end" in line
    assert_nothing_written(out)


@pytest.mark.parametrize("what", ["string", "array"])
def test_hostile_metadata_lengths(good_gguf, tmp_path, what):
    def edit(data: bytearray) -> None:
        if what == "string":  # general.architecture's value length
            key = b"general.architecture"
            i = data.index(struct.pack("<Q", len(key)) + key) + 8 + len(key) + 4
        else:  # tokenizer.ggml.tokens' array count
            key = b"tokenizer.ggml.tokens"
            i = data.index(struct.pack("<Q", len(key)) + key) + 8 + len(key) + 8
        data[i:i + 8] = struct.pack("<Q", 1 << 62)

    bad = corrupt(good_gguf, tmp_path, edit)
    out = tmp_path / "out.gguf"
    line = run_cli(bad, out)
    assert str(bad) in line and "exceeds the limit" in line
    assert_nothing_written(out)


def test_unknown_architecture(tmp_path, good_gguf):
    hf = tiny_hf(tmp_path / "neox", model_type="gpt_neox")
    out = tmp_path / "out.gguf"
    line = run_cli(hf, out, "--outtype", "F16")
    assert "unsupported architecture GPTNeoXForCausalLM" in line and "llama" in line and "qwen2" in line
    assert_nothing_written(out)

    def edit(data: bytearray) -> None:  # same length: "llama" -> "xxxxx"
        key = b"general.architecture"
        i = data.index(struct.pack("<Q", len(key)) + key) + 8 + len(key) + 4 + 8
        data[i:i + 5] = b"xxxxx"

    bad = corrupt(good_gguf, tmp_path, edit)
    with pytest.raises(UnsupportedArchitectureError, match="'xxxxx'.*supported: llama"):
        convert(bad, out, to="hf", outtype="F32")
    assert_nothing_written(out)


def test_missing_tokenizer(tmp_path):
    hf = tiny_hf(tmp_path / "notok", tokenizer=False)
    out = tmp_path / "out.gguf"
    line = run_cli(hf, out, "--outtype", "Q8_0")
    assert "no tokenizer (tokenizer.json or tokenizer.model)" in line
    assert_nothing_written(out)
    with pytest.raises(TokenizerError):
        convert(hf, out)


def test_shape_a_type_cannot_take(tmp_path):
    hf = tiny_hf(tmp_path / "h96", hidden=96)
    out = tmp_path / "out.gguf"
    line = run_cli(hf, out, "--outtype", "NVFP4")
    assert "no fallback type for NVFP4 with rows of 96" in line
    assert_nothing_written(out)
    with pytest.raises(QuantTypeError):
        convert(hf, out, outtype="NVFP4")
    line = run_cli(hf, out, "--outtype", "Q9_X")
    assert "Q9_X" in line


def test_existing_output_is_kept(good_gguf, tmp_path):
    out = tmp_path / "exists.gguf"
    out.write_bytes(b"precious")
    line = run_cli(good_gguf, out, "--outtype", "Q4_0")
    assert "already exists" in line and "--force" in line
    assert out.read_bytes() == b"precious"
    with pytest.raises(OutputExistsError):
        convert(good_gguf, out)
    line = run_cli(good_gguf, out, "--outtype", "Q4_0", "--force")  # force: mlxquant's outputs only
    assert "not a GGUF file mlxquant wrote" in line and out.read_bytes() == b"precious"
    shutil.copyfile(good_gguf, out)
    r = CliRunner().invoke(main, ["convert", str(good_gguf), "-o", str(out), "--outtype", "Q4_0",
                                  "--force", "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["types"]["Q4_0"] >= 7 and check_gguf(out).metadata["general.file_type"] == 2


def test_interrupted_conversion_leaves_nothing(good_gguf, tmp_path):
    out = tmp_path / "int"

    def progress(done, total, name):
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        convert(good_gguf, out, to="hf", outtype="F32", progress=progress)
    assert_nothing_written(out)


def test_bad_imatrix(good_gguf, tmp_path):
    im = tmp_path / "im.dat"
    im.write_bytes(b"\x05\x00\x00\x00junk")
    out = tmp_path / "out.gguf"
    line = run_cli(good_gguf, out, "--outtype", "Q4_K_M", "--imatrix", str(im))
    assert str(im) in line
    assert_nothing_written(out)


def test_cli_success_json_and_progress(good_gguf, tmp_path):
    out = tmp_path / "hf"
    r = CliRunner().invoke(main, ["convert", str(good_gguf), "-o", str(out), "--to", "hf",
                                  "--outtype", "BF16", "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["to"] == "hf" and report["outtype"] == "BF16" and report["tensors"] == 11
    assert "converting" in r.stderr
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"
    shutil.rmtree(out)


def test_progress_bar_restarts_per_stage(capsys):
    """An allocation reports its distortions, then its gains, then the conversion's tensors, each
    counting from 1 to its own total: each stage gets a bar of its own with its own label (one
    bar sized by the first total overran by the later stages' counts)."""
    from mlxquant.eval.commands import ProgressBar

    seen = []
    bar = ProgressBar("converting", lambda what: {"distortion": "allocating: distortions",
                                                  "gain": "allocating: gains"}.get(what.split()[0], "converting"))
    for stage, total in (("distortion", 3), ("gain", 2), ("t", 5)):
        for k in range(1, total + 1):
            bar(k, total, f"{stage} x{k}")
            seen.append((bar.bar.length, bar.done))
    bar.close()
    assert bar.bar is None
    assert seen == [(3, 1), (3, 2), (3, 3), (2, 1), (2, 2), (5, 1), (5, 2), (5, 3), (5, 4), (5, 5)]
    err = capsys.readouterr().err
    assert "allocating: distortions" in err and "allocating: gains" in err and "converting" in err
