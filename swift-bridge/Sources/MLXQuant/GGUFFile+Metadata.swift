/// The type tag of a GGUF metadata value (`enum gguf_type` in llama.cpp's gguf.h).
public enum GGUFValueType: UInt32, Sendable, CaseIterable {
    case uint8 = 0, int8 = 1, uint16 = 2, int16 = 3, uint32 = 4, int32 = 5
    case float32 = 6, bool = 7, string = 8, array = 9, uint64 = 10, int64 = 11, float64 = 12

    /// The fewest bytes one value of this type takes in a file (used to bound array lengths).
    var minimumEncodedSize: Int {
        switch self {
        case .uint8, .int8, .bool: return 1
        case .uint16, .int16: return 2
        case .uint32, .int32, .float32: return 4
        case .uint64, .int64, .float64: return 8
        case .string: return 8            // UInt64 length, possibly no bytes
        case .array: return 12            // UInt32 element type + UInt64 count
        }
    }
}

/// A GGUF metadata array: all elements share one type; arrays may nest.
///
/// Elements are kept in typed Swift arrays, so an array never takes much more memory than its bytes
/// in the file.
public enum GGUFArray: Equatable, Sendable {
    case uint8([UInt8]), int8([Int8]), uint16([UInt16]), int16([Int16])
    case uint32([UInt32]), int32([Int32]), uint64([UInt64]), int64([Int64])
    case float32([Float]), float64([Double]), bool([Bool])
    case string([String])
    case array([GGUFArray])

    /// Number of elements.
    public var count: Int {
        switch self {
        case let .uint8(a): return a.count
        case let .int8(a): return a.count
        case let .uint16(a): return a.count
        case let .int16(a): return a.count
        case let .uint32(a): return a.count
        case let .int32(a): return a.count
        case let .uint64(a): return a.count
        case let .int64(a): return a.count
        case let .float32(a): return a.count
        case let .float64(a): return a.count
        case let .bool(a): return a.count
        case let .string(a): return a.count
        case let .array(a): return a.count
        }
    }

    /// The element type tag.
    public var elementType: GGUFValueType {
        switch self {
        case .uint8: return .uint8
        case .int8: return .int8
        case .uint16: return .uint16
        case .int16: return .int16
        case .uint32: return .uint32
        case .int32: return .int32
        case .uint64: return .uint64
        case .int64: return .int64
        case .float32: return .float32
        case .float64: return .float64
        case .bool: return .bool
        case .string: return .string
        case .array: return .array
        }
    }

    /// Integer elements widened to `Int64` (`nil` for non-integer arrays or a `UInt64` above `Int64.max`).
    public var integers: [Int64]? {
        switch self {
        case let .uint8(a): return a.map { Int64($0) }
        case let .int8(a): return a.map { Int64($0) }
        case let .uint16(a): return a.map { Int64($0) }
        case let .int16(a): return a.map { Int64($0) }
        case let .uint32(a): return a.map { Int64($0) }
        case let .int32(a): return a.map { Int64($0) }
        case let .int64(a): return a
        case let .uint64(a):
            var out: [Int64] = []
            out.reserveCapacity(a.count)
            for v in a {
                guard let w = Int64(exactly: v) else { return nil }
                out.append(w)
            }
            return out
        default: return nil
        }
    }

    /// The elements of a string array.
    public var strings: [String]? {
        if case let .string(a) = self { return a }
        return nil
    }
}

/// One GGUF metadata value.
public enum GGUFValue: Equatable, Sendable {
    case uint8(UInt8), int8(Int8), uint16(UInt16), int16(Int16)
    case uint32(UInt32), int32(Int32), uint64(UInt64), int64(Int64)
    case float32(Float), float64(Double), bool(Bool)
    case string(String)
    case array(GGUFArray)

    /// The type tag of this value.
    public var type: GGUFValueType {
        switch self {
        case .uint8: return .uint8
        case .int8: return .int8
        case .uint16: return .uint16
        case .int16: return .int16
        case .uint32: return .uint32
        case .int32: return .int32
        case .uint64: return .uint64
        case .int64: return .int64
        case .float32: return .float32
        case .float64: return .float64
        case .bool: return .bool
        case .string: return .string
        case .array: return .array
        }
    }

    /// Any integer value as `Int64` (`nil` for other types or a `UInt64` above `Int64.max`).
    public var integer: Int64? {
        switch self {
        case let .uint8(v): return Int64(v)
        case let .int8(v): return Int64(v)
        case let .uint16(v): return Int64(v)
        case let .int16(v): return Int64(v)
        case let .uint32(v): return Int64(v)
        case let .int32(v): return Int64(v)
        case let .uint64(v): return Int64(exactly: v)
        case let .int64(v): return v
        default: return nil
        }
    }

    /// Any numeric value as `Double`.
    public var double: Double? {
        switch self {
        case let .float32(v): return Double(v)
        case let .float64(v): return v
        case let .uint64(v): return Double(v)
        default: return integer.map(Double.init)
        }
    }

