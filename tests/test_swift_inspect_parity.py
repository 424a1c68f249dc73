"""Issue 7: swift-bridge's ``mlxquant-inspect --json`` and ``mlxquant inspect --json`` describe a
GGUF the same way: format, architecture, parameter count, every tensor's name, type, shape and
bytes (in file order), and bits per weight (the same double). The Swift tool's ``bytes`` is the
sum of tensor bytes, which the Python summary calls ``tensor_bytes`` (its ``bytes`` is the file
size on disk).

Files: the real SmolLM2 GGUF (Q4_1, Q8_0, F32) and, for the K-quant and IQ type names, the
tiny-shakespeare model converted by mlxquant to Q4_K_M and IQ4_XS.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlxquant.cli import main
from mlxquant.testing.inputs import shakespeare_model_dir, smollm2_gguf_path
from conftest import need

BRIDGE = Path(__file__).resolve().parents[1] / "swift-bridge"
SHARED_KEYS = ("format", "architecture", "parameters", "tensors", "bits_per_weight")


def _swift() -> str | None:
    return shutil.which("swift") or ("/opt/swift/usr/bin/swift" if os.path.exists("/opt/swift/usr/bin/swift") else None)


@pytest.fixture(scope="module")
def inspect_bin() -> Path:
    swift = _swift()
    need(swift is not None, "the Swift toolchain")
    subprocess.run([swift, "build", "--package-path", str(BRIDGE), "--product", "mlxquant-inspect"],
                   check=True, capture_output=True, timeout=1200)
    out = subprocess.run([swift, "build", "--package-path", str(BRIDGE), "--show-bin-path"],
                         check=True, capture_output=True, text=True).stdout.strip()
    return Path(out) / "mlxquant-inspect"


def _both(inspect_bin: Path, path: Path) -> tuple[dict, dict]:
    swift = json.loads(subprocess.run([str(inspect_bin), str(path), "--json"], check=True,
                                      capture_output=True, text=True, timeout=120).stdout)
    r = CliRunner().invoke(main, ["inspect", str(path), "--json"])
    assert r.exit_code == 0, r.output
    return swift, json.loads(r.output)


def _assert_same(swift: dict, py: dict) -> None:
    assert set(SHARED_KEYS) | {"bytes"} <= set(swift)
    for key in SHARED_KEYS:
        assert py[key] == swift[key], key
    assert py["tensor_bytes"] == swift["bytes"] == sum(t["bytes"] for t in swift["tensors"])
    assert py["types"] == dict(Counter(t["type"] for t in swift["tensors"]))


def test_smollm2(inspect_bin):
    path = smollm2_gguf_path()
    need(path is not None, "SmolLM2 GGUF (bash scripts/test.sh fetches it)")
    swift, py = _both(inspect_bin, path)
    _assert_same(swift, py)
    assert py["parameters"] == 134_515_008 and len(py["tensors"]) == 272
    assert py["types"] == {"F32": 61, "Q4_1": 210, "Q8_0": 1}
    assert py["bytes"] == path.stat().st_size > py["tensor_bytes"]


@pytest.mark.parametrize("preset", ["Q4_K_M", "IQ4_XS"])
def test_converted_shakespeare(inspect_bin, tmp_path, preset):
    from mlxquant.convert import convert

    d = shakespeare_model_dir()
    need(d is not None, "tiny-shakespeare-llama model")
    report = convert(d, tmp_path / "m.gguf", outtype=preset)
    swift, py = _both(inspect_bin, tmp_path / "m.gguf")
    _assert_same(swift, py)
    assert py["types"] == report.types and len(report.types) >= 3
    assert py["parameters"] == report.parameters
