"""Fuzz mlxquant's readers and conversion end to end (issue 11), and print a table.

    python benchmarks/fuzz.py [--inputs N | --seconds S] [--targets gguf,imatrix,...]
                              [--workers 2] [--seed 0] [--json] [--findings DIR]
                              [--markdown FILE] [--memory-cap GiB]
    python benchmarks/fuzz.py --replay DIR      # rerun one saved finding, print its traceback

Targets: gguf, inspect, imatrix, hf, mlx, tokenizer, config, gguf_config, convert (default: all).
Seeds are built at run time from the real models (the SmolLM2 GGUF and tiny-shakespeare-llama).
The table has, per target: inputs, inputs/s (per worker), ok, project errors (MlxquantError),
non-project outcomes (their distinct count in brackets), hangs, MemoryErrors, crashes and
leftovers at the output path. Exit status 1 if anything but ok / project errors happened.

The long campaign of issue 11 (>= 1,000,000 inputs):

    python benchmarks/fuzz.py --inputs 1000000 --markdown fuzz-findings.md
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path


def _replay(folder: Path) -> int:
    from mlxquant.testing.fuzz.seeds import build_seeds
    from mlxquant.testing.fuzz.targets import Context, get_target

    rec = json.loads((folder / "finding.json").read_text(encoding="utf-8"))
    t = get_target(rec["target"])
    print(f"replaying {rec['kind']} {rec.get('type')} at {rec.get('frame')} ({rec['target']}, "
          f"{rec['seed']}, variant {rec['variant']!r}; mutations: {', '.join(rec['ops'])})")
    with tempfile.TemporaryDirectory() as tmp:
        seeds = Path(tmp) / "seeds"
        if rec["target"] == "convert":
            build_seeds(seeds)
        out = Path(tmp) / "out"
        out.mkdir()
        t0 = time.perf_counter()
        try:
            t.run(folder / rec["input"], rec["variant"], Context(seeds, out))
        except Exception:
            traceback.print_exc()
            print(f"raised after {time.perf_counter() - t0:.2f} s")
            return 1
        print(f"ran without an exception in {time.perf_counter() - t0:.2f} s; output folder: "
              f"{sorted(p.name for p in out.iterdir())}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from mlxquant.testing.fuzz import TARGETS, run_campaign
    from mlxquant.testing.fuzz.report import as_json, findings_markdown, table

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    budget = ap.add_mutually_exclusive_group()
    budget.add_argument("--inputs", type=int, help="total inputs, split by target share")
    budget.add_argument("--seconds", type=float, help="wall seconds (after warm-up)")
    ap.add_argument("--targets", default=",".join(TARGETS), help="comma-separated (default: all)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    ap.add_argument("--findings", help="folder for reproducers (default: a new temp folder)")
    ap.add_argument("--markdown", help="also write the findings as Markdown to this file")
    ap.add_argument("--memory-cap", type=float, help="address-space cap per worker, GiB "
                    "(default: the warmed-up worker's size + 2 GiB)")
    ap.add_argument("--replay", help="rerun one saved finding folder")
    args = ap.parse_args(argv)
    if args.replay:
        return _replay(Path(args.replay))
    if args.inputs is None and args.seconds is None:
        args.seconds = 60.0
    findings = args.findings or tempfile.mkdtemp(prefix="mlxquant-fuzz-findings-")
    targets = [t for t in args.targets.split(",") if t]
    res = run_campaign(targets, inputs=args.inputs, seconds=args.seconds, workers=args.workers,
                       seed=args.seed, findings_dir=findings,
                       memory_cap=int(args.memory_cap * 2**30) if args.memory_cap else None,
                       progress=lambda s: print(s, file=sys.stderr, flush=True))
    if args.markdown:
        Path(args.markdown).write_text(findings_markdown(res), encoding="utf-8")
    if args.json:
        print(json.dumps(as_json(res), indent=1))
    else:
        print(table(res))
        for f in sorted(res.findings.values(), key=lambda f: f["key"]):
            print(f"- {f['key']} ({f['count']}x): {' '.join(str(f.get('message', '')).split())[:160]}")
        for w in res.warm_failures:
            print(f"- seed failed: {w}")
        print(f"reproducers: {findings}")
    return 1 if res.failed else 0


if __name__ == "__main__":
    sys.exit(main())
