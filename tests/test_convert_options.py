"""Conversion options per target, the dispatch on (source format, target), and failures that
must leave nothing behind."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from mlxquant.cli import main
from mlxquant.convert import GGUFOptions, HFOptions, MLXOptions, convert
from mlxquant.convert.options import options_from_keywords
from mlxquant.errors import FormatError, MlxquantError, OptionError
from mlxquant.formats.gguf_read import GGUFModel
from mlxquant.formats.gguf_write import Metadata, write_gguf
from mlxquant.testing.f32_gguf import shakespeare_f32_gguf


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """The tiny-shakespeare-llama folder as an F32 GGUF."""
    root = tmp_path_factory.mktemp("opts")
    try:
        return {"gguf": shakespeare_f32_gguf(root / "f32.gguf")}
    except FileNotFoundError as e:
        pytest.skip(str(e))


def test_options_exist_only_on_their_target():
    with pytest.raises(TypeError):
        MLXOptions(outtype="Q8_0")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        GGUFOptions(q_bits=8)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        HFOptions(imatrix="x.gguf")  # type: ignore[call-arg]
    assert options_from_keywords("mlx", {"q_bits": 4, "outtype": None}) == MLXOptions(q_bits=4)
    assert options_from_keywords("gguf", {"outtype": "Q8_0"}) == GGUFOptions("Q8_0")


@pytest.mark.parametrize("to, keywords, name", [
    ("mlx", {"outtype": "Q8_0"}, "outtype"),
    ("mlx", {"imatrix": "im.gguf"}, "imatrix"),
    ("gguf", {"q_bits": 8}, "q_bits"),
    ("gguf", {"exact_scales": True}, "exact_scales"),
    ("hf", {"imatrix": "im.gguf"}, "imatrix"),
    ("hf", {"q_mode": "mxfp4"}, "q_mode"),
])
def test_an_option_for_another_target_is_refused(tiny, tmp_path, to, keywords, name):
    out = tmp_path / "out"
    with pytest.raises(OptionError, match=rf"{name}.*to='{to}'") as e:
        convert(tiny["gguf"], out, to=to, **keywords)
    assert isinstance(e.value, MlxquantError) and isinstance(e.value, ValueError)
    assert not out.exists()


def test_options_object_and_keywords_do_not_mix(tiny, tmp_path):
    with pytest.raises(OptionError, match="not both"):
        convert(tiny["gguf"], tmp_path / "o.gguf", GGUFOptions("Q8_0"), outtype="Q4_0")
    with pytest.raises(OptionError, match="MLXOptions"):
        convert(tiny["gguf"], tmp_path / "o.gguf", MLXOptions(), to="gguf")
    with pytest.raises(OptionError, match="'xml'"):
        convert(tiny["gguf"], tmp_path / "o.gguf", to="xml")
    assert list(tmp_path.iterdir()) == []


def test_the_options_object_chooses_the_target(tiny, tmp_path):
    r = convert(tiny["gguf"], tmp_path / "hf", HFOptions("BF16"))
    assert (r.to, r.outtype) == ("hf", "BF16") and (tmp_path / "hf" / "config.json").is_file()
    r = convert(tiny["gguf"], tmp_path / "q8.gguf", GGUFOptions("Q8_0"))
    assert r.to == "gguf" and "Q8_0" in r.types and sum(r.types.values()) == r.tensors
    assert len(r.details) == r.tensors and {d["status"] for d in r.details} <= {"quantized", "copied"}


@pytest.mark.parametrize("args, flag", [
    (["--to", "mlx", "--outtype", "Q8_0"], "--outtype"),
    (["--to", "gguf", "--q-bits", "8"], "--q-bits"),
    (["--to", "hf", "--q-mode", "affine"], "--q-mode"),
    (["--to", "hf", "--imatrix", "im.gguf"], "--imatrix"),
])
def test_cli_refuses_an_option_for_another_target(tiny, tmp_path, args, flag):
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["convert", str(tiny["gguf"]), "-o", str(out), *args])
    assert r.exit_code == 1, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mlxquant: error: ") and flag in lines[0], r.output
    assert "does not apply to --to" in lines[0]
    assert not out.exists()


def test_cli_prints_one_summary_line_and_the_table_only_with_v(tiny, tmp_path):
    r = CliRunner().invoke(main, ["convert", str(tiny["gguf"]), "-o", str(tmp_path / "q8.gguf"),
                                  "--outtype", "Q8_0"])
    assert r.exit_code == 0, r.output
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wrote ") and "Q8_0 x" in lines[0], r.stdout
    r = CliRunner().invoke(main, ["-v", "convert", str(tiny["gguf"]), "-o", str(tmp_path / "m"),
                                  "--to", "mlx"])
    assert r.exit_code == 0, r.output
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith("tensor") and lines[-1].startswith("wrote ") and len(lines) > 3


def _empty_gguf(src: Path, path: Path) -> Path:
    """``src``'s metadata (architecture, hyper-parameters, tokenizer) with no tensors."""
    with GGUFModel(src) as g:
        meta = Metadata()
        for k, v in g.metadata.items():
            meta.set(k, v, g.value_types[k])
    return write_gguf(path, meta, [], [])


@pytest.mark.parametrize("to", ["mlx", "hf", "gguf"])
def test_a_gguf_without_tensors_leaves_nothing(tiny, tmp_path, to):
    """Issue #11: every check runs before the output is renamed into place, so a failure leaves
    neither the output nor a temporary beside it."""
    empty = _empty_gguf(tiny["gguf"], tmp_path / "empty.gguf")
    out = tmp_path / "out"
    with pytest.raises(MlxquantError) as e:
        convert(empty, out, to=to)
    assert "empty.gguf" in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.gguf"]
    if to == "mlx":
        assert isinstance(e.value, FormatError) and "no tensors" in str(e.value)
