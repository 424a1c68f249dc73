"""The ``mlxquant`` command: thin click wrappers over :func:`mlxquant.convert.convert`,
:func:`mlxquant.formats.inspect.inspect` and the type registry.

Errors print one line, ``mlxquant: error: ...``, on stderr and exit with status 1 (an
interruption: ``interrupted``, status 130 for SIGINT; ``terminated``, 143 for SIGTERM, see
:mod:`mlxquant.signals`; the console script runs :func:`mlxquant.entry.run`); progress bars go to
stderr, results to stdout.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable, NoReturn

import click

from .signals import Interrupted, mark_reported, outcome, received
from .errors import MlxquantError


def _fail(message: str, status: int = 1) -> NoReturn:
    click.echo(f"mlxquant: error: {message}".splitlines()[0], err=True)
    mark_reported()
    sys.exit(status)


def _errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn library errors into one line on stderr and exit status 1; an interruption into
    ``interrupted`` / ``terminated`` and status 130 / 143 (after the atomic writers removed
    their temporary outputs)."""

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
        except KeyboardInterrupt as e:
            _fail(*outcome(e))
        except Exception:
            # the interruption landed where it could not propagate (a ctypes callback inside a
            # Numba compile) and surfaced as another error: report the interruption
            if received() is not None:
                _fail(*outcome(Interrupted(received())))
            raise

    return wrapper


def _size(text: str, flag: str) -> int:
    """Bytes of ``3.8MB``, ``120MiB``, ``1.5G`` (powers of 1024) or a plain number of bytes."""
    from .sizes import parse_size

    try:
        n = parse_size(text)
    except ValueError as e:
        _fail(f"{flag}: {e}")
    if n <= 0:
        _fail(f"{flag} {text!r}: the size must be positive")
    return n


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
    """Describe a GGUF file, Hugging Face or MLX folder: architecture, parameters, tensors, types
    (MLX: bits, group size and mode per layer)."""
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
    q = s.get("quantization")
    if q is not None:  # MLX folder: the config's block, overrides and unquantized modules
        click.echo(f"quantization:  {q['bits']} bits, group size {q['group_size']}, {q['mode']} "
                   f"({sum(q['modules'].values())} quantized modules: "
                   + ", ".join(f"{t} x{n}" for t, n in sorted(q["modules"].items())) + ")")
        shown = list(q["overrides"].items()) if all_tensors else list(q["overrides"].items())[:40]
        for mod, o in shown:
            click.echo(f"  override {mod}: " + ", ".join(f"{k} {v}" for k, v in o.items()))
        if len(shown) < len(q["overrides"]):
            click.echo(f"  ... {len(q['overrides']) - len(shown)} more overrides (--all-tensors)")
        if q["unquantized"]:
            click.echo(f"  unquantized (false): {', '.join(q['unquantized'])}")
    click.echo("metadata:")
    for k, v in s["metadata"].items():
        click.echo(f"  {k} = {v!r}" if isinstance(v, str) and "\n" in v else f"  {k} = {v}")
    tensors = s["tensors"] if all_tensors else s["tensors"][:40]
    click.echo(f"tensors ({len(s['tensors'])}):")
    width = max((len(t["name"]) for t in tensors), default=0)
    twidth = max((len(t["type"]) for t in tensors), default=0)
    for t in tensors:
        shape = "x".join(str(d) for d in t["shape"])
        click.echo(f"  {t['name']:<{width}}  {t['type']:<{max(7, twidth)}} {shape:<14} {t['bytes']:>12,}")
    if len(tensors) < len(s["tensors"]):
        click.echo(f"  ... {len(s['tensors']) - len(tensors)} more (--all-tensors)")


@main.command("convert")
@click.argument("src", type=click.Path(exists=False))
@click.option("-o", "--out", "out", required=True, type=click.Path(), help="Output file/folder.")
@click.option("--to", type=click.Choice(["gguf", "hf", "mlx", "onnx"], case_sensitive=False), default="gguf",
              show_default=True, help="Output format (onnx: a folder for onnxruntime / onnxruntime-genai).")
@click.option("--outtype", default=None,
              help="GGUF: a llama.cpp preset (Q4_K_M, Q8_0, F16, ...); HF: F32, F16 or BF16 "
                   "(default F16); ONNX: int4 (MatMulNBits, default), int8 (QDQ), f16 or f32. "
                   "Not for --to mlx.")
@click.option("--block-size", type=click.Choice(["16", "32", "64", "128", "256"]), default=None,
              help="ONNX int4/int8: weights per quantization block (default: a GGUF/MLX source's "
                   "own blocks where its codes carry over, else 32).")
@click.option("--imatrix", type=click.Path(), default=None,
              help="GGUF: llama.cpp importance matrix (imatrix.gguf) for the quantizer; MLX with "
                   "--target-bpw: weights the allocator's error estimates.")
