'''Ollama Modelfiles: write one beside a GGUF file, and parse one back as Ollama does.

Facts this relies on (Ollama's docs/modelfile.md and its parser, ``parser/parser.go``):

- Instructions: FROM (required), PARAMETER, TEMPLATE, SYSTEM, ADAPTER, LICENSE, MESSAGE (plus
  DRAFT, RENDERER, PARSER, REQUIRES in newer versions); names are case-insensitive; a ``#`` where
  an instruction would start begins a comment to the end of the line (inside a value it is text).
- A value runs to the end of its line, or across lines when quoted: ``"..."`` or ``"""..."""``.
  There are no escapes. The value ends at the first line break where the trimmed text read so far
  is complete (starts and ends with its quotes), so a value that cannot be written that way (one
  where ``"""`` or ``"`` before a line break would close the quotes early, or with characters the
  parser drops: controls other than tab / line breaks, format characters, non-ASCII spaces) is
  refused here with an error naming it, never written to parse back differently. Every file is
  parsed back by :func:`parse_modelfile` before it is written.
- ``FROM ./file.gguf`` is resolved relative to the Modelfile's folder.
- Ollama never runs the GGUF's Jinja chat template: ``ollama create`` compares
  ``tokenizer.chat_template`` with the Jinja text of its built-in templates (``template/index.json``,
  which changes between versions) and uses the nearest one only within an edit distance of 100
  characters; otherwise the model gets ``{{ .Prompt }}`` and loses its roles. Fine-tuned models'
  templates often differ by more (SmolLM2's ChatML adds a default system prompt).

Our TEMPLATE rule: a chat template whose turn markers we recognise (ChatML ``<|im_start|>``,
Llama 3 ``<|start_header_id|>``, Gemma ``<start_of_turn>``) gets that family's TEMPLATE in Ollama's
Go-template syntax, since we cannot tell offline whether the installed Ollama's detection would
find it and an explicit TEMPLATE overrides the detection (same prompt where the detection works,
the right one where it would not). The default system prompt that the model's own template adds
when there is none (found by rendering it in the sandbox of :mod:`mlxquant.runtime.chat`) becomes
SYSTEM. Any other chat template gets no TEMPLATE: Ollama detects it or falls back, and a comment
in the file says so. Stop strings: the texts of the GGUF's EOS / EOT / EOM tokens and of
generation_config.json's ``eos_token_id``; generation defaults come from generation_config.json.

Our Modelfiles start with :data:`MARKER`; ``force`` replaces only such a file, never a user's.
'''

from __future__ import annotations

import errno
import math
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import FormatError, MlxquantError, OutputExistsError, OutputWriteError, UnsafeOutputError
from .ownership import remove_stale_partials, temp_prefix

MARKER = "# Modelfile written by mlxquant"
MAX_MODELFILE_BYTES = 64 << 20  # a Modelfile is read whole only to check for the marker
COMMANDS = ("from", "license", "template", "system", "adapter", "draft", "renderer", "parser",
            "parameter", "message", "requires")
ROLES = ("system", "user", "assistant")
_GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
_EOG_KEYS = ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id")


class ModelfileError(MlxquantError, ValueError):
    """A Modelfile that does not parse, or a value that cannot be written so that it parses back."""


@dataclass(frozen=True)
class Command:
    """One instruction: ``name`` lower-case (``from``, ``template``, or a PARAMETER's own name such
    as ``stop``); ``args`` the value (a MESSAGE's is ``"role: content"``)."""

    name: str
    args: str


# -- parsing --------------------------------------------------------------------------------------

def _unquote(s: str) -> tuple[str, bool]:
    if s.startswith('"""'):
        return (s[3:-3], True) if len(s) >= 6 and s.endswith('"""') else ("", False)
    if s.startswith('"'):
        return (s[1:-1], True) if len(s) >= 2 and s.endswith('"') else ("", False)
    return s, True


