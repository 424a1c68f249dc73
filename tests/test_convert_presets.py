"""HF and GGUF -> GGUF presets against llama.cpp itself.

The float base model (tiny-shakespeare-llama, hidden 256 so K-quants apply) is converted to an
F32 GGUF; llama.cpp runs it like mlx-lm runs the HF folder, and ``llama_model_quantize`` applied to
it is the reference for our direct HF -> preset conversion, for every preset issue 4 promises:
same tensor names, types and bytes, same metadata. SmolLM2 (hidden 576: rows that are not a
multiple of 256, so llama.cpp's fallback types) goes HF folder -> presets the same way, for the
presets whose fallbacks differ. With an importance matrix, ``llama_model_quantize`` takes none
from Python, so each tensor is compared with ggml's ``ggml_quantize_chunk`` given the same
importance vector.
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from mlxquant.convert import convert
from mlxquant.formats.gguf_read import GGUFModel
from mlxquant.formats.gguf_write import Metadata, TensorSpec, write_gguf
from mlxquant.formats.imatrix import read_imatrix
from mlxquant.models import PRESETS, preset_file_type
from mlxquant.testing.inputs import shakespeare_model_dir, smollm2_gguf_path
from conftest import need

PROVENANCE_KEYS = ("mlxquant.version", "mlxquant.source.files", "mlxquant.recipe", "mlxquant.tensors")

# Public domain: Hamlet, Act 3, Scene 1.
TEXT = ("To be, or not to be, that is the question: Whether 'tis nobler in the mind to suffer The "
        "slings and arrows of outrageous fortune, Or to take arms against a sea of troubles And by "
        "opposing end them. To die: to sleep; No more; and by a sleep to say we end The heart-ache "
        "and the thousand natural shocks That flesh is heir to.")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    d = shakespeare_model_dir()
    need(d is not None, "tiny-shakespeare-llama model")
    pytest.importorskip("llama_cpp")
    root = tmp_path_factory.mktemp("presets")
    convert(d, root / "f32.gguf", outtype="F32")
    return d, root


def llama_quantize(src, dst, preset: str, requantize: bool = False) -> None:
    import llama_cpp

    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype, p.nthread, p.allow_requantize = preset_file_type(preset), 2, requantize
    assert llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(p)) == 0


def assert_same_gguf(ref_path, ours_path) -> dict[str, int]:
    """Same tensor names, per-tensor types and shapes, byte-identical data, same metadata (keys,
    values and stored value types) except the ``mlxquant.*`` provenance keys. Returns the tensor
    count per type."""
    with GGUFModel(ref_path) as ref, GGUFModel(ours_path) as ours:
        r = {t.name: t for t in ref.tensors}
        o = {t.name: t for t in ours.tensors}
        assert sorted(r) == sorted(o)
        types = {n: (o[n].type, o[n].shape) for n in r}
        diff = {n: (types[n], (t.type, t.shape)) for n, t in r.items() if types[n] != (t.type, t.shape)}
        assert not diff, f"(ours, llama.cpp) types/shapes differ: {sorted(diff.items())[:8]}"
        for name, t in r.items():
            assert np.array_equal(ref.raw(name), ours.raw(name)), f"{name} ({t.type}) differs"
        # provenance (mlxquant.*) is the only difference allowed: ours records this conversion;
        # llama.cpp's copies whatever its source (our F32 GGUF) recorded
        assert {k for k in ours.metadata if k.startswith("mlxquant.")} == set(PROVENANCE_KEYS)

        def plain(d):
            return {k: v for k, v in d.items() if not k.startswith("mlxquant.")}

        assert plain(ours.metadata) == plain(ref.metadata)
        assert plain(ours.value_types) == plain(ref.value_types)
        counts: dict[str, int] = {}
        for t in r.values():
            counts[t.type] = counts.get(t.type, 0) + 1
        return counts


def test_f32_gguf_runs_in_llama_cpp_like_mlx_lm(base):
    import llama_cpp
    import mlx.core as mx
    from mlx_lm import load

    d, root = base
    llm = llama_cpp.Llama(model_path=str(root / "f32.gguf"), logits_all=True, n_ctx=256, type_k=0,
                          type_v=0, verbose=False)
    tokens = llm.tokenize(TEXT.encode(), add_bos=False)
    llm.eval(tokens)
    ref = np.array(llm.scores[: len(tokens)], dtype=np.float64)
    model, tok = load(str(d))
    assert tok.encode(TEXT) == tokens
    got = np.array(model(mx.array(tokens)[None])[0].astype(mx.float32), dtype=np.float64)

    def log_softmax(x):
        x = x - x.max(-1, keepdims=True)
        return x - np.log(np.exp(x).sum(-1, keepdims=True))

    p, q = log_softmax(got), log_softmax(ref)
    assert (np.exp(p) * (p - q)).sum(-1).mean() < 1e-4
    assert (got.argmax(-1) == ref.argmax(-1)).all()


@pytest.mark.parametrize("preset", PRESETS)
def test_hf_to_preset_matches_llama_quantize(base, preset):
    d, root = base
    ref, ours = root / f"ref-{preset}.gguf", root / f"ours-{preset}.gguf"
    llama_quantize(root / "f32.gguf", ref, preset)
    report = convert(d, ours, outtype=preset)
    assert report.outtype == preset and report.tensors == 56
    counts = assert_same_gguf(ref, ours)
    assert report.types == counts
    with GGUFModel(ours) as g:
        assert g.metadata["general.file_type"] == preset_file_type(preset)
        kinds = {(len(t.shape), t.type) for t in g.tensors}
    floats = preset in ("F32", "F16", "BF16")
    assert {t for n, t in kinds if n == 1} == {"F32"}  # norms stay F32
    assert all((t == preset) if floats else t not in ("F32", "F16", "BF16") for n, t in kinds if n == 2)
    ref.unlink(), ours.unlink()


# SmolLM2's 576-wide rows: Q4_K_M falls back to Q5_0 (Q6_K -> Q8_0 for the embedding and more-bits
# attn_v), Q3_K_M to Q4_0 with Q5_1 attn_v (Q5_K -> Q5_1), Q6_K to Q8_0 except the 1536-wide ffn_down.
SMOLLM2_PRESETS = {
    "Q4_K_M": {"blk.0.attn_q.weight": "Q5_0", "blk.0.ffn_down.weight": "Q6_K",
               "blk.1.ffn_down.weight": "Q6_K", "blk.4.ffn_down.weight": "Q4_K",
               "blk.0.attn_v.weight": "Q8_0", "blk.4.attn_v.weight": "Q5_0",
               "token_embd.weight": "Q8_0"},
    "Q3_K_M": {"blk.0.attn_q.weight": "Q4_0", "blk.0.attn_v.weight": "Q5_1",
               "blk.2.attn_v.weight": "Q5_0", "blk.0.attn_output.weight": "Q5_0",
               "blk.0.ffn_down.weight": "Q5_K", "blk.9.ffn_down.weight": "Q4_K",
               "token_embd.weight": "Q8_0"},
    "Q6_K": {"blk.0.attn_q.weight": "Q8_0", "blk.0.ffn_down.weight": "Q6_K",
             "token_embd.weight": "Q8_0"},
}


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    """SmolLM2's float32 weights: its GGUF -> HF folder (float32) -> F32 GGUF, our own pipeline;
    the presets then start from the HF folder (ours) and from the F32 GGUF (llama.cpp)."""
    src = smollm2_gguf_path()
    need(src is not None, "SmolLM2 GGUF (bash scripts/test.sh fetches it)")
    pytest.importorskip("llama_cpp")
    root = tmp_path_factory.mktemp("smollm2")
    convert(src, root / "hf", to="hf", outtype="F32")
    convert(root / "hf", root / "f32.gguf", outtype="F32")
    return root


@pytest.mark.parametrize("preset", list(SMOLLM2_PRESETS))
def test_smollm2_fallbacks_match_llama_quantize(smollm2, preset):
    ref, ours = smollm2 / f"ref-{preset}.gguf", smollm2 / f"ours-{preset}.gguf"
    llama_quantize(smollm2 / "f32.gguf", ref, preset)
    report = convert(smollm2 / "hf", ours, outtype=preset)
    assert report.tensors == 272
    assert_same_gguf(ref, ours)
    with GGUFModel(ours) as g:
        got = {n: g.info(n).qtype.name for n in SMOLLM2_PRESETS[preset]}
    assert got == SMOLLM2_PRESETS[preset]
    ref.unlink(), ours.unlink()


def test_gguf_requantize_matches_llama_quantize(tmp_path):
    src = smollm2_gguf_path()
    need(src is not None, "SmolLM2 GGUF (bash scripts/test.sh fetches it)")
    pytest.importorskip("llama_cpp")
    llama_quantize(src, tmp_path / "ref.gguf", "Q8_0", requantize=True)
    convert(src, tmp_path / "ours.gguf", outtype="Q8_0")
    assert_same_gguf(tmp_path / "ref.gguf", tmp_path / "ours.gguf")


def write_imatrix(path, f32_gguf) -> None:
    """An imatrix GGUF in llama-imatrix's layout, with made-up activation statistics."""
    rng = np.random.default_rng(7)
    md = Metadata()
    md.set("general.architecture", "llama")  # our writer needs one; llama.cpp ignores it
    md.set("general.type", "imatrix")
    md.set("imatrix.datasets", ["made-up.txt"])
    md.set("imatrix.chunk_count", 10)
    md.set("imatrix.chunk_size", 512)
    specs, data = [], []
    with GGUFModel(f32_gguf) as g:
        for t in g.tensors:
            if len(t.shape) == 2 and t.name != "token_embd.weight":
                cols = t.shape[1]
                sums = (rng.standard_normal(cols) ** 2 * np.exp(rng.standard_normal(cols)) * 5120)
                counts = np.array([[0.0 if t.name.startswith("blk.1.ffn_up") else 5120.0]])
                specs += [TensorSpec(f"{t.name}.in_sum2", "F32", (1, cols)),
                          TensorSpec(f"{t.name}.counts", "F32", (1, 1))]
                data += [sums.astype(np.float32)[None], counts.astype(np.float32)]
    write_gguf(path, md, specs, iter(data))


