"""Row dot products on integer dot instructions (AVX-512 VNNI's ``vpdpbusd``) with float32
activations kept exact to 21 bits: Q4_K and Q6_K (a Q4_K_M file's large matrices), Q5_K, Q3_K,
Q2_K, IQ4_XS, and the 32-weight Q4_0, Q4_1, Q5_0 (a Q4_K_M file's fallback for rows that are not
a multiple of 256), Q5_1, Q8_0 and IQ4_NL, two blocks (64 columns) at a time. IQ4's values come
from a byte shuffle of their 16-entry table.

Our float kernels (:mod:`.vdots`) turn every code into a float and multiply it: about 16 vector
operations per 64 weights, which holds one core to ~30 G weights/s (17 GB/s of Q4_K) where it
can read 46 GB/s (issue 16). ``vpdpbusd`` multiplies 64 unsigned bytes by 64 signed bytes and
adds each four products into 16 int32 lanes in one instruction. The codes are such unsigned
bytes; the activations are not, and llama.cpp rounds them to 8 bits (Q8_K), which issue 16 rules
out. So each group of 16 activations is written as ``x ≈ s·(a1·2^14 + a2·2^7 + a3)`` with
``a1, a2, a3`` signed bytes and ``s = max|x| / (127·2^14)`` (:func:`split_x`): every activation
keeps 21 bits below its group's largest: its rounding error is at most ``0.63·s`` (half a step
from rounding to an integer, an eighth from scaling in float32), under ``2^-21·max|x|`` (float32
keeps 24 bits of each product; the tests hold the results within 1e-5 of ``dequantize`` + a float32
product). A vector of 64 codes takes three ``vpdpbusd`` with a shift of 7 bits between them
(int32 cannot overflow: ``4·63·127·2^14 + ... < 2^31``), one conversion to float and one
multiply-add by its lanes' scales (the (sub-)block scale times ``s``): ~8 operations per 64
weights instead of ~16.

The activations come prepared once per product (:func:`split_x`): per block of 256 columns, the
three parts ``a1, a2, a3`` (256 bytes each, their 16-column groups in the order the type's code
vectors hold them: :data:`Q4_K_ORDER`), and the 16 scales ``s`` and 16 sums per 16 columns (float32;
the sums take the mins and Q6_K's code offset, as in :mod:`.vdots`). The sums are of the split
values, not of ``x``: the product is then ``Σ w·x̃`` exactly up to float rounding, its error
``Σ w·(x̃ - x)``; with the sums of ``x``, a min's term and the codes' term (each much larger than their
difference ``w``) carried the split's error apart, and a group holding a 1000x outlier gave 1.1e-5
of ``|x|·|w|`` where float32 gives 4.6e-6. Groups whose largest magnitude is infinite, NaN or
outside ``[2^-60, 2^60]`` (where ``s`` or the lane scales would leave float32's normal range) make
:func:`split_x` refuse, and the product is computed by the float kernel instead, so NaN and inf
propagate as they do there.

Only x86 CPUs with AVX-512 VNNI and BW take this path (:data:`AVAILABLE`); elsewhere (Apple
Silicon's NEON among them) the float kernels of :mod:`.vdots` remain. ``MLXQUANT_INT_DOTS=0``
turns it off (for comparisons).
"""

from __future__ import annotations

import os

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from .layout import KVALUES_FP4, KVALUES_IQ4NL
from .vdots import iq4_xs_scales, k4_scales, q2_k_scales, q3_k_scales
from .vir import F32, I8, I16, I32, I64, Block, call_intrinsic, isplat, ivec, row_dot, vec

