"""Row dot products of the decode kernels' main types in LLVM vector IR (:mod:`.vir`): F32, F16,
BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and IQ4_XS, the types
llama.cpp's presets write.

Each ``rowdot_<type>(w, x, xs, nb)`` is ``Σ w·x`` over one row of ``nb`` blocks (see
:func:`.vir.row_dot`). The bodies below unpack a block's codes in 16 lanes of 32-bit integers
(in ggml's ``dequantize_row_*`` order: see
:mod:`.layout`), convert them to float, multiply by the activations and add the product, scaled
by the (sub-)block's scale, into the row's accumulators (two vectors' products summed before the
scale is applied: 5-13% faster than scaling each). Additive mins are taken through the
activation sums (``Σ (q·d + m)·x = d·Σ q·x + m·Σ x``); Q6_K's code offset too
(``Σ (q - 32)·s·x = Σ q·s·x - 32·Σ s·Σx`` per 16 weights). Against the Numba loops of
:mod:`.dots` / :mod:`.kdots`, one thread, rows of 576 (SmolLM2) and 4096 weights held in cache:
Q8_0 3.5x and 1.4x, Q5_0 1.7x and 1.9x (``benchmarks/kernels.py`` measures the rest).
"""

from __future__ import annotations

from llvmlite import ir

from .layout import IQ4NL_POLY
from .vir import F32, I8, I32, Block, fsplat, isplat, ivec, row_dot, vec

# Q5_0/Q5_1: bit j of qh is the 5th bit of weight j; rotating qh left by (4 - j) puts it at bit 4
ROT_LO = [4 - j for j in range(16)]
ROT_HI = [4 - j for j in range(16, 32)]


def _nibbles(k: Block, off: int):
    """The 16 bytes at ``off``: (low nibbles, high nibbles) as i32 vectors (weights 0-15, 16-31)."""
    q = k.bytes(off, 16)
    return k.b.and_(q, isplat(15)), k.b.lshr(q, isplat(4))


def _add5th(k: Block, lo, hi, qh_off: int):
    """Q5's codes: the nibbles with their 5th bits from the uint32 at ``qh_off``."""
    b = k.b
    qh = k.splat(k.u32(qh_off))
    sixteen = isplat(16)
    lo = b.or_(lo, b.and_(k.rotl(qh, ROT_LO), sixteen))
    hi = b.or_(hi, b.and_(k.rotl(qh, ROT_HI), sixteen))
    return lo, hi


def _pair(k: Block, d, lo, hi, accs):
    """accs[0] += d·(lo·x[0:16] + hi·x[16:32]) for a 32-weight block's codes (the scale once per
    two vectors: 5 float ops per 32 weights, not 6)."""
    t = k.fma(k.tofloat(hi), k.x(16), k.fmul(k.tofloat(lo), k.x(0)))
    return [k.fma(k.splat(d), t, accs[0])]


def _q4_0(k: Block, accs):
    lo, hi = _nibbles(k, 2)
    eight = isplat(8)
    return _pair(k, k.half(0), k.b.sub(lo, eight), k.b.sub(hi, eight), accs)


def _q4_1(k: Block, accs):
    lo, hi = _nibbles(k, 4)
    return _pair(k, k.half(0), lo, hi, accs) + [k.fma(k.half(2), k.xsum(0), accs[1])]


def _q5_0(k: Block, accs):
    lo, hi = _add5th(k, *_nibbles(k, 6), 2)
    sixteen = isplat(16)
    return _pair(k, k.half(0), k.b.sub(lo, sixteen), k.b.sub(hi, sixteen), accs)


def _q5_1(k: Block, accs):
    lo, hi = _add5th(k, *_nibbles(k, 8), 4)
    return _pair(k, k.half(0), lo, hi, accs) + [k.fma(k.half(2), k.xsum(0), accs[1])]


def _q8_0(k: Block, accs):
    return _pair(k, k.half(0), k.sbytes(2, 16), k.sbytes(18, 16), accs)


def _f32(k: Block, accs):
    """A float32 row (viewed as bytes), 32 weights a block: what BLAS's sgemv does for a decode
    step, in the same launch and thread pool as the quantized kernels."""
    return [k.fma(k.floats(0), k.x(0), accs[0]), k.fma(k.floats(64), k.x(16), accs[1])]


def _f16(k: Block, accs):
    """A float16 row, 32 weights (64 bytes) a block."""
    return [k.fma(k.halves(0), k.x(0), accs[0]), k.fma(k.halves(32), k.x(16), accs[1])]


