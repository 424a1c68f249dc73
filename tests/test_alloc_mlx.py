"""Budget-driven mixed precision for MLX output (``convert --to mlx --target-bpw``): the folder
mlx-lm loads, its quantization block, the budget in mlx-lm's bits per weight, and the quality
against plain 4-bit g64 and mlx-lm's ``mixed_4_6`` at the same size, with mlx-lm computing logits."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from conftest import need
from mlxquant.cli import main
from mlxquant.convert import MLXOptions, convert
from mlxquant.errors import OptionError


def _mlx_lm():
    try:
        import mlx.core as mx
        import mlx_lm
    except ImportError:
        need(False, "mlx and mlx-lm")
    mx.set_default_device(mx.cpu)
    return mlx_lm


def _bpw(folder) -> float:
    """mlx-lm's own bits per weight of a folder (what ``mlx_lm convert`` prints)."""
    from mlx_lm.utils import compute_bits_per_weight

    model, _ = _mlx_lm().load(str(folder))
    return float(compute_bits_per_weight(model))


@pytest.fixture(scope="module")
def folders(shakespeare, calib_file, tmp_path_factory):
    """Plain 4-bit g64, mixed_4_6 and the allocation at plain 4-bit's bpw (calibrated on a
    training play)."""
    _mlx_lm()
    d = tmp_path_factory.mktemp("mlxalloc")
    convert(shakespeare, d / "q4", MLXOptions(q_bits=4, q_group_size=64))
    convert(shakespeare, d / "m46", MLXOptions(quant_predicate="mixed_4_6"))
    bpw = {"q4": _bpw(d / "q4"), "m46": _bpw(d / "m46")}
    target = min(bpw.values())
    convert(shakespeare, d / "alloc", MLXOptions(target_bpw=target, calib_text=calib_file))
    bpw["alloc"] = _bpw(d / "alloc")
    return d, bpw, target


def test_allocation_beats_q4_and_mixed_4_6_under_mlx_lm(shakespeare, folders):
    from mlxquant.eval.corpus import HELD_OUT, corpus_text
    from mlxquant.eval.evaluate import open_for_eval, score, window_tokens

    d, bpw, target = folders
    text = corpus_text(HELD_OUT)
    need(text is not None, "the Shakespeare corpus (scripts/fetch_data.sh)")
    ctx, first = 128, 64
    ref = open_for_eval(shakespeare, "mlx", ctx)
    windows, _ = window_tokens(text[:40000], ref.tokenizer, ctx, 4)
    ref_logits = [ref.logits(w, first) for w in windows]
    kld = {k: score(open_for_eval(d / k, "mlx", ctx), windows, first, lambda i: ref_logits[i]).kld_mean
           for k in ("q4", "m46", "alloc")}
    assert bpw["alloc"] <= target + 1e-9 and target <= bpw["q4"] <= bpw["m46"]
    assert kld["alloc"] < kld["q4"] and kld["alloc"] < kld["m46"], (bpw, kld)


def test_folder_loads_generates_and_roundtrips(folders):
    mlx_lm = _mlx_lm()
    import mlx.nn as nn

    from mlxquant.alloc.mlx_budget import format_name

    d, bpw, target = folders
    cfg = json.loads((d / "alloc" / "config.json").read_text())
    alloc = json.loads((d / "alloc" / "mlxquant.json").read_text())["recipe"]["allocation"]
    assert alloc["target_bpw"] == target and abs(alloc["bpw"] - bpw["alloc"]) < 1e-3
    assert alloc["measured_gains"] and len(alloc["modules"]) == 43
    q = cfg["quantization"]
    assert cfg["quantization_config"] == q
    default = {k: q[k] for k in ("group_size", "bits", "mode")}
    # config.json says what the allocation chose, module by module
    assert {m: format_name((p["mode"], p["bits"], p["group_size"]))
            for m in alloc["modules"] for p in [q.get(m, default)]} == {m: v[0] for m, v in alloc["modules"].items()}
    model, tok = mlx_lm.load(str(d / "alloc"))
    seen = 0
    for path, module in model.named_modules():
        if isinstance(module, (nn.QuantizedLinear, nn.QuantizedEmbedding)):
            want = q.get(path, default)
            assert want is not False, path
            assert (module.bits, module.group_size, module.mode) == (want["bits"], want["group_size"],
                                                                     want["mode"]), path
            seen += 1
        elif isinstance(module, (nn.Linear, nn.Embedding)):
            pytest.fail(f"{path} left float")
    # every linear and the (tied) embedding, with more than one format in use
    assert seen == 1 + 7 * 6
    assert len({json.dumps(q.get(p, default)) for p, m in model.named_modules()
                if isinstance(m, nn.QuantizedLinear)}) > 1
    out = mlx_lm.generate(model, tok, "ROMEO:", max_tokens=8, verbose=False)
    assert isinstance(out, str) and len(out) > 0