def parse_modelfile(text: str) -> list[Command]:
    """The instructions of a Modelfile, read character by character as Ollama's parser reads them.

    Raises:
        ModelfileError: an unknown instruction, a bad MESSAGE role or PARAMETER name, an
            unterminated quoted value, or no FROM (one line, with the line number).
    """
    nil, name, value, param, message, comment = range(6)
    commands: list[Command] = []
    state, line, buf, role, cmd = nil, 1, "", "", ""
    for ch in text.removeprefix("\ufeff"):
        line += ch in "\r\n"
        space, newline = ch in " \t", ch in "\r\n"
        if state == nil:
            nxt = comment if ch == "#" else nil if space or newline else name
            out = ch if nxt == name else ""
        elif state == comment:
            nxt, out = (nil if newline else comment), ""
        elif state == value:
            nxt, out = (nil if space or newline else value), ch
        else:  # name, param, message: letters (param: also digits and _), then a space
            ok = ch.isascii() and (ch.isalpha() or (state == param and (ch.isdigit() or ch == "_")))
            if ok:
                nxt, out = state, ch
            elif space:
                nxt, out = value, ""
            else:
                what = "instruction" if state == name else "parameter name" if state == param else "message role"
                raise ModelfileError(f"Modelfile line {line}: unexpected {ch!r} in a {what}")
        if nxt != state:
            if state == name:
                if buf.lower() not in COMMANDS:
                    raise ModelfileError(f"Modelfile line {line}: unknown instruction {buf!r} "
                                         f"(one of {', '.join(c.upper() for c in COMMANDS)})")
                cmd = buf.lower()
                nxt = param if cmd == "parameter" else message if cmd == "message" else nxt
            elif state == param:
                cmd = buf
            elif state == message:
                if buf not in ROLES:
                    raise ModelfileError(f"Modelfile line {line}: message role must be system, user or "
                                         f"assistant, not {buf!r}")
                role = buf
            elif state == value:
                s, ok = _unquote(buf.strip(_GO_SPACE))
                if not ok or space:
                    buf += ch
                    continue
                commands.append(Command(cmd, f"{role}: {s}" if role else s))
                role = ""
            buf, state = "", nxt
        if out and out.isprintable():
            buf += out
    if state == value:
        s, ok = _unquote(buf.strip(_GO_SPACE))
        if not ok:
            raise ModelfileError(f"Modelfile line {line}: unterminated quoted value")
        commands.append(Command(cmd, f"{role}: {s}" if role else s))
    elif state not in (nil, comment):
        raise ModelfileError(f"Modelfile line {line}: the file ends inside an instruction")
    if not any(c.name == "from" for c in commands):
        raise ModelfileError("Modelfile: no FROM line")
    return commands


# -- writing --------------------------------------------------------------------------------------

def quote_value(value: str, what: str) -> str:
    """``value`` as Ollama's parser reads it back exactly: bare, ``"..."`` or ``\"\"\"...\"\"\"``.

    Raises:
        ModelfileError: no form parses back to ``value`` (names ``what``).
    """
    if not value:
        raise ModelfileError(f"{what}: an empty value cannot be written in a Modelfile")
    for enc in (value, f'"{value}"', f'"""{value}"""'):
        try:
            back = parse_modelfile(f"FROM x\nSYSTEM {enc}\n")
        except ModelfileError:
            continue
        if back == [Command("from", "x"), Command("system", value)]:
            return enc
    raise ModelfileError(f"{what}: {value!r} cannot be written so that Ollama's Modelfile parser "
                         "reads it back unchanged (it holds a \"\"\", a quote before a line break, "
                         "or characters the parser drops)")


def render_modelfile(commands: list[Command], comments: list[str] = ()) -> str:
    """The Modelfile text for ``commands`` (``from`` first), starting with :data:`MARKER` and
    ``comments``; checked by parsing it back.

    Raises:
        ModelfileError: a value that cannot be written (see :func:`quote_value`).
    """
    lines = [MARKER] + [f"# {c}" for c in comments]
    for c in commands:
        what = f"{c.name.upper()} value" if c.name in COMMANDS else f"PARAMETER {c.name}"
        if c.name == "from":
            lines.append(f"FROM {quote_value(c.args, what)}")
        elif c.name == "message":
            role, _, content = c.args.partition(": ")
            lines.append(f"MESSAGE {role} {quote_value(content, what)}")
        elif c.name in COMMANDS:
            lines.append(f"{c.name.upper()} {quote_value(c.args, what)}")
        else:
            lines.append(f"PARAMETER {c.name} {quote_value(c.args, what)}")
    text = "\n".join(lines) + "\n"
    if parse_modelfile(text) != commands:  # a value that only parses alone, not in sequence
        raise ModelfileError("Modelfile: the written instructions do not parse back unchanged")
    return text


# -- what goes in ---------------------------------------------------------------------------------

