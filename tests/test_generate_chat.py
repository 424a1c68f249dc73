"""Issue 11: ``mlxquant generate`` stops at the model's end-of-turn token without printing or counting
it, and ``--chat`` renders the prompt with the model's own chat template in a Jinja sandbox."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from conftest import need
from mlxquant.cli import main
from mlxquant.runtime.chat import ChatTemplateError, find_chat_template, render_chat
from mlxquant.testing.inputs import shakespeare_model_dir, smollm2_gguf_path

QUESTION = "What is the capital of France?"
IM_END = 2  # SmolLM2's <|im_end|>, its EOS


@pytest.fixture(scope="module")
def smol():
    from mlxquant.runtime import load_model

    p = smollm2_gguf_path()
    need(p is not None, "SmolLM2 GGUF")
    return load_model(p, backend="numpy")


def test_chat_prompt_uses_the_gguf_template(smol):
    from mlxquant.runtime.chat import chat_prompt

    text = chat_prompt(smol, QUESTION)
    assert text.endswith(f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n")
    assert text.startswith("<|im_start|>system\n")  # SmolLM2's template adds its default system turn
    assert chat_prompt(smol, QUESTION, system="Be brief.").startswith("<|im_start|>system\nBe brief.<|im_end|>")
    ids = smol.tokenizer.encode(text, add_special=False)
    assert ids[0] == 1 and ids.count(1) == 3 and ids.count(IM_END) == 2  # <|im_start|> / <|im_end|> tokens


def test_generation_stops_at_im_end_and_drops_it(smol):
    from mlxquant.runtime import generate, generate_tokens
    from mlxquant.runtime.chat import chat_prompt
    from mlxquant.runtime.generate import stop_token_ids

    assert IM_END in stop_token_ids(smol)
    pieces: list[str] = []
    g = generate(smol, chat_prompt(smol, QUESTION), max_tokens=48, on_text=pieces.append, add_special=False)
    assert g.stopped_by == "eos" and 0 < len(g.tokens) < 48
    assert IM_END not in g.tokens and "<|im_end|>" not in g.text and "".join(pieces) == g.text
    assert "Paris" in g.text
    # the same greedy run without stopping: the next token is exactly <|im_end|>
    raw = generate_tokens(smol, g.prompt_tokens, max_tokens=len(g.tokens) + 1, stop_at_eos=False)
    assert raw.tokens[:-1] == g.tokens and raw.tokens[-1] == IM_END
    # tokens/s counts the kept tokens only
    assert g.generation_tps == pytest.approx((len(g.tokens) - 1) / g.decode_seconds)


def test_cli_generate_chat_json(smol):
    r = CliRunner().invoke(main, ["generate", str(smol.weights.path), "-p", QUESTION, "--chat",
                                  "--max-tokens", "48", "--backend", "numpy", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output[r.output.index("{"):r.output.rindex("}") + 1])
    assert out["stopped_by"] == "eos" and IM_END not in out["tokens"]
    assert out["generated_tokens"] == len(out["tokens"]) and "<|im_end|>" not in out["text"]
    assert out["prompt"].endswith("<|im_start|>assistant\n")


# ---- the template is untrusted: sandbox -------------------------------------------------------

@pytest.mark.parametrize("template", [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ messages.append(1) }}",
    "{% set x = messages.pop() %}",
    "{{ 'x' * 100000000 }}",
    "{{ raise_exception('only user and assistant roles are supported') }}",
    "{% for m in messages %}",
])
def test_template_escapes_and_errors_are_project_errors(template):
    with pytest.raises(ChatTemplateError, match="^chat template: "):
        render_chat(template, [{"role": "user", "content": "hi"}])


def test_hf_functions_available():
    t = ("{{ bos_token }}{% for m in messages %}{% if m.role == 'skip' %}{% continue %}{% endif %}"
         "[{{ m.role }}]{{ m.content | tojson }}{% endfor %}{% if add_generation_prompt %}[assistant]"
         "{% endif %}{{ strftime_now('%Y')|length }}")
    out = render_chat(t, [{"role": "skip", "content": "x"}, {"role": "user", "content": "é"}], bos_token="<s>")
    assert out == '<s>[user]"é"[assistant]4'


def _shakespeare_copy(tmp_path, template):
    d = shakespeare_model_dir()
    need(d is not None, "tiny-shakespeare-llama model")
    out = tmp_path / "m"
    shutil.copytree(d, out)
    if template is not None:
        tc = json.loads((out / "tokenizer_config.json").read_text())
        tc["chat_template"] = template
        (out / "tokenizer_config.json").write_text(json.dumps(tc))
    return out


def test_cli_chat_with_a_malicious_template_fails_in_one_line(tmp_path):
    d = _shakespeare_copy(tmp_path, "{{ ''.__class__.__mro__[1].__subclasses__() }}")
    r = CliRunner().invoke(main, ["generate", str(d), "-p", "hi", "--chat", "--backend", "numpy"])
    assert r.exit_code == 1
    lines = r.output.strip().splitlines()
    assert lines == ["mlxquant: error: chat template: access to attribute '__class__' of a str object "
                     "is not allowed"]


def test_cli_chat_without_template_and_folder_templates(tmp_path):
    d = _shakespeare_copy(tmp_path, None)
    r = CliRunner().invoke(main, ["generate", str(d), "-p", "hi", "--chat", "--backend", "numpy"])
    assert r.exit_code == 1 and r.output.strip().splitlines() == [
        f"mlxquant: error: {d}: the model has no chat template (drop --chat to use the prompt as it is)"]
    (d / "chat_template.jinja").write_text("{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}")
    assert find_chat_template(d) == "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"
    tc = json.loads((d / "tokenizer_config.json").read_text())
    tc["chat_template"] = [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]
    (d / "tokenizer_config.json").write_text(json.dumps(tc))
    assert find_chat_template(d) == "D"
    r = CliRunner().invoke(main, ["generate", str(d), "-p", "hi", "--chat", "--backend", "numpy",
                                  "--max-tokens", "3", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output[r.output.index("{"):r.output.rindex("}") + 1])
    assert out["prompt"] == "D" and out["generated_tokens"] <= 3
