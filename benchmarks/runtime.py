"""NumPy runtime vs llama.cpp (llama-cpp-python, 2 threads) on the same SmolLM2 GGUF files, F32 and
Q4_K_M: prompt tokens/s and generation tokens/s, and their ratios.

    python benchmarks/runtime.py [--workdir DIR] [--prompt 256] [--gen 32] [--repeats 3]

The F32 GGUF is the SmolLM2 Q4_1 weights dequantized (mlxquant.testing.f32_gguf); Q4_K_M is made
from it by llama.cpp's own ``llama_model_quantize``. Both engines get the same token ids; each
figure is the best of ``--repeats`` runs (the machines are shared, timings are noisy).
Target of issue 6: NumPy prompt tokens/s >= 0.5x llama.cpp's on the F32 model.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def _last_logits(llm) -> np.ndarray:
    """The last token's logits (with ``logits_all=False`` llama-cpp-python does not copy them)."""
    return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))


def llama_cpp_speed(path: Path, ids: list[int], gen: int, repeats: int, threads: int = 2) -> tuple[float, float]:
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(path), n_ctx=len(ids) + gen + 8, n_batch=len(ids),
                          n_threads=threads, n_threads_batch=threads, type_k=0, type_v=0,
                          logits_all=False, verbose=False)
    best_p = best_g = 0.0
    for _ in range(repeats):
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(ids)
        tp = time.perf_counter() - t0
        tok = int(np.argmax(_last_logits(llm)))
        t1 = time.perf_counter()
        for _ in range(gen - 1):
            llm.eval([tok])
            tok = int(np.argmax(_last_logits(llm)))
        tg = time.perf_counter() - t1
        best_p, best_g = max(best_p, len(ids) / tp), max(best_g, (gen - 1) / tg)
    llm.close()
    return best_p, best_g


def numpy_speed(path: Path, ids: list[int], gen: int, repeats: int) -> tuple[float, float]:
    from mlxquant.runtime import generate_tokens, load_model

    model = load_model(path, backend="numpy", tokenizer=False)
    model.forward([0, 1])  # decode the weights once, as llama.cpp loads before timing
    best_p = best_g = 0.0
    for _ in range(repeats):
        g = generate_tokens(model, ids, max_tokens=gen, stop_at_eos=False)
        best_p, best_g = max(best_p, g.prompt_tps), max(best_g, g.generation_tps)
    return best_p, best_g


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "mlxquant-bench")
    ap.add_argument("--prompt", type=int, default=256)
    ap.add_argument("--gen", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    import llama_cpp

    from mlxquant.eval.bench import prompt_ids
    from mlxquant.runtime import load_model
    from mlxquant.testing.f32_gguf import smollm2_f32_gguf

    args.workdir.mkdir(parents=True, exist_ok=True)
    f32 = args.workdir / "smollm2-f32.gguf"
    if not f32.exists():
        smollm2_f32_gguf(f32)
    q4 = args.workdir / "smollm2-Q4_K_M.gguf"
    if not q4.exists():
        p = llama_cpp.llama_model_quantize_default_params()
        p.ftype, p.nthread = 15, 2  # LLAMA_FTYPE_MOSTLY_Q4_K_M
        if llama_cpp.llama_model_quantize(str(f32).encode(), str(q4).encode(), p) != 0:
            raise SystemExit("llama_model_quantize failed")
    ids = prompt_ids(load_model(f32, backend="numpy"), args.prompt)
    print(f"SmolLM2-135M, {len(ids)} prompt tokens, {args.gen} generated, best of {args.repeats}; "
          f"NumPy BLAS threads: {os.environ.get('OPENBLAS_NUM_THREADS', 'default')}, llama.cpp: 2")
    print(f"{'model':<8} {'engine':<10} {'prompt tok/s':>13} {'gen tok/s':>10}")
    for name, path in (("F32", f32), ("Q4_K_M", q4)):
        lp, lg = llama_cpp_speed(path, ids, args.gen, args.repeats)
        npp, npg = numpy_speed(path, ids, args.gen, args.repeats)
        print(f"{name:<8} {'llama.cpp':<10} {lp:>13.1f} {lg:>10.1f}")
        print(f"{name:<8} {'numpy':<10} {npp:>13.1f} {npg:>10.1f}")
        print(f"{name:<8} {'ratio':<10} {npp / lp:>13.2f} {npg / lg:>10.2f}   (numpy / llama.cpp)")


if __name__ == "__main__":
    main()