    /// The string, for a string value.
    public var string: String? {
        if case let .string(s) = self { return s }
        return nil
    }

    /// The Boolean, for a bool value.
    public var bool: Bool? {
        if case let .bool(b) = self { return b }
        return nil
    }

    /// The array, for an array value.
    public var array: GGUFArray? {
        if case let .array(a) = self { return a }
        return nil
    }
}

extension GGUFFile {
    /// Deepest array nesting accepted (llama.cpp writes none; this bounds the parser's recursion).
    public static let maximumArrayNesting = 8

    /// The metadata value for `key`.
    public subscript(key: String) -> GGUFValue? { metadata[key] }

    /// `general.architecture`, e.g. `"llama"`.
    public var architecture: String? { metadata["general.architecture"]?.string }
}

extension ByteReader {
    mutating func readGGUFValueType(_ what: @autoclosure () -> String) throws -> GGUFValueType {
        let start = offset
        let raw = try read(UInt32.self, what())
        guard let t = GGUFValueType(rawValue: raw) else {
            throw MLXQuantError.malformed(path: path, reason: "\(what()) at byte \(start): unknown value type \(raw)")
        }
        return t
    }

    mutating func readGGUFValue(_ type: GGUFValueType, _ what: @autoclosure () -> String, depth: Int = 0) throws -> GGUFValue {
        switch type {
        case .uint8: return .uint8(try read(UInt8.self, what()))
        case .int8: return .int8(try read(Int8.self, what()))
        case .uint16: return .uint16(try read(UInt16.self, what()))
        case .int16: return .int16(try read(Int16.self, what()))
        case .uint32: return .uint32(try read(UInt32.self, what()))
        case .int32: return .int32(try read(Int32.self, what()))
        case .uint64: return .uint64(try read(UInt64.self, what()))
        case .int64: return .int64(try read(Int64.self, what()))
        case .float32: return .float32(try readFloat(what()))
        case .float64: return .float64(try readDouble(what()))
        case .bool: return .bool(try readGGUFBool(what()))
        case .string: return .string(try readGGUFString(what()))
        case .array: return .array(try readGGUFArray(what(), depth: depth))
        }
    }

    private mutating func readGGUFBool(_ what: @autoclosure () -> String) throws -> Bool {
        let start = offset
        let b = try read(UInt8.self, what())
        guard b <= 1 else {
            throw MLXQuantError.malformed(path: path, reason: "\(what()) at byte \(start): bool byte is \(b), not 0 or 1")
        }
        return b == 1
    }

    private mutating func readMany<T>(_ count: Int, _ body: (inout ByteReader) throws -> T) rethrows -> [T] {
        var out: [T] = []
        out.reserveCapacity(count)
        for _ in 0 ..< count { out.append(try body(&self)) }
        return out
    }

    mutating func readGGUFArray(_ what: @autoclosure () -> String, depth: Int) throws -> GGUFArray {
        let label = what()
        if depth >= GGUFFile.maximumArrayNesting {
            throw MLXQuantError.malformed(
                path: path, reason: "\(label) at byte \(offset): arrays nested deeper than \(GGUFFile.maximumArrayNesting)")
        }
        let elementType = try readGGUFValueType("\(label) element type")
        let start = offset
        let count64 = try read(UInt64.self, "\(label) length")
        // Every element takes at least `minimumEncodedSize` bytes: a longer array cannot fit.
        let fits = UInt64(remaining) / UInt64(elementType.minimumEncodedSize)
        if count64 > fits {
            throw MLXQuantError.malformed(
                path: path,
                reason: "\(label) at byte \(start) declares \(count64) elements of type \(elementType), "
                    + "but only \(remaining) bytes are left in the file")
        }
        let n = Int(count64)
        switch elementType {
        case .uint8: return .uint8(try readMany(n) { try $0.read(UInt8.self, label) })
        case .int8: return .int8(try readMany(n) { try $0.read(Int8.self, label) })
        case .uint16: return .uint16(try readMany(n) { try $0.read(UInt16.self, label) })
        case .int16: return .int16(try readMany(n) { try $0.read(Int16.self, label) })
        case .uint32: return .uint32(try readMany(n) { try $0.read(UInt32.self, label) })
        case .int32: return .int32(try readMany(n) { try $0.read(Int32.self, label) })
        case .uint64: return .uint64(try readMany(n) { try $0.read(UInt64.self, label) })
        case .int64: return .int64(try readMany(n) { try $0.read(Int64.self, label) })
        case .float32: return .float32(try readMany(n) { try $0.readFloat(label) })
        case .float64: return .float64(try readMany(n) { try $0.readDouble(label) })
        case .bool: return .bool(try readMany(n) { try $0.readGGUFBool(label) })
        case .string: return .string(try readMany(n) { try $0.readGGUFString("\(label) element") })
        case .array: return .array(try readMany(n) { try $0.readGGUFArray("\(label) element", depth: depth + 1) })
        }
    }
}
