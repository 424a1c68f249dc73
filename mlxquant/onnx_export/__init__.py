"""ONNX export: a decoder graph with a KV cache and block-quantized weights (MatMulNBits / QDQ),
for onnxruntime and onnxruntime-genai. See :func:`export_onnx`.

Needs the ``onnx`` package (the ``onnx`` extra: onnx, onnxruntime, onnxruntime-genai); without it,
importing this package raises :class:`~mlxquant.errors.OptionError` with one line saying so (the
CLI prints it like any other bad option)."""

import importlib.util

if importlib.util.find_spec("onnx") is None:  # pragma: no cover - the test set-up installs it
    from ..errors import OptionError

    raise OptionError("--to onnx needs the onnx package: pip install 'mlxquant[onnx]' "
                      "(onnx, onnxruntime, onnxruntime-genai)")

from .api import OUTTYPES, export_onnx  # noqa: E402

__all__ = ["OUTTYPES", "export_onnx"]
