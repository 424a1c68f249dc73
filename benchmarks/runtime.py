"""NumPy runtime vs llama.cpp (llama-cpp-python, 2 threads) on the same SmolLM2 GGUF files, F32 and
Q4_K_M: prompt tokens/s and generation tokens/s, and their ratios.

    python benchmarks/runtime.py [--workdir DIR] [--prompt 256] [--gen 32] [--repeats 5]

The F32 GGUF is the SmolLM2 Q4_1 weights dequantized (mlxquant.testing.f32_gguf); Q4_K_M is made
from it by llama.cpp's own ``llama_model_quantize``. Both engines get the same token ids. The
machines are shared and timings noisy, so after one untimed warm-up run per engine the two engines
run alternately ``--repeats`` times; each figure is the median of those runs, with the spread
(min-max), and the 1-minute load average (``os.getloadavg``) is printed for every round. On a
2-core machine a load above ~2 means other jobs compete for the cores: both engines slow down, and
llama.cpp's 2 threads (like any multi-threaded BLAS) stall when one of them is preempted. The NumPy
runtime picks its BLAS thread count from measurements (``mlxquant.runtime.blas``); its choice is
printed.
Target of issue 6: NumPy prompt tokens/s >= 0.5x llama.cpp's on the F32 model.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def _last_logits(llm) -> np.ndarray:
    """The last token's logits (with ``logits_all=False`` llama-cpp-python does not copy them)."""
    return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))


def _load() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


class LlamaCpp:
    def __init__(self, path: Path, ids: list[int], gen: int, threads: int = 2):
        import llama_cpp

        self.ids, self.gen = ids, gen
        self.llm = llama_cpp.Llama(model_path=str(path), n_ctx=len(ids) + gen + 8, n_batch=len(ids),
                                   n_threads=threads, n_threads_batch=threads, type_k=0, type_v=0,
                                   logits_all=False, verbose=False)

    def run(self) -> tuple[float, float]:
        """(prompt tokens/s, generation tokens/s) of one run."""
        llm, ids = self.llm, self.ids
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(ids)
        tok = int(np.argmax(_last_logits(llm)))
        tp = time.perf_counter() - t0
        t1 = time.perf_counter()
        for _ in range(self.gen - 1):
            llm.eval([tok])
            tok = int(np.argmax(_last_logits(llm)))
        tg = time.perf_counter() - t1
        return len(ids) / tp, (self.gen - 1) / tg

    def close(self) -> None:
        self.llm.close()


class Numpy:
    def __init__(self, path: Path, ids: list[int], gen: int):
        from mlxquant.runtime import load_model

        self.ids, self.gen = ids, gen
        self.model = load_model(path, backend="numpy", tokenizer=False)
        self.model.forward([0, 1])  # decode the weights once, as llama.cpp loads before timing
        self.threads = ""

    def run(self) -> tuple[float, float]:
        from mlxquant.runtime import generate_tokens

        g = generate_tokens(self.model, self.ids, max_tokens=self.gen, stop_at_eos=False)
        self.threads = g.blas_threads
        return g.prompt_tps, g.generation_tps

    def close(self) -> None:
        pass


def _fmt(xs: list[float]) -> str:
    return f"{statistics.median(xs):7.1f} ({min(xs):6.1f}-{max(xs):6.1f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "mlxquant-bench")
    ap.add_argument("--prompt", type=int, default=256)
    ap.add_argument("--gen", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
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
    print(f"SmolLM2-135M, {len(ids)} prompt tokens, {args.gen} generated; median (min-max) of "
          f"{args.repeats} runs per engine, alternating; {os.cpu_count()} CPUs; NumPy BLAS threads: "
          f"{os.environ.get('MLXQUANT_BLAS_THREADS') or 'chosen by measurement'}, llama.cpp: 2")
    rows = []
    for name, path in (("F32", f32), ("Q4_K_M", q4)):
        engines = {"llama.cpp": LlamaCpp(path, ids, args.gen), "numpy": Numpy(path, ids, args.gen)}
        for e in engines.values():
            e.run()  # warm-up (untimed); lets the NumPy BLAS thread choice settle
        res: dict[str, list[tuple[float, float]]] = {k: [] for k in engines}
        loads = [_load()]
        for r in range(args.repeats):
            for k, e in engines.items():
                res[k].append(e.run())
            loads.append(_load())
        print(f"{name}: load average (1 min) per round: {' '.join(f'{x:.2f}' for x in loads)}; "
              f"NumPy BLAS threads: {engines['numpy'].threads}")
        for e in engines.values():
            e.close()
        rows.append((name, res))
    print(f"{'model':<8} {'engine':<10} {'prompt tok/s':>24} {'gen tok/s':>24}")
    for name, res in rows:
        for k, v in res.items():
            print(f"{name:<8} {k:<10} {_fmt([p for p, _ in v]):>24} {_fmt([g for _, g in v]):>24}")
        (lp, lg), (npp, npg) = ([statistics.median(x[i] for x in res[k]) for i in (0, 1)]
                                for k in ("llama.cpp", "numpy"))
        print(f"{name:<8} {'ratio':<10} {npp / lp:>24.2f} {npg / lg:>24.2f}   (numpy / llama.cpp, medians)")


if __name__ == "__main__":
    main()
