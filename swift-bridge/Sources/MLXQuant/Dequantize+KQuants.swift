// The 256-weight "K" super-blocks of ggml (ggml-common.h), decoded in the order and with the
// float32 operations of ggml's dequantize_row_q{2..6}_K.

extension Dequantize {
    /// The 6-bit scale and min of sub-block `j` (0..<8) packed in the 12 `scales` bytes of Q4_K/Q5_K.
    ///
    /// ```
    /// bytes 0-3:  sc0..sc3 low 6 bits | high 2 bits of sc4..sc7
    /// bytes 4-7:  m0..m3   low 6 bits | high 2 bits of m4..m7
    /// bytes 8-11: low nibble sc4..sc7 | high nibble m4..m7
    /// ```
    @inline(__always) static func scaleMinK4(_ j: Int, _ q: UnsafeRawBufferPointer, _ at: Int) -> (UInt8, UInt8) {
        if j < 4 {
            return (q.u8(at + j) & 63, q.u8(at + j + 4) & 63)
        }
        let d = (q.u8(at + j + 4) & 0x0F) | ((q.u8(at + j - 4) >> 6) << 4)
        let m = (q.u8(at + j + 4) >> 4) | ((q.u8(at + j) >> 6) << 4)
        return (d, m)
    }

    /// Q2_K, 84 bytes: `scales[16] (4-bit scale | 4-bit min << 4) | qs[64] | d: f16 | dmin: f16`.
    /// 16 sub-blocks of 16; w = d*sc * q - dmin*m, q 2 bits.
    static func decodeQ2_K(_ src: UnsafeRawBufferPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        var o = 0
        for i in 0 ..< blocks {
            let b = 84 * i
            let d = src.f16(b + 80), dmin = src.f16(b + 82)
            var q = b + 16
            var s = b
            for _ in 0 ..< 2 {                     // two halves of 128 weights, 32 bytes of qs each
                var shift: UInt8 = 0
                for _ in 0 ..< 4 {
                    for half in 0 ..< 2 {          // weights from qs[l] then qs[l + 16]
                        let sc = src.u8(s); s += 1
                        let dl = d * Float(sc & 0x0F), ml = dmin * Float(sc >> 4)
                        for l in 0 ..< 16 {
                            let v = Int8((src.u8(q + l + 16 * half) >> shift) & 3)
                            y[o] = dl * Float(v) - ml
                            o += 1
                        }
                    }
                    shift += 2
                }
                q += 32
            }
        }
    }

    /// Q3_K, 110 bytes: `hmask[32] | qs[64] | scales[12] (16 x 6 bits) | d: f16`.
    /// 16 sub-blocks of 16; w = d * (sc - 32) * (q - 4 if the hmask bit is clear), q 2+1 bits.
    static func decodeQ3_K(_ src: UnsafeRawBufferPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        var o = 0
        var scales = [Int8](repeating: 0, count: 16)
        for i in 0 ..< blocks {
            let b = 110 * i
            let dAll = src.f16(b + 108)
            // Unpack the 16 6-bit scales: low nibbles from bytes 0-7, high 2 bits from bytes 8-11.
            let a0 = src.u32(b + 96), a1 = src.u32(b + 100), t = src.u32(b + 104)
            let k2: UInt32 = 0x0F0F_0F0F, k1: UInt32 = 0x0303_0303
            let aux: [UInt32] = [
                (a0 & k2) | (((t >> 0) & k1) << 4),
                (a1 & k2) | (((t >> 2) & k1) << 4),
                ((a0 >> 4) & k2) | (((t >> 4) & k1) << 4),
                ((a1 >> 4) & k2) | (((t >> 6) & k1) << 4),
            ]
            for k in 0 ..< 16 {
                scales[k] = Int8(bitPattern: UInt8(truncatingIfNeeded: aux[k / 4] >> UInt32(8 * (k % 4))))
            }
            var q = b + 32
            let hm = b
            var m: UInt8 = 1
            var s = 0
            for _ in 0 ..< 2 {
                var shift: UInt8 = 0
                for _ in 0 ..< 4 {
                    for half in 0 ..< 2 {
                        let dl = dAll * Float(Int(scales[s]) - 32); s += 1
                        for l in 0 ..< 16 {
                            let low = Int((src.u8(q + l + 16 * half) >> shift) & 3)
                            let high = (src.u8(hm + l + 16 * half) & m) != 0 ? 0 : 4
                            y[o] = dl * Float(low - high)
                            o += 1
                        }
                    }
                    shift += 2
                    m <<= 1
                }
                q += 32
            }
        }
    }

