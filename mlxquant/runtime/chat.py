"""Chat templates: turn a user message into the prompt a chat model was trained on, with the
model's own Jinja template, rendered in a sandbox.

The template comes from the model (``tokenizer.chat_template`` in GGUF metadata;
``chat_template`` in tokenizer_config.json, chat_template.jinja or chat_template.json in HF and MLX
folders) and is therefore untrusted input: it is rendered in Jinja's
:class:`~jinja2.sandbox.ImmutableSandboxedEnvironment` (no attribute starting with ``_``, no
mutation of lists or dicts, ``range`` capped), where any unsafe access raises at once instead of
rendering as an empty string, and huge ``*``/``**`` results are refused. It is never executed any
other way. The environment offers what Hugging Face's ``apply_chat_template`` offers templates:
``trim_blocks``/``lstrip_blocks``, the ``loopcontrols`` extension, a ``tojson`` filter,
``raise_exception(message)``, ``strftime_now(format)``, the special tokens (``bos_token``,
``eos_token``) and ``add_generation_prompt`` (True here: the prompt ends where the assistant's
answer starts).
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

from ..errors import MlxquantError

MAX_SEQUENCE = 1 << 20  # longest string/list a template may build with * (items)
MAX_EXPONENT = 1 << 10


class ChatTemplateError(MlxquantError, ValueError):
    """A model without a chat template, or a template that fails or tries something unsafe."""


def find_chat_template(path: str | os.PathLike, metadata: dict[str, Any] | None = None) -> str | None:
    """The chat template of the model at ``path``: a GGUF file's ``tokenizer.chat_template``
    (from ``metadata``), or a folder's tokenizer_config.json ``chat_template`` (a string, or the
    entry named ``default`` of a list), chat_template.jinja or chat_template.json. None if absent.
    """
    p = Path(path)
    if not p.is_dir():
        t = (metadata or {}).get("tokenizer.chat_template")
        if isinstance(t, bytes):
            t = t.decode("utf-8", "replace")
        return t if isinstance(t, str) else None
    tc = p / "tokenizer_config.json"
    if tc.is_file():
        t = _read_json(tc).get("chat_template")
        if isinstance(t, list):  # [{"name": "default", "template": "..."}, {"name": "tool_use", ...}]
            t = next((e.get("template") for e in t if isinstance(e, dict) and e.get("name") == "default"), None)
        if isinstance(t, str):
            return t
    if (p / "chat_template.jinja").is_file():
        return (p / "chat_template.jinja").read_text(encoding="utf-8", errors="replace")
    if (p / "chat_template.json").is_file():
        t = _read_json(p / "chat_template.json").get("chat_template")
        return t if isinstance(t, str) else None
    return None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        v = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ChatTemplateError(f"{path}: cannot read it: {e}") from None
    return v if isinstance(v, dict) else {}


def _environment() -> Any:
    import jinja2.ext
    from jinja2.exceptions import SecurityError, TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class _Sandbox(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset(["*", "**"])

        def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
            raise SecurityError(f"access to attribute {attribute!r} of a {type(obj).__name__} "
                                "object is not allowed")

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            if operator == "**" and isinstance(right, (int, float)) and abs(right) > MAX_EXPONENT:
                raise SecurityError(f"exponent {right} is too large")
            if operator == "*":
                for seq, n in ((left, right), (right, left)):
                    if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > MAX_SEQUENCE:
                        raise SecurityError("the template builds a sequence that is too long")
            return super().call_binop(context, operator, left, right)

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    def tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None,
               separators: Any = None, sort_keys: bool = False) -> str:
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(fmt: str) -> str:
        return datetime.now().strftime(fmt)

    env = _Sandbox(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def render_chat(template: str, messages: Sequence[dict[str, Any]], *, bos_token: str = "",
                eos_token: str = "", add_generation_prompt: bool = True, **extra: Any) -> str:
    """Render ``messages`` (``[{"role": "user", "content": "..."}]``) with ``template``.

    Raises:
        ChatTemplateError: a syntax error, ``raise_exception`` called by the template, an unsafe
            access, or any other failure while rendering (one line).
    """
    try:
        env = _environment()
        tmpl = env.from_string(template)
        return tmpl.render(messages=[dict(m) for m in messages], bos_token=bos_token,
                           eos_token=eos_token, add_generation_prompt=add_generation_prompt,
                           tools=None, documents=None, **extra)
    except RecursionError:
        raise ChatTemplateError("chat template: recursion too deep") from None
    except Exception as e:  # the template is untrusted data: any failure in it is its error
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ChatTemplateError(f"chat template: {msg}") from None


def token_text(tokenizer: Any, token_id: int | None) -> str:
    """The text of a special token (``""`` for None or an id the tokenizer cannot decode)."""
    if token_id is None:
        return ""
    try:
        return tokenizer.decode([int(token_id)])
    except Exception:  # tokenizers raise plain exceptions for out-of-range ids
        return ""


def chat_prompt(model: Any, user: str, system: str | None = None) -> str:
    """The prompt for one user message to ``model`` (a :class:`~.backend.RunnableModel`),
    rendered with its chat template and special tokens, ending with the generation prompt.

    Raises:
        ChatTemplateError: the model has no chat template, or it fails (see :func:`render_chat`).
    """
    w = model.weights
    template = find_chat_template(w.path, getattr(w, "metadata", None))
    if template is None:
        raise ChatTemplateError(f"{w.path}: the model has no chat template (drop --chat to "
                                "use the prompt as it is)")
    tok = model.tokenizer
    eos = list(getattr(model.spec, "eos_token_ids", []) or [])
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    return render_chat(template, messages, bos_token=token_text(tok, model.spec.bos_token_id),
                       eos_token=token_text(tok, eos[0] if eos else None))
