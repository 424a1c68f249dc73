"""MLX model folders, as mlx-lm and mlx-swift-lm load them: reading and writing, nothing else.

Layout::

    config.json                     the model's config + "quantization" (and the same block again
                                    as "quantization_config"): {"group_size", "bits", "mode",
                                    "<module path>": {group_size, bits, mode} | false, ...}
    model.safetensors.index.json    {"metadata": {"total_size"}, "weight_map": {tensor: shard}}
    model[-0000i-of-0000n].safetensors
                                    Hugging Face tensor names; a quantized module ``p`` holds
                                    ``p.weight`` (uint32 packed codes), ``p.scales`` and, for the
                                    affine mode, ``p.biases`` (model dtype, or float32)
    tokenizer.json, tokenizer_config.json, special_tokens_map.json, chat_template.jinja, ...
    mlxquant.json                   provenance (mlxquant outputs only)

Reading checks every shard header against its file, the index against the shards, and each
quantized module's tensor shapes against its config entry, so a folder that mlx-lm would load
wrongly (or crash on) is refused with one line naming the file and the tensor.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import FormatError
from .hf import TOKENIZER_FILES, bf16_to_f32, safetensors_files_size, write_safetensors_folder
from .json_file import read_json_object
from .safetensors_read import (HFTensor, check_biases, embedding_rows, index_safetensors,
                               read_safetensors_header)

log = logging.getLogger(__name__)

# safetensors dtype -> (NumPy dtype, bytes); BF16 is kept as its uint16 bit patterns
DTYPES: dict[str, tuple[Any, int]] = {
    "F32": (np.float32, 4), "F16": (np.float16, 2), "BF16": (np.uint16, 2), "F64": (np.float64, 8),
    "U32": (np.uint32, 4), "I32": (np.int32, 4), "U8": (np.uint8, 1), "I8": (np.int8, 1),
    "I64": (np.int64, 8), "U16": (np.uint16, 2), "I16": (np.int16, 2), "BOOL": (np.bool_, 1),
}
FLOAT_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}
DEFAULT_SHARD_BYTES = 5 << 30


# A tensor in a shard: safetensors dtype, NumPy shape, file and absolute byte range.
TensorInfo = HFTensor


def read_header(path: Path) -> dict[str, TensorInfo]:
    """Parse and check one safetensors header (offsets inside the file, sizes match shapes)."""
    return read_safetensors_header(path, DTYPES)


def is_mlx_folder(path: str | os.PathLike) -> bool:
    """A folder whose config.json has a ``quantization`` block, or whose weights hold ``.scales``
    tensors (an unquantized MLX folder is an ordinary Hugging Face folder)."""
    p = Path(path)
    if not (p / "config.json").is_file():
        return False
    try:
        cfg = read_json_object(p / "config.json", "config.json")
    except FormatError:
        return False  # not readable as an MLX folder; the HF reader reports the problem
    return isinstance(cfg.get("quantization"), dict)


class MLXModel:
    """An MLX model folder opened for reading.

    Attributes:
        path: the folder.
        config: config.json (with its ``quantization`` block).
        quantization: the block (``{}`` for an unquantized folder).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_dir():
            raise FormatError(f"{self.path}: not an MLX model folder")
        from ..models.hparams import check_hf_config, check_quantization

        cfg_path = self.path / "config.json"
        self.config: dict = read_json_object(cfg_path, "config.json")
        q = self.config.get("quantization", self.config.get("quantization_config")) or {}
        self.quantization: dict = check_quantization(q, cfg_path)
        self._tensors = self._index()
        check_biases(self._tensors)
        check_hf_config(self.config, cfg_path, embedding_rows(self._tensors))
        self._modules = self._check_modules()

    def _index(self) -> dict[str, TensorInfo]:
        return index_safetensors(self.path, "model*.safetensors", DTYPES)

    def module_params(self, module: str) -> dict | None:
        """The quantization parameters of ``module`` as config.json gives them (per-module
        entry, else the defaults), or None when it is not quantized."""
        q = self.quantization
        entry = q.get(module)
        if entry is False or f"{module}.scales" not in self._tensors:
            return None
        own = entry if isinstance(entry, dict) else {}

        def pick(k: str, default: Any) -> Any:
            v = own.get(k)
            return v if v is not None else q.get(k) if q.get(k) is not None else default

        # types and ranges were checked by check_quantization when the folder was opened
        return {"group_size": int(pick("group_size", 64)), "bits": int(pick("bits", 4)),
                "mode": str(pick("mode", "affine"))}

    def _check_modules(self) -> dict[str, dict]:
        """Every ``p.scales`` needs ``p.weight``, and shapes must agree with the config."""
        mods: dict[str, dict] = {}
        cfg_file = self.path / "config.json"
        for name, t in self._tensors.items():
            # a packed weight whose scales are missing (e.g. left out of the shard index)
            m = name[: -len(".weight")]
            if (self.quantization and name.endswith(".weight") and t.dtype == "U32"
                    and f"{m}.scales" not in self._tensors and self.quantization.get(m) is not False):
                raise FormatError(f"{self.path}: quantized tensor {name!r} has no {m}.scales")
        for name in self._tensors:
            if not name.endswith(".scales"):
                continue
            m = name[: -len(".scales")]
            w, s = self._tensors.get(f"{m}.weight"), self._tensors[name]
            if w is None:
                raise FormatError(f"{self.path}: tensor {name!r} has no {m}.weight")
            if not self.quantization:
                raise FormatError(f"{cfg_file}: no quantization block, but {m!r} is quantized")
            if self.quantization.get(m) is False:
                raise FormatError(f"{cfg_file}: {m!r} is marked unquantized (false) but has scales")
            p = self.module_params(m)
            if p is None:  # unreachable: m.scales exists and m is not marked false
                raise FormatError(f"{cfg_file}: no quantization parameters for {m!r}")
            bits, g, mode = p["bits"], p["group_size"], p["mode"]
            cols = s.shape[-1] * g if s.shape else 0
            ok = (w.dtype == "U32" and len(w.shape) == len(s.shape) >= 2 and w.shape[:-1] == s.shape[:-1]
                  and bits > 0 and w.shape[-1] * 32 == cols * bits)
            if mode == "affine":
                b = self._tensors.get(f"{m}.biases")
                ok = ok and b is not None and b.shape == s.shape and s.dtype in ("F32", "F16", "BF16")
            else:
                ok = ok and s.dtype == "U8"
            if not ok:
                raise FormatError(
                    f"{cfg_file}: quantization ({bits} bits, group {g}, {mode}) for {m!r} disagrees "
                    f"with its tensors (weight {w.dtype} {list(w.shape)}, scales {s.dtype} {list(s.shape)})")
            mods[m] = {**p, "cols": cols}
        return mods

    # -- tensors -------------------------------------------------------------------------------
    @property
    def tensor_names(self) -> list[str]:
        return list(self._tensors)

    @property
    def quantized_modules(self) -> dict[str, dict]:
        """module path -> {group_size, bits, mode, cols} for every quantized module."""
        return dict(self._modules)

    def info(self, name: str) -> TensorInfo:
        try:
            return self._tensors[name]
        except KeyError:
            raise KeyError(f"{self.path}: no tensor named {name!r}") from None

    def raw(self, name: str) -> np.ndarray:
        """A tensor as stored (bfloat16 as uint16 bit patterns), read from disk."""
        t = self.info(name)
        dt, size = DTYPES[t.dtype]
        count = (t.end - t.start) // size
        try:
            arr = np.fromfile(t.file, dtype=np.dtype(dt).newbyteorder("<"), count=count, offset=t.start)
        except OSError as e:
            raise FormatError(f"{t.file}: cannot read tensor {name!r}: {e}") from None
        if arr.size != count:
            raise FormatError(f"{t.file}: tensor {name!r} is truncated")
        return arr.reshape(t.shape)

    def tensor(self, name: str) -> np.ndarray:
        """A float tensor as float32 (integer tensors keep their dtype)."""
        t = self.info(name)
        a = self.raw(name)
        if t.dtype == "BF16":
            return bf16_to_f32(a)
        return a.astype(np.float32) if t.dtype in ("F16", "F32", "F64") else a

    def quantized(self, module: str):
        """The :class:`~mlxquant.quant.transcode.MLXQuant` of a quantized module (float32
        scales/biases for affine; raw bytes for the float modes). 2-D only."""
        from ..quant.transcode import MLXQuant

        p = self._modules[module]
        w = self.raw(f"{module}.weight")
        s = self.tensor(f"{module}.scales")
        b = self.tensor(f"{module}.biases") if p["mode"] == "affine" else None
        if w.ndim != 2:
            raise FormatError(f"{self.path}: quantized tensor {module!r} has {w.ndim} dimensions "
                              "(only 2-D matrices are supported)")
        return MLXQuant(w, s, b, p["bits"], p["group_size"], p["mode"], p["cols"])

    @property
    def scales_dtype(self) -> str | None:
        """The safetensors dtype of the first affine scales tensor, or None."""
        for m, p in self._modules.items():
            if p["mode"] == "affine":
                return self._tensors[f"{m}.scales"].dtype
        return None


