"""Provenance in every conversion direction (issue 5, item 4).

Each output -- GGUF ``mlxquant.*`` metadata keys, or ``mlxquant.json`` in an HF / MLX folder --
must name the SHA-256 of every source file (checked here with hashlib on the files themselves),
the mlxquant version, the recipe, and per-tensor types equal to the types actually stored in the
output file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

import mlxquant
from mlxquant.convert import convert
from mlxquant.formats.gguf_read import GGUFModel
from mlxquant.formats.hf import HFModel
from mlxquant.formats.mlx_folder import MLXModel
from mlxquant.convert.provenance import PROVENANCE_FILE, from_gguf_metadata, sha256_file
from mlxquant.testing.inputs import shakespeare_model_dir, smollm2_gguf_path
from conftest import need

GGUF_KEYS = {"mlxquant.version", "mlxquant.source.files", "mlxquant.recipe", "mlxquant.tensors"}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Every direction, once: name -> (source, output, expected recipe entries)."""
    from test_convert_presets import write_imatrix

    d, smol = shakespeare_model_dir(), smollm2_gguf_path()
    need(d is not None, "tiny-shakespeare-llama model")
    need(smol is not None, "SmolLM2 GGUF (bash scripts/test.sh fetches it)")
    r = tmp_path_factory.mktemp("prov")
    convert(d, r / "f32.gguf", outtype="F32")
    write_imatrix(r / "imatrix.gguf", r / "f32.gguf")
    convert(d, r / "hf.gguf", outtype="Q4_K_M", imatrix=r / "imatrix.gguf")
    convert(smol, r / "gguf.gguf", outtype="Q8_0")
    convert(r / "f32.gguf", r / "hf", to="hf", outtype="BF16")
    convert(d, r / "mlx", to="mlx", q_bits=4, q_group_size=64)
    convert(smol, r / "gguf-mlx", to="mlx")
    convert(r / "mlx", r / "mlx.gguf", to="gguf")
    im = {"name": "imatrix.gguf", "sha256": hashlib.sha256((r / "imatrix.gguf").read_bytes()).hexdigest()}
    return {
        "HF->GGUF": (d, r / "hf.gguf", {"to": "gguf", "from": "hf", "outtype": "Q4_K_M", "imatrix": im}),
        "GGUF->GGUF": (smol, r / "gguf.gguf", {"to": "gguf", "from": "gguf", "outtype": "Q8_0", "imatrix": None}),
        "GGUF->HF": (r / "f32.gguf", r / "hf", {"to": "hf", "from": "gguf", "outtype": "BF16"}),
        "HF->MLX": (d, r / "mlx", {"to": "mlx", "q_bits": 4, "q_group_size": 64, "q_mode": "affine"}),
        "GGUF->MLX": (smol, r / "gguf-mlx", {"to": "mlx", "q_bits": None, "q_mode": "affine"}),
        "MLX->GGUF": (r / "mlx", r / "mlx.gguf", {"to": "gguf", "from": "mlx", "outtype": "AUTO"}),
    }


def stored_types(out: Path) -> dict[str, str]:
    """Tensor name -> type as stored: GGML type, safetensors dtype, or ``affine4/g64``-style for
    an MLX quantized module (from config.json's quantization block and the shard headers)."""
    if out.is_file():
        with GGUFModel(out) as g:
            return {t.name: t.type for t in g.tensors}
    cfg = json.loads((out / "config.json").read_text())
    if "quantization" not in cfg:
        hf = HFModel(out)
        return {n: hf.info(n).dtype for n in hf.tensor_names}
    m = MLXModel(out)
    mods, types = m.quantized_modules, {}
    for n in m.tensor_names:
        base = n.rsplit(".", 1)[0]
        if base in mods and n.endswith((".scales", ".biases")):
            continue
        p = mods.get(base) if n.endswith(".weight") else None
        if p is None:
            types[n] = m.info(n).dtype
        else:
            types[n] = f"affine{p['bits']}/g{p['group_size']}" if p["mode"] == "affine" else p["mode"]
    return types


@pytest.mark.parametrize("direction", ["HF->GGUF", "GGUF->GGUF", "GGUF->HF", "HF->MLX", "GGUF->MLX", "MLX->GGUF"])
def test_every_direction_records_provenance(made, direction):
    src, out, recipe = made[direction]
    if out.is_file():
        with GGUFModel(out) as g:
            assert {k for k in g.metadata if k.startswith("mlxquant.")} == GGUF_KEYS  # few, compact
            prov = from_gguf_metadata(g.metadata)
    else:
        prov = json.loads((out / PROVENANCE_FILE).read_text())
    assert prov is not None
    assert prov["mlxquant_version"] == mlxquant.__version__
    files = [src] if src.is_file() else sorted(f for f in src.iterdir() if f.is_file() and not f.name.startswith("."))
    want = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
    assert {f["name"]: f["sha256"] for f in prov["source"]["files"]} == want
    assert {k: prov["recipe"].get(k, "missing") for k in recipe} == recipe
    got = {t["name"]: t["type"] for t in prov["tensors"]}
    assert len(got) == len(prov["tensors"]) and got == stored_types(out)


def test_gguf_requantize_replaces_the_source_provenance(made, tmp_path):
    """A GGUF made by mlxquant (with its own mlxquant.* keys) converted again records the new
    conversion, not the old one."""
    src = made["MLX->GGUF"][1]
    convert(src, tmp_path / "q8.gguf", outtype="Q8_0")
    with GGUFModel(tmp_path / "q8.gguf") as g:
        prov = from_gguf_metadata(g.metadata)
    assert prov["recipe"]["from"] == "gguf" and prov["recipe"]["outtype"] == "Q8_0"
    assert prov["source"]["files"] == [{"name": src.name, "sha256": sha256_file(src)}]


def test_sha256_streams(tmp_path, monkeypatch):
    """Hashing reads fixed-size chunks, never a whole file at once."""
    import builtins

    path = tmp_path / "blob"
    path.write_bytes(bytes(range(256)) * (1 << 15))  # 8 MiB
    sizes, real_open = [], builtins.open

    class Spy:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

        def read(self, n=-1):
            sizes.append(n)
            return self.f.read(n)

    monkeypatch.setattr(builtins, "open", lambda p, *a, **k: Spy(real_open(p, *a, **k)))
    digest = sha256_file(path)
    monkeypatch.undo()
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert sizes and all(0 < n <= 1 << 22 for n in sizes)


def test_a_failed_source_hash_leaves_no_output(made, tmp_path, monkeypatch):
    """The source is hashed on a thread while the GGUF is written, with placeholders in the
    header: if hashing fails, the conversion fails and nothing is left at the output path."""
    from mlxquant.convert import provenance

    def broken(path):
        raise OSError(f"{path}: read error")

    monkeypatch.setattr(provenance, "sha256_file", broken)
    out = tmp_path / "q8.gguf"
    with pytest.raises(OSError, match="read error"):
        convert(made["GGUF->GGUF"][0], out, outtype="Q8_0")
    assert list(tmp_path.iterdir()) == []


def test_placeholders_never_reach_the_output(made):
    """Every digest in a GGUF written with background hashing is the file's real SHA-256 (the
    random placeholder was patched in place, so the header kept its length)."""
    src, out, _ = made["HF->GGUF"]
    with GGUFModel(out) as g:
        lines = list(g.metadata["mlxquant.source.files"])
    want = {f.name: sha256_file(f) for f in sorted(Path(src).iterdir()) if f.is_file() and not f.name.startswith(".")}
    assert {ln.partition("  ")[2]: ln.partition("  ")[0] for ln in lines} == want
