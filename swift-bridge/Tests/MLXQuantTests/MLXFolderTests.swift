import Foundation
import XCTest
@testable import MLXQuant

/// The MLX folder reader and the affine dequantizer against `mx.dequantize` on the shared vectors.
final class MLXFolderTests: XCTestCase {
    static let quantized: [String: (bits: Int, group: Int, scales: MLXScaleType, shape: [Int])] = [
        "model.embed_tokens.weight": (4, 64, .float32, [16, 256]),
        "model.layers.0.self_attn.q_proj.weight": (2, 32, .bfloat16, [16, 128]),
        "model.layers.0.self_attn.k_proj.weight": (3, 128, .float16, [8, 256]),
        "model.layers.0.self_attn.v_proj.weight": (5, 64, .float32, [8, 128]),
        "model.layers.0.self_attn.o_proj.weight": (6, 32, .float16, [16, 64]),
        "model.layers.0.mlp.down_proj.weight": (8, 128, .bfloat16, [16, 128]),
    ]

    func checkFolder(_ name: String, shards: Int) throws {
        let model = try MLXModelFolder(url: Vectors.url(name))
        XCTAssertEqual(model.files.count, shards)
        XCTAssertEqual(model.modelType, "llama")
        let q = try XCTUnwrap(model.quantization)
        XCTAssertEqual(q.defaults, .init(groupSize: 64, bits: 4, mode: "affine"))
        XCTAssertEqual(q.overrides["model.layers.0.mlp.gate_proj"], .unquantized)
        XCTAssertNil(q.parameters(forModule: "model.layers.0.mlp.gate_proj"))
        XCTAssertEqual(q.parameters(forModule: "model.layers.0.mlp.down_proj"), .init(groupSize: 128, bits: 8))
        XCTAssertEqual(q.parameters(forModule: "model.embed_tokens"), q.defaults)

        let expected = try SafetensorsFile(url: Vectors.url("mlx-model-expected.safetensors"))
        XCTAssertEqual(Set(model.tensors.map(\.name)), Set(expected.tensors.map(\.name)))
        for t in model.tensors {
            if let want = Self.quantized[t.name] {
                XCTAssertEqual(t.storage, .affine(bits: want.bits, groupSize: want.group, scaleType: want.scales), t.name)
                XCTAssertEqual(t.shape, want.shape, t.name)
                XCTAssertEqual(t.typeName, "MLX_Q\(want.bits)_G\(want.group)")
                XCTAssertEqual(t.storedNames.count, 3)
            } else {
                XCTAssertFalse(t.isQuantized, t.name)
            }
            XCTAssertEqual(t.shape, try expected.requireTensor(named: t.name).shape, t.name)
            assertBitIdentical(try model.dequantize(t), try expected.floats(named: t.name), "\(name): \(t.name)")
        }
        XCTAssertEqual(model.tensor(named: "model.norm.weight")?.storage, .plain(dtype: "BF16"))
        XCTAssertEqual(model.tensor(named: "model.layers.0.mlp.gate_proj.weight")?.storage, .plain(dtype: "F32"))

        let summary = ModelSummary(mlx: model)
        XCTAssertEqual(summary.format, "mlx")
        XCTAssertEqual(summary.architecture, "llama")
        XCTAssertEqual(summary.parameters, model.tensors.map(\.elementCount).reduce(0, +))
        XCTAssertEqual(summary.bytes, model.files.flatMap(\.tensors).map(\.byteCount).reduce(0, +))
    }

    func testSingleFileFolder() throws { try checkFolder("mlx-model", shards: 1) }

    func testShardedFolder() throws { try checkFolder("mlx-sharded", shards: 2) }

