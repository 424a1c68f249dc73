"""Architecture maps: names both ways, value transforms and their inverses, hyper-parameters.

Checked against gguf-py's own tensor-name map (llama.cpp's), against RoPE itself (the Q/K
permutation must turn HF's rotate-half RoPE into ggml's adjacent-pair RoPE), and by loading the
configs we write with transformers and mlx-lm.
"""

from __future__ import annotations

import importlib

import gguf
import numpy as np
import pytest

from mlxquant.errors import FormatError, UnsupportedArchitectureError
from mlxquant.models import SUPPORTED, get_architecture, get_architecture_by_gguf
from mlxquant.models.llama import llama3_rope_factors, llama3_rope_scaling_from_freqs
from mlxquant.testing.f32_gguf import TINY_CONFIGS, tiny_hf_model
from mlxquant.testing.inputs import smollm2_gguf_path

from conftest import need

ARCHS = tuple(TINY_CONFIGS)


def _gguf_py_map(arch: str, n_blocks: int) -> gguf.TensorNameMap:
    enum = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}[arch]
    return gguf.get_tensor_name_map(enum, n_blocks)


@pytest.mark.parametrize("arch", ARCHS)
def test_names_round_trip_and_agree_with_gguf_py(arch):
    cfg, tensors = tiny_hf_model(arch, tie_word_embeddings=False)
    a = get_architecture(cfg)
    assert a.name == arch
    ref = _gguf_py_map(arch, cfg["num_hidden_layers"])
    seen = set()
    for hf_name in tensors:
        g = a.tensor_name_to_gguf(hf_name)
        want = ref.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        assert g == want, (hf_name, g, want)
        if g is None:  # gemma2 has no output tensor: its converter drops lm_head
            assert arch == "gemma2" and hf_name == "lm_head.weight"
            continue
        assert a.tensor_name_from_gguf(g) == hf_name
        seen.add(g)
    assert len(seen) == len([n for n in tensors if a.tensor_name_to_gguf(n)])  # injective


@pytest.mark.parametrize("arch", ARCHS)
def test_skipped_and_unknown_names(arch):
    cfg, _ = tiny_hf_model(arch)
    a = get_architecture(cfg)
    assert a.tensor_name_to_gguf("model.layers.0.self_attn.rotary_emb.inv_freq") is None
    assert a.tensor_name_to_gguf("vision_tower.blocks.0.attn.qkv.weight") is None
    # multimodal wrappers (Gemma 3 VLM, Llava) lose their language_model prefix, as in llama.cpp
    assert a.tensor_name_to_gguf("model.language_model.layers.2.mlp.up_proj.weight") == "blk.2.ffn_up.weight"
    assert a.tensor_name_to_gguf("language_model.model.norm.weight") == "output_norm.weight"
    # a tied lm_head is not written
    assert a.tensor_name_to_gguf("lm_head.weight", {**cfg, "tie_word_embeddings": True}) is None
    with pytest.raises(FormatError, match="mystery"):
        a.tensor_name_to_gguf("model.layers.0.mystery.weight")
    with pytest.raises(FormatError, match="blk.0.mystery"):
        a.tensor_name_from_gguf("blk.0.mystery.weight")


@pytest.mark.parametrize("arch", ARCHS)
def test_values_round_trip(arch):
    cfg, tensors = tiny_hf_model(arch, tie_word_embeddings=False, seed=3)
    a = get_architecture(cfg)
    for hf_name, w in tensors.items():
        g = a.tensor_name_to_gguf(hf_name)
        if g is None:
            continue
        stored = a.tensor_to_gguf(hf_name, w, cfg)
        assert stored.shape == w.shape and stored.dtype == w.dtype
        back = a.tensor_from_gguf(g, stored, cfg)
        if arch.startswith("gemma") and hf_name.endswith("norm.weight"):
            np.testing.assert_array_equal(stored, w + np.float32(1))  # llama.cpp stores 1 + w
            np.testing.assert_allclose(back, w, rtol=0, atol=1e-7)
        else:
            np.testing.assert_array_equal(back, w)


def test_gemma_norm_offset_keeps_float16():
    cfg, _ = tiny_hf_model("gemma3")
    a = get_architecture(cfg)
    w = np.array([0.0, -0.5, 0.25, 2.0], dtype=np.float16)
    out = a.tensor_to_gguf("model.layers.0.self_attn.q_norm.weight", w, cfg)
    assert out.dtype == np.float16  # the converter adds 1 in the checkpoint's float16
    np.testing.assert_array_equal(out, np.array([1.0, 0.5, 1.25, 3.0], dtype=np.float16))
    np.testing.assert_array_equal(a.tensor_from_gguf("blk.0.attn_q_norm.weight", out, cfg), w)


