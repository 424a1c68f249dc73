"""``export_onnx``: any model mlxquant reads (HF folder, GGUF file, MLX folder) -> a folder that
onnxruntime and onnxruntime-genai run: ``model.onnx`` (+ ``model.onnx.data`` past 2 GB),
``genai_config.json``, the tokenizer files and ``mlxquant.json`` (provenance, and the list of
files that lets ``--force`` replace the folder later).

Linear weights per ``outtype``: ``int4`` -> MatMulNBits (GGUF Q4_0 codes carried over; Q4_1 /
Q4_K / MLX affine 4-bit codes where their zero points are integers, or always with
``float_zero_points``; everything else quantized per block from the float32 values), ``int8``
-> blocked DequantizeLinear + MatMul (GGUF Q8_0 codes carried over), ``f16`` / ``f32`` -> plain
MatMul. The embedding table stays float (float16 for ``f16``, float32 otherwise); a tied output
matrix is quantized like any linear. Every tensor gets a report record: how it was made and its
max / mean abs error against the source's float32 values.

onnxruntime (1.32) fuses the int8 DequantizeLinear + MatMul pair into an 8-bit MatMulNBits that
quantizes the activations to int8 (its ``session.qdq_matmulnbits_accuracy_level`` defaults to 4):
the file holds the exact int8 weights; a session with that entry set to ``"0"`` computes with them
in float32 (mean KLD 1e-3 vs 4e-3 to the float model on SmolLM2).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import onnx

from ..convert.provenance import PROVENANCE_FILE, build as build_provenance
from ..convert.report import ConversionReport, RouteResult, TensorRecord, build_report
from ..errors import OptionError, UnsupportedArchitectureError
from ..formats.atomic import atomic_dir, check_output
from ..runtime.spec import model_spec
from .genai import GENAI_TYPES, genai_config, tokenizer_files
from .graph import Linear, build_decoder
from .sources import Source
from .weights import BLOCK_SIZES, BlockQuant, carry_over, errors, quantize_int4, quantize_int8

log = logging.getLogger(__name__)

OUTTYPES = ("int4", "int8", "f16", "f32")
MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx.data"
PROTO_LIMIT = 2_000_000_000 - (64 << 20)  # protobuf's 2 GB cap, less room for the graph itself
LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def check_options(outtype: str, block_size: int | None) -> str:
    """The normalised outtype; OptionError for an unknown outtype or block size."""
    t = str(outtype).lower()
    if t not in OUTTYPES:
        raise OptionError(f"ONNX outtype {outtype!r} is not supported (choose from {', '.join(OUTTYPES)})")
    if block_size is not None:
        if t in ("f16", "f32"):
            raise OptionError(f"block_size applies to int4/int8 ONNX output, not {t}")
        if block_size not in BLOCK_SIZES:
            raise OptionError(f"ONNX block size {block_size} is not supported (choose from "
                              f"{', '.join(map(str, BLOCK_SIZES))})")
    return t


class _Weights:
    """Produces the graph's tensors from a :class:`Source`, recording how each was made."""

    def __init__(self, source: Source, outtype: str, block_size: int | None, symmetric: bool,
                 float_zero_points: bool):
        self.src, self.outtype, self.block_size, self.symmetric = source, outtype, block_size, symmetric
        self.float_zero_points = float_zero_points
        self.w = source.weights
        self.records: list[TensorRecord] = []
        self.tensor_bytes = 0
        self.norm_offset = 0.0

    def tensor(self, name: str) -> np.ndarray | None:
        a = self.w.get_optional(name)
        if a is None:
            return None
        if self.norm_offset and name.endswith("norm.weight"):
            a = a + np.float32(self.norm_offset)
        self.tensor_bytes += a.nbytes
        self.records.append(TensorRecord(name, "F32", self.src.stored_type(name), "float"))
        return a

    def embed(self) -> np.ndarray:
        """The embedding table: float16 for ``f16`` output, float32 otherwise."""
        return self._float("model.embed_tokens.weight", "model.embed_tokens.weight",
                           "f16" if self.outtype == "f16" else "f32")

    def _float(self, name: str, stored: str, kind: str) -> np.ndarray:
        x = self.w.get(stored)
        out = x.astype(np.float16) if kind == "f16" else x
        max_e, mean_e = errors(x, out if out is x else out.astype(np.float32))
        self.tensor_bytes += out.nbytes
        self.records.append(TensorRecord(name, kind.upper(), self.src.stored_type(stored), "float",
                                         max_e or None, _mean(mean_e)))
        return out

    def linear(self, name: str) -> Linear:
        """The ONNX weight of matrix ``name`` (``lm_head.weight`` of a tied model: the embedding)."""
        stored = name if name in self.w else "model.embed_tokens.weight"
        if self.outtype in ("f16", "f32"):
            return self._float(name, stored, self.outtype)
        x = self.w.get(stored)
        source_type = self.src.stored_type(stored)
        bits = 4 if self.outtype == "int4" else 8
        q, status, note = None, "", ""
        codes = self.src.codes(stored)
        if codes is not None:
            q, how = carry_over(codes, bits, self.block_size, self.float_zero_points)
            status, note = ("exact", "") if how == "exact" else ("codes kept", how)
            if q is None:
                note = f"not carried over: {how}"
        if q is None:
            bs = self.block_size or 32
            q = quantize_int4(x, bs, self.symmetric) if bits == 4 else quantize_int8(x, bs)
            status = "quantized" if source_type in ("float", "F32", "F16", "BF16") else "requantized"
        max_e, mean_e = errors(x, q.dequantize())
        note = "; ".join(n for n in (note, _mean(mean_e)) if n)
        zp = "" if q.zero_points is None else ("+zp" if q.zero_points.dtype == np.uint8 else "+fzp")
        self.records.append(TensorRecord(name, f"int{bits}/g{q.block_size}{zp}", source_type, status,
                                         max_e, note))
        self.tensor_bytes += _bytes(q)
        return q


