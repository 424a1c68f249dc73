"""Serving a model: an OpenAI-compatible HTTP server (``mlxquant serve``) over the runtime, one
model per server, generations serialized on worker threads (:mod:`.engine`), the API's shapes
(:mod:`.protocol`) and the Starlette application (:mod:`.app`). Starlette and uvicorn are the
optional ``serve`` extra: importing this package does not import them."""

from .engine import Busy, Engine, Outcome, Params, TextStream

__all__ = ["Busy", "Engine", "Outcome", "Params", "TextStream"]
