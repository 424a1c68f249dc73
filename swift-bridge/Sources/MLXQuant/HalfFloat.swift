/// Exact conversions between 16-bit floats and `Float`, written out so that they behave the same on
/// every platform (Swift's `Float16` is missing on Intel Macs).
///
/// ``halfToFloat(_:)`` is exact (as ggml's `GGML_FP16_TO_FP32`); ``floatToHalf(_:)`` and
/// ``floatToBFloat16(_:)`` round to nearest, ties to even, as C casts and MLX do.
public enum HalfFloat {
    /// IEEE binary16 bits to `Float` (exact; NaN payloads kept).
    @inlinable
    public static func halfToFloat(_ h: UInt16) -> Float {
        let sign = UInt32(h & 0x8000) << 16
        let exponent = UInt32(h >> 10) & 0x1F
        let mantissa = UInt32(h & 0x3FF)
        if exponent == 0 {
            // zero or subnormal: mantissa * 2^-24, exact in Float
            let magnitude = Float(mantissa) * Float(bitPattern: 0x3380_0000)
            return sign == 0 ? magnitude : -magnitude
        }
        if exponent == 0x1F {
            return Float(bitPattern: sign | 0x7F80_0000 | (mantissa << 13))
        }
        return Float(bitPattern: sign | ((exponent + 112) << 23) | (mantissa << 13))
    }

    /// `Float` to IEEE binary16 bits, round to nearest even; overflow gives infinity.
    @inlinable
    public static func floatToHalf(_ f: Float) -> UInt16 {
        let x = f.bitPattern
        let sign = UInt16((x >> 16) & 0x8000)
        let exponent = Int((x >> 23) & 0xFF)
        var mantissa = x & 0x7F_FFFF
        if exponent == 0xFF {
            return sign | 0x7C00 | (mantissa != 0 ? UInt16(0x200 | (mantissa >> 13)) : 0)
        }
        let e = exponent - 127 + 15
        if e >= 31 { return sign | 0x7C00 }
        if e <= 0 {
            if e < -10 { return sign }
            mantissa |= 0x80_0000
            let shift = UInt32(14 - e)
            var h = mantissa >> shift
            let rest = mantissa & ((1 << shift) - 1)
            let half: UInt32 = 1 << (shift - 1)
            if rest > half || (rest == half && (h & 1) == 1) { h += 1 }
            return sign | UInt16(h)
        }
        var h = (UInt32(e) << 10) | (mantissa >> 13)
        let rest = mantissa & 0x1FFF
        if rest > 0x1000 || (rest == 0x1000 && (h & 1) == 1) { h += 1 }  // may carry into infinity: correct
        return sign | UInt16(h)
    }

    /// bfloat16 bits to `Float` (exact).
    @inlinable
    public static func bfloat16ToFloat(_ b: UInt16) -> Float {
        Float(bitPattern: UInt32(b) << 16)
    }

    /// `Float` to bfloat16 bits, round to nearest even (NaN stays NaN).
    @inlinable
    public static func floatToBFloat16(_ f: Float) -> UInt16 {
        let x = f.bitPattern
        if f.isNaN { return UInt16(x >> 16) | 0x40 }
        return UInt16((x &+ 0x7FFF &+ ((x >> 16) & 1)) >> 16)
    }

    /// `f` rounded to the nearest binary16 value, as a `Float`.
    @inlinable
    public static func roundToHalf(_ f: Float) -> Float { halfToFloat(floatToHalf(f)) }

    /// `f` rounded to the nearest bfloat16 value, as a `Float`.
    @inlinable
    public static func roundToBFloat16(_ f: Float) -> Float { bfloat16ToFloat(floatToBFloat16(f)) }
}
