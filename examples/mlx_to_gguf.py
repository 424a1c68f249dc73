"""MLX folder -> GGUF that llama.cpp runs (4-bit affine -> Q4_1 with identical values).

Usage: python examples/mlx_to_gguf.py [OUT_DIR] [MLX_FOLDER]
Without MLX_FOLDER, one is made first from the SmolLM2 GGUF (see gguf_to_mlx.py).
"""

import sys
from collections import Counter
from pathlib import Path

import mlxquant
from mlxquant.mainjob import default_model

out_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "examples-out")
out_dir.mkdir(parents=True, exist_ok=True)
if len(sys.argv) > 2:
    src = Path(sys.argv[2])
else:
    src = out_dir / "smollm2-mlx"
    mlxquant.convert(default_model(), src, to="mlx", force=True)
report = mlxquant.convert(src, out_dir / "from-mlx.gguf", to="gguf", force=True)
print(f"{report.out}: {report.bytes / 2**20:.1f} MiB, {report.bits_per_weight:.2f} bits/weight")
print("per tensor:", dict(Counter((d["type"], d["status"]) for d in report.details)))