    func testAffineSweep() throws {
        let packed = try SafetensorsFile(url: Vectors.url("mlx-affine-sweep.safetensors"))
        let expected = try SafetensorsFile(url: Vectors.url("mlx-affine-sweep-expected.safetensors"))
        var checked = 0
        for scaleType in [MLXScaleType.float32, .float16, .bfloat16] {
            for bits in [2, 3, 4, 5, 6, 8] {
                for group in [32, 64, 128] {
                    let key = "\(scaleType.rawValue).b\(bits).g\(group)"
                    let w = try packed.requireTensor(named: "\(key).weight")
                    let s = try packed.requireTensor(named: "\(key).scales")
                    let b = try packed.requireTensor(named: "\(key).biases")
                    XCTAssertEqual(s.dtype, scaleType.safetensorsName)
                    XCTAssertEqual(w.dtype, "U32")
                    let values = try packed.withBytes(of: w) { wb in
                        try packed.withBytes(of: s) { sb in
                            try packed.withBytes(of: b) { bb in
                                try Dequantize.mlxAffine(packed: wb, scales: sb, biases: bb, scaleType: scaleType,
                                                         rows: 2, columns: 128, bits: bits, groupSize: group)
                            }
                        }
                    }
                    assertBitIdentical(values, try expected.floats(named: "\(key).weight"), key)
                    checked += 1
                }
            }
        }
        XCTAssertEqual(checked, 54)
    }

    func testAffineArgumentChecks() throws {
        let z = [UInt8](repeating: 0, count: 64)
        try z.withUnsafeBytes { r in
            assertThrowsMLXQuantError(try Dequantize.mlxAffine(packed: r, scales: r, biases: r, scaleType: .float32,
                                                               rows: 1, columns: 64, bits: 7, groupSize: 64), "7 bits")
            assertThrowsMLXQuantError(try Dequantize.mlxAffine(packed: r, scales: r, biases: r, scaleType: .float32,
                                                               rows: 1, columns: 96, bits: 4, groupSize: 64), "groups of 64")
            assertThrowsMLXQuantError(try Dequantize.mlxAffine(packed: r, scales: r, biases: r, scaleType: .float32,
                                                               rows: 1, columns: 64, bits: 4, groupSize: 64), "needs 32 packed bytes")
        }
    }

