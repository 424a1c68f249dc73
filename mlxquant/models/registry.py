"""Which :class:`~mlxquant.models.base.Architecture` handles a model, from its config.json or its
GGUF ``general.architecture``."""

from __future__ import annotations

from typing import Any, Mapping

from ..errors import UnsupportedArchitectureError
from .base import Architecture
from .gemma import Gemma2Architecture, Gemma3Architecture
from .llama import LlamaArchitecture
from .qwen import Qwen2Architecture, Qwen3Architecture

ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in (LlamaArchitecture(), Qwen2Architecture(), Qwen3Architecture(),
              Gemma2Architecture(), Gemma3Architecture())
}

SUPPORTED: tuple[str, ...] = tuple(ARCHITECTURES)


def _supported_line() -> str:
    hf = ", ".join(sorted({t for a in ARCHITECTURES.values() for t in a.hf_model_types}))
    return f"supported: {', '.join(SUPPORTED)} (config.json model_type: {hf})"


def get_architecture(hf_config: Mapping[str, Any]) -> Architecture:
    """The architecture of a Hugging Face config.json (``architectures`` first, then
    ``model_type``). Raises UnsupportedArchitectureError with a one-line list of supported ones."""
    listed = hf_config.get("architectures")
    names = [n for n in listed if isinstance(n, str)] if isinstance(listed, list) else []
    for n in names:
        for arch in ARCHITECTURES.values():
            if n in arch.hf_architectures:
                return arch
    model_type = hf_config.get("model_type")
    text = hf_config.get("text_config")
    types = [model_type] + ([text.get("model_type")] if isinstance(text, Mapping) else [])
    for t in types:
        for arch in ARCHITECTURES.values():
            if isinstance(t, str) and t in arch.hf_model_types:
                return arch
    what = "/".join(str(x)[:60] for x in [*names, model_type] if x) or "no architectures/model_type"
    raise UnsupportedArchitectureError(f"unsupported architecture {what}; {_supported_line()}")


def get_architecture_by_gguf(gguf_arch: str) -> Architecture:
    """The architecture for a GGUF ``general.architecture`` string."""
    arch = ARCHITECTURES.get(str(gguf_arch))
    if arch is None:
        raise UnsupportedArchitectureError(
            f"unsupported GGUF architecture {gguf_arch!r}; {_supported_line()}")
    return arch
