"""Row dot products written as LLVM vector IR: the decode kernels' inner loops where Numba's
loops left the vectorizer too little to work with.

:func:`row_dot` makes a Numba intrinsic ``rowdot(w, x, xs, nb) -> float32``: ``Σ w·x`` over the
``nb`` blocks of one uint8 row ``w`` against float32 ``x``, with ``xs`` the sums of ``x`` per 16
columns (types with a min or a code offset use them; others take an empty array). A type gives a
*body*: the IR of one block, which reads the block's bytes at ``wb``, its activations at ``xb``,
their 16-column sums at ``sb``, and returns its accumulators updated. The accumulators are
explicit vectors (``<16 x float>`` lanes, or a scalar), kept across the whole row and reduced
once at its end: no horizontal sum per block, which is what held Numba's loops back (a Q8_0 row
of 576 weights ran 3.5x faster). Blocks are taken ``UNROLL`` at a time with separate
accumulators, so consecutive blocks' sums do not wait on each other's latency.

LLVM lowers the vector types to whatever the target has: AVX-512 or AVX2 here, NEON on Apple
Silicon (4 lanes a register); the IR says what to compute, never which instructions. Float ops
carry only ``reassoc``, ``contract`` and ``nsz`` (as the Numba kernels' ``fastmath``): NaN and
inf in weights or activations propagate as in a float32 product.
"""

from __future__ import annotations

from typing import Callable, Sequence

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

FM = ("reassoc", "contract", "nsz")
UNROLL = 2
# bytes ahead of the block in hand that each loop pass asks the cache for: the hardware
# prefetcher alone left a float32 row at 32 of the 45 GB/s one core reads (68 of 92 on two);
# 4 KB ahead, 44 and 96 (and 1.1-1.4x on the quantized types)
PREFETCH = 4096
F32 = ir.FloatType()
I8, I16, I32, I64 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64)

Body = Callable[["Block", list], list]


def vec(t: ir.Type, n: int) -> ir.VectorType:
    return ir.VectorType(t, n)


def ivec(values: Sequence[int], t: ir.Type = I32) -> ir.Constant:
    """A constant integer vector."""
    return ir.Constant(vec(t, len(values)), list(values))


def isplat(value: int, n: int = 16, t: ir.Type = I32) -> ir.Constant:
    return ivec([value] * n, t)


def fsplat(value: float, n: int = 16) -> ir.Constant:
    return ir.Constant(vec(F32, n), [value] * n)


def call_intrinsic(builder: ir.IRBuilder, name: str, ret: ir.Type, args: list):
    """``name(*args) -> ret``: an LLVM intrinsic, declared in the builder's module on first use."""
    mod = builder.module
    fn = mod.globals.get(name) or ir.Function(mod, ir.FunctionType(ret, [a.type for a in args]), name)
    return builder.call(fn, args)