# family: (marker in the Jinja template, Go template, regex of a default system prompt in a render)
_FAMILIES: dict[str, tuple[str, str, str]] = {
    "chatml": ("<|im_start|>",
               "{{- range .Messages }}<|im_start|>{{ .Role }}\n"
               "{{ .Content }}<|im_end|>\n"
               "{{ end }}<|im_start|>assistant\n",
               r"<\|im_start\|>system\n(.*?)<\|im_end\|>"),
    "llama3": ("<|start_header_id|>",
               "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n"
               "{{ .Content }}<|eot_id|>\n"
               "{{- end }}<|start_header_id|>assistant<|end_header_id|>\n\n",
               r"<\|start_header_id\|>system<\|end_header_id\|>\n\n(.*?)<\|eot_id\|>"),
    "gemma": ("<start_of_turn>",
              "{{- $system := .System }}\n"
              "{{- range .Messages }}\n"
              "{{- if eq .Role \"user\" }}<start_of_turn>user\n"
              "{{ if $system }}{{ $system }}\n\n{{ end }}{{ .Content }}<end_of_turn>\n"
              "{{ $system = \"\" }}\n"
              "{{- else if eq .Role \"assistant\" }}<start_of_turn>model\n"
              "{{ .Content }}<end_of_turn>\n"
              "{{ end }}\n"
              "{{- end }}<start_of_turn>model\n",
              r"$^"),  # Gemma's templates add no system prompt of their own
}


def chat_family(chat_template: str | None) -> str | None:
    """``"chatml"``, ``"llama3"``, ``"gemma"`` (by turn markers), or None."""
    for fam, (marker, _, _) in _FAMILIES.items():
        if chat_template and marker in chat_template:
            return fam
    return None


def default_system(chat_template: str, family: str, bos: str = "") -> str | None:
    """The system prompt the template adds when the conversation has none (None if it adds none
    or cannot be rendered)."""
    from ..runtime.chat import ChatTemplateError, render_chat

    marker = "\u2063user-message\u2063"
    try:
        text = render_chat(chat_template, [{"role": "user", "content": marker}], bos_token=bos)
    except ChatTemplateError:
        return None
    m = re.search(_FAMILIES[family][2], text, re.S)
    if m is None or marker not in text[m.end():] or not m.group(1).strip():
        return None
    return m.group(1)


def _token_texts(meta: dict[str, Any], ids: list[int], where: Path) -> list[str]:
    tokens = meta.get("tokenizer.ggml.tokens")
    if not isinstance(tokens, list):
        raise FormatError(f"{where}: no tokenizer.ggml.tokens to name the stop tokens with")
    out = []
    for i in ids:
        if not 0 <= i < len(tokens) or not isinstance(tokens[i], str):
            raise FormatError(f"{where}: stop token id {i} is not in the vocabulary ({len(tokens)} tokens)")
        out.append(tokens[i])
    return out


def _ids(v: Any) -> list[int]:
    if isinstance(v, int) and not isinstance(v, bool):
        return [v]
    return [x for x in v if isinstance(x, int) and not isinstance(x, bool)] if isinstance(v, list) else []


def generation_parameters(source: str | os.PathLike | None) -> tuple[dict[str, str], list[int]]:
    """Ollama PARAMETERs (name -> text) from ``source``'s generation_config.json, and its
    ``eos_token_id`` ids; nothing for a GGUF source or a folder without one. ``do_sample: false``
    (greedy) becomes ``temperature 0``. Mapped: temperature, top_p, top_k, min_p,
    repetition_penalty (as repeat_penalty).

    Raises:
        FormatError: an unreadable file or an out-of-range value (names the file and key).
    """
    from .json_file import get_bool, get_float, get_int, read_json_object

    path = Path(source) / "generation_config.json" if source is not None else None
    if path is None or not path.is_file():
        return {}, []
    gc = read_json_object(path, "generation_config.json")
    params: dict[str, str] = {}
    if get_bool(gc, "do_sample", path, default=True) is False:
        params["temperature"] = "0"
    else:
        for key, ollama, lo, hi in (("temperature", "temperature", 0.0, None), ("top_p", "top_p", 0.0, 1.0),
                                    ("min_p", "min_p", 0.0, 1.0)):
            v = get_float(gc, key, path, lo=lo, hi=hi, default=None)
            if v is not None:
                params[ollama] = repr(float(v))
        k = get_int(gc, "top_k", path, lo=0, default=None)
        if k is not None:
            params["top_k"] = str(k)
    rp = get_float(gc, "repetition_penalty", path, positive=True, default=None)
    if rp is not None and not math.isclose(rp, 1.0):
        params["repeat_penalty"] = repr(float(rp))
    return params, _ids(gc.get("eos_token_id"))


