"""The sweep plot: mean KLD (log scale) against bits per weight, one labelled point per variant.

matplotlib is an optional extra (``pip install mlxquant[plot]``), imported only here and only
when a plot is drawn; the Agg backend renders to a PNG without a display.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_sweep(report: Any, out: str | Path, title: str | None = None) -> Path:
    """Draw ``report`` (a :class:`~mlxquant.eval.sweep.SweepReport`) to the PNG ``out``.

    Raises ImportError when matplotlib is missing; ValueError when no variant was measured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [(r.bits_per_weight, r.kld_mean, r.name, r.kld_uncertainty) for r in report.rows
           if r.kld_mean is not None and r.bits_per_weight is not None and r.kld_mean > 0]
    if not pts:
        raise ValueError("no measured variant to plot")
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    styles = {"preset": ("o", "tab:blue", "llama.cpp presets / types"), "mlx": ("s", "tab:orange", "MLX"),
              "alloc": ("D", "tab:green", "mlxquant allocation")}
    seen: set[str] = set()
    for bpw, kld, name, unc in pts:
        kind = _kind(name)
        marker, color, label = styles[kind]
        ax.errorbar([bpw], [kld], yerr=[[min(unc or 0, kld * 0.999)], [unc or 0]], fmt=marker,
                    color=color, capsize=2, markersize=6, label=None if kind in seen else label)
        seen.add(kind)
        ax.annotate(name, (bpw, kld), textcoords="offset points", xytext=(6, 5), fontsize=9)
    ours = sorted((p[0], p[1]) for p in pts if _kind(p[2]) == "alloc")
    if len(ours) > 1:
        ax.plot(*zip(*ours), "-", color="tab:green", alpha=0.6)
    front = pareto(pts)
    if len(front) > 1:
        ax.plot(*zip(*front), "--", color="0.4", linewidth=1, label="Pareto front")
    rec = getattr(report, "recommendation", None)
    limit = memory_bpw(report)
    if rec and limit is not None:
        ax.axvline(limit, color="tab:red", linestyle=":", linewidth=1.2,
                   label=f"memory budget {rec['memory_bytes'] / 2**30:.2f} GiB, {rec['context']} ctx")
    ax.legend(fontsize=8, loc="upper right")
    ax.set_yscale("log")
    ax.set_xlabel("bits per weight")
    ax.set_ylabel("mean KL divergence from base (nats, log scale)")
    base = Path(report.base).name
    ax.set_title(title or f"{base}: quantization cost ({report.chunks}×{report.ctx} tokens, "
                          f"{report.scored_tokens} scored)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    xs = [p[0] for p in pts] + ([limit] if rec and limit is not None else [])
    ax.set_xlim(min(xs) - 0.5, max(xs) + 1.0)
    fig.tight_layout()
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(out)
    return out


def _kind(name: str) -> str:
    low = name.lower()
    return "mlx" if low.startswith("mlx") else "alloc" if low.startswith("alloc") else "preset"


def pareto(points: list[tuple[Any, ...]]) -> list[tuple[float, float]]:
    """The (bpw, KLD) points no other point beats on both (fewer or equal bits and lower KLD),
    by increasing bits per weight."""
    out: list[tuple[float, float]] = []
    for bpw, kld, *_ in sorted(points, key=lambda p: (p[0], p[1])):
        if not out or kld < out[-1][1]:
            out.append((bpw, kld))
    return out


def memory_bpw(report: Any) -> float | None:
    """The bits per weight (the x axis: tensor bits over weights) at which a GGUF file plus the
    recommendation's KV cache fills its memory: file bytes = bpw x weights / 8 + header, fitted
    on the measured GGUF rows (a line through the origin with one row)."""
    rec = getattr(report, "recommendation", None)
    rows = [r for r in report.rows if r.file_bytes and r.bits_per_weight and _kind(r.name) != "mlx"]
    if not rec or not rows:
        return None
    xs = [r.bits_per_weight for r in rows]
    ys = [r.file_bytes for r in rows]
    if len(set(xs)) > 1:
        n = len(xs)
        mx, my = sum(xs) / n, sum(ys) / n
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
        header = my - slope * mx
    else:
        slope, header = ys[0] / xs[0], 0.0
    return (rec["memory_bytes"] - rec["kv_cache_bytes"] - header) / slope
