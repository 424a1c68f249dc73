import Foundation

/// What a model file or folder holds: architecture, parameter count, tensor types and sizes.
///
/// Encodes to the JSON that `mlxquant-inspect --json` prints, designed to be compared with
/// `mlxquant inspect --json` on the Python side:
///
/// ```json
/// {"format": "gguf", "architecture": "llama", "parameters": 134515008,
///  "tensors": [{"name": "blk.0.attn_q.weight", "type": "Q4_1", "shape": [576, 576], "bytes": 207360}],
///  "bits_per_weight": 5.85, "bytes": 98433600}
/// ```
/// Shapes are row-major (outermost first) for both formats, i.e. GGUF's `ne` reversed.
public struct ModelSummary: Codable, Equatable, Sendable {
    /// One tensor line of a summary.
    public struct Tensor: Codable, Equatable, Sendable {
        /// Tensor name as stored (GGUF name, or the MLX `.weight` name for quantized layers).
        public var name: String
        /// GGML type name for GGUF (`"Q4_K"`), safetensors dtype or `"MLX_Q4_G64"` for MLX.
        public var type: String
        /// Row-major logical shape.
        public var shape: [Int]
        /// Bytes on disk (an MLX quantized layer counts its scales and biases).
        public var bytes: Int

        /// Number of weights.
        public var parameters: Int { shape.reduce(1, *) }
    }

    /// `"gguf"` or `"mlx"`.
    public var format: String
    /// `general.architecture` (GGUF) or `model_type` (MLX config.json).
    public var architecture: String?
    /// Total number of weights over all tensors.
    public var parameters: Int
    /// Every tensor, in file order for GGUF and by name for MLX.
    public var tensors: [Tensor]
    /// Mean storage bits per weight: `bytes * 8 / parameters`.
    public var bitsPerWeight: Double
    /// Total tensor bytes.
    public var bytes: Int

    enum CodingKeys: String, CodingKey {
        case format, architecture, parameters, tensors, bytes
        case bitsPerWeight = "bits_per_weight"
    }

    /// Builds a summary from tensors (parameters, bytes and bits per weight are summed up).
    public init(format: String, architecture: String?, tensors: [Tensor]) {
        self.format = format
        self.architecture = architecture
        self.tensors = tensors
        parameters = tensors.reduce(0) { $0 + $1.parameters }
        bytes = tensors.reduce(0) { $0 + $1.bytes }
        bitsPerWeight = parameters == 0 ? 0 : Double(bytes) * 8 / Double(parameters)
    }

    /// Summary of a GGUF file.
    public init(gguf file: GGUFFile) {
        self.init(format: "gguf", architecture: file.architecture, tensors: file.tensors.map {
            Tensor(name: $0.name, type: $0.type.name, shape: $0.shape, bytes: $0.byteCount)
        })
    }

    /// Summary of an MLX model folder.
    public init(mlx folder: MLXModelFolder) {
        self.init(format: "mlx", architecture: folder.modelType, tensors: folder.tensors.map {
            Tensor(name: $0.name, type: $0.typeName, shape: $0.shape, bytes: $0.byteCount)
        })
    }

    /// Opens `url` as an MLX folder (a directory) or a GGUF file and summarizes it.
    public init(contentsOf url: URL) throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else {
            throw MLXQuantError.io(path: url.path, reason: "no such file or directory")
        }
        if isDirectory.boolValue {
            self.init(mlx: try MLXModelFolder(url: url))
        } else {
            self.init(gguf: try GGUFFile(url: url))
        }
    }

    /// Bytes per tensor type, e.g. `["Q4_K": 70_000_000, "Q6_K": 20_000_000]`.
    public var bytesByType: [String: Int] {
        tensors.reduce(into: [:]) { $0[$1.type, default: 0] += $1.bytes }
    }

    /// Whether the weights fit in `memoryBytes` with `reservedBytes` kept free
    /// (for the KV cache, activations and the system).
    public func fits(memoryBytes: Int, reservedBytes: Int = 0) -> Bool {
        let (need, overflow) = bytes.addingReportingOverflow(reservedBytes)
        return !overflow && need <= memoryBytes
    }

    /// The summary as JSON with sorted keys (the `mlxquant-inspect --json` output).
    public func jsonData(prettyPrinted: Bool = true) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = prettyPrinted ? [.prettyPrinted, .sortedKeys] : [.sortedKeys]
        return try encoder.encode(self)
    }
}
