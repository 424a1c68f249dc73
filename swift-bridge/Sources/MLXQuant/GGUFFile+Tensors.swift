import Foundation

/// One tensor of a GGUF file: name, type, dimensions and where its bytes are.
public struct GGUFTensorInfo: Equatable, Sendable {
    /// ggml's `GGML_MAX_DIMS`.
    public static let maximumDimensions: UInt32 = 4

    /// The tensor's name, e.g. `"blk.0.attn_q.weight"`.
    public let name: String
    /// Its ggml type.
    public let type: GGMLType
    /// Dimensions in ggml order (`ne`): `dimensions[0]` is the row length, the fastest-varying axis.
    public let dimensions: [Int]
    /// Offset of the data from the start of the file's tensor data section (``GGUFFile/dataOffset``).
    public let offset: UInt64
    /// Number of weights.
    public let elementCount: Int
    /// Bytes of data.
    public let byteCount: Int

    /// Dimensions in row-major order (outermost first, as NumPy, MLX and PyTorch write them):
    /// the reverse of ``dimensions``.
    public var shape: [Int] { dimensions.reversed() }
}

extension GGUFFile {
    /// The tensor named `name`, or a thrown ``MLXQuantError/malformed(path:reason:)``.
    public func requireTensor(named name: String) throws -> GGUFTensorInfo {
        guard let t = tensor(named: name) else {
            throw MLXQuantError.malformed(path: path, reason: "no tensor named \"\(name)\"")
        }
        return t
    }

    /// Calls `body` with the raw bytes of `tensor` (no copy: they point into the mapping).
    public func withBytes<R>(of tensor: GGUFTensorInfo, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        // Bounds were checked when the file was opened.
        let start = dataOffset + Int(tensor.offset)
        return try data.withUnsafeBytes { raw in
            try body(UnsafeRawBufferPointer(rebasing: raw[start ..< start + tensor.byteCount]))
        }
    }

    /// A copy of the raw bytes of `tensor`.
    public func bytes(of tensor: GGUFTensorInfo) -> Data {
        withBytes(of: tensor) { Data($0) }
    }

    /// The values of `tensor` as float32, row-major, exactly as ggml's `dequantize_row_*` gives them.
    ///
    /// - Throws: ``MLXQuantError/unsupported(_:)`` for a type without a dequantizer
    ///   (see ``GGMLType/canDequantize``).
    public func dequantize(_ tensor: GGUFTensorInfo) throws -> [Float] {
        try withBytes(of: tensor) { try Dequantize.ggml($0, type: tensor.type, count: tensor.elementCount) }
    }

    /// The values of the tensor called `name` as float32 (see ``dequantize(_:)``).
    public func dequantize(named name: String) throws -> [Float] {
        try dequantize(try requireTensor(named: name))
    }
}
