import Foundation

/// The `quantization` block of an MLX model's config.json, as mlx-lm and mlx-swift-lm write it.
///
/// ```json
/// "quantization": {
///   "group_size": 64, "bits": 4, "mode": "affine",
///   "model.layers.0.mlp.down_proj": {"group_size": 32, "bits": 8},
///   "model.layers.0.self_attn.k_proj": false
/// }
/// ```
/// Keys that are module paths override the defaults for that module; `false` leaves it unquantized.
public struct MLXQuantizationConfig: Equatable, Sendable {
    /// How one module is quantized.
    public struct Parameters: Equatable, Sendable {
        /// Weights per scale/bias group (32, 64 or 128 for affine).
        public var groupSize: Int
        /// Bits per weight code.
        public var bits: Int
        /// `"affine"` (scale and bias per group) or another MLX mode such as `"mxfp4"`.
        public var mode: String

        public init(groupSize: Int, bits: Int, mode: String = "affine") {
            self.groupSize = groupSize
            self.bits = bits
            self.mode = mode
        }
    }

    /// A per-module entry: its own parameters, or left unquantized.
    public enum Override: Equatable, Sendable {
        case quantized(Parameters)
        case unquantized
    }

    /// The defaults for every quantized module.
    public var defaults: Parameters
    /// Per-module-path entries.
    public var overrides: [String: Override]

    public init(defaults: Parameters, overrides: [String: Override] = [:]) {
        self.defaults = defaults
        self.overrides = overrides
    }

    /// Parses the `quantization` (or `quantization_config`) block of a config.json.
    ///
    /// - Parameters:
    ///   - data: the whole config.json.
    ///   - path: the config file, for error messages.
    public init(json data: Data, path: String) throws {
        guard let root = try JSONValue.parse(data, path: path).object else {
            throw MLXQuantError.malformed(path: path, reason: "not a JSON object")
        }
        guard let json = (root["quantization"] ?? root["quantization_config"])?.object else {
            throw MLXQuantError.malformed(path: path, reason: "no quantization object")
        }
        try self.init(block: json, path: path)
    }

    init(block json: [String: JSONValue], path: String) throws {
        func int(_ v: JSONValue?, _ what: String) throws -> Int {
            guard let n = v?.int, n > 0 else {
                throw MLXQuantError.malformed(path: path, reason: "quantization \(what) is \(v.map { "\($0)" } ?? "missing"), not a positive integer")
            }
            return n
        }
        let mode = json["mode"]?.string ?? "affine"
        defaults = Parameters(groupSize: try int(json["group_size"], "group_size"), bits: try int(json["bits"], "bits"), mode: mode)
        var o: [String: Override] = [:]
        for (key, value) in json where !["group_size", "bits", "mode"].contains(key) {
            if let flag = value.bool {
                guard !flag else {
                    throw MLXQuantError.malformed(path: path, reason: "quantization[\"\(key)\"] is true; only false or an object is meaningful")
                }
                o[key] = .unquantized
            } else if let dict = value.object {
                o[key] = .quantized(Parameters(
                    groupSize: dict["group_size"] == nil ? defaults.groupSize : try int(dict["group_size"], "\(key).group_size"),
                    bits: dict["bits"] == nil ? defaults.bits : try int(dict["bits"], "\(key).bits"),
                    mode: dict["mode"]?.string ?? mode))
            } else {
                throw MLXQuantError.malformed(path: path, reason: "quantization[\"\(key)\"] is neither false nor an object")
            }
        }
        overrides = o
    }

    /// The parameters of the module at `path` (e.g. `"model.layers.0.mlp.down_proj"`), or `nil` when
    /// the config leaves it unquantized.
    public func parameters(forModule path: String) -> Parameters? {
        switch overrides[path] {
        case .unquantized: return nil
        case let .quantized(p): return p
        case nil: return defaults
        }
    }
}