class Block:
    """One block's IR context: ``b`` the builder, pointers to its bytes (``wb``), activations
    (``xb``) and their 16-column sums (``sb``), and small helpers over them."""

    def __init__(self, builder: ir.IRBuilder, wb, xb, sb):
        self.b, self.wb, self.xb, self.sb = builder, wb, xb, sb

    def load(self, base, off: int, typ: ir.Type, align: int):
        b = self.b
        p = b.gep(base, [ir.Constant(I64, off)])
        if getattr(p.type, "is_opaque", False):
            return b.load(p, typ=typ, align=align)
        return b.load(b.bitcast(p, typ.as_pointer()), align=align)

    def bytes(self, off: int, n: int):
        """``n`` bytes at byte ``off`` of the block, as ``<n x i32>`` (zero-extended)."""
        return self.b.zext(self.load(self.wb, off, vec(I8, n), 1), vec(I32, n))

    def sbytes(self, off: int, n: int):
        """``n`` signed bytes at ``off`` as ``<n x i32>``."""
        return self.b.sext(self.load(self.wb, off, vec(I8, n), 1), vec(I32, n))

    def floats(self, off: int, n: int = 16):
        """``n`` float32 at byte ``off`` of the block (an F32 row's weights)."""
        return self.load(self.wb, off, vec(F32, n), 4)

    def halves(self, off: int, n: int = 16):
        """``n`` float16 at byte ``off`` as ``<n x float>`` (exact: ``fpext``)."""
        h = self.load(self.wb, off, vec(ir.HalfType(), n), 2)
        return self.b.fpext(h, vec(F32, n))

    def bfloats(self, off: int, n: int = 16):
        """``n`` bfloat16 at byte ``off`` as ``<n x float>`` (exact: the bits moved up 16)."""
        b = self.b
        h = b.zext(self.load(self.wb, off, vec(I16, n), 2), vec(I32, n))
        return b.bitcast(b.shl(h, ir.Constant(vec(I32, n), [ir.Constant(I32, 16)] * n)), vec(F32, n))

    def u16(self, off: int):
        """The little-endian uint16 at ``off``, zero-extended to i32."""
        return self.b.zext(self.load(self.wb, off, I16, 1), I32)

    def u32(self, off: int):
        """The little-endian uint32 at ``off``."""
        return self.load(self.wb, off, I32, 1)

    def half(self, off: int):
        """The float16 at byte ``off`` as a float32."""
        h = self.load(self.wb, off, I16, 1)
        return self.b.fpext(self.b.bitcast(h, ir.HalfType()), F32)

    def x(self, col: int, n: int = 16):
        """Activations ``col..col + n`` of the block as ``<n x float>``."""
        return self.load(self.xb, col, vec(F32, n), 4)

    def xsum(self, first16: int, count: int = 2):
        """Sum of ``x`` over ``count`` consecutive 16-column groups from group ``first16``."""
        s = self.load(self.sb, first16, F32, 4)
        for i in range(1, count):
            s = self.b.fadd(s, self.load(self.sb, first16 + i, F32, 4), flags=FM)
        return s

    def xsums(self, first16: int, n: int):
        """``n`` consecutive 16-column sums as ``<n x float>``."""
        return self.load(self.sb, first16, vec(F32, n), 4)

    def splat(self, v, n: int = 16):
        b = self.b
        vt = vec(v.type, n)
        u = b.insert_element(ir.Constant(vt, ir.Undefined), v, ir.Constant(I32, 0))
        return b.shuffle_vector(u, ir.Constant(vt, ir.Undefined), isplat(0, n))

    def lane(self, v, i: int):
        return self.b.extract_element(v, ir.Constant(I32, i))

    def shuffle(self, v, idx: Sequence[int]):
        return self.b.shuffle_vector(v, ir.Constant(v.type, ir.Undefined), ivec(idx))

    def rotl(self, v, amounts: Sequence[int]):
        """Each lane of the i32 vector ``v`` rotated left by its amount (``llvm.fshl``: one
        ``vprolvd`` with AVX-512, shifts and an or elsewhere)."""
        return call_intrinsic(self.b, f"llvm.fshl.v{v.type.count}i32", v.type,
                              [v, v, ivec([a % 32 for a in amounts])])

    def rint(self, v):
        """Round each lane to the nearest integer, ties to even (``llvm.rint``)."""
        return call_intrinsic(self.b, f"llvm.rint.v{v.type.count}f32", v.type, [v])

    def tofloat(self, v):
        """Signed i32 vector -> float vector."""
        return self.b.sitofp(v, vec(F32, v.type.count))

    # float ops with the kernels' fast-math flags
    def fmul(self, a, c):
        return self.b.fmul(a, c, flags=FM)

    def fadd(self, a, c):
        return self.b.fadd(a, c, flags=FM)

    def fsub(self, a, c):
        return self.b.fsub(a, c, flags=FM)

    def fma(self, a, c, acc):
        """``acc + a·c`` (contracted to an FMA where the target has one)."""
        return self.fadd(acc, self.fmul(a, c))


