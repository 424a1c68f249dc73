"""Shared test vectors for the Swift bridge (``swift-bridge/``): the same bytes checked in both languages.

Writes into ``swift-bridge/Tests/MLXQuantTests/Resources/vectors/``:

- ``<type>.gguf`` + ``<type>.f32``: one small GGUF per GGML type (a 4x256 tensor named ``weight``
  quantized from a fixed-seed matrix) and the float32 values it decodes to, raw little-endian,
  row-major. The Swift dequantizers must reproduce the ``.f32`` bits exactly.
  IQ2_XXS, IQ2_XS and IQ1_S, which ggml quantizes only with an importance matrix, use the fixed
  vector of :func:`vector_imatrix`.
- ``metadata.gguf``: every GGUF metadata value type (nested arrays too), ``general.alignment = 64``
  and three small tensors; the Swift test knows the expected values.
- ``mlx-model/``: an MLX model folder as mlx-lm writes it (config.json with a ``quantization`` block
  holding overrides and a ``false`` entry, ``model.safetensors`` from ``mx.save_safetensors``).
- ``mlx-sharded/``: the same tensors split in two shards with ``model.safetensors.index.json``.
- ``mlx-model-expected.safetensors``: float32 values of every logical weight of ``mlx-model/``
  (``mx.dequantize`` for the quantized ones).
- ``mlx-affine-sweep.safetensors`` + ``mlx-affine-sweep-expected.safetensors``: ``mx.quantize`` at
  bits 2,3,4,5,6,8 x group sizes 32,64,128 x scale dtypes float32/float16/bfloat16.

Run ``python -m mlxquant.testing.swift_vectors`` to (re)write them, ``--check`` to regenerate into a
temporary folder and exit 1 when any committed file differs byte for byte.

``mx.dequantize`` computes ``scales * q + biases`` in the scales' dtype, rounding after the product
and after the sum (verified on these vectors); the Swift reader does the same.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
VECTORS = REPO / "swift-bridge" / "Tests" / "MLXQuantTests" / "Resources" / "vectors"

GGUF_TYPES = (
    "F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K Q4_K Q5_K Q6_K MXFP4 "
    "IQ4_NL IQ4_XS IQ2_XXS IQ2_XS IQ2_S IQ3_XXS IQ3_S IQ1_S IQ1_M"
).split()
ROWS, COLS = 4, 256

# Quantized bytes and expected floats come from mlxquant's own codecs (the Python side that the
# Swift side must agree with); tests/test_swift_vectors.py also checks them against llama.cpp.


def needs_imatrix(qtype: str) -> bool:
    """Whether ggml only quantizes ``qtype`` with an importance matrix (IQ2_XXS, IQ2_XS, IQ1_S)."""
    from mlxquant.quant.types import get_type

    return get_type(qtype).requires_imatrix


def vector_imatrix(cols: int = COLS) -> np.ndarray:
    """The fixed importance vector used for the types that require one: ``1 + (j % 16) / 8`` for
    column ``j`` (values 1.0 .. 2.875, exact in float32), so the weighted search really varies
    across a block. The other types are quantized without an imatrix."""
    return (1.0 + (np.arange(cols) % 16) / 8.0).astype(np.float32)


def vector_quantize_args(qtype: str, cols: int = COLS) -> dict:
    """Keyword arguments that quantize ``qtype`` as the vectors do: ``{"imatrix": ...}`` or ``{}``."""
    return {"imatrix": vector_imatrix(cols)} if needs_imatrix(qtype) else {}


def _quantize(x: np.ndarray, qtype: str) -> np.ndarray:
    """(rows, cols) float32 -> (rows, row_bytes) uint8 in GGUF block layout."""
    import mlxquant

    return mlxquant.quantize(x, qtype, backend="numpy", **vector_quantize_args(qtype, x.shape[1]))


def _dequantize(data: np.ndarray, qtype: str, shape: tuple[int, int]) -> np.ndarray:
    """GGUF block bytes -> float32 of ``shape``."""
    import mlxquant

    return mlxquant.dequantize(data, qtype, shape, backend="numpy")


def source_matrix(rows: int = ROWS, cols: int = COLS, seed: int = 7) -> np.ndarray:
    """A (rows, cols) float32 matrix with one row per regime: normal, tiny, heavy-tailed, sparse."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, cols)).astype(np.float32)  # (rows, cols) float32
    x[1 % rows] *= np.float32(1e-3)
    if rows > 2:
        x[2] = rng.standard_t(2, cols).astype(np.float32)
    if rows > 3:
        x[3, rng.random(cols) < 0.7] = 0.0
        x[3, :32] = np.abs(x[3, :32]) + 1.0  # a block with positive minimum
    return x


# ---------------------------------------------------------------------------------------------
# GGUF


