import Foundation
import XCTest
@testable import MLXQuant

/// Builds GGUF bytes field by field, valid or not.
struct GGUFBuilder {
    var bytes: [UInt8] = []

    mutating func u8(_ v: UInt8) { bytes.append(v) }
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    mutating func string(_ s: String) { u64(UInt64(s.utf8.count)); bytes += Array(s.utf8) }

    mutating func header(version: UInt32 = 3, tensors: UInt64, kvs: UInt64) {
        u32(GGUFFile.magic); u32(version); u64(tensors); u64(kvs)
    }

    /// A tensor info: name, dims (ne order), type, offset.
    mutating func tensor(_ name: String, dims: [UInt64], type: UInt32 = 0, offset: UInt64 = 0) {
        string(name); u32(UInt32(dims.count)); dims.forEach { u64($0) }; u32(type); u64(offset)
    }

    mutating func pad(to alignment: Int = 32) { while bytes.count % alignment != 0 { u8(0) } }

    var data: Data { Data(bytes) }
}

/// Damaged and hostile files: the reader must throw a descriptive error, quickly, never trap or
/// allocate what the file could not hold.
final class GGUFHostileTests: XCTestCase {
    func open(_ b: GGUFBuilder) throws -> GGUFFile { try GGUFFile(data: b.data, path: "hostile.gguf") }

    /// A minimal valid file: one F32 tensor of 8 values.
    func valid() -> GGUFBuilder {
        var b = GGUFBuilder()
        b.header(tensors: 1, kvs: 1)
        b.string("general.architecture"); b.u32(8); b.string("llama")
        b.tensor("t", dims: [8])
        b.pad()
        for i in 0 ..< 8 { b.u32(Float(i).bitPattern) }
        return b
    }

    func testValidBaseline() throws {
        let f = try open(valid())
        XCTAssertEqual(try f.dequantize(named: "t"), (0 ..< 8).map(Float.init))
    }

    func testEveryTruncationOfARealFileThrows() throws {
        let full = try Data(contentsOf: Vectors.url("metadata.gguf"))
        let reference = try GGUFFile(data: full)
        let end = reference.tensors.map { reference.dataOffset + Int($0.offset) + $0.byteCount }.max()!
        for n in 0 ..< full.count {
            let prefix = full.prefix(n)
            if n >= end {
                XCTAssertNoThrow(try GGUFFile(data: prefix), "prefix \(n) holds every tensor")
                continue
            }
            XCTAssertThrowsError(try GGUFFile(data: prefix, path: "cut.gguf"), "prefix of \(n) bytes") { error in
                XCTAssertTrue(error is MLXQuantError, "\(error)")
            }
        }
    }

    func testTruncatedHeader() {
        var b = GGUFBuilder()
        b.u32(GGUFFile.magic); b.u32(3); b.u32(1)
        assertThrowsMLXQuantError(try open(b), "truncated: tensor count at byte 8 needs 8 bytes, only 4 left")
    }

    func testBadMagicAndVersion() {
        var b = GGUFBuilder()
        b.u32(0x1234_5678); b.u32(3); b.u64(0); b.u64(0)
        assertThrowsMLXQuantError(try open(b), "not a GGUF file")
        var v1 = GGUFBuilder()
        v1.header(version: 1, tensors: 0, kvs: 0)
        assertThrowsMLXQuantError(try open(v1), "GGUF version 1")
        var v4 = GGUFBuilder()
        v4.header(version: 4, tensors: 0, kvs: 0)
        assertThrowsMLXQuantError(try open(v4), "GGUF version 4")
    }

    func testHugeTensorCountThrowsImmediately() {
        var b = GGUFBuilder()
        b.header(tensors: 1 << 60, kvs: 0)
        b.bytes += [UInt8](repeating: 0, count: 64)
        let start = Date()
        assertThrowsMLXQuantError(try open(b), "declares 1152921504606846976 tensors")
        XCTAssertLessThan(Date().timeIntervalSince(start), 0.5)
    }

