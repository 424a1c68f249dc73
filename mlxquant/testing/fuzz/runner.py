"""The campaign: seeds once, worker processes, scheduling, hang and crash handling, totals.

The parent builds the seeds (:mod:`.seeds`) into a tmpfs folder (``/dev/shm`` where it exists),
starts ``workers`` processes (``spawn``: a fresh interpreter each, nothing inherited from a parent
that has threads and Numba loaded) and hands them chunks of input indices, ~0.25 s of work each.
Inputs are generated in the worker from ``(campaign seed, target, index)``, so only indices and
counts cross the pipes.

Each worker publishes the index and start time of the input it is running in shared memory. A
worker whose input runs past ``2 x time_limit + 2 s`` (SIGALRM did not get through: a loop in C)
is killed and counted as a hang; a worker that dies is a crash. Either way the parent regenerates
that input, saves it as a finding, starts a new worker and re-queues the rest of the chunk.

``--inputs N`` splits N by each target's ``share`` (conversion is ~1 %); ``--seconds S`` splits
the time by ``time_share`` (conversion gets half a share).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import signal
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, Callable

from .mutate import make_input
from .seeds import build_seeds, load_seeds
from .targets import Target, get_target
from .worker import FAILURE_KINDS, KINDS, Outcome, save_finding, worker_main

CHUNK_SECONDS = 0.25
HEADROOM = 2 << 30  # address space allowed above what the warmed-up worker maps
WORKER_ENV = {"MLXQUANT_THREADS": "1", "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
              "OPENBLAS_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2", "RUST_BACKTRACE": "0"}


@dataclass
class TargetStats:
    """Per-target totals (``seconds``: worker time spent on the target)."""

    inputs: int = 0
    seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))

    @property
    def rate(self) -> float:
        return self.inputs / self.seconds if self.seconds else 0.0


@dataclass
class CampaignResult:
    """What a campaign found. ``findings``: key -> description with a total ``count``."""

    stats: dict[str, TargetStats]
    findings: dict[str, dict[str, Any]]
    wall: float
    workers: int
    seed: int
    findings_dir: str | None
    warm_failures: list[str] = field(default_factory=list)
    vm_bytes: int = 0
    cap_bytes: int = 0

    @property
    def failed(self) -> bool:
        """Any non-project outcome, hang, MemoryError, crash or leftover (or a seed that fails)."""
        return bool(self.warm_failures) or any(
            s.counts[k] for s in self.stats.values() for k in FAILURE_KINDS)


def work_root() -> Path:
    """tmpfs when available (inputs are written once per run), else the temp folder."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())


class _Proc:
    """One worker process, its pipe, its heartbeat and its current job."""

    def __init__(self, ctx: Any, wid: int, cfg: dict[str, Any]):
        self.wid, self.cfg = wid, cfg
        self.hb = ctx.RawArray("d", 2)
        self.conn, child = ctx.Pipe()
        self.p = ctx.Process(target=worker_main, args=(child, self.hb, cfg), daemon=True,
                             name=f"mlxquant-fuzz-{wid}")
        self.p.start()
        child.close()
        self.ready = False
        self.job: tuple[str, list[int]] | None = None

    def kill(self) -> None:
        if self.p.is_alive():
            self.p.kill()
        self.p.join(5)
        self.conn.close()


