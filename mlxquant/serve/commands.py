"""The ``serve`` and ``modelfile`` commands: the two ways a converted model is served (mlxquant's
own OpenAI-compatible server, and Ollama through a Modelfile). Thin click wrappers registered on
the ``mlxquant`` group by :mod:`mlxquant.cli` (which owns error handling: one line on stderr,
exit status 1)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, Callable

import click

from ..errors import MlxquantError

BACKEND = click.Choice(["auto", "numpy", "mlx"], case_sensitive=False)


class ServeDependencyError(MlxquantError, ImportError):
    """Starlette or uvicorn is not installed."""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_app(model: str, backend: str = "auto", model_id: str | None = None, api_key: str | None = None,
              max_tokens_limit: int = 2048, max_body_bytes: int = 1 << 20, max_queue: int = 64) -> Any:
    """Load ``model`` and return the Starlette app serving it (``app.state.server.engine`` is the
    :class:`~mlxquant.serve.engine.Engine`).

    Raises:
        ServeDependencyError: Starlette is missing; and whatever :func:`mlxquant.runtime.load_model` raises.
    """
    try:
        from .app import create_app
    except ImportError as e:
        raise ServeDependencyError(f"mlxquant serve needs Starlette and uvicorn ({e.name} is missing): "
                                   "pip install 'mlxquant[serve]'") from None
    from ..runtime import load_model
    from .engine import Engine

    m = load_model(model, backend=backend)
    engine = Engine(m, model_id or Path(model).name, max_pending=max_queue)
    return create_app(engine, api_key, max_tokens_limit, max_body_bytes)


def add_commands(main: click.Group, errors: Callable, human: Callable[[float], str]) -> None:
    """Register ``serve`` and ``modelfile`` on ``main`` with the CLI's ``errors`` decorator."""

    @main.command("serve")
    @click.argument("model", type=click.Path())
    @click.option("--host", default="127.0.0.1", show_default=True,
                  help="Address to listen on (another than loopback exposes the model to the network).")
    @click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
    @click.option("--api-key", envvar="MLXQUANT_API_KEY", default=None, show_envvar=True,
                  help="Require 'Authorization: Bearer KEY' on every request.")
    @click.option("--name", "model_id", default=None,
                  help="Model id clients ask for (default: the file or folder name).")
    @click.option("--max-tokens-limit", default=2048, show_default=True, type=click.IntRange(1, None),
                  help="Largest max_tokens a request may ask for (400 above it).")
    @click.option("--max-body-bytes", default=1 << 20, show_default=True, type=click.IntRange(1, None),
                  help="Largest request body (413 above it).")
    @click.option("--max-queue", default=64, show_default=True, type=click.IntRange(1, None),
                  help="Requests queued or running at once (503 above it); one generates at a time.")
    @click.option("--backend", type=BACKEND, default="auto", show_default=True,
                  help="auto = NumPy when MLX's device is the CPU.")
    @errors
    def serve_cmd(model: str, host: str, port: int, api_key: str | None, model_id: str | None,
                  max_tokens_limit: int, max_body_bytes: int, max_queue: int, backend: str) -> None:
        """Serve MODEL (GGUF file, HF or MLX folder) with an OpenAI-compatible API:
        GET /v1/models, POST /v1/completions and /v1/chat/completions (stream: true for
        Server-Sent Events). Ctrl-C stops it."""
        try:
            import uvicorn
        except ImportError:
            raise ServeDependencyError("mlxquant serve needs Starlette and uvicorn: "
                                       "pip install 'mlxquant[serve]'") from None
        app = build_app(model, backend, model_id, api_key, max_tokens_limit, max_body_bytes, max_queue)
        server = app.state.server
        if not _is_loopback(host) and not api_key:
            click.echo(f"mlxquant: warning: listening on {host} without --api-key: anyone who can "
                       "reach this port can use the model", err=True)
        click.echo(f"serving {server.engine.model_id} ({server.engine.model.backend}) at "
                   f"http://{host}:{port}/v1 (Ctrl-C stops)", err=True)
        try:
            uvicorn.run(app, host=host, port=port, log_level="warning")
        finally:
            server.engine.closing.set()
            server.executor.shutdown(wait=True, cancel_futures=True)

    @main.command("modelfile")
    @click.argument("gguf", type=click.Path())
    @click.option("-o", "--out", default=None, type=click.Path(),
                  help="Modelfile to write (default: 'Modelfile' beside GGUF).")
    @click.option("--source", default=None, type=click.Path(),
                  help="The folder GGUF was converted from: generation defaults and end tokens "
                       "from its generation_config.json.")
    @click.option("--force", is_flag=True, help="Replace a Modelfile mlxquant wrote (never another).")
    @errors
    def modelfile_cmd(gguf: str, out: str | None, source: str | None, force: bool) -> None:
        """Write an Ollama Modelfile for GGUF: FROM, the chat TEMPLATE where Ollama may not
        recognise the model's own, stop tokens and generation defaults."""
        from ..formats.modelfile import write_modelfile

        path = write_modelfile(gguf, source=source, force=force, out=out)
        click.echo(f"wrote {path}; create the Ollama model with: ollama create NAME -f {path}")
