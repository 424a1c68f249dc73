"""Row dot products on integer dot instructions (AVX-512 VNNI's ``vpdpbusd``) with float32
activations kept exact to 21 bits: Q4_K and Q6_K, the types of a Q4_K_M file's large matrices.

Our float kernels (:mod:`.vdots`) turn every code into a float and multiply it: about 16 vector
operations per 64 weights, which holds one core to ~30 G weights/s (17 GB/s of Q4_K) where it
can read 46 GB/s (issue 16). ``vpdpbusd`` multiplies 64 unsigned bytes by 64 signed bytes and
adds each four products into 16 int32 lanes in one instruction. The codes are such unsigned
bytes; the activations are not, and llama.cpp rounds them to 8 bits (Q8_K), which issue 16 rules
out. So each group of 16 activations is written as ``x ≈ s·(a1·2^14 + a2·2^7 + a3)`` with
``a1, a2, a3`` signed bytes and ``s = max|x| / (127·2^14)`` (:func:`split_x`): every activation
keeps 21 bits below its group's largest, its rounding error is ``≤ 2^-22·max|x|`` (float32
keeps 24 bits of each product; the tests hold the results within 1e-5 of ``dequantize`` + a float32
product). A vector of 64 codes takes three ``vpdpbusd`` with a shift of 7 bits between them
(int32 cannot overflow: ``4·63·127·2^14 + ... < 2^31``), one conversion to float and one
multiply-add by its lanes' scales (the (sub-)block scale times ``s``): ~8 operations per 64
weights instead of ~16.

The activations come prepared once per product (:func:`split_x`): per block of 256 columns, the
three parts ``a1, a2, a3`` (256 bytes each, in column order), and the 16 scales ``s`` and 16 sums
per 16 columns (float32; the sums take the mins and Q6_K's code offset, as in :mod:`.vdots`).
Groups whose largest magnitude is infinite, NaN or outside ``[2^-60, 2^60]`` (where ``s`` or the
lane scales would leave float32's normal range) make :func:`split_x` refuse, and the product is
computed by the float kernel instead, so NaN and inf propagate as they do there.

Only x86 CPUs with AVX-512 VNNI and BW take this path (:data:`AVAILABLE`); elsewhere (Apple
Silicon's NEON among them) the float kernels of :mod:`.vdots` remain. ``MLXQUANT_INT_DOTS=0``
turns it off (for comparisons).
"""

from __future__ import annotations

import os

import numpy as np
from llvmlite import ir
from numba import njit

from .vdots import k4_scales
from .vir import I8, I16, I32, Block, isplat, ivec, row_dot, vec

