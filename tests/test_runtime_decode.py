"""The NumPy runtime's decode step (issue 16): one token at a time through the KV cache (the
compiled attention, cached per-layer objects, RoPE table slices) gives the logits of one forward
pass on every architecture, sliding windows included; :func:`thread_session` sets BLAS / kernel
thread counts only when they change and restores them once."""

from __future__ import annotations

import numba
import numpy as np
import pytest

import mlxquant.runtime.blas as blas
from mlxquant.formats.hf import HFTensorSpec, write_hf_folder
from mlxquant.runtime import generate_tokens, load_model
from mlxquant.runtime.kernels import kernel_threads, set_kernel_threads
from mlxquant.testing.f32_gguf import TINY_CONFIGS, tiny_hf_model

WINDOW = 12  # sliding window of the gemma models here: the decode steps run past it


def _decoded(model, tokens, prompt: int, threads: int) -> np.ndarray:
    """Logits of ``tokens`` fed as a prompt of ``prompt`` tokens, then one token per step, with
    the kernels on ``threads`` threads (the cache starts small and grows while decoding)."""
    cache = model.new_cache(2)
    old = set_kernel_threads(threads)
    try:
        steps = [model.forward(tokens[:prompt], cache)]
        steps += [model.forward(tokens[i:i + 1], cache) for i in range(prompt, len(tokens))]
    finally:
        set_kernel_threads(old)
    return np.concatenate(steps)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("arch", sorted(TINY_CONFIGS))
def test_decode_steps_equal_one_forward_pass(tmp_path, arch, threads):
    """Decoding step by step (compiled attention with its heads over ``threads`` threads, the
    compiled one-row norm) gives the logits of one forward pass over the whole sequence."""
    overrides = {"sliding_window": WINDOW} if arch.startswith("gemma") else {}
    cfg, tensors = tiny_hf_model(arch, seed=5, **overrides)
    specs = [HFTensorSpec(n, a.shape, "F32") for n, a in tensors.items()]
    write_hf_folder(tmp_path / arch, cfg, specs, lambda s: tensors[s.name])
    model = load_model(tmp_path / arch, backend="numpy", tokenizer=False)
    tokens = np.random.default_rng(2).integers(0, cfg["vocab_size"], 40)
    full = model.forward(tokens)
    got = _decoded(model, tokens, 8, threads)
    scale = np.abs(full).max()
    assert np.abs(got - full).max() <= 1e-5 * scale
    assert np.array_equal(got.argmax(-1), full.argmax(-1))
    # the per-layer objects are looked up once and reused while the weights are unchanged
    assert model._layer(0) is model._layer(0)


def test_one_row_norm_equals_numpy_norm():
    from mlxquant.runtime.kernels.attention import rms_norm_row
    from mlxquant.runtime.ops import rms_norm

    rng = np.random.default_rng(7)
    for n, scale in ((576, 1.0), (64, 1e-3), (2048, 300.0)):
        x = (rng.standard_normal(n) * scale).astype(np.float32)
        w = rng.standard_normal(n).astype(np.float32)
        out = np.empty_like(x)
        rms_norm_row(x, w, np.float32(1e-5), out)
        want = rms_norm(x[None], w, 1e-5)[0]
        np.testing.assert_allclose(out, want, rtol=2e-6, atol=1e-30)
    x = np.zeros(8, np.float32)
    x[3] = np.nan
    out = np.empty_like(x)
    rms_norm_row(x, np.ones(8, np.float32), np.float32(1e-5), out)
    assert np.isnan(out).all()  # NaN propagates as in NumPy


@pytest.fixture
def fake_blas(monkeypatch):
    """BLAS at 2 threads, every set_blas_threads call recorded."""
    state = {"n": 2, "calls": []}

    def set_threads(n: int) -> int:
        state["calls"].append(n)
        old, state["n"] = state["n"], n
        return old

    monkeypatch.setattr(blas, "get_blas_threads", lambda: state["n"])
    monkeypatch.setattr(blas, "set_blas_threads", set_threads)
    monkeypatch.delenv("MLXQUANT_BLAS_THREADS", raising=False)
    # another job on the cores unless a test says otherwise: choosers start on one thread and
    # do not explore (the real count depends on this machine's load)
    monkeypatch.setattr(blas, "busy_elsewhere", lambda: 2)
    monkeypatch.setattr(blas, "cpu_cores", lambda: 2)
    old = set_kernel_threads(1)
    yield state
    set_kernel_threads(old)


def test_steps_outside_a_session_restore_each_time(fake_blas):
    chooser = blas.ThreadChooser()
    for _ in range(3):
        with chooser.step():
            assert fake_blas["n"] == 1 and kernel_threads() == 1
        assert fake_blas["n"] == 2
    assert fake_blas["calls"] == [1, 2] * 3


