"""ONNX export (mlxquant.onnx_export): onnxruntime runs the exported decoder like mlxquant's NumPy
runtime runs the source, and onnxruntime-genai generates the same greedy tokens.

The reference for a quantized export is the runtime on the *same* quantized weights: every linear
is rebuilt here from the ONNX initializers (nibbles unpacked and dequantized by this file's own
code, following onnxruntime's MatMulNBits / DequantizeLinear spec), so "the export adds no error"
is ``KLD(source, onnx) == KLD(source, reference)`` and ``KLD(reference, onnx) ~ 0``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import need

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import helper, numpy_helper  # noqa: E402

from mlxquant.errors import (FormatError, OptionError, OutputExistsError,  # noqa: E402
                             UnsafeOutputError, UnsupportedArchitectureError)
from mlxquant.eval.corpus import corpus_text  # noqa: E402
from mlxquant.eval.metrics import log_softmax  # noqa: E402
from mlxquant.onnx_export import api as onnx_api  # noqa: E402
from mlxquant.onnx_export import export_onnx  # noqa: E402
from mlxquant.runtime import generate_tokens, load_model  # noqa: E402
from mlxquant.runtime.numpy_model import NumpyModel  # noqa: E402
from mlxquant.runtime.spec import model_spec  # noqa: E402
from mlxquant.runtime.weights import Weights  # noqa: E402

N_TOKENS = 300
N_SMOL = 128  # SmolLM2 forward passes are ~20x the tiny model's
F32 = np.float32
NIBBLES = np.stack([np.arange(256) & 15, np.arange(256) >> 4], axis=1).astype(F32)  # (256, 2)


def kld(ref: np.ndarray, other: np.ndarray) -> float:
    a, b = log_softmax(ref), log_softmax(other)
    return float((np.exp(a) * (a - b)).sum(-1).mean())


# -- running the export ---------------------------------------------------------------------------
class OnnxModel:
    def __init__(self, folder: Path, exact_int8: bool = False):
        self.folder = folder
        so = ort.SessionOptions()
        if exact_int8:  # onnxruntime fuses DequantizeLinear + MatMul into an 8-bit MatMulNBits
            # that quantizes the activations to int8 unless told otherwise (its default level 4)
            so.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "0")
        self.sess = ort.InferenceSession(str(folder / "model.onnx"), so, providers=["CPUExecutionProvider"])
        cfg = json.loads((folder / "genai_config.json").read_text())["model"]["decoder"]
        self.layers, self.kv, self.d = cfg["num_hidden_layers"], cfg["num_key_value_heads"], cfg["head_size"]

    def empty_cache(self) -> dict[str, np.ndarray]:
        z = np.zeros((1, self.kv, 0, self.d), F32)
        return {f"past_key_values.{i}.{p}": z for i in range(self.layers) for p in ("key", "value")}

    def run(self, ids, past: dict[str, np.ndarray] | None = None) -> tuple[np.ndarray, dict]:
        past = past if past is not None else self.empty_cache()
        p0 = past["past_key_values.0.key"].shape[2]
        ids = np.asarray(ids, np.int64).reshape(1, -1)
        feeds = {"input_ids": ids, "attention_mask": np.ones((1, p0 + ids.shape[1]), np.int64),
                 "position_ids": np.arange(p0, p0 + ids.shape[1], dtype=np.int64)[None], **past}
        names = [o.name for o in self.sess.get_outputs()]
        outs = dict(zip(names, self.sess.run(names, feeds)))
        present = {k.replace("present.", "past_key_values."): v for k, v in outs.items() if k.startswith("present.")}
        return outs["logits"][0], present


def onnx_weights(folder: Path) -> dict[str, np.ndarray]:
    """The float32 values of every matrix in ``model.onnx`` by HF name, decoded by this test."""
    m = onnx.load(str(folder / "model.onnx"))
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    alias = {n.output[0]: n.input[0] for n in m.graph.node if n.op_type == "Cast" and n.input[0] in inits}
    out = {"model.embed_tokens.weight": inits["model.embed_tokens.weight"].astype(F32)}

    def hf(init_name: str) -> str:
        base = init_name.rsplit(".", 1)[0]
        return "lm_head.weight" if base == "lm_head" else base + ".weight"

    dq = {n.output[0]: n for n in m.graph.node if n.op_type == "DequantizeLinear"}
    for n in m.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if n.op_type == "MatMulNBits":
            b, s = inits[n.input[1]], inits[n.input[2]]
            N, K, bs = attrs["N"], attrs["K"], attrs["block_size"]
            kb = -(-K // bs)
            assert b.shape == (N, kb, bs // 2) and s.shape == (N, kb) and attrs["bits"] == 4
            # byte -> (low nibble, high nibble): weight 2i is the low nibble of byte i
            w = NIBBLES[b.reshape(N, -1)].reshape(N, kb, bs)
            if len(n.input) > 3:
                z = inits[n.input[3]]
                if z.dtype == np.uint8:
                    z = NIBBLES[z].reshape(N, -1)[:, :kb]
            else:
                z = np.full((N, kb), 8, F32)
            w -= z.astype(F32)[..., None]
            w *= s[..., None]
            out[hf(n.input[1])] = w.reshape(N, -1)[:, :K]
        elif n.op_type == "MatMul" and n.input[1] in dq:
            d = dq[n.input[1]]
            q, s = inits[d.input[0]], inits[d.input[1]]
            bs = {a.name: helper.get_attribute_value(a) for a in d.attribute}["block_size"]
            out[hf(d.input[0])] = (q.astype(F32) * np.repeat(s, bs, axis=0)[:q.shape[0]]).T
        elif n.op_type == "MatMul" and alias.get(n.input[1], n.input[1]) in inits:
            name = alias.get(n.input[1], n.input[1])
            out[hf(name)] = inits[name].astype(F32).T
    return out


def reference_model(src_model, values: dict[str, np.ndarray]) -> NumpyModel:
    """The NumPy runtime on the source model with its matrices replaced by ``values``."""
    w = src_model.weights
    names = set(w.names()) | set(values)
    loaders = {n: ((lambda n=n: values[n]) if n in values else (lambda n=n: w.get(n)), 1) for n in names}
    ref = Weights(w.path, w.format, w.config, w.arch, loaders, w.metadata, 0, 0)
    return NumpyModel(ref, model_spec(w.arch.name, w.config, False), tokenizer=src_model.tokenizer)


def held_out_ids(model, n: int = N_TOKENS) -> np.ndarray:
    text = corpus_text()
    need(text is not None, "Shakespeare corpus (scripts/fetch_data.sh)")
    start = text.index("ACT I")
    ids = model.tokenizer.encode(text[start:start + 8 * n])[:n]
    assert len(ids) == n
    return np.asarray(ids)


def assert_no_added_error(src_model, folder: Path, ids: np.ndarray, exact_int8: bool = False,
                          ref_model: NumpyModel | None = None) -> tuple[float, float]:
    """KLD(source, onnx) equals KLD(source, same weights in the runtime); returns both."""
    src = src_model.forward(ids)
    ours = OnnxModel(folder, exact_int8).run(ids)[0]
    ref_model = ref_model or reference_model(src_model, onnx_weights(folder))
    ref = ref_model.forward(ids)
    k_ref, k_onnx, k_same = kld(src, ref), kld(src, ours), kld(ref, ours)
    assert k_same <= 2e-5, f"onnxruntime vs the runtime on the same weights: KLD {k_same:.2e}"
    assert abs(k_onnx - k_ref) <= max(1e-4, 0.01 * k_ref), (k_onnx, k_ref)
    return k_onnx, k_ref


# -- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shakes():
    from mlxquant.testing.inputs import shakespeare_model_dir

    d = shakespeare_model_dir()
    need(d is not None, "tests/data/tiny-shakespeare-llama")
    model = load_model(d, backend="numpy")
    return d, model, held_out_ids(model)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture(scope="module")
def smol(work):
    """SmolLM2: its Q4_1 GGUF, the runtime on it, the int4 export of the GGUF and the runtime on
    the export's weights."""
    from mlxquant.testing.inputs import smollm2_gguf_path

    gguf = smollm2_gguf_path()
    need(gguf is not None, "SmolLM2 GGUF (bash scripts/test.sh fetches it)")
    model = load_model(gguf, backend="numpy")
    out = work / "smol-gguf-int4"
    report = export_onnx(gguf, out, "int4")
    return gguf, model, out, report, held_out_ids(model, N_SMOL), reference_model(model, onnx_weights(out))


