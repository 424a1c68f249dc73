"""Ollama Modelfiles: what ``mlxquant modelfile`` writes for a GGUF, parsed back with a parser that
follows Ollama's documented grammar (instructions, case, comments, quoting), hostile values, and
the rule that only a Modelfile mlxquant wrote is ever replaced."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import click
import gguf
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import SMOLLM2_MISSING, need
from mlxquant.errors import FormatError, OutputExistsError, UnsafeOutputError
from mlxquant.formats.gguf_check import check_gguf
from mlxquant.formats.modelfile import (MARKER, Command, ModelfileError, build_modelfile, chat_family,
                                        default_system, parse_modelfile, quote_value, render_modelfile,
                                        write_modelfile)
from mlxquant.runtime.chat import render_chat
from mlxquant.testing.inputs import smollm2_gguf_path

TOKENS = ["<unk>", "<s>", "</s>", "<|eot_id|>", "hello", "world"]


def small_gguf(path: Path, tokens=TOKENS, eos: int = 2, eot: int | None = 3, template: str | None = None) -> Path:
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_token_list(tokens)
    w.add_bos_token_id(1)
    w.add_eos_token_id(eos)
    if eot is not None:
        w.add_eot_token_id(eot)
    if template is not None:
        w.add_chat_template(template)
    w.add_tensor("token_embd.weight", np.zeros((len(tokens), 8), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="module")
def smol_link(tmp_path_factory) -> Path:
    """The SmolLM2 GGUF, linked into a folder of our own (the Modelfile goes beside it)."""
    p = smollm2_gguf_path()
    need(p is not None, SMOLLM2_MISSING)
    link = tmp_path_factory.mktemp("smol") / Path(p).name
    link.symlink_to(p)
    return link


def by_name(commands: list[Command]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for c in commands:
        out.setdefault(c.name, []).append(c.args)
    return out


# -- the grammar --------------------------------------------------------------------------------

def test_parser_follows_ollamas_grammar():
    text = ('# a comment\n'
            'from llama3.2\n'
            'Parameter temperature 0.5\n'
            'PARAMETER stop "<|eot_id|>"\n'
            'PARAMETER num_ctx 4096\n'
            '   # indented comment\n'
            'SYSTEM You are # not a comment here\n'
            'TEMPLATE """{{ if .System }}<|system|>\n{{ .System }}{{ end }}\n'
            '{{ range .Messages }}{{ .Content }}{{ end }}"""\n'
            'MESSAGE user "Is it blue?"\n'
            'message assistant yes\n'
            'LICENSE """\nMIT\n"""\n'
            'ADAPTER ./lora.gguf\n')
    cmds = parse_modelfile(text)
    assert cmds == [
        Command("from", "llama3.2"), Command("temperature", "0.5"), Command("stop", "<|eot_id|>"),
        Command("num_ctx", "4096"), Command("system", "You are # not a comment here"),
        Command("template", "{{ if .System }}<|system|>\n{{ .System }}{{ end }}\n"
                            "{{ range .Messages }}{{ .Content }}{{ end }}"),
        Command("message", "user: Is it blue?"), Command("message", "assistant: yes"),
        Command("license", "\nMIT\n"), Command("adapter", "./lora.gguf")]


@pytest.mark.parametrize("text, error", [
    ("PARAMETER stop x\n", "no FROM"),
    ("FROM x\nRUN rm -rf /\n", "unknown instruction 'RUN'"),
    ("FROM x\nMESSAGE robot hi\n", "message role"),
    ("FROM x\nSYSTEM \"\"\"open\n", "unterminated"),
    ("FROM x\nSYSTEM \"open\n", "unterminated"),
    ("FROM x\nPARAMETER te-mp 1\n", "parameter name"),
    ("FROM\n", "unexpected"),
])
def test_parser_errors(text, error):
    with pytest.raises(ModelfileError, match=re.escape(error)):
        parse_modelfile(text)


@pytest.mark.parametrize("value", [
    "plain", 'say "hi"', "two\nlines", 'both "quotes"\nand lines', " padded ", '"', '"starts', 'ends"',
    "#hash", "tab\there", '"""', 'x"""y', 'a"\nb', 'x"\n"""', "\n", "ünïcødé ✓", "}}{{", "'single'",
])
def test_hostile_values_round_trip_exactly(value):
    enc = quote_value(value, "PARAMETER stop")
    assert parse_modelfile(f"FROM x\nPARAMETER stop {enc}\nSYSTEM after\n") == [
        Command("from", "x"), Command("stop", value), Command("system", "after")]


