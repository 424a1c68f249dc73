"""mlxquant imatrix without llama.cpp's tools: the accumulator, the two file formats, the statistics
on the float base model from every source format, and bad input (one-line errors, nothing written).
The comparison with llama-imatrix itself is in test_imatrix_llama.py."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from mlxquant.calib import ImatrixError, ImatrixStats, imatrix
from mlxquant.calib.stats import StatsError
from mlxquant.errors import FormatError, OutputExistsError, UnsafeOutputError
from mlxquant.formats.imatrix import read_imatrix
from mlxquant.formats.imatrix import ImatrixData, read_imatrix_data
from mlxquant.formats.imatrix_write import entries_from, write_imatrix

LLAMA_KEYS = ("general.type", "imatrix.datasets", "imatrix.chunk_count", "imatrix.chunk_size")


def _rows(seed: int, n: int, d: int = 48) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, d)) * rng.uniform(0.01, 50, d)).astype(np.float32)


def test_stats_sum_in_llamas_order_and_merge():
    xs = [_rows(i, n) for i, n in enumerate((17, 5, 40))]
    s = ImatrixStats(chunk_size=8)
    acc = np.zeros(48, np.float32)
    for x in xs:
        s.add(("a", "b"), x)
        for r in x:  # llama-imatrix: acc[j] += x[j] * x[j], row after row, in float32
            acc = (acc + r * r).astype(np.float32)
    for name in ("a", "b"):
        assert np.array_equal(s.tensors[name].in_sum2, acc)
        assert s.tensors[name].count == 62
    assert s.chunk_count == 62 // 8
    # two processes over disjoint rows add up to one over all rows
    p, q = ImatrixStats(8, ["x.txt"]), ImatrixStats(8, ["y.txt"])
    p.add("a", xs[0])
    q.add("a", xs[1])
    q.add("a", xs[2])
    p.merge(q)
    assert p.tensors["a"].count == 62 and p.datasets == ["x.txt", "y.txt"]
    np.testing.assert_allclose(p.tensors["a"].in_sum2, acc, rtol=1e-5)
    np.testing.assert_allclose(p.importance("a"), acc / 62, rtol=1e-5)


def test_stats_refuse_bad_activations():
    s = ImatrixStats(8)
    s.add("a", _rows(0, 4))
    with pytest.raises(StatsError, match="columns"):
        s.add("a", _rows(0, 4, d=32))
    with pytest.raises(StatsError, match="2-D"):
        s.add("a", np.zeros(48, np.float32))
    bad = _rows(1, 3)
    bad[1, 2] = np.inf
    with pytest.raises(StatsError, match="non-finite"):
        s.add("b", bad)
    with pytest.raises(StatsError, match="chunks"):
        s.merge(ImatrixStats(16))


def _data() -> ImatrixData:
    rng = np.random.default_rng(3)
    stats = [(f"blk.{i}.ffn_down.weight", rng.uniform(0, 9, 64).astype(np.float32), 300 + i) for i in range(3)]
    return ImatrixData(entries_from(stats), ("calib.txt",), 2, 128)


def test_write_both_formats(tmp_path):
    d = _data()
    g = write_imatrix(tmp_path / "m.gguf", d)
    back = read_imatrix_data(g)
    assert list(back.metadata)[:4] == list(LLAMA_KEYS)  # llama-imatrix's keys, in its order
    assert "general.architecture" not in back.metadata
    assert {k for k in back.metadata if not k.startswith("GGUF.")} - set(LLAMA_KEYS) == {"mlxquant.version"}
    assert back.datasets == ("calib.txt",) and back.chunk_count == 2 and back.chunk_size == 128
    for name, e in d.entries.items():
        assert np.array_equal(back.entries[name].in_sum2, e.in_sum2)
        assert np.array_equal(back.entries[name].counts, e.counts.astype(np.float32))
    dat = write_imatrix(tmp_path / "m.dat", d)
    imp_g, imp_d = read_imatrix(g), read_imatrix(dat)
    assert sorted(imp_g) == sorted(imp_d) == sorted(d.entries)
    for name in imp_g:
        np.testing.assert_allclose(imp_d[name], imp_g[name], rtol=2e-6)
    raw = dat.read_bytes()
    assert raw.endswith(b"calib.txt") and int.from_bytes(raw[-17:-13], "little") == 2  # chunk count


def test_statistics_on_the_float_model(shakespeare, calib_file, tmp_path):
    import mlxquant

    assert mlxquant.imatrix is imatrix
    r = imatrix(shakespeare, calib_file, tmp_path / "im.gguf", ctx=64, chunks=3)
    s = r.stats
    assert r.chunks == 3 and r.tokens == 192 and len(r.ppl_per_chunk) == 3 and r.ppl > 1
    kinds = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
    assert sorted(s.tensors) == sorted(f"blk.{i}.{k}.weight" for i in range(6) for k in kinds)
    assert all(t.count == 192 for t in s.tensors.values())
    for i in range(6):  # tensors that read the same input share its statistics
        q = s.tensors[f"blk.{i}.attn_q.weight"].in_sum2
        assert np.array_equal(q, s.tensors[f"blk.{i}.attn_v.weight"].in_sum2)
        assert np.array_equal(s.tensors[f"blk.{i}.ffn_gate.weight"].in_sum2,
                              s.tensors[f"blk.{i}.ffn_up.weight"].in_sum2)
        assert s.tensors[f"blk.{i}.ffn_down.weight"].in_sum2.shape == (768,)
    back = read_imatrix_data(tmp_path / "im.gguf")
    assert back.chunk_count == 3 and back.chunk_size == 64 and back.datasets == (str(calib_file),)
    # --process-output on a tied model: the output matmul reads token_embd.weight, never collected
    r2 = imatrix(shakespeare, calib_file, None, ctx=64, chunks=3, process_output=True)
    assert sorted(r2.stats.tensors) == sorted(s.tensors)


@pytest.mark.parametrize("threads", [2, 3])
def test_chunks_side_by_side_give_the_same_bits(shakespeare, calib_file, monkeypatch, threads):
    """Chunks run on threads of their own: with the BLAS thread count pinned, the sums, counts and
    perplexities equal one thread's bit for bit, whatever thread ran which chunk (5 chunks: the
    workers finish out of order)."""
    monkeypatch.setenv("MLXQUANT_BLAS_THREADS", "1")
    one = imatrix(shakespeare, calib_file, ctx=32, chunks=5, threads=1)
    many = imatrix(shakespeare, calib_file, ctx=32, chunks=5, threads=threads)
    assert many.ppl_per_chunk == one.ppl_per_chunk and many.chunks == 5
    assert sorted(many.stats.tensors) == sorted(one.stats.tensors)
    for name, t in one.stats.tensors.items():
        assert many.stats.tensors[name].count == t.count
        assert np.array_equal(many.stats.tensors[name].in_sum2, t.in_sum2), name
    with pytest.raises(ImatrixError, match="threads"):
        imatrix(shakespeare, calib_file, ctx=32, chunks=2, threads=0)


def test_gguf_source_gives_the_same_names_and_sums(shakespeare, calib_file, tmp_path):
    from mlxquant.testing.f32_gguf import shakespeare_f32_gguf

    g = shakespeare_f32_gguf(tmp_path / "f32.gguf")
    a = imatrix(shakespeare, calib_file, ctx=64, chunks=2).stats
    b = imatrix(g, calib_file, ctx=64, chunks=2).stats
    assert sorted(a.tensors) == sorted(b.tensors)
    for name, t in a.tensors.items():
        np.testing.assert_allclose(b.tensors[name].in_sum2, t.in_sum2, rtol=1e-4, atol=1e-6 * t.in_sum2.max())


def test_bad_input_writes_nothing(shakespeare, calib_file, tmp_path):
    out = tmp_path / "im.gguf"
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    short = tmp_path / "short.txt"
    short.write_text("To be, or not to be, that is the question.")
    with pytest.raises(ImatrixError, match="empty"):
        imatrix(shakespeare, empty, out)
    with pytest.raises(ImatrixError, match="two chunks"):
        imatrix(shakespeare, short, out, ctx=64)
    with pytest.raises(ImatrixError, match="at least 16"):
        imatrix(shakespeare, calib_file, out, ctx=8)
    with pytest.raises(ImatrixError, match="backend"):
        imatrix(shakespeare, calib_file, out, backend="cuda")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + b"\x00" * 20)
    with pytest.raises(FormatError):
        imatrix(junk, calib_file, out, ctx=64)
    assert {p.name for p in tmp_path.iterdir()} == {"empty.txt", "short.txt", "junk.gguf"}
    # an existing output: refused without --force, replaced with it when mlxquant wrote it
    imatrix(shakespeare, calib_file, out, ctx=64, chunks=2)
    before = out.read_bytes()
    with pytest.raises(OutputExistsError):
        imatrix(shakespeare, calib_file, out, ctx=64, chunks=2)
    imatrix(shakespeare, calib_file, out, ctx=64, chunks=3, force=True)
    assert out.read_bytes() != before
    with pytest.raises(UnsafeOutputError):  # the text is a source
        imatrix(shakespeare, calib_file, calib_file, ctx=64, force=True)
    dat = tmp_path / "im.dat"
    dat.write_bytes(b"not ours")
    with pytest.raises(UnsafeOutputError):  # a .dat carries no provenance: never replaced
        imatrix(shakespeare, calib_file, dat, ctx=64, force=True)
    assert dat.read_bytes() == b"not ours"


def test_cli(shakespeare, calib_file, tmp_path):
    out = tmp_path / "im.dat"
    cmd = [sys.executable, "-m", "mlxquant", "imatrix", str(shakespeare), "--text", str(calib_file),
           "-o", str(out), "--ctx", "64", "--chunks", "2", "--json"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["format"] == "dat" and rep["chunks"] == 2 and rep["tensors"] == 42
    assert len(read_imatrix(out)) == 42
    r = subprocess.run(cmd, capture_output=True, text=True)  # exists: one line, status 1
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0 and "already exists" in r.stderr
    short = tmp_path / "short.txt"
    short.write_text("A few words.")
    r = subprocess.run(cmd[:6] + [str(short), "-o", str(tmp_path / "x.gguf")], capture_output=True, text=True)
    assert r.returncode == 1 and "two chunks" in r.stderr and r.stderr.strip().count("\n") == 0
    assert not (tmp_path / "x.gguf").exists()