# -- float ----------------------------------------------------------------------------------------
def test_f32_export_matches_the_runtime(shakes, work):
    src, model, ids = shakes
    out = work / "shakes-f32"
    report = export_onnx(src, out, "f32")
    assert report.to == "onnx" and report.types == {"F32": report.tensors}
    logits = OnnxModel(out).run(ids)[0]
    ref = model.forward(ids)
    assert kld(ref, logits) <= 1e-4
    assert np.array_equal(ref.argmax(-1), logits.argmax(-1))
    files = set(json.loads((out / "mlxquant.json").read_text())["output"]["files"])
    assert files == {p.name for p in out.iterdir()}
    assert {"model.onnx", "genai_config.json", "tokenizer.json", "tokenizer_config.json"} <= files


# -- quantized: the export adds no error of its own -----------------------------------------------
@pytest.mark.parametrize("outtype,block,symmetric", [("int4", None, False), ("int4", 64, True),
                                                     ("int8", None, False), ("f16", None, False)])
def test_quantized_export_adds_no_error(shakes, work, outtype, block, symmetric):
    src, model, ids = shakes
    out = work / f"shakes-{outtype}-{block}-{symmetric}"
    report = export_onnx(src, out, outtype, block_size=block, symmetric=symmetric)
    k_onnx, k_ref = assert_no_added_error(model, out, ids, exact_int8=outtype == "int8")
    assert k_ref > (1e-8 if outtype == "f16" else 1e-5)  # the weights did change
    linears = [d for d in report.details if d["name"].endswith("proj.weight") or d["name"] == "lm_head.weight"]
    assert len(linears) == 6 * 7 + 1
    if outtype != "f16":
        bs = block or 32
        want = f"{outtype}/g{bs}" + ("" if symmetric or outtype == "int8" else "+zp")
        assert {d["type"] for d in linears} == {want}
        assert all(d["status"] == "quantized" and d["max_abs_error"] > 0 for d in linears)


