"""The ASGI application (Starlette): ``GET /v1/models``, ``POST /v1/completions`` and
``POST /v1/chat/completions``, plain JSON or Server-Sent Events.

Facts this relies on:

- Every error, ours or the router's (unknown path 404, wrong method 405), is answered as OpenAI's
  error JSON, and nothing a request sends can stop the server: malformed JSON 400, a body over
  ``max_body_bytes`` 413 (checked on Content-Length and again while reading), another model's
  name 404, a missing or wrong API key 401 (compared in constant time), a full queue 503.
- Generation runs on worker threads (:class:`concurrent.futures.ThreadPoolExecutor`), never on
  the event loop; pieces of text come back through ``loop.call_soon_threadsafe`` into an
  asyncio queue, in order, before the future's result.
- A client that disconnects cancels the request: for a stream, Starlette (ASGI spec < 2.4, as
  uvicorn declares) listens for ``http.disconnect`` and cancels the response, whose ``finally``
  sets the generation's cancel flag; for a plain request a watcher task reads ``receive()``
  until ``http.disconnect``. The generation loop reads the flag between tokens.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request as HTTPRequest
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..errors import MlxquantError
from .engine import Busy, Engine
from .protocol import APIError, Request, chunk, new_id, parse_request, response, usage

log = logging.getLogger(__name__)

_DONE = object()


def _sse(data: dict[str, Any] | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n"


class Server:
    """The routes over one :class:`Engine`, with the server's limits."""

    def __init__(self, engine: Engine, api_key: str | None = None, max_tokens_limit: int = 2048,
                 max_body_bytes: int = 1 << 20, workers: int = 8):
        self.engine, self.api_key = engine, api_key or None
        self.max_tokens_limit, self.max_body_bytes = max_tokens_limit, max_body_bytes
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mlxquant-generate")

    # -- checks -------------------------------------------------------------------------------
    def _authorize(self, request: HTTPRequest) -> None:
        if self.api_key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.api_key.encode()):
            raise APIError(401, "Incorrect or missing API key (send 'Authorization: Bearer KEY')",
                           code="invalid_api_key")

    async def _json(self, request: HTTPRequest) -> Any:
        limit = self.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise APIError(400, "invalid Content-Length header")
            if int(declared) > limit:
                raise APIError(413, f"request body of {declared} bytes exceeds the limit of {limit} bytes",
                               code="request_too_large")
        parts, size = [], 0
        async for part in request.stream():
            size += len(part)
            if size > limit:
                raise APIError(413, f"request body exceeds the limit of {limit} bytes", code="request_too_large")
            parts.append(part)
        try:
            return json.loads(b"".join(parts))
        except (ValueError, RecursionError) as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise APIError(400, f"the request body is not valid JSON: {msg}") from None

    def _ids(self, req: Request) -> list[int]:
        from ..runtime.chat import ChatTemplateError

        try:
            ids = self.engine.chat_ids(req.messages) if req.chat else self.engine.completion_ids(req.prompt)  # type: ignore[arg-type]
        except ChatTemplateError as e:
            raise APIError(400, str(e), param="messages") from None
        if not ids:
            raise APIError(400, "the prompt is empty after tokenization", param="prompt")
        ctx = self.engine.context_length
        if ctx is not None and len(ids) + req.params.max_tokens > ctx:
            if len(ids) >= ctx:
                raise APIError(400, f"the prompt has {len(ids)} tokens; this model's context is {ctx}",
                               code="context_length_exceeded")
            req.params.max_tokens = ctx - len(ids)  # generate what fits, finish_reason "length"
        return ids

    # -- routes -------------------------------------------------------------------------------
    async def models(self, request: HTTPRequest) -> Response:
        self._authorize(request)
        card = {"id": self.engine.model_id, "object": "model", "created": int(time.time()), "owned_by": "mlxquant"}
        name = request.path_params.get("model")
        if name is None:
            return JSONResponse({"object": "list", "data": [card]})
        if name != self.engine.model_id:
            raise APIError(404, f"The model '{name}' does not exist", param="model", code="model_not_found")
        return JSONResponse(card)

    async def completions(self, request: HTTPRequest) -> Response:
        return await self._complete(request, chat=False)

    async def chat_completions(self, request: HTTPRequest) -> Response:
        return await self._complete(request, chat=True)

    async def _complete(self, request: HTTPRequest, chat: bool) -> Response:
        self._authorize(request)
        req = parse_request(await self._json(request), chat, self.engine.model_id, self.max_tokens_limit)
        ids = await run_in_threadpool(self._ids, req)  # templates and tokenizers: off the event loop
        try:
            self.engine.reserve()
        except Busy as e:
            raise APIError(503, str(e), "server_error", code="server_busy") from None
        cancel = threading.Event()
        if req.stream:
            return _EventStream(self._events(req, ids, cancel), _once(cancel.set, self.engine.release))
        watcher = asyncio.create_task(_watch_disconnect(request, cancel))
        loop = asyncio.get_running_loop()
        try:
            out = await loop.run_in_executor(self.executor, self.engine.generate, ids, req.params, cancel)
        except BaseException:
            cancel.set()
            raise
        finally:
            watcher.cancel()
            self.engine.release()
        if out.finish_reason == "cancelled":  # nobody is listening any more
            return Response(status_code=499)
        rid = new_id(chat)
        return JSONResponse(response(chat, rid, self.engine.model_id, out.text, out.finish_reason,
                                     usage(out.prompt_tokens, out.completion_tokens)))

    async def _events(self, req: Request, ids: list[int], cancel: threading.Event) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        rid, model = new_id(req.chat), self.engine.model_id
        try:
            fut = loop.run_in_executor(self.executor, self.engine.generate, ids, req.params, cancel,
                                       lambda piece: loop.call_soon_threadsafe(queue.put_nowait, piece))
            fut.add_done_callback(lambda _: queue.put_nowait(_DONE))
            if req.chat:
                yield _sse(chunk(True, rid, model, "", None, first=True))
            while (piece := await queue.get()) is not _DONE:
                yield _sse(chunk(req.chat, rid, model, piece, None))
            try:
                out = fut.result()
            except Exception as e:  # headers are sent: the error goes into the stream
                log.error("generation failed: %s", e, exc_info=not isinstance(e, MlxquantError))
                yield _sse(APIError(500, f"generation failed: {e}", "server_error").body())
                return
            if out.finish_reason == "cancelled":
                return
            yield _sse(chunk(req.chat, rid, model, None, out.finish_reason))
            if req.include_usage:
                yield _sse(chunk(req.chat, rid, model, None, None, usage(out.prompt_tokens, out.completion_tokens)))
            yield _sse("[DONE]")
        finally:
            cancel.set()  # the client left (the response was cancelled), or nothing is running