@pytest.mark.parametrize("preset", ["Q4_K_M", "IQ4_XS"])
def test_imatrix_matches_ggml_quantize_chunk(base, preset, oracle):
    d, root = base
    imatrix = root / "imatrix.gguf"
    if not imatrix.exists():
        write_imatrix(imatrix, root / "f32.gguf")
    weights = read_imatrix(imatrix)
    assert (weights["blk.1.ffn_up.weight"] == 1.0).all()  # count 0 -> importance 1
    out = root / f"imatrix-{preset}.gguf"
    convert(d, out, outtype=preset, imatrix=imatrix)
    with GGUFModel(root / "f32.gguf") as f32, GGUFModel(out) as ours:
        checked = 0
        for t in ours.tensors:
            if t.type in ("F32", "F16"):
                continue
            x = f32.tensor(t.name).reshape(-1, t.shape[-1])
            ref = oracle.quantize(x, t.type, weights.get(t.name))
            assert np.array_equal(ours.raw(t.name), ref), f"{t.name} ({t.type})"
            checked += t.name in weights
        assert checked >= 40


# presets quantized with an importance matrix by llama-quantize itself (the tool, which takes one):
# from both imatrix formats for three, from a GGUF imatrix for the 1-3 bit presets of issue 14
IMATRIX_PRESETS = [(p, f) for p in ("Q4_K_M", "IQ4_XS", "Q2_K_S") for f in ("gguf", "dat")] + [
    (p, "gguf") for p in ("IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XXS",
                          "IQ3_XS", "IQ3_S", "IQ3_M")]


