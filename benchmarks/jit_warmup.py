"""First-call cost of the compiled CPU codecs: Numba compiles a kernel on its first use and
caches the machine code on disk. For every type, in a fresh process: the first quantize +
dequantize of a small matrix with a cold cache (a compile), then in another fresh process with
the cache that left (a load), and the steady-state time of the same call.

    python benchmarks/jit_warmup.py [--types Q4_K,Q6_K] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

TYPES = (
    "F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K Q4_K Q5_K Q6_K IQ4_NL IQ4_XS TQ1_0 TQ2_0 MXFP4 NVFP4"
).split()

_CHILD = r"""
import json, sys, time
import numpy as np
t0 = time.perf_counter()
import mlxquant
t_import = time.perf_counter() - t0
x = np.random.default_rng(0).standard_normal((64, 512)).astype(np.float32)
out = {"import_s": t_import}
for t in sys.argv[1].split(","):
    t0 = time.perf_counter()
    q = mlxquant.quantize(x, t, backend="numba")
    mlxquant.dequantize(q, t, x.shape, backend="numba")
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    q = mlxquant.quantize(x, t, backend="numba")
    mlxquant.dequantize(q, t, x.shape, backend="numba")
    out[t] = {"first_s": first, "again_s": time.perf_counter() - t0}
print(json.dumps(out))
"""


def _run(types: list[str], cache: str) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache)
    res = subprocess.run([sys.executable, "-c", _CHILD, ",".join(types)], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--types", default=",".join(TYPES))
    ap.add_argument("--json", default="benchmarks/results/jit_warmup.json")
    args = ap.parse_args(argv)
    types = args.types.split(",")
    rows = []
    for t in types:  # one process per type, so each compile is timed alone
        with tempfile.TemporaryDirectory(prefix="mlxquant-numba-") as cache:
            cold = _run([t], cache)
            warm = _run([t], cache)
        rows.append({"type": t, "compile_s": cold[t]["first_s"], "cached_s": warm[t]["first_s"],
                     "steady_s": warm[t]["again_s"]})
        print(f"  {t}: done", file=sys.stderr)
    print("\nFirst quantize+dequantize of a 64x512 matrix, seconds (fresh process each)\n")
    print("| type | cold cache (compile) | warm cache (load) | steady state |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['type']} | {r['compile_s']:.2f} | {r['cached_s']:.3f} | {r['steady_s']:.4f} |")
    total = sum(r["compile_s"] for r in rows)
    print(f"\nAll types compiled: {total:.1f} s in total (once per machine, then cached)")
    os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
