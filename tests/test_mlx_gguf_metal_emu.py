"""The Metal kernels of mlxquant.mlx (kernels/*.metal) compiled as C++20 against tests/metal_emu/
metal_emu.h and run on the CPU: every block type that uses a kernel, both bodies (matvec and the
tiled matmul), shapes that are not multiples of the threadgroup (rows, tokens, sub-blocks per
lane), against mlxquant's NumPy codec ``dequantize`` + matmul.

Each body is wrapped in a C++ function with the parameter names mx.fast.metal_kernel generates
(inputs w, x, tab; output y; ROWS/COLS/NTOK, passed at run time instead of as template constants;
the position attributes), and launched with the grid and threadgroup mlxquant.mlx.metal.dispatch
gives MLX. What this proves and what only a Mac can: see the README section "GGUF on MLX".
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from mlxquant import dequantize
from mlxquant.mlx import metal
from mlxquant.quant.types import get_type

EMU = Path(__file__).parent / "metal_emu"
PARAMS = ("const device uint8_t* w, const device float* x, const device uint8_t* tab, device float* y, "
          "const int ROWS, const int COLS, const int NTOK, uint3 thread_position_in_grid, "
          "uint3 thread_position_in_threadgroup, uint3 threadgroup_position_in_grid")
# byte offset and kind of each type's super-block scale, set to a sane value in random blocks
SCALE_FIELDS = {"Q2_K": [(80, "f16"), (82, "f16")], "Q3_K": [(108, "f16")], "Q6_K": [(208, "f16")],
                "Q8_K": [(0, "f32")], "IQ1_M": [(48, "iq1m")]}
# (rows, cols, tokens): rows not a multiple of the 2 rows / 32 rows per threadgroup, tokens past
# MV_MAX_TOKENS and not a multiple of the 16-token tile, cols giving sub-blocks % 32 != 0
SHAPES = [(5, 256, 1), (1, 512, 2), (37, 768, 3), (33, 512, 21)]


def _compiler() -> str:
    for c in ("g++", "/opt/swift/usr/bin/clang++", "clang++"):
        if shutil.which(c):
            return c
    pytest.fail("no C++ compiler (g++ or clang++) for the Metal emulation harness")


def _source() -> str:
    parts = ['#include "metal_emu.h"']
    for t in metal.KERNEL_TYPES:
        header, _ = metal.kernel_parts(t, "mv")
        ns = f"k_{t}"
        parts.append(f"namespace {ns} {{\n{header}")
        for body in ("mv", "mm"):
            parts.append(f"void {body}({PARAMS}) {{\n{metal.source(body)}\n}}")
        parts.append(f"}}  // namespace {ns}")
        parts.append(
            f'extern "C" void run_{t}(int body, const uint8_t* w, const float* x, const uint8_t* tab, '
            f"float* y, int rows, int cols, int ntok, uint gx, uint gy, uint gz, uint tx, uint ty, "
            f"uint tz) {{\n"
            f"  emu::launch(uint3{{gx, gy, gz}}, uint3{{tx, ty, tz}}, [&](const emu::Pos& p) {{\n"
            f"    if (body == 0) {ns}::mv(w, x, tab, y, rows, cols, ntok, p.grid, p.local, p.group);\n"
            f"    else {ns}::mm(w, x, tab, y, rows, cols, ntok, p.grid, p.local, p.group);\n"
            f"  }});\n}}")
    return "\n".join(parts)


@pytest.fixture(scope="module")
def lib(tmp_path_factory) -> ctypes.CDLL:
    d = tmp_path_factory.mktemp("metal_emu")
    src, so = d / "kernels.cpp", d / "kernels.so"
    src.write_text(_source())
    cmd = [_compiler(), "-std=c++20", "-O1", "-shared", "-fPIC", "-pthread", "-Wall", "-Werror",
           "-Wno-unused-parameter", "-Wno-unused-variable", f"-I{EMU}", str(src), "-o", str(so)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-4000:]
    return ctypes.CDLL(str(so))


def random_blocks(qtype: str, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """Random bytes (every code, grid index and sign pattern can occur) with the super-block
    scales set to finite values of 1e-3..1e-2, (rows, row_bytes) uint8."""
    t = get_type(qtype)
    raw = rng.integers(0, 256, (rows * cols // t.block_size, t.type_size), dtype=np.uint8)
    n = raw.shape[0]
    fields = SCALE_FIELDS.get(qtype, [(0, "f16")])
    for off, kind in fields:
        d = rng.uniform(1e-3, 1e-2, n).astype(np.float32) * rng.choice([-1, 1], n)
        if kind == "f16":
            raw[:, off:off + 2] = d.astype("<f2").view(np.uint8).reshape(n, 2)
        elif kind == "f32":
            raw[:, off:off + 4] = d.astype("<f4").view(np.uint8).reshape(n, 4)
        else:  # IQ1_M: the f16 super-scale's 4 nibbles are the top nibbles of 4 u16 scale words
            bits = d.astype("<f2").view(np.uint16)
            sc = raw[:, off:off + 8].copy().view("<u2")                 # (n, 4)
            for k in range(4):
                sc[:, k] = (sc[:, k] & 0x0FFF) | (((bits >> (4 * k)) & 0xF) << 12)
            raw[:, off:off + 8] = sc.view(np.uint8)
    return raw.reshape(rows, -1)


def reference_values(qtype: str, raw: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """float64 (rows, cols): mlxquant's codec; Q8_K (no codec: ggml only uses it for
    activations) as ggml's dequantize_row_q8_K, d * q."""
    if qtype == "Q8_K":
        b = raw.reshape(-1, 292)
        d = b[:, 0:4].copy().view("<f4").astype(np.float64)
        q = b[:, 4:260].view(np.int8).astype(np.float64)
        return (d * q).reshape(rows, cols)
    return dequantize(raw, qtype, (rows, cols), backend="numpy").astype(np.float64)