@pytest.mark.parametrize("preset,fmt", IMATRIX_PRESETS)
def test_preset_with_imatrix_matches_llama_quantize_tool(base, preset, fmt, tmp_path):
    """``llama-quantize --imatrix FILE`` against ``convert(..., imatrix=FILE)``: the same tensor
    types and bytes, and the same metadata, ``quantize.imatrix.*`` keys included (file as given,
    dataset, entry and chunk counts), from a GGUF imatrix and from a legacy one."""
    from mlxquant.formats.imatrix import read_imatrix_data
    from mlxquant.formats.imatrix_write import write_imatrix as write_real
    from mlxquant.testing.llama_tools import have_tools, llama_quantize as quantize_tool

    need(have_tools(), "llama.cpp tools (bash scripts/build_llama_tools.sh)")
    d, root = base
    made_up = root / "imatrix.gguf"
    if not made_up.exists():
        write_imatrix(made_up, root / "f32.gguf")
    im = tmp_path / f"im.{fmt}"
    write_real(im, read_imatrix_data(made_up), fmt)
    ref, ours = tmp_path / "ref.gguf", tmp_path / "ours.gguf"
    quantize_tool(root / "f32.gguf", ref, preset, imatrix=im)
    convert(d, ours, outtype=preset, imatrix=im)
    assert_same_gguf(ref, ours)
    with GGUFModel(ours) as g:
        assert g.metadata["quantize.imatrix.file"] == str(im)
        assert g.metadata["quantize.imatrix.entries_count"] == 42
        assert g.metadata["quantize.imatrix.chunks_count"] == 10
        assert g.metadata["quantize.imatrix.dataset"] == "made-up.txt"


