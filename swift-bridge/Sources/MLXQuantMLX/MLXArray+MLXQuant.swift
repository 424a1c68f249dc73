// Apple platforms only: turns tensors loaded by MLXQuant into mlx-swift arrays and layers.
// Package.swift declares this target (and its mlx-swift dependency) only on macOS/iOS, and the
// source compiles to nothing where MLX cannot be imported.

#if canImport(MLX)
import Foundation
import MLX
import MLXNN
import MLXQuant

/// A quantized layer's stored arrays, ready for `QuantizedLinear(weight:bias:scales:biases:groupSize:bits:mode:)`.
public struct MLXQuantizedArrays {
    /// Packed codes, `uint32`, shape `[rows, columns * bits / 32]`.
    public let weight: MLXArray
    /// Per-group scales in their stored float type.
    public let scales: MLXArray
    /// Per-group biases (`nil` for modes without biases such as mxfp4).
    public let biases: MLXArray?
    public let groupSize: Int
    public let bits: Int
    public let mode: QuantizationMode
}

extension MLXScaleType {
    /// The mlx-swift dtype of this scale type.
    public var dtype: DType {
        switch self {
        case .float32: return .float32
        case .float16: return .float16
        case .bfloat16: return .bfloat16
        }
    }
}

extension SafetensorsFile {
    /// The tensor's bytes as an `MLXArray` of its own dtype (no conversion).
    public func mlxArray(_ tensor: TensorInfo) throws -> MLXArray {
        let dtypes: [String: DType] = [
            "BOOL": .bool, "U8": .uint8, "I8": .int8, "U16": .uint16, "I16": .int16,
            "U32": .uint32, "I32": .int32, "U64": .uint64, "I64": .int64,
            "F16": .float16, "BF16": .bfloat16, "F32": .float32, "F64": .float64,
        ]
        guard let dtype = dtypes[tensor.dtype] else {
            throw MLXQuantError.unsupported("\(path): \(tensor.name) has dtype \(tensor.dtype), which MLX cannot hold")
        }
        return MLXArray(withBytes(of: tensor) { Data($0) }, tensor.shape, dtype: dtype)
    }
}

extension MLXModelFolder {
    /// A logical tensor as an `MLXArray`: plain tensors keep their dtype; quantized ones are dequantized
    /// to float32 with MLXQuant's bit-exact decoder (use ``quantizedArrays(_:)`` to keep them packed).
    public func mlxArray(_ tensor: MLXTensor) throws -> MLXArray {
        if case .plain = tensor.storage, let stored = storedTensor(named: tensor.name) {
            return try stored.file.mlxArray(stored.info)
        }
        return MLXArray(try dequantize(tensor), tensor.shape)
    }

    /// The packed weight, scales and biases of a quantized tensor, as MLX stores them.
    public func quantizedArrays(_ tensor: MLXTensor) throws -> MLXQuantizedArrays {
        func array(_ name: String) throws -> MLXArray {
            guard let stored = storedTensor(named: name) else {
                throw MLXQuantError.malformed(path: url.path, reason: "missing stored tensor \"\(name)\"")
            }
            return try stored.file.mlxArray(stored.info)
        }
        let names = tensor.storedNames
        switch tensor.storage {
        case let .affine(bits, groupSize, _):
            return MLXQuantizedArrays(weight: try array(names[0]), scales: try array(names[1]), biases: try array(names[2]),
                                      groupSize: groupSize, bits: bits, mode: .affine)
        case let .otherMode(mode, bits, groupSize):
            guard let m = QuantizationMode(rawValue: mode) else {
                throw MLXQuantError.unsupported("MLX quantization mode \(mode)")
            }
            return MLXQuantizedArrays(weight: try array(names[0]), scales: try array(names[1]),
                                      biases: names.count > 2 ? try array(names[2]) : nil,
                                      groupSize: groupSize, bits: bits, mode: m)
        case .plain:
            throw MLXQuantError.unsupported("\(tensor.name) is not quantized")
        }
    }

    /// A `QuantizedLinear` built from a quantized `<module>.weight` (with `<module>.bias` if stored).
    public func quantizedLinear(module: String) throws -> QuantizedLinear {
        guard let t = tensor(named: module + ".weight") else {
            throw MLXQuantError.malformed(path: url.path, reason: "no tensor \(module).weight")
        }
        let q = try quantizedArrays(t)
        let bias = try tensor(named: module + ".bias").map { try mlxArray($0) }
        return QuantizedLinear(weight: q.weight, bias: bias, scales: q.scales, biases: q.biases,
                               groupSize: q.groupSize, bits: q.bits, mode: q.mode)
    }
}

extension GGUFFile {
    /// A GGUF tensor dequantized to a float32 `MLXArray` (row-major shape, i.e. `ne` reversed),
    /// bit-identical with llama.cpp's `dequantize_row_*`.
    public func mlxArray(_ tensor: GGUFTensorInfo) throws -> MLXArray {
        MLXArray(try dequantize(tensor), tensor.shape)
    }
}
#endif
