import Foundation

/// A GGUF file (version 2 or 3), memory-mapped and validated.
///
/// Opening a file parses the header, every metadata key/value and every tensor info, and checks
/// each count, length, dimension and offset against the size of the file before anything is
/// allocated or read, so a damaged or hostile file throws ``MLXQuantError`` instead of trapping or
/// exhausting memory. Tensor data stays in the mapping until it is asked for.
///
/// ```swift
/// let file = try GGUFFile(url: URL(fileURLWithPath: "model.Q4_K_M.gguf"))
/// print(file.architecture ?? "?", file.tensors.count)
/// let w = try file.dequantize(named: "blk.0.attn_q.weight")   // [Float], row-major
/// ```
public struct GGUFFile: @unchecked Sendable {
    /// The little-endian magic number: the bytes `"GGUF"`.
    public static let magic: UInt32 = 0x4655_4747
    /// The alignment of tensor data when `general.alignment` is absent.
    public static let defaultAlignment = 32

    /// Where the file was read from (used in error messages).
    public let path: String
    /// The whole file (memory-mapped when opened from a URL).
    public let data: Data
    /// GGUF format version (2 or 3).
    public let version: UInt32
    /// Every metadata key/value.
    public let metadata: [String: GGUFValue]
    /// Metadata keys in file order.
    public let metadataKeys: [String]
    /// Tensor infos in file order.
    public let tensors: [GGUFTensorInfo]
    /// `general.alignment`, or 32.
    public let alignment: Int
    /// Byte offset of the tensor data section in the file.
    public let dataOffset: Int

    private let tensorIndex: [String: Int]

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

    /// Parses a GGUF file already in memory.
    ///
    /// - Parameters:
    ///   - data: the whole file.
    ///   - path: a name for error messages.
    public init(data: Data, path: String = "<memory>") throws {
        self.data = data
        self.path = path
        let parsed = try data.withUnsafeBytes { raw in try GGUFFile.parse(raw, path: path) }
        version = parsed.version
        metadata = parsed.metadata
        metadataKeys = parsed.keys
        tensors = parsed.tensors
        alignment = parsed.alignment
        dataOffset = parsed.dataOffset
        var index: [String: Int] = [:]
        for (i, t) in parsed.tensors.enumerated() { index[t.name] = i }
        tensorIndex = index
    }

    /// The tensor info called `name`, if any.
    public func tensor(named name: String) -> GGUFTensorInfo? {
        tensorIndex[name].map { tensors[$0] }
    }

    // MARK: - Parsing

    private struct Parsed {
        var version: UInt32 = 0
        var metadata: [String: GGUFValue] = [:]
        var keys: [String] = []
        var tensors: [GGUFTensorInfo] = []
        var alignment = GGUFFile.defaultAlignment
        var dataOffset = 0
    }

    /// Smallest tensor info: name length (8) + n_dims (4) + one dimension (8) + type (4) + offset (8).
    private static let minimumTensorInfoSize = 32
    /// Smallest key/value: key length (8) + type (4) + a one-byte value.
    private static let minimumKeyValueSize = 13

