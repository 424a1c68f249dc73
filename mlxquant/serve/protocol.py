"""The OpenAI API's shapes: request validation, response and stream-chunk bodies, error bodies.

Facts this relies on (OpenAI's API reference for ``/v1/completions`` and ``/v1/chat/completions``):
errors are ``{"error": {"message", "type", "param", "code"}}``; ``finish_reason`` is ``"stop"``
(end of sequence or a stop string) or ``"length"`` (``max_tokens``); a streamed response is
Server-Sent Events, one ``data: <chunk JSON>`` per piece, the last ``data: [DONE]``; with
``stream_options.include_usage`` a final chunk with empty ``choices`` carries ``usage``.
``stop`` is a string or up to 4 strings; ``n`` > 1, ``logprobs``, ``echo``, ``best_of``, penalties,
``logit_bias``, tools and response formats are refused (400), not silently ignored.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

from .engine import Params

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
MAX_STOP = 4
# request fields we cannot honour, with the value that means "not used"
_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "n": (1,), "best_of": (1,), "echo": (False,), "logprobs": (False, 0), "top_logprobs": (0,),
    "presence_penalty": (0, 0.0), "frequency_penalty": (0, 0.0), "logit_bias": ({},),
    "suffix": ("",), "tools": ([],), "functions": ([],), "parallel_tool_calls": (True, False),
    "response_format": ({"type": "text"},), "tool_choice": ("none", "auto"),
}


class APIError(Exception):
    """An error answered as OpenAI-style JSON with an HTTP status."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


@dataclass
class Request:
    """A validated request: ``messages`` (chat) or ``prompt`` (completion), and its options."""

    chat: bool
    params: Params
    stream: bool
    include_usage: bool
    messages: list[dict[str, str]] | None = None
    prompt: str | None = None


def _number(body: dict[str, Any], key: str, lo: float, hi: float, default: float,
            lo_open: bool = False) -> float:
    v = body.get(key)
    if v is None:
        return default
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or not (
            lo < v <= hi if lo_open else lo <= v <= hi):
        rng = f"({lo}, {hi}]" if lo_open else f"[{lo}, {hi}]"
        raise bad(f"'{key}' must be a number in {rng}, got {v!r}", key)
    return float(v)


def _content(v: Any, i: int) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, list) and all(isinstance(p, dict) and p.get("type") == "text"
                                   and isinstance(p.get("text"), str) for p in v):
        return "".join(p["text"] for p in v)
    raise bad(f"messages[{i}].content must be a string or a list of text parts", f"messages[{i}].content")


def _messages(v: Any) -> list[dict[str, str]]:
    if not isinstance(v, list) or not v:
        raise bad("'messages' must be a non-empty list", "messages")
    out = []
    for i, m in enumerate(v):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise bad(f"messages[{i}].role must be one of {', '.join(ROLES)}", f"messages[{i}].role")
        out.append({"role": ROLES[m["role"]], "content": _content(m.get("content"), i)})
    return out


def _prompt(v: Any) -> str:
    if isinstance(v, list) and len(v) == 1:
        v = v[0]
    if not isinstance(v, str) or not v:
        raise bad("'prompt' must be a non-empty string (one prompt per request)", "prompt")
    return v


def _stop(v: Any) -> list[str]:
    if v is None:
        return []
    stops = [v] if isinstance(v, str) else v
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops) or len(stops) > MAX_STOP:
        raise bad(f"'stop' must be a non-empty string or a list of at most {MAX_STOP} of them", "stop")
    return stops


def parse_request(body: Any, chat: bool, model_id: str, max_tokens_limit: int) -> Request:
    """Validate a decoded JSON body.

    Raises:
        APIError: 400 for a malformed or unsupported field, 404 for another model's name.
    """
    if not isinstance(body, dict):
        raise bad("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str):
        raise bad("'model' must be a string", "model")
    if model != model_id:
        raise APIError(404, f"The model '{model}' does not exist; this server serves '{model_id}'",
                       param="model", code="model_not_found")
    for key, neutral in _NEUTRAL.items():
        if key in body and body[key] is not None and body[key] not in neutral:
            raise bad(f"'{key}' = {body[key]!r} is not supported by this server", key, "unsupported_parameter")
    key = "max_completion_tokens" if chat and body.get("max_completion_tokens") is not None else "max_tokens"
    mt = body.get(key)
    if mt is None:
        mt = max_tokens_limit if chat else min(16, max_tokens_limit)  # OpenAI's defaults
    if not isinstance(mt, int) or isinstance(mt, bool) or mt < 1:
        raise bad(f"'{key}' must be a positive integer, got {mt!r}", key)
    if mt > max_tokens_limit:
        raise bad(f"'{key}' = {mt} exceeds this server's limit of {max_tokens_limit}", key)
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
        raise bad(f"'seed' must be a non-negative integer, got {seed!r}", "seed")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad("'stream' must be true or false", "stream")
    opts = body.get("stream_options") or {}
    if not isinstance(opts, dict):
        raise bad("'stream_options' must be an object", "stream_options")
    params = Params(mt, _number(body, "temperature", 0.0, 2.0, 1.0),
                    _number(body, "top_p", 0.0, 1.0, 1.0, lo_open=True), seed, _stop(body.get("stop")))
    if chat:
        return Request(True, params, stream, bool(opts.get("include_usage")), messages=_messages(body.get("messages")))
    return Request(False, params, stream, bool(opts.get("include_usage")), prompt=_prompt(body.get("prompt")))


def new_id(chat: bool) -> str:
    return ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def response(chat: bool, rid: str, model: str, text: str, finish: str, use: dict[str, int]) -> dict[str, Any]:
    """A whole (non-streamed) completion or chat completion."""
    if chat:
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                  "finish_reason": finish}
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
    return {"id": rid, "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()), "model": model, "choices": [choice], "usage": use}


def chunk(chat: bool, rid: str, model: str, text: str | None, finish: str | None,
          use: dict[str, int] | None = None, first: bool = False) -> dict[str, Any]:
    """One streamed chunk: a piece of text, or (``finish``) the last one, or (``use``) usage."""
    if use is not None:
        choices: list[dict[str, Any]] = []
    elif chat:
        delta: dict[str, str] = {"role": "assistant"} if first else {}
        if text is not None:
            delta["content"] = text
        choices = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
    else:
        choices = [{"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}]
    out: dict[str, Any] = {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion",
                           "created": int(time.time()), "model": model, "choices": choices}
    if use is not None:
        out["usage"] = use
    return out
