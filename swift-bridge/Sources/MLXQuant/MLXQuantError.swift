/// Every error the MLXQuant library throws on purpose.
///
/// Each case names the file (or tensor) involved and says what was wrong, so that the message of a
/// thrown error is enough to find the problem. Hostile or damaged files always surface as one of
/// these errors: the readers never trap and never allocate more than the file's size allows.
public enum MLXQuantError: Error, Equatable, Sendable {
    /// The file ended before a field could be read.
    ///
    /// - Parameters:
    ///   - path: the file.
    ///   - what: the field being read, e.g. `"tensor info 3 name"`.
    ///   - offset: the byte offset the field starts at.
    ///   - needed: the bytes the field needs.
    ///   - available: the bytes left in the file from `offset`.
    case truncated(path: String, what: String, offset: Int, needed: UInt64, available: Int)

    /// A structurally invalid file: bad magic, unknown version, out-of-range offset, duplicate key...
    case malformed(path: String, reason: String)

    /// A well-formed input that this library does not handle, e.g. a tensor type without a dequantizer.
    case unsupported(String)

    /// The file or folder could not be read at all.
    case io(path: String, reason: String)
}

extension MLXQuantError: CustomStringConvertible {
    public var description: String {
        switch self {
        case let .truncated(path, what, offset, needed, available):
            return "\(path): truncated: \(what) at byte \(offset) needs \(needed) bytes, only \(available) left"
        case let .malformed(path, reason):
            return "\(path): \(reason)"
        case let .unsupported(reason):
            return "unsupported: \(reason)"
        case let .io(path, reason):
            return "\(path): cannot read: \(reason)"
        }
    }
}

#if canImport(Foundation)
import Foundation

extension MLXQuantError: LocalizedError {
    public var errorDescription: String? { description }
}
#endif