    private static func parse(_ raw: UnsafeRawBufferPointer, path: String) throws -> Parsed {
        var r = ByteReader(raw, path: path)
        var p = Parsed()
        let magic = try r.read(UInt32.self, "magic")
        guard magic == GGUFFile.magic else {
            throw MLXQuantError.malformed(path: path, reason: String(format: "not a GGUF file (magic 0x%08x)", magic))
        }
        p.version = try r.read(UInt32.self, "version")
        guard p.version == 2 || p.version == 3 else {
            throw MLXQuantError.unsupported("\(path): GGUF version \(p.version) (only 2 and 3 are read)")
        }
        let tensorCount = try r.read(UInt64.self, "tensor count")
        let kvCount = try r.read(UInt64.self, "metadata key/value count")
        if kvCount > UInt64(r.remaining / minimumKeyValueSize) {
            throw MLXQuantError.malformed(
                path: path, reason: "header declares \(kvCount) metadata entries; \(r.remaining) bytes cannot hold them")
        }
        if tensorCount > UInt64(r.remaining / minimumTensorInfoSize) {
            throw MLXQuantError.malformed(
                path: path, reason: "header declares \(tensorCount) tensors; \(r.remaining) bytes cannot hold their infos")
        }

        p.keys.reserveCapacity(Int(kvCount))
        for i in 0 ..< Int(kvCount) {
            let key = try r.readGGUFString("metadata key \(i)")
            let type = try r.readGGUFValueType("metadata \"\(key)\" type")
            let value = try r.readGGUFValue(type, "metadata \"\(key)\"")
            if p.metadata.updateValue(value, forKey: key) != nil {
                throw MLXQuantError.malformed(path: path, reason: "duplicate metadata key \"\(key)\"")
            }
            p.keys.append(key)
        }

        if let a = p.metadata["general.alignment"] {
            guard let v = a.integer, v > 0, v & (v - 1) == 0, v <= 1 << 30 else {
                throw MLXQuantError.malformed(path: path, reason: "general.alignment \(a) is not a power of two")
            }
            p.alignment = Int(v)
        }

        p.tensors.reserveCapacity(Int(tensorCount))
        var seen = Set<String>()
        for i in 0 ..< Int(tensorCount) {
            let info = try readTensorInfo(&r, index: i)
            guard seen.insert(info.name).inserted else {
                throw MLXQuantError.malformed(path: path, reason: "duplicate tensor name \"\(info.name)\"")
            }
            p.tensors.append(info)
        }

        // Tensor data starts at the next multiple of the alignment.
        let (padded, overflow) = r.offset.addingReportingOverflow(p.alignment - 1)
        p.dataOffset = overflow ? Int.max : padded / p.alignment * p.alignment
        if p.tensors.isEmpty {
            p.dataOffset = min(p.dataOffset, raw.count)
            return p
        }
        guard p.dataOffset <= raw.count else {
            throw MLXQuantError.truncated(
                path: path, what: "tensor data section", offset: r.offset,
                needed: UInt64(p.dataOffset - r.offset), available: r.remaining)
        }
        let dataBytes = UInt64(raw.count - p.dataOffset)
        for t in p.tensors {
            if t.offset % UInt64(p.alignment) != 0 {
                throw MLXQuantError.malformed(
                    path: path, reason: "tensor \"\(t.name)\": offset \(t.offset) is not a multiple of the alignment \(p.alignment)")
            }
            if t.offset > dataBytes || UInt64(t.byteCount) > dataBytes - t.offset {
                throw MLXQuantError.malformed(
                    path: path,
                    reason: "tensor \"\(t.name)\": \(t.byteCount) bytes at data offset \(t.offset) run past the end "
                        + "of the file (the data section holds \(dataBytes) bytes)")
            }
        }
        return p
    }

    private static func readTensorInfo(_ r: inout ByteReader, index i: Int) throws -> GGUFTensorInfo {
        let path = r.path
        let name = try r.readGGUFString("tensor info \(i) name")
        let nDims = try r.read(UInt32.self, "tensor \"\(name)\" dimension count")
        guard nDims >= 1, nDims <= GGUFTensorInfo.maximumDimensions else {
            throw MLXQuantError.malformed(
                path: path, reason: "tensor \"\(name)\": \(nDims) dimensions (1...\(GGUFTensorInfo.maximumDimensions) allowed)")
        }
        var dims: [Int] = []
        var elements = 1
        for d in 0 ..< Int(nDims) {
            let v = try r.read(UInt64.self, "tensor \"\(name)\" dimension \(d)")
            guard let n = Int(exactly: v) else {
                throw MLXQuantError.malformed(path: path, reason: "tensor \"\(name)\": dimension \(d) is \(v)")
            }
            let (product, overflow) = elements.multipliedReportingOverflow(by: n)
            if overflow {
                throw MLXQuantError.malformed(
                    path: path, reason: "tensor \"\(name)\": the element count of dimensions \(dims + [n]) overflows 64 bits")
            }
            elements = product
            dims.append(n)
        }
        let rawType = try r.read(UInt32.self, "tensor \"\(name)\" type")
        guard let type = GGMLType(rawValue: rawType) else {
            throw MLXQuantError.malformed(path: path, reason: "tensor \"\(name)\": unknown ggml type id \(rawType)")
        }
        guard dims[0] % type.blockSize == 0 else {
            throw MLXQuantError.malformed(
                path: path, reason: "tensor \"\(name)\": row length \(dims[0]) is not a multiple of \(type.name)'s block size \(type.blockSize)")
        }
        guard let bytes = type.byteCount(elements: elements) else {
            throw MLXQuantError.malformed(path: path, reason: "tensor \"\(name)\": byte size of \(elements) \(type.name) weights overflows")
        }
        let offset = try r.read(UInt64.self, "tensor \"\(name)\" offset")
        return GGUFTensorInfo(name: name, type: type, dimensions: dims, offset: offset, elementCount: elements, byteCount: bytes)
    }
}
