/// A little-endian cursor over a byte buffer in which every read is checked against the end.
///
/// Internal: the GGUF and safetensors parsers use it so that no count, length or offset taken from
/// a file is trusted before it has been compared with the bytes actually left.
struct ByteReader {
    let bytes: UnsafeRawBufferPointer
    let path: String
    private(set) var offset: Int

    init(_ bytes: UnsafeRawBufferPointer, path: String, offset: Int = 0) {
        self.bytes = bytes
        self.path = path
        self.offset = offset
    }

    /// Bytes left after the cursor.
    var remaining: Int { bytes.count - offset }

    /// Throws ``MLXQuantError/truncated(path:what:offset:needed:available:)`` unless `count` bytes are left.
    func require(_ count: UInt64, _ what: @autoclosure () -> String) throws {
        if count > UInt64(remaining) {
            throw MLXQuantError.truncated(path: path, what: what(), offset: offset, needed: count, available: remaining)
        }
    }

    mutating func read<T: FixedWidthInteger>(_: T.Type, _ what: @autoclosure () -> String) throws -> T {
        try require(UInt64(MemoryLayout<T>.size), what())
        let v = bytes.loadUnaligned(fromByteOffset: offset, as: T.self)
        offset += MemoryLayout<T>.size
        return T(littleEndian: v)
    }

    mutating func readFloat(_ what: @autoclosure () -> String) throws -> Float {
        Float(bitPattern: try read(UInt32.self, what()))
    }

    mutating func readDouble(_ what: @autoclosure () -> String) throws -> Double {
        Double(bitPattern: try read(UInt64.self, what()))
    }

    /// A raw run of `count` bytes (checked first, so a huge `count` throws instead of allocating).
    mutating func readBytes(_ count: UInt64, _ what: @autoclosure () -> String) throws -> UnsafeRawBufferPointer {
        try require(count, what())
        let n = Int(count)
        let slice = UnsafeRawBufferPointer(rebasing: bytes[offset ..< offset + n])
        offset += n
        return slice
    }

    /// A GGUF string: a `UInt64` byte length, then UTF-8 bytes (invalid sequences are replaced).
    mutating func readGGUFString(_ what: @autoclosure () -> String) throws -> String {
        let start = offset
        let length = try read(UInt64.self, "\(what()) length")
        if length > UInt64(remaining) {
            throw MLXQuantError.malformed(
                path: path,
                reason: "\(what()) at byte \(start) declares \(length) bytes, only \(remaining) left in the file")
        }
        let raw = try readBytes(length, what())
        return String(decoding: raw, as: UTF8.self)
    }

    mutating func skip(to newOffset: Int, _ what: @autoclosure () -> String) throws {
        if newOffset < offset || newOffset > bytes.count {
            throw MLXQuantError.truncated(
                path: path, what: what(), offset: offset,
                needed: UInt64(max(0, newOffset - offset)), available: remaining)
        }
        offset = newOffset
    }
}
