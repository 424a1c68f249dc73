/// Decoders from stored tensor bytes to float32, bit-identical with the reference implementations.
///
/// GGUF types follow ggml's `dequantize_row_*` (llama.cpp's ggml-quants.c) operation by operation,
/// in float32, without fused multiply-adds (Swift never contracts `a * b + c` on its own), so the
/// output equals libggml's to the bit. MLX affine groups follow `mx.dequantize`
/// (see ``mlxAffine(packed:scales:biases:scaleType:rows:columns:bits:groupSize:)``).
public enum Dequantize {
    /// Decodes `count` weights of `type` from `bytes`.
    ///
    /// - Parameters:
    ///   - bytes: exactly `type.byteCount(elements: count)` bytes of GGUF blocks.
    ///   - type: one of the types with ``GGMLType/canDequantize``.
    ///   - count: number of weights, a multiple of the type's block size.
    /// - Returns: `count` float32 values in storage order.
    public static func ggml(_ bytes: UnsafeRawBufferPointer, type: GGMLType, count: Int) throws -> [Float] {
        guard let expected = type.byteCount(elements: count) else {
            throw MLXQuantError.unsupported("\(type.name): \(count) weights are not a whole number of \(type.blockSize)-weight blocks")
        }
        guard bytes.count == expected else {
            throw MLXQuantError.unsupported("\(type.name): \(count) weights need \(expected) bytes, got \(bytes.count)")
        }
        let decode: (UnsafeRawBufferPointer, UnsafeMutablePointer<Float>, Int) -> Void
        switch type {
        case .f32: decode = decodeF32
        case .f16: decode = decodeF16
        case .bf16: decode = decodeBF16
        case .q4_0: decode = decodeQ4_0
        case .q4_1: decode = decodeQ4_1
        case .q5_0: decode = decodeQ5_0
        case .q5_1: decode = decodeQ5_1
        case .q8_0: decode = decodeQ8_0
        case .q2_K: decode = decodeQ2_K
        case .q3_K: decode = decodeQ3_K
        case .q4_K: decode = decodeQ4_K
        case .q5_K: decode = decodeQ5_K
        case .q6_K: decode = decodeQ6_K
        case .mxfp4: decode = decodeMXFP4
        case .iq2_XXS: decode = decodeIQ2_XXS
        case .iq2_XS: decode = decodeIQ2_XS
        case .iq2_S: decode = decodeIQ2_S
        case .iq3_XXS: decode = decodeIQ3_XXS
        case .iq3_S: decode = decodeIQ3_S
        case .iq1_S: decode = decodeIQ1_S
        case .iq1_M: decode = decodeIQ1_M
        case .iq4_NL: decode = decodeIQ4_NL
        case .iq4_XS: decode = decodeIQ4_XS
        default:
            throw MLXQuantError.unsupported("no dequantizer for ggml type \(type.name)")
        }
        let blocks = count / type.blockSize
        return [Float](unsafeUninitializedCapacity: count) { out, initialized in
            if let base = out.baseAddress, count > 0 { decode(bytes, base, blocks) }
            initialized = count
        }
    }
}

// Little-endian loads shared by the block decoders.
extension UnsafeRawBufferPointer {
    @inline(__always) func u8(_ offset: Int) -> UInt8 { self[offset] }

    @inline(__always) func i8(_ offset: Int) -> Int8 { Int8(bitPattern: self[offset]) }

    @inline(__always) func u16(_ offset: Int) -> UInt16 {
        UInt16(littleEndian: loadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }

    @inline(__always) func u32(_ offset: Int) -> UInt32 {
        UInt32(littleEndian: loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }

    /// An IEEE half at `offset`, widened exactly (ggml's `GGML_FP16_TO_FP32`).
    @inline(__always) func f16(_ offset: Int) -> Float { HalfFloat.halfToFloat(u16(offset)) }
}
