"""Load test of ``mlxquant serve``: N concurrent clients against one server on localhost.

The server runs in a child process (this script with ``--serve``: uvicorn over the same app
``mlxquant serve`` builds), so the clients' event loop does not share its GIL. Each client sends
completion requests back to back (every other one streamed, with usage in the last chunk) until
the duration is over; requests in flight then finish and count. Reported: requests, errors
(any non-200 answer, malformed stream, or exception), throughput (requests/s, generated
tokens/s), latency p50/p99 (request sent -> last byte), time to first streamed token p50/p99,
the server's CPU time and peak RSS, and the machine's load average before and after.

    python benchmarks/serve_load.py [--model DIR|GGUF] [--clients 50] [--duration 120]
                                    [--max-tokens 32] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

PROMPTS = ["ROMEO:", "JULIET:", "First Citizen:", "KING HENRY:", "HAMLET:", "Enter a Messenger.",
           "O, what a noble mind", "Now is the winter"]


def serve(model: str, port: int, max_queue: int) -> None:
    import uvicorn

    from mlxquant.serve.commands import build_app

    app = build_app(model, backend="numpy", max_queue=max_queue)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _proc_stats(pid: int) -> tuple[float, int]:
    """CPU seconds (user + system) and peak RSS bytes of process ``pid`` (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        hwm = next(int(line.split()[1]) * 1024 for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                   if line.startswith("VmHWM:"))
        return cpu, hwm
    except (OSError, StopIteration, IndexError, ValueError):
        return float("nan"), 0


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


async def _client(i: int, url: str, model: str, deadline: float, max_tokens: int, rec: dict) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(600.0)) as h:
        n = 0
        while time.monotonic() < deadline:
            stream = (i + n) % 2 == 1
            body = {"model": model, "prompt": PROMPTS[(i + n) % len(PROMPTS)], "max_tokens": max_tokens,
                    "temperature": 0.8, "seed": i * 1000 + n, "stream": stream}
            if stream:
                body["stream_options"] = {"include_usage": True}
            n += 1
            t0 = time.monotonic()
            try:
                if stream:
                    first, tokens, done = None, None, False
                    async with h.stream("POST", "/v1/completions", json=body) as r:
                        if r.status_code != 200:
                            await r.aread()
                            raise RuntimeError(f"HTTP {r.status_code}: {r.text[:200]}")
                        async for line in r.aiter_lines():
                            if not line.startswith("data: "):
                                continue
                            data = line[6:]
                            if data == "[DONE]":
                                done = True
                                continue
                            event = json.loads(data)
                            if "error" in event:
                                raise RuntimeError(event["error"]["message"])
                            if event.get("usage"):
                                tokens = event["usage"]["completion_tokens"]
                            elif first is None and event["choices"][0]["text"]:
                                first = time.monotonic() - t0
                    if not done or tokens is None:
                        raise RuntimeError("stream ended without usage and [DONE]")
                    if first is not None:
                        rec["ttft"].append(first)
                else:
                    r = await h.post("/v1/completions", json=body)
                    if r.status_code != 200:
                        raise RuntimeError(f"HTTP {r.status_code}: {r.text[:200]}")
                    tokens = r.json()["usage"]["completion_tokens"]
            except Exception as e:  # every failure counts as an error; the client goes on
                rec["errors"].append(f"{type(e).__name__}: {e}"[:300])
                continue
            rec["latency"].append(time.monotonic() - t0)
            rec["tokens"] += tokens


async def _run(url: str, model: str, clients: int, duration: float, max_tokens: int) -> dict:
    rec: dict = {"latency": [], "ttft": [], "tokens": 0, "errors": []}
    deadline = time.monotonic() + duration
    t0 = time.monotonic()
    await asyncio.gather(*(_client(i, url, model, deadline, max_tokens, rec) for i in range(clients)))
    rec["wall"] = time.monotonic() - t0
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(Path(__file__).resolve().parents[1] / "tests/data/tiny-shakespeare-llama"))
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--duration", type=float, default=120.0, help="seconds of new requests")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--json", default=None, help="write the figures here too")
    ap.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)  # child: run the server
    ap.add_argument("--max-queue", type=int, default=256, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve is not None:
        serve(args.model, args.serve, args.max_queue)
        return

    import httpx

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    child = subprocess.Popen([sys.executable, __file__, "--model", args.model, "--serve", str(port),
                              "--max-queue", str(max(64, 2 * args.clients))])
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                model = httpx.get(url + "/v1/models", timeout=2).json()["data"][0]["id"]
                break
            except (httpx.HTTPError, KeyError, ValueError):
                if child.poll() is not None or time.monotonic() > deadline:
                    sys.exit("the server did not start")
                time.sleep(0.2)
        cpu0, _ = _proc_stats(child.pid)
        load0 = os.getloadavg()
        rec = asyncio.run(_run(url, model, args.clients, args.duration, args.max_tokens))
        load1 = os.getloadavg()
        cpu1, rss = _proc_stats(child.pid)
    finally:
        child.terminate()
        child.wait(30)
    n = len(rec["latency"])
    out = {
        "model": model, "clients": args.clients, "duration_s": args.duration, "wall_s": round(rec["wall"], 1),
        "max_tokens": args.max_tokens, "requests": n, "errors": len(rec["errors"]),
        "requests_per_s": round(n / rec["wall"], 2), "tokens": rec["tokens"],
        "tokens_per_s": round(rec["tokens"] / rec["wall"], 1),
        "latency_p50_s": round(_pct(rec["latency"], 50), 3), "latency_p99_s": round(_pct(rec["latency"], 99), 3),
        "ttft_p50_s": round(_pct(rec["ttft"], 50), 3), "ttft_p99_s": round(_pct(rec["ttft"], 99), 3),
        "server_cpu_s": round(cpu1 - cpu0, 1), "server_peak_rss_mib": round(rss / 2**20, 1),
        "loadavg_before": [round(x, 2) for x in load0], "loadavg_after": [round(x, 2) for x in load1],
        "cpus": os.cpu_count(), "first_errors": rec["errors"][:5],
    }
    width = max(len(k) for k in out)
    for k, v in out.items():
        print(f"{k:<{width}}  {v}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