    func testHugeKeyValueCount() {
        var b = GGUFBuilder()
        b.header(tensors: 0, kvs: UInt64.max)
        assertThrowsMLXQuantError(try open(b), "metadata entries")
    }

    func testStringLengthPastEnd() {
        var b = GGUFBuilder()
        b.header(tensors: 0, kvs: 1)
        b.u64(1 << 40); b.bytes += Array("general.name".utf8)
        assertThrowsMLXQuantError(try open(b), "metadata key 0 at byte 24 declares 1099511627776 bytes")
        var v = GGUFBuilder()
        v.header(tensors: 0, kvs: 1)
        v.string("k"); v.u32(8); v.u64(UInt64.max); v.u8(65)
        assertThrowsMLXQuantError(try open(v), "metadata \"k\" at byte")
    }

    func testHugeArrayLengths() {
        for (elementType, length) in [(UInt32(0), UInt64(1) << 62), (8, 1 << 62), (9, 1 << 62), (12, UInt64.max)] {
            var b = GGUFBuilder()
            b.header(tensors: 0, kvs: 1)
            b.string("a"); b.u32(9); b.u32(elementType); b.u64(length)
            b.bytes += [UInt8](repeating: 0, count: 100)
            let start = Date()
            assertThrowsMLXQuantError(try open(b), "declares \(length) elements")
            XCTAssertLessThan(Date().timeIntervalSince(start), 0.5)
        }
    }

    func testHugeNestedArrayLength() {
        var b = GGUFBuilder()
        b.header(tensors: 0, kvs: 1)
        b.string("nested"); b.u32(9); b.u32(9); b.u64(2)
        b.u32(0); b.u64(1); b.u8(7)              // inner array 0: [7]
        b.u32(6); b.u64(1 << 62)                  // inner array 1: 2^62 floats
        assertThrowsMLXQuantError(try open(b), "declares 4611686018427387904 elements of type float32")
    }

    func testDeepNesting() {
        var b = GGUFBuilder()
        b.header(tensors: 0, kvs: 1)
        b.string("deep"); b.u32(9)
        for _ in 0 ..< 1000 { b.u32(9); b.u64(1) }
        assertThrowsMLXQuantError(try open(b), "nested deeper than 8")
    }

    func testBadValueTypesAndDuplicates() {
        var t = GGUFBuilder()
        t.header(tensors: 0, kvs: 1)
        t.string("x"); t.u32(13); t.u8(0)
        assertThrowsMLXQuantError(try open(t), "unknown value type 13")
        var bo = GGUFBuilder()
        bo.header(tensors: 0, kvs: 1)
        bo.string("x"); bo.u32(7); bo.u8(2)
        assertThrowsMLXQuantError(try open(bo), "bool byte is 2")
        var d = GGUFBuilder()
        d.header(tensors: 0, kvs: 2)
        d.string("x"); d.u32(0); d.u8(1)
        d.string("x"); d.u32(0); d.u8(2)
        assertThrowsMLXQuantError(try open(d), "duplicate metadata key \"x\"")
        var dt = GGUFBuilder()
        dt.header(tensors: 2, kvs: 0)
        dt.tensor("t", dims: [1]); dt.tensor("t", dims: [1], offset: 32)
        dt.pad(); dt.bytes += [UInt8](repeating: 0, count: 64)
        assertThrowsMLXQuantError(try open(dt), "duplicate tensor name \"t\"")
    }

    func testAlignment() {
        for bad in [UInt32(0), 3, 48] {
            var b = GGUFBuilder()
            b.header(tensors: 0, kvs: 1)
            b.string("general.alignment"); b.u32(4); b.u32(bad)
            assertThrowsMLXQuantError(try open(b), "general.alignment")
        }
    }

    func testMisalignedTensorOffset() {
        var b = GGUFBuilder()
        b.header(tensors: 1, kvs: 0)
        b.tensor("t", dims: [4], offset: 4)
        b.pad(); b.bytes += [UInt8](repeating: 0, count: 64)
        assertThrowsMLXQuantError(try open(b), "tensor \"t\": offset 4 is not a multiple of the alignment 32")
    }