@click.option("--tensor-type", "tensor_types", multiple=True, metavar="PATTERN=TYPE",
              help="GGUF: give tensors whose name matches the regular expression PATTERN this "
                   "type, over the preset's rule (llama-quantize's --tensor-type); repeatable.")
@click.option("--tensor-type-file", type=click.Path(), default=None,
              help="GGUF: PATTERN=TYPE entries separated by white space (llama-quantize's "
                   "--tensor-type-file).")
@click.option("--target-bpw", type=float, default=None,
              help="GGUF: choose every tensor's type for at most this many bits per weight "
                   "(instead of --outtype); writes OUT.tensor-types.txt for llama-quantize. MLX: "
                   "choose every module's format (affine 2-8 bits x group 32/64/128, mxfp4, nvfp4, "
                   "mxfp8) for at most this many bits per weight as mlx-lm counts them.")
@click.option("--target-size", default=None, metavar="SIZE",
              help="Instead of --target-bpw, the largest size: GGUF, the whole file (header "
                   "included); MLX, the weight files (safetensors shards and index). Bytes, or "
                   "K/M/G (powers of 1024): 3.8MB, 120MiB, 1.5G.")
@click.option("--calib-text", type=click.Path(), default=None,
              help="With --target-bpw or --target-size (GGUF, MLX): text on which each "
                   "tensor's effect is measured (keep it apart from the text you evaluate on).")
@click.option("--q-bits", type=click.Choice(["0", "2", "3", "4", "5", "6", "8"]), default=None,
              help="MLX: bits per weight (default 4 for float sources; GGUF sources keep their "
                   "own precision; 0: no quantization).")
@click.option("--q-group-size", type=click.Choice(["16", "32", "64", "128"]), default=None,
              help="MLX: group size (default 64 affine, 32 mxfp4/mxfp8, 16 nvfp4).")
@click.option("--q-mode", type=click.Choice(["affine", "mxfp4", "nvfp4", "mxfp8"]), default=None,
              help="MLX: quantization mode (default affine).")
@click.option("--quant-predicate", type=click.Choice(["mixed_2_6", "mixed_3_4", "mixed_3_6", "mixed_4_6"]),
              default=None, help="MLX: mlx-lm's mixed-precision recipe.")
@click.option("--dtype", type=click.Choice(["float16", "bfloat16", "float32"]), default=None,
              help="MLX: dtype of unquantized tensors and scales (default: config.json's "
                   "torch_dtype, float16 for GGUF sources).")
@click.option("--exact-scales", is_flag=True,
              help="MLX from GGUF: keep float32 scales so values equal ggml's bit for bit.")
