"""Every script in examples/ runs as a user would run it, and writes what it says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mlxquant.testing.inputs import shakespeare_model_dir, smollm2_gguf_path
from conftest import need

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(script: str, *args: str) -> str:
    res = subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


def test_hf_to_mlx(tmp_path):
    need(shakespeare_model_dir() is not None, "tests/data/tiny-shakespeare-llama")
    out = run("hf_to_mlx.py", str(shakespeare_model_dir()), str(tmp_path))
    assert "affine4/g64" in out and (tmp_path / "model-4bit-mlx" / "config.json").is_file()


def test_gguf_to_mlx(tmp_path):
    need(smollm2_gguf_path() is not None, "SmolLM2 GGUF (bash scripts/test.sh fetches it)")
    out = run("gguf_to_mlx.py", str(smollm2_gguf_path()), str(tmp_path))
    assert "('Q4_1', 'exact'): 210" in out and (tmp_path / "gguf-mlx" / "mlxquant.json").is_file()


def test_mlx_to_gguf(tmp_path):
    need(smollm2_gguf_path() is not None, "SmolLM2 GGUF (bash scripts/test.sh fetches it)")
    out = run("mlx_to_gguf.py", str(tmp_path))
    assert (tmp_path / "from-mlx.gguf").is_file()
    assert "('Q4_1', 'exact'): 210" in out
