"""Hostile and malformed inputs (issue #11, section 2): every one is a one-line project error
naming the file (and the key or tensor), raised fast, before anything is sized from the file.

Each test starts from a small valid HF folder, MLX folder or GGUF file built here and breaks one
thing in it."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mlxquant.cli import main
from mlxquant.errors import FormatError, MlxquantError, TokenizerError
from mlxquant.formats.gguf_check import MAX_KV, MAX_TENSORS, GGUFMetadata, check_gguf
from mlxquant.formats.gguf_read import GGUFModel
from mlxquant.formats.gguf_write import Metadata, TensorSpec, infer_type, write_gguf
from mlxquant.formats.hf import HFModel, HFTensorSpec, write_hf_folder
from mlxquant.formats.safetensors_read import MAX_SHARD_TENSORS, read_safetensors_header
from mlxquant.formats.json_file import read_json
from mlxquant.formats.mlx_folder import MLXModel
from mlxquant.formats.tokenizer import tokenizer_to_gguf
from mlxquant.formats.tokenizer_export import tokenizer_from_gguf
from mlxquant.models import get_architecture, get_architecture_by_gguf
from mlxquant.runtime.spec import model_spec
from mlxquant.runtime.tokenize import load_tokenizer

H, FF, V = 8, 16, 8  # width, feed-forward size, vocabulary of the tiny model

CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": H,
          "intermediate_size": FF, "num_hidden_layers": 1, "num_attention_heads": 2,
          "num_key_value_heads": 1, "vocab_size": V, "rms_norm_eps": 1e-5,
          "rope_theta": 10000.0, "max_position_embeddings": 64, "tie_word_embeddings": True}

HF_SHAPES = {"model.embed_tokens.weight": (V, H), "model.norm.weight": (H,),
             "model.layers.0.input_layernorm.weight": (H,),
             "model.layers.0.post_attention_layernorm.weight": (H,),
             "model.layers.0.self_attn.q_proj.weight": (H, H),
             "model.layers.0.self_attn.k_proj.weight": (H // 2, H),
             "model.layers.0.self_attn.v_proj.weight": (H // 2, H),
             "model.layers.0.self_attn.o_proj.weight": (H, H),
             "model.layers.0.mlp.gate_proj.weight": (FF, H),
             "model.layers.0.mlp.up_proj.weight": (FF, H),
             "model.layers.0.mlp.down_proj.weight": (H, FF)}

# a byte-level BPE tokenizer.json the tokenizers library loads
TOKENIZER = {"version": "1.0", "added_tokens": [], "normalizer": None,
             "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                               "use_regex": True},
             "post_processor": None,
             "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                         "use_regex": True},
             "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2, "c": 3},
                       "merges": ["a b"]}}


def hf_folder(path: Path, config: dict | None = None, shapes: dict | None = None,
              tokenizer: dict | None = None) -> Path:
    rng = np.random.default_rng(0)
    files = {"tokenizer.json": tokenizer or TOKENIZER}
    return write_hf_folder(path, config or CONFIG,
                           [HFTensorSpec(n, s) for n, s in (shapes or HF_SHAPES).items()],
                           lambda s: rng.standard_normal(s.shape).astype(np.float32), files=files)


def edit_json(path: Path, edit) -> None:
    value = json.loads(path.read_text())
    edit(value)
    path.write_text(json.dumps(value))


def raises(cls: type, *parts: str, fn, **kw) -> str:
    """Call ``fn(**kw)``, expect ``cls`` with a one-line message containing every part; return it."""
    with pytest.raises(cls) as e:
        fn(**kw)
    msg = str(e.value)
    assert "\n" not in msg, msg
    for p in parts:
        assert p in msg, (p, msg)
    return msg


def cli_error(*args: str) -> str:
    r = CliRunner().invoke(main, list(args))
    assert r.exit_code == 1, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mlxquant: error: "), r.output
    assert "Traceback" not in r.output
    return lines[0]


# -- 1. safetensors headers -------------------------------------------------------------------
def safetensors_file(path: Path, header: dict | str | bytes, data: bytes = b"\0" * 16) -> Path:
    blob = header if isinstance(header, bytes) else (
        header if isinstance(header, str) else json.dumps(header)).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)
    return path


@pytest.mark.parametrize("entry,expect", [
    ('{"dtype": "F32", "shape": [1e400], "data_offsets": [0, 4]}', "shape"),
    ('{"dtype": "F32", "shape": [18446744073709551616], "data_offsets": [0, 4]}', "shape"),
    ('{"dtype": "F32", "shape": ["4"], "data_offsets": [0, 4]}', "shape"),
    ('{"dtype": "F32", "shape": [true], "data_offsets": [0, 4]}', "shape"),
    ('{"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]}', "dtype"),
    ('{"dtype": "F32", "shape": [1], "data_offsets": ["0", "4"]}', "data_offsets"),
    ('{"dtype": "F32", "shape": [1], "data_offsets": [0.0, 4.0]}', "data_offsets"),
    ('{"dtype": "F32", "shape": [1], "data_offsets": [0]}', "data_offsets"),
    ('{"dtype": "F32", "shape": [4611686018427387905, 4], "data_offsets": [0, 4]}', "shape"),
    # 2**40 x 2**40 x 4 elements wrap int64 to 0; counted in Python ints they are not 4 bytes
    ('{"dtype": "U8", "shape": [1099511627776, 1099511627776, 4], "data_offsets": [0, 0]}',
     "bad data offsets"),
    ('{"dtype": "F32", "shape": [4], "data_offsets": [0, 4000]}', "bad data offsets"),
    ('{"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}', "bad data offsets"),
    ('["F32"]', "JSON object"),
])
def test_safetensors_entry_types(tmp_path, entry, expect):
    d = hf_folder(tmp_path / "m")
    shard = d / "model.safetensors"
    safetensors_file(shard, '{"model.norm.weight": ' + entry + "}")
    msg = raises(FormatError, str(shard), "'model.norm.weight'", expect, fn=HFModel, path=d)
    assert cli_error("inspect", str(d)) == f"mlxquant: error: {msg}"


def test_safetensors_header_limits_reject_fast(tmp_path):
    p = tmp_path / "big.safetensors"
    p.write_bytes(struct.pack("<Q", 200 << 20) + b"{}")
    raises(FormatError, str(p), "exceeds the limit", fn=read_safetensors_header, path=p)
    entry = '"t%d":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}'
    header = "{" + ",".join(entry % i for i in range(MAX_SHARD_TENSORS + 10)) + "}"
    safetensors_file(p, header, b"\0" * 4)
    t0 = time.perf_counter()
    raises(FormatError, str(p), f"more than {MAX_SHARD_TENSORS} entries", fn=read_safetensors_header,
           path=p)
    assert time.perf_counter() - t0 < 1.0


# -- 2./3. JSON files of the wrong shape or depth ---------------------------------------------
@pytest.mark.parametrize("name,content,expect", [
    ("config.json", [], "config.json must be a JSON object, got list"),
    ("tokenizer_config.json", [1, 2], "tokenizer config must be a JSON object"),
    ("generation_config.json", "x", "generation config must be a JSON object"),
    ("config.json", "[" * 100_000 + "]" * 100_000, "nests deeper"),
    ("config.json", '{"a": ' * 100 + "1" + "}" * 100, "nests deeper"),
    ("config.json", "{broken", "cannot read config.json"),
    ("config.json", b"\xff\xfe{}", "cannot read config.json"),
])
def test_json_files_of_the_wrong_shape(tmp_path, name, content, expect):
    d = hf_folder(tmp_path / "m")
    p = d / name
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content if isinstance(content, str) and content[:1] in "[{" else json.dumps(content))
    t0 = time.perf_counter()
    raises(FormatError, str(p), expect, fn=HFModel, path=d)
    assert time.perf_counter() - t0 < 2.0
    cli_error("inspect", str(d))


@pytest.mark.parametrize("index,expect", [
    ([], "must be a JSON object"),
    ({"weight_map": []}, "no weight_map"),
    ({"weight_map": {"model.norm.weight": ["model.safetensors"]}}, "'model.norm.weight' must be a shard file name"),
    ({"weight_map": {"model.norm.weight": "../model.safetensors"}}, "must be a shard file name"),
])
def test_index_of_the_wrong_shape(tmp_path, index, expect):
    d = hf_folder(tmp_path / "m")
    p = d / "model.safetensors.index.json"
    p.write_text(json.dumps(index))
    raises(FormatError, str(p), expect, fn=HFModel, path=d)


def test_chat_template_json_of_the_wrong_shape(tmp_path):
    d = hf_folder(tmp_path / "m")
    (d / "chat_template.json").write_text("[1]")
    m = HFModel(d)
    raises(FormatError, str(d / "chat_template.json"), "must be a JSON object",
           fn=lambda: m.chat_template)


@pytest.mark.parametrize("edit,expect", [
    (lambda t: t.update(added_tokens={"a": 1}), "added_tokens must be a JSON array"),
    (lambda t: t.update(added_tokens=[{"id": "x", "content": "q"}]), "added_tokens[0] id"),
    (lambda t: t.update(added_tokens=[{"id": 2 ** 31, "content": "q"}]), "added_tokens[0] id"),
    (lambda t: t.update(added_tokens=[["q"]]), "added_tokens[0] must be an object"),
    (lambda t: t["model"].update(vocab=[["a", 0]]), "model.vocab must be a JSON object"),
    (lambda t: t["model"].update(vocab={"a": "0"}), "model.vocab entry 'a'"),
    (lambda t: t.update(model=[]), "'model' must be a JSON object"),
])
def test_bad_tokenizer_entries(tmp_path, edit, expect):
    d = hf_folder(tmp_path / "m")
    edit_json(d / "tokenizer.json", edit)
    raises(TokenizerError, str(d / "tokenizer.json"), expect, fn=tokenizer_to_gguf,
           folder=d, config=CONFIG, arch="llama")


# -- 4. config.json hyper-parameters ----------------------------------------------------------
@pytest.mark.parametrize("key,value,expect", [
    ("num_attention_heads", 0, "key 'num_attention_heads' must be a positive integer (at most 4096), got 0"),
    ("num_attention_heads", 3, "must divide the width"),
    ("num_key_value_heads", 3, "'num_key_value_heads' (3) must divide"),
    ("hidden_size", [8], "key 'hidden_size' must be a positive integer"),
    ("hidden_size", 2 ** 64, "key 'hidden_size' must be a positive integer"),
    ("hidden_size", "8", "key 'hidden_size' must be"),
    ("rms_norm_eps", float("inf"), "key 'rms_norm_eps' must be a positive finite number"),
    ("rope_theta", -1.0, "key 'rope_theta' must be a positive finite number"),
    ("vocab_size", 2 ** 31, "key 'vocab_size' must be a positive integer (at most 2097152)"),
    ("vocab_size", 4294967295, "key 'vocab_size' must be a positive integer (at most 2097152)"),
    ("vocab_size", 9, "key 'vocab_size' (9) exceeds the 8 rows"),
    ("max_position_embeddings", True, "key 'max_position_embeddings'"),
    ("rope_scaling", [1], "key 'rope_scaling' must be a JSON object"),
    ("rope_scaling", {"rope_type": "linear", "factor": 0}, "key 'factor'"),
    ("eos_token_id", ["x"], "key 'eos_token_id'"),
    ("text_config", [], "key 'text_config' must be a JSON object"),
])
def test_config_hyper_parameters(tmp_path, key, value, expect):
    d = hf_folder(tmp_path / "m")
    text = json.dumps({**CONFIG, key: value}).replace("Infinity", "1e400")
    (d / "config.json").write_text(text)
    t0 = time.perf_counter()
    msg = raises(FormatError, str(d / "config.json"), expect, fn=HFModel, path=d)
    assert time.perf_counter() - t0 < 2.0
    assert cli_error("convert", str(d), "-o", str(tmp_path / "o.gguf")) == f"mlxquant: error: {msg}"
    assert not (tmp_path / "o.gguf").exists()


@pytest.mark.parametrize("missing", ["hidden_size", "num_attention_heads", "vocab_size"])
def test_missing_config_keys(tmp_path, missing):
    d = hf_folder(tmp_path / "m")
    edit_json(d / "config.json", lambda c: c.pop(missing))
    cfg = HFModel(d).config
    arch = get_architecture(cfg)
    raises(FormatError, str(d / "config.json"), f"missing key {missing!r}", fn=arch.hparams_to_gguf,
           hf_config=cfg)
    raises(FormatError, f"missing key {missing!r}", fn=model_spec, family="llama", config=cfg,
           tied=True)
    cli_error("convert", str(d), "-o", str(tmp_path / "o.gguf"))


# -- 5./6. GGUF metadata -> config and tokenizer ----------------------------------------------
GGUF_SHAPES = {"token_embd.weight": (V, H), "output_norm.weight": (H,),
               "blk.0.attn_norm.weight": (H,), "blk.0.ffn_norm.weight": (H,),
               "blk.0.attn_q.weight": (H, H), "blk.0.attn_k.weight": (H // 2, H),
               "blk.0.attn_v.weight": (H // 2, H), "blk.0.attn_output.weight": (H, H),
               "blk.0.ffn_gate.weight": (FF, H), "blk.0.ffn_up.weight": (FF, H),
               "blk.0.ffn_down.weight": (H, FF)}
GGUF_META = {"general.architecture": "llama", "llama.context_length": 64,
             "llama.embedding_length": H, "llama.block_count": 1, "llama.feed_forward_length": FF,
             "llama.attention.head_count": 2, "llama.attention.head_count_kv": 1,
             "llama.attention.layer_norm_rms_epsilon": 1e-5, "llama.rope.freq_base": 10000.0,
             "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "gpt-2",
             "tokenizer.ggml.tokens": ["a", "b", "ab", "c", "d", "e", "f", "g"],
             "tokenizer.ggml.token_type": [1] * V, "tokenizer.ggml.merges": ["a b"]}


def gguf_file(path: Path, meta: dict) -> Path:
    md = Metadata()
    for k, v in meta.items():  # types from the values, so a test can store any type under any key
        md.set(k, v, infer_type(v))
    specs = [TensorSpec(n, "F32", s) for n, s in GGUF_SHAPES.items()]
    rng = np.random.default_rng(0)
    return write_gguf(path, md, specs, lambda s: rng.standard_normal(s.shape).astype(np.float32))


@pytest.mark.parametrize("key,value,expect", [
    ("llama.attention.head_count", 0, "must be a positive integer (at most 4096), got 0"),
    ("llama.attention.head_count", None, "missing key 'llama.attention.head_count'"),
    ("llama.embedding_length", None, "missing key 'llama.embedding_length'"),
    ("llama.block_count", 0, "key 'llama.block_count'"),
    ("llama.attention.head_count_kv", 3, "must divide"),
    ("llama.attention.layer_norm_rms_epsilon", float("inf"), "positive finite"),
    ("llama.rope.freq_base", 0.0, "'llama.rope.freq_base'"),
    ("llama.vocab_size", 1 << 40, "'llama.vocab_size'"),
    ("llama.vocab_size", 9, "exceeds the 8 rows of token_embd.weight"),
    ("llama.attention.head_count", [2, 2], "'llama.attention.head_count'"),
    ("tokenizer.ggml.bos_token_id", 1 << 40, "'tokenizer.ggml.bos_token_id'"),
])
def test_gguf_hyper_parameters(tmp_path, key, value, expect):
    meta = {k: v for k, v in GGUF_META.items() if k != key}
    if value is not None:
        meta[key] = value
    p = gguf_file(tmp_path / "m.gguf", meta)

    def config() -> dict:
        with GGUFModel(p) as g:
            arch = get_architecture_by_gguf("llama")
            return arch.hparams_from_gguf(g.metadata, {t.name: t.shape for t in g.tensors})

    msg = raises(FormatError, str(p), expect, fn=config)
    line = cli_error("convert", str(p), "-o", str(tmp_path / "hf"), "--to", "hf", "--outtype", "F32")
    assert str(p) in line and expect in line, (line, msg)


@pytest.mark.parametrize("key,value,expect", [
    ("tokenizer.ggml.pre", ["gpt-2"], "'tokenizer.ggml.pre' must be a string"),
    ("tokenizer.ggml.merges", [1, 2], "'tokenizer.ggml.merges' must be an array of strings"),
    ("tokenizer.ggml.merges", ["a b c"], "malformed merge"),
    ("tokenizer.ggml.tokens", [1, 2, 3, 4, 5, 6, 7, 8], "'tokenizer.ggml.tokens' must be an array"),
    ("tokenizer.ggml.token_type", 1, "'tokenizer.ggml.token_type' must be an array of integers"),
    ("tokenizer.ggml.token_type", [1, 1], "2 entries for 8 tokens"),
    ("tokenizer.ggml.model", 7, "'tokenizer.ggml.model' must be a string"),
    ("tokenizer.ggml.model", "rwkv", "cannot be exported"),
])
def test_gguf_tokenizer_metadata(tmp_path, key, value, expect):
    p = gguf_file(tmp_path / "m.gguf", {**GGUF_META, key: value})
    with GGUFModel(p) as g:
        raises(TokenizerError, str(p), expect, fn=tokenizer_from_gguf, meta=g.metadata)
    assert expect in cli_error("convert", str(p), "-o", str(tmp_path / "hf"), "--to", "hf",
                               "--outtype", "F32")


def test_gguf_scores_and_special_ids_of_the_wrong_type(tmp_path):
    meta = GGUFMetadata({**GGUF_META, "tokenizer.ggml.model": "llama",
                         "tokenizer.ggml.scores": ["x"] * V})
    meta.source = tmp_path / "m.gguf"
    raises(TokenizerError, "m.gguf", "'tokenizer.ggml.scores'", fn=tokenizer_from_gguf, meta=meta)
    meta = {**GGUF_META, "tokenizer.ggml.model": "llama", "tokenizer.ggml.bos_token_id": 1 << 40}
    assert "tokenizer.model" in tokenizer_from_gguf(meta)  # an id out of range means "none"


# -- 7. the tokenizers library's plain Exception ----------------------------------------------
def test_tokenizers_library_exceptions(tmp_path):
    d = hf_folder(tmp_path / "m")
    edit_json(d / "tokenizer.json", lambda t: t["model"].update(merges=["a zz"]))
    raises(TokenizerError, str(d / "tokenizer.json"), fn=tokenizer_to_gguf, folder=d, config=CONFIG,
           arch="llama")
    raises(TokenizerError, str(d), "cannot be loaded", fn=load_tokenizer, path=d, config=CONFIG)
    (d / "tokenizer.json").write_text('{"model": ' * 200 + "1" + "}" * 200)
    raises(TokenizerError, str(d / "tokenizer.json"), "nests deeper", fn=load_tokenizer, path=d,
           config=CONFIG)


# -- 8. sizes taken from files are bounded before allocation ----------------------------------
@pytest.mark.parametrize("vocab", [2 ** 31, 4294967295])
def test_vocab_size_bounded_before_padding(tmp_path, vocab):
    d = hf_folder(tmp_path / "m")
    t0 = time.perf_counter()
    raises(MlxquantError, "vocab_size", fn=tokenizer_to_gguf, folder=d,
           config={**CONFIG, "vocab_size": vocab}, arch="llama")
    edit_json(d / "tokenizer.json",
              lambda t: t.update(added_tokens=[{"id": vocab - 1, "content": "<x>"}]))
    raises(TokenizerError, "added_tokens[0] id", fn=tokenizer_to_gguf, folder=d,
           config={k: v for k, v in CONFIG.items() if k != "vocab_size"}, arch="llama")
    assert time.perf_counter() - t0 < 2.0


def test_vocab_size_under_a_memory_limit(tmp_path):
    """The whole CLI, in a process limited to 2 GiB of address space: one line, exit 1."""
    d = hf_folder(tmp_path / "m")
    edit_json(d / "config.json", lambda c: c.update(vocab_size=4294967295))
    code = textwrap.dedent("""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
        from mlxquant.cli import main
        sys.argv = ["mlxquant"] + sys.argv[1:]
        main()
    """)
    r = subprocess.run([sys.executable, "-c", code, "convert", str(d), "-o", str(tmp_path / "o.gguf")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mlxquant: error: ") and "vocab_size" in lines[0], r.stderr


# -- 9. inconsistent inputs -------------------------------------------------------------------
def test_two_dimensional_bias(tmp_path):
    d = hf_folder(tmp_path / "m", shapes={**HF_SHAPES, "model.layers.0.self_attn.q_proj.bias": (H, 2)})
    raises(FormatError, "model.safetensors", "'model.layers.0.self_attn.q_proj.bias'", "1-D",
           fn=HFModel, path=d)
    cli_error("convert", str(d), "-o", str(tmp_path / "o"), "--to", "mlx")


def mlx_folder(path: Path, quantization: dict, drop_scales_from_index: bool = False) -> Path:
    """A one-module MLX folder: a 4-bit g32 affine q_proj plus the float tensors."""
    shapes = {n: s for n, s in HF_SHAPES.items() if "q_proj" not in n}
    hf = hf_folder(path, {**CONFIG, "quantization": quantization}, shapes)
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(hf / "model.safetensors"))
    q = "model.layers.0.self_attn.q_proj"
    tensors[f"{q}.weight"] = np.zeros((H, H * 4 // 32), np.uint32)
    tensors[f"{q}.scales"] = np.ones((H, H // 32 or 1), np.float16)
    tensors[f"{q}.biases"] = np.zeros((H, H // 32 or 1), np.float16)
    save_file(tensors, str(hf / "model.safetensors"), metadata={"format": "mlx"})
    names = sorted(tensors)
    if drop_scales_from_index:
        names.remove(f"{q}.scales")
    (hf / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {n: "model.safetensors" for n in names}}))
    return hf


@pytest.mark.parametrize("quantization,expect", [
    ({"group_size": None, "bits": 4}, "quantization 'group_size' must be a positive integer"),
    ({"group_size": 32, "bits": 0}, "quantization 'bits' must be a positive integer (at most 8), got 0"),
    ({"group_size": 32, "bits": 4, "mode": ["affine"]}, "'mode' must be a string"),
    ({"group_size": 32, "bits": 4,
      "model.layers.0.self_attn.q_proj": {"group_size": "x"}}, "'group_size' must be a positive integer"),
    ([32], "key 'quantization' must be a JSON object"),
])
def test_mlx_quantization_block(tmp_path, quantization, expect):
    d = mlx_folder(tmp_path / "m", {"group_size": 8, "bits": 4})
    edit_json(d / "config.json", lambda c: c.update(quantization=quantization))
    raises(FormatError, str(d / "config.json"), expect, fn=MLXModel, path=d)


def test_mlx_index_without_scales(tmp_path):
    d = mlx_folder(tmp_path / "ok", {"group_size": 8, "bits": 4})
    assert "model.layers.0.self_attn.q_proj" in MLXModel(d).quantized_modules
    d = mlx_folder(tmp_path / "m", {"group_size": 8, "bits": 4}, drop_scales_from_index=True)
    raises(FormatError, str(d), "'model.layers.0.self_attn.q_proj.weight' has no", fn=MLXModel, path=d)
    cli_error("convert", str(d), "-o", str(tmp_path / "o.gguf"))


# -- 10. large crafted GGUF headers are refused fast ------------------------------------------
def sparse_gguf(path: Path, n_tensors: int, n_kv: int, size: int, body: bytes = b"") -> Path:
    with open(path, "wb") as f:
        f.write(b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv) + body)
        f.truncate(size)  # a sparse file: counts fit the size, nothing is written
    return path


@pytest.mark.parametrize("n_tensors,n_kv,expect", [
    (0, 5_000_000, f"exceed mlxquant's limit of {MAX_KV}"),
    (4_000_000, 0, f"exceed mlxquant's limit of {MAX_TENSORS}"),
    (0, 1, "array items in total"),
])
def test_large_gguf_headers_rejected_fast(tmp_path, n_tensors, n_kv, expect):
    body = b""
    if n_kv == 1:  # one key holding an array of 10 M u8 items: fits the file, past the total
        body = struct.pack("<Q", 1) + b"k" + struct.pack("<IIQ", 9, 0, 10_000_000)
    p = sparse_gguf(tmp_path / "big.gguf", n_tensors, n_kv, 100 << 20, body)
    t0 = time.perf_counter()
    raises(FormatError, str(p), expect, fn=check_gguf, path=p)
    assert time.perf_counter() - t0 < 1.0
    assert expect in cli_error("inspect", str(p))


def test_read_json_limits(tmp_path):
    p = tmp_path / "big.json"
    with open(p, "wb") as f:
        f.truncate(65 << 20)
    raises(FormatError, str(p), "exceeds the limit", fn=read_json, path=p)
    raises(FormatError, str(tmp_path), "is a directory", fn=read_json, path=tmp_path)
    raises(FormatError, "missing", fn=read_json, path=tmp_path / "nope.json")
    assert os.path.getsize(p) == 65 << 20


def test_rust_panic_in_tokenizers_is_a_tokenizer_error(tmp_path):
    """A continuing-subword prefix longer than a token makes the library panic; pyo3 raises that
    as PanicException, a BaseException that ``except Exception`` misses."""
    d = hf_folder(tmp_path / "m")
    edit_json(d / "tokenizer.json", lambda t: t["model"].update(continuing_subword_prefix="llama"))
    raises(TokenizerError, str(d / "tokenizer.json"), "cannot load", fn=tokenizer_to_gguf, folder=d,
           config=CONFIG, arch="llama")
    raises(TokenizerError, str(d), "tokenizer.json cannot be loaded", fn=load_tokenizer, path=d,
           config=CONFIG)


def test_tokenizer_pipelines_that_grow_the_text(tmp_path):
    """1,000 ByteLevel steps would never return from the tokenizers library: refused first."""
    d = hf_folder(tmp_path / "m")
    steps = [{"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]
    edit_json(d / "tokenizer.json",
              lambda t: t.update(pre_tokenizer={"type": "Sequence", "pretokenizers": steps * 1000}))
    t0 = time.perf_counter()
    raises(TokenizerError, str(d / "tokenizer.json"), "pre_tokenizer has more than",
           fn=tokenizer_to_gguf, folder=d, config=CONFIG, arch="llama")
    raises(TokenizerError, str(d / "tokenizer.json"), "pre_tokenizer has more than",
           fn=load_tokenizer, path=d, config=CONFIG)
    edit_json(d / "tokenizer.json", lambda t: t.update(normalizer={"type": "Sequence", "normalizers": [
        {"type": "Replace", "pattern": {"String": "a"}, "content": "a" * 100}] * 3}))
    raises(TokenizerError, "normalizer has more than", fn=load_tokenizer, path=d, config=CONFIG)
    assert time.perf_counter() - t0 < 2.0


def test_empty_gguf_tensor_with_a_huge_dimension(tmp_path):
    """0 x 2**62 elements hold no bytes, but NumPy cannot even shape such an array."""
    p = gguf_file(tmp_path / "m.gguf", GGUF_META)
    data = bytearray(p.read_bytes())
    name = b"output_norm.weight"
    i = data.index(struct.pack("<Q", len(name)) + name) + 8 + len(name)
    # n_dims 1, ne [8] -> n_dims 2, ne [0, 2**62] (the tensor info grows by 8 bytes)
    data[i:i + 12] = struct.pack("<IQQ", 2, 0, 1 << 62)
    p.write_bytes(bytes(data))
    raises(FormatError, str(p), "'output_norm.weight'", "overflows", fn=check_gguf, path=p)


def test_json_lone_surrogate_is_refused_but_pairs_read(tmp_path):
    """A lone ``\\ud800`` escape decodes in Python but cannot be written back as UTF-8 (it once
    reached config.json's writer in MLX -> HF); a proper surrogate pair is an ordinary character."""
    ok = tmp_path / "ok.json"
    ok.write_text('{"name": "\\ud83d\\ude00"}', encoding="utf-8")
    assert read_json(ok)["name"] == "\U0001F600"
    bad = tmp_path / "config.json"
    bad.write_text('{"name": "x\\uD800y"}', encoding="utf-8")
    with pytest.raises(FormatError, match=r"config\.json.*surrogate"):
        read_json(bad)
