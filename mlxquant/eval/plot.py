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
    for bpw, kld, name, unc in pts:
        mlx = name.lower().startswith("mlx")
        ax.errorbar([bpw], [kld], yerr=[[min(unc or 0, kld * 0.999)], [unc or 0]], fmt="s" if mlx else "o",
                    color="tab:orange" if mlx else "tab:blue", capsize=2, markersize=6)
        ax.annotate(name, (bpw, kld), textcoords="offset points", xytext=(6, 5), fontsize=9)
    ax.set_yscale("log")
    ax.set_xlabel("bits per weight")
    ax.set_ylabel("mean KL divergence from base (nats, log scale)")
    base = Path(report.base).name
    ax.set_title(title or f"{base}: quantization cost ({report.chunks}×{report.ctx} tokens, "
                          f"{report.scored_tokens} scored)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    xs = [p[0] for p in pts]
    ax.set_xlim(min(xs) - 0.5, max(xs) + 1.0)
    fig.tight_layout()
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(out)
    return out
