// swift-tools-version:5.9
//
// mlxquant's Swift bridge: reads the GGUF files and MLX model folders that mlxquant writes,
// with dequantizers that are bit-identical with llama.cpp (ggml) and MLX.
//
// On Linux the package has no outside dependency at all. On Apple platforms an extra product,
// `MLXQuantMLX`, turns loaded tensors into mlx-swift `MLXArray`s; its dependency is declared
// only inside `#if os(macOS) || os(iOS)`, so a Linux build never resolves or fetches it.

import PackageDescription

var products: [Product] = [
    .library(name: "MLXQuant", targets: ["MLXQuant"]),
    .executable(name: "mlxquant-inspect", targets: ["MLXQuantInspect"]),
]

var dependencies: [Package.Dependency] = []

var targets: [Target] = [
    .target(name: "MLXQuant", path: "Sources/MLXQuant"),
    .executableTarget(
        name: "MLXQuantInspect",
        dependencies: ["MLXQuant"],
        path: "Sources/MLXQuantInspect"
    ),
    .testTarget(
        name: "MLXQuantTests",
        dependencies: ["MLXQuant"],
        path: "Tests/MLXQuantTests",
        resources: [.copy("Resources/vectors")]
    ),
]

#if os(macOS) || os(iOS)
products.append(.library(name: "MLXQuantMLX", targets: ["MLXQuantMLX"]))
dependencies.append(.package(url: "https://github.com/ml-explore/mlx-swift", from: "0.29.1"))
targets.append(
    .target(
        name: "MLXQuantMLX",
        dependencies: [
            "MLXQuant",
            .product(name: "MLX", package: "mlx-swift"),
            .product(name: "MLXNN", package: "mlx-swift"),
        ],
        path: "Sources/MLXQuantMLX"
    )
)
#endif

let package = Package(
    name: "MLXQuant",
    platforms: [.macOS(.v14), .iOS(.v17)],
    products: products,
    dependencies: dependencies,
    targets: targets
)
