import Foundation
import XCTest
@testable import MLXQuant

/// The shared test vectors written by `python -m mlxquant.testing.swift_vectors`.
enum Vectors {
    static var directory: URL {
        guard let url = Bundle.module.url(forResource: "vectors", withExtension: nil) else {
            fatalError("test resources missing: Resources/vectors")
        }
        return url
    }

    static func url(_ name: String) -> URL { directory.appendingPathComponent(name) }

    /// A raw little-endian float32 file.
    static func f32(_ name: String) throws -> [Float] {
        let data = try Data(contentsOf: url(name))
        XCTAssertEqual(data.count % 4, 0, name)
        return data.withUnsafeBytes { raw in
            (0 ..< data.count / 4).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self))) }
        }
    }
}

/// Asserts that two float arrays are identical bit for bit (so -0.0 != 0.0 and NaNs compare by payload).
func assertBitIdentical(_ actual: [Float], _ expected: [Float], _ label: String, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(actual.count, expected.count, "\(label): count", file: file, line: line)
    var mismatches = 0
    var first: String?
    for i in 0 ..< min(actual.count, expected.count) where actual[i].bitPattern != expected[i].bitPattern {
        mismatches += 1
        if first == nil { first = "index \(i): got \(actual[i]) (0x\(String(actual[i].bitPattern, radix: 16))), want \(expected[i]) (0x\(String(expected[i].bitPattern, radix: 16)))" }
    }
    XCTAssertEqual(mismatches, 0, "\(label): \(mismatches) values differ; first at \(first ?? "")", file: file, line: line)
}

/// Asserts that `body` throws an ``MLXQuantError`` whose description contains `fragment`.
func assertThrowsMLXQuantError<T>(_ body: @autoclosure () throws -> T, _ fragment: String, file: StaticString = #filePath, line: UInt = #line) {
    do {
        _ = try body()
        XCTFail("expected an error mentioning \"\(fragment)\", got a result", file: file, line: line)
    } catch let error as MLXQuantError {
        XCTAssertTrue(error.description.contains(fragment), "error \"\(error)\" does not mention \"\(fragment)\"", file: file, line: line)
    } catch {
        XCTFail("expected MLXQuantError, got \(error)", file: file, line: line)
    }
}
