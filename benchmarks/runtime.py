"""NumPy runtime vs llama.cpp (llama-cpp-python, 2 threads) on the same GGUF files: prompt
tokens/s, generation tokens/s and their ratios, and each engine's peak resident memory.

    python benchmarks/runtime.py [--workdir DIR] [--prompt 256] [--gen 32] [--repeats 3] [--runs 2]
                                 [--models F32,Q4_K_M,Q8_0,shakespeare-Q4_K_M[,random1b-Q4_K_M,random3b-Q4_K_M]]

Models: SmolLM2-135M F32 (its Q4_1 weights dequantized, mlxquant.testing.f32_gguf), and Q4_K_M
and Q8_0 made from it by llama.cpp's own ``llama_model_quantize``; SmolLM2's 576 columns are not a
multiple of 256, so llama.cpp's Q4_K_M is mostly Q5_0 there. ``shakespeare-Q4_K_M`` is the float
tiny-shakespeare model (tests/data, rows of 256 and 768: real K-quants), converted to F32 GGUF by
mlxquant and quantized by llama.cpp. The NumPy runtime keeps quantized linears in their blocks
(fused kernels, :mod:`mlxquant.runtime.kernels`); ``MLXQUANT_FUSED=0`` benchmarks the old
widened-to-float32 path instead.

Each engine runs alone in a fresh process (this script with ``--child``): load, three untimed
warm-up runs (compiled kernels loaded, the NumPy runtime's thread choices settled), then ``--runs``
timed runs of the prompt and the generation; the engines' processes alternate ``--repeats``
times and each figure is the median over all timed runs, with the spread (min-max). Separate
processes because the engines disturb each other in one: right after llama.cpp's threads had run,
a 2-thread decode step of the NumPy runtime took 44 ms instead of 0.5 (tiny model). Both engines
get the same token ids, made once here by the model's tokenizer (the children load none). Peak RSS
(``VmHWM``) of each engine's first process is printed against the file size + the f32 KV cache
(both engines keep it in float32 here), in total and minus the RSS before loading (the
interpreter and the same imports in both: what the process costs before any model). The
machines are shared and timings noisy: the 1-minute load average (``os.getloadavg``) is printed
for every round. On a 2-core machine a load above ~2 means other jobs compete for the cores: both
engines slow down, and llama.cpp's 2 threads (like any multi-threaded kernel) stall when one of
them is preempted. The NumPy runtime picks its BLAS/kernel thread count from measurements
(``mlxquant.runtime.blas``); its choice is printed.
Targets of issue 16: generation and prompt tokens/s >= 1.0x llama.cpp's with 2 threads; peak
RSS of a Q4_K_M run <= 1.3 x (file + KV cache).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlxquant  # noqa: F401  (before NumPy: it shortens OpenBLAS's idle spin, see runtime/blas.py)
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
    def __init__(self, model, ids: list[int], gen: int):
        self.model, self.ids, self.gen = model, ids, gen
        self.threads = ""

    def run(self) -> tuple[float, float]:
        from mlxquant.runtime import generate_tokens

        g = generate_tokens(self.model, self.ids, max_tokens=self.gen, stop_at_eos=False)
        self.threads = g.blas_threads
        return g.prompt_tps, g.generation_tps

    def close(self) -> None:
        pass


def _blas_kernel() -> str:
    """NumPy's BLAS and the kernel it runs (threadpoolctl), with the environment that forces one:
    some machines set ``OPENBLAS_CORETYPE`` (and ``OPENBLAS_L2_SIZE``) for old OpenBLAS builds,
    which holds a current NumPy's sgemm to its AVX2 kernels (230 instead of 375 GFLOPS on 2
    threads here, AVX-512 CPU): benchmark with both unset (``env -u OPENBLAS_CORETYPE -u
    OPENBLAS_L2_SIZE python benchmarks/runtime.py``); llama.cpp does not use OpenBLAS."""
    from threadpoolctl import threadpool_info

    libs = [f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')})"
            for i in threadpool_info() if i.get("user_api") == "blas"]
    forced = [f"{k}={os.environ[k]}" for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ]
    return (", ".join(libs) or "none found") + ("; forced by " + ", ".join(forced) if forced else "")


def _hwm() -> int:
    """Peak resident bytes of this process (``VmHWM``; ``ru_maxrss`` is inherited across exec on
    Linux, so a child started by a large parent would report the parent's peak)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _child(engine: str, path: Path, ids: list[int], gen: int, runs: int) -> None:
    """One engine alone in this process: three untimed warm-up runs, then ``runs`` timed runs;
    print JSON with their (prompt, generation) tokens/s, the peak RSS (bytes) and the RSS before
    the model was loaded (the interpreter and the imports). Token ids come from the parent: no
    tokenizer is loaded here (the NumPy runtime's GGUF tokenizer alone takes ~55 MB for SmolLM2's
    49k tokens; llama.cpp's is part of its model)."""
    import importlib

    importlib.import_module("llama_cpp")  # both engines' processes load the same libraries
    from mlxquant.runtime import load_model

    base = _hwm()
    if engine == "llama.cpp":
        e: LlamaCpp | Numpy = LlamaCpp(path, ids, gen)
    else:
        e = Numpy(load_model(path, backend="numpy", tokenizer=False), ids, gen)
    for _ in range(3):  # warm-up: compiled kernels loaded, the NumPy thread choices settled
        e.run()
    timed = [e.run() for _ in range(runs)]
    print(json.dumps({"base": base, "peak": _hwm(), "runs": timed, "threads": getattr(e, "threads", "")}))


def _run_child(engine: str, path: Path, ids: list[int], gen: int, runs: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", engine, str(path), "--ids", ",".join(map(str, ids)),
                          "--gen", str(gen), "--runs", str(runs)], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{engine} on {path.name} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _prompt(path: Path, prompt: int, gen: int) -> tuple[list[int], int]:
    """The prompt's token ids (the model's tokenizer, :func:`mlxquant.eval.bench.prompt_ids`) and
    the bytes of a float32 KV cache holding the prompt and the generation."""
    from mlxquant.eval.bench import prompt_ids
    from mlxquant.runtime import load_model

    model = load_model(path, backend="numpy", tokenizer=True)
    ids = prompt_ids(model, prompt)
    s = model.spec
    return ids, 2 * s.n_layers * s.n_kv_heads * s.head_dim * (len(ids) + gen + 8) * 4


def _models(workdir: Path, names: list[str]) -> dict[str, Path]:
    import llama_cpp

    from mlxquant.testing.f32_gguf import smollm2_f32_gguf

    def quantize(src: Path, dst: Path, ftype: int) -> Path:
        if not dst.exists():
            p = llama_cpp.llama_model_quantize_default_params()
            p.ftype, p.nthread = ftype, 2
            if llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), p) != 0:
                raise SystemExit(f"llama_model_quantize failed on {src}")
        return dst

    f32 = workdir / "smollm2-f32.gguf"
    if not f32.exists():
        smollm2_f32_gguf(f32)
    out = {}
    for name in names:
        if name == "F32":
            out[name] = f32
        elif name == "Q4_K_M":
            out[name] = quantize(f32, workdir / "smollm2-Q4_K_M.gguf", 15)  # LLAMA_FTYPE_MOSTLY_Q4_K_M
        elif name == "Q8_0":
            out[name] = quantize(f32, workdir / "smollm2-Q8_0.gguf", 7)  # LLAMA_FTYPE_MOSTLY_Q8_0
        elif name == "shakespeare-Q4_K_M":
            from mlxquant.convert import convert
            from mlxquant.testing.inputs import shakespeare_model_dir

            sf32 = workdir / "shakespeare-f32.gguf"
            if not sf32.exists():
                convert(shakespeare_model_dir(), sf32, outtype="F32")
            out[name] = quantize(sf32, workdir / "shakespeare-Q4_K_M.gguf", 15)
        elif name.endswith("-Q4_K_M") and name[:-len("-Q4_K_M")] in RANDOM_SHAPES:
            base = name[:-len("-Q4_K_M")]
            rf32 = workdir / f"{base}-f32.gguf"
            if not rf32.exists():
                _random_llama(f32, rf32, RANDOM_SHAPES[base])
            out[name] = quantize(rf32, workdir / f"{base}-Q4_K_M.gguf", 15)
        else:
            raise SystemExit(f"unknown model {name!r}")
    return out


