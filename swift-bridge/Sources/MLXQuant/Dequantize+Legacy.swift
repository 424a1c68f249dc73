// The 32-weight block types of ggml (ggml-common.h). In every one, byte j of `qs` holds weight j in
// its low nibble and weight j + 16 in its high nibble.

extension Dequantize {
    /// Q4_0, 18 bytes: `d: f16 | qs[16]`; w = (q - 8) * d.
    static func decodeQ4_0(_ src: UnsafeRawBufferPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        for i in 0 ..< blocks {
            let b = 18 * i, o = 32 * i
            let d = src.f16(b)
            for j in 0 ..< 16 {
                let q = src.u8(b + 2 + j)
                y[o + j] = Float(Int(q & 0x0F) - 8) * d
                y[o + j + 16] = Float(Int(q >> 4) - 8) * d
            }
        }
    }

    /// Q4_1, 20 bytes: `d: f16 | m: f16 | qs[16]`; w = q * d + m.
    static func decodeQ4_1(_ src: UnsafeRawBufferPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        for i in 0 ..< blocks {
            let b = 20 * i, o = 32 * i
            let d = src.f16(b), m = src.f16(b + 2)
            for j in 0 ..< 16 {
                let q = src.u8(b + 4 + j)
                y[o + j] = Float(q & 0x0F) * d + m
                y[o + j + 16] = Float(q >> 4) * d + m
            }
        }
    }

    /// The fifth bits of a Q5 block: bit j of the little-endian `qh` belongs to weight j.
    @inline(__always) private static func fifthBits(_ qh: UInt32, _ j: Int) -> (UInt8, UInt8) {
        (UInt8(truncatingIfNeeded: (qh >> UInt32(j)) << 4) & 0x10,
         UInt8(truncatingIfNeeded: qh >> UInt32(j + 12)) & 0x10)
    }

    /// Q5_0, 22 bytes: `d: f16 | qh[4] | qs[16]`; w = (q - 16) * d.
    static func decodeQ5_0(_ src: UnsafeRawBufferPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        for i in 0 ..< blocks {
            let b = 22 * i, o = 32 * i
            let d = src.f16(b)
            let qh = src.u32(b + 2)
            for j in 0 ..< 16 {
                let q = src.u8(b + 6 + j)
                let (h0, h1) = fifthBits(qh, j)
                y[o + j] = Float(Int((q & 0x0F) | h0) - 16) * d
                y[o + j + 16] = Float(Int((q >> 4) | h1) - 16) * d
            }
        }
    }

    /// Q5_1, 24 bytes: `d: f16 | m: f16 | qh[4] | qs[16]`; w = q * d + m.
    static func decodeQ5_1(_ src: UnsafeRawBufferPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        for i in 0 ..< blocks {
            let b = 24 * i, o = 32 * i
            let d = src.f16(b), m = src.f16(b + 2)
            let qh = src.u32(b + 4)
            for j in 0 ..< 16 {
                let q = src.u8(b + 8 + j)
                let (h0, h1) = fifthBits(qh, j)
                y[o + j] = Float((q & 0x0F) | h0) * d + m
                y[o + j + 16] = Float((q >> 4) | h1) * d + m
            }
        }
    }

    /// Q8_0, 34 bytes: `d: f16 | qs[32] int8`; w = q * d.
    static func decodeQ8_0(_ src: UnsafeRawBufferPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        for i in 0 ..< blocks {
            let b = 34 * i, o = 32 * i
            let d = src.f16(b)
            for j in 0 ..< 32 { y[o + j] = Float(src.i8(b + 2 + j)) * d }
        }
    }
}