def _rope_hf(v: np.ndarray, pos: int, base: float) -> np.ndarray:
    """transformers' rotate-half RoPE on (n_head, d) vectors."""
    d = v.shape[-1]
    theta = pos * base ** (-np.arange(0, d, 2) / d)
    cos, sin = np.cos(theta), np.sin(theta)
    x1, x2 = v[..., : d // 2], v[..., d // 2:]
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def _rope_ggml_norm(v: np.ndarray, pos: int, base: float) -> np.ndarray:
    """ggml's LLAMA_ROPE_TYPE_NORM: rotate adjacent pairs (2i, 2i+1)."""
    d = v.shape[-1]
    theta = pos * base ** (-np.arange(0, d, 2) / d)
    cos, sin = np.cos(theta), np.sin(theta)
    x0, x1 = v[..., 0::2], v[..., 1::2]
    out = np.empty_like(v)
    out[..., 0::2] = x0 * cos - x1 * sin
    out[..., 1::2] = x0 * sin + x1 * cos
    return out


@pytest.mark.parametrize("proj", ["q", "k"])
def test_llama_permutation_turns_hf_rope_into_ggml_rope(proj):
    """The permuted projection under ggml's RoPE equals the HF projection under HF's RoPE, with
    the rows in llama.cpp's order: so the permutation goes the right way, for Q and for GQA's K."""
    cfg, tensors = tiny_hf_model("llama", seed=5)
    a = get_architecture(cfg)
    hf_name = f"model.layers.1.self_attn.{proj}_proj.weight"
    w = tensors[hf_name].astype(np.float64)
    heads = cfg["num_attention_heads"] if proj == "q" else cfg["num_key_value_heads"]
    d = cfg["head_dim"]
    x = np.random.default_rng(1).standard_normal(cfg["hidden_size"])
    w_gguf = a.tensor_to_gguf(hf_name, w, cfg)
    for pos in (0, 3, 17):
        hf = _rope_hf((w @ x).reshape(heads, d), pos, 10000.0)
        gg = _rope_ggml_norm((w_gguf @ x).reshape(heads, d), pos, 10000.0)
        np.testing.assert_allclose(a.tensor_from_gguf(f"blk.1.attn_{proj}.weight", gg.reshape(-1), cfg),
                                   hf.reshape(-1), rtol=1e-12, atol=1e-12)
    assert not np.array_equal(w_gguf, w)


@pytest.mark.parametrize("arch", ["qwen2", "qwen3", "gemma2", "gemma3"])
def test_neox_architectures_store_qk_unchanged(arch):
    cfg, tensors = tiny_hf_model(arch)
    a = get_architecture(cfg)
    for n in ("model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight"):
        assert a.tensor_to_gguf(n, tensors[n], cfg) is tensors[n]


def test_llama_bias_permutation_inverse():
    cfg, _ = tiny_hf_model("llama", attention_bias=True)
    a = get_architecture(cfg)
    b = np.arange(cfg["num_key_value_heads"] * cfg["head_dim"], dtype=np.float32)
    stored = a.tensor_to_gguf("model.layers.0.self_attn.k_proj.bias", b, cfg)
    assert not np.array_equal(stored, b)
    np.testing.assert_array_equal(a.tensor_from_gguf("blk.0.attn_k.bias", stored, cfg), b)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("tied", [True, False])
def test_hparams_round_trip_load_in_transformers_and_mlx_lm(arch, tied):
    import transformers

    cfg, tensors = tiny_hf_model(arch, tie_word_embeddings=tied)
    a = get_architecture(cfg)
    meta = dict(a.hparams_to_gguf(cfg))
    for k, v in meta.items():
        assert k.startswith(f"{arch}."), k
        assert isinstance(v, (bool, int, float, str, list)), (k, v)
    shapes = {a.tensor_name_to_gguf(n, cfg): w.shape for n, w in tensors.items()}
    shapes.pop(None, None)
    back = a.hparams_from_gguf(meta, shapes)
    for k, v in cfg.items():
        if k == "tie_word_embeddings" and arch == "gemma2":
            assert back[k] is True  # gemma2 always ties (llama.cpp has no gemma2 output tensor)
        else:
            assert back.get(k) == v, (k, v, back.get(k))
    hc = transformers.AutoConfig.for_model(**back)
    assert hc.num_hidden_layers == cfg["num_hidden_layers"]
    mod = importlib.import_module(f"mlx_lm.models.{back['model_type']}")
    args = mod.ModelArgs.from_dict(back)
    assert args.hidden_size == cfg["hidden_size"]


def test_llama_keys_match_the_converter():
    cfg = {**TINY_CONFIGS["llama"], "rope_scaling": {"rope_type": "linear", "factor": 4.0}}
    kv = get_architecture(cfg).hparams_to_gguf(cfg)
    assert kv == {
        "llama.block_count": 8, "llama.context_length": 512, "llama.embedding_length": 256,
        "llama.feed_forward_length": 512, "llama.attention.head_count": 8,
        "llama.attention.head_count_kv": 2, "llama.rope.scaling.type": "linear",
        "llama.rope.scaling.factor": 4.0, "llama.rope.freq_base": 10000.0,
        "llama.attention.layer_norm_rms_epsilon": 1e-6, "llama.attention.key_length": 32,
        "llama.attention.value_length": 32, "llama.vocab_size": 512, "llama.rope.dimension_count": 32,
    }
    back = get_architecture_by_gguf("llama").hparams_from_gguf(kv)
    assert back["rope_scaling"]["rope_type"] == "linear" and back["rope_scaling"]["factor"] == 4.0


def test_gemma3_transformers5_rope_parameters_and_layer_types():
    cfg = {**TINY_CONFIGS["gemma3"], "num_hidden_layers": 12}
    del cfg["rope_theta"], cfg["rope_local_base_freq"], cfg["sliding_window_pattern"]
    cfg["rope_parameters"] = {
        "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
        "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
    }
    cfg["layer_types"] = ["sliding_attention" if (i + 1) % 6 else "full_attention" for i in range(12)]
    kv = get_architecture(cfg).hparams_to_gguf(cfg)
    assert kv["gemma3.rope.freq_base"] == 1000000.0 and kv["gemma3.rope.freq_base_swa"] == 10000.0
    assert kv["gemma3.rope.scaling.type"] == "linear" and kv["gemma3.rope.scaling.factor"] == 8.0
    assert kv["gemma3.attention.sliding_window"] == 128
    assert "gemma3.attention.sliding_window_pattern" not in kv  # llama.cpp's default of 6
    cfg["layer_types"] = ["sliding_attention", "full_attention"] * 6
    kv = get_architecture(cfg).hparams_to_gguf(cfg)
    assert kv["gemma3.attention.sliding_window_pattern"] == [True, False] * 6
    back = get_architecture_by_gguf("gemma3").hparams_from_gguf(kv)
    assert back["layer_types"] == cfg["layer_types"]


def test_llama3_rope_freqs_round_trip():
    cfg = {**TINY_CONFIGS["llama"], "head_dim": 128, "hidden_size": 1024, "num_attention_heads": 8,
           "rope_theta": 500000.0,
           "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}
    a = get_architecture(cfg)
    extra = a.extra_tensors(cfg)
    freqs = extra["rope_freqs.weight"]
    assert freqs.shape == (64,) and freqs.dtype == np.float32
    assert freqs[0] == 1.0 and freqs[-1] == 32.0 and ((freqs > 1) & (freqs < 32)).any()
    assert "llama.rope.scaling.type" not in a.hparams_to_gguf(cfg)  # llama3 lives in the tensor
    assert a.tensor_name_from_gguf("rope_freqs.weight") is None
    got = llama3_rope_scaling_from_freqs(freqs, 500000.0, 128)
    assert got == {k: v for k, v in cfg["rope_scaling"].items()} | {"factor": 32.0}
    np.testing.assert_array_equal(llama3_rope_factors({**got, "rope_theta": 500000.0}, 128), freqs)
    back = a.hparams_from_gguf(a.hparams_to_gguf(cfg), rope_freqs=freqs)
    assert back["rope_scaling"]["original_max_position_embeddings"] == 8192


def test_architecture_lookup():
    assert get_architecture({"architectures": ["MistralForCausalLM"], "model_type": "mistral"}).name == "llama"
    assert get_architecture({"model_type": "qwen3"}).name == "qwen3"
    assert get_architecture({"architectures": ["Gemma3ForConditionalGeneration"],
                             "text_config": {"model_type": "gemma3_text"}}).name == "gemma3"
    assert get_architecture_by_gguf("gemma2").name == "gemma2"
    with pytest.raises(UnsupportedArchitectureError) as e:
        get_architecture({"architectures": ["MixtralForCausalLM"], "model_type": "mixtral"})
    msg = str(e.value)
    assert "\n" not in msg and "MixtralForCausalLM" in msg and all(s in msg for s in SUPPORTED)
    with pytest.raises(UnsupportedArchitectureError, match="phi3.*supported: llama, qwen2"):
        get_architecture_by_gguf("phi3")


def test_smollm2_config_from_its_gguf():
    p = smollm2_gguf_path()
    need(p is not None, "SmolLM2 GGUF (bash scripts/test.sh fetches it)")
    reader = gguf.GGUFReader(p)
    meta = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    a = get_architecture_by_gguf(meta["general.architecture"])
    cfg = a.hparams_from_gguf(meta, {t.name: tuple(reversed(t.shape.tolist())) for t in reader.tensors})
    assert cfg["architectures"] == ["LlamaForCausalLM"]
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"],
            cfg["num_key_value_heads"], cfg["head_dim"], cfg["vocab_size"]) == (576, 30, 9, 3, 64, 49152)
    assert cfg["rope_theta"] == 100000.0 and cfg["tie_word_embeddings"] is True
    assert cfg["intermediate_size"] == 1536 and cfg["max_position_embeddings"] == 8192
    assert abs(cfg["rms_norm_eps"] - 1e-5) < 1e-10
    assert (cfg["bos_token_id"], cfg["eos_token_id"]) == (1, 2)
    # and back: the same llama.* keys llama.cpp's converter wrote
    kv = a.hparams_to_gguf(cfg)
    for k, v in kv.items():
        if k in meta:
            assert meta[k] == pytest.approx(v), k