def hsum(builder: ir.IRBuilder, v):
    """The sum of a float vector's lanes (halving tree; a scalar is returned as is)."""
    if not isinstance(v.type, ir.VectorType):
        return v
    n = v.type.count
    while n > 1:
        n //= 2
        lo = builder.shuffle_vector(v, v, ivec(range(n)))
        hi = builder.shuffle_vector(v, v, ivec(range(n, 2 * n)))
        v = builder.fadd(lo, hi, flags=FM)
    return builder.extract_element(v, ir.Constant(I32, 0))


def prefetch(builder: ir.IRBuilder, ptr) -> None:
    """Ask for the cache line at ``ptr`` ahead of its use (``llvm.prefetch``: read, keep in all
    levels; never faults, so it may point past the row)."""
    call_intrinsic(builder, "llvm.prefetch.p0", ir.VoidType(),
                   [ptr, ir.Constant(I32, 0), ir.Constant(I32, 3), ir.Constant(I32, 1)])


def row_dot(block: int, block_bytes: int, accs: Sequence[int], body: Body, unroll: int = UNROLL,
            x_stride: int = 0, s_stride: int = 0):
    """The intrinsic ``rowdot(w, x, xs, nb) -> float32`` of a type whose blocks hold ``block``
    weights in ``block_bytes`` bytes; ``accs``: the lanes of each accumulator the body updates
    (1: a scalar); ``unroll``: blocks per loop pass. ``w``, ``x``, ``xs``: contiguous 1-D arrays
    (uint8, float32, float32; or another element type of ``x`` with ``x_stride`` elements per
    block, and ``s_stride`` elements of ``xs`` per block: default ``block`` and ``block // 16``)."""
    x_stride = x_stride or block
    s_stride = s_stride or block // 16

    def zero(lanes: int):
        return ir.Constant(F32, 0.0) if lanes == 1 else fsplat(0.0, lanes)

    @intrinsic
    def rowdot(typingctx, w, x, xs, nb):
        if not (all(isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C" for a in (w, x, xs))
                and isinstance(nb, types.Integer)):
            return None  # contiguous rows only: the IR reads them by pointer

        def codegen(context, builder, sig, args):
            wp = context.make_array(sig.args[0])(context, builder, args[0]).data
            xp = context.make_array(sig.args[1])(context, builder, args[1]).data
            sp = context.make_array(sig.args[2])(context, builder, args[2]).data
            n = context.cast(builder, args[3], sig.args[3], types.int64)
            slots = [cgutils.alloca_once_value(builder, zero(a)) for _ in range(unroll) for a in accs]
            k = len(accs)

            def step(i, mine):
                blk = Block(builder, builder.gep(wp, [builder.mul(i, ir.Constant(I64, block_bytes))]),
                            builder.gep(xp, [builder.mul(i, ir.Constant(I64, x_stride))]),
                            builder.gep(sp, [builder.mul(i, ir.Constant(I64, s_stride))]))
                new = body(blk, [builder.load(s) for s in mine])
                for s, v in zip(mine, new):
                    builder.store(v, s)

            groups = builder.udiv(n, ir.Constant(I64, unroll))
            done = builder.mul(groups, ir.Constant(I64, unroll))
            with cgutils.for_range(builder, groups) as loop:
                i0 = builder.mul(loop.index, ir.Constant(I64, unroll))
                ahead = builder.gep(wp, [builder.add(builder.mul(i0, ir.Constant(I64, block_bytes)),
                                                     ir.Constant(I64, PREFETCH))])
                for off in range(0, unroll * block_bytes, 64):
                    prefetch(builder, builder.gep(ahead, [ir.Constant(I64, off)]))
                for u in range(unroll):
                    step(builder.add(i0, ir.Constant(I64, u)), slots[u * k:(u + 1) * k])
            with cgutils.for_range(builder, builder.sub(n, done)) as loop:
                step(builder.add(done, loop.index), slots[:k])
            total = None
            for j in range(k):  # the unrolled copies of accumulator j first, then across j
                v = builder.load(slots[j])
                for u in range(1, unroll):
                    v = builder.fadd(v, builder.load(slots[u * k + j]), flags=FM)
                r = hsum(builder, v)
                total = r if total is None else builder.fadd(total, r, flags=FM)
            return total

        return types.float32(w, x, xs, nb), codegen

    return rowdot