def _bf16(k: Block, accs):
    """A bfloat16 row, 32 weights (64 bytes) a block."""
    return [k.fma(k.bfloats(0), k.x(0), accs[0]), k.fma(k.bfloats(32), k.x(16), accs[1])]


def _iq4(k: Block, q):
    """``kvalues_iq4nl[q]`` for i32 codes 0..15, as float: the rounded polynomial of
    :func:`.layout.iq4nl_value` (6 vector ops where a table is a gather)."""
    t = k.fsub(k.tofloat(q), fsplat(7.5))
    c4, c3, c2, c1, c0 = (float(c) for c in IQ4NL_POLY)
    v = k.fma(fsplat(c4), t, fsplat(c3))
    for c in (c2, c1, c0):
        v = k.fma(v, t, fsplat(c))
    return k.rint(v)


def _iq4_pair(k: Block, off: int, col: int):
    """``Σ value·x`` over the 32 weights of the 16 code bytes at ``off`` (low nibbles weights 0-15,
    high 16-31) against ``x[col:col + 32]``, as a vector."""
    lo, hi = _nibbles(k, off)
    return k.fma(_iq4(k, hi), k.x(col + 16), k.fmul(_iq4(k, lo), k.x(col)))


def _iq4_nl(k: Block, accs):
    return [k.fma(k.splat(k.half(0)), _iq4_pair(k, 2, 0), accs[0])]


def iq4_xs_scales(k: Block):
    """IQ4_XS's 8 sub-block scales (6 bits minus 32: low 4 bits in bytes 4..7, high 2 in the
    uint16 at 2) times ``d``: ``<8 x float>``, sub-block ``i`` (columns ``32i..``) in lane ``i``."""
    b = k.b
    low = b.lshr(k.shuffle(k.bytes(4, 4), [0, 0, 1, 1, 2, 2, 3, 3]), ivec([0, 4] * 4))
    high = b.lshr(k.splat(k.u16(2), 8), ivec(range(0, 16, 2)))
    six = b.or_(b.and_(low, isplat(15, 8)), b.shl(b.and_(high, isplat(3, 8)), isplat(4, 8)))
    return k.fmul(k.splat(k.half(0), 8), k.tofloat(b.sub(six, isplat(32, 8))))


def _iq4_xs(k: Block, accs):
    """IQ4_XS: 8 sub-blocks of 32, 6-bit scales (:func:`iq4_xs_scales`)."""
    scale = iq4_xs_scales(k)
    acc = list(accs)
    for i in range(8):
        acc[i % 2] = k.fma(k.splat(k.lane(scale, i)), _iq4_pair(k, 8 + 16 * i, 32 * i), acc[i % 2])
    return acc


def k4_scales(k: Block):
    """Q4_K/Q5_K's 8 sub-block scales and 8 mins (6 bits each, ggml's ``get_scale_min_k4``) times
    ``d`` and ``dmin``: one ``<16 x float>``, scales in lanes 0-7, mins in 8-15. Decoded in bytes
    (two byte shuffles, a few masks: about half the operations of decoding in 32-bit lanes)."""
    b = k.b
    i8x16 = vec(I8, 16)
    s = k.load(k.wb, 4, i8x16, 1)  # bytes 4..19: the 12 scale bytes (and 4 code bytes, unused)
    # scale j < 4: s[j] & 63; j >= 4: (s[j+4] & 15) | (s[j-4] >> 6) << 4
    # min j < 4: s[j+4] & 63; j >= 4: (s[j+4] >> 4) | (s[j] >> 6) << 4
    low = b.shuffle_vector(s, b.lshr(s, isplat(4, 16, I8)),
                           ivec([0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 24, 25, 26, 27]))
    low = b.and_(low, ivec([63] * 4 + [15] * 4 + [63] * 4 + [15] * 4, I8))
    top = b.and_(b.lshr(s, isplat(2, 16, I8)), isplat(48, 16, I8))  # bits 6-7 -> 4-5
    high = b.shuffle_vector(ir.Constant(i8x16, [0] * 16), top,
                            ivec([0, 0, 0, 0, 16, 17, 18, 19, 0, 0, 0, 0, 20, 21, 22, 23]))
    codes = b.uitofp(b.zext(b.or_(low, high), vec(I32, 16)), vec(F32, 16))
    dd = b.fpext(k.load(k.wb, 0, vec(ir.HalfType(), 2), 1), vec(F32, 2))
    return k.fmul(codes, k.shuffle(dd, [0] * 8 + [1] * 8))