SPLIT = 127 * 2 ** 14  # |a1·2^14 + a2·2^7 + a3| ≤ SPLIT
SMALL, LARGE = 2.0 ** -60, 2.0 ** 60  # the group maxima the split takes
BLOCK = 256
X_STRIDE = 3 * BLOCK  # int8 parts per block
S_STRIDE = 2 * (BLOCK // 16)  # float32 scales and sums per block


def _host_has_vnni() -> bool:
    from numba.core import config

    feats = config.CPU_FEATURES
    if feats is None or feats == "":
        import llvmlite.binding as ll

        try:
            feats = ll.get_host_cpu_features().flatten()
        except RuntimeError:
            return False
    have = {f[1:] for f in feats.split(",") if f.startswith("+")}
    return {"avx512vnni", "avx512bw", "avx512f"} <= have


AVAILABLE = _host_has_vnni() and os.environ.get("MLXQUANT_INT_DOTS", "1") != "0"


# The order of a block's 16-column groups in the parts, per type: Q4_K's 64 code bytes at a time
# hold columns 0-31 and 64-95 of 128 in their low nibbles, 32-63 and 96-127 in the high ones.
Q4_K_ORDER = np.array([0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15], np.int64)
Q6_K_ORDER = np.arange(16, dtype=np.int64)
Q4_K_SLOTS, Q6_K_SLOTS = np.argsort(Q4_K_ORDER), np.argsort(Q6_K_ORDER)  # group -> its place


@njit(nogil=True, cache=True, boundscheck=False, error_model="numpy")
def split_x(X, slots, XQ, XS):
    """Fill ``XQ`` (int8 ``(T, 3·cols)``) and ``XS`` (float32 ``(T, cols // 8)``) with the split
    activations of ``X`` (float32 ``(T, cols)``, ``cols`` a multiple of 256); the parts of a block
    hold its 16-column group ``g`` at place ``slots[g]`` (``XS`` in column order). False (the arrays partly
    written) when a group's largest magnitude is outside what the split takes."""
    T, cols = X.shape
    for t in range(T):
        for g in range(cols // 16):
            c0 = 16 * g
            m = np.float32(0)
            s = np.float32(0)
            for j in range(16):
                v = X[t, c0 + j]
                s += v
                a = abs(v)
                if not a <= m:  # also NaN
                    m = a
            if m != 0 and not (SMALL <= m <= LARGE):
                return False
            blk, gi = g // 16, g % 16
            XS[t, S_STRIDE * blk + gi] = m / np.float32(SPLIT)
            XS[t, S_STRIDE * blk + 16 + gi] = s
            inv = float(SPLIT) / float(m) if m != 0 else 0.0
            base = X_STRIDE * blk + 16 * slots[gi]
            for j in range(16):
                q = np.int32(np.rint(float(X[t, c0 + j]) * inv))
                a3 = ((q + 64) & 127) - 64
                q = (q - a3) >> 7
                a2 = ((q + 64) & 127) - 64
                XQ[t, base + j] = (q - a2) >> 7
                XQ[t, base + BLOCK + j] = a2
                XQ[t, base + 2 * BLOCK + j] = a3
    return True


def _dpbusd(k: Block, acc, codes, parts):
    """``acc`` (16 i32) plus, per lane, the four products of unsigned ``codes`` by signed
    ``parts`` (``<64 x i8>`` each)."""
    mod = k.b.module
    name = "llvm.x86.avx512.vpdpbusd.512"
    v16, v64 = vec(I32, 16), vec(I8, 64)
    fn = mod.globals.get(name) or ir.Function(mod, ir.FunctionType(v16, [v16, v64, v64]), name)
    return k.b.call(fn, [acc, codes, parts])


def _parts(k: Block, col: int, part: int):
    """Split-activation part ``part`` (0: ``a1``) of columns ``col..col + 63`` as ``<64 x i8>``."""
    return k._load(k.xb, part * BLOCK + col, vec(I8, 64), 1)


def _codes_dot(k: Block, codes, col: int):
    """``Σ codes·(a1·2^14 + a2·2^7 + a3)`` per 4 columns from ``col``: ``<16 x float>``."""
    b = k.b
    t = _dpbusd(k, isplat(0), codes, _parts(k, col, 0))
    t = _dpbusd(k, b.shl(t, isplat(7)), codes, _parts(k, col, 1))
    t = _dpbusd(k, b.shl(t, isplat(7)), codes, _parts(k, col, 2))
    return k.tofloat(t)


def _lanes(scale16, k: Block, v: int, order=range(16)):
    """The per-16-column scales of the parts' 64-column vector ``v`` spread over its 16 lanes (4
    each); ``order``: the 16-column groups as the parts hold them."""
    return k.shuffle(scale16, [order[4 * v + lane // 4] for lane in range(16)])


def _bytes64(k: Block, off: int):
    return k._load(k.wb, off, vec(I8, 64), 1)


def _q4_k(k: Block, accs):
    """Q4_K: 64 code bytes at ``16 + 64h`` hold columns ``128h + 0..31`` and ``+64..95`` in their
    low nibbles, ``+32..63`` and ``+96..127`` in the high ones (the parts in that order:
    :data:`Q4_K_ORDER`); sub-block ``j`` (32 columns) has scale and min ``j`` (:func:`k4_scales`)."""
    b = k.b
    both = k4_scales(k)
    sx = k._load(k.sb, 0, vec(ir.FloatType(), 16), 4)
    sums = k._load(k.sb, 16, vec(ir.FloatType(), 16), 4)
    ls = k.fmul(k.shuffle(both, [g // 2 for g in range(16)]), sx)
    acc = list(accs[:2])
    order = [int(g) for g in Q4_K_ORDER]
    fifteen = isplat(15, 64, I8)
    for h in range(2):
        q = _bytes64(k, 16 + 64 * h)
        for n, codes in enumerate((b.and_(q, fifteen), b.and_(b.lshr(q, isplat(4, 64, I8)), fifteen))):
            v = 2 * h + n
            acc[n] = k.fma(_lanes(ls, k, v, order), _codes_dot(k, codes, 64 * v), acc[n])
    return acc + [k.fsub(accs[2], k.fmul(k.shuffle(both, [8 + g // 2 for g in range(16)]), sums))]


def _q6_k(k: Block, accs):
    """Q6_K: half ``n`` (128 columns) has low bits ``ql[64n..]``, high bits ``qh[32n..]``;
    columns ``128n + 0..63`` take the low nibbles, ``128n + 64..127`` the high ones; ``scales[c //
    16]`` (int8), ``d`` at 208; codes minus 32."""
    b = k.b
    d = k.half(208)
    sc = k.fmul(k.splat(d), k.tofloat(k.sbytes(192, 16)))
    sx = k._load(k.sb, 0, vec(ir.FloatType(), 16), 4)
    sums = k._load(k.sb, 16, vec(ir.FloatType(), 16), 4)
    ls = k.fmul(sc, sx)
    acc = list(accs[:2])
    for n in range(2):
        ql = _bytes64(k, 64 * n)
        qh = k._load(k.wb, 128 + 32 * n, vec(I8, 32), 1)
        hh = b.shuffle_vector(qh, b.lshr(qh, isplat(2, 32, I8)), ivec(range(64)))
        lo = b.or_(b.and_(ql, isplat(15, 64, I8)), b.shl(b.and_(hh, isplat(3, 64, I8)), isplat(4, 64, I8)))
        hi = b.or_(b.lshr(ql, isplat(4, 64, I8)), b.and_(hh, isplat(48, 64, I8)))
        for h, codes in enumerate((lo, hi)):
            v = 2 * n + h
            t = _codes_dot(k, codes, 64 * v)
            acc[h] = k.fma(_lanes(ls, k, v), t, acc[h])
    return acc + [k.fsub(accs[2], k.fmul(k.fmul(sc, sums), k.splat(ir.Constant(ir.FloatType(), 32.0))))]


rowdot_q4_k = row_dot(256, 144, (16, 16, 16), _q4_k, unroll=1, x_stride=X_STRIDE, s_stride=S_STRIDE)
rowdot_q6_k = row_dot(256, 210, (16, 16, 16), _q6_k, unroll=1, x_stride=X_STRIDE, s_stride=S_STRIDE)