def test_smollm2_gguf_int4_requantizes_q4_1(smol):
    gguf, model, out, report, ids, ref = smol
    linears = {d["name"]: d for d in report.details if d["type"].startswith("int4")}
    assert len(linears) == 30 * 7 + 1
    # Q4_1's zero points -m/d are not integers: requantized per block, the error reported; the
    # tied output matrix is Q8_0 in this file
    lm = linears.pop("lm_head.weight")
    assert lm["source_type"] == "Q8_0" and lm["status"] == "requantized"
    assert all(d["source_type"] == "Q4_1" and d["status"] == "requantized" and d["max_abs_error"] > 0
               and "not carried over: zero points" in d["note"] for d in linears.values())
    assert_no_added_error(model, out, ids, ref_model=ref)


def test_smollm2_gguf_float_zero_points_keep_the_codes(smol, work):
    gguf, model, _, _, ids, _ = smol
    out = work / "smol-gguf-int4-fzp"
    report = export_onnx(gguf, out, "int4", float_zero_points=True)
    linears = [d for d in report.details if d["name"].endswith("proj.weight")]
    assert len(linears) == 30 * 7
    assert all(d["status"] == "codes kept" and d["type"] == "int4/g32+fzp" for d in linears)
    assert max(d["max_abs_error"] for d in linears) < 1e-5  # one rounding of -m/d
    assert_no_added_error(model, out, ids[:64])


def test_smollm2_hf_int4_block128(smol, work):
    from mlxquant.convert import convert

    gguf, _, _, _, ids, _ = smol
    hf = work / "smol-hf"
    convert(gguf, hf, to="hf", outtype="F16")
    model = load_model(hf, backend="numpy")
    out = work / "smol-hf-int4"
    report = export_onnx(hf, out, "int4", block_size=128)  # 576 columns: a padded last block
    assert {d["type"] for d in report.details if d["name"].endswith("q_proj.weight")} == {"int4/g128+zp"}
    assert_no_added_error(model, out, ids[:64])


