// mlxquant-inspect PATH [--json] [--memory SIZE] [--dump TENSOR OUT.f32]
//
// Prints what a GGUF file or MLX model folder holds: format, architecture, parameter count,
// per-tensor name/type/shape/bytes, bits per weight and size.

import Foundation
import MLXQuant

let usage = """
    usage: mlxquant-inspect PATH [--json] [--memory SIZE] [--dump TENSOR OUT.f32]

      PATH           a .gguf file or an MLX model folder (config.json + *.safetensors)
      --json         print the summary as JSON (keys: format, architecture, parameters,
                     tensors [{name, type, shape, bytes}], bits_per_weight, bytes)
      --memory SIZE  also say whether the weights fit in SIZE bytes (suffixes K, M, G, KiB, MiB, GiB)
      --dump TENSOR OUT.f32
                     write TENSOR dequantized to raw little-endian float32 (row-major) to OUT.f32

    """

func fail(_ message: String, code: Int32) -> Never {
    FileHandle.standardError.write(Data((message + "\n").utf8))
    exit(code)
}

func parseSize(_ text: String) -> Int? {
    let units: [(String, Double)] = [
        ("KIB", 1024), ("MIB", 1024 * 1024), ("GIB", 1024 * 1024 * 1024),
        ("KB", 1e3), ("MB", 1e6), ("GB", 1e9), ("K", 1e3), ("M", 1e6), ("G", 1e9), ("B", 1),
    ]
    let upper = text.uppercased()
    for (suffix, factor) in units where upper.hasSuffix(suffix) {
        guard let v = Double(upper.dropLast(suffix.count)), v >= 0, v * factor < 9e18 else { return nil }
        return Int(v * factor)
    }
    guard let v = Int(upper), v >= 0 else { return nil }
    return v
}

func humanBytes(_ n: Int) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var v = Double(n), i = 0
    while v >= 1024, i < units.count - 1 { v /= 1024; i += 1 }
    return i == 0 ? "\(n) B" : String(format: "%.2f %@", v, units[i])
}

var args = Array(CommandLine.arguments.dropFirst())
var json = false
var memory: Int?
var path: String?
var dump: (tensor: String, output: String)?
while !args.isEmpty {
    let a = args.removeFirst()
    switch a {
    case "--json": json = true
    case "-h", "--help":
        print(usage, terminator: "")
        exit(0)
    case "--memory":
        guard let v = args.first, let n = parseSize(v) else { fail("--memory needs a size such as 8GiB\n" + usage, code: 2) }
        args.removeFirst()
        memory = n
    case "--dump":
        guard args.count >= 2 else { fail("--dump needs TENSOR and OUT.f32\n" + usage, code: 2) }
        dump = (args.removeFirst(), args.removeFirst())
    default:
        if a.hasPrefix("-") || path != nil { fail("unexpected argument \(a)\n" + usage, code: 2) }
        path = a
    }
}
guard let path else { fail(usage, code: 2) }

func dumpTensor(_ name: String, from url: URL, to output: String) throws {
    var isDirectory: ObjCBool = false
    _ = FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory)
    let values = isDirectory.boolValue
        ? try MLXModelFolder(url: url).dequantize(named: name)
        : try GGUFFile(url: url).dequantize(named: name)
    var data = Data(capacity: values.count * 4)
    for v in values { withUnsafeBytes(of: v.bitPattern.littleEndian) { data.append(contentsOf: $0) } }
    try data.write(to: URL(fileURLWithPath: output))
}

do {
    let url = URL(fileURLWithPath: path)
    if let dump {
        try dumpTensor(dump.tensor, from: url, to: dump.output)
        exit(0)
    }
    let summary = try ModelSummary(contentsOf: url)
    if json {
        var text = String(decoding: try summary.jsonData(), as: UTF8.self)
        if let memory {
            // Keep the documented keys first-class; the fit answer is an extra key.
            text = String(text.dropLast()) + ",\n  \"fits_memory\" : \(summary.fits(memoryBytes: memory))\n}"
        }
        print(text)
    } else {
        print("format:          \(summary.format)")
        print("architecture:    \(summary.architecture ?? "unknown")")
        print("parameters:      \(summary.parameters)")
        print("bits per weight: \(String(format: "%.4f", summary.bitsPerWeight))")
        print("size:            \(humanBytes(summary.bytes)) (\(summary.bytes) bytes)")
        if let memory {
            print("fits in \(humanBytes(memory)): \(summary.fits(memoryBytes: memory) ? "yes" : "no")")
        }
        print("types:           " + summary.bytesByType.sorted { $0.value > $1.value }
            .map { "\($0.key) \(humanBytes($0.value))" }.joined(separator: ", "))
        print("tensors (\(summary.tensors.count)):")
        let width = summary.tensors.map(\.name.count).max() ?? 0
        for t in summary.tensors {
            let shape = "[" + t.shape.map(String.init).joined(separator: ", ") + "]"
            print("  " + t.name.padding(toLength: width, withPad: " ", startingAt: 0)
                + "  " + t.type.padding(toLength: 12, withPad: " ", startingAt: 0)
                + "  " + shape.padding(toLength: 16, withPad: " ", startingAt: 0) + "  \(t.bytes)")
        }
    }
} catch {
    fail("mlxquant-inspect: \(error)", code: 1)
}