    func testConfigParsing() throws {
        let json = #"{"model_type": "llama", "quantization": {"group_size": 32, "bits": 4, "mode": "affine", "a.b": {"bits": 8}, "c": false}}"#
        let q = try MLXQuantizationConfig(json: Data(json.utf8), path: "config.json")
        XCTAssertEqual(q.parameters(forModule: "a.b"), .init(groupSize: 32, bits: 8))
        XCTAssertNil(q.parameters(forModule: "c"))
        assertThrowsMLXQuantError(try MLXQuantizationConfig(json: Data(#"{"quantization": {"group_size": true, "bits": 4}}"#.utf8), path: "c.json"),
                                  "group_size is true")
        assertThrowsMLXQuantError(try MLXQuantizationConfig(json: Data(#"{"quantization": {"group_size": 64, "bits": 4, "x": 3}}"#.utf8), path: "c.json"),
                                  "neither false nor an object")
        assertThrowsMLXQuantError(try MLXQuantizationConfig(json: Data("{".utf8), path: "c.json"), "invalid JSON")
    }

    // MARK: hostile folders and safetensors

    func makeFolder(_ files: [String: Data]) throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("mlxquant-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        for (name, data) in files { try data.write(to: dir.appendingPathComponent(name)) }
        return dir
    }

    func safetensors(_ header: String, data: [UInt8] = []) -> Data {
        var out = Data()
        withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(contentsOf: Array(header.utf8))
        out.append(contentsOf: data)
        return out
    }

    func testHostileSafetensors() {
        func open(_ d: Data) throws -> SafetensorsFile { try SafetensorsFile(data: d, path: "x.safetensors") }
        var huge = Data()
        withUnsafeBytes(of: UInt64(1 << 62).littleEndian) { huge.append(contentsOf: $0) }
        huge.append(contentsOf: [UInt8](repeating: 0x20, count: 16))
        assertThrowsMLXQuantError(try open(huge), "header length 4611686018427387904 exceeds")
        assertThrowsMLXQuantError(try open(Data([1, 2, 3])), "truncated: header length")
        assertThrowsMLXQuantError(try open(safetensors("[1]")), "not a JSON object")
        assertThrowsMLXQuantError(try open(safetensors("{\"a\":")), "invalid JSON")
        assertThrowsMLXQuantError(try open(safetensors(#"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}"#, data: [0, 0, 0, 0])),
                                  "not inside the 4-byte data section")
        assertThrowsMLXQuantError(try open(safetensors(#"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}"#, data: [0, 0, 0, 0])),
                                  "needs 8 bytes, data_offsets give 4")
        assertThrowsMLXQuantError(try open(safetensors(#"{"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}"#, data: [0, 0, 0, 0])),
                                  "shape is not a list of non-negative integers")
        assertThrowsMLXQuantError(try open(safetensors(#"{"a": {"dtype": "F32", "shape": [true], "data_offsets": [0, 4]}}"#, data: [0, 0, 0, 0])),
                                  "shape is not a list")
        assertThrowsMLXQuantError(try open(safetensors(#"{"a": {"dtype": "F32", "shape": [4611686018427387904, 4611686018427387904], "data_offsets": [0, 0]}}"#)),
                                  "overflows")
        assertThrowsMLXQuantError(try open(safetensors(#"{"a": {"dtype": "Q9", "shape": [1], "data_offsets": [0, 1]}}"#, data: [0])),
                                  "unknown dtype")
        assertThrowsMLXQuantError(try open(safetensors(#"{"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}"#, data: [0, 0, 0, 0])),
                                  "data_offsets")
        XCTAssertNoThrow(try open(safetensors(#"{"__metadata__": {"format": "mlx"}, "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}"#, data: [0, 0, 128, 63])))
    }

    func testHostileFolders() throws {
        let config = Data(#"{"model_type": "llama", "quantization": {"group_size": 64, "bits": 4, "m": false}}"#.utf8)
        let ok = safetensors(#"{"x.weight": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}"#, data: [0, 0, 128, 63])
        let escape = try makeFolder([
            "config.json": config, "model.safetensors": ok,
            "model.safetensors.index.json": Data(#"{"weight_map": {"x.weight": "../model.safetensors"}}"#.utf8),
        ])
        assertThrowsMLXQuantError(try MLXModelFolder(url: escape), "is not a file name in the folder")
        let missing = try makeFolder([
            "config.json": config, "model.safetensors": ok,
            "model.safetensors.index.json": Data(#"{"weight_map": {"y.weight": "model.safetensors"}}"#.utf8),
        ])
        assertThrowsMLXQuantError(try MLXModelFolder(url: missing), "tensor \"y.weight\" is not in model.safetensors")
        let empty = try makeFolder(["config.json": config])
        assertThrowsMLXQuantError(try MLXModelFolder(url: empty), "no .safetensors files")
        let noConfig = try makeFolder(["model.safetensors": ok])
        assertThrowsMLXQuantError(try MLXModelFolder(url: noConfig), "config.json: cannot read")
        // A module the config marks `false` but stored quantized.
        let q = safetensors(#"{"m.weight": {"dtype": "U32", "shape": [1, 8], "data_offsets": [0, 32]}, "m.scales": {"dtype": "F32", "shape": [1, 1], "data_offsets": [32, 36]}, "m.biases": {"dtype": "F32", "shape": [1, 1], "data_offsets": [36, 40]}}"#,
                            data: [UInt8](repeating: 0, count: 40))
        let contradicts = try makeFolder(["config.json": config, "model.safetensors": q])
        assertThrowsMLXQuantError(try MLXModelFolder(url: contradicts), "m is stored quantized but config.json lists it as false")
        // Scales that do not match the packed width.
        let config2 = Data(#"{"quantization": {"group_size": 32, "bits": 4}}"#.utf8)
        let shapeBad = try makeFolder(["config.json": config2, "model.safetensors": q])
        assertThrowsMLXQuantError(try MLXModelFolder(url: shapeBad), "disagree with scales shape [1, 1]")
        let config3 = Data(#"{"quantization": {"group_size": 64, "bits": 4}}"#.utf8)
        let good = try MLXModelFolder(url: try makeFolder(["config.json": config3, "model.safetensors": q]))
        XCTAssertEqual(good.tensors.map(\.shape), [[1, 64]])
        XCTAssertEqual(try good.dequantize(named: "m.weight"), [Float](repeating: 0, count: 64))
    }
}
