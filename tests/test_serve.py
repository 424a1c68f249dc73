"""``mlxquant serve``: the OpenAI-compatible server, run in-process with uvicorn on a free port and
driven by the ``openai`` client (and httpx for the raw HTTP cases). The reference text is always
mlxquant's own generation (``runtime.generate``, and once the ``generate`` command), computed in
the same process on the same loaded model."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx
import openai
import pytest
import uvicorn

from conftest import SHAKESPEARE_MISSING, SMOLLM2_MISSING, need
from mlxquant.runtime import generate
from mlxquant.runtime.chat import chat_prompt
from mlxquant.serve.commands import build_app
from mlxquant.testing.inputs import shakespeare_model_dir, smollm2_gguf_path

PROMPT = "ROMEO:"
KEY = "test-key-123"


class Live:
    """A server running in a thread: ``url``, ``engine``, ``client()`` (an openai client)."""

    def __init__(self, app, server, thread):
        self.app, self.server, self.thread = app, server, thread
        self.engine = app.state.server.engine
        port = server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.model = self.engine.model
        self.id = self.engine.model_id

    def client(self, key: str = "none", **kw) -> "openai.OpenAI":
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, **kw)


@contextmanager
def serving(path: Path, **options) -> Iterator[Live]:
    app = build_app(str(path), backend="numpy", **options)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield Live(app, server, thread)
    finally:
        app.state.server.engine.closing.set()
        server.should_exit = True
        thread.join(30)
        app.state.server.executor.shutdown(wait=True)


@pytest.fixture(scope="module")
def tiny() -> Iterator[Live]:
    d = shakespeare_model_dir()
    need(d is not None, SHAKESPEARE_MISSING)
    with serving(d, max_tokens_limit=4096) as live:
        yield live


@pytest.fixture(scope="module")
def strict() -> Iterator[Live]:
    """The tiny model behind an API key, small limits and a queue of one."""
    d = shakespeare_model_dir()
    need(d is not None, SHAKESPEARE_MISSING)
    with serving(d, api_key=KEY, max_tokens_limit=50, max_body_bytes=2000, max_queue=1) as live:
        yield live


@pytest.fixture(scope="module")
def smol() -> Iterator[Live]:
    p = smollm2_gguf_path()
    need(p is not None, SMOLLM2_MISSING)
    with serving(p) as live:
        yield live


def wait_for(cond, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


# -- same text as mlxquant's own generation ---------------------------------------------------------

def test_models_lists_the_one_model(tiny):
    models = tiny.client().models.list()
    assert [m.id for m in models.data] == [tiny.id]
    assert tiny.client().models.retrieve(tiny.id).id == tiny.id
    with pytest.raises(openai.NotFoundError):
        tiny.client().models.retrieve("other-model")


def test_completion_is_mlxquant_generate_greedy(tiny):
    ref = generate(tiny.model, PROMPT, 40)
    r = tiny.client().completions.create(model=tiny.id, prompt=PROMPT, max_tokens=40, temperature=0)
    assert r.choices[0].text == ref.text and ref.text
    assert r.choices[0].finish_reason == ("stop" if ref.stopped_by == "eos" else "length")
    assert r.usage.prompt_tokens == len(ref.prompt_tokens)
    assert r.usage.completion_tokens == len(ref.tokens)
    assert r.usage.total_tokens == len(ref.prompt_tokens) + len(ref.tokens)


def test_streamed_completion_is_the_same_text(tiny):
    ref = generate(tiny.model, PROMPT, 40)
    chunks = list(tiny.client().completions.create(
        model=tiny.id, prompt=PROMPT, max_tokens=40, temperature=0, stream=True,
        stream_options={"include_usage": True}))
    pieces = [c.choices[0].text for c in chunks if c.choices]
    assert len([p for p in pieces if p]) > 5  # streamed piece by piece, not in one block
    assert "".join(pieces) == ref.text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == len(ref.tokens)


def test_the_generate_command_gives_the_same_text(tiny):
    from click.testing import CliRunner

    from mlxquant.cli import main

    res = CliRunner().invoke(main, ["generate", str(tiny.model.weights.path), "-p", PROMPT,
                                    "--max-tokens", "24", "--backend", "numpy", "--json"])
    assert res.exit_code == 0, res.output
    cli = json.loads(res.stdout)
    r = tiny.client().completions.create(model=tiny.id, prompt=PROMPT, max_tokens=24, temperature=0)
    assert r.choices[0].text == cli["text"]
    assert r.usage.completion_tokens == cli["generated_tokens"]


def test_chat_is_mlxquant_generate_chat(smol):
    m, user = smol.model, "What is the capital of France?"
    ref = generate(m, chat_prompt(m, user), 16, add_special=False)
    r = smol.client().chat.completions.create(model=smol.id, messages=[{"role": "user", "content": user}],
                                              max_tokens=16, temperature=0)
    assert r.choices[0].message.content == ref.text and ref.text
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason == ("stop" if ref.stopped_by == "eos" else "length")
    assert r.usage.completion_tokens == len(ref.tokens)
    assert r.usage.prompt_tokens == len(ref.prompt_tokens)


def test_streamed_chat_with_a_system_message(smol):
    m, user, system = smol.model, "Name a colour.", "You answer in one word."
    ref = generate(m, chat_prompt(m, user, system), 16, add_special=False)
    chunks = list(smol.client().chat.completions.create(
        model=smol.id, max_tokens=16, temperature=0, stream=True,
        messages=[{"role": "system", "content": system}, {"role": "user", "content": user}]))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == ref.text and ref.text
    assert chunks[-1].choices[0].finish_reason == ("stop" if ref.stopped_by == "eos" else "length")


def test_stop_strings_seed_and_sampling(tiny):
    c = tiny.client()
    full = generate(tiny.model, PROMPT, 40).text
    word = next(w for w in full.split() if len(w) > 3 and full.index(w) > 3)
    r = c.completions.create(model=tiny.id, prompt=PROMPT, max_tokens=40, temperature=0, stop=[word, "\u00a7"])
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].text == full[:full.index(word)]
    streamed = "".join(ch.choices[0].text for ch in c.completions.create(
        model=tiny.id, prompt=PROMPT, max_tokens=40, temperature=0, stop=word, stream=True))
    assert streamed == r.choices[0].text  # nothing of the stop string leaks out of a stream
    ref = generate(tiny.model, PROMPT, 30, temperature=0.9, top_p=0.95, seed=7)
    a, b = (c.completions.create(model=tiny.id, prompt=PROMPT, max_tokens=30, temperature=0.9, top_p=0.95,
                                 seed=7).choices[0].text for _ in range(2))
    assert a == b == ref.text


def test_concurrent_requests_each_get_their_own_cache(tiny):
    prompts = [PROMPT, "JULIET:", "KING HENRY:", "First Citizen:"]
    refs = [generate(tiny.model, p, 24).text for p in prompts]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda p: tiny.client().completions.create(
            model=tiny.id, prompt=p, max_tokens=24, temperature=0).choices[0].text, prompts))
    assert got == refs


# -- errors: OpenAI-style JSON, and the server keeps serving ------------------------------------------

def test_request_errors(tiny):
    c = tiny.client()
    with pytest.raises(openai.NotFoundError) as e:
        c.completions.create(model="gpt-4", prompt=PROMPT, max_tokens=4)
    assert e.value.body["code"] == "model_not_found"
    for bad in ({"max_tokens": 5000}, {"max_tokens": 0}, {"n": 2}, {"temperature": 3}, {"top_p": 0},
                {"stop": ["a", "b", "c", "d", "e"]}, {"logprobs": 2}, {"seed": -1}):
        with pytest.raises(openai.BadRequestError) as e:
            c.completions.create(model=tiny.id, prompt=PROMPT, **{"max_tokens": 4, **bad})
        assert e.value.body["param"] == next(iter(bad)), bad
    with pytest.raises(openai.BadRequestError) as e:  # a model without a chat template
        c.chat.completions.create(model=tiny.id, messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert "no chat template" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model=tiny.id, messages=[{"role": "robot", "content": "hi"}], max_tokens=4)
    assert e.value.body["param"] == "messages[0].role"
    raw = [httpx.post(tiny.url + "/v1/completions", content=b'{"model": ', headers={"content-type": "application/json"}),
           httpx.post(tiny.url + "/v1/completions", content=b"[1, 2]"),
           httpx.post(tiny.url + "/v1/completions", content=b"\xff\xfe"),
           httpx.post(tiny.url + "/v1/completions", content=b"[" * 100000 + b"]" * 100000),
           httpx.get(tiny.url + "/v1/nothing-here"), httpx.get(tiny.url + "/v1/completions")]
    assert [r.status_code for r in raw] == [400, 400, 400, 400, 404, 405]
    for r in raw:
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    ok = c.completions.create(model=tiny.id, prompt=PROMPT, max_tokens=4, temperature=0)
    assert ok.choices[0].text == generate(tiny.model, PROMPT, 4).text


def test_api_key_body_size_and_token_limits(strict):
    with pytest.raises(openai.AuthenticationError) as e:
        strict.client("wrong").completions.create(model=strict.id, prompt=PROMPT, max_tokens=4)
    assert e.value.body["code"] == "invalid_api_key"
    assert httpx.get(strict.url + "/v1/models").status_code == 401  # no key at all
    c = strict.client(KEY)
    with pytest.raises(openai.BadRequestError) as e:
        c.completions.create(model=strict.id, prompt=PROMPT, max_tokens=51)
    assert "limit of 50" in e.value.body["message"]
    with pytest.raises(openai.APIStatusError) as e:
        c.completions.create(model=strict.id, prompt="x" * 5000, max_tokens=4)
    assert e.value.status_code == 413
    auth = {"authorization": f"Bearer {KEY}"}

    def chunked():  # no Content-Length: the limit holds while reading
        yield b'{"model": "' + b"x" * 1500
        yield b"y" * 1500 + b'"}'

    r = httpx.post(strict.url + "/v1/completions", content=chunked(), headers=auth)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    ok = c.completions.create(model=strict.id, prompt=PROMPT, max_tokens=4, temperature=0)
    assert ok.choices[0].text == generate(strict.model, PROMPT, 4).text


def test_full_queue_is_503_and_serving_goes_on(strict):
    strict.engine.reserve()  # the queue (of one) is taken
    try:
        r = httpx.post(strict.url + "/v1/completions", headers={"authorization": f"Bearer {KEY}"},
                       json={"model": strict.id, "prompt": PROMPT, "max_tokens": 4})
        assert r.status_code == 503 and r.json()["error"]["code"] == "server_busy"
    finally:
        strict.engine.release()
    ok = strict.client(KEY).completions.create(model=strict.id, prompt=PROMPT, max_tokens=4, temperature=0)
    assert ok.choices[0].finish_reason == "length"


# -- a client that leaves stops its generation ----------------------------------------------------

def test_disconnect_mid_stream_stops_generation(tiny):
    before = len(tiny.engine.history)
    body = {"model": tiny.id, "prompt": PROMPT, "max_tokens": 1000, "temperature": 0, "stream": True}
    with httpx.Client(timeout=30) as h:
        with h.stream("POST", tiny.url + "/v1/completions", json=body) as r:
            lines = r.iter_lines()
            got = [line for line in (next(lines) for _ in range(6)) if line.startswith("data: ")]
            assert len(got) >= 3
    wait_for(lambda: len(tiny.engine.history) > before)
    out = tiny.engine.history[before]
    assert out.finish_reason == "cancelled"
    assert 3 <= out.completion_tokens < 500  # 1000 would take ~7 s here; it stopped at once
    ok = tiny.client().completions.create(model=tiny.id, prompt=PROMPT, max_tokens=8, temperature=0)
    assert ok.choices[0].text == generate(tiny.model, PROMPT, 8).text


def test_disconnect_of_a_plain_request_stops_generation(tiny, monkeypatch):
    model = tiny.engine.model
    forward = model.forward

    def slow(*args, **kwargs):  # at most ~500 tokens/s: the fused kernels decode the tiny model
        time.sleep(0.002)  # at ~2000, and 1000 tokens could end before the disconnect shows
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", slow)
    before = len(tiny.engine.history)
    body = {"model": tiny.id, "prompt": PROMPT, "max_tokens": 1000, "temperature": 0}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(tiny.url + "/v1/completions", json=body, timeout=httpx.Timeout(30, read=0.5))
    wait_for(lambda: len(tiny.engine.history) > before)
    out = tiny.engine.history[before]
    assert out.finish_reason == "cancelled" and out.completion_tokens < 500
    assert tiny.client().models.list().data[0].id == tiny.id


# -- the engine's parts --------------------------------------------------------------------------

def test_text_stream_holds_back_what_may_become_a_stop_string():
    from mlxquant.serve.engine import TextStream

    pieces = ["ab", "cE", "N", "\ufffd", "D and more"]
    s = TextStream(lambda ids: "".join(pieces[i] for i in ids).replace("\ufffdD", "D"), ["END", "zz"])
    out = [s.feed(list(range(n))) for n in range(1, 6)]
    assert out == ["ab", "c", "", "", ""] and s.hit and s.text == "abc"
    s = TextStream(lambda ids: "".join(pieces[i] for i in ids), ["Ex"])
    assert [s.feed(list(range(n))) for n in range(1, 4)] == ["ab", "c", "EN"]
    assert s.feed([0, 1, 2, 3]) == "" and s.finish() == "\ufffd" and not s.hit


def test_turns_are_first_come_first_served_and_cancel_leaves_the_queue():
    from mlxquant.serve.engine import Turns

    turns, order, never = Turns(), [], threading.Event()
    assert turns.acquire(never)
    gone = threading.Event()
    left = []
    t_gone = threading.Thread(target=lambda: left.append(turns.acquire(gone)))
    t_gone.start()
    time.sleep(0.05)

    def worker(i: int) -> None:
        assert turns.acquire(never)
        order.append(i)
        turns.release()

    threads = []
    for i in range(5):
        threads.append(threading.Thread(target=worker, args=(i,)))
        threads[-1].start()
        time.sleep(0.05)  # arrive in order
    gone.set()
    t_gone.join(5)
    assert left == [False]
    turns.release()
    for t in threads:
        t.join(5)
    assert order == [0, 1, 2, 3, 4]
    assert turns.acquire(never)  # free again
    turns.release()
