/// The float type MLX keeps a quantized layer's scales and biases in (the dtype of the weights it
/// was quantized from).
public enum MLXScaleType: String, Sendable {
    case float32, float16, bfloat16

    /// Bytes per value.
    public var byteSize: Int { self == .float32 ? 4 : 2 }

    /// The safetensors dtype spelling (`"F32"`, `"F16"`, `"BF16"`).
    public var safetensorsName: String {
        switch self {
        case .float32: return "F32"
        case .float16: return "F16"
        case .bfloat16: return "BF16"
        }
    }

    /// Looks up a safetensors dtype spelling.
    public init?(safetensorsName: String) {
        switch safetensorsName {
        case "F32": self = .float32
        case "F16": self = .float16
        case "BF16": self = .bfloat16
        default: return nil
        }
    }
}

extension Dequantize {
    /// Bit widths `mx.quantize` accepts in affine mode.
    public static let mlxAffineBits: Set<Int> = [1, 2, 3, 4, 5, 6, 8]

    /// Decodes an MLX affine-quantized matrix (`mx.quantize(w, group_size:, bits:)`).
    ///
    /// The codes are packed into a stream of little-endian `uint32` words, least significant bits
    /// first, `bits` per weight, continuing across word boundaries; each row starts on a fresh word.
    /// Weight `w[r, c] = scales[r, c / groupSize] * q + biases[r, c / groupSize]`, computed the way
    /// `mx.dequantize` computes it: in the scales' own type, rounding after the product and after the
    /// sum. With float32 scales that is plain float32 arithmetic; with float16 or bfloat16 scales the
    /// result is the float16/bfloat16 value `mx.dequantize` returns, widened exactly to `Float`
    /// (computing in float32 and rounding after each operation gives the correctly rounded 16-bit
    /// result, because float32 has more than twice the precision plus two bits).
    ///
    /// - Parameters:
    ///   - packed: `rows * columns * bits / 8` bytes (the `.weight` tensor, dtype U32).
    ///   - scales: `rows * columns / groupSize` values of `scaleType`.
    ///   - biases: same shape and type as `scales`.
    ///   - rows: output rows.
    ///   - columns: logical row length (a multiple of `groupSize` and of `32 / gcd(bits, 32)`).
    /// - Returns: `rows * columns` values, row-major.
    public static func mlxAffine(
        packed: UnsafeRawBufferPointer, scales: UnsafeRawBufferPointer, biases: UnsafeRawBufferPointer,
        scaleType: MLXScaleType, rows: Int, columns: Int, bits: Int, groupSize: Int
    ) throws -> [Float] {
        guard mlxAffineBits.contains(bits) else {
            throw MLXQuantError.unsupported("MLX affine quantization with \(bits) bits")
        }
        guard rows >= 0, columns > 0, groupSize > 0, columns % groupSize == 0 else {
            throw MLXQuantError.unsupported("MLX affine: \(columns) columns do not split into groups of \(groupSize)")
        }
        let (rowBits, o1) = columns.multipliedReportingOverflow(by: bits)
        guard !o1, rowBits % 32 == 0 else {
            throw MLXQuantError.unsupported("MLX affine: \(columns) columns x \(bits) bits is not a whole number of uint32 words")
        }
        let rowBytes = rowBits / 8
        let groups = columns / groupSize
        let (count, o2) = rows.multipliedReportingOverflow(by: columns)
        let (packedBytes, o3) = rows.multipliedReportingOverflow(by: rowBytes)
        let (scaleCount, o4) = rows.multipliedReportingOverflow(by: groups)
        guard !o2, !o3, !o4, packed.count == packedBytes,
              scales.count == scaleCount * scaleType.byteSize, biases.count == scales.count else {
            throw MLXQuantError.unsupported(
                "MLX affine: \(rows)x\(columns) at \(bits) bits, group \(groupSize) needs \(rows * rowBytes) packed bytes "
                    + "and \(rows * groups) \(scaleType) scales and biases; got \(packed.count), \(scales.count), \(biases.count) bytes")
        }
        let load: (UnsafeRawBufferPointer, Int) -> Float
        let round: (Float) -> Float
        switch scaleType {
        case .float32:
            load = { Float(bitPattern: $0.u32(4 * $1)) }
            round = { $0 }
        case .float16:
            load = { $0.f16(2 * $1) }
            round = HalfFloat.roundToHalf
        case .bfloat16:
            load = { HalfFloat.bfloat16ToFloat($0.u16(2 * $1)) }
            round = HalfFloat.roundToBFloat16
        }
        let mask = UInt16((1 << bits) - 1)
        return [Float](unsafeUninitializedCapacity: count) { out, initialized in
            for r in 0 ..< rows {
                let rowStart = r * rowBytes
                for g in 0 ..< groups {
                    let s = load(scales, r * groups + g), b = load(biases, r * groups + g)
                    for c in g * groupSize ..< (g + 1) * groupSize {
                        let bit = c * bits
                        let byte = rowStart + bit >> 3, shift = UInt16(bit & 7)
                        var word = UInt16(packed.u8(byte))
                        if Int(shift) + bits > 8 { word |= UInt16(packed.u8(byte + 1)) << 8 }
                        let q = Float((word >> shift) & mask)
                        out[r * columns + c] = scaleType == .float32 ? s * q + b : round(round(s * q) + b)
                    }
                }
            }
            initialized = count
        }
    }
}