def test_parallel_writer_order_budget_and_errors(tmp_path):
    """write_gguf's worker threads: the same bytes as one after the other, never more float32
    bytes in flight than the largest tensor, and a failing tensor leaves nothing at the path."""
    import threading
    import time

    md = Metadata()
    md.set("general.architecture", "llama")
    shapes = [(64, 256)] * 6 + [(512, 256)] + [(32, 256)] * 9  # the big one alone, small ones paired
    specs = [TensorSpec(f"t{i}", "Q8_0", s) for i, s in enumerate(shapes)]
    largest = max(4 * r * c for r, c in shapes)
    lock, live, peak = threading.Lock(), [0], [0]

    def produce(spec):
        from mlxquant import quantize

        size = 4 * spec.shape[0] * spec.shape[1]
        with lock:
            live[0] += size
            peak[0] = max(peak[0], live[0])
        time.sleep(0.01)
        x = np.random.default_rng(int(spec.name[1:])).standard_normal(spec.shape).astype(np.float32)
        out = quantize(x, "Q8_0")
        with lock:
            live[0] -= size
        return out

    one = write_gguf(tmp_path / "one.gguf", md, specs, produce, workers=1)
    assert peak[0] == largest  # one at a time: the big tensor alone
    peak[0] = 0
    four = write_gguf(tmp_path / "four.gguf", md, specs, produce, workers=4)
    assert one.read_bytes() == four.read_bytes()
    assert 4 * 64 * 256 < peak[0] <= largest  # small tensors overlapped, within the budget

    def failing(spec):
        if spec.name == "t9":
            raise ValueError("tensor t9: boom")
        return produce(spec)

    with pytest.raises(ValueError, match="t9: boom"):
        write_gguf(tmp_path / "bad.gguf", md, specs, failing, workers=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["four.gguf", "one.gguf"]


def test_bulk_metadata_packing_is_gguf_py_bytes(tmp_path):
    """write_gguf packs flat arrays (vocabularies, merges, token types, scores) in bulk: the file
    must be byte for byte what gguf-py's own item-by-item packing writes."""
    from gguf import GGUFWriter

    from mlxquant.formats.gguf_check import ValueType as VT
    from mlxquant.formats.gguf_write import _fast_writer

    rng = np.random.default_rng(3)
    items = [
        ("tokenizer.ggml.tokens", ["<s>", "é", "🦙", "a b", ""] * 20, VT.STRING),
        ("tokenizer.ggml.scores", rng.standard_normal(100).tolist(), VT.FLOAT32),
        ("tokenizer.ggml.token_type", rng.integers(1, 7, 100).tolist(), VT.INT32),
        ("x.u8", list(range(100)), VT.UINT8), ("x.i64", [-(2 ** 40) + i for i in range(40)], VT.INT64),
        ("x.u64", [2 ** 63 + i for i in range(40)], VT.UINT64), ("x.f64", [0.1 * i for i in range(40)], VT.FLOAT64),
        ("x.bool", [True, False, True] * 10, VT.BOOL), ("x.short", [1, 2, 3], VT.INT32),
    ]
    files = []
    for make in (lambda: GGUFWriter(path=None, arch="llama"), lambda: _fast_writer(None, "llama")):
        w = make()
        for key, values, item in items:
            w.add_key_value(key, values, VT.ARRAY, sub_type=item)
        path = tmp_path / f"kv{len(files)}.gguf"
        w.write_header_to_file(path=path)
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        w.close()
        files.append(path.read_bytes())
    assert files[0] == files[1]
    with pytest.raises(OverflowError):
        _fast_writer(None, "llama")._pack_val([300] * 20, VT.ARRAY, True, VT.UINT8)
