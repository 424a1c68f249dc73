"""llama.cpp's command-line tools as oracles: ``llama-imatrix``, ``llama-perplexity`` and
``llama-quantize``, built from the llama.cpp tree vendored in llama-cpp-python's source archive
(the same pinned source as :mod:`mlxquant.testing.oracle`'s library) by
``scripts/build_llama_tools.sh``, which ``scripts/test.sh`` runs once.

Found in ``$MLXQUANT_LLAMA_TOOLS`` when set, else in
``${MLXQUANT_CACHE:-~/.cache/mlxquant}/llama-tools/<version>/bin``. The tools run with 2 threads
(this project's machines) unless asked otherwise. Test support only.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Sequence

from .inputs import cache_dir

VERSION = "0.3.36"  # llama-cpp-python, whose vendored llama.cpp the tools are built from
ENV = "MLXQUANT_LLAMA_TOOLS"
TOOLS = ("llama-imatrix", "llama-perplexity", "llama-quantize")


class ToolUnavailable(RuntimeError):
    """A llama.cpp tool is not built (``bash scripts/build_llama_tools.sh`` builds them)."""


def tools_dir() -> Path:
    env = os.environ.get(ENV)
    return Path(env) if env else cache_dir() / "llama-tools" / VERSION / "bin"


def tool(name: str) -> Path:
    """The path of tool ``name`` (e.g. ``"llama-imatrix"``). Raises ToolUnavailable."""
    p = tools_dir() / name
    if not (p.is_file() and os.access(p, os.X_OK)):
        raise ToolUnavailable(f"{p} not found (bash scripts/build_llama_tools.sh builds it)")
    return p


def have_tools(names: Sequence[str] = TOOLS) -> bool:
    try:
        for n in names:
            tool(n)
    except ToolUnavailable:
        return False
    return True


def run_tool(name: str, args: Sequence[str | os.PathLike], timeout: float = 1800) -> subprocess.CompletedProcess:
    """Run tool ``name`` with ``args``; raises RuntimeError with its output's tail when it fails."""
    cmd = [str(tool(name)), *map(str, args)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        tail = (r.stdout + r.stderr)[-2000:]
        raise RuntimeError(f"{name} failed ({r.returncode}): {' '.join(cmd)}\n{tail}")
    return r


# llama.cpp's attention in float32: flash attention off (on the CPU it rounds through float16 even
# with a float32 KV cache) and a float32 KV cache. Measured on SmolLM2 F32 (ctx 128, 4 chunks) vs
# mlxquant's float32 runtime: max relative error of in_sum2/counts 6.4e-5 with these flags, 3.7e-3
# with llama-imatrix's defaults (attn_output and ffn_down inputs; cosine still >= 0.9999999).
FLOAT32_ATTENTION = ("-fa", "off", "-ctk", "f32", "-ctv", "f32")


def llama_imatrix(model: str | os.PathLike, text: str | os.PathLike, out: str | os.PathLike, ctx: int,
                  chunks: int | None = None, threads: int = 2, float32_attention: bool = True,
                  extra: Sequence[str] = ()) -> subprocess.CompletedProcess:
    """``llama-imatrix -m MODEL -f TEXT -o OUT -c CTX [--chunks N] -t THREADS`` (CPU only), with
    :data:`FLOAT32_ATTENTION` unless ``float32_attention`` is False (llama-imatrix's defaults)."""
    args = ["-m", model, "-f", text, "-o", out, "-c", str(ctx), "-t", str(threads), "-tb", str(threads),
            *(FLOAT32_ATTENTION if float32_attention else ()), *extra]
    if chunks is not None:
        args += ["--chunks", str(chunks)]
    return run_tool("llama-imatrix", args)


def llama_quantize(src: str | os.PathLike, dst: str | os.PathLike, preset: str,
                   imatrix: str | os.PathLike | None = None, threads: int = 2) -> subprocess.CompletedProcess:
    """``llama-quantize [--imatrix FILE] SRC DST PRESET THREADS``."""
    args: list[str | os.PathLike] = ["--imatrix", imatrix] if imatrix is not None else []
    return run_tool("llama-quantize", [*args, src, dst, preset, str(threads)])
