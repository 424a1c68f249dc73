"""Perplexity and KL-divergence statistics, with llama.cpp's definitions.

``llama-perplexity --kl-divergence`` (tools/perplexity/perplexity.cpp) scores, per window of
``n_ctx`` tokens, positions ``n_ctx/2 .. n_ctx-2`` (each predicting the next token) and reports:

- PPL = exp(mean NLL), uncertainty ``PPL * sd(NLL)/sqrt(n-1)``; the same for the base model;
- mean KLD(base || model) ± sd/sqrt(n-1); KLD median (mean of the two middle values when n is
  even), percentiles by linear interpolation between sorted values (``p * (n - 1)``), maximum;
- same top token: % of positions where both argmaxes agree, ± sqrt(p(1-p)/(n-1));
- Δp = p_model(next token) - p_base(next token): mean ± uncertainty, RMS, maximum |Δp|.

Two differences, both smaller than 1e-6 in mean KLD on the models tested here: llama.cpp stores the
base log-probabilities as 16-bit integers and drops vocabulary terms with ``p_base < e^-16``; here
both are kept exactly (float64).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

ROWS_PER_BLOCK = 64  # rows of (rows, vocab) float64 scratch per step


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64."""
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def mean_and_uncertainty(values: np.ndarray) -> tuple[float, float]:
    """llama.cpp's ``mean_and_uncertainty``: mean, and sqrt(var / (n - 1)) for n > 10 (else 0)."""
    v = np.asarray(values, dtype=np.float64)
    n = v.size
    if n < 1:
        return 0.0, 0.0
    f = float(v.sum() / n)
    df = float((v * v).sum() / n - f * f)
    return f, (math.sqrt(df / (n - 1)) if df > 0 and n > 10 else 0.0)


def percentile(sorted_values: np.ndarray, fraction: float) -> float:
    """llama.cpp's percentile: linear interpolation at ``fraction * (n - 1)``."""
    v = sorted_values
    if fraction <= 0:
        return float(v[0])
    if fraction >= 1:
        return float(v[-1])
    p = fraction * (len(v) - 1)
    i = int(p)
    p -= i
    return float((1 - p) * v[i] + p * v[min(i + 1, len(v) - 1)])


def median(sorted_values: np.ndarray) -> float:
    n = len(sorted_values)
    return float(0.5 * (sorted_values[n // 2] + sorted_values[n // 2 - 1]) if n % 2 == 0
                 else sorted_values[n // 2])


@dataclass
class TokenScores:
    """Per scored position: NLL of the model, and (with a reference) the base NLL, KLD, Δp and
    whether the top tokens agree. Filled window by window with :meth:`add`."""

    nll: list[np.ndarray] = field(default_factory=list)
    nll_base: list[np.ndarray] = field(default_factory=list)
    kld: list[np.ndarray] = field(default_factory=list)
    p_diff: list[np.ndarray] = field(default_factory=list)
    same_top: list[np.ndarray] = field(default_factory=list)

    def add(self, logits: np.ndarray, targets: np.ndarray, base_logprobs: np.ndarray | None = None) -> None:
        """Score ``logits (n, vocab)`` predicting ``targets (n,)``; ``base_logprobs (n, vocab)``
        (log-softmax of the reference, float64 or float32) adds the comparison."""
        targets = np.asarray(targets, dtype=np.int64)
        for r0 in range(0, len(targets), ROWS_PER_BLOCK):
            sl = slice(r0, r0 + ROWS_PER_BLOCK)
            lp = log_softmax(logits[sl])
            rows = np.arange(lp.shape[0])
            nll = -lp[rows, targets[sl]]
            self.nll.append(nll)
            if base_logprobs is None:
                continue
            bp = np.asarray(base_logprobs[sl], dtype=np.float64)
            if bp.shape != lp.shape:
                raise ValueError(f"reference log-probs {bp.shape} vs model logits {lp.shape}")
            nll_b = -bp[rows, targets[sl]]
            self.nll_base.append(nll_b)
            self.kld.append((np.exp(bp) * (bp - lp)).sum(axis=-1))
            self.p_diff.append(np.exp(-nll) - np.exp(-nll_b))
            self.same_top.append(lp.argmax(axis=-1) == bp.argmax(axis=-1))

    @property
    def count(self) -> int:
        return int(sum(len(a) for a in self.nll))

    def summary(self) -> "Metrics":
        """The statistics over every position added so far."""
        nll = np.concatenate(self.nll) if self.nll else np.zeros(0)
        m = Metrics(count=int(nll.size))
        if nll.size == 0:
            return m
        lp, lp_unc = mean_and_uncertainty(nll)
        m.ppl, m.ppl_uncertainty = math.exp(lp), math.exp(lp) * lp_unc
        if not self.kld:
            return m
        nll_b = np.concatenate(self.nll_base)
        kld = np.sort(np.concatenate(self.kld))
        p_diff = np.concatenate(self.p_diff)
        same = np.concatenate(self.same_top)
        lb, lb_unc = mean_and_uncertainty(nll_b)
        m.ppl_base, m.ppl_base_uncertainty = math.exp(lb), math.exp(lb) * lb_unc
        m.ln_ppl_ratio = lp - lb
        m.kld_mean, m.kld_uncertainty = mean_and_uncertainty(kld)
        m.kld_median = median(kld)
        m.kld_p90, m.kld_p99, m.kld_p999 = (percentile(kld, f) for f in (0.90, 0.99, 0.999))
        m.kld_max = float(kld[-1])
        m.p_diff_mean, m.p_diff_uncertainty = mean_and_uncertainty(p_diff)
        m.p_diff_rms = math.sqrt(float((p_diff * p_diff).mean()))
        m.p_diff_max = float(np.abs(p_diff).max())
        top = float(same.mean())
        m.same_top = top
        m.same_top_uncertainty = math.sqrt(top * (1 - top) / (same.size - 1)) if same.size > 1 else 0.0
        return m


@dataclass
class Metrics:
    """Statistics of one model (vs a reference when the KLD fields are set). Probabilities and
    Δp are fractions (not %); KLD in nats."""

    count: int = 0
    ppl: float | None = None
    ppl_uncertainty: float | None = None
    ppl_base: float | None = None
    ppl_base_uncertainty: float | None = None
    ln_ppl_ratio: float | None = None
    kld_mean: float | None = None
    kld_uncertainty: float | None = None
    kld_median: float | None = None
    kld_p90: float | None = None
    kld_p99: float | None = None
    kld_p999: float | None = None
    kld_max: float | None = None
    same_top: float | None = None
    same_top_uncertainty: float | None = None
    p_diff_mean: float | None = None
    p_diff_uncertainty: float | None = None
    p_diff_rms: float | None = None
    p_diff_max: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
