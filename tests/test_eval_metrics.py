"""Metrics with llama.cpp's definitions, windows, and one-line errors for bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from click.testing import CliRunner

from mlxquant.cli import main
from mlxquant.eval.evaluate import EvalError, make_windows
from mlxquant.eval.metrics import TokenScores, log_softmax, mean_and_uncertainty, median, percentile
from mlxquant.eval.sweep import SweepRow, is_monotonic, recommend
from mlxquant.sizes import parse_size


def test_kld_statistics_follow_their_definitions():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((300, 50)).astype(np.float32) * 3
    model = base + rng.standard_normal(base.shape).astype(np.float32) * 0.3
    targets = rng.integers(0, 50, 300)
    s = TokenScores()
    s.add(model[:100], targets[:100], log_softmax(base[:100]))  # two windows, as evaluate does
    s.add(model[100:], targets[100:], log_softmax(base[100:]))
    m = s.summary()

    lp, lb = log_softmax(model), log_softmax(base)
    pb = np.exp(lb)
    kld = (pb * (lb - lp)).sum(-1)  # KL(base || model), per position
    assert m.count == 300
    assert m.kld_mean == pytest.approx(kld.mean(), rel=1e-12)
    assert m.kld_uncertainty == pytest.approx(kld.std() / math.sqrt(299), rel=1e-9)
    assert m.kld_median == pytest.approx(np.median(kld), rel=1e-12)
    for q, got in ((0.90, m.kld_p90), (0.99, m.kld_p99), (0.999, m.kld_p999)):
        assert got == pytest.approx(np.percentile(kld, 100 * q), rel=1e-12)
    assert m.kld_max == pytest.approx(kld.max())
    nll = -lp[np.arange(300), targets]
    assert m.ppl == pytest.approx(math.exp(nll.mean()), rel=1e-12)
    assert m.ppl_base == pytest.approx(math.exp((-lb[np.arange(300), targets]).mean()), rel=1e-12)
    same = (model.argmax(-1) == base.argmax(-1)).mean()
    assert m.same_top == pytest.approx(same)
    dp = np.exp(-nll) - np.exp(lb[np.arange(300), targets])
    assert m.p_diff_mean == pytest.approx(dp.mean(), rel=1e-9)
    assert m.p_diff_max == pytest.approx(np.abs(dp).max())
    assert 0 < m.kld_mean and 0 < same < 1

    same_model = TokenScores()
    same_model.add(base, targets, log_softmax(base))
    z = same_model.summary()
    assert abs(z.kld_mean) < 1e-12 and z.same_top == 1.0 and z.ppl == pytest.approx(z.ppl_base)


def test_llama_cpp_helpers():
    v = np.sort(np.random.default_rng(1).random(11))
    assert percentile(v, 0.5) == median(v) == v[5]
    assert median(v[:10]) == pytest.approx(0.5 * (v[4] + v[5]))
    assert percentile(v, 0.0) == v[0] and percentile(v, 1.0) == v[-1]
    assert mean_and_uncertainty(np.ones(5)) == (1.0, 0.0)  # n <= 10: no uncertainty, as llama.cpp


def test_windows_and_bad_text():
    w = make_windows(list(range(10, 1010)), ctx=256, chunks=None, bos=1)
    assert len(w) == 3 and all(len(x) == 256 and x[0] == 1 for x in w)
    assert list(w[1][1:4]) == [267, 268, 269]
    assert len(make_windows(list(range(1000)), 256, 2, None)) == 2
    with pytest.raises(EvalError, match="fewer than one window of 512"):
        make_windows(list(range(300)), 512, None, None)


def test_sweep_helpers():
    assert parse_size("8GB") == 8 << 30 and parse_size("512MiB") == 512 << 20 and parse_size("100") == 100
    with pytest.raises(ValueError):
        parse_size("lots")
    rows = [SweepRow("Q8_0", file_bytes=800, bits_per_weight=8.5, kld_mean=0.001),
            SweepRow("Q4_K_M", file_bytes=450, bits_per_weight=4.9, kld_mean=0.01),
            SweepRow("Q2_K", file_bytes=300, bits_per_weight=3.0, kld_mean=0.05),
            SweepRow("mlx4", error="skipped")]
    assert is_monotonic(rows) is True
    assert recommend(rows, memory=1000, context=10, kv_per_token=10)["variant"] == "Q8_0"
    assert recommend(rows, memory=600, context=10, kv_per_token=10)["variant"] == "Q4_K_M"
    assert recommend(rows, memory=100, context=10, kv_per_token=10)["variant"] is None
    rows[1].kld_mean = 0.1
    assert is_monotonic(rows) is False


def test_cli_bad_input_is_one_line(tmp_path):
    """Too little text, another vocabulary, an unsupported architecture: one line, exit 1."""
    from mlxquant.formats.hf import HFTensorSpec, write_hf_folder
    from mlxquant.testing.f32_gguf import tiny_hf_model

    def folder(name, **over):
        cfg, t = tiny_hf_model("llama", **over)
        cfg["bos_token_id"] = 0
        from tokenizers import Tokenizer, models, pre_tokenizers
        tok = Tokenizer(models.WordLevel({f"w{i}": i for i in range(cfg["vocab_size"])}, unk_token="w0"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        write_hf_folder(tmp_path / name, cfg, [HFTensorSpec(n, a.shape) for n, a in t.items()],
                        lambda s: t[s.name], files={"tokenizer.json": tok.to_str()})
        return str(tmp_path / name)

    a = folder("a", num_hidden_layers=1)
    b = folder("b", num_hidden_layers=1, vocab_size=256)
    text = tmp_path / "t.txt"
    text.write_text(" ".join(f"w{i % 200}" for i in range(300)))
    runner = CliRunner()

    r = runner.invoke(main, ["eval", a, "--text", str(text), "--ctx", "512"])
    assert r.exit_code == 1 and "fewer than one window of 512" in r.output
    assert len(r.output.strip().splitlines()) == 1

    r = runner.invoke(main, ["eval", a, "--reference", b, "--text", str(text), "--ctx", "64"])
    assert r.exit_code == 1 and "vocabulary of 512 tokens" in r.output and "256" in r.output

    r = runner.invoke(main, ["eval", a, "--text", str(text), "--ctx", "64", "--json"])
    assert r.exit_code == 0, r.output
    import json

    rep = json.loads(r.stdout)
    assert rep["chunks"] == 4 and rep["scored_tokens"] == 4 * 31 and rep["metrics"]["ppl"] > 1

    cfg_path = tmp_path / "a" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["architectures"], cfg["model_type"] = ["GPT2LMHeadModel"], "gpt2"
    cfg_path.write_text(json.dumps(cfg))
    for cmd in (["eval", a, "--text", str(text)], ["generate", a, "-p", "w1 w2"], ["bench", a]):
        r = runner.invoke(main, cmd)
        assert r.exit_code == 1 and "unsupported architecture" in r.output, r.output
        assert len(r.output.strip().splitlines()) == 1