def test_kv_cache_decode_equals_one_pass(smol):
    _, _, out, _, ids, _ = smol
    m = OnnxModel(out)
    full = m.run(ids[:48])[0]
    logits, past = m.run(ids[:40])
    steps = [logits]
    for t in ids[40:48]:
        step, past = m.run([t], past)
        steps.append(step)
    assert past["past_key_values.0.key"].shape[2] == 48
    np.testing.assert_allclose(np.concatenate(steps), full, rtol=0, atol=2e-3)
    assert np.array_equal(np.concatenate(steps).argmax(-1), full.argmax(-1))


def test_genai_generates_the_runtime_greedy_tokens(smol):
    og = pytest.importorskip("onnxruntime_genai")
    _, model, out, _, ids, ref = smol
    prompt = [int(t) for t in ids[:24]]
    mine = generate_tokens(ref, prompt, max_tokens=16, stop_at_eos=False).tokens
    gm = og.Model(str(out))
    params = og.GeneratorParams(gm)
    params.set_search_options(max_length=len(prompt) + 16, do_sample=False)
    gen = og.Generator(gm, params)
    gen.append_tokens(prompt)
    theirs = []
    while not gen.is_done():
        gen.generate_next_token()
        theirs.append(int(gen.get_next_tokens()[0]))
    assert theirs == mine
    text = "To be, or not to be, that is the question"  # genai's tokenizer reads our files alike
    assert list(og.Tokenizer(gm).encode(text)) == model.tokenizer.encode(text)


# -- exact carry-over -----------------------------------------------------------------------------
def test_q4_0_codes_and_scales_carry_over_byte_exact(shakes, work):
    from mlxquant.convert import convert
    from mlxquant.formats.gguf_read import GGUFModel
    from mlxquant.models.llama import unpermute_qk

    src, _, ids = shakes
    gguf = work / "shakes-q4_0.gguf"
    convert(src, gguf, outtype="Q4_0")
    out = work / "shakes-q4_0-int4"
    report = export_onnx(gguf, out, "int4")
    m = onnx.load(str(out / "model.onnx"))
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    nodes = {n.input[1]: n for n in m.graph.node if n.op_type == "MatMulNBits"}
    cfg = json.loads((src / "config.json").read_text())
    g = GGUFModel(gguf)
    checked = 0
    for d in report.details:
        if not d["name"].endswith("proj.weight"):
            continue
        assert d["status"] == "exact" and d["type"] == "int4/g32" and d["max_abs_error"] == 0
        layer, role = d["name"].split(".")[2], d["name"].split(".")[-2]
        gname = f"blk.{layer}." + {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v",
                                   "o_proj": "attn_output", "gate_proj": "ffn_gate",
                                   "up_proj": "ffn_up", "down_proj": "ffn_down"}[role] + ".weight"
        assert g.info(gname).qtype.name == "Q4_0"
        raw = g.read(gname)                                     # (rows, nb * 18)
        blocks = raw.reshape(raw.shape[0], -1, 18)
        d16 = blocks[..., :2].copy().view("<f2")[..., 0]        # (rows, nb)
        qs = blocks[..., 2:]                                    # weight j low nibble, j+16 high
        codes = np.concatenate([qs & 15, qs >> 4], axis=-1).reshape(raw.shape[0], -1)
        if role in ("q_proj", "k_proj"):
            heads = cfg["num_attention_heads"] if role == "q_proj" else cfg["num_key_value_heads"]
            codes, d16 = unpermute_qk(codes, heads), unpermute_qk(d16, heads)
        base = d["name"].rsplit(".", 1)[0]
        node = nodes[base + ".qweight"]
        assert len(node.input) == 3  # no zero points: MatMulNBits' default 8 is Q4_0's
        b = inits[base + ".qweight"].reshape(raw.shape[0], -1)
        ours = np.stack([b & 15, b >> 4], axis=-1).reshape(raw.shape[0], -1)
        assert np.array_equal(ours, codes)
        assert np.array_equal(inits[base + ".scales"], d16.astype(F32))
        checked += 1
    assert checked == 6 * 7
    gm = load_model(gguf, backend="numpy")
    ours = OnnxModel(out).run(ids[:128])[0]
    # embedding/output tensors of this file are not Q4_0 (Q6_K-style rules): compare on same weights
    assert kld(reference_model(gm, onnx_weights(out)).forward(ids[:128]), ours) <= 2e-5


