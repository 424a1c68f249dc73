extension Dequantize {
    /// FP4 (E2M1) code points, doubled so they are integers (ggml's `kvalues_mxfp4`).
    static let fp4Doubled: [Int8] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12]

    /// Half of the E8M0 scale `2^(e - 127)`, as ggml's `GGML_E8M0_TO_FP32_HALF` builds it from bits.
    @inline(__always) static func e8m0Half(_ e: UInt8) -> Float {
        e < 2 ? Float(bitPattern: UInt32(0x0020_0000) << UInt32(e)) : Float(bitPattern: UInt32(e - 1) << 23)
    }

    /// MXFP4, 17 bytes: `e: E8M0 | qs[16]`; w = kvalue(q) * 2^(e-128).
    static func decodeMXFP4(_ src: UnsafeRawBufferPointer, _ y: UnsafeMutablePointer<Float>, _ blocks: Int) {
        fp4Doubled.withUnsafeBufferPointer { kv in
            for i in 0 ..< blocks {
                let b = 17 * i, o = 32 * i
                let d = e8m0Half(src.u8(b))
                for j in 0 ..< 16 {
                    let q = src.u8(b + 1 + j)
                    y[o + j] = Float(kv[Int(q & 0x0F)]) * d
                    y[o + j + 16] = Float(kv[Int(q >> 4)]) * d
                }
            }
        }
    }
}
