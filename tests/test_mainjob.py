"""The main job (``bash scripts/main.sh`` runs it after installing): the default model into a
4-bit MLX folder and a Q4_K_M GGUF, a summary, and an answer from mlx-lm."""

from __future__ import annotations

from mlxquant.mainjob import main, run, summary_lines
from mlxquant.testing.inputs import smollm2_gguf_path
from conftest import need


def test_main_job(tmp_path, capsys):
    need(smollm2_gguf_path() is not None, "SmolLM2 GGUF (bash scripts/test.sh fetches it)")
    result = run(tmp_path, max_tokens=12)
    assert result["mlx"].types == {"affine4/g32": 210, "affine8/g32": 1, "F16": 61}
    assert {d["status"] for d in result["mlx"].details} == {"exact", "float"}
    assert result["gguf"].outtype == "Q4_K_M" and {"Q4_K", "Q6_K", "Q5_0"} <= set(result["gguf"].types)
    assert "Paris" in result["answer"], result["answer"]
    text = "\n".join(summary_lines(result))
    assert "MiB" in text and "bits/weight" in text and "answer" in text
    # the default model is already Q4_1: the output says the Q4_K_M is a requantization, and why
    # it is larger (576-wide rows fall back to Q5_0)
    assert result["gguf"].bytes > result["source_bytes"]
    assert result["gguf"].types["Q5_0"] > result["gguf"].types["Q4_K"]
    assert "requantization" in text and "576" in text and "Q5_0" in text
    # the command form refuses to overwrite without --force, with one line
    assert main(["--out", str(tmp_path), "--max-tokens", "4"]) == 1
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
