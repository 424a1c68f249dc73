"""GGUF -> MLX folder, keeping every quantized weight's integer codes (no re-rounding).

Usage: python examples/gguf_to_mlx.py [GGUF] [OUT_DIR]
Default GGUF: SmolLM2-135M-Instruct Q4_1 (bash scripts/main.sh fetches it).
"""

import sys
from collections import Counter
from pathlib import Path

import mlxquant
from mlxquant.mainjob import default_model

src = Path(sys.argv[1]) if len(sys.argv) > 1 else default_model()
out_dir = Path(sys.argv[2] if len(sys.argv) > 2 else "examples-out")
out_dir.mkdir(parents=True, exist_ok=True)
out = out_dir / "gguf-mlx"
report = mlxquant.convert(src, out, to="mlx", force=True)   # exact_scales=True: float32 scales
print(f"{report.out}: {report.bytes / 2**20:.1f} MiB, {report.bits_per_weight:.2f} bits/weight")
print("per tensor:", dict(Counter((d["source_type"], d["status"]) for d in report.details)))
worst = max((d for d in report.details if "max_abs_error" in d), key=lambda d: d["max_abs_error"], default=None)
if worst:
    print(f"largest error: {worst['name']} ({worst['status']}) {worst['max_abs_error']:.3g}")
