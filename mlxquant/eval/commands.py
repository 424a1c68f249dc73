"""The ``generate``, ``eval``, ``sweep`` and ``bench`` commands: thin click wrappers over
:mod:`mlxquant.runtime` and :mod:`mlxquant.eval`, registered on the ``mlxquant`` group by
:mod:`mlxquant.cli` (which owns error handling: one line on stderr, exit status 1)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable

import click

BACKEND = click.Choice(["auto", "numpy", "mlx"], case_sensitive=False)


class ProgressBar:
    """A click progress bar on stderr, created at the first ``progress(done, total, label)``.

    A run may have several stages, each counting from 1 to its own total (an allocation's
    distortions, then its gains, then the conversion's tensors): a call whose total differs from
    the bar's, or whose ``done`` goes back, closes the bar and starts the next stage's. With
    ``stage``, the stage's label is ``stage(what)`` (e.g. from the first word of ``what``)."""

    def __init__(self, label: str, stage: Callable[[str], str] | None = None):
        self.label, self.stage, self.bar, self.done, self.total = label, stage, None, 0, None

    def __call__(self, done: int, total: int, what: str) -> None:
        if self.bar is not None and (total != self.total or done < self.done):
            self.close()
        if self.bar is None:
            label = self.stage(what) if self.stage is not None else self.label
            self.bar = click.progressbar(length=total, label=label, file=sys.stderr,
                                         show_pos=True, item_show_func=lambda s: s)
            self.bar.__enter__()
            self.done, self.total = 0, total
        self.bar.update(done - self.done, what)
        self.done = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def _read_text(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise OSError(e.errno, e.strerror, path) from None


def _refuse_calibration_text(model: str, text_file: str) -> None:
    """A model whose types were chosen on ``text_file`` (``convert --target-bpw --calib-text``,
    recorded in its provenance by SHA-256) is not evaluated on it: the figure would flatter it."""
    from ..convert.provenance import sha256_file
    from ..formats.gguf_check import check_gguf

    p = Path(model)
    if not p.is_file():
        return
    try:
        recipe = json.loads(check_gguf(p).metadata.get("mlxquant.recipe", "{}"))
    except (OSError, ValueError):
        return
    calib = recipe.get("calib_text") if isinstance(recipe, dict) else None
    if isinstance(calib, dict) and calib.get("sha256") == sha256_file(text_file):
        from .evaluate import EvalError

        raise EvalError(f"{text_file}: {model}'s types were chosen on this text (--calib-text); "
                        "evaluate on other text")


def _fmt(v: Any, spec: str, scale: float = 1.0) -> str:
    return "—" if v is None else format(v * scale, spec)


def add_commands(main: click.Group, errors: Callable, human: Callable[[float], str]) -> None:
    """Register the commands on ``main`` with the CLI's ``errors`` decorator and size formatter."""

    @main.command("generate")
    @click.argument("model", type=click.Path())
    @click.option("-p", "--prompt", required=True, help="Prompt text (as is, unless --chat).")
    @click.option("--chat", is_flag=True,
                  help="Send PROMPT as a user message through the model's chat template "
                       "(rendered in a Jinja sandbox).")
    @click.option("--system", default=None, help="With --chat: a system message first.")
    @click.option("--max-tokens", default=64, show_default=True, help="Tokens to generate.")
    @click.option("--temperature", default=0.0, show_default=True, help="0 = greedy.")
    @click.option("--top-p", default=1.0, show_default=True, help="Nucleus sampling mass.")
    @click.option("--seed", type=int, default=None, help="Sampling seed.")
    @click.option("--backend", type=BACKEND, default="auto", show_default=True,
                  help="auto = NumPy when MLX's device is the CPU.")
    @click.option("--show-prompt", is_flag=True, help="Print the prompt as the model sees it first.")
    @click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
    @errors
    def generate_cmd(model: str, prompt: str, chat: bool, system: str | None, max_tokens: int,
                     temperature: float, top_p: float, seed: int | None, backend: str,
                     show_prompt: bool, as_json: bool) -> None:
        """Generate text from MODEL (GGUF file, HF or MLX folder) after PROMPT; stops at the
        model's end-of-sequence / end-of-turn token, which is not printed."""
        from ..runtime import generate, load_model
        from ..runtime.chat import chat_prompt

        if system is not None and not chat:
            raise click.UsageError("--system needs --chat")
        m = load_model(model, backend=backend)
        text = chat_prompt(m, prompt, system) if chat else prompt
        if show_prompt and not as_json:
            click.echo(text, nl=False)
        stream = None if as_json else (lambda s: click.echo(s, nl=False))
        g = generate(m, text, max_tokens, temperature, top_p, seed, on_text=stream, add_special=not chat)
        stats = {"backend": m.backend, "prompt_tokens": len(g.prompt_tokens),
                 "generated_tokens": len(g.tokens), "prompt_tps": round(g.prompt_tps, 2),
                 "generation_tps": round(g.generation_tps, 2), "stopped_by": g.stopped_by}
        if as_json:
            out = {"text": g.text, "tokens": g.tokens, **stats}
            if chat:
                out["prompt"] = text
            click.echo(json.dumps(out, indent=2, ensure_ascii=False))
            return
        click.echo()
        click.echo(f"[{stats['backend']}: {stats['prompt_tokens']} prompt tokens at "
                   f"{stats['prompt_tps']:.1f} tok/s, {stats['generated_tokens']} generated at "
                   f"{stats['generation_tps']:.1f} tok/s, stopped by {g.stopped_by}]", err=True)

    @main.command("eval")
    @click.argument("model", type=click.Path())
    @click.option("--reference", type=click.Path(), default=None,
                  help="Base model to compare with (same vocabulary): adds KLD, top-token, Δp.")
    @click.option("--text", "text_file", type=click.Path(), required=True, help="UTF-8 text file.")
    @click.option("--ctx", default=512, show_default=True, help="Window length in tokens.")
    @click.option("--chunks", type=int, default=None, help="At most this many windows.")
    @click.option("--backend", type=click.Choice(["numpy", "mlx", "llama.cpp"], case_sensitive=False),
                  default="numpy", show_default=True, help="llama.cpp: what llama.cpp users see.")
    @click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
    @errors
    def eval_cmd(model: str, reference: str | None, text_file: str, ctx: int, chunks: int | None,
                 backend: str, as_json: bool) -> None:
        """Perplexity of MODEL over a text and, with --reference, llama-perplexity's KL-divergence
        statistics (windows of --ctx tokens, second half of each scored)."""
        from .evaluate import evaluate

        bar = ProgressBar("evaluating")
        try:
            _refuse_calibration_text(model, text_file)
            r = evaluate(model, _read_text(text_file), reference, ctx, chunks, backend.lower(), bar)
        finally:
            bar.close()
        if as_json:
            click.echo(json.dumps(r.as_dict(), indent=2))
            return
        m = r.metrics
        rows = [("model", r.model), ("backend", r.backend),
                ("size", f"{human(r.file_bytes)}, {r.bits_per_weight:.2f} bits/weight"),
                ("windows", f"{r.chunks} x {r.ctx} tokens, {r.scored_tokens} scored"),
                ("PPL", f"{_fmt(m.ppl, '.4f')} ± {_fmt(m.ppl_uncertainty, '.4f')}")]
        if r.reference:
            rows += [("reference", r.reference),
                     ("PPL(base)", f"{_fmt(m.ppl_base, '.4f')} ± {_fmt(m.ppl_base_uncertainty, '.4f')}"),
                     ("ln(PPL/PPL(base))", _fmt(m.ln_ppl_ratio, '.6f')),
                     ("mean KLD", f"{_fmt(m.kld_mean, '.6f')} ± {_fmt(m.kld_uncertainty, '.6f')}"),
                     ("median KLD", _fmt(m.kld_median, '.6f')),
                     ("90% / 99% / 99.9% KLD", f"{_fmt(m.kld_p90, '.6f')} / {_fmt(m.kld_p99, '.6f')} / "
                                               f"{_fmt(m.kld_p999, '.6f')}"),
                     ("max KLD", _fmt(m.kld_max, '.6f')),
                     ("same top token", f"{_fmt(m.same_top, '.3f', 100)} ± {_fmt(m.same_top_uncertainty, '.3f', 100)} %"),
                     ("mean Δp", f"{_fmt(m.p_diff_mean, '.3f', 100)} ± {_fmt(m.p_diff_uncertainty, '.3f', 100)} %"),
                     ("RMS Δp / max |Δp|", f"{_fmt(m.p_diff_rms, '.3f', 100)} / {_fmt(m.p_diff_max, '.3f', 100)} %")]
        width = max(len(k) for k, _ in rows)
        for k, v in rows:
            click.echo(f"{k:<{width}}  {v}")

    @main.command("sweep")
    @click.argument("base", type=click.Path())
    @click.option("--text", "text_file", type=click.Path(), required=True, help="UTF-8 text file.")
    @click.option("--types", default="Q8_0,Q6_K,Q5_K_M,Q4_K_M,Q4_0,Q3_K_M,Q2_K,mlx4,mlx8",
                  show_default=True, help="Comma-separated presets/types, mlx4, mlx8 (mlxNgG), "
                                          "allocB (mlxquant's allocation for B bits per weight).")
    @click.option("-o", "--out", "out_dir", type=click.Path(), default="sweep", show_default=True,
                  help="Folder for the variants, sweep.md, sweep.json, sweep.png.")
    @click.option("--ctx", default=512, show_default=True, help="Window length in tokens.")
    @click.option("--chunks", type=int, default=8, show_default=True, help="At most this many windows.")
    @click.option("--memory", default=None, help="Recommend the best variant fitting this (e.g. 8GB).")
    @click.option("--memory-context", default=4096, show_default=True,
                  help="Context (tokens) of float16 KV cache counted in --memory.")
    @click.option("--imatrix", type=click.Path(), default=None,
                  help="Importance matrix for the GGUF variants (the IQ1/IQ2/IQ3 presets need one).")
    @click.option("--calib-text", type=click.Path(), default=None,
                  help="Text the allocB variants (convert --target-bpw B) measure their tensors "
                       "on; must not overlap --text.")
    @click.option("--force", is_flag=True, help="Re-convert variants that already exist.")
    @click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
    @errors
    def sweep_cmd(base: str, text_file: str, types: str, out_dir: str, ctx: int, chunks: int,
                  memory: str | None, memory_context: int, imatrix: str | None,
                  calib_text: str | None, force: bool, as_json: bool) -> None:
        """Convert BASE to each type, measure each against BASE, write a table, JSON and a plot."""
        from ..sizes import parse_size
        from .sweep import sweep

        names = [t.strip() for t in types.split(",") if t.strip()]
        mem = parse_size(memory) if memory else None
        bar = ProgressBar("sweeping")
        try:
            r = sweep(base, _read_text(text_file), out_dir, names, ctx, chunks, mem, memory_context,
                      force, bar, imatrix=imatrix, calib_text=calib_text)
        finally:
            bar.close()
        if as_json:
            click.echo(json.dumps(r.as_dict(), indent=2))
            return
        click.echo((Path(out_dir) / "sweep.md").read_text(encoding="utf-8"), nl=False)
        click.echo(f"\nwrote {Path(out_dir) / 'sweep.md'}, sweep.json"
                   + (", sweep.png" if (Path(out_dir) / "sweep.png").is_file() else ""), err=True)

    @main.command("bench")
    @click.argument("model", type=click.Path())
    @click.option("--prompt-tokens", default=256, show_default=True)
    @click.option("--gen-tokens", default=32, show_default=True)
    @click.option("--repeats", default=1, show_default=True, help="Runs to time (best and median are reported).")
    @click.option("--backend", type=BACKEND, default="auto", show_default=True)
    @click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
    @errors
    def bench_cmd(model: str, prompt_tokens: int, gen_tokens: int, repeats: int, backend: str,
                  as_json: bool) -> None:
        """Prompt tokens/s, generation tokens/s and peak memory of MODEL."""
        from .bench import bench

        r = bench(model, prompt_tokens, gen_tokens, backend, repeats)
        if as_json:
            click.echo(json.dumps(r.as_dict(), indent=2))
            return
        for k, v in (("model", r.model), ("backend", f"{r.backend} ({r.compute_dtype})"),
                     ("size", f"{human(r.file_bytes)}, {r.bits_per_weight:.2f} bits/weight"),
                     ("load + decode weights", f"{r.load_seconds:.2f} s"),
                     ("prompt", f"{r.prompt_tokens} tokens at {r.prompt_tps:.1f} tok/s"),
                     ("generation", f"{r.generated_tokens} tokens at {r.generation_tps:.1f} tok/s"),
                     ("peak memory", human(r.peak_rss_bytes))):
            click.echo(f"{k:<22} {v}")
