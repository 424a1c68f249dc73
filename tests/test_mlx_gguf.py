"""mlxquant.mlx: GGUF files run by mlx-lm with every tensor in its own GGUF type (CPU MLX here).

- every type of mlxquant.quant.types has a path: a GGUFLinear / GGUFEmbedding of that type equals
  its values (mlxquant's NumPy codec, or ggml's C loops for the types without a codec) times x;
- the exactly mapped types keep their codes byte for byte (MLX's own unpacking, through
  ``mx.dequantize`` with unit scales, against codes read from the GGUF bytes by ggml's layout)
  and ``mx.dequantize`` gives the codec's values bit for bit;
- SmolLM2 Q4_K_M and Q8_0 through ``load_gguf`` + mlx-lm's generate: same greedy tokens and
  logits within 1e-4 of the float32-widened model; memory close to the file size;
- a converted random model of every architecture: logits within 1e-4 of the widened model.
"""

from __future__ import annotations

import os

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_unflatten

import mlxquant
from mlxquant import dequantize
from mlxquant.mlx import (GGUFEmbedding, GGUFLinear, dequantize_weight, load_gguf, model_nbytes,
                          plan_weight)
from mlxquant.mlx.load import build_model, model_names, open_source
from mlxquant.mlx.weights import QUANTIZED_TYPES
from mlxquant.quant.transcode import unpack_codes
from mlxquant.quant.types import TYPES, get_type
from mlxquant.testing.f32_gguf import TINY_CONFIGS, tiny_hf_model, write_f32_gguf
from mlxquant.testing.inputs import smollm2_gguf_path

from conftest import SMOLLM2_MISSING, need

REL = 1e-4
PROMPT = "The three primary colors are"

# byte offsets of each type's float scale fields ((offset, kind)), set to finite values in
# random blocks; every other byte stays random so that every code / grid index / sign occurs
SCALE_FIELDS = {
    "Q4_0": [(0, "f16")], "Q4_1": [(0, "f16"), (2, "f16")], "Q5_0": [(0, "f16")],
    "Q5_1": [(0, "f16"), (2, "f16")], "Q8_0": [(0, "f16")], "Q8_1": [(0, "f16"), (2, "f16")],
    "Q2_K": [(80, "f16"), (82, "f16")], "Q3_K": [(108, "f16")], "Q4_K": [(0, "f16"), (2, "f16")],
    "Q5_K": [(0, "f16"), (2, "f16")], "Q6_K": [(208, "f16")], "Q8_K": [(0, "f32")],
    "IQ1_M": [(48, "iq1m")], "TQ1_0": [(52, "f16")], "TQ2_0": [(64, "f16")],
    "MXFP4": [(0, "e8m0")], "NVFP4": [(0, "ue4m3"), (1, "ue4m3"), (2, "ue4m3"), (3, "ue4m3")],
}
PLAIN = {"I8": "<i1", "I16": "<i2", "I32": "<i4", "I64": "<i8", "F64": "<f8"}


