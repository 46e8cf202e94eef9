/// Columns of the commands' text tables.
extension String {
    /// Right-aligned in `n` characters (never cut).
    func leftPad(_ n: Int) -> String { count >= n ? self : String(repeating: " ", count: n - count) + self }
    /// Left-aligned in `n` characters (never cut).
    func padded(_ n: Int) -> String { count >= n ? self : self + String(repeating: " ", count: n - count) }
}