def test_budget_is_never_exceeded(shakespeare, calib_file, tmp_path):
    from mlxquant.alloc.mlx_budget import allocate_mlx
    from mlxquant.calib import imatrix
    from mlxquant.convert.sources import open_source

    _mlx_lm()
    src = open_source(shakespeare, "hf")
    costs, plans = [], {}
    for target in (2.9, 4.4, 6.3, 9.5):
        a = allocate_mlx(src, shakespeare, target, "float32")
        assert a.bpw <= target and a.total_bytes * 8 <= target * a.parameters
        assert a.bpw > target - 0.25 or target > 9  # the budget is spent, up to all mxfp8/8-bit
        costs.append(a.predicted_kl)
        plans[target] = a.plan
        assert set(a.plan) == set(a.details) and len(a.plan) == 43
    assert costs == sorted(costs, reverse=True) and costs[0] > costs[-1]
    # an importance matrix reweights the errors: another plan, same ceiling, written as planned
    im = tmp_path / "im.gguf"
    imatrix(shakespeare, calib_file, im, ctx=128, chunks=4)
    out = tmp_path / "im-alloc"
    r = CliRunner().invoke(main, ["convert", str(shakespeare), "-o", str(out), "--to", "mlx",
                                  "--target-bpw", "4.4", "--imatrix", str(im)])
    assert r.exit_code == 0, r.output
    assert _bpw(out) <= 4.4
    rec = json.loads((out / "mlxquant.json").read_text())["recipe"]
    assert rec["imatrix"] == str(im) and not rec["allocation"]["measured_gains"]
    q = json.loads((out / "config.json").read_text())["quantization"]
    default = {k: q[k] for k in ("group_size", "bits", "mode")}
    got = {m: q.get(m, default) for m in plans[4.4]}
    assert got != plans[4.4]


def test_bad_input_gives_one_line_errors(shakespeare, folders, calib_file, tmp_path):
    d, _, _ = folders
    runs = {
        "below the smallest MLX formats": ["--target-bpw", "1.5"],
        "already quantized": ["--target-bpw", "4.5"],
        "does not combine": ["--target-bpw", "4.5", "--q-bits", "4"],
        "calib_text applies to to='mlx' only with target_bpw": ["--calib-text", str(calib_file)],
    }
    for msg, extra in runs.items():
        src = d / "q4" if msg == "already quantized" else shakespeare
        out = tmp_path / "x"
        r = CliRunner().invoke(main, ["convert", str(src), "-o", str(out), "--to", "mlx", *extra])
        assert r.exit_code == 1 and msg in r.output, (msg, r.output)
        assert len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output, r.output
        assert not out.exists()
    with pytest.raises(OptionError, match="between 1 and 32"):
        MLXOptions(target_bpw=0.5)


def _weight_files(folder) -> int:
    return sum(p.stat().st_size for p in folder.iterdir()
               if p.name.endswith(".safetensors") or p.name == "model.safetensors.index.json")


def test_target_size(shakespeare, folders, tmp_path):
    """``--to mlx --target-size``: the weight files (shards with their headers, and the index)
    within the size and close to it; the folder loads in mlx-lm; sizes that are too small, or
    given with --target-bpw, are refused in one line with nothing written."""
    mlx_lm = _mlx_lm()
    d, _, _ = folders
    target = _weight_files(d / "q4")  # plain 4-bit g64's weight files
    for size in (target, int(target * 1.37)):
        out = tmp_path / f"s{size}"
        r = CliRunner().invoke(main, ["convert", str(shakespeare), "-o", str(out), "--to", "mlx",
                                      "--target-size", str(size)])
        assert r.exit_code == 0, r.output
        got = _weight_files(out)
        assert 0.99 * size <= got <= size, (got, size)
        rec = json.loads((out / "mlxquant.json").read_text())["recipe"]
        assert rec["target_size"] == size and rec["allocation"]["target_size"] == size
        model, tok = mlx_lm.load(str(out))
        assert len(mlx_lm.generate(model, tok, "ROMEO:", max_tokens=4, verbose=False)) > 0
    for extra, msg in ((["--target-size", "400KB"], "below the smallest MLX formats"),
                       (["--target-size", "100"], "headers"),
                       (["--target-size", "3MB", "--target-bpw", "4"], "either target_bpw or target_size")):
        out = tmp_path / "x"
        r = CliRunner().invoke(main, ["convert", str(shakespeare), "-o", str(out), "--to", "mlx", *extra])
        assert r.exit_code == 1 and msg in r.output, (extra, r.output)
        assert len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output
        assert not out.exists()


def test_files_overhead_bound_is_an_upper_bound():
    """The header allowance covers the real headers of any plan: here all modules at the
    longest-named dtype and scales+biases, against the exact size of the files."""
    from types import SimpleNamespace

    from mlxquant.convert.to_mlx import _files_overhead_bound
    from mlxquant.formats.mlx_folder import MLXTensorSpec, weight_files_size

    names = [f"model.layers.{i}.mlp.down_proj.weight" for i in range(40)] + ["model.norm.weight"]
    shapes = {n: (1536, 576) if n.endswith("proj.weight") else (576,) for n in names}
    src = SimpleNamespace(names=names, shapes=shapes)
    specs = []
    for n in names:
        if len(shapes[n]) == 2:
            m = n[: -len(".weight")]
            specs += [MLXTensorSpec(n, (1536, 72), "U32"), MLXTensorSpec(m + ".scales", (1536, 18), "BF16"),
                      MLXTensorSpec(m + ".biases", (1536, 18), "BF16")]
        else:
            specs.append(MLXTensorSpec(n, shapes[n], "F32"))
    data = sum(s.nbytes for s in specs)
    exact = weight_files_size(specs) - data
    bound = _files_overhead_bound(src, weight_files_size(specs))
    assert exact <= bound <= exact + 60 * len(specs)
