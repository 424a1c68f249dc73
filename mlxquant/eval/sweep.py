"""``mlxquant sweep``: convert a base model to several quantization levels, measure each against the
base, and write a markdown table, JSON and a plot (mean KLD vs bits per weight).

Variants: llama.cpp presets / GGML types (``Q4_K_M``, ``Q8_0``, ...) through
:func:`mlxquant.convert.convert` to GGUF; ``mlx4`` / ``mlx8`` (``mlxN[gG]``, default group 64)
through its MLX conversion (``to="mlx"``); ``allocB`` (``alloc4.8``): mlxquant's own allocation
for B bits per weight (``convert --target-bpw B``, with the sweep's imatrix and calibration text),
so the plot shows its curve beside the presets. The base is run once per window and its logits reused
for every variant. ``memory`` recommends the variant with the lowest mean KLD whose weights plus
KV cache (float16, llama.cpp's default, for ``memory_context`` tokens) fit.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import MlxquantError, QuantTypeError
from .evaluate import (EvalError, check_same_vocabulary, open_for_eval, reference_logits, score,
                       window_tokens)

log = logging.getLogger(__name__)

DEFAULT_TYPES = ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_0", "Q3_K_M", "Q2_K", "mlx4", "mlx8")
_MLX = re.compile(r"^mlx(\d)(?:g(\d+))?$", re.IGNORECASE)
_ALLOC = re.compile(r"^alloc(\d+(?:\.\d+)?)$", re.IGNORECASE)

Progress = Callable[[int, int, str], None]


@dataclass
class SweepRow:
    """One variant's figures (``error`` set and figures None when it was skipped)."""

    name: str
    path: str | None = None
    file_bytes: int | None = None
    bits_per_weight: float | None = None
    ppl: float | None = None
    kld_mean: float | None = None
    kld_uncertainty: float | None = None
    kld_median: float | None = None
    kld_p99: float | None = None
    kld_max: float | None = None
    same_top: float | None = None
    p_diff_mean: float | None = None
    convert_seconds: float | None = None
    eval_seconds: float | None = None
    error: str | None = None


@dataclass
class SweepReport:
    base: str
    base_ppl: float
    base_bits_per_weight: float
    ctx: int
    chunks: int
    scored_tokens: int
    kv_bytes_per_token: int  # float16 KV cache, all layers
    rows: list[SweepRow] = field(default_factory=list)
    recommendation: dict[str, Any] | None = None
    monotonic: bool | None = None  # KLD falls as bits per weight rise (measured rows)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


MLX_BITS = (2, 3, 4, 5, 6, 8)
MLX_GROUPS = (32, 64, 128)


def check_variants(types: tuple[str, ...] | list[str]) -> None:
    """Refuse, before any work, a sweep whose variants cannot all be made: an unknown name, a
    preset mlxquant cannot quantize yet (IQ1..IQ3), an ``mlxN[gG]`` that MLX has no format for.

    Raises:
        QuantTypeError: naming the variant and listing the valid names.
    """
    from ..models.presets import check_makeable, makeable_presets, missing_codecs

    if not types:
        raise QuantTypeError("sweep: no variants given (e.g. --types Q8_0,Q4_K_M,mlx4)")
    valid = (f"presets {', '.join(makeable_presets())}; a GGML type such as Q4_K; mlxN or mlxNgG "
             f"with N in {', '.join(map(str, MLX_BITS))} and G in {', '.join(map(str, MLX_GROUPS))}; "
             f"allocB for an allocation of B bits per weight (1 to 16)")
    for name in types:
        a = _ALLOC.match(name)
        if a:
            if not 1.0 <= float(a.group(1)) <= 16.0:
                raise QuantTypeError(f"sweep: {name!r}: an allocation takes 1 to 16 bits per weight")
            continue
        m = _MLX.match(name)
        if m:
            if int(m.group(1)) not in MLX_BITS or int(m.group(2) or 64) not in MLX_GROUPS:
                raise QuantTypeError(f"sweep: {name!r} is not an MLX format mlxquant makes (valid: {valid})")
            continue
        try:
            missing = missing_codecs(name)
        except QuantTypeError:
            raise QuantTypeError(f"sweep: unknown variant {name!r} (valid: {valid})") from None
        if missing:
            check_makeable(name)  # "<preset>: needs IQ3_S, which mlxquant cannot quantize yet (...)"


