import Foundation

/// A decoded JSON value with booleans and numbers kept apart (Foundation's `JSONSerialization`
/// bridges both to `NSNumber`, so `1` and `true` cannot be told apart on every platform).
enum JSONValue: Decodable, Equatable {
    case null, bool(Bool), int(Int), double(Double), string(String)
    case array([JSONValue]), object([String: JSONValue])

    init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let i = try? c.decode(Int.self) { self = .int(i) }
        else if let d = try? c.decode(Double.self) { self = .double(d) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([JSONValue].self) { self = .array(a) }
        else { self = .object(try c.decode([String: JSONValue].self)) }
    }

    /// Parses `data`, throwing ``MLXQuantError/malformed(path:reason:)`` naming `path` on bad JSON.
    static func parse(_ data: Data, path: String) throws -> JSONValue {
        do {
            return try JSONDecoder().decode(JSONValue.self, from: data)
        } catch {
            throw MLXQuantError.malformed(path: path, reason: "invalid JSON (\(error))")
        }
    }

    var object: [String: JSONValue]? { if case let .object(o) = self { return o }; return nil }
    var string: String? { if case let .string(s) = self { return s }; return nil }
    var int: Int? { if case let .int(i) = self { return i }; return nil }
    var bool: Bool? { if case let .bool(b) = self { return b }; return nil }
    var array: [JSONValue]? { if case let .array(a) = self { return a }; return nil }

    /// A list of non-negative integers, or `nil`.
    var nonNegativeInts: [Int]? {
        guard let a = array else { return nil }
        var out: [Int] = []
        out.reserveCapacity(a.count)
        for v in a {
            guard let n = v.int, n >= 0 else { return nil }
            out.append(n)
        }
        return out
    }
}

extension JSONValue: CustomStringConvertible {
    /// Compact JSON-like text, for error messages.
    var description: String {
        switch self {
        case .null: return "null"
        case let .bool(b): return "\(b)"
        case let .int(i): return "\(i)"
        case let .double(d): return "\(d)"
        case let .string(s): return "\"\(s)\""
        case let .array(a): return "[" + a.map(\.description).joined(separator: ", ") + "]"
        case let .object(o): return "{" + o.keys.sorted().map { "\"\($0)\": \(o[$0]!)" }.joined(separator: ", ") + "}"
        }
    }
}
