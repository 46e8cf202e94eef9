import ArgumentParser
import Foundation
import TraceLab

/// A trace file as the `moe trace` commands take it: a route_trace v1 CSV file (sizes in its
/// preamble) or this runtime's routing record (sizes from `-m MODEL`, the model it was made
/// with; without it only the routing itself can be studied).
struct TraceInput {
    var trace: CacheTrace
    /// The model's expert sizes and slot arithmetic, for this runtime's records given `-m`.
    var sizes: ModelExpertSizes?

    var hasSizes: Bool { !trace.expertBytes.isEmpty }

    init(file: String, model: String?, needSizes: Bool) throws {
        // The first bytes tell the formats apart; the reader then reads the file once.
        let isRouteTrace = FileHandle(forReadingAtPath: file).map { handle in
            defer { try? handle.close() }
            return (try? handle.read(upToCount: 13)).map { $0.elementsEqual("# route_trace".utf8) } ?? false
        } ?? false
        if isRouteTrace {
            trace = try runReporting { try RouteTraceFile.read(path: file) }
            return
        }
        guard let model else {
            guard !needSizes else {
                throw ValidationError("'\(file)' is a routing record of this runtime, which holds no expert sizes: give -m MODEL, the model it was made with")
            }
            trace = try runReporting { try CacheTrace.fromRoutingRecord(path: file, expertBytes: nil) }
            return
        }
        let s = try runReporting { try ModelExpertSizes(modelPath: model) }
        sizes = s
        trace = try runReporting { try CacheTrace.fromRoutingRecord(path: file, expertBytes: s.expertBytes) }
    }
}
