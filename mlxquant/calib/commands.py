"""The ``imatrix`` command: a thin click wrapper over :func:`mlxquant.calib.imatrix`, registered on
the ``mlxquant`` group by :mod:`mlxquant.cli` (which owns error handling: one line on stderr, exit
status 1). Progress (chunks, tokens/s, running perplexity) goes to stderr, the summary to stdout."""

from __future__ import annotations

import json
from typing import Callable

import click


def add_imatrix_command(main: click.Group, errors: Callable) -> None:
    """Register ``imatrix`` on ``main`` with the CLI's ``errors`` decorator."""
    from ..eval.commands import ProgressBar

    @main.command("imatrix")
    @click.argument("model", type=click.Path())
    @click.option("--text", "text_file", type=click.Path(), required=True,
                  help="Calibration text file (UTF-8), at least two chunks of tokens.")
    @click.option("-o", "--output", "out", type=click.Path(), required=True,
                  help="Imatrix file to write (.gguf, or the legacy .dat).")
    @click.option("--ctx", default=512, show_default=True, help="Tokens per chunk.")
    @click.option("--chunks", type=int, default=None, help="At most this many chunks [default: all].")
    @click.option("--process-output", is_flag=True, help="Also collect output.weight (untied outputs).")
    @click.option("--backend", type=click.Choice(["numpy", "mlx"], case_sensitive=False), default="numpy",
                  show_default=True,
                  help="Runtime that runs the model (mlx: mlx-lm; a GGUF via a temporary F32 folder).")
    @click.option("--distributed/--no-distributed", default=None,
                  help="Share the chunks over the processes of an mlx.launch group (mx.distributed) "
                       "[default: when started by mlx.launch]; rank 0 writes the file.")
    @click.option("--format", "fmt", type=click.Choice(["gguf", "dat"], case_sensitive=False),
                  default=None, help="Output format [default: dat for a .dat name, else gguf].")
    @click.option("--threads", "-t", type=click.IntRange(min=1), default=None,
                  help="CPU threads of the numpy backend [default: all CPUs]; chunks run side by side.")
    @click.option("--force", is_flag=True, help="Replace an imatrix mlxquant wrote before.")
    @click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
    @errors
    def imatrix_cmd(model: str, text_file: str, out: str, ctx: int, chunks: int | None,
                    process_output: bool, backend: str, distributed: bool | None, fmt: str | None,
                    threads: int | None, force: bool, as_json: bool) -> None:
        """Compute an importance matrix of MODEL (GGUF file, HF or MLX folder) over a calibration
        text, as llama.cpp's llama-imatrix does, for `mlxquant convert --imatrix` and
        `llama-quantize --imatrix`."""
        from . import imatrix

        bar = ProgressBar("imatrix")
        try:
            r = imatrix(model, text_file, out, ctx=ctx, chunks=chunks, process_output=process_output,
                        backend=backend.lower(), fmt=fmt, force=force, progress=bar,
                        distributed=distributed, threads=threads)
        finally:
            bar.close()
        if r.rank != 0:  # one summary per group
            return
        if as_json:
            click.echo(json.dumps(r.as_dict(), indent=2))
            return
        click.echo(",".join(f"[{i + 1}]{p:.4f}" for i, p in enumerate(r.ppl_per_chunk)))
        click.echo(f"{'output':<10} {r.out} ({r.format})")
        click.echo(f"{'tensors':<10} {r.tensors}")
        if r.processes > 1:
            click.echo(f"{'processes':<10} {r.processes} (mx.distributed)")
        click.echo(f"{'chunks':<10} {r.chunks} x {r.ctx} tokens ({r.text_tokens} in the text)")
        click.echo(f"{'speed':<10} {r.tokens_per_second:.1f} tokens/s ({r.seconds:.1f} s in all)")
        click.echo(f"{'PPL':<10} {r.ppl:.4f}")
