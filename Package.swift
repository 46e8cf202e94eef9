// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "moe",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "moe", targets: ["moe"]),
        .library(name: "GGUF", targets: ["GGUF"]),
        .library(name: "Storage", targets: ["Storage"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // Thin C shim over liburing and libnuma (static inline helpers need a C home).
        .target(
            name: "CSystem",
            linkerSettings: [.linkedLibrary("uring"), .linkedLibrary("numa")]
        ),
        // No swift-system: its own C target is also named CSystem, and SwiftPM rejects two
        // targets of that name in one graph. Storage calls Glibc directly.
        .target(
            name: "Storage",
            dependencies: ["CSystem"]
        ),
        .target(name: "GGUF", dependencies: ["Storage"]),
        .executableTarget(
            name: "moe",
            dependencies: [
                "GGUF", "Storage",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // Storage throughput benchmark (release build; compared against fio by tools/bench-storage.sh).
        .executableTarget(name: "storage-bench", dependencies: ["Storage"], path: "Sources/StorageBench"),
        // libFuzzer target for the GGUF reader; built only by tools/fuzz-gguf.sh with -sanitize=fuzzer.
        .executableTarget(name: "gguf-fuzz", dependencies: ["GGUF", "Storage"], path: "Sources/GGUFFuzz"),
        .testTarget(name: "GGUFTests", dependencies: ["GGUF", "Storage"]),
        .testTarget(name: "StorageTests", dependencies: ["Storage", "CSystem"]),
    ]
)
