"""LLVM vector IR for the compiled 32-weight block codecs (:mod:`.legacy`).

Numba runs LLVM without the SLP vectorizer, and a 32-weight block loop is unrolled before the
loop vectorizer sees it, so the per-block work of Q4_0 ... Q8_0 is written here as vector IR
(Numba ``@intrinsic`` functions): the same float32 operations as ggml's C loops, lane by lane, in
C's order, with no fast-math flags (so no FMA). The primitives address arrays by element
position and assume 1-D C-contiguous rows (the API hands the kernels contiguous chunks).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .numeric import F32

QK = 32
HALF_DOWN = np.nextafter(F32(0.5), F32(0.0))  # 0.49999997f

# -- SIMD block primitives (LLVM vector IR) ----------------------------------------------------
# Numba leaves LLVM's SLP vectorizer off, and a 32-weight block loop is unrolled before the loop
# vectorizer sees it, so the per-block work is written here as vector IR: one <32 x float> or
# <16 x i8> load, the same float32 operations as the C loop lane by lane (no fast-math flags, no
# FMA), one store. ``pos`` arguments index the (1-D, contiguous) array in elements.
_I1, _I8, _I32, _I64, _FLT = ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.IntType(64), ir.FloatType()


def _vec(t, n):
    return ir.VectorType(t, n)


def _consts(t, vals):
    return ir.Constant(_vec(t, len(vals)), [ir.Constant(t, v) for v in vals])


def _splat(builder, v, n):
    t = _vec(v.type, n)
    one = builder.insert_element(ir.Constant(t, ir.Undefined), v, ir.Constant(_I32, 0))
    return builder.shuffle_vector(one, ir.Constant(t, ir.Undefined), _consts(_I32, [0] * n))


def _lanes(builder, v, lo, hi):
    return builder.shuffle_vector(v, ir.Constant(v.type, ir.Undefined), _consts(_I32, list(range(lo, hi))))


def _ptr(context, builder, aryty, ary, pos, posty, vt):
    pos = context.cast(builder, pos, posty, types.intp)
    data = context.make_array(aryty)(context, builder, ary).data
    return builder.bitcast(builder.gep(data, [pos]), vt.as_pointer())


def _store_f32(context, builder, aryty, ary, pos, posty, f):
    """Store <32 x float> as four 8-lane stores: NumPy's large arrays start 16 bytes past a
    cache line, where 64-byte stores would all straddle two lines (about 1.5x slower)."""
    pos = context.cast(builder, pos, posty, types.intp)
    for k in range(0, 32, 8):
        at = builder.add(pos, ir.Constant(pos.type, k))
        builder.store(_lanes(builder, f, k, k + 8), _ptr(context, builder, aryty, ary, at, types.intp, _vec(_FLT, 8)), align=4)


def _llvm_call(builder, name, ret, args):
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ret, [a.type for a in args]), name)
    return builder.call(fn, args)


def _first_lane(builder, mask):
    """Index of the first set lane of a <32 x i1> mask (32 when none)."""
    bits = builder.bitcast(mask, _I32)
    return _llvm_call(builder, "llvm.cttz.i32", _I32, [bits, ir.Constant(_I1, 0)])


def _is_f32(t):
    return isinstance(t, types.Float) and t.bitwidth == 32


def _load_x(context, builder, sig, args):
    return builder.load(_ptr(context, builder, sig.args[0], args[0], args[1], sig.args[1], _vec(_FLT, 32)), align=4)


def _abs_bits(builder, x):
    return builder.and_(builder.bitcast(x, _vec(_I32, 32)), _consts(_I32, [0x7FFFFFFF] * 32))


@intrinsic
def absmax_first(typingctx, src, pos):
    """ggml's ``if (amax < fabsf(v)) { amax = fabsf(v); max = v; }`` over ``src[pos:pos+32]`` from
    ``amax = max = 0``: the first value of largest magnitude, +0.0 for an all-zero block. (For
    finite floats the order of |x| is the integer order of its bits.)"""
    sig = types.float32(src, pos)

    def codegen(context, builder, signature, args):
        x = _load_x(context, builder, signature, args)
        a = _abs_bits(builder, x)
        m = _llvm_call(builder, "llvm.vector.reduce.umax.v32i32", _I32, [a])
        idx = _first_lane(builder, builder.icmp_unsigned("==", a, _splat(builder, m, 32)))
        v = builder.extract_element(x, builder.and_(idx, ir.Constant(_I32, 31)))
        return builder.select(builder.icmp_unsigned("==", m, ir.Constant(_I32, 0)), ir.Constant(_FLT, 0.0), v)

    return sig, codegen


@intrinsic
def absmax(typingctx, src, pos):
    """``amax = MAX(amax, fabsf(v))`` over ``src[pos:pos+32]`` from +0 (Q8_0)."""
    sig = types.float32(src, pos)

    def codegen(context, builder, signature, args):
        a = _abs_bits(builder, _load_x(context, builder, signature, args))
        return builder.bitcast(_llvm_call(builder, "llvm.vector.reduce.umax.v32i32", _I32, [a]), _FLT)

    return sig, codegen


def _tree(builder, v, op):
    n = v.type.count
    while n > 1:
        a, b = _lanes(builder, v, 0, n // 2), _lanes(builder, v, n // 2, n)
        v = builder.select(builder.fcmp_ordered(op, a, b), a, b)
        n //= 2
    return builder.extract_element(v, ir.Constant(_I32, 0))


@intrinsic
def min_max_first(typingctx, src, pos):
    """ggml's ``if (v < min) min = v; if (v > max) max = v;`` over ``src[pos:pos+32]``: (min, max).
    Equal values have equal bits except +-0, and a zero extreme is the block's first zero."""
    sig = types.UniTuple(types.float32, 2)(src, pos)

    def codegen(context, builder, signature, args):
        x = _load_x(context, builder, signature, args)
        mn, mx = _tree(builder, x, "<"), _tree(builder, x, ">")
        zero = ir.Constant(_FLT, 0.0)
        idx = _first_lane(builder, builder.fcmp_ordered("==", x, _splat(builder, zero, 32)))
        z = builder.extract_element(x, builder.and_(idx, ir.Constant(_I32, 31)))
        mn = builder.select(builder.fcmp_ordered("==", mn, zero), z, mn)
        mx = builder.select(builder.fcmp_ordered("==", mx, zero), z, mx)
        return context.make_tuple(builder, signature.return_type, [mn, mx])

    return sig, codegen


