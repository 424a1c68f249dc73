"""Weights for the runtime: any model mlxquant reads, as float32 tensors in Hugging Face layout.

:func:`open_weights` opens a GGUF file (any tensor type, decoded by mlxquant's codecs), a Hugging
Face folder, or an MLX folder (:mod:`mlxquant.formats.mlx_folder`, quantized linears dequantized)
and returns a :class:`Weights`: a config.json-style dict plus ``get(hf_name)``. GGUF tensors are mapped back to
HF names and layout by the architecture module (Q/K un-permuted, gemma norms minus one), so one
forward pass serves every source.

Memory: decoded tensors are kept while their total stays within ``budget`` bytes (default: half of
the memory available when the model is opened); tensors past the budget are decoded again each time
they are needed, i.e. per layer during the forward pass, so a model whose float32 weights would not
fit still runs (slower).

GGUF linears (attention and MLP projections, the output head and the token embedding) of a
quantized or half type stay in their blocks, memory-mapped from the file
(:class:`~mlxquant.runtime.kernels.QuantMatrix`, returned by :meth:`Weights.linear`): the forward
pass multiplies them with the fused kernels, so resident memory is about the file size plus the
activations, and :meth:`Weights.get` still decodes any tensor to float32 on demand. F32 tensors
are read into owned arrays as before (an earlier measurement found BLAS ~8x slower on file-backed
pages; measured again for issue 16, on resident pages it was as fast: 0.15-0.17 ms for a SmolLM2
1536x576 x-vector product either way, so they could be mapped too). The quantized
path is the default for GGUF; ``MLXQUANT_FUSED=0`` (or ``open_weights(..., fused=False)``) widens
every tensor to float32 as before, for comparisons.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..errors import FormatError
from ..models import get_architecture, get_architecture_by_gguf
from ..models.base import Architecture
from .kernels import QuantMatrix

log = logging.getLogger(__name__)


def available_memory() -> int:
    """Bytes of memory available to this process (Linux ``MemAvailable``; 8 GiB when unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 8 << 30


class Weights:
    """Float32 tensors by Hugging Face name, decoded on demand, cached within a byte budget.

    Attributes:
        path: the model file or folder.
        format: ``"gguf"``, ``"hf"`` or ``"mlx"``.
        config: config.json-style hyper-parameters (for GGUF: rebuilt from the metadata).
        arch: the :class:`~mlxquant.models.base.Architecture`.
        metadata: GGUF metadata ({} for folders), for the tokenizer.
        file_bytes: size on disk (file, or every file of the folder).
        parameters: number of weights (elements of all tensors).
        float_bytes: bytes of all tensors decoded to float32.
    """

    def __init__(self, path: Path, fmt: str, config: dict[str, Any], arch: Architecture,
                 loaders: dict[str, tuple[Callable[[], np.ndarray], int]],
                 metadata: dict[str, Any], file_bytes: int, stored_bytes: int,
                 budget: int | None = None,
                 blocks: dict[str, tuple[Callable[[], QuantMatrix], int]] | None = None):
        self.path, self.format, self.config, self.arch = path, fmt, config, arch
        self.metadata = metadata
        self.file_bytes = file_bytes
        self.stored_bytes = stored_bytes
        self._loaders = loaders
        self._blocks = blocks or {}  # HF name -> (QuantMatrix maker, stored bytes)
        self.parameters = sum(n for _, n in loaders.values())
        self.float_bytes = 4 * self.parameters
        # what the forward pass keeps: float32 tensors, and the blocks of the kept-quantized ones
        self.resident_bytes = self.float_bytes + sum(
            b - 4 * loaders[n][1] for n, (_, b) in self._blocks.items())
        self.budget = int(available_memory() // 2) if budget is None else int(budget)
        self._cache: dict[str, np.ndarray] = {}
        self._matrices: dict[str, QuantMatrix] = {}
        self._swaps: dict[str, np.ndarray] = {}
        self._cached_bytes = 0
        self.version = 0  # bumped when :meth:`swapped` starts and ends (users cache what they looked up)
        self._lock = threading.Lock()  # threads may run forward passes side by side (imatrix)
        if self.resident_bytes > self.budget:
            log.info("%s: the weights held for the forward pass (%.0f MB) exceed the memory budget "
                     "(%.0f MB): decoding per layer on demand", path, self.resident_bytes / 1e6,
                     self.budget / 1e6)

    @property
    def held(self) -> bool:
        """True when every tensor the forward pass uses stays in memory once looked up (within the
        budget), so that a caller may keep what :meth:`get` / :meth:`linear` returned until
        :attr:`version` changes."""
        return self.resident_bytes <= self.budget

    @property
    def bits_per_weight(self) -> float:
        """8 x stored tensor bytes / weights (as llama.cpp reports BPW)."""
        return 8 * self.stored_bytes / self.parameters if self.parameters else 0.0

    def __contains__(self, name: str) -> bool:
        return name in self._loaders

    def names(self) -> list[str]:
        return list(self._loaders)

    @property
    def quantized(self) -> list[str]:
        """HF names of the tensors kept in their GGUF blocks (see :meth:`linear`)."""
        return list(self._blocks)

    def shape(self, name: str) -> tuple[int, ...]:
        """The HF shape of tensor ``name``."""
        if name in self._blocks:
            return self.linear(name).shape
        return tuple(self.get(name).shape)

    def linear(self, name: str) -> "np.ndarray | QuantMatrix":
        """Weight matrix ``name`` for the forward pass: its GGUF blocks (:class:`QuantMatrix`)
        when kept quantized, else the float32 array of :meth:`get`; values set by
        :meth:`swapped` win."""
        swap = self._swaps.get(name)
        if swap is not None:
            return swap
        m = self._matrices.get(name)
        if m is not None:
            return m
        if name not in self._blocks:
            return self.get(name)
        with self._lock:
            m = self._matrices.get(name)
            if m is None:
                m = self._matrices[name] = self._blocks[name][0]()
        return m

    def rows(self, name: str, idx: np.ndarray) -> np.ndarray:
        """Rows ``idx`` of matrix ``name`` as float32 (an embedding lookup decodes only these)."""
        w = self.linear(name)
        return w.rows(idx) if isinstance(w, QuantMatrix) else w[idx].astype(np.float32)

    def get(self, name: str) -> np.ndarray:
        """Tensor ``name`` (HF name) as float32 (read-only use: callers must not modify it)."""
        hit = self._swaps.get(name)
        if hit is None:
            hit = self._cache.get(name)
        if hit is not None:
            return hit
        try:
            load, n = self._loaders[name]
        except KeyError:
            raise FormatError(f"{self.path}: no tensor {name!r}") from None
        arr = np.ascontiguousarray(load(), dtype=np.float32)
        if _file_backed(arr):
            # e.g. an F32 tensor viewed straight from the memory-mapped file: BLAS on file-backed
            # pages was ~8x slower here (and the pages can be evicted), so own a copy; in slices
            # of 16 MiB, so that Ctrl-C is answered while a large tensor is read from disk
            own = np.empty_like(arr)
            step = max(1, (16 << 20) // max(1, arr[:1].nbytes)) if arr.ndim else 0
            for i in range(0, len(arr), step) if step else ():
                own[i:i + step] = arr[i:i + step]
            arr = own if step else arr.copy()
        with self._lock:
            if name in self._cache:
                return self._cache[name]
            if self._cached_bytes + arr.nbytes <= self.budget:
                self._cache[name] = arr
                self._cached_bytes += arr.nbytes
        return arr

    @contextlib.contextmanager
    def swapped(self, name: str, values: np.ndarray) -> Iterator[None]:
        """Serve ``values`` (float32, the tensor's shape) for tensor ``name`` inside the block, then
        the stored tensor again (what-if runs: the allocator's gains). Only for weights kept in
        memory (:meth:`preload` returned True)."""
        if name not in self._matrices and name not in self._cache:
            raise KeyError(f"{self.path}: tensor {name!r} is not held in memory")
        if name in self._swaps:
            raise KeyError(f"{self.path}: tensor {name!r} is already swapped")
        shape = self._matrices[name].shape if name in self._matrices else self._cache[name].shape
        if tuple(values.shape) != tuple(shape):
            raise ValueError(f"tensor {name!r}: values of shape {values.shape}, not {shape}")
        self._swaps[name] = np.ascontiguousarray(values, dtype=np.float32)
        self.version += 1
        try:
            yield
        finally:
            del self._swaps[name]
            self.version += 1

    def preload(self) -> bool:
        """Decode every tensor now (the kept-quantized ones: map their blocks) when all fit in the
        budget (True), so that a timed loop or threads started later find them ready; otherwise
        do nothing (False)."""
        if self.resident_bytes > self.budget:
            return False
        for name in self._loaders:
            if name in self._blocks:
                self.linear(name)
            else:
                self.get(name)
        return True

    def get_optional(self, name: str) -> np.ndarray | None:
        return self.get(name) if name in self._loaders else None


# GGUF types the forward pass keeps in their blocks (everything with a block codec, and halves)
_WIDENED = {"F32", "F64", "I8", "I16", "I32", "I64"}


def _is_linear(hf_name: str, shape: tuple[int, ...]) -> bool:
    """A matrix the forward pass multiplies by (or looks rows up in): projections, the output
    head, the token embedding."""
    return len(shape) == 2 and (hf_name.endswith("_proj.weight")
                                or hf_name in ("lm_head.weight", "model.embed_tokens.weight"))


def _stored_rows(arch: Architecture, gname: str, rows: int, cfg: dict[str, Any]) -> np.ndarray | None:
    """The stored row of each HF row of tensor ``gname`` when the architecture's GGUF -> HF
    transform only reorders rows (llama's Q/K heads), else None (the tensor must be widened)."""
    probe = np.arange(rows, dtype=np.float64)
    try:
        order = np.asarray(arch.tensor_from_gguf(gname, probe, cfg))
    except (FormatError, ValueError):
        return None
    if order.shape != (rows,) or not np.array_equal(np.sort(order), probe):
        return None
    return order.astype(np.intp)


def _fused_default() -> bool:
    return os.environ.get("MLXQUANT_FUSED", "1").strip().lower() not in ("0", "false", "no", "off")


def _gguf(path: Path, budget: int | None, fused: bool | None = None) -> Weights:
    from ..formats.gguf_read import GGUFModel

    g = GGUFModel(path)
    arch = get_architecture_by_gguf(g.architecture or "")
    shapes = {t.name: t.shape for t in g.tensors}
    rope_freqs = g.tensor("rope_freqs.weight") if "rope_freqs.weight" in g else None
    try:
        cfg = arch.hparams_from_gguf(g.metadata, shapes, rope_freqs)
    except FormatError:
        raise  # already names the file and the key
    except (KeyError, TypeError, ValueError) as e:
        raise FormatError(f"{path}: incomplete {arch.name} hyper-parameters in the metadata ({e})") from None
    loaders: dict[str, tuple[Callable[[], np.ndarray], int]] = {}
    blocks: dict[str, tuple[Callable[[], QuantMatrix], int]] = {}
    keep = _fused_default() if fused is None else fused
    stored = 0
    for t in g.tensors:
        hf_name = arch.tensor_name_from_gguf(t.name)
        stored += t.nbytes
        if hf_name is None:
            continue

        def load(gname: str = t.name) -> np.ndarray:
            return arch.tensor_from_gguf(gname, g.tensor(gname), cfg)

        loaders[hf_name] = (load, t.n_elements)
        if keep and t.type not in _WIDENED and _is_linear(hf_name, t.shape):
            order = _stored_rows(arch, t.name, t.shape[0], cfg)
            if order is None:
                continue

            def block(gname: str = t.name, qtype: str = t.type, cols: int = t.shape[1],
                      order: np.ndarray = order) -> QuantMatrix:
                return QuantMatrix(g.raw(gname), qtype, cols, f"{path}: {gname}", order)

            blocks[hf_name] = (block, t.nbytes)
    # g.metadata (not a copy) keeps the file name for the tokenizer's errors
    return Weights(path, "gguf", cfg, arch, loaders, g.metadata, g.header.file_size, stored, budget,
                   blocks)


def _hf(path: Path, budget: int | None) -> Weights:
    from ..formats.hf import HFModel

    m = HFModel(path)
    arch = get_architecture(m.config)
    loaders: dict[str, tuple[Callable[[], np.ndarray], int]] = {}
    stored = 0
    files = set()
    for name in m.tensor_names:
        info = m.info(name)
        files.add(info.file)
        stored += info.end - info.start
        if arch.skips_hf_tensor(arch.normalize_hf_name(name)):
            continue
        loaders[arch.normalize_hf_name(name)] = (lambda n=name: m.tensor(n),
                                                 int(np.prod(info.shape, dtype=np.int64)))
    file_bytes = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    return Weights(path, "hf", dict(m.config), arch, loaders, {}, file_bytes, stored, budget)


def _mlx(path: Path, budget: int | None) -> Weights:
    """An MLX (quantized) folder: quantized linears are dequantized to float32 by
    :func:`mlxquant.quant.transcode.dequantize_mlx`."""
    from ..formats.mlx_folder import MLXModel
    from ..quant.transcode import dequantize_mlx

    m = MLXModel(path)
    arch = get_architecture(m.config)
    mods = m.quantized_modules
    loaders: dict[str, tuple[Callable[[], np.ndarray], int]] = {}
    stored = 0
    for name in m.tensor_names:
        info = m.info(name)
        stored += info.end - info.start
        module, _, suffix = name.rpartition(".")
        if module in mods and suffix in ("scales", "biases"):
            continue
        hf_name = arch.normalize_hf_name(name)
        if arch.skips_hf_tensor(hf_name):
            continue
        if module in mods and suffix == "weight":
            rows = int(np.prod(info.shape[:-1], dtype=np.int64))
            loaders[hf_name] = (lambda mod=module: dequantize_mlx(m.quantized(mod)), rows * mods[module]["cols"])
        else:
            loaders[hf_name] = (lambda n=name: m.tensor(n), int(np.prod(info.shape, dtype=np.int64)))
    file_bytes = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    return Weights(path, "mlx", dict(m.config), arch, loaders, {}, file_bytes, stored, budget)


def open_weights(path: str | os.PathLike, budget: int | None = None, fused: bool | None = None) -> Weights:
    """Open a model for the runtime.

    Args:
        path: GGUF file, Hugging Face folder, or MLX (quantized) folder.
        budget: bytes of decoded float32 weights to keep in memory (default: half the available
            memory); the rest is decoded per layer on each use.
        fused: GGUF only: keep quantized linears in their blocks (default: True unless the
            environment sets ``MLXQUANT_FUSED=0``); False widens every tensor to float32.

    Raises:
        FileNotFoundError, FormatError, UnsupportedArchitectureError.
    """
    from ..formats.inspect import detect_format
    from ..formats.mlx_folder import is_mlx_folder

    p = Path(path)
    fmt = detect_format(p)
    if fmt == "gguf":
        return _gguf(p, budget, fused)
    if is_mlx_folder(p):
        return _mlx(p, budget)
    return _hf(p, budget)


def _file_backed(arr: np.ndarray) -> bool:
    """True when ``arr`` views memory it does not own that is not another array's (a memory map,
    a bytes object): an array made by reading a file into a buffer is not."""
    base = arr
    while isinstance(base, np.ndarray):
        if base.flags.owndata:
            return False
        base = base.base
    return True
