"""Memory given back by the runtime (mlxquant.runtime.memory): the compiler's pages once the
kernels are loaded, before a generation's prompt brings the weights in (issue 16)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from numba import njit

from mlxquant.runtime import memory


def _compiler_rss() -> tuple[int, int]:
    """Resident KB of the compiler library's (clean, not clean) read-only mappings."""
    clean = {(a, b) for a, b, c in memory.compiler_mappings() if c}
    out = [0, 0]
    cur = None
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and not head[0].endswith(":"):
                a, b = (int(x, 16) for x in head[0].split("-"))
                cur = None
                if len(head) >= 6 and memory.COMPILER_LIBRARY in head[5] and head[1] in ("r-xp", "r--p"):
                    cur = 0 if (a, b) in clean else 1
            elif cur is not None and head[0] == "Rss:":
                out[cur] += int(head[1])
    return out[0], out[1]


def test_release_drops_the_compilers_clean_pages_and_compiling_still_works():
    def fresh(k):  # a new function each time: compiled here, not loaded from a cache
        @njit
        def f(x):
            return np.sum(x * k) + x.shape[0]
        return f

    assert fresh(3)(np.arange(4.0)) == 22.0
    maps = memory.compiler_mappings()
    assert any(c for _, _, c in maps) and not all(c for _, _, c in maps)  # code/constants; relocated data
    clean_before, kept_before = _compiler_rss()
    assert clean_before > 4096  # compiling touched MBs of LLVM's code
    assert memory.release_compiler() > 0
    clean_after, kept_after = _compiler_rss()
    assert clean_after < clean_before / 8
    assert kept_after == kept_before  # pages the process wrote (relocations) are never dropped
    assert memory.release_compiler_if_used() == 0  # nothing compiled since
    assert fresh(5)(np.arange(3.0)) == 18.0  # LLVM runs again from the page cache
    assert memory.release_compiler_if_used() > 0


_GENERATE = r"""
import json, sys
from mlxquant.runtime import generate_tokens, load_model, memory, numpy_model
from mlxquant.runtime.kernels.step import decode_step

runs = []
release = numpy_model.release_compiler_if_used
def watched():
    runs.append(memory._runs[0])
    return release()
numpy_model.release_compiler_if_used = watched
model = load_model(sys.argv[1], backend="numpy", tokenizer=False)
model.prepare_decode()
loaded = len(decode_step.overloads)
prepared = len(runs)
gen = generate_tokens(model, list(range(1, 41)), max_tokens=6, stop_at_eos=False)
plain = generate_tokens(model, list(range(1, 41)), max_tokens=6, stop_at_eos=False)
clean = sum(1 for _, _, c in memory.compiler_mappings() if c)
print(json.dumps({"loaded": loaded, "runs": runs, "prepared": prepared, "blocks": model.spec.n_layers,
                  "tokens": gen.tokens, "again": plain.tokens, "clean_maps": clean}))
"""


def test_a_generation_loads_its_decode_code_before_the_prompt(shakespeare, tmp_path):
    """In a fresh process: :meth:`prepare_decode` loads the decode step and the head's kernel
    (once for these weights), so the generation's decode steps run the compiler no more (the compiler's pages, given back
    after the prompt's blocks, stay out while every weight is resident); the tokens are those of
    a second generation (everything loaded)."""
    from mlxquant.convert import convert

    path = tmp_path / "m.gguf"
    convert(shakespeare, path, outtype="Q4_K_M")
    out = subprocess.run([sys.executable, "-c", _GENERATE, str(path)], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["loaded"] >= 1 and got["clean_maps"] >= 1
    runs, blocks = got["runs"], got["blocks"]
    # each generation (its prepare_decode returns at once: done for these weights): a check after
    # each prompt block and after the head, then one after each of the 5 decode steps' heads
    assert len(runs) == got["prepared"] + 2 * (blocks + 1 + 5)
    first = runs[got["prepared"]:got["prepared"] + blocks + 1 + 5]
    assert first[-5:] == [first[-6]] * 5  # the compiler ran in none of the decode steps
    assert runs[-(blocks + 6):] == [first[-1]] * (blocks + 6)  # nor in the second generation
    assert got["tokens"] == got["again"]
