"""mlxquant imatrix against llama.cpp's own tools, built from the same pinned source as the oracle
library (scripts/build_llama_tools.sh; mlxquant.testing.llama_tools):

- statistics: on the float base model and on SmolLM2 in F32, the same text, ctx and chunks, every
  tensor's ``in_sum2 / counts`` is within cosine 0.99999 and 1e-3 relative error (entries above
  1e-6 x the tensor's max) of llama-imatrix's, counts are equal, names and metadata the same;
  llama-imatrix runs its attention in float32 there (``llama_tools.FLOAT32_ATTENTION``), as
  mlxquant's runtime does: with its defaults (flash attention through float16) SmolLM2's errors
  reach 3.7e-3;
- ``llama-quantize --imatrix`` takes both of our formats;
- quantizing the float base model with our imatrix and with llama-imatrix's gives the same mean KLD
  on held-out text (within 2 % relative) for Q4_K_M and IQ4_XS.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from conftest import SHAKESPEARE_MISSING, SMOLLM2_MISSING, need
from mlxquant.calib import imatrix
from mlxquant.eval.corpus import HELD_OUT, corpus_text
from mlxquant.formats.imatrix import read_imatrix_data
from mlxquant.testing.inputs import shakespeare_model_dir, smollm2_gguf_path
from mlxquant.testing.llama_tools import have_tools, llama_imatrix, llama_quantize

log = logging.getLogger(__name__)
CALIB_PLAYS = ("julius_caesar_gut.txt", "coriolanus_gut.txt")  # none of HELD_OUT


@pytest.fixture(scope="module")
def tools():
    need(have_tools(), "llama.cpp tools (bash scripts/build_llama_tools.sh)")


@pytest.fixture(scope="module")
def calib_file(tmp_path_factory):
    text = corpus_text(CALIB_PLAYS)
    need(text is not None, "the Shakespeare corpus (scripts/fetch_data.sh)")
    assert not set(CALIB_PLAYS) & set(HELD_OUT)
    p = tmp_path_factory.mktemp("calib") / "calib.txt"
    p.write_text(text, encoding="utf-8")
    return p


@pytest.fixture(scope="module")
def shakespeare_f32(tmp_path_factory):
    need(shakespeare_model_dir() is not None, SHAKESPEARE_MISSING)
    from mlxquant.testing.f32_gguf import shakespeare_f32_gguf

    return shakespeare_f32_gguf(tmp_path_factory.mktemp("shk") / "f32.gguf")


def compare(ours, theirs) -> dict[str, float]:
    """Assert the acceptance bounds; returns the worst cosine and relative error."""
    a, b = read_imatrix_data(ours), read_imatrix_data(theirs)
    assert sorted(a.entries) == sorted(b.entries)
    for key in ("general.type", "imatrix.datasets", "imatrix.chunk_count", "imatrix.chunk_size"):
        assert a.metadata[key] == b.metadata[key], key
    worst_cos, worst_rel = 1.0, 0.0
    for name, e in a.entries.items():
        f = b.entries[name]
        assert np.array_equal(e.counts, f.counts), name
        x = (e.in_sum2 / e.counts[:, None]).astype(np.float64).ravel()
        y = (f.in_sum2 / f.counts[:, None]).astype(np.float64).ravel()
        cos = float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))
        big = y > 1e-6 * y.max()
        rel = float(np.max(np.abs(x[big] - y[big]) / y[big]))
        worst_cos, worst_rel = min(worst_cos, cos), max(worst_rel, rel)
        assert cos >= 0.99999 and rel <= 1e-3, (name, cos, rel)
    return {"cosine": worst_cos, "rel": worst_rel}


def test_same_statistics_as_llama_imatrix_float_model(tools, calib_file, shakespeare_f32, tmp_path):
    ours, theirs = tmp_path / "ours.gguf", tmp_path / "theirs.gguf"
    imatrix(shakespeare_f32, calib_file, ours, ctx=128, chunks=8)
    llama_imatrix(shakespeare_f32, calib_file, theirs, ctx=128, chunks=8)
    log.warning("float base model vs llama-imatrix: %s", compare(ours, theirs))
    # the HF folder (another source format) gives the same file: GGUF names whatever the source
    hf = tmp_path / "hf.gguf"
    imatrix(shakespeare_model_dir(), calib_file, hf, ctx=128, chunks=8)
    compare(hf, theirs)


def test_bos_replacement_as_llama_imatrix(tools, calib_file, shakespeare_f32, tmp_path):
    """A model whose tokenizer adds BOS: the text starts with it once, and every chunk's first
    token is replaced by BOS; with the flag set in the GGUF both tools must do the same (neither
    test model adds BOS as shipped: a copy of the float base model says it does)."""
    import json
    import shutil

    import mlxquant
    from mlxquant.runtime.backend import load_model

    folder = tmp_path / "bos-model"
    shutil.copytree(shakespeare_model_dir(), folder)
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**cfg, "add_bos_token": True}))
    bos = tmp_path / "bos.gguf"
    mlxquant.convert(folder, bos, outtype="F32")
    tok = load_model(bos, backend="numpy").tokenizer
    assert tok.encode("To be", add_special=True)[0] == tok.bos_token_id
    ours, theirs = tmp_path / "ours.gguf", tmp_path / "theirs.gguf"
    r = imatrix(bos, calib_file, ours, ctx=128, chunks=4)
    llama_imatrix(bos, calib_file, theirs, ctx=128, chunks=4)
    log.warning("float base model with BOS vs llama-imatrix: %s", compare(ours, theirs))
    # the rule changes the statistics: without BOS (the shipped flag) the sums differ
    plain = imatrix(shakespeare_f32, calib_file, None, ctx=128, chunks=4)
    name = "blk.0.attn_q.weight"
    assert not np.allclose(plain.stats.tensors[name].in_sum2, r.stats.tensors[name].in_sum2, rtol=1e-3)


def test_same_statistics_as_llama_imatrix_smollm2(tools, calib_file, tmp_path):
    need(smollm2_gguf_path() is not None, SMOLLM2_MISSING)
    from mlxquant.testing.f32_gguf import smollm2_f32_gguf

    f32 = smollm2_f32_gguf(tmp_path / "smollm2-f32.gguf")
    ours, theirs = tmp_path / "ours.gguf", tmp_path / "theirs.gguf"
    imatrix(f32, calib_file, ours, ctx=128, chunks=3)
    llama_imatrix(f32, calib_file, theirs, ctx=128, chunks=3)
    log.warning("SmolLM2 F32 vs llama-imatrix: %s", compare(ours, theirs))


@pytest.fixture(scope="module")
def imatrices(tools, calib_file, shakespeare_f32, tmp_path_factory):
    d = tmp_path_factory.mktemp("imatrices")
    imatrix(shakespeare_f32, calib_file, d / "ours.gguf", ctx=128, chunks=16)
    imatrix(shakespeare_f32, calib_file, d / "ours.dat", ctx=128, chunks=16)
    # what users run: llama-imatrix's defaults (flash attention, float16 KV cache)
    llama_imatrix(shakespeare_f32, calib_file, d / "theirs.gguf", ctx=128, chunks=16, float32_attention=False)
    return d


def test_llama_quantize_takes_both_formats(imatrices, shakespeare_f32, tmp_path):
    outs = {}
    for name in ("ours.gguf", "ours.dat", "theirs.gguf"):
        outs[name] = tmp_path / f"q-{name}.gguf"
        r = llama_quantize(shakespeare_f32, outs[name], "Q4_K_M", imatrices / name)
        assert "loaded 42 importance matrix entries" in r.stdout + r.stderr, name
        assert outs[name].stat().st_size > 0


@pytest.mark.parametrize("preset", ["Q4_K_M", "IQ4_XS"])
def test_quantized_with_our_imatrix_as_good_as_with_llamas(imatrices, shakespeare_f32, preset, tmp_path):
    from mlxquant.eval.evaluate import evaluate

    held_out = corpus_text(HELD_OUT)
    kld = {}
    for name in ("ours.gguf", "theirs.gguf", None):
        q = tmp_path / f"{preset}-{name}.gguf"
        llama_quantize(shakespeare_f32, q, preset, None if name is None else imatrices / name)
        r = evaluate(q, held_out, reference=shakespeare_f32, ctx=256, chunks=12, backend="llama.cpp")
        kld[name] = r.metrics.kld_mean
    log.warning("%s mean KLD on held-out text: ours %.6f, llama-imatrix %.6f, no imatrix %.6f",
                preset, kld["ours.gguf"], kld["theirs.gguf"], kld[None])
    assert abs(kld["ours.gguf"] - kld["theirs.gguf"]) <= 0.02 * kld["theirs.gguf"]


def test_process_output_on_an_untied_model(tools, calib_file, tmp_path):
    """--process-output collects output.weight (here: the float base model given its own copy of
    the embedding as an untied output matrix), as llama-imatrix --process-output does."""
    import json
    import shutil

    from safetensors.numpy import load_file, save_file

    from mlxquant.convert import convert

    src = shakespeare_model_dir()
    need(src is not None, SHAKESPEARE_MISSING)
    folder = tmp_path / "untied"
    folder.mkdir()
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(src / f, folder / f)
    cfg = json.loads((src / "config.json").read_text())
    cfg["tie_word_embeddings"] = False
    (folder / "config.json").write_text(json.dumps(cfg))
    t = load_file(str(src / "model.safetensors"))
    t["lm_head.weight"] = t["model.embed_tokens.weight"] * np.float32(1.5)
    save_file(t, str(folder / "model.safetensors"))
    f32 = tmp_path / "untied-f32.gguf"
    convert(folder, f32, outtype="F32")
    ours, theirs = tmp_path / "ours.gguf", tmp_path / "theirs.gguf"
    r = imatrix(f32, calib_file, ours, ctx=64, chunks=4, process_output=True)
    assert "output.weight" in r.stats.tensors and r.stats.tensors["output.weight"].count == 256
    llama_imatrix(f32, calib_file, theirs, ctx=64, chunks=4, extra=["--process-output"])
    compare(ours, theirs)
