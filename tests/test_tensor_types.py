"""Per-tensor overrides in llama-quantize's syntax (``--tensor-type``, ``--tensor-type-file``):
parsing, the first-match rule, the row-size fallback after it, and the same GGUF as the
``llama-quantize`` tool given the same overrides."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from conftest import need
from mlxquant.cli import main
from mlxquant.convert import GGUFOptions, convert
from mlxquant.errors import OptionError, QuantTypeError
from mlxquant.formats.gguf_read import GGUFModel
from mlxquant.models import plan_tensor_types
from mlxquant.models.tensor_types import parse_tensor_type, read_tensor_type_file, recipe_lines

SHAPES = [("token_embd.weight", (4096, 256)), ("blk.0.attn_q.weight", (256, 256)),
          ("blk.0.attn_v.weight", (64, 256)), ("blk.0.ffn_down.weight", (256, 768)),
          ("blk.1.attn_v.weight", (64, 256)), ("blk.10.attn_v.weight", (64, 256)),
          ("blk.0.attn_norm.weight", (256,)), ("blk.0.odd.weight", (64, 224))]


def test_parse_like_llama_quantize(tmp_path):
    assert parse_tensor_type("ATTN_V=q8_0") == ("attn_v", "Q8_0")  # pattern lower-cased
    assert parse_tensor_type(r"^blk\.1\.attn_v=Q6_K") == (r"^blk\.1\.attn_v", "Q6_K")
    for bad, msg in (("attn_v", "PATTERN=TYPE"), ("=q8_0", "pattern"), ("attn_v=", "missing"),
                     ("attn_v=q9_9", "unknown GGML type"), ("(attn=q8_0", "regular expression")):
        with pytest.raises(OptionError, match=msg):
            parse_tensor_type(bad)
    f = tmp_path / "types.txt"
    f.write_text("attn_v=q8_0\n  ffn_down=Q5_K\tattn_q=q4_0\n")
    assert read_tensor_type_file(f) == (("attn_v", "Q8_0"), ("ffn_down", "Q5_K"), ("attn_q", "Q4_0"))
    f.write_text("attn_v=q8_0 nonsense\n")
    with pytest.raises(OptionError, match=f"{f}.*nonsense"):
        read_tensor_type_file(f)


def test_first_match_wins_then_fallback():
    plain = plan_tensor_types("Q4_K_M", SHAPES, "llama", 11)
    plan = plan_tensor_types("Q4_K_M", SHAPES, "llama", 11,
                             tensor_types=[(r"blk\.1\.", "Q2_K"), ("attn_v", "Q8_0"), ("odd", "Q4_K")])
    assert plan["blk.1.attn_v.weight"] == "Q2_K"  # the first pattern found wins
    assert plan["blk.0.attn_v.weight"] == plan["blk.10.attn_v.weight"] == "Q8_0"
    assert plan["blk.0.odd.weight"] == "Q5_0"  # rows of 224: Q4_K's fallback, as llama.cpp
    assert plan["blk.0.attn_norm.weight"] == "F32"  # never quantized
    assert plan["blk.0.ffn_down.weight"] == plain["blk.0.ffn_down.weight"]  # no pattern: the rule
    # a float outtype quantizes nothing, so nothing is overridden
    assert plan_tensor_types("F16", SHAPES, "llama", 11, tensor_types=[("attn_v", "Q8_0")])[
        "blk.0.attn_v.weight"] == "F16"
    with pytest.raises(QuantTypeError, match="blk.0.attn_q.weight.*Q1_0"):
        plan_tensor_types("Q4_K_M", SHAPES, "llama", 11, tensor_types=[("attn_q", "Q1_0")])
    assert recipe_lines({"blk.0.attn_v.weight": "Q8_0", "blk.0.attn_norm.weight": "F32"}) == [
        r"^blk\.0\.attn_v\.weight$=q8_0"]


@pytest.fixture(scope="module")
def base(shakespeare, tmp_path_factory):
    root = tmp_path_factory.mktemp("tensor-types")
    convert(shakespeare, root / "f32.gguf", outtype="F32")
    return root


def test_same_gguf_as_llama_quantize_tool(shakespeare, base, tmp_path):
    """The same overrides (two arguments and a file) given to llama-quantize and to mlxquant, from
    the HF folder and from the F32 GGUF: same types, bytes and metadata."""
    from mlxquant.testing.llama_tools import have_tools, run_tool
    from test_convert_presets import assert_same_gguf

    need(have_tools(), "llama.cpp tools (bash scripts/build_llama_tools.sh)")
    recipe = tmp_path / "recipe.txt"
    recipe.write_text("ffn_down=q8_0\n" + r"^blk\.2\.=q5_k" + "\n")
    args = ["attn_v=q3_k", r"blk\.[01]\.ffn_up=q6_k"]
    ref = tmp_path / "ref.gguf"
    run_tool("llama-quantize", [*[x for a in args for x in ("--tensor-type", a)],
                                "--tensor-type-file", recipe, base / "f32.gguf", ref, "Q4_K_M", "2"])
    opts = GGUFOptions(outtype="Q4_K_M", tensor_types=tuple(args), tensor_type_file=recipe)
    for src in (shakespeare, base / "f32.gguf"):
        ours = tmp_path / "ours.gguf"
        convert(src, ours, opts, force=True)
        assert_same_gguf(ref, ours)
    with GGUFModel(ours) as g:
        types = {t.name: t.type for t in g.tensors}
    assert types["blk.3.attn_v.weight"] == "Q3_K" and types["blk.0.ffn_up.weight"] == "Q6_K"
    assert types["blk.2.attn_q.weight"] == "Q5_K" and types["blk.4.ffn_down.weight"] == "Q8_0"


def test_cli_and_wrong_targets(shakespeare, tmp_path):
    r = CliRunner().invoke(main, ["convert", str(shakespeare), "-o", str(tmp_path / "a.gguf"),
                                  "--outtype", "Q4_K_M", "--tensor-type", "attn_v=q8_0", "--json"])
    assert r.exit_code == 0, r.output
    with GGUFModel(tmp_path / "a.gguf") as g:
        assert {t.type for t in g.tensors if ".attn_v." in t.name} == {"Q8_0"}
        assert "attn_v=Q8_0" in g.metadata["mlxquant.recipe"]
    r = CliRunner().invoke(main, ["convert", str(shakespeare), "-o", str(tmp_path / "m"), "--to", "mlx",
                                  "--tensor-type", "attn_v=q8_0"])
    assert r.exit_code != 0 and "--tensor-type" in r.output and not (tmp_path / "m").exists()
    r = CliRunner().invoke(main, ["convert", str(shakespeare), "-o", str(tmp_path / "b.gguf"),
                                  "--outtype", "Q4_K_M", "--tensor-type", "attn_v"])
    assert r.exit_code == 1 and "PATTERN=TYPE" in r.output and not (tmp_path / "b.gguf").exists()