def random_raw(qtype: str, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """(rows, row_bytes) uint8 of ``qtype`` with finite values of moderate size."""
    t = get_type(qtype)
    if t.name in ("F32", "F16", "BF16", "F64"):
        x = rng.standard_normal((rows, cols)).astype(np.float32)
        if t.name == "BF16":
            return (x.view(np.uint32) >> 16).astype("<u2").view(np.uint8).reshape(rows, -1)
        dt = {"F32": "<f4", "F16": "<f2", "F64": "<f8"}[t.name]
        return x.astype(dt).view(np.uint8).reshape(rows, -1)
    if t.name in PLAIN:
        return rng.integers(-100, 100, (rows, cols)).astype(PLAIN[t.name]).view(np.uint8).reshape(rows, -1)
    raw = rng.integers(0, 256, (rows * cols // t.block_size, t.type_size), dtype=np.uint8)
    n = raw.shape[0]
    for off, kind in SCALE_FIELDS.get(t.name, [(0, "f16")]):
        d = (rng.uniform(1e-3, 1e-2, n) * rng.choice([-1, 1], n)).astype(np.float32)
        if kind == "f16":
            raw[:, off:off + 2] = d.astype("<f2").view(np.uint8).reshape(n, 2)
        elif kind == "f32":
            raw[:, off:off + 4] = d.astype("<f4").view(np.uint8).reshape(n, 4)
        elif kind == "e8m0":
            raw[:, off] = rng.integers(118, 128, n)
        elif kind == "ue4m3":
            raw[:, off] = rng.integers(0x20, 0x40, n)
        else:  # IQ1_M: the f16 super-scale is the top nibbles of 4 u16 scale words
            bits = d.astype("<f2").view(np.uint16)
            sc = raw[:, off:off + 8].copy().view("<u2")
            for k in range(4):
                sc[:, k] = (sc[:, k] & 0x0FFF) | (((bits >> (4 * k)) & 0xF) << 12)
            raw[:, off:off + 8] = sc.view(np.uint8)
    return raw.reshape(rows, -1)


def reference_values(qtype: str, raw: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """float32 (rows, cols): mlxquant's NumPy codec; for the types with none, ggml's C loops
    (dequantize_row_q8_K / q1_0 / q2_0; Q8_1 is d * q) or the plain dtype."""
    t = get_type(qtype)
    if t.name in PLAIN:
        return raw.view(PLAIN[t.name]).reshape(rows, cols).astype(np.float32)
    if "numpy" in t.codecs:
        return dequantize(raw, t.name, (rows, cols), backend="numpy")
    b = raw.reshape(-1, t.type_size)
    if t.name == "Q8_K":
        d, q = b[:, 0:4].copy().view("<f4"), b[:, 4:260].view(np.int8).astype(np.float32)
        return (d * q).reshape(rows, cols)
    d = b[:, 0:2].copy().view("<f2").astype(np.float32)
    if t.name == "Q8_1":
        return (d * b[:, 4:].view(np.int8).astype(np.float32)).reshape(rows, cols)
    if t.name == "Q1_0":
        bit = np.unpackbits(b[:, 2:], axis=1, bitorder="little")
        return np.where(bit == 1, d, -d).reshape(rows, cols)
    assert t.name == "Q2_0"
    q = (b[:, 2:, None] >> np.array([0, 2, 4, 6], np.uint8)) & 3
    return ((q.reshape(len(b), -1).astype(np.int32) - 1).astype(np.float32) * d).reshape(rows, cols)


def stored_codes(qtype: str, raw: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """The integer codes MLX must hold, read from the GGUF bytes by ggml's block layouts
    (ggml-common.h), independently of mlxquant.quant.transcode: (rows, cols) int."""
    t = get_type(qtype)
    b = raw.reshape(-1, t.type_size).astype(np.int64)
    lo, hi = b & 15, b >> 4
    if t.name in ("Q4_0", "Q4_1", "Q5_0", "Q5_1"):
        qs = b[:, -16:]
        c = np.concatenate([qs & 15, qs >> 4], axis=1)
        if t.name in ("Q5_0", "Q5_1"):
            at = 2 if t.name == "Q5_0" else 4
            qh = b[:, at] | b[:, at + 1] << 8 | b[:, at + 2] << 16 | b[:, at + 3] << 24
            c = c | ((qh[:, None] >> np.arange(32)) & 1) << 4
    elif t.name in ("Q8_0", "Q8_1"):
        c = (raw.reshape(-1, t.type_size)[:, t.type_size - 32:].view(np.int8).astype(np.int64) + 128)
    elif t.name in ("Q4_K", "Q5_K"):
        qs = b[:, -128:].reshape(-1, 4, 32)
        c = np.concatenate([qs & 15, qs >> 4], axis=2)              # (n, 4 chunks, 64)
        if t.name == "Q5_K":
            qh = b[:, 16:48]                                          # (n, 32)
            bit = (qh[:, None, :] >> (2 * np.arange(4))[None, :, None]) & 1
            bit2 = (qh[:, None, :] >> (2 * np.arange(4) + 1)[None, :, None]) & 1
            c = c | np.concatenate([bit, bit2], axis=2) << 4
    elif t.name == "TQ2_0":
        qs = b[:, :64].reshape(-1, 2, 1, 32)
        c = (qs >> (2 * np.arange(4))[None, None, :, None]) & 3       # (n, 2, 4, 32)
    elif t.name == "MXFP4":
        c = np.concatenate([lo[:, 1:], hi[:, 1:]], axis=1)
    elif t.name == "NVFP4":
        qs = b[:, 4:].reshape(-1, 4, 8)
        c = np.concatenate([qs & 15, qs >> 4], axis=2)
    elif t.name == "Q1_0":
        c = np.unpackbits(raw.reshape(-1, t.type_size)[:, 2:], axis=1, bitorder="little")
    elif t.name == "Q2_0":
        c = (b[:, 2:, None] >> np.array([0, 2, 4, 6])) & 3
    else:  # TQ1_0: base-3 digits; the value is (trit - 1) * d
        d = raw.reshape(-1, t.type_size)[:, 52:54].copy().view("<f2").astype(np.float32)
        v = dequantize(raw, t.name, (rows, cols), backend="numpy").reshape(-1, 256)
        c = np.rint(v / d).astype(np.int64) + 1
    return c.reshape(rows, cols)


E2M1 = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6], np.float32)


def mlx_codes(layer: GGUFLinear) -> np.ndarray:
    """MLX's own reading of the packed codes: ``mx.dequantize`` with scale 1 and bias 0
    (affine), or the E2M1 value with the unit scale byte mapped back to its code."""
    w = layer["weight"]
    ngroups = layer.cols // layer.group_size
    if layer.mode == "affine":
        ones = mx.ones((layer.rows, ngroups), mx.float32)
        v = mx.dequantize(w, ones, mx.zeros_like(ones), group_size=layer.group_size, bits=layer.bits,
                          dtype=mx.float32)
        return np.array(v).astype(np.int64)
    one = 127 if layer.mode == "mxfp4" else 0x38                       # 2**0 in E8M0 / UE4M3
    s = mx.full((layer.rows, ngroups), one, mx.uint8)
    v = np.array(mx.dequantize(w, s, None, group_size=layer.group_size, bits=4, mode=layer.mode,
                               dtype=mx.float32))
    sign = np.signbit(v)
    mag = np.searchsorted(E2M1[:8], np.abs(v))
    return np.where(sign, mag + 8, mag)


def cols_for(qtype: str) -> int:
    return 256 if 256 % get_type(qtype).block_size == 0 else get_type(qtype).block_size * 4


@pytest.mark.parametrize("qtype", list(TYPES))
def test_every_type_has_a_path(qtype):
    """GGUFLinear(x) == x @ values.T and GGUFEmbedding(ids) == values[ids] for every type."""
    rng = np.random.default_rng(sum(map(ord, qtype)))
    rows, cols = 24, cols_for(qtype)
    raw = random_raw(qtype, rows, cols, rng)
    ref = reference_values(qtype, raw, rows, cols).astype(np.float64)
    assert np.isfinite(ref).all()
    w = plan_weight(raw, qtype, cols, f"test {qtype}")
    x = rng.standard_normal((3, 5, cols)).astype(np.float32)
    y = np.array(GGUFLinear(w)(mx.array(x)))
    bound = REL / 10 * (np.abs(x).astype(np.float64) @ np.abs(ref).T) + 1e-30
    assert y.shape == (3, 5, rows)
    assert (np.abs(y - x.astype(np.float64) @ ref.T) <= bound).all(), qtype
    ids = rng.integers(0, rows, (2, 7))
    e = np.array(GGUFEmbedding(w)(mx.array(ids)))
    assert np.array_equal(e, ref.astype(np.float32)[ids]), qtype
    tied = np.array(GGUFEmbedding(w).as_linear(mx.array(x)))
    assert np.array_equal(tied, y)


@pytest.mark.parametrize("qtype", list(QUANTIZED_TYPES))
def test_exact_types_keep_codes_and_values(qtype):
    rng = np.random.default_rng(7 + sum(map(ord, qtype)))
    rows, cols = 16, cols_for(qtype)
    raw = random_raw(qtype, rows, cols, rng)
    layer = GGUFLinear(plan_weight(raw, qtype, cols))
    assert layer.form == "quantized"
    want = stored_codes(qtype, raw, rows, cols)
    assert np.array_equal(mlx_codes(layer), want), f"{qtype}: codes moved"
    assert np.array_equal(unpack_codes(np.array(layer["weight"]), layer.bits, cols), want)
    ref = reference_values(qtype, raw, rows, cols)
    v = np.array(dequantize_weight(layer.gguf_weight()))
    # bit for bit, except that scale*q + bias gives +0 where ggml's (q - 8) * d gives -0
    assert np.array_equal(v, ref), f"{qtype}: values differ"
    nz = ref != 0
    assert np.array_equal(v[nz].view(np.uint32), ref[nz].view(np.uint32)), f"{qtype}: values differ"


# -- whole models --------------------------------------------------------------------------------
def widened_model(path) -> nn.Module:
    """mlx-lm's model for ``path`` with every weight dequantized to float32 (mlxquant's codecs)."""
    src = open_source(path, tokenizer=False)
    model = build_model(dict(src.config), path)
    names = model_names(model, src)
    model.update(tree_unflatten([(n, mx.array(src.float(h))) for n, h in names.items()]))
    model.eval()
    return model


def logits(model: nn.Module, tokens: list[int]) -> np.ndarray:
    return np.array(model(mx.array([tokens]))[0].astype(mx.float32))


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def smollm2_files(tmp_path_factory):
    src = smollm2_gguf_path()
    need(src is not None, SMOLLM2_MISSING)
    d = tmp_path_factory.mktemp("smollm2")
    out = {}
    for t in ("Q4_K_M", "Q8_0"):
        out[t] = d / f"smollm2-{t}.gguf"
        mlxquant.convert(src, out[t], outtype=t)
    return out


@pytest.mark.parametrize("ftype", ["Q4_K_M", "Q8_0"])
def test_smollm2_generates_like_the_widened_model(smollm2_files, ftype):
    from mlx_lm import stream_generate

    path = smollm2_files[ftype]
    model, tok = load_gguf(path)
    types = {m.qtype for _, m in model.named_modules() if isinstance(m, (GGUFLinear, GGUFEmbedding))}
    if ftype == "Q4_K_M":
        assert {"Q4_K", "Q6_K", "Q5_0", "Q8_0"} <= types       # exact and block paths mixed
    ratio = model_nbytes(model) / os.path.getsize(path)
    assert 0.95 < ratio < 1.15, f"{ftype}: loaded model is {ratio:.3f} x the file"
    ref = widened_model(path)
    ids = tok.encode(PROMPT)
    got = [r.token for r in stream_generate(model, tok, ids, max_tokens=8)]
    want = [r.token for r in stream_generate(ref, tok, ids, max_tokens=8)]
    assert got == want, (tok.decode(got), tok.decode(want))
    err = rel_err(logits(model, ids + got), logits(ref, ids + got))
    assert err < REL, f"{ftype}: logits differ by {err:.2e} (relative to the largest)"


@pytest.mark.parametrize("arch", list(TINY_CONFIGS))
def test_every_architecture_matches_the_widened_model(arch, tmp_path):
    cfg, tensors = tiny_hf_model(arch, seed=5)
    f32 = write_f32_gguf(cfg, tensors, tmp_path / f"{arch}-f32.gguf")
    path = tmp_path / f"{arch}-q.gguf"
    mlxquant.convert(f32, path, outtype="Q4_K_M")
    model, _ = load_gguf(path, tokenizer=False)
    kinds = {m.form for _, m in model.named_modules() if isinstance(m, (GGUFLinear, GGUFEmbedding))}
    assert kinds >= {"quantized", "blocks"}, kinds
    tokens = np.random.default_rng(1).integers(0, cfg["vocab_size"], 40).tolist()
    err = rel_err(logits(model, tokens), logits(widened_model(path), tokens))
    assert err < REL, f"{arch}: logits differ by {err:.2e}"
    # names, Q/K rows and gemma norms land where mlx-lm wants them: the F32 file through
    # load_gguf against mlx-lm's own model on the original HF tensors
    hf = build_model(dict(cfg), f32)
    weights = {n: mx.array(a) for n, a in tensors.items()}
    hf.load_weights(list((hf.sanitize(weights) if hasattr(hf, "sanitize") else weights).items()))
    hf.eval()
    f32_model, _ = load_gguf(f32, tokenizer=False)
    err = rel_err(logits(f32_model, tokens), logits(hf, tokens))
    assert err < REL, f"{arch}: the F32 GGUF differs from the HF model by {err:.2e}"


def test_bad_files_raise_one_line_errors(tmp_path):
    from mlxquant.errors import FormatError, QuantInputError

    bad = tmp_path / "not.gguf"
    bad.write_bytes(b"GGUF" + bytes(20))
    with pytest.raises(FormatError, match="not.gguf"):
        load_gguf(bad)
    with pytest.raises(QuantInputError, match="blk.0.x.*Q4_K"):
        plan_weight(np.zeros((2, 100), np.uint8), "Q4_K", 256, "blk.0.x")