@pytest.mark.parametrize("value", ['a"""\nb', '"""\n', "nul\x00", "nbsp\xa0", "bell\x07", "", "zw\u200b"])
def test_values_that_cannot_round_trip_are_refused(value):
    with pytest.raises(ModelfileError, match="PARAMETER stop"):
        quote_value(value, "PARAMETER stop")


def test_render_round_trips_every_instruction():
    cmds = [Command("from", "./m.gguf"), Command("template", '{{ if eq .Role "user" }}\n{{ end }}'),
            Command("system", 'Be "brief".\nAlways.'), Command("stop", "</s>"), Command("stop", 'a "b"'),
            Command("temperature", "0.7"), Command("message", "user: hi there"), Command("license", "MIT")]
    text = render_modelfile(cmds, ["a comment"])
    assert text.startswith(MARKER + "\n# a comment\n")
    assert parse_modelfile(text) == cmds


# -- what goes into it ----------------------------------------------------------------------------

def test_smollm2_modelfile(smol_link):
    path = write_modelfile(smol_link)
    assert path == smol_link.parent / "Modelfile"
    cmds = by_name(parse_modelfile(path.read_text(encoding="utf-8")))
    meta = check_gguf(smol_link).metadata
    assert cmds["from"] == [f"./{smol_link.name}"]
    assert (path.parent / cmds["from"][0]).samefile(smol_link)  # FROM is relative to the Modelfile
    assert cmds["stop"] == [meta["tokenizer.ggml.tokens"][meta["tokenizer.ggml.eos_token_id"]]] == ["<|im_end|>"]
    assert chat_family(meta["tokenizer.chat_template"]) == "chatml"
    assert "<|im_start|>{{ .Role }}" in cmds["template"][0]
    # SmolLM2's template adds a default system prompt; SYSTEM carries exactly that text
    rendered = render_chat(meta["tokenizer.chat_template"], [{"role": "user", "content": "Q"}])
    assert cmds["system"] == [default_system(meta["tokenizer.chat_template"], "chatml")]
    assert f"<|im_start|>system\n{cmds['system'][0]}<|im_end|>" in rendered
    assert "temperature" not in cmds  # a lone GGUF has no generation_config.json


def test_go_templates_are_balanced():
    for fam, marker in (("chatml", "<|im_start|>"), ("llama3", "<|start_header_id|>"), ("gemma", "<start_of_turn>")):
        from mlxquant.formats.modelfile import _FAMILIES

        go = _FAMILIES[fam][1]
        actions = re.findall(r"{{-?\s*(\w+)", go)
        opened = sum(a in ("if", "range", "with") for a in actions)
        assert opened == actions.count("end") >= 1, fam
        assert go.count("{{") == go.count("}}") and marker in go and ".Messages" in go


def test_llama3_template_and_end_of_turn_stops(tmp_path):
    tmpl = ("{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
            "{{ m['content'] }}<|eot_id|>{% endfor %}<|start_header_id|>assistant<|end_header_id|>\n\n")
    g = small_gguf(tmp_path / "m.gguf", template=tmpl)
    cmds = by_name(parse_modelfile(build_modelfile(g)))
    assert cmds["stop"] == ["</s>", "<|eot_id|>"]
    assert "<|start_header_id|>{{ .Role }}<|end_header_id|>" in cmds["template"][0]
    assert "system" not in cmds


def test_unknown_template_gets_no_template_and_says_why(tmp_path):
    g = small_gguf(tmp_path / "m.gguf", eot=None, template="{% for m in messages %}{{ m['content'] }}{% endfor %}")
    text = build_modelfile(g)
    assert "template" not in by_name(parse_modelfile(text))
    assert "no TEMPLATE" in text