# -- writing --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MLXTensorSpec:
    """A tensor to write: name, NumPy shape, safetensors dtype (U32, U8, F16, BF16, F32)."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * DTYPES[self.dtype][1]


def _bytes(spec: MLXTensorSpec, arr: np.ndarray) -> bytes:
    a = np.asarray(arr)
    if tuple(a.shape) != tuple(spec.shape):
        raise FormatError(f"tensor {spec.name!r}: got shape {a.shape}, expected {spec.shape}")
    want = np.dtype(DTYPES[spec.dtype][0]).newbyteorder("<")
    if a.dtype != want:
        if spec.dtype == "BF16" and a.dtype == np.float32:
            from .hf import f32_to_bf16

            a = f32_to_bf16(a)
        elif spec.dtype in ("F16", "F32") and np.issubdtype(a.dtype, np.floating):
            a = a.astype(want)
        else:
            raise FormatError(f"tensor {spec.name!r}: got {a.dtype} data for dtype {spec.dtype}")
    return np.ascontiguousarray(a).tobytes()


def write_mlx_folder(
    out: str | os.PathLike,
    config: dict,
    tensors: Sequence[MLXTensorSpec],
    data: Callable[[MLXTensorSpec], np.ndarray],
    *,
    files: dict[str, Any] | None = None,
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
    force: bool = False,
    progress: Callable[[MLXTensorSpec], None] | None = None,
) -> Path:
    """Write an MLX model folder atomically (temporary folder, renamed when complete).

    Args:
        out: the folder to create (must not exist unless ``force``).
        config: written as config.json (its ``quantization`` block is copied to
            ``quantization_config`` as mlx-lm does).
        tensors: specs in order; ``data(spec)`` returns each array once (streaming).
        files: extra files, name -> dict (JSON), str or bytes (tokenizer, mlxquant.json, ...).
        max_shard_bytes: shard size limit (default 5 GiB); the index is always written.
        force: replace an existing ``out``.
        progress: called after each tensor.
    """
    out = Path(out)
    cfg = dict(config)
    if isinstance(cfg.get("quantization"), dict):
        cfg["quantization_config"] = cfg["quantization"]
    return write_safetensors_folder(
        out, cfg, tensors, data, _bytes, fmt="mlx", always_index=True,
        files=files, max_shard_bytes=max_shard_bytes, force=force, progress=progress)


def weight_files_size(tensors: Sequence[MLXTensorSpec],
                      max_shard_bytes: int = DEFAULT_SHARD_BYTES) -> int:
    """Bytes of the safetensors shards and the shard index :func:`write_mlx_folder` writes for
    ``tensors`` (what ``convert --to mlx --target-size`` budgets): exact, nothing written."""
    return safetensors_files_size(tensors, fmt="mlx", always_index=True, max_shard_bytes=max_shard_bytes)


def tokenizer_files(folder: str | os.PathLike) -> dict[str, bytes]:
    """The tokenizer, generation and chat-template files of a HF/MLX folder, copied as bytes
    (templates are copied, never rendered)."""
    p = Path(folder)
    return {n: (p / n).read_bytes() for n in TOKENIZER_FILES if (p / n).is_file()}
