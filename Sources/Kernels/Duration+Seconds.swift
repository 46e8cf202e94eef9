extension Duration {
    /// The duration in seconds, as a Double (for rates and reports). In Kernels, the module
    /// every layer that measures time (engine, expert loader, command line) builds on.
    public var seconds: Double {
        let c = components
        return Double(c.seconds) + Double(c.attoseconds) * 1e-18
    }
}
