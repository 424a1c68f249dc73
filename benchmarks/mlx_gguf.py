"""Tokens/s of GGUF models run natively on MLX (``mlxquant.mlx.load_gguf``) against the same
model requantized to MLX 4-bit (``mlxquant convert --to mlx``, mlx-lm's loader) and against
llama.cpp (llama-cpp-python, when installed) on the same GGUF file.

Each engine runs one greedy generation of ``--gen`` tokens after a ``--prompt``-token prompt
(the same token ids for all); prompt and generation rates are measured separately (mlx-lm's own
``stream_generate`` figures; for llama.cpp the time to the first token and after it). The
default models are SmolLM2-135M converted by mlxquant to Q4_K_M and Q8_0 (from the Q4_1 file of
``scripts/fetch_data.sh``); ``--gguf`` takes other files. On a machine without Metal everything
runs on the CPU, which the output says: the figures then say nothing about Apple GPUs.

    python benchmarks/mlx_gguf.py [--gguf a.gguf,b.gguf] [--prompt 64] [--gen 32] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import mlx.core as mx

import mlxquant
from mlxquant.mlx import load_gguf, model_nbytes


def _mlx_rates(model, tok, ids: list[int], gen: int) -> tuple[float, float, list[int]]:
    from mlx_lm import stream_generate

    last, out = None, []
    for r in stream_generate(model, tok, ids, max_tokens=gen):
        last = r
        out.append(r.token)
    return last.prompt_tps, last.generation_tps, out


def _llama_rates(path: Path, ids: list[int], gen: int, threads: int) -> tuple[float, float, list[int]]:
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=len(ids) + gen + 8, n_threads=threads,
                n_threads_batch=threads, verbose=False)
    t0 = time.perf_counter()
    out, t1 = [], None
    for t in llm.generate(ids, top_k=1, temp=0.0, reset=True):
        if t1 is None:
            t1 = time.perf_counter()
        out.append(int(t))
        if len(out) == gen:
            break
    t2 = time.perf_counter()
    return len(ids) / (t1 - t0), (gen - 1) / (t2 - t1), out


def _default_models(tmp: Path) -> list[Path]:
    from mlxquant.testing.inputs import smollm2_gguf

    out = []
    for ftype in ("Q4_K_M", "Q8_0"):
        p = tmp / f"SmolLM2-135M-Instruct.{ftype}.gguf"
        mlxquant.convert(smollm2_gguf(), p, outtype=ftype)
        out.append(p)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gguf", help="comma-separated GGUF files (default: SmolLM2 Q4_K_M and Q8_0)")
    ap.add_argument("--prompt", type=int, default=64, help="prompt tokens")
    ap.add_argument("--gen", type=int, default=32, help="generated tokens")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="llama.cpp threads")
    args = ap.parse_args()

    gpu = mx.metal.is_available()
    print(f"# {platform.platform()}, {os.cpu_count()} cores, mlx {mx.__version__}, "
          f"load {os.getloadavg()[0]:.2f}")
    print("MLX device: Metal GPU" if gpu else
          "MLX device: CPU (no Metal here: MLX's CPU backend; GPU kernels are not exercised)")
    try:
        import llama_cpp
        have_llama = True
        print(f"llama.cpp: llama-cpp-python {llama_cpp.__version__}, {args.threads} threads")
    except ImportError:
        have_llama = False
        print("llama.cpp: not installed (skipped)")

    with tempfile.TemporaryDirectory(prefix="mlx-gguf-bench-") as tmpd:
        tmp = Path(tmpd)
        models = [Path(p) for p in args.gguf.split(",")] if args.gguf else _default_models(tmp)
        print(f"\nprompt {args.prompt} tokens, {args.gen} generated, greedy\n")
        print("| model | engine | weights MB | prompt tok/s | gen tok/s | same tokens as load_gguf |")
        print("|---|---|---:|---:|---:|---|")
        for path in models:
            model, tok = load_gguf(path)
            ids = (tok.encode("The history of the printing press " * 64))[: args.prompt]
            _mlx_rates(model, tok, ids[:8], 2)                          # warm-up
            p, g, ref = _mlx_rates(model, tok, ids, args.gen)
            print(f"| {path.name} | load_gguf (native types) | {model_nbytes(model) / 1e6:.0f} "
                  f"| {p:.1f} | {g:.1f} | - |")
            del model
            folder = tmp / f"{path.stem}-mlx4"
            mlxquant.convert(path, folder, to="mlx", q_bits=4, q_group_size=64, dtype="float32")
            from mlx_lm import load as mlx_load

            m4, tok4 = mlx_load(str(folder))
            _mlx_rates(m4, tok4, ids[:8], 2)
            p, g, out = _mlx_rates(m4, tok4, ids, args.gen)
            print(f"| {path.name} | mlx-lm, requantized MLX 4-bit g64 | {model_nbytes(m4) / 1e6:.0f} "
                  f"| {p:.1f} | {g:.1f} | {out == ref} |")
            del m4
            if have_llama:
                p, g, out = _llama_rates(path, ids, args.gen, args.threads)
                print(f"| {path.name} | llama.cpp (same file) | {path.stat().st_size / 1e6:.0f} "
                      f"| {p:.1f} | {g:.1f} | {out == ref} |")
    print(f"\nload after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
