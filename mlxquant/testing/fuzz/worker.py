"""The fuzz worker: runs inputs in-process under an address-space cap and a time limit, and
classifies what happened.

Outcomes of one input:

- ``ok``; ``project``: an :class:`~mlxquant.errors.MlxquantError` (the contract for bad input);
- ``nonproject``: any other exception, deduplicated by exception type + the innermost frame
  inside mlxquant (``formats/hf.py:123``; the fuzzer's own frames are skipped);
- ``hang``: the input ran past its time limit (SIGALRM raised :class:`FuzzTimeout` in Python
  code; a loop in C that never returns to Python is killed by the parent instead);
- ``memory``: MemoryError (the worker runs under ``RLIMIT_AS``);
- ``leftover``: a conversion left something in its output folder (after a failure: anything;
  after a success: anything but the output). Counted besides the primary outcome;
- ``crash``: the worker process died; the parent sees that (:mod:`.runner`);
- ``harness``: the fuzzer itself failed to make the input (a bug here, never the readers').

Each distinct finding's input is saved (once) under the findings folder with ``finding.json``
(type, message, frame, traceback, the mutations, how to replay it).

The cap is set *after* the warm-up (every case's pristine seed is run once: imports, Numba's
cached kernels, MLX), because Numba/LLVM and MLX reserve far more virtual address space while
loading than an input ever needs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import resource
import shutil
import signal
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .mutate import FuzzInput, make_input
from .seeds import Seed, load_seeds
from .targets import Context, Target, get_target

PACKAGE_DIR = Path(__file__).resolve().parents[2]  # .../mlxquant
FUZZ_DIR = Path(__file__).resolve().parent
KINDS = ("ok", "project", "nonproject", "hang", "memory", "crash", "leftover", "harness")
FAILURE_KINDS = ("nonproject", "hang", "memory", "crash", "leftover", "harness")
WARM_UP_LIMIT = 900.0  # seconds for a pristine seed (a cold Numba cache compiles for minutes)


class FuzzTimeout(BaseException):
    """Raised by SIGALRM when an input runs past its time limit (a BaseException, so that a
    library's ``except Exception`` cannot swallow it)."""


@dataclass
class Outcome:
    """What one input did: its kind, and for failures a dedup key and a description."""

    kind: str
    key: str = ""
    info: dict[str, Any] = field(default_factory=dict)


def innermost_frame(tb: Any) -> str:
    """``path:line`` (relative to the mlxquant package) of the innermost traceback frame inside
    mlxquant but outside the fuzzer, or ``"-"``."""
    found = "-"
    for fs in traceback.extract_tb(tb):
        p = Path(fs.filename)
        try:
            rel = p.resolve().relative_to(PACKAGE_DIR)
        except (ValueError, OSError):
            continue
        if FUZZ_DIR in p.resolve().parents:
            continue
        found = f"{rel}:{fs.lineno}"
    return found


def _type_name(e: BaseException) -> str:
    t = type(e)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def classify(e: BaseException, target: str) -> Outcome:
    """The outcome of an exception raised by a target."""
    from ...errors import MlxquantError

    if isinstance(e, MlxquantError):
        return Outcome("project", info={"type": _type_name(e), "message": str(e)[:300]})
    kind = ("hang" if isinstance(e, FuzzTimeout) else "memory" if isinstance(e, MemoryError)
            else "nonproject")
    frame = innermost_frame(e.__traceback__)
    name = "timeout" if kind == "hang" else _type_name(e)
    info = {"type": name, "message": str(e)[:2000], "frame": frame,
            "traceback": "".join(traceback.format_exception(e)[-40:])}
    return Outcome(kind, f"{kind}:{target}:{name}@{frame}", info)


def _input_path(root: Path, seed: Seed) -> Path:
    return seed.path(root)


def write_input(seeds_root: Path, seed: Seed, inp: FuzzInput, dest: Path) -> Path:
    """Materialize an input as a new copy under ``dest`` (for findings); returns its path."""
    src = seeds_root / seed.name
    shutil.copytree(src, dest / seed.name, dirs_exist_ok=True)
    for rel, data in inp.changes.items():
        p = dest / seed.name / rel
        if data is None:
            p.unlink(missing_ok=True)
        else:
            p.write_bytes(data)
    return _input_path(dest, seed)


def save_finding(findings: Path, o: Outcome, inp: FuzzInput, seeds_root: Path, seed: Seed,
                 campaign_seed: int) -> Path:
    """Save the input and description of a finding once (the folder is named after its key)."""
    d = findings / f"{o.kind}-{inp.target}-{hashlib.sha1(o.key.encode()).hexdigest()[:10]}"
    if d.exists():
        return d
    tmp = findings / f".{d.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    path = write_input(seeds_root, seed, inp, tmp / "input")
    record = {**o.info, "key": o.key, "kind": o.kind, "target": inp.target, "seed": inp.seed,
              "variant": inp.variant, "index": inp.index, "campaign_seed": campaign_seed,
              "ops": inp.ops, "input": str(path.relative_to(tmp)),
              "replay": f"python benchmarks/fuzz.py --replay {d}"}
    (tmp / "finding.json").write_text(json.dumps(record, indent=1, default=str), encoding="utf-8")
    try:
        os.rename(tmp, d)
    except OSError:  # another worker saved the same finding first
        shutil.rmtree(tmp, ignore_errors=True)
    return d


class Worker:
    """Runs inputs of any target on a private copy of the seeds (``work/in``)."""

    def __init__(self, seeds_root: Path, work: Path, findings: Path | None, campaign_seed: int):
        self.seeds_root, self.findings, self.campaign_seed = seeds_root, findings, campaign_seed
        self.seeds: dict[str, Seed] = load_seeds(seeds_root)
        self.inp = work / "in"
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(seeds_root, self.inp)
        self.ctx = Context(seeds_root, work / "out")
        self.ctx.out.mkdir(parents=True)
        self.saved: set[str] = set()
        self.dirty: dict[str, set[str]] = {}  # seed -> files that differ from the seed (lazy restore)
        signal.signal(signal.SIGALRM, self._alarm)

    @staticmethod
    def _alarm(signum: int, frame: Any) -> None:
        raise FuzzTimeout()

    def _apply(self, inp: FuzzInput) -> Path:
        seed = self.seeds[inp.seed]
        for rel in self.dirty.pop(seed.name, set()) - inp.changes.keys():
            (self.inp / seed.name / rel).write_bytes(seed.files[rel].data)
        self.dirty[seed.name] = set(inp.changes)
        for rel, data in inp.changes.items():
            p = self.inp / seed.name / rel
            if data is None:
                p.unlink(missing_ok=True)
            else:
                p.write_bytes(data)
        return _input_path(self.inp, seed)

    def _leftovers(self, target: Target, failed: bool) -> Outcome | None:
        names = sorted(os.listdir(self.ctx.out))
        stray = names if failed else [n for n in names if n not in ("out", "out.gguf")]
        for n in names:
            p = self.ctx.out / n
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        if not stray:
            return None
        pattern = ",".join(sorted({("*.partial" if n.endswith(".partial") else n) for n in stray}))
        what = "after a failure" if failed else "after a success"
        return Outcome("leftover", f"leftover:{target.name}:{pattern} {what}",
                       {"type": "leftover", "message": f"{', '.join(stray)} left in the output folder {what}",
                        "frame": "-"})

    def run(self, target: Target, inp: FuzzInput, time_limit: float | None = None) -> list[Outcome]:
        """Run one input; the primary outcome first, then a leftover if any."""
        path = self._apply(inp)
        outcome = Outcome("ok")
        try:
            signal.setitimer(signal.ITIMER_REAL, time_limit or target.time_limit)
            try:
                target.run(path, inp.variant, self.ctx)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except BaseException as e:  # noqa: BLE001 - classifying everything is the point
            outcome = classify(e, target.name)
        outcomes = [outcome]
        if target.output:
            left = self._leftovers(target, outcome.kind != "ok")
            if left is not None:
                outcomes.append(left)
        for o in outcomes:
            if o.kind in FAILURE_KINDS and self.findings is not None and o.key not in self.saved:
                self.saved.add(o.key)
                o.info["saved"] = str(save_finding(self.findings, o, inp, self.seeds_root,
                                                   self.seeds[inp.seed], self.campaign_seed))
        return outcomes

    def make(self, target: Target, index: int) -> FuzzInput:
        return make_input(self.seeds, target.name, target.cases, self.campaign_seed, index)

    def warm_up(self, target: Target) -> list[str]:
        """Run each case's pristine seed once; returns what did not come out ``ok``.
        Self-checks are not warmed up (they abort, sleep or allocate 10 GB on purpose)."""
        bad: list[str] = []
        if target.name.startswith("selfcheck"):
            return bad
        for seed, variant, _ in target.cases:
            inp = FuzzInput(target.name, -1, seed, variant, {}, ["unmutated"])
            for o in self.run(target, inp, WARM_UP_LIMIT):  # Numba may compile kernels here
                if o.kind != "ok":
                    bad.append(f"{target.name} on pristine {seed} ({variant or '-'}): {o.kind} "
                               f"{o.info.get('type', '')}: {o.info.get('message', '')[:300]}")
        return bad


def _vm_size() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def worker_main(conn: Any, hb: Any, cfg: dict[str, Any]) -> None:
    """Process entry: warm up, cap the address space, then run jobs until told to stop.

    Messages in: ``("run", target, indices)``, ``("stop",)``. Out: ``("warm", failures,
    vm_bytes, cap_bytes)``, then per job ``("done", target, n, counts, findings, seconds)``.
    ``hb`` (shared doubles) holds the current input index and its start time (0: idle).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")
    w = Worker(Path(cfg["seeds"]), Path(cfg["work"]),
               Path(cfg["findings"]) if cfg.get("findings") else None, cfg["seed"])
    targets = {n: get_target(n) for n in cfg["targets"]}
    failures = [f for t in targets.values() for f in w.warm_up(t)]
    vm = _vm_size()
    cap = max(int(cfg["cap"]), vm + int(cfg["headroom"])) if cfg.get("cap") else vm + int(cfg["headroom"])
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    conn.send(("warm", failures, vm, cap))
    while True:
        msg = conn.recv()
        if msg[0] == "stop":
            break
        _, name, indices = msg
        t = targets[name]
        counts = dict.fromkeys(KINDS, 0)
        found: dict[str, dict[str, Any]] = {}
        t0 = time.perf_counter()
        for i in indices:
            try:
                inp = w.make(t, i)
            except Exception as e:  # noqa: BLE001 - the fuzzer's own bug: counted, never a crash
                last = traceback.extract_tb(e.__traceback__)[-1]
                where = f"{Path(last.filename).name}:{last.lineno}"
                o = Outcome("harness", f"harness:{name}:{_type_name(e)}@{where}",
                            {"type": _type_name(e), "message": str(e)[:300], "frame": where,
                             "traceback": "".join(traceback.format_exception(e)[-20:])})
                inp = FuzzInput(name, i, t.cases[0][0], t.cases[0][1], {}, ["mutation failed"])
                outcomes = [o]
            else:
                hb[0], hb[1] = float(i), time.monotonic()
                outcomes = w.run(t, inp)
            hb[1] = 0.0
            counts[outcomes[0].kind] += 1
            for o in outcomes[1:]:
                counts[o.kind] += 1
            for o in outcomes:
                if o.key:
                    f = found.setdefault(o.key, {**o.info, "kind": o.kind, "index": i, "seed": inp.seed,
                                                 "variant": inp.variant, "count": 0})
                    f["count"] += 1
        conn.send(("done", name, len(indices), counts, found, time.perf_counter() - t0))