def _write_gguf_type(out: Path, qtype: str) -> None:
    import gguf

    x = source_matrix()
    t = gguf.GGMLQuantizationType[qtype]
    name = qtype.lower()
    w = gguf.GGUFWriter(out / f"{name}.gguf", "mlxquant-test")
    w.add_name(f"mlxquant swift vector {qtype}")
    if qtype == "F32":
        w.add_tensor("weight", x)
        expected = x
    elif qtype == "F16":
        h = x.astype(np.float16)
        w.add_tensor("weight", h)
        expected = h.astype(np.float32)
    else:
        q = _quantize(x, qtype)  # (rows, row_bytes) uint8
        w.add_tensor("weight", q, raw_dtype=t)
        expected = _dequantize(q, qtype, x.shape)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    expected.astype("<f4").tofile(out / f"{name}.f32")


def _write_gguf_metadata(out: Path) -> None:
    import gguf

    V = gguf.GGUFValueType
    w = gguf.GGUFWriter(out / "metadata.gguf", "llama")
    w.add_custom_alignment(64)
    w.add_key_value("test.u8", 200, V.UINT8)
    w.add_key_value("test.i8", -100, V.INT8)
    w.add_key_value("test.u16", 60000, V.UINT16)
    w.add_key_value("test.i16", -30000, V.INT16)
    w.add_key_value("test.u32", 4000000000, V.UINT32)
    w.add_key_value("test.i32", -2000000000, V.INT32)
    w.add_key_value("test.u64", 2**63 + 5, V.UINT64)
    w.add_key_value("test.i64", -(2**62), V.INT64)
    w.add_key_value("test.f32", 0.15625, V.FLOAT32)
    w.add_key_value("test.f64", -1.0e300, V.FLOAT64)
    w.add_key_value("test.bool", True, V.BOOL)
    w.add_key_value("test.string", "héllo, wörld", V.STRING)
    w.add_key_value("test.empty_string", "", V.STRING)
    w.add_key_value("test.array_i32", [1, -2, 3], V.ARRAY, sub_type=V.INT32)
    w.add_key_value("test.array_f32", [0.5, -0.25], V.ARRAY, sub_type=V.FLOAT32)
    w.add_key_value("test.array_string", ["a", "bc", ""], V.ARRAY, sub_type=V.STRING)
    w.add_key_value("test.array_nested", [[1, 2], [3]], V.ARRAY, sub_type=V.ARRAY)
    w.add_key_value("llama.block_count", 1, V.UINT32)
    x = np.arange(15, dtype=np.float32).reshape(3, 5) / 4  # (3, 5) float32
    w.add_tensor("a.f32", x)
    w.add_tensor("b.i32", np.arange(7, dtype=np.int32) - 3)
    w.add_tensor("c.f16", (np.arange(64, dtype=np.float32) / 8).astype(np.float16).reshape(2, 4, 8))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# ---------------------------------------------------------------------------------------------
# MLX


def _mx_dtype(name: str):
    import mlx.core as mx

    return {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}[name]


def _quantized(x: np.ndarray, bits: int, group_size: int, dtype: str):
    """mx.quantize of x in ``dtype``: (weight uint32, scales, biases, dequantized float32)."""
    import mlx.core as mx

    a = mx.array(x).astype(_mx_dtype(dtype))
    wq, s, b = mx.quantize(a, group_size=group_size, bits=bits)
    deq = mx.dequantize(wq, s, b, group_size=group_size, bits=bits).astype(mx.float32)
    return wq, s, b, deq


# (module path, shape, quantization or False, dtype of the source / scales)
MLX_MODULES = [
    ("model.embed_tokens", (16, 256), "default", "float32"),
    ("model.layers.0.self_attn.q_proj", (16, 128), {"group_size": 32, "bits": 2}, "bfloat16"),
    ("model.layers.0.self_attn.k_proj", (8, 256), {"group_size": 128, "bits": 3}, "float16"),
    ("model.layers.0.self_attn.v_proj", (8, 128), {"group_size": 64, "bits": 5}, "float32"),
    ("model.layers.0.self_attn.o_proj", (16, 64), {"group_size": 32, "bits": 6}, "float16"),
    ("model.layers.0.mlp.down_proj", (16, 128), {"group_size": 128, "bits": 8}, "bfloat16"),
    ("model.layers.0.mlp.gate_proj", (32, 64), False, "float32"),
]
MLX_DEFAULT = {"group_size": 64, "bits": 4, "mode": "affine"}


def _mlx_model_tensors() -> tuple[dict, dict, dict]:
    """(config quantization block, stored tensors, expected float32 per logical weight)."""
    import mlx.core as mx

    rng = np.random.default_rng(11)
    quant: dict = dict(MLX_DEFAULT)
    stored: dict = {}
    expected: dict = {}
    for path, shape, q, dtype in MLX_MODULES:
        x = (rng.standard_normal(shape) * 0.05).astype(np.float32)  # (out, in) float32
        if q is False:
            quant[path] = False
            a = mx.array(x).astype(_mx_dtype(dtype))
            stored[f"{path}.weight"] = a
            expected[f"{path}.weight"] = a.astype(mx.float32)
            continue
        if q != "default":
            quant[path] = q
        p = MLX_DEFAULT if q == "default" else q
        wq, s, b, deq = _quantized(x, p["bits"], p["group_size"], dtype)
        stored[f"{path}.weight"], stored[f"{path}.scales"], stored[f"{path}.biases"] = wq, s, b
        expected[f"{path}.weight"] = deq
    for name, dtype in (("model.layers.0.input_layernorm.weight", "float32"), ("model.norm.weight", "bfloat16")):
        a = mx.array(1.0 + 0.1 * rng.standard_normal(256).astype(np.float32)).astype(_mx_dtype(dtype))
        stored[name] = a
        expected[name] = a.astype(mx.float32)
    return quant, stored, expected


