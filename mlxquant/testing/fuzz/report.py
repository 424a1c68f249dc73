"""A campaign's table, its JSON, and the findings as Markdown."""

from __future__ import annotations

from typing import Any

from .runner import CampaignResult

COLUMNS = ("target", "inputs", "inputs/s", "ok", "project", "non-project (distinct)", "hangs",
           "MemoryErrors", "crashes", "leftovers", "harness errors")


def _distinct(result: CampaignResult, target: str, kind: str) -> int:
    return sum(1 for f in result.findings.values() if f["kind"] == kind and f["key"].split(":")[1] == target)


def rows(result: CampaignResult) -> list[list[str]]:
    """One row per target and a total (``inputs/s``: per worker for a target, wall for the total)."""
    out = []
    tot: dict[str, int] = {}
    for name, st in result.stats.items():
        c = st.counts
        for k, v in c.items():
            tot[k] = tot.get(k, 0) + v
        out.append([name, f"{st.inputs:,}", f"{st.rate:,.0f}", f"{c['ok']:,}", f"{c['project']:,}",
                    f"{c['nonproject']:,} ({_distinct(result, name, 'nonproject')})", f"{c['hang']:,}",
                    f"{c['memory']:,}", f"{c['crash']:,}", f"{c['leftover']:,}", f"{c['harness']:,}"])
    n = sum(st.inputs for st in result.stats.values())
    distinct = sum(1 for f in result.findings.values() if f["kind"] == "nonproject")
    out.append(["total", f"{n:,}", f"{n / result.wall if result.wall else 0:,.0f}",
                f"{tot.get('ok', 0):,}", f"{tot.get('project', 0):,}",
                f"{tot.get('nonproject', 0):,} ({distinct})", f"{tot.get('hang', 0):,}",
                f"{tot.get('memory', 0):,}", f"{tot.get('crash', 0):,}", f"{tot.get('leftover', 0):,}",
                f"{tot.get('harness', 0):,}"])
    return out


def table(result: CampaignResult) -> str:
    """The campaign table as aligned text (Markdown-compatible)."""
    body = rows(result)
    widths = [max(len(r[i]) for r in [list(COLUMNS), *body]) for i in range(len(COLUMNS))]

    def line(r: list[str]) -> str:
        cells = (c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        return "| " + " | ".join(cells) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    head = (f"{result.workers} workers, seed {result.seed}, {result.wall:.1f} s wall; inputs/s: per "
            f"worker for a target, wall for the total; address-space cap "
            f"{result.cap_bytes / 2**30:.1f} GiB (warmed-up worker {result.vm_bytes / 2**30:.1f} GiB)")
    return "\n".join([head, "", line(list(COLUMNS)), sep, *[line(r) for r in body]])


def findings_markdown(result: CampaignResult, title: str = "Fuzz findings") -> str:
    """Every distinct non-project outcome: kind, type, message, frame, count, reproducer."""
    out = [f"# {title}", "", table(result), ""]
    if result.warm_failures:
        out += ["## Seeds that did not run cleanly", ""] + [f"- {f}" for f in result.warm_failures] + [""]
    fails = sorted(result.findings.values(), key=lambda f: (f["kind"], f["key"]))
    out += [f"## Distinct non-project outcomes: {len(fails)}", ""]
    if result.findings_dir:
        out += [f"Reproducers under `{result.findings_dir}` (replay one: "
                "`python benchmarks/fuzz.py --replay DIR`).", ""]
    for i, f in enumerate(fails, 1):
        msg = " ".join(str(f.get("message", "")).split())[:300]
        out += [f"{i}. **{f['kind']}** `{f.get('type', '')}` at `{f.get('frame', '-')}` "
                f"({f['count']:,}x; target `{f['key'].split(':')[1]}`, seed `{f.get('seed')}`"
                f"{', variant ' + repr(f['variant']) if f.get('variant') else ''})",
                f"   - message: {msg!r}" if msg else "   - message: (empty)",
                f"   - reproducer: `{f.get('saved', 'not saved')}`"]
    return "\n".join(out) + "\n"


def as_json(result: CampaignResult) -> dict[str, Any]:
    """Everything in the result, JSON-serializable."""
    return {
        "workers": result.workers, "seed": result.seed, "wall_seconds": result.wall,
        "vm_bytes": result.vm_bytes, "cap_bytes": result.cap_bytes, "failed": result.failed,
        "warm_failures": result.warm_failures, "findings_dir": result.findings_dir,
        "targets": {n: {"inputs": st.inputs, "seconds": st.seconds, "rate": st.rate, **st.counts}
                    for n, st in result.stats.items()},
        "findings": [{k: v for k, v in f.items() if k != "traceback"} for f in result.findings.values()],
    }