def _make_encoder(asym, top, five_bit):
    """Codes of one block with a normal (or zero) scale, packed: ``MIN(top, (int)(v))`` (no clamp
    when ``top`` is 0) with ``v = x*id + add`` or ``(x - mn)*id + add``; stores the 16 nibble
    bytes at ``dst[dpos:]`` and returns qh (bit j = bit 4 of code j) for the 5-bit types."""

    @intrinsic
    def encode(typingctx, src, pos, dst, dpos, mn, idv, add):
        if not (_is_f32(mn) and _is_f32(idv) and _is_f32(add)):
            return None
        sig = types.int64(src, pos, dst, dpos, mn, idv, add)

        def codegen(context, builder, signature, args):
            x = _load_x(context, builder, signature, args)
            if asym:
                x = builder.fsub(x, _splat(builder, args[4], 32))
            v = builder.fmul(x, _splat(builder, args[5], 32))
            v = builder.fadd(v, _splat(builder, args[6], 32))
            q = builder.fptosi(v, _vec(_I32, 32))  # in range: d is normal or zero
            if top:
                t = _consts(_I32, [top] * 32)
                q = builder.select(builder.icmp_signed(">", q, t), t, q)
            nib = _consts(_I32, [15] * 16)
            lo = builder.and_(_lanes(builder, q, 0, 16), nib)
            hi = builder.shl(builder.and_(_lanes(builder, q, 16, 32), nib), _consts(_I32, [4] * 16))
            packed = builder.trunc(builder.or_(lo, hi), _vec(_I8, 16))
            builder.store(packed, _ptr(context, builder, signature.args[2], args[2], args[3], signature.args[3], _vec(_I8, 16)), align=1)
            if not five_bit:
                return ir.Constant(_I64, 0)
            bit4 = builder.icmp_signed("!=", builder.and_(q, _consts(_I32, [16] * 32)), _consts(_I32, [0] * 32))
            return builder.zext(builder.bitcast(bit4, _I32), _I64)

        return sig, codegen

    return encode


