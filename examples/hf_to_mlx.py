"""Hugging Face folder -> 4-bit MLX folder (what `mlx_lm convert -q` writes, byte for byte).

Usage: python examples/hf_to_mlx.py [HF_FOLDER] [OUT_DIR]
Default HF_FOLDER: the tiny-shakespeare-llama model committed in tests/data/.
"""

import sys
from pathlib import Path

import mlxquant
from mlxquant.testing.inputs import shakespeare_model_dir

src = Path(sys.argv[1]) if len(sys.argv) > 1 else shakespeare_model_dir()
out_dir = Path(sys.argv[2] if len(sys.argv) > 2 else "examples-out")
out_dir.mkdir(parents=True, exist_ok=True)
out = out_dir / "model-4bit-mlx"
if src is None:
    sys.exit("give a Hugging Face model folder")
report = mlxquant.convert(src, out, to="mlx", q_bits=4, q_group_size=64, dtype="float16", force=True)
print(f"{report.out}: {report.bytes / 2**20:.1f} MiB, {report.bits_per_weight:.2f} bits/weight, {report.types}")