def _k4(k: Block, accs, qs: int, qh: int | None):
    """Q4_K (``qh`` None) and Q5_K: 8 sub-blocks of 32 weights; pair ``p`` (64 weights) is 32 code
    bytes at ``qs + 32p``, low nibbles sub-block 2p, high 2p + 1; Q5_K's 5th bit of weight ``l``
    of sub-block ``j`` is bit ``j`` of ``qh[l]``."""
    b = k.b
    both = k4_scales(k)
    scale, mins = k.shuffle(both, range(8)), k.shuffle(both, range(8, 16))
    xs = k.xsums(0, 16)  # per 16 columns -> per 32: pairs added
    xs32 = k.fadd(k.shuffle(xs, range(0, 16, 2)), k.shuffle(xs, range(1, 16, 2)))
    hb = None if qh is None else (k.bytes(qh, 16), k.bytes(qh + 16, 16))
    acc = list(accs[:2])  # even and odd sub-blocks: two chains
    for p in range(4):
        a_lo, a_hi = _nibbles(k, qs + 32 * p)
        c_lo, c_hi = _nibbles(k, qs + 16 + 32 * p)
        for j, (first, second) in ((2 * p, (a_lo, c_lo)), (2 * p + 1, (a_hi, c_hi))):
            if hb is not None:  # bit j of qh -> bit 4
                move = (lambda v: b.shl(v, isplat(4 - j))) if j <= 4 else (lambda v: b.lshr(v, isplat(j - 4)))
                first = b.or_(first, b.and_(move(hb[0]), isplat(16)))
                second = b.or_(second, b.and_(move(hb[1]), isplat(16)))
            col = 32 * j
            t = k.fma(k.tofloat(second), k.x(col + 16), k.fmul(k.tofloat(first), k.x(col)))
            acc[j % 2] = k.fma(k.splat(k.lane(scale, j)), t, acc[j % 2])
    return acc + [k.fsub(accs[2], k.fmul(mins, xs32))]


def _q4_k(k: Block, accs):
    return _k4(k, accs, 16, None)


def _q5_k(k: Block, accs):
    return _k4(k, accs, 48, 16)


def _sub16(k: Block, scale, i: int, codes, acc):
    """``acc + scale[i]·(codes·x[16i:16i + 16])``: the 16-weight sub-block ``i`` of Q2_K, Q3_K and
    Q6_K (whose scale ``i`` covers columns ``16i..16i + 15``)."""
    return k.fma(k.splat(k.lane(scale, i)), k.fmul(k.tofloat(codes), k.x(16 * i)), acc)


def _two_bit(k: Block, accs, scale, qs: int, high):
    """Q2_K/Q3_K's codes times their scales: 2 halves of 128 weights, each 32 code bytes at
    ``qs + 32n`` holding 4 two-bit fields (field ``j`` of byte ``16h + l``: weight
    ``128n + 32j + 16h + l``, scale ``8n + 2j + h``); ``high(n, j, h)``: the i32 vector added to
    the field (Q3_K's third bit), or None."""
    b = k.b
    acc = list(accs[:2])
    for n in range(2):
        for h in range(2):
            q = k.bytes(qs + 32 * n + 16 * h, 16)
            for j in range(4):
                c = b.and_(b.lshr(q, isplat(2 * j)), isplat(3))
                extra = high(n, j, h)
                if extra is not None:
                    c = b.or_(c, extra)
                acc[h] = _sub16(k, scale, 8 * n + 2 * j + h, c, acc[h])
    return acc


def q2_k_scales(k: Block):
    """Q2_K's 16 sub-block scales and mins (byte i: scale low, min high) times ``d``, ``dmin``:
    two ``<16 x float>``, sub-block ``i`` (columns ``16i..16i + 15``) in lane ``i``."""
    b = k.b
    s = k.bytes(0, 16)
    scale = k.fmul(k.splat(k.half(80)), k.tofloat(b.and_(s, isplat(15))))
    return scale, k.fmul(k.splat(k.half(82)), k.tofloat(b.lshr(s, isplat(4))))


def q3_k_scales(k: Block):
    """Q3_K's 16 sub-block scales (6 bits minus 32: low 4 bits in bytes 0..7 of the scales at 96,
    high 2 in bytes 8..11) times ``d``: ``<16 x float>``, sub-block ``i`` in lane ``i``."""
    b = k.b
    s = k.bytes(96, 12)
    low = b.and_(b.lshr(k.shuffle(s, list(range(8)) * 2), ivec([0] * 8 + [4] * 8)), isplat(15))
    shifts = ivec([0] * 4 + [2] * 4 + [4] * 4 + [6] * 4)
    high = b.and_(b.lshr(k.shuffle(s, [8, 9, 10, 11] * 4), shifts), isplat(3))
    return k.fmul(k.splat(k.half(108)), k.tofloat(b.sub(b.or_(low, b.shl(high, isplat(4))), isplat(32))))