class Campaign:
    """A campaign over ``targets``; call :meth:`run`."""

    def __init__(self, targets: list[str], *, inputs: int | None = None, seconds: float | None = None,
                 quotas: dict[str, int] | None = None, workers: int = 2, seed: int = 0,
                 findings_dir: str | os.PathLike | None = None, memory_cap: int | None = None,
                 seeds_root: str | os.PathLike | None = None,
                 progress: Callable[[str], None] | None = None):
        if sum(x is not None for x in (inputs, seconds, quotas)) != 1:
            raise ValueError("give exactly one of inputs, seconds or quotas (inputs per target)")
        self.targets: dict[str, Target] = {n: get_target(n) for n in targets}
        self.inputs, self.seconds, self.n_workers, self.seed = inputs, seconds, workers, seed
        self.findings_dir = Path(findings_dir) if findings_dir else None
        self.memory_cap, self.seeds_root, self.say = memory_cap, seeds_root, progress or (lambda s: None)
        self.stats = {n: TargetStats() for n in self.targets}
        self.findings: dict[str, dict[str, Any]] = {}
        total_share = sum(t.share for t in self.targets.values())
        self.quota = {n: max(1, int((inputs or 0) * t.share / total_share))
                      for n, t in self.targets.items()}
        # rounding down loses a few inputs: give them to the targets in order, so that the quotas
        # add up to exactly ``inputs``
        for n in list(self.targets)[: max(0, (inputs or 0) - sum(self.quota.values()))]:
            self.quota[n] += 1
        if quotas is not None:
            self.quota = {n: max(1, int(quotas.get(n, 1))) for n in self.targets}
        self.assigned = dict.fromkeys(self.targets, 0)
        self.charged = dict.fromkeys(self.targets, 0.0)
        self.next_index = dict.fromkeys(self.targets, 0)
        self.requeued: dict[str, deque[int]] = {n: deque() for n in self.targets}

    # -- bookkeeping ---------------------------------------------------------------------------
    def _add_finding(self, key: str, info: dict[str, Any], count: int) -> None:
        f = self.findings.setdefault(key, {**info, "key": key, "count": 0})
        f["count"] += count

    def _record_parent_outcome(self, name: str, index: int, o: Outcome) -> None:
        """A hang the parent had to kill, or a crash: count it and save the regenerated input."""
        st = self.stats[name]
        st.inputs += 1
        st.counts[o.kind] += 1
        t = self.targets[name]
        try:
            inp = make_input(self.seeds, name, t.cases, self.seed, index)
        except Exception:  # noqa: BLE001 - counted as the worker saw it; nothing to save
            self._add_finding(o.key, {**o.info, "kind": o.kind, "index": index}, 1)
            return
        if self.findings_dir is not None and o.key not in self.findings:
            o.info["saved"] = str(save_finding(self.findings_dir, o, inp, self.root / "seeds",
                                               self.seeds[inp.seed], self.seed))
        self._add_finding(o.key, {**o.info, "kind": o.kind, "index": index, "seed": inp.seed,
                                  "variant": inp.variant}, 1)

    def _pick(self, now: float) -> str | None:
        if self.seconds is not None:
            if now - self.t0 >= self.seconds:
                return None
            return min(self.targets, key=lambda n: self.charged[n] / self.targets[n].time_share)
        open_ = [n for n in self.targets if self.requeued[n] or self.assigned[n] < self.quota[n]]
        return min(open_, key=lambda n: self.assigned[n] / self.quota[n]) if open_ else None

    def _chunk(self, name: str) -> list[int]:
        st = self.stats[name]
        rate = st.rate if st.inputs >= 8 else 4.0
        size = max(1, min(256, int(rate * CHUNK_SECONDS)))
        if self.seconds is None:
            size = min(size, max(1, self.quota[name] - self.assigned[name]))
        q = self.requeued[name]
        if q:
            return [q.popleft() for _ in range(min(size, len(q)))]
        start = self.next_index[name]
        self.next_index[name] += size
        self.assigned[name] += size
        self.charged[name] += size / rate
        return list(range(start, start + size))

    # -- processes -----------------------------------------------------------------------------
    def _start(self, wid: int) -> _Proc:
        cfg = {"seeds": str(self.root / "seeds"), "work": str(self.root / f"w{wid}-{time.monotonic_ns()}"),
               "findings": str(self.findings_dir) if self.findings_dir else None, "seed": self.seed,
               "targets": list(self.targets), "cap": self.memory_cap, "headroom": HEADROOM}
        return _Proc(self.ctx, wid, cfg)

    def _replace(self, procs: list[_Proc], w: _Proc, kind: str, what: str, detail: str,
                 idx: int | None = None) -> None:
        assert w.job is not None
        name, indices = w.job
        if idx is None:  # a crash: the input it was running (or had just finished)
            idx = int(w.hb[0])
        w.kill()
        shutil.rmtree(w.cfg["work"], ignore_errors=True)
        key = f"{kind}:{name}:{what}"
        info = {"type": kind, "message": detail, "frame": "-"}
        self._record_parent_outcome(name, idx, Outcome(kind, key, info))
        self.requeued[name].extendleft(reversed([i for i in indices if i != idx]))
        self.say(f"worker {w.wid}: {kind} on {name} input {idx} ({detail}); restarting it")
        procs[procs.index(w)] = self._start(w.wid)

    def _on_message(self, w: _Proc, msg: tuple) -> None:
        if msg[0] == "warm":
            _, failures, vm, cap = msg
            self.warm_failures.extend(f for f in failures if f not in self.warm_failures)
            self.vm_bytes, self.cap_bytes = max(self.vm_bytes, vm), max(self.cap_bytes, cap)
            w.ready = True
            return
        _, name, n, counts, found, secs = msg
        st = self.stats[name]
        st.inputs += n
        st.seconds += secs
        for k, v in counts.items():
            st.counts[k] = st.counts.get(k, 0) + v
        for key, info in found.items():
            self._add_finding(key, info, info.pop("count"))
        w.job = None

    def run(self) -> CampaignResult:
        """Run the campaign and return its totals (workers and temporary files cleaned up)."""
        self.root = Path(tempfile.mkdtemp(prefix="mlxquant-fuzz-", dir=work_root()))
        self.warm_failures: list[str] = []
        self.vm_bytes = self.cap_bytes = 0
        old_env = {k: os.environ.get(k) for k in WORKER_ENV}
        procs: list[_Proc] = []
        try:
            if self.seeds_root is not None:
                shutil.copytree(self.seeds_root, self.root / "seeds")
            else:
                self.say("building seeds from the real models ...")
                build_seeds(self.root / "seeds")
            self.seeds = load_seeds(self.root / "seeds")
            if self.findings_dir is not None:
                self.findings_dir.mkdir(parents=True, exist_ok=True)
            os.environ.update(WORKER_ENV)
            self.ctx = mp.get_context("spawn")
            procs = [self._start(i) for i in range(self.n_workers)]
            self.say(f"{self.n_workers} workers warming up ...")
            self.t0 = time.monotonic()
            self._loop(procs)
        finally:
            for w in procs:
                try:
                    w.conn.send(("stop",))
                except (OSError, ValueError):
                    pass
            for w in procs:
                w.p.join(2)
                w.kill()
            for k, v in old_env.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
            shutil.rmtree(self.root, ignore_errors=True)
        return CampaignResult(self.stats, self.findings, time.monotonic() - self.t0, self.n_workers,
                              self.seed, str(self.findings_dir) if self.findings_dir else None,
                              self.warm_failures, self.vm_bytes, self.cap_bytes)

    def _loop(self, procs: list[_Proc]) -> None:
        warm_deadline = time.monotonic() + 600
        started = False
        while True:
            now = time.monotonic()
            if not started and all(w.ready for w in procs):
                started, self.t0 = True, now  # rates and --seconds count from here
                self.say("running ...")
            for i, w in enumerate(procs):
                if started and w.ready and w.job is None and not w.p.is_alive():
                    w.kill()  # died between jobs (nothing to count): replace it
                    procs[i] = self._start(w.wid)
                elif started and w.ready and w.job is None:
                    name = self._pick(now)
                    if name is not None:
                        w.job = (name, self._chunk(name))
                        w.conn.send(("run", *w.job))
            if started and all(w.job is None for w in procs) and self._pick(now) is None:
                return
            for conn in wait([w.conn for w in procs], timeout=0.1):
                w = next(p for p in procs if p.conn is conn)
                try:
                    self._on_message(w, conn.recv())
                except (EOFError, OSError):
                    pass  # died: handled below
            now = time.monotonic()
            for w in list(procs):
                if not w.p.is_alive() and (w.job is not None or not w.ready):
                    if not w.ready:
                        raise RuntimeError(f"fuzz worker {w.wid} died while warming up "
                                           f"(exit code {w.p.exitcode})")
                    code = w.p.exitcode or 0
                    sig = signal.Signals(-code).name if code < 0 else f"exit {code}"
                    self._replace(procs, w, "crash", sig, f"worker died ({sig})")
                    continue
                since = w.hb[1]  # read once: the worker zeroes it when the input ends
                if w.job is None or since <= 0 or now - since <= 2 * self.targets[w.job[0]].time_limit + 2:
                    continue
                idx = int(w.hb[0])
                if w.hb[1] == since:  # still the same input
                    self._replace(procs, w, "hang", "killed",
                                  f"no return to Python; killed after {now - since:.1f} s", idx)
            if not started and now > warm_deadline:
                raise RuntimeError("fuzz workers did not finish warming up in 600 s")


def run_campaign(targets: list[str], **kw: Any) -> CampaignResult:
    """:class:`Campaign` ``(targets, **kw).run()``."""
    return Campaign(targets, **kw).run()