def _mlx_config(quant: dict) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 256,
        "intermediate_size": 128,
        "num_hidden_layers": 1,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 16,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": True,
        "quantization": quant,
        "quantization_config": quant,
    }


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _write_mlx(out: Path) -> None:
    import mlx.core as mx

    quant, stored, expected = _mlx_model_tensors()
    meta = {"format": "mlx"}
    single = out / "mlx-model"
    single.mkdir()
    _write_json(single / "config.json", _mlx_config(quant))
    mx.save_safetensors(str(single / "model.safetensors"), stored, metadata=meta)
    mx.save_safetensors(str(out / "mlx-model-expected.safetensors"), expected)

    sharded = out / "mlx-sharded"
    sharded.mkdir()
    _write_json(sharded / "config.json", _mlx_config(quant))
    names = sorted(stored)
    half = len(names) // 2
    shards = {
        "model-00001-of-00002.safetensors": names[:half],
        "model-00002-of-00002.safetensors": names[half:],
    }
    weight_map = {}
    total = 0
    for fname, keys in shards.items():
        mx.save_safetensors(str(sharded / fname), {k: stored[k] for k in keys}, metadata=meta)
        for k in keys:
            weight_map[k] = fname
            total += stored[k].nbytes
    _write_json(sharded / "model.safetensors.index.json", {"metadata": {"total_size": total}, "weight_map": weight_map})

    rng = np.random.default_rng(13)
    sweep: dict = {}
    sweep_expected: dict = {}
    for dtype in ("float32", "float16", "bfloat16"):
        for bits in (2, 3, 4, 5, 6, 8):
            for gs in (32, 64, 128):
                x = rng.standard_normal((2, 128)).astype(np.float32)  # (2, 128) float32
                wq, s, b, deq = _quantized(x, bits, gs, dtype)
                key = f"{dtype}.b{bits}.g{gs}"
                sweep[f"{key}.weight"], sweep[f"{key}.scales"], sweep[f"{key}.biases"] = wq, s, b
                sweep_expected[f"{key}.weight"] = deq
    mx.save_safetensors(str(out / "mlx-affine-sweep.safetensors"), sweep)
    mx.save_safetensors(str(out / "mlx-affine-sweep-expected.safetensors"), sweep_expected)


# ---------------------------------------------------------------------------------------------


def generate(out: Path) -> list[Path]:
    """Write every vector into ``out`` (created if missing); returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    for qtype in GGUF_TYPES:
        _write_gguf_type(out, qtype)
    _write_gguf_metadata(out)
    _write_mlx(out)
    return sorted(p for p in out.rglob("*") if p.is_file())


def compare(expected_dir: Path, actual_dir: Path) -> list[str]:
    """Relative paths that differ, are missing, or are extra in ``actual_dir``."""
    want = {p.relative_to(expected_dir) for p in expected_dir.rglob("*") if p.is_file()}
    have = {p.relative_to(actual_dir) for p in actual_dir.rglob("*") if p.is_file()}
    bad = [f"missing: {p}" for p in sorted(want - have)]
    bad += [f"not regenerated: {p}" for p in sorted(have - want)]
    for p in sorted(want & have):
        if not filecmp.cmp(expected_dir / p, actual_dir / p, shallow=False):
            bad.append(f"differs: {p}")
    return bad


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="regenerate to a temp dir and compare with the committed vectors")
    ap.add_argument("--out", type=Path, default=VECTORS, help=f"output folder (default {VECTORS})")
    args = ap.parse_args(argv)
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            generate(Path(tmp))
            bad = compare(Path(tmp), args.out)
        for line in bad:
            print(line, file=sys.stderr)
        if bad:
            print(f"{len(bad)} vector file(s) out of date; run python -m mlxquant.testing.swift_vectors", file=sys.stderr)
            return 1
        print(f"vectors in {args.out} are up to date")
        return 0
    if args.out.exists():  # drop stale vectors (only files of the kinds written here)
        for p in sorted(args.out.rglob("*"), reverse=True):
            if p.is_file() and p.suffix in (".gguf", ".f32", ".safetensors", ".json"):
                p.unlink()
            elif p.is_dir() and not any(p.iterdir()):
                p.rmdir()
    files = generate(args.out)
    print(f"wrote {len(files)} files to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