def build_modelfile(gguf_path: str | os.PathLike, source: str | os.PathLike | None = None,
                    from_path: str | None = None) -> str:
    """The Modelfile text for ``gguf_path`` (``FROM ./<name>`` unless ``from_path`` is given).

    Raises:
        FormatError: the GGUF is malformed, or a stop token id lies outside its vocabulary.
        ModelfileError: a value that cannot be written (e.g. a stop string with ``\"\"\"``).
    """
    from .gguf_check import check_gguf

    path = Path(gguf_path)
    meta = check_gguf(path).metadata
    params, gc_eos = generation_parameters(source)
    eog = [i for key in _EOG_KEYS for i in _ids(meta.get(key))] + gc_eos
    stops = list(dict.fromkeys(_token_texts(meta, eog, path)))
    template = meta.get("tokenizer.chat_template")
    template = template if isinstance(template, str) else None
    family = chat_family(template)
    commands = [Command("from", from_path or f"./{path.name}")]
    comments = [f"for {path.name}; use: ollama create NAME -f <this file>"]
    if family is not None:
        bos_ids = _ids(meta.get("tokenizer.ggml.bos_token_id"))
        bos = _token_texts(meta, bos_ids[:1], path)[0] if bos_ids else ""
        commands.append(Command("template", _FAMILIES[family][1]))
        system = default_system(template, family, bos)  # type: ignore[arg-type]
        if system is not None:
            commands.append(Command("system", system))
        comments.append(f"TEMPLATE: the {family} turn format of the GGUF's chat template")
    elif template is not None:
        comments.append("no TEMPLATE: the chat template is not one mlxquant recognises; Ollama "
                        "matches it against its own or falls back to the raw prompt")
    commands += [Command("stop", s) for s in stops]
    commands += [Command(k, v) for k, v in params.items()]
    try:
        return render_modelfile(commands, comments)
    except ModelfileError as e:
        raise ModelfileError(f"{path}: {e}") from None


# -- the file -------------------------------------------------------------------------------------

def is_ours(path: Path) -> bool:
    """True when ``path`` is a regular file (not a link) that mlxquant wrote: it starts with
    :data:`MARKER` and parses as a Modelfile."""
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_MODELFILE_BYTES:
            return False
        text = path.read_text(encoding="utf-8")
        return text.startswith(MARKER + "\n") and bool(parse_modelfile(text))
    except (OSError, UnicodeDecodeError, ModelfileError):
        return False


def modelfile_path(gguf_path: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Where :func:`write_modelfile` writes: ``out`` (a folder: ``Modelfile`` in it), by default
    ``Modelfile`` beside the GGUF."""
    dest = Path(out) if out is not None else Path(gguf_path).parent / "Modelfile"
    return dest / "Modelfile" if dest.is_dir() else dest


def check_modelfile_output(out: Path, force: bool) -> None:
    """Refuse to write ``out`` when it exists (without ``force``) or is not a Modelfile mlxquant
    wrote (even with ``force``). ``convert --ollama`` calls it before converting.

    Raises:
        OutputExistsError, UnsafeOutputError: one line naming ``out``.
    """
    if out.exists() or out.is_symlink():
        if not force:
            raise OutputExistsError(f"{out}: already exists (use --force to replace a Modelfile mlxquant wrote)")
        if not is_ours(out):
            raise UnsafeOutputError(f"{out}: is not a Modelfile mlxquant wrote; not replaced even with force")


def write_modelfile(gguf_path: str | os.PathLike, source: str | os.PathLike | None = None,
                    force: bool = False, out: str | os.PathLike | None = None) -> Path:
    """Write the Modelfile for ``gguf_path`` (to ``out``, default ``Modelfile`` beside it) and
    return its path. ``source``: the conversion's source folder, for its generation_config.json.
    Written to a temporary file and renamed; an existing file is replaced only with ``force`` and
    only when mlxquant wrote it (checked again just before the rename).

    Raises:
        FileNotFoundError, FormatError, ModelfileError, OutputExistsError, UnsafeOutputError,
        OutputWriteError.
    """
    gguf = Path(gguf_path)
    if not gguf.is_file():
        raise FileNotFoundError(errno.ENOENT, "no such GGUF file", str(gguf))
    dest = modelfile_path(gguf, out)
    parent = dest.parent if str(dest.parent) else Path(".")
    if not parent.is_dir():
        raise FileNotFoundError(errno.ENOENT, "output folder does not exist", str(parent))
    rel = os.path.relpath(os.path.abspath(gguf), os.path.abspath(parent))  # FROM: relative to the Modelfile
    check_modelfile_output(dest, force)
    text = build_modelfile(gguf, source, rel if rel.startswith("..") else f"./{rel}")
    remove_stale_partials(parent)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(dest), suffix=".partial", dir=parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        check_modelfile_output(dest, force)
        os.replace(tmp, dest)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, MlxquantError):
            raise
        raise OutputWriteError(e.errno or errno.EIO, e.strerror or str(e), str(dest)) from e
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest
