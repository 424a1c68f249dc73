"""The ``mlxquant`` command: thin click wrappers over :func:`mlxquant.convert.convert`,
:func:`mlxquant.formats.inspect.inspect` and the type registry.

Errors print one line, ``mlxquant: error: ...``, on stderr and exit with status 1; progress bars
go to stderr, results to stdout.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from typing import Any, Callable

import click

from .errors import MlxquantError


def _fail(message: str) -> None:
    click.echo(f"mlxquant: error: {message}".splitlines()[0], err=True)
    sys.exit(1)


def _errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn library errors into one line on stderr and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BrokenPipeError:
            sys.exit(1)
        except (MlxquantError, ValueError, OSError) as e:
            msg = str(e)
            if isinstance(e, OSError) and e.filename and str(e.filename) not in msg:
                msg = f"{e.filename}: {e.strerror or msg}"
            _fail(msg or type(e).__name__)
        except KeyboardInterrupt:
            _fail("interrupted")

    return wrapper


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return str(n)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mlxquant")
@click.option("-v", "--verbose", count=True, help="Log progress details to stderr (-vv: debug).")
def main(verbose: int) -> None:
    """Quantize and convert language models between MLX, Hugging Face and GGUF."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


@main.command("inspect")
@click.argument("path", type=click.Path(exists=False))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--all-tensors", is_flag=True, help="List every tensor (text output lists 40).")
@_errors
def inspect_cmd(path: str, as_json: bool, all_tensors: bool) -> None:
    """Describe a GGUF file or Hugging Face folder: architecture, parameters, tensors, types."""
    from .formats.inspect import inspect

    s = inspect(path)
    if as_json:
        click.echo(json.dumps(s, indent=2, ensure_ascii=False))
        return
    click.echo(f"format:        {s['format']}" + (f" v{s['version']}" if "version" in s else ""))
    click.echo(f"architecture:  {s['architecture']}")
    click.echo(f"parameters:    {s['parameters']:,}")
    click.echo(f"size:          {_human(s['bytes'])} ({s['bytes']:,} bytes)")
    click.echo(f"bits/weight:   {s['bits_per_weight']:.4f}")
    click.echo("types:         " + ", ".join(f"{t} x{n}" for t, n in sorted(s["types"].items())))
    click.echo("metadata:")
    for k, v in s["metadata"].items():
        click.echo(f"  {k} = {v!r}" if isinstance(v, str) and "\n" in v else f"  {k} = {v}")
    tensors = s["tensors"] if all_tensors else s["tensors"][:40]
    click.echo(f"tensors ({len(s['tensors'])}):")
    width = max((len(t["name"]) for t in tensors), default=0)
    for t in tensors:
        shape = "x".join(str(d) for d in t["shape"])
        click.echo(f"  {t['name']:<{width}}  {t['type']:<7} {shape:<14} {t['bytes']:>12,}")
    if len(tensors) < len(s["tensors"]):
        click.echo(f"  ... {len(s['tensors']) - len(tensors)} more (--all-tensors)")


@main.command("convert")
@click.argument("src", type=click.Path(exists=False))
@click.option("-o", "--out", "out", required=True, type=click.Path(), help="Output file/folder.")
@click.option("--to", type=click.Choice(["gguf", "hf", "mlx"], case_sensitive=False), default="gguf",
              show_default=True, help="Output format.")
@click.option("--outtype", default="F16", show_default=True,
              help="GGUF: a llama.cpp preset (Q4_K_M, Q8_0, F16, ...); HF: F32, F16 or BF16.")
@click.option("--imatrix", type=click.Path(), default=None,
              help="llama.cpp importance matrix (imatrix.gguf) for the quantizer.")
@click.option("--q-bits", type=click.Choice(["0", "2", "3", "4", "5", "6", "8"]), default=None,
              help="MLX: bits per weight (default 4 for float sources; GGUF sources keep their "
                   "own precision; 0: no quantization).")
@click.option("--q-group-size", type=click.Choice(["16", "32", "64", "128"]), default=None,
              help="MLX: group size (default 64 affine, 32 mxfp4/mxfp8, 16 nvfp4).")