class _EventStream(StreamingResponse):
    """A Server-Sent Events response that runs ``on_close`` however it ends (finished, client
    gone, cancelled before its body started)."""

    def __init__(self, events: AsyncIterator[str], on_close: Callable[[], None]):
        super().__init__(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        self.on_close = on_close

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()


def _once(*fns: Callable[[], None]) -> Callable[[], None]:
    """Call ``fns`` in order, the first time only."""
    done = threading.Lock()

    def run() -> None:
        if done.acquire(blocking=False):
            for fn in fns:
                fn()

    return run


async def _watch_disconnect(request: HTTPRequest, cancel: threading.Event) -> None:
    """Set ``cancel`` when the client of a (fully read) request disconnects."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            cancel.set()
            return


async def _api_error(request: HTTPRequest, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    return JSONResponse(exc.body(), status_code=exc.status,
                        headers={"WWW-Authenticate": "Bearer"} if exc.status == 401 else None)


async def _http_error(request: HTTPRequest, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = "not_found" if exc.status_code == 404 else "method_not_allowed" if exc.status_code == 405 else None
    err = APIError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", code=code)
    return JSONResponse(err.body(), status_code=exc.status_code, headers=exc.headers)


async def _server_error(request: HTTPRequest, exc: Exception) -> Response:
    log.error("internal error on %s %s: %s", request.method, request.url.path, exc, exc_info=exc)
    return JSONResponse(APIError(500, f"internal error: {type(exc).__name__}", "server_error").body(),
                        status_code=500)


def create_app(engine: Engine, api_key: str | None = None, max_tokens_limit: int = 2048,
               max_body_bytes: int = 1 << 20) -> Starlette:
    """The ASGI app serving ``engine``'s model (see the module docstring for the routes and
    errors). ``api_key``: required as ``Authorization: Bearer KEY`` when given."""
    server = Server(engine, api_key, max_tokens_limit, max_body_bytes)
    app = Starlette(routes=[
        Route("/v1/models", server.models, methods=["GET"]),
        Route("/v1/models/{model:path}", server.models, methods=["GET"]),
        Route("/v1/completions", server.completions, methods=["POST"]),
        Route("/v1/chat/completions", server.chat_completions, methods=["POST"]),
    ], exception_handlers={APIError: _api_error, HTTPException: _http_error, Exception: _server_error})
    app.state.server = server
    return app