def test_generation_config_defaults(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "generation_config.json").write_text(json.dumps(
        {"temperature": 0.6, "top_p": 0.9, "top_k": 40, "repetition_penalty": 1.1, "eos_token_id": [2, 5]}))
    g = small_gguf(tmp_path / "m.gguf", eot=None)
    cmds = by_name(parse_modelfile(build_modelfile(g, source=src)))
    assert cmds["temperature"] == ["0.6"] and cmds["top_p"] == ["0.9"] and cmds["top_k"] == ["40"]
    assert cmds["repeat_penalty"] == ["1.1"]
    assert cmds["stop"] == ["</s>", "world"]  # generation_config's eos ids too, once each
    (src / "generation_config.json").write_text(json.dumps({"do_sample": False, "temperature": 0.6}))
    assert by_name(parse_modelfile(build_modelfile(g, source=src)))["temperature"] == ["0"]
    (src / "generation_config.json").write_text(json.dumps({"top_p": 2}))
    with pytest.raises(FormatError, match="generation_config.json.*top_p"):
        build_modelfile(g, source=src)
    (src / "generation_config.json").write_text(json.dumps({"eos_token_id": 99}))
    with pytest.raises(FormatError, match="m.gguf.*99"):
        build_modelfile(g, source=src)


def test_hostile_stop_token_written_exactly_or_refused(tmp_path):
    tricky = 'end "quoted"\nturn'
    g = small_gguf(tmp_path / "a.gguf", tokens=TOKENS[:2] + [tricky] + TOKENS[3:])
    assert by_name(parse_modelfile(write_modelfile(g).read_text(encoding="utf-8")))["stop"][0] == tricky
    (tmp_path / "b").mkdir()
    bad = small_gguf(tmp_path / "b" / "b.gguf", tokens=TOKENS[:2] + ['x"""\ny'] + TOKENS[3:])
    with pytest.raises(ModelfileError, match=r"b\.gguf.*cannot be written"):
        write_modelfile(bad)
    assert os.listdir(bad.parent) == ["b.gguf"]  # nothing written, no temporary file left


# -- ownership ----------------------------------------------------------------------------------

def test_a_users_modelfile_is_never_replaced(tmp_path):
    g = small_gguf(tmp_path / "m.gguf")
    mine = tmp_path / "Modelfile"
    mine.write_text("FROM ./m.gguf\nSYSTEM my own\n")
    with pytest.raises(OutputExistsError):
        write_modelfile(g)
    with pytest.raises(UnsafeOutputError, match="not a Modelfile mlxquant wrote"):
        write_modelfile(g, force=True)
    assert mine.read_text() == "FROM ./m.gguf\nSYSTEM my own\n"
    link = tmp_path / "linked"
    link.mkdir()
    (link / "Modelfile").symlink_to(mine)
    with pytest.raises(UnsafeOutputError):
        write_modelfile(g, force=True, out=link / "Modelfile")
    ours = write_modelfile(g, out=tmp_path / "other")
    assert parse_modelfile(ours.read_text())[0] == Command("from", "./m.gguf")
    with pytest.raises(OutputExistsError):
        write_modelfile(g, out=ours)
    ours.write_text(ours.read_text() + "PARAMETER temperature 0.1\n")
    assert write_modelfile(g, out=ours, force=True) == ours  # ours: replaced
    assert "temperature" not in ours.read_text()


def test_modelfile_elsewhere_points_back_to_the_gguf(tmp_path):
    g = small_gguf(tmp_path / "m.gguf")
    (tmp_path / "deploy").mkdir()
    out = write_modelfile(g, out=tmp_path / "deploy")
    assert out == tmp_path / "deploy" / "Modelfile"
    src = parse_modelfile(out.read_text())[0].args
    assert src == "../m.gguf" and (out.parent / src).samefile(g)


def test_cli(tmp_path):
    from mlxquant.cli import _errors
    from mlxquant.serve.commands import add_commands

    @click.group()
    def main() -> None:
        pass

    add_commands(main, _errors, str)
    g = small_gguf(tmp_path / "m.gguf")
    r = CliRunner().invoke(main, ["modelfile", str(g)])
    assert r.exit_code == 0 and "ollama create NAME -f" in r.stdout
    assert (tmp_path / "Modelfile").is_file()
    r = CliRunner().invoke(main, ["modelfile", str(g)])
    assert r.exit_code == 1 and r.stderr.count("\n") == 1 and "already exists" in r.stderr
    r = CliRunner().invoke(main, ["modelfile", str(g), "--force"])
    assert r.exit_code == 0
    r = CliRunner().invoke(main, ["modelfile", str(tmp_path / "missing.gguf")])
    assert r.exit_code == 1 and "missing.gguf" in r.stderr and "Traceback" not in r.output
