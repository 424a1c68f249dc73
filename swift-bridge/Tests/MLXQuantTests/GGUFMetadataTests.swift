import Foundation
import XCTest
@testable import MLXQuant

/// Reading every metadata value type, the alignment and tensor infos of `metadata.gguf`.
final class GGUFMetadataTests: XCTestCase {
    var file: GGUFFile!

    override func setUpWithError() throws {
        file = try GGUFFile(url: Vectors.url("metadata.gguf"))
    }

    func testHeader() {
        XCTAssertEqual(file.version, 3)
        XCTAssertEqual(file.architecture, "llama")
        XCTAssertEqual(file.alignment, 64)
        XCTAssertEqual(file.dataOffset, 896)
        XCTAssertEqual(file.metadataKeys.first, "general.architecture")
        XCTAssertEqual(file.metadataKeys.count, 20)
    }

    func testScalarValues() {
        XCTAssertEqual(file["general.alignment"], .uint32(64))
        XCTAssertEqual(file["test.u8"], .uint8(200))
        XCTAssertEqual(file["test.i8"], .int8(-100))
        XCTAssertEqual(file["test.u16"], .uint16(60000))
        XCTAssertEqual(file["test.i16"], .int16(-30000))
        XCTAssertEqual(file["test.u32"], .uint32(4_000_000_000))
        XCTAssertEqual(file["test.i32"], .int32(-2_000_000_000))
        XCTAssertEqual(file["test.u64"], .uint64(1 << 63 + 5))
        XCTAssertEqual(file["test.i64"], .int64(-(1 << 62)))
        XCTAssertEqual(file["test.f32"], .float32(0.15625))
        XCTAssertEqual(file["test.f64"], .float64(-1.0e300))
        XCTAssertEqual(file["test.bool"], .bool(true))
        XCTAssertEqual(file["test.string"], .string("héllo, wörld"))
        XCTAssertEqual(file["test.empty_string"], .string(""))
        XCTAssertEqual(file["llama.block_count"]?.integer, 1)
        XCTAssertNil(file["test.u64"]?.integer, "UInt64 above Int64.max has no Int64 view")
        XCTAssertEqual(file["test.u64"]?.double, 9_223_372_036_854_775_813.0)
    }

    func testArrays() {
        XCTAssertEqual(file["test.array_i32"], .array(.int32([1, -2, 3])))
        XCTAssertEqual(file["test.array_f32"], .array(.float32([0.5, -0.25])))
        XCTAssertEqual(file["test.array_string"]?.array?.strings, ["a", "bc", ""])
        XCTAssertEqual(file["test.array_nested"], .array(.array([.int32([1, 2]), .int32([3])])))
        XCTAssertEqual(file["test.array_i32"]?.array?.integers, [1, -2, 3])
        XCTAssertEqual(file["test.array_nested"]?.array?.elementType, .array)
    }

    func testTensors() throws {
        XCTAssertEqual(file.tensors.map(\.name), ["a.f32", "b.i32", "c.f16"])
        let a = try file.requireTensor(named: "a.f32")
        XCTAssertEqual(a.shape, [3, 5])
        XCTAssertEqual(a.offset, 0)
        XCTAssertEqual(try file.dequantize(a), (0 ..< 15).map { Float($0) / 4 })
        let b = try file.requireTensor(named: "b.i32")
        XCTAssertEqual(b.type, .i32)
        XCTAssertEqual(b.offset, 64)
        let ints = file.withBytes(of: b) { raw in (0 ..< 7).map { Int32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: Int32.self)) } }
        XCTAssertEqual(ints, [-3, -2, -1, 0, 1, 2, 3])
        assertThrowsMLXQuantError(try file.dequantize(b), "no dequantizer for ggml type I32")
        let c = try file.requireTensor(named: "c.f16")
        XCTAssertEqual(c.shape, [2, 4, 8])
        XCTAssertEqual(c.dimensions, [8, 4, 2])
        XCTAssertEqual(c.offset, 128)
        XCTAssertEqual(try file.dequantize(c), (0 ..< 64).map { Float($0) / 8 })
        XCTAssertNil(file.tensor(named: "missing"))
        assertThrowsMLXQuantError(try file.dequantize(named: "missing"), "no tensor named \"missing\"")
    }

    func testSummary() {
        let s = ModelSummary(gguf: file)
        XCTAssertEqual(s.format, "gguf")
        XCTAssertEqual(s.parameters, 15 + 7 + 64)
        XCTAssertEqual(s.bytes, 60 + 28 + 128)
        XCTAssertEqual(s.tensors[2], ModelSummary.Tensor(name: "c.f16", type: "F16", shape: [2, 4, 8], bytes: 128))
        XCTAssertTrue(s.fits(memoryBytes: 216))
        XCTAssertFalse(s.fits(memoryBytes: 216, reservedBytes: 1))
        XCTAssertFalse(s.fits(memoryBytes: Int.max, reservedBytes: Int.max))
    }
}