def _convert(base: Path, name: str, out_dir: Path, force: bool,
             imatrix: str | os.PathLike | None = None,
             calib_text: str | os.PathLike | None = None) -> tuple[Path, float]:
    from ..convert import convert

    t0 = time.perf_counter()
    m = _MLX.match(name)
    a = _ALLOC.match(name)
    if a:
        out = out_dir / f"{base.stem}-alloc{float(a.group(1)):g}.gguf"
        if not (out.exists() and not force and _same_imatrix(out, imatrix) and _same_calib(out, calib_text)):
            convert(base, out, to="gguf", target_bpw=float(a.group(1)), imatrix=imatrix,
                    calib_text=calib_text, force=True)
    elif m:
        out = out_dir / f"{base.stem}-{name.lower()}"
        if not (out.exists() and not force):
            convert(base, out, to="mlx", q_bits=int(m.group(1)),
                    q_group_size=int(m.group(2) or 64), force=True)
    else:
        out = out_dir / f"{base.stem}-{name.upper()}.gguf"
        if not (out.exists() and not force and _same_imatrix(out, imatrix)):
            convert(base, out, to="gguf", outtype=name.upper(), imatrix=imatrix, force=True)
    return out, time.perf_counter() - t0


def _recorded(gguf: Path, key: str) -> str | None:
    """The SHA-256 recorded in ``gguf``'s recipe for ``key`` (``imatrix``, ``calib_text``)."""
    from ..formats.gguf_check import check_gguf

    try:
        recipe = json.loads(check_gguf(gguf).metadata.get("mlxquant.recipe", "{}"))
    except (OSError, ValueError):
        return None
    return (recipe.get(key) or {}).get("sha256") if isinstance(recipe, dict) else None


def _same_imatrix(gguf: Path, imatrix: str | os.PathLike | None) -> bool:
    """The variant ``gguf`` was quantized with ``imatrix`` (by its recorded SHA-256), or both
    without one."""
    from ..convert.provenance import sha256_file

    return gguf.exists() and _recorded(gguf, "imatrix") == (sha256_file(imatrix) if imatrix is not None else None)


def _same_calib(gguf: Path, calib_text: str | os.PathLike | None) -> bool:
    """The allocated variant ``gguf`` was measured on ``calib_text`` (or on none)."""
    from ..convert.provenance import sha256_file

    return _recorded(gguf, "calib_text") == (sha256_file(calib_text) if calib_text is not None else None)


def overlaps(a: str, b: str, span: int = 200, step: int = 2000) -> bool:
    """Whether the texts share a passage: a ``span``-character piece of either, taken every
    ``step`` characters, found in the other (a shorter text is compared whole)."""
    for x, y in ((a, b), (b, a)):
        x = x.strip()
        if x and (len(x) <= span and x in y or any(x[i:i + span] in y for i in range(0, len(x) - span + 1, step))):
            return True
    return False


def is_monotonic(rows: list[SweepRow]) -> bool | None:
    """True when mean KLD never rises as bits per weight rise (ties in bpw ignored)."""
    pts = sorted((r.bits_per_weight, r.kld_mean) for r in rows
                 if r.kld_mean is not None and r.bits_per_weight is not None)
    if len(pts) < 2:
        return None
    return all(b[1] <= a[1] for a, b in zip(pts, pts[1:]) if b[0] > a[0])