    func testTensorOffsetOutOfRange() {
        for offset: UInt64 in [32, 1 << 40, UInt64.max - 31] {
            var b = GGUFBuilder()
            b.header(tensors: 1, kvs: 0)
            b.tensor("t", dims: [8], offset: offset)
            b.pad(); b.bytes += [UInt8](repeating: 0, count: 32)
            assertThrowsMLXQuantError(try open(b), "run past the end of the file")
        }
    }

    func testTensorDataPastEnd() {
        var b = valid()
        b.bytes.removeLast(4)
        assertThrowsMLXQuantError(try open(b), "tensor \"t\": 32 bytes at data offset 0 run past the end")
    }

    func testDimensionOverflow() {
        var b = GGUFBuilder()
        b.header(tensors: 1, kvs: 0)
        b.tensor("t", dims: [1 << 32, 1 << 32, 1 << 32])
        b.pad(); b.bytes += [UInt8](repeating: 0, count: 32)
        assertThrowsMLXQuantError(try open(b), "overflows 64 bits")
        var d = GGUFBuilder()
        d.header(tensors: 1, kvs: 0)
        d.tensor("t", dims: [UInt64.max])
        assertThrowsMLXQuantError(try open(d), "dimension 0 is 18446744073709551615")
        var s = GGUFBuilder()
        s.header(tensors: 1, kvs: 0)
        s.tensor("t", dims: [1 << 62], type: 0)          // 2^62 floats: the byte size overflows
        assertThrowsMLXQuantError(try open(s), "byte size of 4611686018427387904 F32 weights overflows")
        var big = GGUFBuilder()
        big.header(tensors: 1, kvs: 0)
        big.tensor("t", dims: [1 << 20, 1 << 20], type: 0)  // 4 TiB: fits in Int, not in the file
        big.pad(); big.bytes += [UInt8](repeating: 0, count: 32)
        assertThrowsMLXQuantError(try open(big), "run past the end of the file")
    }

    func testBadTensorInfo() {
        var t = GGUFBuilder()
        t.header(tensors: 1, kvs: 0)
        t.tensor("t", dims: [32], type: 4)
        assertThrowsMLXQuantError(try open(t), "unknown ggml type id 4")
        var n = GGUFBuilder()
        n.header(tensors: 1, kvs: 0)
        n.tensor("t", dims: [1, 1, 1, 1, 1])
        assertThrowsMLXQuantError(try open(n), "5 dimensions")
        var z = GGUFBuilder()
        z.header(tensors: 1, kvs: 0)
        z.tensor("t", dims: [])
        z.bytes += [UInt8](repeating: 0, count: 32)
        assertThrowsMLXQuantError(try open(z), "0 dimensions")
        var q = GGUFBuilder()
        q.header(tensors: 1, kvs: 0)
        q.tensor("t", dims: [100], type: GGMLType.q4_K.rawValue)
        assertThrowsMLXQuantError(try open(q), "row length 100 is not a multiple of Q4_K's block size 256")
    }

    func testRandomGarbageNeverTraps() {
        // Random mutations of a valid file: each open either succeeds or throws MLXQuantError.
        let base = valid().bytes
        var seed: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next() -> UInt64 { seed = seed &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407; return seed >> 33 }
        for _ in 0 ..< 3000 {
            var bytes = base
            for _ in 0 ..< 1 + Int(next() % 4) {
                let i = Int(next() % UInt64(bytes.count))
                bytes[i] = next() % 3 == 0 ? 0xFF : UInt8(truncatingIfNeeded: next())
            }
            do {
                let f = try GGUFFile(data: Data(bytes))
                for t in f.tensors where t.type.canDequantize { _ = try? f.dequantize(t) }
            } catch {
                XCTAssertTrue(error is MLXQuantError, "\(error)")
            }
        }
    }
}
