/// A position in the template source: 1-based line and column (columns count Unicode
/// scalars).
public struct TemplateLocation: Sendable, Hashable, CustomStringConvertible {
    public var line: Int
    public var column: Int

    public init(line: Int, column: Int) {
        self.line = line
        self.column = column
    }

    public var description: String { "\(line):\(column)" }
}

/// Why a template could not be parsed or rendered. Parsing reports syntax errors and unknown
/// filter or test names; rendering reports the rest.
public enum ChatTemplateError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Malformed template: what was found and what was expected.
    case syntax(String, at: TemplateLocation)
    /// A filter name that this renderer does not know.
    case unknownFilter(String, at: TemplateLocation)
    /// A test name (`x is NAME`) that this renderer does not know.
    case unknownTest(String, at: TemplateLocation)
    /// An undefined value was used where a value is required (attribute of an undefined
    /// value, arithmetic, calling it), as Jinja's default `Undefined` refuses.
    case undefined(String, at: TemplateLocation)
    /// An operation on values of the wrong type (`'a' + 1`, iterating a number, ...).
    case type(String, at: TemplateLocation)
    /// The template called `raise_exception(message)`.
    case raised(String)
    /// Output size, nesting depth or loop iterations went past the configured limits.
    case limitExceeded(String)

    public var description: String {
        switch self {
        case .syntax(let m, let at): "template syntax error at \(at): \(m)"
        case .unknownFilter(let name, let at): "unknown filter '\(name)' at \(at)"
        case .unknownTest(let name, let at): "unknown test '\(name)' at \(at)"
        case .undefined(let m, let at): "undefined value at \(at): \(m)"
        case .type(let m, let at): "template type error at \(at): \(m)"
        case .raised(let m): "template raised an exception: \(m)"
        case .limitExceeded(let m): "template limit exceeded: \(m)"
        }
    }
}
