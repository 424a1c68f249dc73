"""Per-architecture knowledge: tensor-name maps, value transforms, hyper-parameters, and
llama.cpp's per-tensor type rules for its quantization presets."""

from .base import Architecture
from .presets import ALL_PRESETS, FTYPES, PRESETS, allows_quantization, plan_tensor_types, preset_file_type
from .registry import ARCHITECTURES, SUPPORTED, get_architecture, get_architecture_by_gguf

__all__ = [
    "Architecture",
    "ARCHITECTURES",
    "SUPPORTED",
    "get_architecture",
    "get_architecture_by_gguf",
    "PRESETS",
    "ALL_PRESETS",
    "FTYPES",
    "plan_tensor_types",
    "preset_file_type",
    "allows_quantization",
]
