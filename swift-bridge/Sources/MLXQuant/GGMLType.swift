/// A ggml tensor type, as stored in a GGUF tensor info (`enum ggml_type` in llama.cpp's ggml.h).
///
/// Block geometry (weights per block, bytes per block) follows ggml-common.h. Removed ids
/// (4, 5, 31–33, 36–38) are not represented: a file using them is rejected when it is opened.
public enum GGMLType: UInt32, CaseIterable, Sendable, CustomStringConvertible {
    case f32 = 0, f16 = 1
    case q4_0 = 2, q4_1 = 3, q5_0 = 6, q5_1 = 7, q8_0 = 8, q8_1 = 9
    case q2_K = 10, q3_K = 11, q4_K = 12, q5_K = 13, q6_K = 14, q8_K = 15
    case iq2_XXS = 16, iq2_XS = 17, iq3_XXS = 18, iq1_S = 19, iq4_NL = 20
    case iq3_S = 21, iq2_S = 22, iq4_XS = 23
    case i8 = 24, i16 = 25, i32 = 26, i64 = 27, f64 = 28
    case iq1_M = 29, bf16 = 30
    case tq1_0 = 34, tq2_0 = 35
    case mxfp4 = 39, nvfp4 = 40, q1_0 = 41, q2_0 = 42

    /// llama.cpp's spelling, e.g. `"Q4_K"`, `"IQ2_XXS"`, `"BF16"`.
    public var name: String {
        switch self {
        case .f32: return "F32"
        case .f16: return "F16"
        case .q4_0: return "Q4_0"
        case .q4_1: return "Q4_1"
        case .q5_0: return "Q5_0"
        case .q5_1: return "Q5_1"
        case .q8_0: return "Q8_0"
        case .q8_1: return "Q8_1"
        case .q2_K: return "Q2_K"
        case .q3_K: return "Q3_K"
        case .q4_K: return "Q4_K"
        case .q5_K: return "Q5_K"
        case .q6_K: return "Q6_K"
        case .q8_K: return "Q8_K"
        case .iq2_XXS: return "IQ2_XXS"
        case .iq2_XS: return "IQ2_XS"
        case .iq3_XXS: return "IQ3_XXS"
        case .iq1_S: return "IQ1_S"
        case .iq4_NL: return "IQ4_NL"
        case .iq3_S: return "IQ3_S"
        case .iq2_S: return "IQ2_S"
        case .iq4_XS: return "IQ4_XS"
        case .i8: return "I8"
        case .i16: return "I16"
        case .i32: return "I32"
        case .i64: return "I64"
        case .f64: return "F64"
        case .iq1_M: return "IQ1_M"
        case .bf16: return "BF16"
        case .tq1_0: return "TQ1_0"
        case .tq2_0: return "TQ2_0"
        case .mxfp4: return "MXFP4"
        case .nvfp4: return "NVFP4"
        case .q1_0: return "Q1_0"
        case .q2_0: return "Q2_0"
        }
    }

    public var description: String { name }

    /// Looks a type up by llama.cpp name, case-insensitively (`"q4_k"` gives ``q4_K``).
    public init?(name: String) {
        let upper = name.uppercased()
        guard let t = GGMLType.allCases.first(where: { $0.name == upper }) else { return nil }
        self = t
    }

    /// Weights per block (1 for plain numeric types).
    public var blockSize: Int {
        switch self {
        case .f32, .f16, .bf16, .i8, .i16, .i32, .i64, .f64: return 1
        case .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q8_1, .iq4_NL, .mxfp4: return 32
        case .nvfp4, .q2_0: return 64
        case .q1_0: return 128
        case .q2_K, .q3_K, .q4_K, .q5_K, .q6_K, .q8_K, .iq2_XXS, .iq2_XS, .iq3_XXS, .iq1_S,
             .iq3_S, .iq2_S, .iq4_XS, .iq1_M, .tq1_0, .tq2_0:
            return 256
        }
    }

    /// Bytes per block.
    public var typeSize: Int {
        switch self {
        case .f32: return 4
        case .f16, .bf16, .i16: return 2
        case .i8: return 1
        case .i32: return 4
        case .i64, .f64: return 8
        case .q4_0: return 18       // d:f16, qs[16]
        case .q4_1: return 20       // d:f16, m:f16, qs[16]
        case .q5_0: return 22       // d:f16, qh[4], qs[16]
        case .q5_1: return 24       // d:f16, m:f16, qh[4], qs[16]
        case .q8_0: return 34       // d:f16, qs[32] int8
        case .q8_1: return 36       // d:f16, s:f16, qs[32] int8
        case .q2_K: return 84       // scales[16], qs[64], d:f16, dmin:f16
        case .q3_K: return 110      // hmask[32], qs[64], scales[12], d:f16
        case .q4_K: return 144      // d:f16, dmin:f16, scales[12], qs[128]
        case .q5_K: return 176      // d:f16, dmin:f16, scales[12], qh[32], qs[128]
        case .q6_K: return 210      // ql[128], qh[64], scales[16] int8, d:f16
        case .q8_K: return 292      // d:f32, qs[256] int8, bsums[16] int16
        case .iq2_XXS: return 66    // d:f16, qs[32] u16
        case .iq2_XS: return 74     // d:f16, qs[32] u16, scales[8]
        case .iq3_XXS: return 98    // d:f16, qs[64], scales_and_signs[32]
        case .iq1_S: return 50      // d:f16, qs[32], qh[8] u16
        case .iq4_NL: return 18     // d:f16, qs[16]
        case .iq3_S: return 110     // d:f16, qs[64], qh[8], signs[32], scales[4]
        case .iq2_S: return 82      // d:f16, qs[64] (indices, signs), qh[8], scales[8]
        case .iq4_XS: return 136    // d:f16, scales_h:u16, scales_l[4], qs[128]
        case .iq1_M: return 56      // qs[32], qh[16], scales[8] (d:f16 in their top nibbles)
        case .tq1_0: return 54
        case .tq2_0: return 66
        case .mxfp4: return 17      // e:E8M0, qs[16]
        case .nvfp4: return 36      // d[4]:UE4M3, qs[32]
        case .q1_0: return 18
        case .q2_0: return 18
        }
    }

    /// `true` for block-quantized types (block size above 1).
    public var isQuantized: Bool { blockSize > 1 }

    /// Storage bits per weight, block scales included (e.g. 4.5 for Q4_K).
    public var bitsPerWeight: Double { Double(typeSize * 8) / Double(blockSize) }

    /// Whether ``Dequantize/ggml(_:type:count:)`` can decode this type.
    public var canDequantize: Bool {
        switch self {
        case .f32, .f16, .bf16, .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q2_K, .q3_K, .q4_K, .q5_K, .q6_K, .mxfp4,
             .iq2_XXS, .iq2_XS, .iq2_S, .iq3_XXS, .iq3_S, .iq1_S, .iq1_M, .iq4_NL, .iq4_XS:
            return true
        default:
            return false
        }
    }

    /// Bytes taken by `elements` weights, or `nil` when `elements` is not a whole number of blocks
    /// or the size overflows `Int`.
    public func byteCount(elements: Int) -> Int? {
        guard elements >= 0, elements % blockSize == 0 else { return nil }
        let (bytes, overflow) = (elements / blockSize).multipliedReportingOverflow(by: typeSize)
        return overflow ? nil : bytes
    }
}