SPLIT = 127 * 2 ** 14  # |a1·2^14 + a2·2^7 + a3| ≤ SPLIT
BLOCK = 256
X_STRIDE = 3 * BLOCK  # int8 parts per block
S_STRIDE = 2 * (BLOCK // 16)  # float32 scales and sums per block
PAIR = 64  # the 32-weight types are taken two blocks (64 columns) at a time: 64 code bytes


def _host_has_vnni() -> bool:
    """True when the CPU Numba compiles for has AVX-512 F, BW and VNNI: the host's features, or
    those ``NUMBA_CPU_FEATURES`` names (a ``NUMBA_CPU_NAME`` without features, e.g. ``generic``
    for portable caches, compiles for a CPU that may lack them: False)."""
    from numba.core import config

    feats = config.CPU_FEATURES
    if not feats and config.CPU_NAME:
        return False
    if not feats:
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
# IQ4_XS: 64 code bytes hold 4 sub-blocks of 32 columns, each sub-block's first 16 columns in its
# 16 bytes' low nibbles and its last 16 in the high ones
IQ4_XS_ORDER = np.array([0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15], np.int64)
Q4_K_SLOTS, Q6_K_SLOTS = np.argsort(Q4_K_ORDER), np.argsort(Q6_K_ORDER)  # group -> its place
IQ4_XS_SLOTS = np.argsort(IQ4_XS_ORDER)
# IQ4_NL's and IQ4_XS's 16 values plus 128 (unsigned bytes for vpdpbusd), four times: vpshufb
# looks a nibble up within each 16-byte lane
_IQ4_TABLE = [int(v) + 128 for v in KVALUES_IQ4NL] * 4
# MXFP4's (doubled) E2M1 values, -12..12, plus 12: the smallest offset keeps the cancelling group
# sums small (with 128, outlier activations lost 3e-5 of the product's scale)
FP4_OFFSET = 12
_FP4_TABLE = [int(v) + FP4_OFFSET for v in KVALUES_FP4] * 4


SMALL_BITS, LARGE_BITS = 0x21800000, 0x5D800000  # float32 2^-60 and 2^60 as bits


def _group_splitter(part_stride: int, sum_offset: int):
    """The intrinsic ``split(x, xq, xs, c0, q0, s0) -> bool`` of a layout whose parts are
    ``part_stride`` bytes apart and whose sums follow the scales by ``sum_offset``: it splits
    ``x[c0:c0 + 16]`` (see the module), parts at ``xq[q0]``, ``xq[q0 + part_stride]``, ``xq[q0 +
    2·part_stride]``, scale ``s`` at ``xs[s0]``, the sum of the values the parts hold (``s·Σ(a1·2^14 +
    a2·2^7 + a3)``) at ``xs[s0 + sum_offset]``; False when the group's largest magnitude (compared
    as the integer bits of ``|x|``: NaN above inf) is outside what the split takes."""

    @intrinsic
    def split_group(typingctx, x, xq, xs, c0, q0, s0):
        return _split_typing(part_stride, sum_offset, x, xq, xs, c0, q0, s0)

    return split_group


def _split_typing(part_stride, sum_offset, x, xq, xs, c0, q0, s0):
    if not all(isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C" for a in (x, xq, xs)):
        return None

    def codegen(context, builder, sig, args):
        b = builder
        xp, qp, sp = (context.make_array(t)(context, builder, v).data for t, v in zip(sig.args[:3], args[:3]))
        c0, q0, s0 = (context.cast(builder, v, t, types.int64) for v, t in zip(args[3:], sig.args[3:]))
        f16, i16 = vec(F32, 16), vec(I32, 16)

        def ptr(base, off, typ):
            return b.bitcast(b.gep(base, [off]), typ.as_pointer())

        v = b.load(ptr(xp, c0, f16), align=4)
        mag = b.bitcast(call_intrinsic(b, "llvm.fabs.v16f32", f16, [v]), i16)
        mb = call_intrinsic(b, "llvm.vector.reduce.umax.v16i32", I32, [mag])
        zero = b.icmp_unsigned("==", mb, ir.Constant(I32, 0))
        ok = b.and_(b.icmp_unsigned("<=", mb, ir.Constant(I32, LARGE_BITS)),
                    b.or_(zero, b.icmp_unsigned(">=", mb, ir.Constant(I32, SMALL_BITS))))
        m = b.bitcast(mb, F32)
        split = ir.Constant(F32, float(SPLIT))
        step = b.fdiv(m, split)
        b.store(step, b.gep(sp, [s0]), align=4)
        inv = b.select(zero, ir.Constant(F32, 0.0), b.fdiv(split, m))
        scaled = b.fmul(v, b.shuffle_vector(b.insert_element(ir.Constant(f16, ir.Undefined), inv,
                                                              ir.Constant(I32, 0)),
                                             ir.Constant(f16, ir.Undefined), isplat(0)))
        q = b.fptosi(call_intrinsic(b, "llvm.rint.v16f32", f16, [scaled]), i16)
        # the sum of the values the parts hold (not of x): the mins and offsets then cancel
        # against the same values the codes multiply, and the error stays Σ w·(x̃ - x)
        total = call_intrinsic(b, "llvm.vector.reduce.add.v16i32", I32, [q])
        b.store(b.fmul(step, b.sitofp(total, F32)), b.gep(sp, [b.add(s0, ir.Constant(I64, sum_offset))]),
                align=4)
        a3 = b.sub(b.and_(b.add(q, isplat(64)), isplat(127)), isplat(64))
        q = b.ashr(b.sub(q, a3), isplat(7))
        a2 = b.sub(b.and_(b.add(q, isplat(64)), isplat(127)), isplat(64))
        a1 = b.ashr(b.sub(q, a2), isplat(7))
        for k, part in enumerate((a1, a2, a3)):
            off = b.add(q0, ir.Constant(I64, k * part_stride))
            b.store(b.trunc(part, vec(I8, 16)), ptr(qp, off, vec(I8, 16)), align=1)
        return ok

    return types.boolean(x, xq, xs, c0, q0, s0), codegen


_split_group = _group_splitter(BLOCK, 16)  # the K-quants' 256-column blocks
_split_group64 = _group_splitter(PAIR, 4)  # two 32-weight blocks


@njit(nogil=True, cache=True, boundscheck=False, error_model="numpy")
def split_x(X, slots, XQ, XS):
    """Fill ``XQ`` (int8 ``(T, 3·cols)``) and ``XS`` (float32 ``(T, cols // 8)``) with the split
    activations of ``X`` (C-contiguous float32 ``(T, cols)``, ``cols`` a multiple of 256); the
    parts of a block hold its 16-column group ``g`` at place ``slots[g]`` (``XS`` in column
    order). False (the arrays partly written) when a group's largest magnitude is outside what
    the split takes. A group at a time in vector IR (:func:`_split_group`: 0.4 ns a column where
    the Numba loop took 2.5)."""
    T, cols = X.shape
    for t in range(T):
        x, xq, xs = X[t], XQ[t], XS[t]
        for g in range(cols // 16):
            blk, gi = g // 16, g % 16
            if not _split_group(x, xq, xs, 16 * g, X_STRIDE * blk + 16 * slots[gi], S_STRIDE * blk + gi):
                return False
    return True


@njit(nogil=True, cache=True, boundscheck=False, error_model="numpy")
def split_x64(X, XQ, XS):
    """:func:`split_x` for the 32-weight types, by 64 columns (``cols`` a multiple of 64): the
    parts of each 64 columns in column order (``XQ``: 192 bytes), their 4 scales then 4 sums
    (``XS``: 8 floats)."""
    T, cols = X.shape
    for t in range(T):
        x, xq, xs = X[t], XQ[t], XS[t]
        for g in range(cols // 16):
            blk, gi = g // 4, g % 4
            if not _split_group64(x, xq, xs, 16 * g, 3 * PAIR * blk + 16 * gi, 8 * blk + gi):
                return False
    return True


def _dpbusd(k: Block, acc, codes, parts):
    """``acc`` (16 i32) plus, per lane, the four products of unsigned ``codes`` by signed
    ``parts`` (``<64 x i8>`` each)."""
    return call_intrinsic(k.b, "llvm.x86.avx512.vpdpbusd.512", vec(I32, 16), [acc, codes, parts])


def _parts(k: Block, col: int, part: int, stride: int = BLOCK):
    """Split-activation part ``part`` (0: ``a1``) of columns ``col..col + 63`` as ``<64 x i8>``
    (parts ``stride`` bytes apart)."""
    return k.load(k.xb, part * stride + col, vec(I8, 64), 1)


def _codes_dot(k: Block, codes, col: int, stride: int = BLOCK):
    """``Σ codes·(a1·2^14 + a2·2^7 + a3)`` per 4 columns from ``col``: ``<16 x float>``."""
    b = k.b
    t = _dpbusd(k, isplat(0), codes, _parts(k, col, 0, stride))
    t = _dpbusd(k, b.shl(t, isplat(7)), codes, _parts(k, col, 1, stride))
    t = _dpbusd(k, b.shl(t, isplat(7)), codes, _parts(k, col, 2, stride))
    return k.tofloat(t)


def _lanes(scale16, k: Block, v: int, order=range(16)):
    """The per-16-column scales of the parts' 64-column vector ``v`` spread over its 16 lanes (4
    each); ``order``: the 16-column groups as the parts hold them."""
    return k.shuffle(scale16, [order[4 * v + lane // 4] for lane in range(16)])


def _bytes64(k: Block, off: int):
    return k.load(k.wb, off, vec(I8, 64), 1)


def _k4(k: Block, accs, qs: int, qh: int | None):
    """Q4_K (``qh`` None) and Q5_K: 64 code bytes at ``qs + 64h`` hold columns ``128h + 0..31``
    and ``+64..95`` in their low nibbles, ``+32..63`` and ``+96..127`` in the high ones (the
    parts in that order: :data:`Q4_K_ORDER`); sub-block ``j`` (32 columns) has scale and min
    ``j`` (:func:`k4_scales`); Q5_K's fifth bit of column ``l`` of sub-block ``j`` is bit ``j`` of
    ``qh[l]`` (32 bytes at ``qh``)."""
    b = k.b
    both = k4_scales(k)
    sx = k.load(k.sb, 0, vec(F32, 16), 4)
    sums = k.load(k.sb, 16, vec(F32, 16), 4)
    ls = k.fmul(k.shuffle(both, [g // 2 for g in range(16)]), sx)
    acc = list(accs[:2])
    order = [int(g) for g in Q4_K_ORDER]
    fifteen = isplat(15, 64, I8)
    if qh is not None:  # qh twice, as 16-bit words: one shift a half moves a bit of each byte
        h32 = k.load(k.wb, qh, vec(I8, 32), 1)
        hw = b.bitcast(b.shuffle_vector(h32, h32, ivec(list(range(32)) * 2)), vec(I16, 32))
    for h in range(2):
        q = _bytes64(k, qs + 64 * h)
        for n, codes in enumerate((b.and_(q, fifteen), b.and_(b.lshr(q, isplat(4, 64, I8)), fifteen))):
            v = 2 * h + n
            if qh is not None:  # sub-blocks 4h + n (first 32 lanes) and 4h + n + 2 (last 32)
                j = 4 * h + n
                bit = b.and_(b.lshr(hw, ivec([j] * 16 + [j + 2] * 16, I16)), isplat(0x0101, 32, I16))
                codes = b.or_(codes, b.bitcast(b.shl(bit, isplat(4, 32, I16)), vec(I8, 64)))
            acc[n] = k.fma(_lanes(ls, k, v, order), _codes_dot(k, codes, 64 * v), acc[n])
    return acc + [k.fsub(accs[2], k.fmul(k.shuffle(both, [8 + g // 2 for g in range(16)]), sums))]


def _q4_k(k: Block, accs):
    return _k4(k, accs, 16, None)


def _q5_k(k: Block, accs):
    return _k4(k, accs, 48, 16)


def _q6_k(k: Block, accs):
    """Q6_K: half ``n`` (128 columns) has low bits ``ql[64n..]``, high bits ``qh[32n..]``;
    columns ``128n + 0..63`` take the low nibbles, ``128n + 64..127`` the high ones; ``scales[c //
    16]`` (int8), ``d`` at 208; codes minus 32."""
    b = k.b
    d = k.half(208)
    sc = k.fmul(k.splat(d), k.tofloat(k.sbytes(192, 16)))
    sx = k.load(k.sb, 0, vec(F32, 16), 4)
    sums = k.load(k.sb, 16, vec(F32, 16), 4)
    ls = k.fmul(sc, sx)
    acc = list(accs[:2])
    for n in range(2):
        ql = _bytes64(k, 64 * n)
        qh = k.load(k.wb, 128 + 32 * n, vec(I8, 32), 1)
        hh = b.shuffle_vector(qh, b.lshr(qh, isplat(2, 32, I8)), ivec(range(64)))
        lo = b.or_(b.and_(ql, isplat(15, 64, I8)), b.shl(b.and_(hh, isplat(3, 64, I8)), isplat(4, 64, I8)))
        hi = b.or_(b.lshr(ql, isplat(4, 64, I8)), b.and_(hh, isplat(48, 64, I8)))
        for h, codes in enumerate((lo, hi)):
            v = 2 * n + h
            t = _codes_dot(k, codes, 64 * v)
            acc[h] = k.fma(_lanes(ls, k, v), t, acc[h])
    return acc + [k.fsub(accs[2], k.fmul(k.fmul(sc, sums), k.splat(ir.Constant(F32, 32.0))))]


def _iq4_codes(k: Block, nibbles, values=_IQ4_TABLE):
    """IQ4's values of 64 nibbles (``<64 x i8>``, 0-15) plus 128, by a byte shuffle (``values``:
    another type's 16 values plus its offset, four times)."""
    table = ir.Constant(vec(I8, 64), [ir.Constant(I8, v) for v in values])
    return call_intrinsic(k.b, "llvm.x86.avx512.pshuf.b.512", vec(I8, 64), [table, nibbles])


def _iq4_xs(k: Block, accs):
    """IQ4_XS: ``d`` at 0, 8 sub-blocks of 32 columns with 6-bit scales minus 32 (low 4 bits in
    bytes 4..7, high 2 in the uint16 at 2), codes from byte 8 (:data:`IQ4_XS_ORDER`), values
    ``kvalues_iq4nl`` (plus 128 here, taken back with the group sums)."""
    b = k.b
    sc = k.shuffle(iq4_xs_scales(k), [g // 2 for g in range(16)])  # per 16 columns, in column order
    ls = k.fmul(sc, k.load(k.sb, 0, vec(F32, 16), 4))
    sums = k.load(k.sb, 16, vec(F32, 16), 4)
    order = [int(g) for g in IQ4_XS_ORDER]
    acc = list(accs[:2])
    for h in range(2):
        q = _bytes64(k, 8 + 64 * h)
        for n, nib in enumerate((b.and_(q, isplat(15, 64, I8)), b.lshr(q, isplat(4, 64, I8)))):
            v = 2 * h + n
            acc[n] = k.fma(_lanes(ls, k, v, order), _codes_dot(k, _iq4_codes(k, nib), 64 * v), acc[n])
    return acc + [k.fsub(accs[2], k.fmul(k.fmul(sc, sums), k.splat(ir.Constant(F32, 128.0))))]


def _two_bit(k: Block, accs, scale, qs: int, hmask: int | None):
    """Q2_K (``hmask`` None) and Q3_K: half ``n`` (128 columns) is 32 code bytes at ``qs + 32n``,
    2-bit field ``j`` of byte ``l`` column ``128n + 32j + l``, so two fields of the 32 bytes are
    64 columns in order; Q3_K's third bit (set: the code as is; clear: minus 4) is bit ``4n + j``
    of ``hmask[l]``, made here the unsigned code ``field + 4·bit`` (offset 4). ``scale``: per 16
    columns (lane ``i``: columns ``16i..``). Returns the two code accumulators."""
    b = k.b
    ls = k.fmul(scale, k.load(k.sb, 0, vec(F32, 16), 4))
    three = isplat(3, 32, I8)
    hm = None if hmask is None else k.load(k.wb, hmask, vec(I8, 32), 1)
    acc = list(accs[:2])
    for n in range(2):
        q = k.load(k.wb, qs + 32 * n, vec(I8, 32), 1)
        for jj in range(2):
            j = 2 * jj
            first = b.and_(b.lshr(q, isplat(2 * j, 32, I8)), three)
            second = b.and_(b.lshr(q, isplat(2 * j + 2, 32, I8)), three)
            codes = b.shuffle_vector(first, second, ivec(range(64)))
            if hm is not None:
                bits = b.shuffle_vector(b.and_(hm, isplat(1 << (4 * n + j), 32, I8)),
                                        b.and_(hm, isplat(1 << (4 * n + j + 1), 32, I8)), ivec(range(64)))
                codes = b.or_(codes, b.select(b.icmp_unsigned("!=", bits, isplat(0, 64, I8)),
                                              isplat(4, 64, I8), isplat(0, 64, I8)))
            v = 2 * n + jj
            acc[jj] = k.fma(_lanes(ls, k, v), _codes_dot(k, codes, 64 * v), acc[jj])
    return acc


def _q2_k(k: Block, accs):
    """Q2_K: codes 0..3 times 4-bit scales, minus 4-bit mins times the group sums."""
    scale, mins = q2_k_scales(k)
    sums = k.load(k.sb, 16, vec(F32, 16), 4)
    return _two_bit(k, accs, scale, 16, None) + [k.fsub(accs[2], k.fmul(mins, sums))]


def _q3_k(k: Block, accs):
    """Q3_K: codes -4..3 (unsigned here: plus 4, taken back with the group sums) times 6-bit
    scales."""
    scale = q3_k_scales(k)
    sums = k.load(k.sb, 16, vec(F32, 16), 4)
    return _two_bit(k, accs, scale, 32, 0) + [
        k.fsub(accs[2], k.fmul(k.fmul(scale, sums), k.splat(ir.Constant(F32, 4.0))))]


rowdot_q4_k = row_dot(256, 144, (16, 16, 16), _q4_k, unroll=1, x_stride=X_STRIDE, s_stride=S_STRIDE)
rowdot_q5_k = row_dot(256, 176, (16, 16, 16), _q5_k, unroll=1, x_stride=X_STRIDE, s_stride=S_STRIDE)
rowdot_q6_k = row_dot(256, 210, (16, 16, 16), _q6_k, unroll=1, x_stride=X_STRIDE, s_stride=S_STRIDE)
rowdot_iq4_xs = row_dot(256, 136, (16, 16, 16), _iq4_xs, unroll=1, x_stride=X_STRIDE, s_stride=S_STRIDE)
rowdot_q2_k = row_dot(256, 84, (16, 16, 16), _q2_k, unroll=1, x_stride=X_STRIDE, s_stride=S_STRIDE)
rowdot_q3_k = row_dot(256, 110, (16, 16, 16), _q3_k, unroll=1, x_stride=X_STRIDE, s_stride=S_STRIDE)


def _pair32(k: Block, accs, codes, d0, d1, offset: int, m0=None, m1=None):
    """Two 32-weight blocks (scales ``d0``, ``d1``; ``codes`` <64 x i8>, unsigned: the stored code
    plus ``offset``): ``accs[0]`` (16 lanes) += the codes' dot products by their lane scales,
    ``accs[1]`` (4 lanes, one per 16 columns) -= ``offset·d·(sum of the group's split values)``,
    or, for the types with a min (``m0``, ``m1``: Q4_1, Q5_1, codes without offset), += the min
    times that sum."""
    b = k.b
    sx = k.load(k.sb, 0, vec(F32, 4), 4)
    sums = k.load(k.sb, 4, vec(F32, 4), 4)
    dd = b.shuffle_vector(k.splat(d0, 4), k.splat(d1, 4), ivec([0, 0, 4, 4]))  # per 16 columns
    ls = k.shuffle(k.fmul(dd, sx), [g // 4 for g in range(16)])
    acc = k.fma(ls, _codes_dot(k, codes, 0, PAIR), accs[0])
    if m0 is not None:
        return [acc, k.fma(b.shuffle_vector(k.splat(m0, 4), k.splat(m1, 4), ivec([0, 0, 4, 4])), sums, accs[1])]
    return [acc, k.fsub(accs[1], k.fmul(k.fmul(dd, sums), k.splat(ir.Constant(F32, float(offset)), 4)))]


def _nibbles64(k: Block, off0: int, off1: int):
    """The 16 code bytes of two blocks (at ``off0``, ``off1``) as 64 codes in column order: each
    block's low nibbles (its columns 0-15), then its high ones (16-31)."""
    b = k.b
    q = b.shuffle_vector(k.load(k.wb, off0, vec(I8, 16), 1), k.load(k.wb, off1, vec(I8, 16), 1), ivec(range(32)))
    lo, hi = b.and_(q, isplat(15, 32, I8)), b.lshr(q, isplat(4, 32, I8))
    return b.shuffle_vector(lo, hi, ivec([*range(16), *range(32, 48), *range(16, 32), *range(48, 64)]))


def _q8_0_pair(k: Block, accs):
    """Q8_0, two blocks of 34 bytes: ``d`` then 32 signed codes (offset 128 makes them unsigned)."""
    b = k.b
    c = b.shuffle_vector(k.load(k.wb, 2, vec(I8, 32), 1), k.load(k.wb, 36, vec(I8, 32), 1), ivec(range(64)))
    return _pair32(k, accs, b.xor(c, isplat(-128, 64, I8)), k.half(0), k.half(34), 128)


def _q4_0_pair(k: Block, accs):
    """Q4_0, two blocks of 18 bytes: ``d`` then 16 bytes of nibbles (codes 0-15 for -8..7)."""
    return _pair32(k, accs, _nibbles64(k, 2, 20), k.half(0), k.half(18), 8)


def _iq4_nl_pair(k: Block, accs):
    """IQ4_NL, two blocks of 18 bytes: ``d`` then 16 bytes of nibbles indexing ``kvalues_iq4nl``."""
    return _pair32(k, accs, _iq4_codes(k, _nibbles64(k, 2, 20)), k.half(0), k.half(18), 128)


def _e8m0_half(k: Block, off: int):
    """ggml_e8m0_to_fp32_half of the byte at ``off``: 2^(e - 128) as float32, by its bits
    (``0x00200000 << e`` for the subnormals e < 2, else ``(e - 1) << 23``)."""
    b = k.b
    e = b.zext(k.load(k.wb, off, I8, 1), I32)
    bits = b.select(b.icmp_unsigned("<", e, ir.Constant(I32, 2)), b.shl(ir.Constant(I32, 0x00200000), e),
                    b.shl(b.sub(e, ir.Constant(I32, 1)), ir.Constant(I32, 23)))
    return b.bitcast(bits, F32)


def _mxfp4_pair(k: Block, accs):
    """MXFP4, two blocks of 17 bytes: an E8M0 exponent, then 16 bytes of nibbles indexing
    ``kvalues_mxfp4`` (E2M1 values doubled; the scale is half the exponent's power of two)."""
    codes = _iq4_codes(k, _nibbles64(k, 1, 18), _FP4_TABLE)
    return _pair32(k, accs, codes, _e8m0_half(k, 0), _e8m0_half(k, 17), FP4_OFFSET)


def _five_bits64(k: Block, qh0: int, qs0: int, size: int):
    """Q5_0/Q5_1's 64 codes (0-31) of two blocks of ``size`` bytes: nibbles at ``qs0`` (and
    ``qs0 + size``), the 5th bit of column j in bit j of the uint32 at ``qh0``."""
    b = k.b
    # byte j // 8 of each block's qh in lane j, tested against bit j % 8: 16 where it is set
    qh = b.shuffle_vector(k.load(k.wb, qh0, vec(I8, 4), 1), k.load(k.wb, qh0 + size, vec(I8, 4), 1),
                          ivec([j // 8 for j in range(32)] + [4 + j // 8 for j in range(32)]))
    set_ = b.icmp_unsigned("!=", b.and_(qh, ivec([1 << (j % 8) for j in range(32)] * 2, I8)), isplat(0, 64, I8))
    fifth = b.select(set_, isplat(16, 64, I8), isplat(0, 64, I8))
    return b.or_(_nibbles64(k, qs0, qs0 + size), fifth)


def _q5_0_pair(k: Block, accs):
    """Q5_0, two blocks of 22 bytes: ``d``, ``qh`` (bit j: the 5th bit of column j), 16 bytes of
    nibbles (codes 0-31 for -16..15)."""
    return _pair32(k, accs, _five_bits64(k, 2, 6, 22), k.half(0), k.half(22), 16)


def _q4_1_pair(k: Block, accs):
    """Q4_1, two blocks of 20 bytes: ``d``, ``m``, 16 bytes of nibbles (value ``d·q + m``)."""
    return _pair32(k, accs, _nibbles64(k, 4, 24), k.half(0), k.half(20), 0, k.half(2), k.half(22))


def _q5_1_pair(k: Block, accs):
    """Q5_1, two blocks of 24 bytes: ``d``, ``m``, ``qh``, 16 bytes of nibbles."""
    return _pair32(k, accs, _five_bits64(k, 4, 8, 24), k.half(0), k.half(24), 0, k.half(2), k.half(26))


PAIR_X_STRIDE, PAIR_S_STRIDE = 3 * PAIR, 8
rowdot_q8_0 = row_dot(PAIR, 68, (16, 4), _q8_0_pair, x_stride=PAIR_X_STRIDE, s_stride=PAIR_S_STRIDE)
rowdot_q4_0 = row_dot(PAIR, 36, (16, 4), _q4_0_pair, x_stride=PAIR_X_STRIDE, s_stride=PAIR_S_STRIDE)
rowdot_q5_0 = row_dot(PAIR, 44, (16, 4), _q5_0_pair, x_stride=PAIR_X_STRIDE, s_stride=PAIR_S_STRIDE)
rowdot_iq4_nl = row_dot(PAIR, 36, (16, 4), _iq4_nl_pair, x_stride=PAIR_X_STRIDE, s_stride=PAIR_S_STRIDE)
rowdot_q4_1 = row_dot(PAIR, 40, (16, 4), _q4_1_pair, x_stride=PAIR_X_STRIDE, s_stride=PAIR_S_STRIDE)
rowdot_q5_1 = row_dot(PAIR, 48, (16, 4), _q5_1_pair, x_stride=PAIR_X_STRIDE, s_stride=PAIR_S_STRIDE)
rowdot_mxfp4 = row_dot(PAIR, 34, (16, 4), _mxfp4_pair, x_stride=PAIR_X_STRIDE, s_stride=PAIR_S_STRIDE)