# random llamas: (hidden, MLP, blocks, heads, KV heads) of TinyLlama-1.1B and Llama-3.2-3B
RANDOM_SHAPES = {"random1b": (2048, 5632, 22, 32, 4), "random3b": (3072, 8192, 28, 24, 8)}


def _random_llama(smollm2_f32: Path, out: Path, shape: tuple[int, int, int, int, int]) -> None:
    """A llama of ``shape`` (:data:`RANDOM_SHAPES`: TinyLlama-1.1B's, 4.4 GB as float32, or
    Llama-3.2-3B's, 12 GB) with SmolLM2's tokenizer and tied embeddings, random weights (normal,
    std 0.02; norms 1), as a float32 GGUF: what memory at file size means on a model whose weights
    dwarf the interpreter (its outputs are noise; only speed and memory are measured on it)."""
    from mlxquant.formats.gguf_read import GGUFModel
    from mlxquant.formats.gguf_write import Metadata, TensorSpec, write_gguf

    g = GGUFModel(smollm2_f32)
    meta = Metadata()
    meta.update({k: v for k, v in g.metadata.items() if not k.startswith("mlxquant.")}, dict(g.value_types))
    hidden, ff, blocks, heads, kv = shape
    for key, v in {"embedding_length": hidden, "feed_forward_length": ff, "block_count": blocks,
                   "attention.head_count": heads, "attention.head_count_kv": kv,
                   "rope.dimension_count": hidden // heads}.items():
        meta.set(f"llama.{key}", v, meta.type_of(f"llama.{key}"))
    meta.set("general.name", f"random-{blocks}x{hidden}", meta.type_of("general.name"))
    vocab = len(g.get("tokenizer.ggml.tokens"))
    shapes = {"token_embd.weight": (vocab, hidden), "output_norm.weight": (hidden,)}
    for i in range(blocks):
        p = f"blk.{i}."
        shapes.update({p + "attn_norm.weight": (hidden,), p + "ffn_norm.weight": (hidden,),
                       p + "attn_q.weight": (hidden, hidden), p + "attn_k.weight": (kv * hidden // heads, hidden),
                       p + "attn_v.weight": (kv * hidden // heads, hidden),
                       p + "attn_output.weight": (hidden, hidden), p + "ffn_gate.weight": (ff, hidden),
                       p + "ffn_up.weight": (ff, hidden), p + "ffn_down.weight": (hidden, ff)})

    def data(spec: TensorSpec) -> np.ndarray:
        if len(spec.shape) == 1:
            return np.ones(spec.shape, np.float32)
        rng = np.random.default_rng(list(shapes).index(spec.name))
        return (0.02 * rng.standard_normal(spec.shape, dtype=np.float32)).astype(np.float32)

    write_gguf(out, meta, [TensorSpec(n, "F32", s) for n, s in shapes.items()], data)


def _fmt(xs: list[float]) -> str:
    return f"{statistics.median(xs):7.1f} ({min(xs):6.1f}-{max(xs):6.1f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "mlxquant-bench")
    ap.add_argument("--prompt", type=int, default=256)
    ap.add_argument("--gen", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3, help="processes per engine (alternating)")
    ap.add_argument("--runs", type=int, default=2, help="timed runs per process, after a warm-up")
    ap.add_argument("--models", default="F32,Q4_K_M,Q8_0,shakespeare-Q4_K_M")
    ap.add_argument("--child", nargs=2, metavar=("ENGINE", "GGUF"), help=argparse.SUPPRESS)
    ap.add_argument("--ids", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args.child[0], Path(args.child[1]), [int(t) for t in args.ids.split(",")], args.gen, args.runs)
        return

    args.workdir.mkdir(parents=True, exist_ok=True)
    paths = _models(args.workdir, args.models.split(","))
    print(f"{len(paths)} models, {args.prompt} prompt tokens, {args.gen} generated; median (min-max) of "
          f"{args.repeats} processes x {args.runs} runs per engine, processes alternating; "
          f"{os.cpu_count()} CPUs; NumPy BLAS/kernel threads: "
          f"{os.environ.get('MLXQUANT_BLAS_THREADS') or 'chosen by measurement'}, llama.cpp: 2; "
          f"MLXQUANT_FUSED={os.environ.get('MLXQUANT_FUSED', '1')}")
    print(f"NumPy's BLAS: {_blas_kernel()}")
    rows = []
    rss = {}
    for name, path in paths.items():
        ids, kv = _prompt(path, args.prompt, args.gen)
        # one untimed NumPy process first: Numba compiles the kernels on a cold cache (once per
        # machine and code version), and that compilation's memory would be the peak RSS measured
        _run_child("numpy", path, ids[:16], 2, 1)
        res: dict[str, list[tuple[float, float]]] = {"llama.cpp": [], "numpy": []}
        loads = [_load()]
        threads = []
        for r in range(args.repeats):
            for k in res:  # each engine in a fresh process, alternating
                got = _run_child(k, path, ids, args.gen, args.runs)
                res[k] += [tuple(x) for x in got["runs"]]
                if r == 0:
                    rss.setdefault(name, {})[k] = dict(got, file=path.stat().st_size, kv=kv)
                if k == "numpy":
                    threads.append(got["threads"])
            loads.append(_load())
        print(f"{name}: load average (1 min) per round: {' '.join(f'{x:.2f}' for x in loads)}; "
              f"NumPy BLAS/kernel threads (last process): {threads[-1]}")
        rows.append((name, res))
    print(f"{'model':<19} {'engine':<10} {'prompt tok/s':>24} {'gen tok/s':>24} {'peak RSS MB':>12}")
    for name, res in rows:
        for k, v in res.items():
            r = f"{rss[name][k]['peak'] / 1e6:12.0f}" if name in rss else ""
            print(f"{name:<19} {k:<10} {_fmt([p for p, _ in v]):>24} {_fmt([g for _, g in v]):>24} {r}")
        (lp, lg), (npp, npg) = ([statistics.median(x[i] for x in res[k]) for i in (0, 1)]
                                for k in ("llama.cpp", "numpy"))
        print(f"{name:<19} {'ratio':<10} {npp / lp:>24.2f} {npg / lg:>24.2f}   (numpy / llama.cpp, medians)")
        if name in rss:
            r = rss[name]
            fk = (r["numpy"]["file"] + r["numpy"]["kv"]) / 1e6
            own = {k: (r[k]["peak"] - r[k]["base"]) / 1e6 for k in r}
            print(f"{name:<19} {'memory':<10} file + KV {fk:.0f} MB; peak RSS / (file + KV): numpy "
                  f"{r['numpy']['peak'] / 1e6 / fk:.2f}, llama.cpp {r['llama.cpp']['peak'] / 1e6 / fk:.2f}; "
                  f"RSS before loading: numpy {r['numpy']['base'] / 1e6:.0f} MB, "
                  f"llama.cpp {r['llama.cpp']['base'] / 1e6:.0f} MB; peak minus that / (file + KV): "
                  f"numpy {own['numpy'] / fk:.2f}, llama.cpp {own['llama.cpp'] / fk:.2f}")


if __name__ == "__main__":
    main()