def _q2_k(k: Block, accs):
    """Q2_K: 16 sub-blocks of 16, 4-bit scales and mins (byte i: scale low, min high)."""
    scale, mins = q2_k_scales(k)
    acc = _two_bit(k, accs, scale, 16, lambda n, j, h: None)
    return acc + [k.fsub(accs[2], k.fmul(mins, k.xsums(0, 16)))]


def _q3_k(k: Block, accs):
    """Q3_K: 16 sub-blocks of 16, 6-bit scales minus 32 (low 4 bits in bytes 0..7 of the scales,
    high 2 in bytes 8..11), codes of 2 bits plus a high bit from ``hmask`` (bit ``4n + j`` of
    byte ``16h + l``), minus 4: taken out through the activation sums."""
    b = k.b
    scale = q3_k_scales(k)
    hm = (k.bytes(0, 16), k.bytes(16, 16))

    def third(n, j, h):  # bit 4n + j of hmask -> bit 2
        bit = 4 * n + j
        v = b.lshr(hm[h], isplat(bit - 2)) if bit >= 2 else b.shl(hm[h], isplat(2 - bit))
        return b.and_(v, isplat(4))

    acc = _two_bit(k, accs, scale, 32, third)
    return acc + [k.fsub(accs[2], k.fmul(k.fmul(scale, k.xsums(0, 16)), fsplat(4.0)))]


def _q6_k(k: Block, accs):
    """Q6_K: 16 sub-blocks of 16 weights, int8 scales; codes 0..63 stored as 4 + 2 bits."""
    b = k.b
    scale = k.fmul(k.splat(k.half(208)), k.tofloat(k.sbytes(192, 16)))  # scale i <-> columns 16i..
    acc = list(accs[:2])
    for n in range(2):  # 128 weights: ql[64n..], qh[32n..], scales[8n..]
        for h in range(2):  # l = 16h .. 16h + 15
            a = k.bytes(64 * n + 16 * h, 16)
            c = k.bytes(64 * n + 32 + 16 * h, 16)
            hb = k.bytes(128 + 32 * n + 16 * h, 16)
            m48 = isplat(48)
            codes = (b.or_(b.and_(a, isplat(15)), b.and_(b.shl(hb, isplat(4)), m48)),
                     b.or_(b.and_(c, isplat(15)), b.and_(b.shl(hb, isplat(2)), m48)),
                     b.or_(b.lshr(a, isplat(4)), b.and_(hb, m48)),
                     b.or_(b.lshr(c, isplat(4)), b.and_(b.lshr(hb, isplat(2)), m48)))
            for g, q in enumerate(codes):  # columns 128n + 32g + 16h, scale 8n + 2g + h
                acc[h] = _sub16(k, scale, 8 * n + 2 * g + h, q, acc[h])
    offset = k.fmul(scale, k.xsums(0, 16))  # Σ s·Σx per 16 columns, times the offset 32
    return acc + [k.fsub(accs[2], k.fmul(offset, fsplat(32.0)))]


rowdot_f32 = row_dot(32, 128, (16, 16), _f32)
rowdot_f16 = row_dot(32, 64, (16, 16), _f16)
rowdot_bf16 = row_dot(32, 64, (16, 16), _bf16)
rowdot_iq4_nl = row_dot(32, 18, (16,), _iq4_nl)
rowdot_iq4_xs = row_dot(256, 136, (16, 16), _iq4_xs, unroll=1)
rowdot_q4_0 = row_dot(32, 18, (16,), _q4_0)
rowdot_q4_1 = row_dot(32, 20, (16, 1), _q4_1)
rowdot_q5_0 = row_dot(32, 22, (16,), _q5_0)
rowdot_q5_1 = row_dot(32, 24, (16, 1), _q5_1)
rowdot_q8_0 = row_dot(32, 34, (16,), _q8_0)
rowdot_q4_k = row_dot(256, 144, (16, 16, 8), _q4_k, unroll=1)
rowdot_q5_k = row_dot(256, 176, (16, 16, 8), _q5_k, unroll=1)
rowdot_q2_k = row_dot(256, 84, (16, 16, 16), _q2_k, unroll=1)
rowdot_q3_k = row_dot(256, 110, (16, 16, 16), _q3_k, unroll=1)
rowdot_q6_k = row_dot(256, 210, (16, 16, 16), _q6_k, unroll=1)
