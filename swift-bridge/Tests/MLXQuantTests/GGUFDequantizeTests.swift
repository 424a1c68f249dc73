import Foundation
import XCTest
@testable import MLXQuant

/// Every GGUF dequantizer against llama.cpp's own output on the shared vectors, bit for bit.
final class GGUFDequantizeTests: XCTestCase {
    static let types: [GGMLType] = [.f32, .f16, .bf16, .q4_0, .q4_1, .q5_0, .q5_1, .q8_0,
                                    .q2_K, .q3_K, .q4_K, .q5_K, .q6_K, .mxfp4]

    func check(_ type: GGMLType) throws {
        let stem = type.name.lowercased()
        let file = try GGUFFile(url: Vectors.url("\(stem).gguf"))
        let t = try file.requireTensor(named: "weight")
        XCTAssertEqual(t.type, type)
        XCTAssertEqual(t.shape, [4, 256])
        XCTAssertEqual(t.dimensions, [256, 4])
        XCTAssertEqual(t.byteCount, 4 * 256 / type.blockSize * type.typeSize)
        XCTAssertEqual(file.architecture, "mlxquant-test")
        assertBitIdentical(try file.dequantize(t), try Vectors.f32("\(stem).f32"), type.name)
    }

    func testF32() throws { try check(.f32) }
    func testF16() throws { try check(.f16) }
    func testBF16() throws { try check(.bf16) }
    func testQ4_0() throws { try check(.q4_0) }
    func testQ4_1() throws { try check(.q4_1) }
    func testQ5_0() throws { try check(.q5_0) }
    func testQ5_1() throws { try check(.q5_1) }
    func testQ8_0() throws { try check(.q8_0) }
    func testQ2_K() throws { try check(.q2_K) }
    func testQ3_K() throws { try check(.q3_K) }
    func testQ4_K() throws { try check(.q4_K) }
    func testQ5_K() throws { try check(.q5_K) }
    func testQ6_K() throws { try check(.q6_K) }
    func testMXFP4() throws { try check(.mxfp4) }

    func testEveryDequantizableTypeHasAVector() {
        XCTAssertEqual(Set(Self.types), Set(GGMLType.allCases.filter(\.canDequantize)))
    }

    func testTypeTable() {
        // Spot checks against ggml-common.h; the ids are the GGUF on-disk values.
        XCTAssertEqual(GGMLType(rawValue: 12), .q4_K)
        XCTAssertEqual(GGMLType(rawValue: 42), .q2_0)
        XCTAssertNil(GGMLType(rawValue: 4))
        XCTAssertNil(GGMLType(rawValue: 31))
        XCTAssertEqual(GGMLType.q4_K.bitsPerWeight, 4.5)
        XCTAssertEqual(GGMLType.q6_K.bitsPerWeight, 6.5625)
        XCTAssertEqual(GGMLType.nvfp4.blockSize, 64)
        XCTAssertEqual(GGMLType(name: "iq2_xxs"), .iq2_XXS)
        XCTAssertEqual(GGMLType.allCases.count, 35)
    }

    func testUnsupportedTypeThrows() throws {
        let bytes = [UInt8](repeating: 0, count: 66)
        try bytes.withUnsafeBytes { raw in
            assertThrowsMLXQuantError(try Dequantize.ggml(raw, type: .iq2_XXS, count: 256), "IQ2_XXS")
            assertThrowsMLXQuantError(try Dequantize.ggml(raw, type: .q4_0, count: 32), "need 18 bytes")
            assertThrowsMLXQuantError(try Dequantize.ggml(raw, type: .q4_0, count: 33), "whole number")
        }
    }
}
