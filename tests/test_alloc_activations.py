"""The activation rounding the allocator charges each type with (:mod:`mlxquant.alloc.activations`):
which rounding ggml's CPU backend gives each weight type (read from libggml-cpu itself), the rounded
values bit for bit against ggml's own quantize/dequantize of Q8_K and Q8_0 activations, and the
measured rounding errors of a real model."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from mlxquant.alloc.activations import round_activations, rounding_errors, rounding_of
from mlxquant.alloc.costs import sample_rows
from mlxquant.quant.types import TYPES, get_type


class _CpuTraits(ctypes.Structure):
    _fields_ = [("from_float", ctypes.c_void_p), ("vec_dot", ctypes.c_void_p),
                ("vec_dot_type", ctypes.c_int), ("nrows", ctypes.c_int64)]


@pytest.fixture(scope="module")
def ggml():
    """libggml-cpu (the backend llama.cpp's logits come from) and libggml-base."""
    import os

    from mlxquant.testing.oracle import find_libggml_base

    base_path = find_libggml_base()
    base = ctypes.CDLL(base_path)
    cpu = ctypes.CDLL(os.path.join(os.path.dirname(base_path), "libggml-cpu.so"))
    cpu.ggml_get_type_traits_cpu.restype = ctypes.POINTER(_CpuTraits)
    cpu.ggml_get_type_traits_cpu.argtypes = [ctypes.c_int]
    cpu.ggml_cpu_init()
    for lib, fn in ((cpu, "quantize_row_q8_K"), (cpu, "quantize_row_q8_0"),
                    (base, "dequantize_row_q8_K"), (base, "dequantize_row_q8_0")):
        getattr(lib, fn).argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
        getattr(lib, fn).restype = None
    return cpu, base


def test_rounding_of_every_type_is_ggml_cpus_vec_dot_type(ggml):
    cpu, _ = ggml
    seen = set()
    for name, t in TYPES.items():
        if not t.is_quantized and name not in ("F16", "BF16", "F32"):
            continue
        tr = cpu.ggml_get_type_traits_cpu(t.id).contents
        if not tr.vec_dot:  # a type ggml cannot multiply (Q8_K is only ever the activations)
            continue
        want = get_type(tr.vec_dot_type).name
        want = {"Q8_1": "Q8_0", "F32": None}.get(want, want)  # Q8_1 rounds as Q8_0 (plus a sum)
        assert rounding_of(name) == want, name
        assert rounding_of(name.lower()) == want
        seen.add(want)
    assert seen >= {"Q8_K", "Q8_0", "F16", "BF16", None}


def _activations(cols: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    x = rng.standard_normal((12, cols)).astype(np.float32)
    heavy = (rng.standard_t(2, (12, cols)) * 3).astype(np.float32)
    out = x.copy()
    out[:, ::97] *= 1000  # outliers, one per few blocks
    zero = x.copy()
    zero[3] = 0
    zero[5, :256] = 0  # an all-zero block beside non-zero ones
    tiny = (x * 1e-30).astype(np.float32)
    neg = -np.abs(x)  # the largest magnitude negative in every block: ggml divides by the signed value
    ties = np.round(x * 4) / 4  # many equal magnitudes, values on rounding boundaries
    return {"normal": x, "heavy": heavy, "outliers": out, "zero_rows": zero, "tiny": tiny,
            "negative": neg, "ties": ties}


@pytest.mark.parametrize("rounding,block,bytes_per_block", [("Q8_K", 256, 292), ("Q8_0", 32, 34)])
def test_round_activations_equals_ggml_bit_for_bit(ggml, rounding, block, bytes_per_block):
    cpu, base = ggml
    quant = getattr(cpu, f"quantize_row_{rounding.lower()[:2]}{rounding[2:]}")
    deq = getattr(base, f"dequantize_row_{rounding.lower()[:2]}{rounding[2:]}")
    cols = 1024
    for kind, x in _activations(cols).items():
        ours = round_activations(x, rounding)
        ref = np.empty_like(x)
        for i, row in enumerate(np.ascontiguousarray(x)):
            buf = np.zeros(cols // block * bytes_per_block, np.uint8)
            quant(row.ctypes.data, buf.ctypes.data, cols)
            out = np.empty(cols, np.float32)
            deq(buf.ctypes.data, out.ctypes.data, cols)
            ref[i] = out
        bad = np.argwhere(ours.view(np.uint32) != ref.view(np.uint32))
        assert len(bad) == 0, (rounding, kind, len(bad), [(x[tuple(b)], ours[tuple(b)], ref[tuple(b)]) for b in bad[:3]])
    with pytest.raises(ValueError, match="unknown activation rounding"):
        round_activations(np.zeros((1, 256), np.float32), "Q4_K")


def test_rounding_errors_of_the_float_base_model(shakespeare):
    """On the float base model (tied embeddings): every product gets its errors, the token embedding
    as the output head; the errors are the mean squared output error, recomputed here for one
    tensor; Q8_K's coarser blocks cost more than Q8_0's on the MLP's heavy-tailed down input."""
    from mlxquant.runtime.backend import load_model

    m = load_model(shakespeare, backend="numpy")
    w = m.weights
    tensors = {}
    for hf in w.names():
        g = w.arch.tensor_name_to_gguf(hf, w.config)
        if g is not None and (g.startswith("blk.") and "norm" not in g or g == "token_embd.weight"):
            arr = w.get(hf)
            imp = None if g == "token_embd.weight" else np.ones(arr.shape[-1], np.float32)
            tensors[g] = (hf, arr, imp)
    rng = np.random.default_rng(0)
    windows = [rng.integers(0, 4000, 64), rng.integers(0, 4000, 48)]
    # the activations the observer saw, for the checks by hand below: the same arrays (a second
    # forward pass may run on another BLAS thread count, whose last bits move values across a
    # rounding step)
    seen: dict[tuple[int, str], list[np.ndarray]] = {}
    forward = m.forward

    def recording(tokens, cache=None, logits_from=0, observer=None):
        def observe(layer, role, x):
            seen.setdefault((layer, role), []).append(x.copy())
            observer(layer, role, x)

        return forward(tokens, cache, logits_from, observe)

    m.forward = recording
    got = rounding_errors(m, windows, tensors)
    assert set(got) == set(tensors)
    for g, r in got.items():
        assert set(r) == {"Q8_K", "Q8_0"} and all(v > 0 for v in r.values()), g
    for i in range(m.spec.n_layers):
        d = got[f"blk.{i}.ffn_down.weight"]
        assert d["Q8_K"] > 2 * d["Q8_0"], (i, d)

    # blk.1.ffn_down by hand: its input is what the observer sees for (1, "ffn_down")
    x = np.concatenate(seen[1, "ffn_down"])
    rows, scale = sample_rows(tensors["blk.1.ffn_down.weight"][1])  # the estimate's rows
    assert scale == 2.0
    for r in ("Q8_K", "Q8_0"):
        e = (x - round_activations(x, r)).astype(np.float64) @ rows.T.astype(np.float64)
        want = float((e * e).sum()) * scale / len(x)
        assert got["blk.1.ffn_down.weight"][r] == pytest.approx(want, rel=1e-4)

    # the head has no importance vector: its errors are in units of its activations' mean square
    h = np.concatenate(seen[-1, "output"])
    rows, scale = sample_rows(tensors["token_embd.weight"][1])
    e = (h - round_activations(h, "Q8_0")).astype(np.float64) @ rows.T.astype(np.float64)
    want = float((e * e).sum()) * scale / len(h) / float((h.astype(np.float64) ** 2).mean())
    assert got["token_embd.weight"]["Q8_0"] == pytest.approx(want, rel=1e-4)