@click.option("--q-mode", type=click.Choice(["affine", "mxfp4", "nvfp4", "mxfp8"]), default="affine",
              show_default=True, help="MLX: quantization mode.")
@click.option("--quant-predicate", type=click.Choice(["mixed_2_6", "mixed_3_4", "mixed_3_6", "mixed_4_6"]),
              default=None, help="MLX: mlx-lm's mixed-precision recipe.")
@click.option("--dtype", type=click.Choice(["float16", "bfloat16", "float32"]), default=None,
              help="MLX: dtype of unquantized tensors and scales (default: config.json's "
                   "torch_dtype, float16 for GGUF sources).")
@click.option("--exact-scales", is_flag=True,
              help="MLX from GGUF: keep float32 scales so values equal ggml's bit for bit.")
@click.option("--force", is_flag=True, help="Overwrite an existing output.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@_errors
def convert_cmd(src: str, out: str, to: str, outtype: str, imatrix: str | None, q_bits: str | None,
                q_group_size: str | None, q_mode: str, quant_predicate: str | None,
                dtype: str | None, exact_scales: bool, force: bool, as_json: bool) -> None:
    """Convert SRC (GGUF file, Hugging Face or MLX folder) to GGUF, a Hugging Face or an MLX folder."""
    from .convert import convert

    bar = None

    def progress(done: int, total: int, name: str) -> None:
        nonlocal bar
        if bar is None:
            bar = click.progressbar(length=total, label="converting", file=sys.stderr,
                                    show_pos=True, item_show_func=lambda n: n)
            bar.__enter__()
        bar.update(1, name)

    try:
        report = convert(src, out, to=to.lower(), outtype=outtype, imatrix=imatrix, force=force,
                         progress=progress, q_bits=None if q_bits is None else int(q_bits),
                         q_group_size=None if q_group_size is None else int(q_group_size),
                         q_mode=q_mode, quant_predicate=quant_predicate, dtype=dtype,
                         exact_scales=exact_scales)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        if report.details:
            _tensor_table(report.details)
        click.echo(f"wrote {report.out}: {report.architecture}, {report.tensors} tensors, "
                   f"{_human(report.bytes)}, {report.bits_per_weight:.3f} bpw, {report.seconds:.1f} s")


def _tensor_table(details: list[dict]) -> None:
    """Per-tensor transcoding report: type, source type, exact / codes kept / requantized + error."""
    width = max(len(d["name"]) for d in details)
    click.echo(f"{'tensor':<{width}}  {'type':<12} {'source':<12} result")
    for d in details:
        err = d.get("max_abs_error")
        result = d["status"] + (f", max abs error {err:.3g}" if err is not None else "")
        click.echo(f"{d['name']:<{width}}  {d['type']:<12} {d['source_type']:<12} {result}")
    counts: dict[str, int] = {}
    for d in details:
        counts[d["status"]] = counts.get(d["status"], 0) + 1
    click.echo("summary: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))


@main.command("types")
@click.option("--json", "as_json", is_flag=True, help="Print the registry as JSON.")
def types_cmd(as_json: bool) -> None:
    """List the GGML tensor types: id, block size, bytes per block, bits per weight, codecs."""
    from .quant import TYPES

    rows = [{"name": t.name, "id": t.id, "block": t.block_size, "bytes": t.type_size,
             "bpw": round(t.bits_per_weight, 4),
             "imatrix": "required" if t.requires_imatrix else "used" if t.uses_imatrix else "-",
             "codecs": list(t.codecs)} for t in TYPES.values()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'name':<8} {'id':>3} {'block':>5} {'bytes':>5} {'bpw':>7}  {'imatrix':<8} codecs")
    for r in rows:
        click.echo(f"{r['name']:<8} {r['id']:>3} {r['block']:>5} {r['bytes']:>5} {r['bpw']:>7.4f}  "
                   f"{r['imatrix']:<8} {','.join(r['codecs']) or '-'}")


# generate, eval, sweep, bench: defined beside the runtime and metrics they wrap
from .eval.commands import add_commands  # noqa: E402

add_commands(main, _errors, _human)


if __name__ == "__main__":  # pragma: no cover
    main()
