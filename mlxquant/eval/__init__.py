"""Measuring what quantization costs: perplexity, llama.cpp's KL-divergence statistics, sweeps over
quantization levels with tables and plots, and speed benchmarks."""

from .evaluate import EvalError, EvalReport, evaluate
from .metrics import Metrics, TokenScores
from .sweep import SweepReport, sweep

__all__ = ["EvalError", "EvalReport", "evaluate", "Metrics", "TokenScores", "SweepReport", "sweep"]