def test_q4_k_codes_and_q8_0_int8_carry_over(shakes, work):
    from mlxquant.convert import convert
    from mlxquant.formats.gguf_read import GGUFModel

    src, _, ids = shakes
    q4k = convert(src, work / "shakes-q4_k.gguf", outtype="Q4_K").out
    report = export_onnx(q4k, work / "shakes-q4_k-int4", "int4", float_zero_points=True)
    linears = [d for d in report.details if d["name"].endswith("proj.weight")]
    assert all(d["source_type"] == "Q4_K" and d["status"] == "codes kept" for d in linears)
    assert max(d["max_abs_error"] for d in linears) < 1e-6  # sub-block scale d*sc, min dmin*m
    q8 = convert(src, work / "shakes-q8_0.gguf", outtype="Q8_0").out
    out = work / "shakes-q8_0-int8"
    report = export_onnx(q8, out, "int8")
    linears = [d for d in report.details if d["name"].endswith("proj.weight")]
    assert all(d["status"] == "exact" and d["type"] == "int8/g32" and d["max_abs_error"] == 0 for d in linears)
    inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(out / "model.onnx")).graph.initializer}
    raw = GGUFModel(q8).read("blk.0.ffn_down.weight")
    blocks = raw.reshape(raw.shape[0], -1, 34)
    assert np.array_equal(inits["model.layers.0.mlp.down_proj.qweight"].T,
                          blocks[..., 2:].copy().view(np.int8).reshape(raw.shape[0], -1))
    assert np.array_equal(inits["model.layers.0.mlp.down_proj.scales"].T,
                          blocks[..., :2].copy().view("<f2")[..., 0].astype(F32))
    ref = reference_model(load_model(q8, backend="numpy"), onnx_weights(out))
    assert kld(ref.forward(ids[:128]), OnnxModel(out, exact_int8=True).run(ids[:128])[0]) <= 2e-5


def test_mlx_affine_source_keeps_its_codes(shakes, work):
    pytest.importorskip("mlx.core")
    from mlxquant.convert import convert

    src, _, ids = shakes
    mlx_dir = work / "shakes-mlx"
    convert(src, mlx_dir, to="mlx", q_bits=4, q_group_size=64)
    model = load_model(mlx_dir, backend="numpy")
    out = work / "shakes-mlx-int4"
    report = export_onnx(mlx_dir, out, "int4", float_zero_points=True)
    linears = [d for d in report.details if d["name"].endswith("proj.weight")]
    assert all(d["status"] in ("exact", "codes kept") and d["type"].startswith("int4/g64") for d in linears)
    assert max(d["max_abs_error"] for d in linears) < 1e-5
    assert kld(model.forward(ids[:128]), OnnxModel(out).run(ids[:128])[0]) <= 2e-5
    # without float zero points: mx.quantize mostly makes -bias/scale an integer (zero is on its
    # grid), so most tensors keep their codes with uint8 zero points; the rest are requantized
    report = export_onnx(mlx_dir, work / "shakes-mlx-int4-default", "int4")
    kinds = {(d["status"], d["type"]) for d in report.details if d["name"].endswith("proj.weight")}
    assert ("exact", "int4/g64+zp") in kinds
    assert kinds <= {("exact", "int4/g64+zp"), ("requantized", "int4/g32+zp")}


# -- files ----------------------------------------------------------------------------------------
def test_external_data_past_the_protobuf_limit(shakes, work, monkeypatch):
    src, model, ids = shakes
    monkeypatch.setattr(onnx_api, "PROTO_LIMIT", 0)
    out = work / "shakes-external"
    export_onnx(src, out, "f32")
    assert (out / "model.onnx.data").stat().st_size > (out / "model.onnx").stat().st_size
    assert "model.onnx.data" in json.loads((out / "mlxquant.json").read_text())["output"]["files"]
    assert kld(model.forward(ids[:64]), OnnxModel(out).run(ids[:64])[0]) <= 1e-4