@intrinsic
def encode_q8(typingctx, src, pos, dst, dpos, idv):
    """``(int8_t)roundf(x*id)`` for a block with a normal (or zero) scale: |x*id| <= 127 + a few
    ulps, where ``trunc(v + copysign(0.49999997f, v))`` is roundf."""
    if not _is_f32(idv):
        return None
    sig = types.void(src, pos, dst, dpos, idv)

    def codegen(context, builder, signature, args):
        x = _load_x(context, builder, signature, args)
        v = builder.fmul(x, _splat(builder, args[4], 32))
        vb = builder.bitcast(v, _vec(_I32, 32))
        half = int(np.array(HALF_DOWN).view(np.uint32))
        s = builder.or_(builder.and_(vb, _consts(_I32, [0x80000000 - (1 << 32)] * 32)), _consts(_I32, [half] * 32))
        q = builder.fptosi(builder.fadd(v, builder.bitcast(s, _vec(_FLT, 32))), _vec(_I32, 32))
        ptr = _ptr(context, builder, signature.args[2], args[2], args[3], signature.args[3], _vec(_I8, 32))
        builder.store(builder.trunc(q, _vec(_I8, 32)), ptr, align=1)
        return context.get_dummy_value()

    return sig, codegen


def _make_decoder(off, asym, five_bit):
    """dequantize_row_q{4,5}_{0,1} for one block: ``(q - off)*d`` or ``q*d + m`` (two roundings,
    as C without FMA) from the 16 nibble bytes at ``src[pos:]`` and qh into ``dst[dpos:dpos+32]``."""

    @intrinsic
    def decode(typingctx, src, pos, qh, dst, dpos, d, m):
        if not (_is_f32(d) and _is_f32(m)):
            return None
        sig = types.void(src, pos, qh, dst, dpos, d, m)

        def codegen(context, builder, signature, args):
            raw = builder.load(_ptr(context, builder, signature.args[0], args[0], args[1], signature.args[1], _vec(_I8, 16)), align=1)
            lo = builder.and_(raw, _consts(_I8, [15] * 16))
            hi = builder.lshr(raw, _consts(_I8, [4] * 16))
            q = builder.zext(builder.shuffle_vector(lo, hi, _consts(_I32, list(range(32)))), _vec(_I32, 32))
            if five_bit:
                h = builder.trunc(context.cast(builder, args[2], signature.args[2], types.int64), _I32)
                h = builder.lshr(_splat(builder, h, 32), _consts(_I32, list(range(32))))
                h = builder.shl(builder.and_(h, _consts(_I32, [1] * 32)), _consts(_I32, [4] * 32))
                q = builder.or_(q, h)
            if off:
                q = builder.sub(q, _consts(_I32, [off] * 32))
            f = builder.fmul(builder.sitofp(q, _vec(_FLT, 32)), _splat(builder, args[5], 32))
            if asym:
                f = builder.fadd(f, _splat(builder, args[6], 32))
            _store_f32(context, builder, signature.args[3], args[3], args[4], signature.args[4], f)
            return context.get_dummy_value()

        return sig, codegen

    return decode


@intrinsic
def decode_q8(typingctx, src, pos, dst, dpos, d):
    """dequantize_row_q8_0 for one block: ``qs[j]*d`` (int8 codes at ``src[pos:]``)."""
    if not _is_f32(d):
        return None
    sig = types.void(src, pos, dst, dpos, d)

    def codegen(context, builder, signature, args):
        raw = builder.load(_ptr(context, builder, signature.args[0], args[0], args[1], signature.args[1], _vec(_I8, 32)), align=1)
        f = builder.fmul(builder.sitofp(raw, _vec(_FLT, 32)), _splat(builder, args[4], 32))
        _store_f32(context, builder, signature.args[2], args[2], args[3], signature.args[3], f)
        return context.get_dummy_value()

    return sig, codegen


