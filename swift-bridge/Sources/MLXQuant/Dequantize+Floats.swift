extension Dequantize {
    /// F32: little-endian float32, copied bit for bit.
    static func decodeF32(_ src: UnsafeRawBufferPointer, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
        for i in 0 ..< n { y[i] = Float(bitPattern: src.u32(4 * i)) }
    }

    /// F16: IEEE binary16 widened exactly.
    static func decodeF16(_ src: UnsafeRawBufferPointer, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
        for i in 0 ..< n { y[i] = src.f16(2 * i) }
    }

    /// BF16: the top 16 bits of a float32.
    static func decodeBF16(_ src: UnsafeRawBufferPointer, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
        for i in 0 ..< n { y[i] = HalfFloat.bfloat16ToFloat(src.u16(2 * i)) }
    }
}
