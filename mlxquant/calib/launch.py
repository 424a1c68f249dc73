"""Start an ``mx.distributed`` group of processes on this machine, over loopback, without ssh: what
``mlx.launch --backend ring`` does for ``127.0.0.1`` hosts, reduced to its core.

mlx 0.32's ring backend (``mlx/_distributed_utils/launch.py``) needs two variables per process:
``MLX_RANK`` (0..n-1) and ``MLX_HOSTFILE``, a JSON file listing one ``["ip:port", ...]`` list per
rank, on which rank ``r`` listens and the others connect. :func:`launch_local` writes that file with
free loopback ports and starts ``n`` copies of a command with those variables, waits for all of
them within a timeout, and ends the others (by their own process ids) as soon as one fails, since
the rest would wait in ``all_sum`` forever.

Used by the tests (two processes in CI) and for trying a distributed run on one machine; across
machines use ``mlx.launch`` itself (README: ``mlxquant imatrix --distributed``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

LOOPBACK = "127.0.0.1"


@dataclass
class RankResult:
    """One process of the group: exit status (None: killed at the timeout), stdout, stderr."""

    rank: int
    returncode: int | None
    stdout: str
    stderr: str


def free_ports(n: int) -> list[int]:
    """``n`` distinct loopback ports free right now (the OS picks them)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((LOOPBACK, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def write_hostfile(path: str | os.PathLike, n: int) -> Path:
    """A ring hostfile for ``n`` ranks on loopback: ``[["127.0.0.1:PORT"], ...]``."""
    path = Path(path)
    path.write_text(json.dumps([[f"{LOOPBACK}:{p}"] for p in free_ports(n)]))
    return path


def launch_local(cmd: Sequence[str], n: int = 2, timeout: float = 120.0, env: Mapping[str, str] | None = None,
                 cwd: str | os.PathLike | None = None) -> list[RankResult]:
    """Run ``cmd`` as ranks 0..n-1 of a ring group on loopback; returns every rank's result.

    Args:
        cmd: the command of every rank (e.g. ``[sys.executable, "-m", "mlxquant", "imatrix", ...]``).
        n: processes (at least 2: a one-process ring is no group).
        timeout: seconds for the whole group; then every rank still running is killed.
        env: extra environment variables for every rank.
        cwd: working directory.
    """
    if n < 2:
        raise ValueError(f"a ring group needs at least 2 processes, not {n}")
    with tempfile.TemporaryDirectory(prefix="mlxquant-ring-") as tmp:
        hostfile = write_hostfile(Path(tmp) / "hosts.json", n)
        procs, files = [], []
        for rank in range(n):
            out = open(Path(tmp) / f"{rank}.out", "w+b")
            err = open(Path(tmp) / f"{rank}.err", "w+b")
            files.append((out, err))
            e = {**os.environ, **(env or {}), "MLX_RANK": str(rank), "MLX_HOSTFILE": str(hostfile)}
            procs.append(subprocess.Popen(list(cmd), env=e, cwd=cwd, stdout=out, stderr=err,
                                          stdin=subprocess.DEVNULL))
        deadline = time.monotonic() + timeout
        try:
            while True:
                codes = [p.poll() for p in procs]  # every process, each time
                if all(c is not None for c in codes) or any(c not in (None, 0) for c in codes):
                    break
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        finally:
            for p in procs:  # ours only, by process id
                if p.poll() is None:
                    p.kill()
                    p.wait()
        results = []
        for rank, (p, (out, err)) in enumerate(zip(procs, files)):
            out.seek(0)
            err.seek(0)
            results.append(RankResult(rank, p.returncode if p.returncode >= 0 else None,
                                      out.read().decode("utf-8", "replace"),
                                      err.read().decode("utf-8", "replace")))
            out.close()
            err.close()
        return results