def test_a_session_sets_on_change_and_restores_once(fake_blas, monkeypatch):
    monkeypatch.setattr(blas, "busy_elsewhere", lambda: 0)  # idle cores: explorations run
    monkeypatch.setattr(blas, "cpu_cores", lambda: 2)
    chooser = blas.ThreadChooser(period=2, max_period=2)
    seen = []
    with blas.thread_session():
        for _ in range(9):
            with chooser.step():
                seen.append(fake_blas["n"])
                assert kernel_threads() == min(fake_blas["n"], numba.config.NUMBA_NUM_THREADS)
        inside = list(fake_blas["calls"])
    assert seen[0] == 2  # idle cores at the first look: a start on all of them
    assert set(seen) == {1, 2}  # the choice and the explorations
    # the first step sets the counts (and keeps the old ones to restore), later ones on a change only
    assert inside == [seen[0]] + [n for prev, n in zip(seen, seen[1:]) if n != prev]
    assert fake_blas["calls"] == inside + ([2] if seen[-1] != 2 else [])  # restored once, at the end
    assert fake_blas["n"] == 2 and kernel_threads() == 1


class _Clock:
    """A fake ``time`` module for :class:`ThreadChooser`: a step lasts what the test adds."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


def _run_steps(monkeypatch, fake_blas, chooser, times: dict[int, list[float]], steps: int) -> list[int]:
    """``steps`` passes of ``chooser``; a pass on ``n`` threads lasts ``times[n].pop(0)`` (the last
    value repeats); returns the thread count of each pass."""
    clock = _Clock()
    monkeypatch.setattr(blas, "time", clock)
    looks = iter([2])  # busy at the first look (the choosers start on one thread), then idle cores
    monkeypatch.setattr(blas, "busy_elsewhere", lambda: next(looks, 0))
    monkeypatch.setattr(blas, "cpu_cores", lambda: 2)
    seen = []
    for _ in range(steps):
        with chooser.step():
            n = fake_blas["n"]
            clock.now += times[n].pop(0) if len(times[n]) > 1 else times[n][0]
            seen.append(n)
    return seen


def test_an_exploration_counts_its_fastest_pass(fake_blas, monkeypatch):
    """The first pass on the other count pays for the switch (OpenBLAS's workers still spinning
    after a prefill doubled a decode step): it alone does not make an exploration lose."""
    chooser = blas.ThreadChooser(period=2, max_period=64)
    seen = _run_steps(monkeypatch, fake_blas, chooser, {1: [14e-3], 2: [17e-3, 8.5e-3]}, 8)
    # the untimed first pass, one timed, one more, the 2-pass exploration (won: its fastest pass
    # counts), then 2 threads: explorations only go up (down only every max_period passes)
    assert seen == [1, 1, 1, 2, 2, 2, 2, 2]
    assert chooser.time[2] == pytest.approx(8.5e-3) and chooser.period == 2


def test_load_arriving_moves_back_to_one_thread(fake_blas, monkeypatch):
    """Without re-trying one thread: when the 2-thread time (timed on every pass) rises past the
    last 1-thread time, the next pass runs on one thread."""
    chooser = blas.ThreadChooser(period=2, max_period=64)
    seen = _run_steps(monkeypatch, fake_blas, chooser, {1: [14e-3], 2: [8e-3] * 6 + [40e-3]}, 12)
    first = seen.index(2)
    assert seen[first:first + 7] == [2] * 7 and seen[first + 7] == 1, seen


def test_an_exploration_that_loses_backs_off(fake_blas, monkeypatch):
    chooser = blas.ThreadChooser(period=2, max_period=8)
    seen = _run_steps(monkeypatch, fake_blas, chooser, {1: [10e-3], 2: [20e-3]}, 24)
    assert seen[-1] == 1 and chooser.time[2] == pytest.approx(20e-3)
    runs = "".join(map(str, seen)).split("1")
    assert [len(r) for r in runs if r] == [2, 2, 2]  # each exploration is 2 passes, ever rarer
    assert chooser.period == 8


def test_a_session_restores_after_an_error_and_nests(fake_blas):
    chooser = blas.ThreadChooser()
    with pytest.raises(KeyboardInterrupt):
        with blas.thread_session():
            with blas.thread_session():  # the inner one leaves the restore to the outer one
                with chooser.step():
                    pass
            assert fake_blas["n"] == 1
            raise KeyboardInterrupt
    assert fake_blas["n"] == 2 and fake_blas["calls"] == [1, 2]


def test_generation_restores_blas_once(tmp_path, fake_blas):
    cfg, tensors = tiny_hf_model("llama", seed=1)
    specs = [HFTensorSpec(n, a.shape, "F32") for n, a in tensors.items()]
    write_hf_folder(tmp_path / "m", cfg, specs, lambda s: tensors[s.name])
    model = load_model(tmp_path / "m", backend="numpy", tokenizer=False)
    gen = generate_tokens(model, [1, 2, 3], max_tokens=12, stop_at_eos=False)
    assert len(gen.tokens) == 12
    assert fake_blas["n"] == 2
    # 1 thread from the start, back to 2 at the end; between them only the decode chooser's
    # explorations (at most one in 11 steps) set a count: not a set and a restore per step (24)
    assert fake_blas["calls"][0] == 1 and fake_blas["calls"][-1] == 2
    assert len(fake_blas["calls"]) <= 4


@pytest.mark.parametrize("threads", [1, 2])
def test_quantized_decode_steps_equal_one_forward_pass(shakespeare, tmp_path, threads):
    """A GGUF model (fused kernels, and the attention's heads over the kernel threads: the path
    float models do not take) decodes step by step to the logits of one forward pass."""
    from mlxquant.convert import convert

    convert(shakespeare, tmp_path / "m.gguf", outtype="Q4_K_M")
    model = load_model(tmp_path / "m.gguf", backend="numpy", tokenizer=False)
    tokens = np.random.default_rng(3).integers(0, model.spec.vocab, 30)
    full = model.forward(tokens)
    got = _decoded(model, tokens, 4, threads)
    assert np.abs(got - full).max() <= 1e-4 * np.abs(full).max()
    assert np.array_equal(got.argmax(-1), full.argmax(-1))


@pytest.mark.parametrize("arch", sorted(TINY_CONFIGS) + ["gguf-Q4_K_M"])
def test_compiled_decode_block_equals_the_python_path(shakespeare, tmp_path, monkeypatch, arch):
    """The compiled decode block (kernels.step: llama-style blocks, qwen2's biases, GGUF types in
    their blocks with llama's q/k row order) gives the logits of the per-operation Python path
    (``MLXQUANT_DECODE_BLOCK=0``); blocks it does not cover (per-head q/k norms, gemma's sandwich
    norms) take the Python path."""
    from mlxquant.convert import convert

    if arch.startswith("gguf"):
        path = tmp_path / "m.gguf"
        convert(shakespeare, path, outtype="Q4_K_M")
    else:
        cfg, tensors = tiny_hf_model(arch, seed=6)
        path = tmp_path / arch
        write_hf_folder(path, cfg, [HFTensorSpec(n, a.shape, "F32") for n, a in tensors.items()],
                        lambda s: tensors[s.name])
    model = load_model(path, backend="numpy", tokenizer=False)
    covered = not (model.spec.qk_norm or model.spec.sandwich_norms)
    assert (model._held().plans is not None) == covered
    assert (model._held().typed is not None) == covered  # every block in one call (decode_step)
    tokens = np.random.default_rng(4).integers(0, model.spec.vocab, 20)
    compiled = _decoded(model, tokens, 4, 2)
    if covered:  # the step's IR for linking was let go after its first call; it kept decoding
        from mlxquant.runtime.kernels.step import decode_step

        assert decode_step.overloads and all(getattr(c.library, "_shared_module", None) is None
                                             for c in decode_step.overloads.values())
    if covered:  # one call a block: the same arithmetic (LLVM may order a sum differently)
        model._held_parts = model._held()._replace(typed=None)
        per_block = _decoded(model, tokens, 4, 2)
        assert np.abs(per_block - compiled).max() <= 1e-6 * np.abs(compiled).max()
        model._held_parts = None
    monkeypatch.setenv("MLXQUANT_DECODE_BLOCK", "0")
    model._held_parts = None  # rebuilt without the compiled block's plans
    assert model._held().plans is None
    python = _decoded(model, tokens, 4, 2)
    assert np.abs(compiled - python).max() <= 1e-5 * np.abs(python).max()


@pytest.mark.parametrize("preset", [None, "12"])
def test_import_sets_openblas_idle_timeout_before_numpy(preset):
    """``import mlxquant`` shortens OpenBLAS's idle spin (read when NumPy loads OpenBLAS) unless
    the environment already sets it."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    if preset is not None:
        env["OPENBLAS_THREAD_TIMEOUT"] = preset
    code = ("import sys, os, mlxquant; assert 'numpy' not in sys.modules; "
            "print(os.environ['OPENBLAS_THREAD_TIMEOUT'])")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == (preset or "20")


def test_a_split_chooser_keeps_blas_on_one_thread(fake_blas):
    """``split=True`` (a quantized model's prefill): ``n`` threads are the tile threads and the
    kernel threads, BLAS stays on one thread; all three are restored."""
    from mlxquant.runtime.kernels.matrix import tile_threads

    chooser = blas.ThreadChooser(split=True)
    chooser.candidates = [2]  # as if 2 threads were chosen
    with chooser.step():
        assert fake_blas["n"] == 1 and tile_threads() == 2
        assert kernel_threads() == min(2, numba.config.NUMBA_NUM_THREADS)
    assert fake_blas["n"] == 2 and tile_threads() == 1 and kernel_threads() == 1
    with blas.thread_session():
        with chooser.step():
            assert fake_blas["n"] == 1 and tile_threads() == 2
    assert fake_blas["n"] == 2 and tile_threads() == 1 and kernel_threads() == 1


def test_a_split_prompt_equals_one_thread(shakespeare, tmp_path, monkeypatch):
    """A GGUF model's prompt with its tiles, gated MLP and attention heads split over 2 threads
    (BLAS on one) gives the one-thread logits; a generation chooses the split itself."""
    from threadpoolctl import threadpool_limits

    from mlxquant.convert import convert
    from mlxquant.runtime import numpy_model
    from mlxquant.runtime.kernels import matrix
    from mlxquant.runtime.kernels.matrix import set_tile_threads

    for mod in (matrix, numpy_model):
        monkeypatch.setattr(mod, "SPLIT_MIN_MACS", 0)  # every product and the attention split
    convert(shakespeare, tmp_path / "m.gguf", outtype="Q4_K_M")
    model = load_model(tmp_path / "m.gguf", backend="numpy", tokenizer=False)
    assert model.blas_threads["prefill"].split
    tokens = np.random.default_rng(5).integers(0, model.spec.vocab, 300)  # 3 attention blocks
    with threadpool_limits(1, user_api="blas"):
        one = model.forward(tokens)
        old = set_tile_threads(2)
        try:
            split = model.forward(tokens)
        finally:
            set_tile_threads(old)
    assert np.abs(split - one).max() <= 1e-5 * np.abs(one).max()
    assert np.array_equal(split.argmax(-1), one.argmax(-1))


def test_busy_cores_delay_an_exploration_by_half_a_period(fake_blas, monkeypatch):
    """An exploration skipped because other work held the cores is tried again half a period
    later, not a whole one."""
    clock = _Clock()
    monkeypatch.setattr(blas, "time", clock)
    monkeypatch.setattr(blas, "cpu_cores", lambda: 2)
    busy = iter([2, 1, 1])  # the start and the first two explorations' looks see another job
    monkeypatch.setattr(blas, "busy_elsewhere", lambda: next(busy, 0))
    chooser = blas.ThreadChooser(period=4, max_period=64)
    seen = []
    for _ in range(12):
        with chooser.step():
            seen.append(fake_blas["n"])
            clock.now += 10e-3 if fake_blas["n"] == 1 else 5e-3
    # a start on one thread (busy), untimed first pass, then 4 timed 1-thread passes; the looks
    # at passes 5 and 7 see busy cores, the one at pass 9 explores
    assert seen.index(2) == 9, seen


def test_blocks_of_different_types_keep_one_call_a_block():
    """The compiled decode step takes its blocks' arguments as one typed list: blocks whose
    arrays differ in type (a read-only file slice beside a swapped-in writable tensor) are not
    cast into it; the step then runs one call a block."""
    from mlxquant.runtime.numpy_model import _typed_list

    w = np.zeros((4, 8), np.uint8)
    ro = w.copy()
    ro.flags.writeable = False
    norm = np.ones(8, np.float32)
    typed = _typed_list([(norm, w), (norm, w.copy()), (norm * 2, w)])
    assert len(typed) == 3 and np.array_equal(typed[2][0], norm * 2) and typed[1][1].shape == (4, 8)
    assert _typed_list([(norm, w), (norm, ro)]) is None
    assert _typed_list([]) is None and _typed_list(None) is None



def test_idle_cores_start_on_all_and_move_down_when_load_arrives(fake_blas, monkeypatch):
    """Cores idle at the first pass: the chooser starts on all of them (a one-shot generation
    runs its prompt and first steps there) and stays while their time holds; when it rises by
    half (load), it tries one thread and keeps the faster; busy cores at the first pass: it starts
    on one."""
    clock = _Clock()
    monkeypatch.setattr(blas, "time", clock)
    monkeypatch.setattr(blas, "busy_elsewhere", lambda: 0)
    chooser = blas.ThreadChooser(period=4, max_period=64)
    times = {1: [10e-3], 2: [6e-3] * 12 + [20e-3] * 20}
    seen = []
    for _ in range(24):
        with chooser.step():
            n = fake_blas["n"]
            seen.append(n)
            clock.now += times[n].pop(0) if len(times[n]) > 1 else times[n][0]
    assert seen[:12] == [2] * 12  # steady: no one-thread pass
    assert 1 in seen[12:15] and seen[-1] == 1, seen  # load: one thread tried soon, and kept
    monkeypatch.setattr(blas, "busy_elsewhere", lambda: 1)
    busy = blas.ThreadChooser(period=4, max_period=64)
    with busy.step():
        assert fake_blas["n"] == 1
