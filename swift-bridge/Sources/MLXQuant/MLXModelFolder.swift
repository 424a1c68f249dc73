import Foundation

/// An MLX model folder as mlx-lm writes it: `config.json` plus `model.safetensors`, or shards listed in
/// `model.safetensors.index.json`.
///
/// Stored tensors are grouped into logical ``MLXTensor``s: a quantized layer's `.weight` (packed
/// `uint32` codes), `.scales` and `.biases` become one tensor with its unpacked shape.
///
/// ```swift
/// let model = try MLXModelFolder(url: URL(fileURLWithPath: "SmolLM2-4bit"))
/// for t in model.tensors { print(t.name, t.typeName, t.shape) }
/// let w = try model.dequantize(named: "model.layers.0.self_attn.q_proj.weight")
/// ```
public struct MLXModelFolder: Sendable {
    /// The folder.
    public let url: URL
    /// `model_type` from config.json (e.g. `"llama"`).
    public let modelType: String?
    /// The `quantization` block (or `quantization_config`), if the model is quantized.
    public let quantization: MLXQuantizationConfig?
    /// The safetensors files, in load order.
    public let files: [SafetensorsFile]
    /// Logical tensors, sorted by name.
    public let tensors: [MLXTensor]

    private let stored: [String: (file: Int, info: SafetensorsFile.TensorInfo)]
    private let logical: [String: Int]

    /// Reads config.json and maps every safetensors file of the folder.
    public init(url: URL) throws {
        self.url = url
        let fm = FileManager.default
        let configURL = url.appendingPathComponent("config.json")
        let config = try Self.readJSON(configURL)
        modelType = config["model_type"]?.string
        if let q = (config["quantization"] ?? config["quantization_config"])?.object {
            quantization = try MLXQuantizationConfig(block: q, path: configURL.path)
        } else {
            quantization = nil
        }

        // Which files to load: the index's weight_map if present, else every *.safetensors.
        var names: [String]
        var expectedShard: [String: String] = [:]
        let indexURL = url.appendingPathComponent("model.safetensors.index.json")
        if fm.fileExists(atPath: indexURL.path) {
            let index = try Self.readJSON(indexURL)
            guard let map = index["weight_map"]?.object else {
                throw MLXQuantError.malformed(path: indexURL.path, reason: "no weight_map object")
            }
            for (tensor, file) in map {
                guard let f = file.string, !f.isEmpty, !f.contains("/"), !f.contains("\\"), f != "..", f != "." else {
                    throw MLXQuantError.malformed(path: indexURL.path, reason: "weight_map[\"\(tensor)\"] is not a file name in the folder")
                }
                expectedShard[tensor] = f
            }
            names = Array(Set(expectedShard.values)).sorted()
        } else {
            let listing: [String]
            do {
                listing = try fm.contentsOfDirectory(atPath: url.path)
            } catch {
                throw MLXQuantError.io(path: url.path, reason: error.localizedDescription)
            }
            names = listing.filter { $0.hasSuffix(".safetensors") }.sorted()
        }
        guard !names.isEmpty else {
            throw MLXQuantError.malformed(path: url.path, reason: "no .safetensors files")
        }
        files = try names.map { try SafetensorsFile(url: url.appendingPathComponent($0)) }

        var stored: [String: (file: Int, info: SafetensorsFile.TensorInfo)] = [:]
        for (i, f) in files.enumerated() {
            for t in f.tensors {
                if let other = stored[t.name] {
                    throw MLXQuantError.malformed(
                        path: url.path, reason: "tensor \"\(t.name)\" is in both \(files[other.file].path) and \(f.path)")
                }
                stored[t.name] = (i, t)
            }
        }
        for (tensor, file) in expectedShard {
            guard let s = stored[tensor], (files[s.file].path as NSString).lastPathComponent == file else {
                throw MLXQuantError.malformed(path: indexURL.path, reason: "tensor \"\(tensor)\" is not in \(file)")
            }
        }
        self.stored = stored
        tensors = try Self.group(stored: stored, quantization: quantization, folder: url.path)
        var logical: [String: Int] = [:]
        for (i, t) in tensors.enumerated() { logical[t.name] = i }
        self.logical = logical
    }

    private static func readJSON(_ url: URL) throws -> [String: JSONValue] {
        let data: Data
        do {
            data = try Data(contentsOf: url)
        } catch {
            throw MLXQuantError.io(path: url.path, reason: error.localizedDescription)
        }
        guard let dict = try JSONValue.parse(data, path: url.path).object else {
            throw MLXQuantError.malformed(path: url.path, reason: "not a JSON object")
        }
        return dict
    }

    /// The logical tensor called `name`, if any.
    public func tensor(named name: String) -> MLXTensor? { logical[name].map { tensors[$0] } }

    /// The stored (on-disk) tensor called `name` and the file it is in.
    public func storedTensor(named name: String) -> (file: SafetensorsFile, info: SafetensorsFile.TensorInfo)? {
        stored[name].map { (files[$0.file], $0.info) }
    }

    /// All stored tensor names, sorted.
    public var storedTensorNames: [String] { stored.keys.sorted() }
}
