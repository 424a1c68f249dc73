"""Hugging Face folders: lazy reading (one or many shards, f32/f16/bf16), atomic sharded writing,
errors that name the broken file."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from mlxquant.errors import FormatError, OutputExistsError
from mlxquant.formats.hf import HFModel, HFTensorSpec, bf16_to_f32, f32_to_bf16, write_hf_folder
from mlxquant.formats.safetensors_read import read_safetensors_header
from mlxquant.testing.inputs import shakespeare_model_dir
from conftest import need


def tensors(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "model.embed_tokens.weight": rng.standard_normal((16, 8)).astype(np.float32),
        "model.layers.0.mlp.up_proj.weight": rng.standard_normal((24, 8)).astype(np.float32),
        "model.norm.weight": rng.standard_normal(8).astype(np.float32),
    }


def write(tmp_path, ts, dtype="F32", **kw):
    specs = [HFTensorSpec(n, a.shape, dtype) for n, a in ts.items()]
    return write_hf_folder(tmp_path / "m", {"model_type": "llama"}, specs, lambda s: ts[s.name],
                           files={"tokenizer_config.json": {"chat_template": "{{ x }}"},
                                  "tokenizer.model": b"\x00\x01"}, **kw)


def test_bf16_rounding_matches_ggml():
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize as gg_quantize

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(4096) * 10.0 ** rng.integers(-30, 30, 4096),
                        [0.0, -0.0, np.inf, -np.inf, 1.00390625, 1.01171875]]).astype(np.float32)
    ref = gg_quantize(x.reshape(1, -1), GGMLQuantizationType.BF16).view(np.uint16).reshape(-1)
    np.testing.assert_array_equal(f32_to_bf16(x), ref)
    assert np.isnan(bf16_to_f32(f32_to_bf16(np.array([np.nan], np.float32)))).all()
    np.testing.assert_array_equal(bf16_to_f32(ref), (ref.astype(np.uint32) << 16).view(np.float32))


@pytest.mark.parametrize("dtype", ["F32", "F16", "BF16"])
def test_write_then_read_single_shard(tmp_path, dtype):
    ts = tensors(np.random.default_rng(1))
    out = write(tmp_path, ts, dtype)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "mlxquant.json", "model.safetensors",
                                                     "tokenizer.model", "tokenizer_config.json"]
    with HFModel(out) as m:
        assert m.config == {"model_type": "llama"} and m.chat_template == "{{ x }}"
        assert set(m.tensor_names) == set(ts)
        for n, a in ts.items():
            assert m.info(n).dtype == dtype
            expect = {"F32": a, "F16": a.astype(np.float16).astype(np.float32),
                      "BF16": bf16_to_f32(f32_to_bf16(a))}[dtype]
            np.testing.assert_array_equal(m.tensor(n), expect)
    if dtype != "BF16":  # the safetensors library reads what we wrote
        loaded = load_file(str(out / "model.safetensors"))
        assert set(loaded) == set(ts)


def test_sharded_write_and_read(tmp_path):
    ts = tensors(np.random.default_rng(2))
    out = write(tmp_path, ts, max_shard_bytes=600)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) == 3 and shards[0] == "model-00001-of-00003.safetensors"
    with HFModel(out) as m:
        for n, a in ts.items():
            np.testing.assert_array_equal(m.tensor(n), a)


def test_reads_bf16_written_by_others(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    (d / "config.json").write_text("{}")
    x = np.random.default_rng(3).standard_normal((4, 8)).astype(np.float32)
    bits = f32_to_bf16(x)
    # a bf16 shard written by hand: safetensors' numpy API cannot write bfloat16
    header = json.dumps({"w": {"dtype": "BF16", "shape": [4, 8], "data_offsets": [0, 64]}}).encode()
    header += b" " * (-len(header) % 8)
    (d / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + bits.tobytes())
    with HFModel(d) as m:
        np.testing.assert_array_equal(m.tensor("w"), bf16_to_f32(bits))


def test_shakespeare_folder_reads_like_safetensors():
    d = shakespeare_model_dir()
    need(d is not None, "tiny-shakespeare-llama model")
    ref = load_file(str(d / "model.safetensors"))
    with HFModel(d) as m:
        assert m.config["model_type"] == "llama" and m.has_tokenizer
        assert set(m.tensor_names) == set(ref)
        np.testing.assert_array_equal(m.tensor("model.layers.0.self_attn.q_proj.weight"),
                                      ref["model.layers.0.self_attn.q_proj.weight"])


def test_broken_folders_name_the_file(tmp_path):
    ts = tensors(np.random.default_rng(4))
    out = write(tmp_path, ts, max_shard_bytes=600)
    (out / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(FormatError, match="model-00002-of-00003.safetensors: missing"):
        HFModel(out)
    (out / "model-00002-of-00003.safetensors").write_bytes(b"\xff" * 7)
    with pytest.raises(FormatError, match="model-00002-of-00003.safetensors: truncated"):
        HFModel(out)
    (out / "model-00002-of-00003.safetensors").write_bytes((10).to_bytes(8, "little") + b"{not json}")
    with pytest.raises(FormatError, match="model-00002-of-00003.safetensors: corrupt"):
        HFModel(out)
    (out / "config.json").write_text("{")
    with pytest.raises(FormatError, match="config.json: cannot read"):
        HFModel(out)
    (out / "config.json").unlink()
    with pytest.raises(FormatError, match="config.json file"):
        HFModel(out)
    p = tmp_path / "bad.safetensors"
    save_file({"w": np.zeros((2, 2), np.float32)}, str(p))
    data = p.read_bytes()
    p.write_bytes(data[:-4])
    with pytest.raises(FormatError, match="bad data offsets"):
        read_safetensors_header(p)


def test_atomic_folder(tmp_path):
    ts = tensors(np.random.default_rng(5))
    specs = [HFTensorSpec(n, a.shape) for n, a in ts.items()]

    def produce(s):
        if s.name == "model.norm.weight":
            raise KeyboardInterrupt
        return ts[s.name]

    with pytest.raises(KeyboardInterrupt):
        write_hf_folder(tmp_path / "m", {}, specs, produce)
    assert list(tmp_path.iterdir()) == []
    write(tmp_path, ts)
    with pytest.raises(OutputExistsError):
        write(tmp_path, ts)
    write(tmp_path, ts, "F16", force=True)
    assert HFModel(tmp_path / "m").info("model.norm.weight").dtype == "F16"
    assert [p.name for p in tmp_path.iterdir()] == ["m"]