def _mean(mean_e: float) -> str:
    return f"mean abs error {mean_e:.3g}" if mean_e else ""


def _bytes(q: BlockQuant) -> int:
    """Stored bytes: codes, float32 scales, zero points (uint8 ones packed two per byte)."""
    z = q.zero_points
    zp = 0.0 if z is None else z.size * (0.5 if z.dtype == np.uint8 else z.itemsize)
    return int(q.rows * q.k_blocks * q.block_size * q.bits // 8 + 4 * q.scales.size + zp)


def _save(model: onnx.ModelProto, folder: Path) -> list[str]:
    """Write ``model.onnx`` (weights inside it, or in ``model.onnx.data`` past 2 GB)."""
    size = sum(len(t.raw_data) for t in model.graph.initializer)
    if size <= PROTO_LIMIT:
        onnx.save_model(model, folder / MODEL_FILE)
        return [MODEL_FILE]
    onnx.save_model(model, folder / MODEL_FILE, save_as_external_data=True, all_tensors_to_one_file=True,
                    location=DATA_FILE, size_threshold=1024)
    return [MODEL_FILE, DATA_FILE]


def export_onnx(src: str | os.PathLike, out: str | os.PathLike, outtype: str = "int4",
                block_size: int | None = None, force: bool = False, symmetric: bool = False,
                float_zero_points: bool = False) -> ConversionReport:
    """Export a model to an ONNX folder for onnxruntime / onnxruntime-genai.

    Args:
        src: HF folder, GGUF file or MLX folder (llama, qwen2, qwen3, gemma2, gemma3).
        out: the folder to create.
        outtype: ``"int4"`` (default), ``"int8"``, ``"f16"`` or ``"f32"``.
        block_size: weights per quantization block (16..256, a power of two). None (default):
            keep a quantized source's blocks where its codes carry over, 32 otherwise.
        force: replace an existing ``out`` that mlxquant wrote.
        symmetric: int4 quantization with zero point 8 (Q4_0's rule) instead of min/max
            with a zero point per block.
        float_zero_points: keep the 4-bit codes of Q4_1 / Q4_K / MLX affine sources whose zero
            point ``-bias/scale`` is not an integer, with float zero points (values to one
            rounding; onnxruntime's CPU kernel runs them ~5x slower), instead of requantizing.

    Returns:
        A :class:`~mlxquant.convert.report.ConversionReport` (``to="onnx"``); ``details`` has one
        record per tensor (status exact / codes kept / requantized / quantized / float, max abs
        error, mean abs error in the note).

    Raises:
        OptionError, OutputExistsError, FormatError, TokenizerError, UnsupportedArchitectureError,
        OSError. Nothing is left at ``out`` on failure.
    """
    started = time.perf_counter()
    src, out = Path(src), Path(out)
    kind = check_options(outtype, block_size)
    check_output(out, force, sources=[src])
    source = Source(src)
    try:
        w = source.weights
        spec = model_spec(w.arch.name, w.config, "lm_head.weight" not in w)
        if spec.family not in GENAI_TYPES:
            raise UnsupportedArchitectureError(f"{src}: no ONNX export for architecture {spec.family!r} "
                                               f"(supported: {', '.join(GENAI_TYPES)})")
        tok = tokenizer_files(src, w.format, w.metadata)
        parts = _Weights(source, kind, block_size, symmetric, float_zero_points)
        parts.norm_offset = spec.norm_offset
        embed = parts.embed()
        spec.vocab = int(embed.shape[0]) if "lm_head.weight" not in w else int(w.get("lm_head.weight").shape[0])
        model = build_decoder(spec, parts.tensor, parts.linear, embed)
        eos = list(spec.eos_token_ids)
        bos = spec.bos_token_id
        if w.format == "gguf":
            meta = w.metadata
            bos = bos if bos is not None else meta.get("tokenizer.ggml.bos_token_id")
            if not eos and isinstance(meta.get("tokenizer.ggml.eos_token_id"), int):
                eos = [int(meta["tokenizer.ggml.eos_token_id"])]
        pad = w.config.get("pad_token_id") if isinstance(w.config.get("pad_token_id"), int) else None
        config = genai_config(spec, MODEL_FILE, eos, bos, pad)
        recipe = {"target": "onnx", "outtype": kind, "block_size": block_size, "symmetric": symmetric,
                  "float_zero_points": float_zero_points}
        with atomic_dir(out, force=force, sources=[src]) as tmp:
            written = _save(model, tmp)
            (tmp / "genai_config.json").write_text(json.dumps(config, indent=4), encoding="utf-8")
            for name, content in tok.items():
                (tmp / name).write_bytes(content)
            files = sorted({*written, "genai_config.json", *tok, PROVENANCE_FILE})
            record = build_provenance(src, recipe, [r.as_dict() for r in parts.records])
            record["output"] = {"files": files}
            (tmp / PROVENANCE_FILE).write_text(json.dumps(record, indent=1), encoding="utf-8")
    finally:
        source.close()
    result = RouteResult(spec.family, parts.records, w.parameters, parts.tensor_bytes)
    report = build_report(src, out, "onnx", kind.upper(), result, started)
    log.info("exported %s -> %s (ONNX %s, %d tensors) in %.1f s", src, out, kind, report.tensors, report.seconds)
    return report