def test_force_replaces_only_its_own_output(shakes, work):
    src, _, _ = shakes
    out = work / "shakes-force"
    export_onnx(src, out, "f16")
    with pytest.raises(OutputExistsError):
        export_onnx(src, out, "f16")
    export_onnx(src, out, "int8", force=True)
    assert "int8" in (out / "mlxquant.json").read_text()
    user = work / "user-folder"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    with pytest.raises(UnsafeOutputError):
        export_onnx(src, user, "f32", force=True)
    assert (user / "notes.txt").read_text() == "mine"


def _bad_arch(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg.update(architectures=["GPT2LMHeadModel"], model_type="gpt2")
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def _truncated(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    f = dst / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    return dst


@pytest.mark.parametrize("case,error", [
    ("outtype", OptionError), ("block", OptionError), ("block-f32", OptionError),
    ("arch", UnsupportedArchitectureError), ("truncated", FormatError), ("truncated-gguf", FormatError)])
def test_bad_input_one_line_nothing_left(shakes, tmp_path, case, error):
    src, _, _ = shakes
    kwargs = {"outtype": "int4"}
    if case == "outtype":
        kwargs["outtype"] = "int3"
    elif case == "block":
        kwargs["block_size"] = 48
    elif case == "block-f32":
        kwargs.update(outtype="f32", block_size=32)
    elif case == "arch":
        src = _bad_arch(src, tmp_path / "src")
    elif case == "truncated":
        src = _truncated(src, tmp_path / "src")
    elif case == "truncated-gguf":
        from mlxquant.convert import convert

        (tmp_path / "src").mkdir()
        gguf = convert(src, tmp_path / "src" / "m.gguf", outtype="Q4_0").out
        data = Path(gguf).read_bytes()
        src = tmp_path / "src" / "cut.gguf"
        src.write_bytes(data[: len(data) - 1000])
    out = tmp_path / "out"
    with pytest.raises(error) as e:
        export_onnx(src, out, **kwargs)
    assert "\n" not in str(e.value) and str(e.value)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == (["src"] if case.startswith(("arch", "truncated")) else [])


# -- every architecture the runtime runs ----------------------------------------------------------
@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3", "gemma2", "gemma3"])
def test_tiny_architectures(arch, shakes, tmp_path):
    """Random tiny models (qwen2 biases, qwen3/gemma3 q/k norms, gemma sandwich norms, 1 + w,
    soft-capping, GELU, sliding windows of 128 over a 160-token input, tied embeddings):
    f32 matches the runtime, int4 adds no error, and decoding on the cache matches one pass."""
    from mlxquant.formats.hf import HFTensorSpec, write_hf_folder
    from mlxquant.testing.f32_gguf import tiny_hf_model

    cfg, tensors = tiny_hf_model(arch, num_hidden_layers=2 if arch != "gemma3" else 6)
    cfg = {**cfg, "bos_token_id": 0, "eos_token_id": 0}
    tok_dir = shakes[0]
    files = {n: (tok_dir / n).read_bytes() for n in ("tokenizer.json", "tokenizer_config.json")}
    hf = write_hf_folder(tmp_path / "hf", cfg, [HFTensorSpec(n, a.shape) for n, a in tensors.items()],
                         lambda s: tensors[s.name], files=files)
    model = load_model(hf, backend="numpy", tokenizer=False)
    ids = np.random.default_rng(1).integers(0, cfg["vocab_size"], 160)
    export_onnx(hf, tmp_path / "f32", "f32")
    f32 = OnnxModel(tmp_path / "f32")
    ref = model.forward(ids)
    assert kld(ref, f32.run(ids)[0]) <= 1e-4
    logits, past = f32.run(ids[:150])
    steps = [logits]
    for t in ids[150:]:
        step, past = f32.run([t], past)
        steps.append(step)
    np.testing.assert_allclose(np.concatenate(steps), ref, rtol=0, atol=1e-3)
    export_onnx(hf, tmp_path / "int4", "int4")
    assert_no_added_error(model, tmp_path / "int4", ids)
