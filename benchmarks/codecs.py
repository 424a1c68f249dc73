"""Codec throughput: mlxquant (compiled, NumPy, MLX) vs gguf-py vs ggml's C reference.

For every type: quantize and dequantize throughput in million weights per second on a 4096x4096
float32 normal matrix and on one real SmolLM2 tensor, all implementations in one run. Prints a
markdown table with ratios to ggml (``ggml_quantize_chunk`` in one call, and ``to_float``) and
writes JSON. "numba" is the CPU default (``backend="auto"`` without a GPU); its first-call time
is Numba's on-disk cache load, or a compile when the cache is cold (benchmarks/jit_warmup.py
measures both); its ratios to ggml come from calls timed alternately with ggml's.

    python benchmarks/codecs.py [--types Q4_K,Q6_K] [--size 4096] [--json out.json] [--imatrix]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

import mlxquant
from mlxquant.testing.inputs import real_families
from mlxquant.testing.oracle import get_oracle

TYPES = (
    "F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K Q4_K Q5_K Q6_K IQ4_NL IQ4_XS TQ1_0 TQ2_0 MXFP4 "
    "IQ1_S IQ1_M IQ2_XXS IQ2_XS IQ2_S IQ3_XXS IQ3_S"
).split()


def _best(fn, min_time: float = 0.3, max_reps: int = 40) -> float:
    """Best wall time of up to ``max_reps`` calls (stop once ``min_time`` has been spent)."""
    best, spent, reps = float("inf"), 0.0, 0
    while reps < max_reps and (reps == 0 or spent < min_time):
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best, spent, reps = min(best, dt), spent + dt, reps + 1
    return best


def _best_pair(fa, fb, min_time: float = 0.3, max_reps: int = 40) -> tuple[float, float]:
    """Best wall times of ``fa`` and ``fb`` called alternately (ratios between two fast calls
    then see the same machine state: frequency, cache, other load)."""
    ba = bb = float("inf")
    spent, reps = 0.0, 0
    while reps < max_reps and (reps == 0 or spent < min_time):
        t0 = time.perf_counter()
        fa()
        t1 = time.perf_counter()
        fb()
        t2 = time.perf_counter()
        ba, bb = min(ba, t1 - t0), min(bb, t2 - t1)
        spent, reps = spent + t2 - t0, reps + 1
    return ba, bb


def _gguf_py(qtype: str):
    try:
        from gguf import GGMLQuantizationType
        from gguf.quants import dequantize, quantize

        gt = GGMLQuantizationType[qtype]
    except Exception:
        return None, None
    x0 = np.zeros((1, 256), np.float32)
    try:
        quantize(x0, gt)
        q = lambda x: quantize(x, gt)  # noqa: E731
    except Exception:
        q = None
    d = lambda data, shape: dequantize(data, gt)  # noqa: E731
    return q, d


def bench_matrix(x: np.ndarray, qtype: str, imatrix: np.ndarray | None, backends: list[str]) -> dict:
    o = get_oracle()
    n = x.size / 1e6
    row: dict[str, float | None] = {}
    ref = o.quantize(x, qtype, imatrix=imatrix)
    row["ggml_q"] = n / _best(lambda: o.quantize(x, qtype, imatrix=imatrix))
    row["ggml_dq"] = n / _best(lambda: o.dequantize(ref, qtype, x.shape)) if o.traits(qtype)["has_to_float"] else None
    for b in backends:
        if b not in mlxquant.codecs_for(qtype) and not (b == "numpy"):
            row[f"{b}_q"] = row[f"{b}_dq"] = None
            continue
        xin, refin = x, ref
        if b == "mlx":  # the MLX path's own input: arrays already in (unified) memory
            import mlx.core as mx

            xin, refin = mx.array(x), mx.array(ref)
            sync = mx.eval
        else:
            sync = lambda a: a  # noqa: E731
        try:
            t0 = time.perf_counter()
            ours = mlxquant.quantize(xin, qtype, imatrix=imatrix, backend=b)
            sync(ours)
            row[f"{b}_first_s"] = time.perf_counter() - t0
        except mlxquant.QuantTypeError:
            row[f"{b}_q"] = row[f"{b}_dq"] = None
            continue
        row[f"{b}_exact"] = bool(np.array_equal(np.array(ours), ref))
        q = lambda: sync(mlxquant.quantize(xin, qtype, imatrix=imatrix, backend=b))  # noqa: E731
        dq = lambda: sync(mlxquant.dequantize(refin, qtype, x.shape, backend=b))  # noqa: E731
        # the API times a codec's first calls on one thread before it spreads calls over threads
        # (mlxquant.quant.api): two more calls each, so that slow codecs timed once are timed
        # as they run from then on
        for _ in range(2):
            q(), dq()
        if b == "numba":  # the CPU default, whose ratios are the targets: timed alternately with ggml
            g, t = _best_pair(lambda: o.quantize(x, qtype, imatrix=imatrix), q)
            row[f"{b}_q"], row[f"{b}_q_x_ggml"] = n / t, g / t
            if row["ggml_dq"] is not None:
                g, t = _best_pair(lambda: o.dequantize(ref, qtype, x.shape), dq)
                row[f"{b}_dq"], row[f"{b}_dq_x_ggml"] = n / t, g / t
            continue
        row[f"{b}_q"] = n / _best(q)
        row[f"{b}_dq"] = n / _best(dq)
    gq, gd = _gguf_py(qtype)
    row["ggufpy_q"] = n / _best(lambda: gq(x)) if gq and imatrix is None else None
    row["ggufpy_dq"] = n / _best(lambda: gd(ref, x.shape)) if gd else None
    return row


def _fmt(v, ref=None, ratio=None) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    s = f"{v:.1f}"
    if ratio is not None:
        s += f" ({ratio:.2f}×)"
    elif ref:
        s += f" ({v / ref:.2f}×)"
    return s


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--types", default=",".join(TYPES))
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--imatrix", action="store_true", help="also time the imatrix paths")
    ap.add_argument("--backends", default="numba,numpy,mlx")
    ap.add_argument("--json", default="benchmarks/results/codecs.json")
    args = ap.parse_args(argv)
    backends = args.backends.split(",")
    rng = np.random.default_rng(0)
    mats = {f"normal {args.size}x{args.size}": rng.standard_normal((args.size, args.size)).astype(np.float32)}
    real = real_families(rows=576, cols=1536)
    key = "smollm2:blk.15.ffn_down.weight"
    if key in real:
        mats[f"SmolLM2 {key.split(':')[1]} 576x1536"] = real[key]
    results = []
    for mname, x in mats.items():
        imatrix = np.exp(rng.standard_normal(x.shape[1])).astype(np.float32)
        for qtype in args.types.split(","):
            t = mlxquant.get_type(qtype)
            # types ggml quantizes only with an importance matrix are timed with one, always
            wsets = [imatrix] if t.requires_imatrix else [None] + ([imatrix] if args.imatrix else [])
            for w in wsets:
                if w is not None and not t.uses_imatrix:
                    continue
                r = bench_matrix(x, qtype, w, backends)
                r.update(matrix=mname, type=qtype, imatrix=w is not None)
                results.append(r)
                print(f"  {mname} {qtype}{' +imatrix' if w is not None else ''}: done", file=sys.stderr)
    cols = ["matrix", "type", "imatrix", "ggml q", "ggml dq"]
    for b in backends:
        cols += [f"{b} exact", f"{b} q (×ggml)", f"{b} dq (×ggml)", f"{b} 1st call s"]
    cols += ["gguf-py q (×ggml)", "gguf-py dq (×ggml)"]
    print(f"\nMillion weights/s; threads={os.environ.get('MLXQUANT_THREADS', os.cpu_count())}, "
          f"{platform.machine()} {platform.system()}\n")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in results:
        cells = [r["matrix"], r["type"], "yes" if r["imatrix"] else "no", _fmt(r["ggml_q"]), _fmt(r["ggml_dq"])]
        for b in backends:
            first = r.get(f"{b}_first_s")
            cells += [_fmt(r.get(f"{b}_exact")), _fmt(r.get(f"{b}_q"), r["ggml_q"], r.get(f"{b}_q_x_ggml")),
                      _fmt(r.get(f"{b}_dq"), r["ggml_dq"], r.get(f"{b}_dq_x_ggml")),
                      "—" if first is None else f"{first:.2f}"]
        cells += [_fmt(r["ggufpy_q"], r["ggml_q"]), _fmt(r["ggufpy_dq"], r["ggml_dq"])]
        print("| " + " | ".join(cells) + " |")
    os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
    with open(args.json, "w") as f:
        json.dump({"threads": os.environ.get("MLXQUANT_THREADS", os.cpu_count()), "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
