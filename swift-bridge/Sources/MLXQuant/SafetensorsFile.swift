import Foundation

/// A safetensors file: an 8-byte little-endian header length, a JSON header, then tensor data.
///
/// The header is bounded (at most ``maximumHeaderSize`` bytes and no more than the file holds) and
/// every tensor's `data_offsets` are checked against the data section and against its dtype and
/// shape before any tensor is exposed.
public struct SafetensorsFile: @unchecked Sendable {
    /// The safetensors format's own limit on the JSON header (100 MB).
    public static let maximumHeaderSize = 100_000_000

    /// One tensor entry of the header.
    public struct TensorInfo: Equatable, Sendable {
        /// Its key, e.g. `"model.layers.0.mlp.down_proj.scales"`.
        public let name: String
        /// The safetensors dtype, e.g. `"F32"`, `"BF16"`, `"U32"`.
        public let dtype: String
        /// Row-major shape.
        public let shape: [Int]
        /// Byte range of the data in the file (absolute offsets).
        public let range: Range<Int>

        /// Number of elements.
        public var elementCount: Int { shape.reduce(1, *) }
        /// Bytes of data.
        public var byteCount: Int { range.count }
    }

    /// Bytes per element of each safetensors dtype.
    public static let dtypeSizes: [String: Int] = [
        "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
        "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
        "I32": 4, "U32": 4, "F32": 4,
        "I64": 8, "U64": 8, "F64": 8,
    ]

    /// Where the file was read from.
    public let path: String
    /// The whole file (memory-mapped when opened from a URL).
    public let data: Data
    /// The `__metadata__` string map (e.g. `["format": "mlx"]`).
    public let metadata: [String: String]
    /// Tensors in order of their data offsets.
    public let tensors: [TensorInfo]
    private let index: [String: Int]

    /// Maps and parses the file at `url`.
    public init(url: URL) throws {
        let data: Data
        do {
            data = try Data(contentsOf: url, options: [.alwaysMapped])
        } catch {
            throw MLXQuantError.io(path: url.path, reason: error.localizedDescription)
        }
        try self.init(data: data, path: url.path)
    }

    /// Parses a safetensors file already in memory.
    public init(data: Data, path: String = "<memory>") throws {
        self.data = data
        self.path = path
        let headerLength: UInt64 = try data.withUnsafeBytes { raw in
            var r = ByteReader(raw, path: path)
            return try r.read(UInt64.self, "header length")
        }
        let available = data.count - 8
        guard headerLength <= UInt64(available), headerLength <= UInt64(Self.maximumHeaderSize) else {
            throw MLXQuantError.malformed(
                path: path, reason: "header length \(headerLength) exceeds the \(available) bytes after it (or the 100 MB limit)")
        }
        let dataStart = 8 + Int(headerLength)
        let start = data.startIndex
        let json = try JSONValue.parse(data.subdata(in: start + 8 ..< start + dataStart), path: path)
        guard let header = json.object else {
            throw MLXQuantError.malformed(path: path, reason: "header is not a JSON object")
        }
        var meta: [String: String] = [:]
        var infos: [TensorInfo] = []
        let dataBytes = data.count - dataStart
        for (name, value) in header {
            if name == "__metadata__" {
                if value == .null { continue }      // mx.save_safetensors writes null without metadata
                guard let m = value.object else {
                    throw MLXQuantError.malformed(path: path, reason: "__metadata__ is not an object")
                }
                for (k, v) in m {
                    guard let s = v.string else {
                        throw MLXQuantError.malformed(path: path, reason: "__metadata__[\"\(k)\"] is not a string")
                    }
                    meta[k] = s
                }
                continue
            }
            infos.append(try Self.tensorInfo(name, value, dataStart: dataStart, dataBytes: dataBytes, path: path))
        }
        infos.sort { ($0.range.lowerBound, $0.name) < ($1.range.lowerBound, $1.name) }
        metadata = meta
        tensors = infos
        var idx: [String: Int] = [:]
        for (i, t) in infos.enumerated() { idx[t.name] = i }
        index = idx
    }

    private static func tensorInfo(_ name: String, _ value: JSONValue, dataStart: Int, dataBytes: Int, path: String) throws -> TensorInfo {
        func bad(_ reason: String) -> MLXQuantError { .malformed(path: path, reason: "tensor \"\(name)\": \(reason)") }
        guard let entry = value.object else { throw bad("header entry is not an object") }
        guard let dtype = entry["dtype"]?.string, let size = dtypeSizes[dtype] else {
            throw bad("unknown dtype \(entry["dtype"].map { "\($0)" } ?? "missing")")
        }
        guard let shape = entry["shape"]?.nonNegativeInts else { throw bad("shape is not a list of non-negative integers") }
        guard let offsets = entry["data_offsets"]?.nonNegativeInts, offsets.count == 2,
              offsets[0] <= offsets[1], offsets[1] <= dataBytes else {
            throw bad("data_offsets are not inside the \(dataBytes)-byte data section")
        }
        var bytes = size
        for d in shape {
            let (p, overflow) = bytes.multipliedReportingOverflow(by: d)
            if overflow { throw bad("shape \(shape) overflows") }
            bytes = p
        }
        guard bytes == offsets[1] - offsets[0] else {
            throw bad("shape \(shape) of \(dtype) needs \(bytes) bytes, data_offsets give \(offsets[1] - offsets[0])")
        }
        return TensorInfo(name: name, dtype: dtype, shape: shape, range: dataStart + offsets[0] ..< dataStart + offsets[1])
    }

    /// The tensor called `name`, if any.
    public func tensor(named name: String) -> TensorInfo? { index[name].map { tensors[$0] } }

    /// The tensor called `name`, or a thrown error naming the file.
    public func requireTensor(named name: String) throws -> TensorInfo {
        guard let t = tensor(named: name) else {
            throw MLXQuantError.malformed(path: path, reason: "no tensor named \"\(name)\"")
        }
        return t
    }

    /// Calls `body` with the raw bytes of `tensor` (no copy).
    public func withBytes<R>(of tensor: TensorInfo, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try data.withUnsafeBytes { raw in try body(UnsafeRawBufferPointer(rebasing: raw[tensor.range])) }
    }

    /// The values of a float tensor (F32, F16, BF16) widened exactly to `Float`.
    public func floats(_ tensor: TensorInfo) throws -> [Float] {
        let type: GGMLType
        switch tensor.dtype {
        case "F32": type = .f32
        case "F16": type = .f16
        case "BF16": type = .bf16
        default: throw MLXQuantError.unsupported("\(path): tensor \"\(tensor.name)\" has dtype \(tensor.dtype), not a float type")
        }
        return try withBytes(of: tensor) { try Dequantize.ggml($0, type: type, count: tensor.elementCount) }
    }

    /// The values of the float tensor called `name` (see ``floats(_:)``).
    public func floats(named name: String) throws -> [Float] { try floats(try requireTensor(named: name)) }
}