    /// Q4_K, 144 bytes: `d: f16 | dmin: f16 | scales[12] | qs[128]`.
    /// 8 sub-blocks of 32; w = d*sc * q - dmin*m, q 4 bits (low nibbles, then high nibbles, per 32 bytes).
    static func decodeQ4_K(_ src: UnsafeRawBufferPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        var o = 0
        for i in 0 ..< blocks {
            let b = 144 * i
            let d = src.f16(b), dmin = src.f16(b + 2)
            var q = b + 16
            var s = 0
            for _ in 0 ..< 4 {
                let (sc1, m1q) = scaleMinK4(s, src, b + 4)
                let d1 = d * Float(sc1), m1 = dmin * Float(m1q)
                let (sc2, m2q) = scaleMinK4(s + 1, src, b + 4)
                let d2 = d * Float(sc2), m2 = dmin * Float(m2q)
                for l in 0 ..< 32 { y[o + l] = d1 * Float(src.u8(q + l) & 0x0F) - m1 }
                for l in 0 ..< 32 { y[o + 32 + l] = d2 * Float(src.u8(q + l) >> 4) - m2 }
                o += 64; q += 32; s += 2
            }
        }
    }

    /// Q5_K, 176 bytes: `d: f16 | dmin: f16 | scales[12] | qh[32] | qs[128]`.
    /// As Q4_K with a fifth bit per weight from `qh` (bit 2k for the low nibbles of pair k, 2k+1 for the high).
    static func decodeQ5_K(_ src: UnsafeRawBufferPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        var o = 0
        for i in 0 ..< blocks {
            let b = 176 * i
            let d = src.f16(b), dmin = src.f16(b + 2)
            let qh = b + 16
            var ql = b + 48
            var s = 0
            var u1: UInt8 = 1, u2: UInt8 = 2
            for _ in 0 ..< 4 {
                let (sc1, m1q) = scaleMinK4(s, src, b + 4)
                let d1 = d * Float(sc1), m1 = dmin * Float(m1q)
                let (sc2, m2q) = scaleMinK4(s + 1, src, b + 4)
                let d2 = d * Float(sc2), m2 = dmin * Float(m2q)
                for l in 0 ..< 32 {
                    let v = Int(src.u8(ql + l) & 0x0F) + ((src.u8(qh + l) & u1) != 0 ? 16 : 0)
                    y[o + l] = d1 * Float(v) - m1
                }
                for l in 0 ..< 32 {
                    let v = Int(src.u8(ql + l) >> 4) + ((src.u8(qh + l) & u2) != 0 ? 16 : 0)
                    y[o + 32 + l] = d2 * Float(v) - m2
                }
                o += 64; ql += 32; s += 2
                u1 <<= 2; u2 <<= 2
            }
        }
    }

    /// Q6_K, 210 bytes: `ql[128] | qh[64] | scales[16] int8 | d: f16`.
    /// 16 sub-blocks of 16; w = d * sc * (q - 32), q = 4 low bits from `ql` + 2 high bits from `qh`.
    static func decodeQ6_K(_ src: UnsafeRawBufferPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        var o = 0
        for i in 0 ..< blocks {
            let b = 210 * i
            let d = src.f16(b + 208)
            var ql = b, qh = b + 128, sc = b + 192
            for _ in 0 ..< 2 {                     // two halves of 128 weights
                for l in 0 ..< 32 {
                    let s = l / 16
                    let h = src.u8(qh + l)
                    let q1 = Int8(bitPattern: (src.u8(ql + l) & 0x0F) | (((h >> 0) & 3) << 4)) - 32
                    let q2 = Int8(bitPattern: (src.u8(ql + l + 32) & 0x0F) | (((h >> 2) & 3) << 4)) - 32
                    let q3 = Int8(bitPattern: (src.u8(ql + l) >> 4) | (((h >> 4) & 3) << 4)) - 32
                    let q4 = Int8(bitPattern: (src.u8(ql + l + 32) >> 4) | (((h >> 6) & 3) << 4)) - 32
                    y[o + l] = d * Float(src.i8(sc + s)) * Float(q1)
                    y[o + l + 32] = d * Float(src.i8(sc + s + 2)) * Float(q2)
                    y[o + l + 64] = d * Float(src.i8(sc + s + 4)) * Float(q3)
                    y[o + l + 96] = d * Float(src.i8(sc + s + 6)) * Float(q4)
                }
                o += 128; ql += 64; qh += 32; sc += 8
            }
        }
    }
}
