import Foundation

/// One logical tensor of an MLX model folder.
public struct MLXTensor: Equatable, Sendable {
    /// How the tensor is stored.
    public enum Storage: Equatable, Sendable {
        /// A plain tensor of a safetensors dtype (`"F32"`, `"BF16"`, ...).
        case plain(dtype: String)
        /// An affine-quantized matrix: `.weight` codes, `.scales` and `.biases` of `scaleType`.
        case affine(bits: Int, groupSize: Int, scaleType: MLXScaleType)
        /// Another MLX quantization mode (`"mxfp4"`, `"nvfp4"`, `"mxfp8"`): listed, not dequantized.
        case otherMode(mode: String, bits: Int, groupSize: Int)
    }

    /// The name of the weight, e.g. `"model.layers.0.mlp.down_proj.weight"`.
    public let name: String
    /// Its storage.
    public let storage: Storage
    /// The logical (unpacked) row-major shape.
    public let shape: [Int]
    /// Bytes on disk, scales and biases included.
    public let byteCount: Int
    /// The stored tensors it is made of (`.weight`, `.scales`, `.biases`).
    public let storedNames: [String]

    /// Number of logical weights.
    public var elementCount: Int { shape.reduce(1, *) }

    /// `true` for quantized storage.
    public var isQuantized: Bool {
        if case .plain = storage { return false }
        return true
    }

    /// A short type name: the dtype for plain tensors, `"MLX_Q4_G64"` for 4-bit affine groups of 64,
    /// `"MLX_MXFP4_G32"` for other modes.
    public var typeName: String {
        switch storage {
        case let .plain(dtype): return dtype
        case let .affine(bits, groupSize, _): return "MLX_Q\(bits)_G\(groupSize)"
        case let .otherMode(mode, _, groupSize): return "MLX_\(mode.uppercased())_G\(groupSize)"
        }
    }
}

extension MLXModelFolder {
    typealias StoredMap = [String: (file: Int, info: SafetensorsFile.TensorInfo)]

    static func group(stored: StoredMap, quantization: MLXQuantizationConfig?, folder: String) throws -> [MLXTensor] {
        func bad(_ reason: String) -> MLXQuantError { .malformed(path: folder, reason: reason) }
        var consumed = Set<String>()
        var out: [MLXTensor] = []
        for scalesName in stored.keys.sorted() where scalesName.hasSuffix(".scales") {
            let module = String(scalesName.dropLast(".scales".count))
            let weightName = module + ".weight", biasesName = module + ".biases"
            guard let weight = stored[weightName]?.info, let scales = stored[scalesName]?.info else { continue }
            guard let q = quantization else {
                throw bad("\(module) has scales but config.json has no quantization block")
            }
            guard let p = q.parameters(forModule: module) else {
                throw bad("\(module) is stored quantized but config.json lists it as false (unquantized)")
            }
            guard weight.dtype == "U32", let packed = weight.shape.last, weight.shape.count >= 1,
                  scales.shape.count == weight.shape.count, Array(scales.shape.dropLast()) == Array(weight.shape.dropLast()),
                  p.bits > 0, p.bits <= 8, p.groupSize > 0 else {
                throw bad("\(module): weight \(weight.dtype)\(weight.shape) / scales \(scales.shape) do not form a quantized matrix")
            }
            let columns = packed * 32 / p.bits
            guard packed * 32 % p.bits == 0, columns % p.groupSize == 0, scales.shape.last == columns / p.groupSize else {
                throw bad("\(module): \(packed) packed words at \(p.bits) bits and group size \(p.groupSize) "
                    + "disagree with scales shape \(scales.shape)")
            }
            let shape = Array(weight.shape.dropLast()) + [columns]
            var names = [weightName, scalesName]
            var bytes = weight.byteCount + scales.byteCount
            let storage: MLXTensor.Storage
            if p.mode == "affine" {
                guard let biases = stored[biasesName]?.info else { throw bad("\(module): affine mode but no \(biasesName)") }
                guard let st = MLXScaleType(safetensorsName: scales.dtype), biases.dtype == scales.dtype,
                      biases.shape == scales.shape else {
                    throw bad("\(module): scales \(scales.dtype)\(scales.shape) and biases \(biases.dtype)\(biases.shape) must be one float type and shape")
                }
                names.append(biasesName)
                bytes += biases.byteCount
                storage = .affine(bits: p.bits, groupSize: p.groupSize, scaleType: st)
            } else {
                if let biases = stored[biasesName]?.info {
                    names.append(biasesName)
                    bytes += biases.byteCount
                }
                storage = .otherMode(mode: p.mode, bits: p.bits, groupSize: p.groupSize)
            }
            consumed.formUnion(names)
            out.append(MLXTensor(name: weightName, storage: storage, shape: shape, byteCount: bytes, storedNames: names))
        }
        for (name, s) in stored where !consumed.contains(name) {
            out.append(MLXTensor(name: name, storage: .plain(dtype: s.info.dtype), shape: s.info.shape,
                                 byteCount: s.info.byteCount, storedNames: [name]))
        }
        return out.sorted { $0.name < $1.name }
    }

    /// The values of a logical tensor as float32, row-major.
    ///
    /// Plain F32/F16/BF16 tensors are widened exactly; affine-quantized ones are decoded with
    /// ``Dequantize/mlxAffine(packed:scales:biases:scaleType:rows:columns:bits:groupSize:)``, which
    /// matches `mx.dequantize` bit for bit.
    public func dequantize(_ tensor: MLXTensor) throws -> [Float] {
        func part(_ name: String) throws -> (SafetensorsFile, SafetensorsFile.TensorInfo) {
            guard let s = storedTensor(named: name) else {
                throw MLXQuantError.malformed(path: url.path, reason: "missing stored tensor \"\(name)\"")
            }
            return s
        }
        switch tensor.storage {
        case .plain:
            let (file, info) = try part(tensor.name)
            return try file.floats(info)
        case let .affine(bits, groupSize, scaleType):
            let (wf, w) = try part(tensor.storedNames[0])
            let (sf, s) = try part(tensor.storedNames[1])
            let (bf, b) = try part(tensor.storedNames[2])
            let columns = tensor.shape.last ?? 0
            let rows = columns == 0 ? 0 : tensor.elementCount / columns
            return try wf.withBytes(of: w) { wb in
                try sf.withBytes(of: s) { sb in
                    try bf.withBytes(of: b) { bb in
                        try Dequantize.mlxAffine(packed: wb, scales: sb, biases: bb, scaleType: scaleType,
                                                 rows: rows, columns: columns, bits: bits, groupSize: groupSize)
                    }
                }
            }
        case let .otherMode(mode, _, _):
            throw MLXQuantError.unsupported("\(url.path): \(tensor.name) uses MLX mode \(mode); only affine is dequantized")
        }
    }

    /// The values of the logical tensor called `name` (see ``dequantize(_:)``).
    public func dequantize(named name: String) throws -> [Float] {
        guard let t = tensor(named: name) else {
            throw MLXQuantError.malformed(path: url.path, reason: "no tensor named \"\(name)\"")
        }
        return try dequantize(t)
    }
}