def run(lib: ctypes.CDLL, qtype: str, body: str, raw: np.ndarray, x: np.ndarray) -> np.ndarray:
    rows, ntok, cols = raw.shape[0], x.shape[0], x.shape[1]
    _, grid, tg = metal.dispatch(rows, ntok, body)
    tab = metal.table(qtype)
    y = np.full((ntok, rows), np.nan, np.float32)
    ptr = lambda a: a.ctypes.data_as(ctypes.c_void_p)  # noqa: E731
    getattr(lib, f"run_{qtype}")(
        ctypes.c_int(0 if body == "mv" else 1), ptr(raw), ptr(x), ptr(tab), ptr(y), rows, cols, ntok,
        *(ctypes.c_uint(v) for v in (*grid, *tg)))
    return y


@pytest.mark.parametrize("qtype", metal.KERNEL_TYPES)
def test_kernels_match_dequantize_matmul(lib, qtype):
    rng = np.random.default_rng(sum(map(ord, qtype)))
    for rows, cols, ntok in SHAPES:
        if cols % get_type(qtype).block_size:
            continue
        raw = random_blocks(qtype, rows, cols, rng)
        w = reference_values(qtype, raw, rows, cols)
        assert np.isfinite(w).all()
        x = rng.standard_normal((ntok, cols)).astype(np.float32)
        ref = x.astype(np.float64) @ w.T                              # (ntok, rows)
        bound = 1e-5 * (np.abs(x).astype(np.float64) @ np.abs(w).T) + 1e-30
        for body in ("mv", "mm"):
            y = run(lib, qtype, body, raw, x)
            err = np.abs(y - ref) / bound
            assert np.isfinite(y).all(), f"{qtype} {body} {rows}x{cols}x{ntok}: output not written"
            assert err.max() <= 1.0, (f"{qtype} {body} {rows}x{cols}x{ntok}: error "
                                      f"{err.max():.3g} x 1e-5 relative")


def test_shapes_exercise_partial_threadgroups():
    """The shapes above leave threadgroups partial / tiles padded in every dimension."""
    flags = {"mv rows": False, "mv lanes": False, "mm rows": False, "mm tokens": False}
    for rows, cols, ntok in SHAPES:
        _, _, tg = metal.dispatch(rows, ntok, "mv")
        flags["mv rows"] |= rows % tg[1] != 0
        flags["mv lanes"] |= (cols // 16) % 32 != 0
        flags["mm rows"] |= rows % metal.MM_ROWS != 0
        flags["mm tokens"] |= ntok % metal.MM_TOKENS != 0
    assert all(flags.values()), flags


def test_emulated_simd_sum_is_lock_step(lib, tmp_path):
    """A reduction only sees the lanes that reached it: a kernel where odd lanes add 1 and even
    lanes 2 over a 48-thread threadgroup (a full and a half simdgroup) gives 48 and 24."""
    src = tmp_path / "t.cpp"
    src.write_text('#include "metal_emu.h"\n'
                   "float out[64];\n"
                   'extern "C" float* run() {\n'
                   "  emu::launch(uint3{48, 1, 1}, uint3{48, 1, 1}, [](const emu::Pos& p) {\n"
                   "    float v = (p.local.x % 2) ? 1.0f : 2.0f;\n"
                   "    float s = metal::simd_sum(v);\n"
                   "    float m = metal::simd_shuffle_down(float(p.local.x), 1u);\n"
                   "    metal::threadgroup_barrier(metal::mem_flags::mem_threadgroup);\n"
                   "    out[p.local.x] = s * 1000.0f + m;\n"
                   "  });\n  return out;\n}\n")
    so = tmp_path / "t.so"
    res = subprocess.run([_compiler(), "-std=c++20", "-shared", "-fPIC", "-pthread", f"-I{EMU}",
                          str(src), "-o", str(so)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    f = ctypes.CDLL(str(so)).run
    f.restype = ctypes.POINTER(ctypes.c_float)
    out = np.ctypeslib.as_array(f(), (64,))[:48]
    sums, shuffled = np.round(out / 1000), out - np.round(out / 1000) * 1000
    assert (sums[:32] == 48).all() and (sums[32:] == 24).all()
    lane = np.arange(48) % 32
    want = np.where((lane < 31) & (np.arange(48) + 1 < 48), np.arange(48) + 1, np.arange(48))
    assert np.array_equal(shuffled, want)