def _make_qx_sums(nmax):
    """make_qx_quants' weighted sums for up to 32 trial scales at once, lane c for ``iscales[c]``:
    ``sumlx += w*x[i]*l`` and ``suml2 += w*l*l`` with ``l = MAX(-nmax, MIN(nmax-1,
    nearest_int(iscale*x[i])))``, i = 0..31 in order, so each lane is C's sequential float sum.
    Writes sumlx to ``out[0:32]`` and suml2 to ``out[32:64]``."""

    @intrinsic
    def qx_sums(typingctx, x, pos, w, iscales, out):
        sig = types.void(x, pos, w, iscales, out)

        def codegen(context, builder, signature, args):
            xt, post, wt, ist, outt = signature.args
            xa, posa, wa, isa, outa = args
            pos0 = context.cast(builder, posa, post, types.intp)
            zero = ir.Constant(pos0.type, 0)
            isv = builder.load(_ptr(context, builder, ist, isa, zero, types.intp, _vec(_FLT, 32)), align=4)
            lo = _consts(_I32, [-nmax] * 32)
            hi = _consts(_I32, [nmax - 1] * 32)
            magic = _consts(_FLT, [12582912.0] * 32)
            acc1 = ir.Constant(_vec(_FLT, 32), [ir.Constant(_FLT, 0.0)] * 32)
            acc2 = acc1
            for i in range(QK):
                xi = builder.load(_ptr(context, builder, xt, xa, builder.add(pos0, ir.Constant(pos0.type, i)), types.intp, _FLT), align=4)
                wi = builder.load(_ptr(context, builder, wt, wa, ir.Constant(pos0.type, i), types.intp, _FLT), align=4)
                v = builder.fmul(isv, _splat(builder, xi, 32))
                b = builder.bitcast(builder.fadd(v, magic), _vec(_I32, 32))
                l = builder.sub(builder.and_(b, _consts(_I32, [0x007FFFFF] * 32)), _consts(_I32, [0x00400000] * 32))
                l = builder.select(builder.icmp_signed("<", l, hi), l, hi)
                l = builder.select(builder.icmp_signed(">", l, lo), l, lo)
                fl = builder.sitofp(l, _vec(_FLT, 32))
                wx = builder.fmul(wi, xi)
                acc1 = builder.fadd(acc1, builder.fmul(_splat(builder, wx, 32), fl))
                acc2 = builder.fadd(acc2, builder.fmul(builder.fmul(_splat(builder, wi, 32), fl), fl))
            _store_f32(context, builder, outt, outa, zero, types.intp, acc1)
            _store_f32(context, builder, outt, outa, ir.Constant(pos0.type, 32), types.intp, acc2)
            return context.get_dummy_value()

        return sig, codegen

    return qx_sums


qx_sums_8 = _make_qx_sums(8)
qx_sums_16 = _make_qx_sums(16)


NB_STEPS = 16  # trial steps of make_qkx3_quants evaluated per batch (one vector lane each)


