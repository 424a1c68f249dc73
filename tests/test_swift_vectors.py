"""The Swift bridge's shared vectors: up to date, consistent with mlxquant's codecs, and the Swift
inspector agrees with gguf-py and llama.cpp on the real SmolLM2 GGUF."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import need

from mlxquant.testing import swift_vectors
from mlxquant.testing.inputs import smollm2_gguf_path

REPO = Path(__file__).resolve().parents[1]
BRIDGE = REPO / "swift-bridge"

needs_mlx = pytest.mark.skipif(importlib.util.find_spec("mlx") is None, reason="mlx is not importable")


@needs_mlx
def test_vectors_up_to_date(capsys):
    rc = swift_vectors.main(["--check"])
    err = capsys.readouterr().err
    assert rc == 0, f"swift-bridge vectors are stale; run python -m mlxquant.testing.swift_vectors\n{err}"


def _gguf_tensor(path: Path):
    from gguf import GGUFReader

    (t,) = GGUFReader(path).tensors
    return t


@pytest.mark.parametrize("qtype", swift_vectors.GGUF_TYPES)
def test_mlxquant_codecs_agree_with_vectors(qtype):
    """Once mlxquant has a codec for a type, it must give the vector's bytes and floats exactly."""
    import mlxquant

    if "numpy" not in mlxquant.codecs_for(qtype):
        pytest.skip(f"{qtype}: no mlxquant codec yet")
    t = _gguf_tensor(swift_vectors.VECTORS / f"{qtype.lower()}.gguf")
    x = swift_vectors.source_matrix()
    stored = np.asarray(t.data).view(np.uint8).reshape(x.shape[0], -1)
    if qtype not in ("F32", "F16"):
        assert np.array_equal(mlxquant.quantize(x, qtype, **swift_vectors.vector_quantize_args(qtype)), stored)
    expected = np.fromfile(swift_vectors.VECTORS / f"{qtype.lower()}.f32", dtype="<f4").reshape(x.shape)
    got = mlxquant.dequantize(stored, qtype, x.shape)
    assert np.array_equal(got.view(np.uint32), expected.view(np.uint32))


def _swift() -> str | None:
    return shutil.which("swift") or next((p for p in ["/opt/swift/usr/bin/swift"] if os.path.exists(p)), None)


def _smollm2() -> Path | None:
    return smollm2_gguf_path()


@pytest.fixture(scope="module")
def inspect_bin() -> Path:
    swift = _swift()
    need(swift is not None, "the Swift toolchain")
    subprocess.run([swift, "build", "--package-path", str(BRIDGE), "--product", "mlxquant-inspect"],
                   check=True, capture_output=True, timeout=1200)
    out = subprocess.run([swift, "build", "--package-path", str(BRIDGE), "--show-bin-path"],
                         check=True, capture_output=True, text=True).stdout.strip()
    return Path(out) / "mlxquant-inspect"


def test_swift_inspect_matches_gguf_py_on_smollm2(inspect_bin):
    from gguf import GGUFReader

    path = _smollm2()
    need(path is not None, "SmolLM2 GGUF (bash scripts/test.sh fetches it)")
    got = json.loads(subprocess.run([str(inspect_bin), str(path), "--json"], check=True,
                                    capture_output=True, text=True).stdout)
    r = GGUFReader(path)
    want = [
        {"name": t.name, "type": t.tensor_type.name, "shape": [int(d) for d in reversed(t.shape)], "bytes": int(t.n_bytes)}
        for t in r.tensors
    ]
    assert got["format"] == "gguf"
    assert got["architecture"] == "llama"
    assert got["tensors"] == want
    assert got["parameters"] == sum(int(t.n_elements) for t in r.tensors) == 134_515_008
    assert got["bytes"] == sum(w["bytes"] for w in want)
    assert got["bits_per_weight"] == pytest.approx(got["bytes"] * 8 / got["parameters"])


@pytest.mark.parametrize("name", ["blk.0.attn_q.weight", "blk.29.ffn_down.weight", "output_norm.weight"])
def test_swift_dequantize_matches_llama_cpp_on_smollm2(inspect_bin, oracle, tmp_path, name):
    from gguf import GGUFReader

    path = _smollm2()
    need(path is not None, "SmolLM2 GGUF (bash scripts/test.sh fetches it)")
    out = tmp_path / "t.f32"
    subprocess.run([str(inspect_bin), str(path), "--dump", name, str(out)], check=True, capture_output=True)
    (t,) = [t for t in GGUFReader(path).tensors if t.name == name]
    shape = tuple(int(d) for d in reversed(t.shape))
    raw = np.asarray(t.data).view(np.uint8)
    want = oracle.dequantize(raw, t.tensor_type.name, shape) if t.tensor_type.name != "F32" else raw.view("<f4").reshape(shape)
    got = np.fromfile(out, dtype="<f4").reshape(shape)
    assert np.array_equal(got.view(np.uint32), np.ascontiguousarray(want, dtype=np.float32).view(np.uint32))


@pytest.mark.parametrize("qtype", swift_vectors.GGUF_TYPES)
def test_vector_floats_are_llama_cpp_output(oracle, qtype):
    """Whatever produced them, the expected floats are ggml's own to_float of the stored bytes."""
    t = _gguf_tensor(swift_vectors.VECTORS / f"{qtype.lower()}.gguf")
    shape = (swift_vectors.ROWS, swift_vectors.COLS)
    expected = np.fromfile(swift_vectors.VECTORS / f"{qtype.lower()}.f32", dtype="<f4").reshape(shape)
    if qtype == "F32":
        want = np.asarray(t.data, dtype=np.float32).reshape(shape)
    else:
        want = oracle.dequantize(np.asarray(t.data).view(np.uint8), qtype, shape)
    assert np.array_equal(expected.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("qtype", [t for t in swift_vectors.GGUF_TYPES if t not in ("F32", "F16", "BF16")])
def test_vector_bytes_are_llama_cpp_quantization(oracle, qtype):
    """The stored blocks are ggml_quantize_chunk's bytes for the source matrix (with the fixed
    importance vector for the types that require one)."""
    t = _gguf_tensor(swift_vectors.VECTORS / f"{qtype.lower()}.gguf")
    x = swift_vectors.source_matrix()
    stored = np.asarray(t.data).view(np.uint8).reshape(x.shape[0], -1)
    want = oracle.quantize(x, qtype, **swift_vectors.vector_quantize_args(qtype))
    assert np.array_equal(stored, want)


def test_vector_imatrix_only_where_required():
    from mlxquant.quant.types import get_type

    with_imatrix = [t for t in swift_vectors.GGUF_TYPES if swift_vectors.vector_quantize_args(t)]
    assert with_imatrix == ["IQ2_XXS", "IQ2_XS", "IQ1_S"]
    assert all(get_type(t).requires_imatrix for t in with_imatrix)
    w = swift_vectors.vector_imatrix()
    assert w.dtype == np.float32 and w.shape == (swift_vectors.COLS,) and w.min() == 1.0 and w.max() == 2.875


def test_swift_iquant_grid_tables_are_generated_from_mlxquant_grids():
    spec = importlib.util.spec_from_file_location("make_iquant_grids", BRIDGE / "Scripts" / "make_iquant_grids.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert gen.OUT.read_text() == gen.render(), "run python3 swift-bridge/Scripts/make_iquant_grids.py"
    assert gen.render().count("static let") == 6