def recommend(rows: list[SweepRow], memory: int, context: int, kv_per_token: int) -> dict[str, Any]:
    """The lowest-KLD variant whose file + KV cache for ``context`` tokens fits ``memory`` bytes."""
    kv = kv_per_token * context
    fits = [r for r in rows if r.kld_mean is not None and r.file_bytes is not None
            and r.file_bytes + kv <= memory]
    best = min(fits, key=lambda r: r.kld_mean) if fits else None  # type: ignore[arg-type, return-value]
    return {"memory_bytes": memory, "context": context, "kv_cache_bytes": kv,
            "variant": best.name if best else None,
            "total_bytes": (best.file_bytes + kv) if best else None,  # type: ignore[operator]
            "reason": (f"lowest mean KLD among {len(fits)} variant(s) that fit" if best
                       else "no variant fits: weights + KV cache exceed the memory")}


def sweep(base: str | os.PathLike, text: str, out_dir: str | os.PathLike,
          types: tuple[str, ...] | list[str] = DEFAULT_TYPES, ctx: int = 512, chunks: int | None = 8,
          memory: int | None = None, memory_context: int = 4096, force: bool = False,
          progress: Progress | None = None, plot: bool = True,
          imatrix: str | os.PathLike | None = None,
          calib_text: str | os.PathLike | None = None) -> SweepReport:
    """Convert ``base`` to each of ``types``, evaluate each against it, write
    ``sweep.md``, ``sweep.json`` and ``sweep.png`` (when matplotlib is installed) into ``out_dir``.

    Args:
        base: the float model (HF folder or GGUF).
        text: evaluation text.
        out_dir: folder for the variants and the reports (created; existing variants are reused
            unless ``force``).
        types: presets / GGML types and ``mlx4``, ``mlx8`` (``mlxN[gG]``).
        ctx, chunks: evaluation windows (default 512 tokens, at most 8 windows).
        memory: recommend the best variant fitting this many bytes (with ``memory_context``
            tokens of float16 KV cache, default 4096).
        progress: ``progress(done, total, label)`` over conversions and windows.
        imatrix: importance matrix for the GGUF variants (required by the 1-3 bit presets; the
            MLX variants do not take one); variants already converted are reused only if they were
            made with the same file (else re-converted).
        calib_text: text the ``allocB`` variants measure their tensors on; never the evaluation
            text (refused).

    Raises:
        QuantTypeError (before any work: see :func:`check_variants`), EvalError, FormatError,
        UnsupportedArchitectureError, TokenizerError, FileNotFoundError. A variant that fails to
        convert or evaluate is reported in its row, not raised.
    """
    check_variants(types)
    if calib_text is not None:
        calib = Path(calib_text).read_bytes().decode("utf-8", errors="replace")
        if overlaps(calib, text):
            raise EvalError(f"{calib_text}: the calibration text overlaps the evaluation text; "
                            "the allocation would be judged on the text it was chosen on")
    base_p, out = Path(base), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ref = open_for_eval(base_p, "numpy", ctx)
    if ref.tokenizer is None:
        raise EvalError(f"{base_p}: no tokenizer")
    windows, _ = window_tokens(text, ref.tokenizer, ctx, chunks)
    first = ctx // 2
    total = len(windows) * (len(types) + 1) + len(types)
    done = [0]

    def tick(label: str) -> None:
        done[0] += 1
        if progress is not None:
            progress(done[0], total, label)

    ref_logits = reference_logits(ref, windows, first, lambda d, n, lbl: tick(f"base {lbl}"))
    base_metrics = score(ref, windows, first, ref_logits)
    spec = ref.runner.spec
    report = SweepReport(str(base_p), float(base_metrics.ppl or 0), round(ref.bits_per_weight, 4), ctx,
                         len(windows), base_metrics.count, spec.kv_bytes_per_token() // 2)
    for name in types:
        row = SweepRow(name)
        start = done[0]
        try:
            path, secs = _convert(base_p, name, out, force, imatrix, calib_text)
            tick(f"{name}: converted")
            row.path, row.convert_seconds = str(path), round(secs, 2)
            t0 = time.perf_counter()
            m = open_for_eval(path, "numpy", ctx)
            check_same_vocabulary(m, ref)
            met = score(m, windows, first, ref_logits, lambda d, n, lbl: tick(f"{name}: {lbl}"))
            row.eval_seconds = round(time.perf_counter() - t0, 2)
            row.file_bytes, row.bits_per_weight = m.file_bytes, round(m.bits_per_weight, 4)
            row.ppl, row.kld_mean, row.kld_uncertainty = met.ppl, met.kld_mean, met.kld_uncertainty
            row.kld_median, row.kld_p99, row.kld_max = met.kld_median, met.kld_p99, met.kld_max
            row.same_top, row.p_diff_mean = met.same_top, met.p_diff_mean
            del m
        except (MlxquantError, ValueError, OSError, ImportError) as e:
            row.error = str(e).splitlines()[0] if str(e) else type(e).__name__
            log.warning("sweep: %s skipped: %s", name, row.error)
            done[0] = start + len(windows)  # skip this variant's remaining steps
            tick(f"{name}: skipped")
        report.rows.append(row)
    report.monotonic = is_monotonic(report.rows)
    if memory is not None:
        report.recommendation = recommend(report.rows, memory, memory_context, report.kv_bytes_per_token)
    (out / "sweep.json").write_text(json.dumps(report.as_dict(), indent=2), encoding="utf-8")
    (out / "sweep.md").write_text(markdown_table(report), encoding="utf-8")
    if plot:
        from .plot import plot_sweep

        try:
            plot_sweep(report, out / "sweep.png")
        except ImportError:
            log.warning("matplotlib is not installed (pip install mlxquant[plot]): no sweep.png")
    return report


def _f(v: float | None, fmt: str) -> str:
    return "—" if v is None else format(v, fmt)


def markdown_table(r: SweepReport) -> str:
    """The sweep as a markdown table, rows by decreasing bits per weight."""
    lines = [f"Base: `{r.base}` ({r.base_bits_per_weight:.2f} bpw), PPL {r.base_ppl:.4f}; "
             f"{r.chunks} windows of {r.ctx} tokens, {r.scored_tokens} scored.", "",
             "| variant | bpw | size MiB | PPL | mean KLD | ± | median KLD | 99% KLD | max KLD | same top % | mean Δp % |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    rows = sorted(r.rows, key=lambda x: -(x.bits_per_weight or -1))
    for x in rows:
        if x.error:
            lines.append(f"| {x.name} | skipped: {x.error} |||||||||| ")
            continue
        lines.append(
            f"| {x.name} | {_f(x.bits_per_weight, '.2f')} | {_f((x.file_bytes or 0) / 2**20, '.1f')} | "
            f"{_f(x.ppl, '.4f')} | {_f(x.kld_mean, '.6f')} | {_f(x.kld_uncertainty, '.6f')} | "
            f"{_f(x.kld_median, '.6f')} | {_f(x.kld_p99, '.5f')} | {_f(x.kld_max, '.4f')} | "
            f"{_f(None if x.same_top is None else 100 * x.same_top, '.2f')} | "
            f"{_f(None if x.p_diff_mean is None else 100 * x.p_diff_mean, '.3f')} |")
    if r.monotonic is not None:
        lines += ["", f"Mean KLD falls monotonically as bits per weight rise: {'yes' if r.monotonic else 'no'}."]
    if r.recommendation:
        rec = r.recommendation
        lines += ["", f"Memory {rec['memory_bytes'] / 2**30:.2f} GiB with {rec['context']} tokens of "
                      f"KV cache ({rec['kv_cache_bytes'] / 2**20:.1f} MiB): "
                      + (f"**{rec['variant']}** ({rec['reason']})." if rec["variant"] else rec["reason"] + ".")]
    return "\n".join(lines) + "\n"