def _make_qkx3_batch(nmax):
    """One batch of make_qkx3_quants' search, lane c being the step with ``iscales[c]``, all at
    the same ``min``: the codes ``l = MAX(0, MIN(nmax, nearest_int(iscale*(x[i] - min))))``, the
    sums ``sum_l += w*l``, ``sum_l2 += w*l*l``, ``sum_xl += w*l*x[i]`` (i in order, float32), then
    ``D``, ``this_scale``, ``this_min`` and ``mad += w*diff*diff`` as C computes them.
    Writes D, mad, this_scale, this_min to ``out[0:16]``, ``[16:32]``, ``[32:48]``, ``[48:64]``."""
    n = NB_STEPS

    @intrinsic
    def qkx3_batch(typingctx, x, pos, w, iscales, mn, sum_w, sum_x, out):
        if not (_is_f32(mn) and _is_f32(sum_w) and _is_f32(sum_x)):
            return None
        sig = types.void(x, pos, w, iscales, mn, sum_w, sum_x, out)

        def codegen(context, builder, signature, args):
            xt, post, wt, ist, _, _, _, outt = signature.args
            xa, posa, wa, isa, mna, swa, sxa, outa = args
            pos0 = context.cast(builder, posa, post, types.intp)

            def at(k):
                return ir.Constant(pos0.type, k)

            def splat(v):
                return _splat(builder, v, n)

            isv = builder.load(_ptr(context, builder, ist, isa, at(0), types.intp, _vec(_FLT, n)), align=4)
            xs, ws, fls = [], [], []
            zero_i = _consts(_I32, [0] * n)
            top = _consts(_I32, [nmax] * n)
            magic = _consts(_FLT, [12582912.0] * n)
            zf = ir.Constant(_vec(_FLT, n), [ir.Constant(_FLT, 0.0)] * n)
            sum_l = sum_l2 = sum_xl = zf
            for i in range(QK):
                xi = builder.load(_ptr(context, builder, xt, xa, builder.add(pos0, at(i)), types.intp, _FLT), align=4)
                wi = builder.load(_ptr(context, builder, wt, wa, at(i), types.intp, _FLT), align=4)
                v = builder.fmul(isv, splat(builder.fsub(xi, mna)))
                b = builder.bitcast(builder.fadd(v, magic), _vec(_I32, n))
                l = builder.sub(builder.and_(b, _consts(_I32, [0x007FFFFF] * n)), _consts(_I32, [0x00400000] * n))
                l = builder.select(builder.icmp_signed("<", l, top), l, top)
                l = builder.select(builder.icmp_signed(">", l, zero_i), l, zero_i)
                fl = builder.sitofp(l, _vec(_FLT, n))
                wl = builder.fmul(splat(wi), fl)
                sum_l = builder.fadd(sum_l, wl)
                sum_l2 = builder.fadd(sum_l2, builder.fmul(wl, fl))
                sum_xl = builder.fadd(sum_xl, builder.fmul(wl, splat(xi)))
                xs.append(xi)
                ws.append(wi)
                fls.append(fl)
            sw, sx = splat(swa), splat(sxa)
            D = builder.fsub(builder.fmul(sw, sum_l2), builder.fmul(sum_l, sum_l))
            this_scale = builder.fdiv(builder.fsub(builder.fmul(sw, sum_xl), builder.fmul(sx, sum_l)), D)
            this_min = builder.fdiv(builder.fsub(builder.fmul(sum_l2, sx), builder.fmul(sum_l, sum_xl)), D)
            pos_min = builder.fcmp_ordered(">", this_min, zf)
            this_scale = builder.select(pos_min, builder.fdiv(sum_xl, sum_l2), this_scale)
            this_min = builder.select(pos_min, zf, this_min)
            mad = zf
            for i in range(QK):
                diff = builder.fsub(builder.fadd(builder.fmul(this_scale, fls[i]), this_min), splat(xs[i]))
                mad = builder.fadd(mad, builder.fmul(splat(ws[i]), builder.fmul(diff, diff)))
            for k, v in enumerate((D, mad, this_scale, this_min)):
                builder.store(v, _ptr(context, builder, outt, outa, at(n * k), types.intp, _vec(_FLT, n)), align=4)
            return context.get_dummy_value()

        return sig, codegen

    return qkx3_batch


qkx3_batch_15 = _make_qkx3_batch(15)
qkx3_batch_31 = _make_qkx3_batch(31)


encode_q4_0 = _make_encoder(False, 15, False)
encode_q5_0 = _make_encoder(False, 31, True)
encode_q4_1 = _make_encoder(True, 15, False)
encode_q5_1 = _make_encoder(True, 0, True)
decode_q4_0 = _make_decoder(8, False, False)
decode_q5_0 = _make_decoder(16, False, True)
decode_q4_1 = _make_decoder(0, True, False)
decode_q5_1 = _make_decoder(0, True, True)
