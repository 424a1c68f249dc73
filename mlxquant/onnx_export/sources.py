"""A source model as the ONNX exporter reads it: float32 tensors in Hugging Face layout
(:func:`mlxquant.runtime.weights.open_weights`) plus, for GGUF files and MLX folders, the stored
integer codes of each matrix in MLX's affine form (:class:`~mlxquant.quant.transcode.MLXQuant`).

GGUF Q/K projections are stored in llama.cpp's row order; their codes, scales and offsets are
un-permuted by the architecture's own :meth:`tensor_from_gguf` (whole rows move, so a row's codes
move with it and stay exact).
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from ..errors import QuantTypeError
from ..quant.transcode import EXACT_FROM_GGUF, MLXQuant, from_gguf
from ..runtime.weights import Weights, open_weights


class Source:
    """One opened source model.

    Attributes:
        path: the GGUF file or folder.
        weights: float32 tensors by HF name (and the config, architecture, GGUF metadata).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.weights: Weights = open_weights(self.path)
        self._gguf = None
        self._gguf_names: dict[str, tuple[str, str]] = {}  # hf name -> (gguf name, type)
        self._mlx = None
        if self.weights.format == "gguf":
            from ..formats.gguf_read import GGUFModel

            self._gguf = GGUFModel(self.path)
            arch = self.weights.arch
            for t in self._gguf.tensors:
                hf = arch.tensor_name_from_gguf(t.name)
                if hf is not None:
                    self._gguf_names[hf] = (t.name, t.type)
        elif self.weights.format == "mlx":
            from ..formats.mlx_folder import MLXModel

            self._mlx = MLXModel(self.path)

    def close(self) -> None:
        if self._gguf is not None:
            self._gguf.close()

    def stored_type(self, hf_name: str) -> str:
        """How ``hf_name`` is stored: a GGUF type, ``mlx affine 4-bit g64``, or ``float``."""
        if hf_name in self._gguf_names:
            return self._gguf_names[hf_name][1]
        if self._mlx is not None:
            params = self._mlx.quantized_modules.get(self._module(hf_name))
            if params is not None:
                return f"mlx {params['mode']} {params['bits']}-bit g{params['group_size']}"
        return "float"

    def _module(self, hf_name: str) -> str:
        # MLX folders keep the file's names; the architecture normalizes them to HF names
        assert self._mlx is not None
        arch = self.weights.arch
        for module in self._mlx.quantized_modules:
            if arch.normalize_hf_name(f"{module}.weight") == hf_name:
                return module
        return ""

    def codes(self, hf_name: str) -> MLXQuant | None:
        """The stored codes of matrix ``hf_name`` in MLX's affine form, HF row order; None for
        float tensors and for GGUF types whose codes MLX's form cannot hold."""
        if self._gguf is not None:
            if hf_name not in self._gguf_names:
                return None
            gname, qtype = self._gguf_names[hf_name]
            if qtype not in EXACT_FROM_GGUF:
                return None
            shape = self._gguf.info(gname).shape
            try:
                q = from_gguf(self._gguf.read(gname), qtype, int(shape[-1]))
            except QuantTypeError:
                return None
            arch, cfg = self.weights.arch, self.weights.config

            def rows(a):  # whole rows: codes, scales and offsets move together
                return None if a is None else arch.tensor_from_gguf(gname, a, cfg).copy()

            return replace(q, weight=rows(q.weight), scales=rows(q.scales), biases=rows(q.biases))
        if self._mlx is not None:
            module = self._module(hf_name)
            if module:
                return self._mlx.quantized(module)
        return None
