// swift-tools-version:6.1
import PackageDescription

// Kernels use AVX2/FMA/F16C intrinsics on x86_64 (the portable SIMD path is chosen at build
// time elsewhere, or forced with -Xswiftc -DMOE_PORTABLE_SIMD to test it on x86).
// Compute targets are optimized in debug builds too: unoptimized SIMD code is ~100x slower,
// which would make `swift test` on real models take far too long.
#if arch(x86_64)
let kernelFlags: [SwiftSetting] = [.unsafeFlags(["-O", "-Xcc", "-mavx2", "-Xcc", "-mfma", "-Xcc", "-mf16c"])]
#else
let kernelFlags: [SwiftSetting] = [.unsafeFlags(["-O"])]
#endif

// Linux only, and no `platforms:` claim otherwise: Storage reads through io_uring and Glibc,
// the expert pool places memory with libnuma, and neither has a macOS counterpart here.
let package = Package(
    name: "moe",
    products: [
        .executable(name: "moe", targets: ["moe"]),
        .library(name: "GGUF", targets: ["GGUF"]),
        .library(name: "Storage", targets: ["Storage"]),
        .library(name: "Kernels", targets: ["Kernels"]),
        .library(name: "Tokenizer", targets: ["Tokenizer"]),
        .library(name: "KV", targets: ["KV"]),
        .library(name: "Models", targets: ["Models"]),
        .library(name: "Engine", targets: ["Engine"]),
        .library(name: "ChatTemplate", targets: ["ChatTemplate"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        // The server (`moe serve`): Hummingbird for HTTP/1.1 with streamed bodies (without its
        // swift-configuration trait, which the server does not use), service-lifecycle for
        // signals and graceful shutdown, swift-log for request lines, swift-metrics with the
        // Prometheus exporter for `/metrics`.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1", traits: []),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
    ],
    targets: [
        // Thin C shim over liburing and libnuma (static inline helpers need a C home); its
        // header and source are empty off Linux.
        .target(
            name: "CMoeLinux",
            linkerSettings: [
                .linkedLibrary("uring", .when(platforms: [.linux])),
                .linkedLibrary("numa", .when(platforms: [.linux])),
            ]
        ),
        // Storage calls Glibc directly rather than through swift-system (which the server's
        // dependencies bring in, with a C target of its own named CSystem: hence this shim's
        // name).
        .target(
            name: "Storage",
            dependencies: ["CMoeLinux"]
        ),
        .target(name: "GGUF", dependencies: ["Storage"]),
        // Facts about the machine, read the same way by every part: memory available under
        // cgroup limits, usable CPUs and their NUMA node, the process's resident memory, and
        // a probe of the disk's read bandwidth (through Storage, the path the loader reads by).
        .target(name: "Host", dependencies: ["CMoeLinux", "Storage"]),
        // Quantized block formats, matrix kernels (AVX2 and portable SIMD), thread pool.
        .target(name: "Kernels", dependencies: ["GGUF", "CPrefetch", "Host"], swiftSettings: kernelFlags),
        // Software prefetch hint for the kernels (a builtin Swift cannot name).
        .target(name: "CPrefetch"),
        // SentencePiece and byte-level BPE tokenizers built from GGUF metadata.
        .target(name: "Tokenizer", dependencies: ["GGUF"]),
        // The paged KV manager: a byte-bounded pool of blocks, per-sequence block tables,
        // reference counts, copy-on-write and prefix caching. Bookkeeping over bytes, so it
        // depends on nothing; Models encodes rows into it and reads them with its kernels.
        .target(name: "KV"),
        // Shared transformer blocks and one file per architecture.
        .target(name: "Models", dependencies: ["KV", "Kernels", "GGUF", "Storage"], swiftSettings: kernelFlags),
        // Expert offloading: layout of experts in a file (plain GGUF or pack), the NUMA-aware
        // pool, cache policies, the on-demand loader and the packer.
        .target(name: "Experts", dependencies: ["KV", "Models", "Trace", "Kernels", "GGUF", "Storage", "Host"]),
        // Routing records (--record-routing): the file format, its writer and reader, and the
        // recorder that watches a model route; what `moe trace` reads.
        .target(name: "Trace", dependencies: ["Models"]),
        // The expert-caching lab behind `moe trace`: routing traces (our records and
        // route_trace CSV files) replayed through the runtime's cache policies and Belady.
        .target(name: "TraceLab", dependencies: ["Trace", "Experts", "Models", "KV", "GGUF"]),
        // Sessions, sampling, the generation loop.
        .target(name: "Engine", dependencies: ["KV", "Models", "Experts", "Trace", "Tokenizer", "Kernels", "GGUF", "ChatTemplate", "Storage", "Host"]),
        // The OpenAI-compatible HTTP server: routes, request parsing and error bodies, the
        // scheduler that drives one BatchGenerator for every client, metrics.
        .target(
            name: "Server",
            dependencies: [
                "Engine", "Models", "Experts", "Tokenizer", "KV", "Kernels", "GGUF", "ChatTemplate", "Host",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        // The Jinja subset that GGUF chat templates are written in.
        .target(name: "ChatTemplate"),
        .executableTarget(
            name: "moe",
            dependencies: [
                "GGUF", "Storage", "Kernels", "Tokenizer", "KV", "Models", "Experts", "Engine", "ChatTemplate", "Trace", "TraceLab", "Host", "Server",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // Storage throughput benchmark (release build; compared against fio by tools/bench-storage.sh).
        .executableTarget(name: "storage-bench", dependencies: ["Storage"], path: "Sources/StorageBench"),
        // libFuzzer target for the GGUF reader; built only by tools/fuzz-gguf.sh with -sanitize=fuzzer.
        .executableTarget(name: "gguf-fuzz", dependencies: ["GGUF", "Storage"], path: "Sources/GGUFFuzz"),
        // Kernel throughput benchmark (GB/s of weights streamed, tokens/s of matmul), release build.
        .executableTarget(name: "kernel-bench", dependencies: ["Kernels", "GGUF"], path: "Sources/KernelBench",
                          swiftSettings: kernelFlags),
        // Writes random-weight qwen3moe benchmark models with our GGUF writer.
        .executableTarget(name: "make-bench-model", dependencies: ["GGUF", "Storage"], path: "Sources/BenchModel"),
        // Where the shared reference data lives, for every test target.
        .target(name: "TestSupport", path: "Tests/TestSupport"),
        .testTarget(name: "GGUFTests", dependencies: ["TestSupport", "GGUF", "Storage"]),
        .testTarget(name: "StorageTests", dependencies: ["TestSupport", "Storage", "CMoeLinux"]),
        .testTarget(name: "KernelsTests", dependencies: ["TestSupport", "Kernels", "GGUF"], swiftSettings: kernelFlags),
        .testTarget(name: "TokenizerTests", dependencies: ["TestSupport", "Tokenizer", "GGUF"]),
        .testTarget(name: "ExpertsTests", dependencies: ["TestSupport", "Experts", "Models", "Trace", "Kernels", "GGUF", "Storage", "Host"]),
        .testTarget(name: "HostTests", dependencies: ["TestSupport", "Host", "Storage"]),
        .testTarget(name: "TraceTests", dependencies: ["TestSupport", "Trace", "Models", "Experts", "Kernels"]),
        .testTarget(name: "TraceLabTests", dependencies: ["TestSupport", "TraceLab", "Trace", "Experts"]),
        .testTarget(name: "KVTests", dependencies: ["TestSupport", "KV", "Models", "Engine", "Kernels"]),
        .testTarget(name: "ModelsTests", dependencies: ["TestSupport", "Models", "Engine", "Kernels", "GGUF", "Storage"]),
        // Runs the built `moe` executable (the dependency makes `swift test` build it first).
        .testTarget(name: "CLITests", dependencies: ["TestSupport", "moe", "GGUF", "Storage"]),
        // The command's own code (`moe inspect`'s renderings), imported with @testable.
        .testTarget(name: "moeTests", dependencies: ["TestSupport", "moe", "Experts", "GGUF", "Storage"]),
        .testTarget(name: "ChatTemplateTests", dependencies: ["TestSupport", "ChatTemplate", "GGUF", "Storage"], exclude: ["Fixtures"]),
        // Drives `moe serve` in process and as a subprocess, with curl, raw sockets and the
        // official openai Python package (Clients/, run from the .venv tools/setup.sh makes).
        .testTarget(name: "ServerTests", dependencies: ["TestSupport", "Server", "moe", "Engine", "Models", "Tokenizer",
                                                      .product(name: "Logging", package: "swift-log")],
                    exclude: ["Clients"]),
        .testTarget(name: "EngineTests", dependencies: ["TestSupport", "Engine", "Experts", "Models", "Tokenizer", "GGUF", "ChatTemplate", "KV", "Storage"]),
    ]
)