@click.option("--force", is_flag=True, help="Overwrite an existing output.")
@click.option("--ollama", is_flag=True,
              help="GGUF: also write an Ollama Modelfile beside it (FROM, TEMPLATE, stop tokens, "
                   "generation defaults); then: ollama create NAME -f Modelfile.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@_errors
def convert_cmd(src: str, out: str, to: str, outtype: str | None, imatrix: str | None,
                tensor_types: tuple[str, ...], tensor_type_file: str | None,
                target_bpw: float | None, target_size: str | None, calib_text: str | None, q_bits: str | None, q_group_size: str | None, q_mode: str | None,
                quant_predicate: str | None, dtype: str | None, exact_scales: bool, force: bool,
                block_size: str | None, ollama: bool, as_json: bool) -> None:
    """Convert SRC (GGUF file, Hugging Face or MLX folder) to GGUF, a Hugging Face, an MLX or an
    ONNX folder.

    Prints one summary line (with -v also a per-tensor table); an option that does not apply
    to the --to target is an error."""
    from .convert import convert
    from .convert.options import option_names, options_from_keywords

    to = to.lower()
    given = {"outtype": outtype, "imatrix": imatrix, "tensor_types": tensor_types or None,
             "tensor_type_file": tensor_type_file, "target_bpw": target_bpw,
             "target_size": None if target_size is None else _size(target_size, "--target-size"),
             "calib_text": calib_text,
             "q_bits": None if q_bits is None else int(q_bits),
             "q_group_size": None if q_group_size is None else int(q_group_size),
             "q_mode": q_mode, "quant_predicate": quant_predicate, "dtype": dtype,
             "exact_scales": exact_scales or None}
    if to == "onnx":
        given["block_size"] = None if block_size is None else int(block_size)
    elif block_size is not None:
        _fail(f"--block-size does not apply to --to {to} (only to --to onnx)")
    allowed = ("outtype", "block_size") if to == "onnx" else option_names(to)
    wrong = [k for k, v in given.items() if v is not None and k not in allowed]
    if wrong:
        flags = ", ".join("--" + k.replace("_", "-") for k in wrong)
        _fail(f"{flags} {'does' if len(wrong) == 1 else 'do'} not apply to --to {to} "
              f"(its options: {', '.join('--' + k.replace('_', '-') for k in allowed)})")
    options = options_from_keywords(to, given) if to != "onnx" else None
    modelfile = None
    if ollama:  # refused before converting, not after
        from .formats.modelfile import check_modelfile_output, modelfile_path

        if to != "gguf":
            _fail(f"--ollama applies to --to gguf only, not --to {to}")
        modelfile = modelfile_path(out)
        check_modelfile_output(modelfile, force)
    from .eval.commands import ProgressBar

    def stage(name: str) -> str:  # an allocation's stages, then the conversion's tensors
        word = name.split(" ", 1)[0]
        return {"distortion": "allocating: distortions", "gain": "allocating: gains",
                "error": "allocating: errors"}.get(word, "converting")

    bar = ProgressBar("converting", stage)
    try:
        if to == "onnx":
            report = convert(src, out, to="onnx", force=force, **{k: v for k, v in given.items() if v is not None})
        else:
            report = convert(src, out, options, force=force, progress=bar)
    finally:
        bar.close()
    if modelfile is not None:
        from .formats.modelfile import write_modelfile

        write_modelfile(report.out, source=src if Path(src).is_dir() else None, force=force, out=modelfile)
    if as_json:
        click.echo(json.dumps({**report.as_dict(), **({"modelfile": str(modelfile)} if modelfile else {})},
                              indent=2))
        return
    if report.details and click.get_current_context().find_root().params.get("verbose", 0):
        _tensor_table(report.details)
    types = ", ".join(f"{t} x{n}" for t, n in sorted(report.types.items()))
    click.echo(f"wrote {report.out}: {report.architecture}, {report.tensors} tensors, "
               f"{_human(report.bytes)}, {report.bits_per_weight:.3f} bpw, {report.seconds:.1f} s; "
               f"{report.outtype}: {types}")
    if modelfile is not None:
        click.echo(f"wrote {modelfile}; create the Ollama model with: ollama create NAME -f {modelfile}")


def _tensor_table(details: list[dict]) -> None:
    """Per-tensor report: type, source type, status (exact / codes kept / requantized /
    quantized / copied / float) and the max abs error where measured."""
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
    """List the GGML tensor types (id, block size, bytes per block, bits per weight, codecs) and
    llama.cpp's presets (file type id, default type, whether mlxquant can make them)."""
    from .models.presets import (ALL_PRESETS, FTYPES, missing_codecs, preset_default_type,
                                 preset_requires_imatrix)
    from .quant import TYPES

    rows = [{"name": t.name, "id": t.id, "block": t.block_size, "bytes": t.type_size,
             "bpw": round(t.bits_per_weight, 4),
             "imatrix": "required" if t.requires_imatrix else "used" if t.uses_imatrix else "-",
             "codecs": list(t.codecs)} for t in TYPES.values()]
    presets = []
    for p in ALL_PRESETS:
        missing = missing_codecs(p)
        presets.append({"name": p, "ftype": FTYPES[p], "default_type": preset_default_type(p),
                        "imatrix": "required" if preset_requires_imatrix(p) else "-",
                        "makeable": not missing,
                        "reason": f"needs {', '.join(missing)} (no codec yet)" if missing else None})
    if as_json:
        click.echo(json.dumps({"types": rows, "presets": presets}, indent=2))
        return
    click.echo(f"{'name':<8} {'id':>3} {'block':>5} {'bytes':>5} {'bpw':>7}  {'imatrix':<8} codecs")
    for r in rows:
        click.echo(f"{r['name']:<8} {r['id']:>3} {r['block']:>5} {r['bytes']:>5} {r['bpw']:>7.4f}  "
                   f"{r['imatrix']:<8} {','.join(r['codecs']) or '-'}")
    click.echo()
    click.echo(f"{'preset':<10} {'ftype':>5}  {'default':<8} {'imatrix':<8} makeable")
    for r in presets:
        click.echo(f"{r['name']:<10} {r['ftype']:>5}  {r['default_type']:<8} {r['imatrix']:<8} "
                   + ("yes" if r["makeable"] else f"no: {r['reason']}"))


# generate, eval, sweep, bench: defined beside the runtime and metrics they wrap
from .eval.commands import add_commands  # noqa: E402

add_commands(main, _errors, _human)

# imatrix: defined beside the calibration it wraps
from .calib.commands import add_imatrix_command  # noqa: E402

add_imatrix_command(main, _errors)

# serve, modelfile: defined beside the server and the Modelfile writer they wrap
from .serve.commands import add_commands as add_serve_commands  # noqa: E402

add_serve_commands(main, _errors, _human)


if __name__ == "__main__":  # pragma: no cover
    main()
