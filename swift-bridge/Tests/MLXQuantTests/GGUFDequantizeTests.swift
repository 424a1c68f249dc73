import Foundation
import XCTest
@testable import MLXQuant

/// Every GGUF dequantizer against llama.cpp's own output on the shared vectors, bit for bit.
final class GGUFDequantizeTests: XCTestCase {
    static let types: [GGMLType] = [.f32, .f16, .bf16, .q4_0, .q4_1, .q5_0, .q5_1, .q8_0,
                                    .q2_K, .q3_K, .q4_K, .q5_K, .q6_K, .mxfp4,
                                    .iq4_NL, .iq4_XS, .iq2_XXS, .iq2_XS, .iq2_S, .iq3_XXS, .iq3_S,
                                    .iq1_S, .iq1_M]

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
    func testIQ4_NL() throws { try check(.iq4_NL) }
    func testIQ4_XS() throws { try check(.iq4_XS) }
    func testIQ2_XXS() throws { try check(.iq2_XXS) }
    func testIQ2_XS() throws { try check(.iq2_XS) }
    func testIQ2_S() throws { try check(.iq2_S) }
    func testIQ3_XXS() throws { try check(.iq3_XXS) }
    func testIQ3_S() throws { try check(.iq3_S) }
    func testIQ1_S() throws { try check(.iq1_S) }
    func testIQ1_M() throws { try check(.iq1_M) }

    /// The grids expanded from the generated code tables against a few entries of ggml-common.h
    /// (the vectors above check the rest through decoding).
    func testIQuantGrids() {
        XCTAssertEqual(Dequantize.iq2xxsGrid.count, 256 * 8)
        XCTAssertEqual(Dequantize.iq2xsGrid.count, 512 * 8)
        XCTAssertEqual(Dequantize.iq2sGrid.count, 1024 * 8)
        XCTAssertEqual(Dequantize.iq3xxsGrid.count, 256 * 4)
        XCTAssertEqual(Dequantize.iq3sGrid.count, 512 * 4)
        XCTAssertEqual(Dequantize.iq1sGrid.count, 2048 * 8)
        // iq2xxs_grid[1] = 0x080808080808082b, iq2s_grid[1023] = 0x2b2b2b2b2b2b2b2b (little-endian bytes)
        XCTAssertEqual(Array(Dequantize.iq2xxsGrid[8 ..< 16]), [0x2B, 8, 8, 8, 8, 8, 8, 8])
        XCTAssertEqual(Array(Dequantize.iq2sGrid[8 * 1023 ..< 8 * 1024]), [UInt8](repeating: 0x2B, count: 8))
        // iq3xxs_grid[0] = 0x04040404, iq3s_grid[0] = 0x01010101, iq1s_grid[0] = 0xffffffffffffffff
        XCTAssertEqual(Array(Dequantize.iq3xxsGrid[0 ..< 4]), [4, 4, 4, 4])
        XCTAssertEqual(Array(Dequantize.iq3sGrid[0 ..< 4]), [1, 1, 1, 1])
        XCTAssertEqual(Array(Dequantize.iq1sGrid[0 ..< 8]), [Int8](repeating: -1, count: 8))
        XCTAssertEqual(Dequantize.ksigns(0), 0)
        XCTAssertEqual(Dequantize.ksigns(1), 0x81)
        XCTAssertEqual(Dequantize.ksigns(3), 3)
        XCTAssertEqual(Dequantize.ksigns(127), 0xFF)
    }

    /// A NaN block scale decodes to NaNs whose sign follows the weight's sign bit, as in ggml.
    func testIQ2_XXSNaNScaleKeepsSignFlips() throws {
        var block = [UInt8](repeating: 0, count: 66)
        block[0] = 0x00; block[1] = 0x7E                       // d = f16 NaN (0x7E00)
        block[6] = 0x01                                        // group 0: sign code 1 -> weight 0 negative
        let y = try block.withUnsafeBytes { try Dequantize.ggml($0, type: .iq2_XXS, count: 256) }
        XCTAssertTrue(y.allSatisfy(\.isNaN))
        XCTAssertEqual(y[0].sign, .minus)
        XCTAssertEqual(y[1].sign, .plus)
        XCTAssertEqual(y[7].sign, .minus)                      // parity bit 7 of ksigns[1]
    }

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
            assertThrowsMLXQuantError(try Dequantize.ggml(raw, type: .tq2_0, count: 256), "TQ2_0")
            assertThrowsMLXQuantError(try Dequantize.ggml(raw, type: .q4_0, count: 32), "need 18 bytes")
            assertThrowsMLXQuantError(try Dequantize.ggml(raw, type: .q4_0, count: 33), "whole number")
        }
    }
}
