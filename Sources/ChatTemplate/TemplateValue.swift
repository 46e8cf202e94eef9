/// A value passed to a template: the JSON-like data chat templates read (`messages`,
/// `tools`, flags, special tokens).
public enum TemplateValue: Sendable, Equatable {
    case none
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case array([TemplateValue])
    /// Keys keep their insertion order, as Python dictionaries do: `tojson`, `items()` and
    /// `for key in dict` follow it.
    case dictionary(TemplateDictionary)
}

extension TemplateValue: ExpressibleByNilLiteral, ExpressibleByBooleanLiteral, ExpressibleByIntegerLiteral,
    ExpressibleByFloatLiteral, ExpressibleByStringLiteral, ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral
{
    public init(nilLiteral: ()) { self = .none }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(integerLiteral value: Int) { self = .int(value) }
    public init(floatLiteral value: Double) { self = .double(value) }
    public init(stringLiteral value: String) { self = .string(value) }
    public init(arrayLiteral elements: TemplateValue...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, TemplateValue)...) {
        self = .dictionary(TemplateDictionary(elements))
    }
}

/// String keys to values, in insertion order. Equality ignores the order (as Python's does).
public struct TemplateDictionary: Sendable, Equatable, ExpressibleByDictionaryLiteral, Sequence {
    var map = OrderedMap<TemplateValue>()

    public init() {}

    /// Later duplicates replace earlier values in place, as in a Python dict literal.
    public init<S: Sequence>(_ pairs: S) where S.Element == (String, TemplateValue) {
        for (key, value) in pairs { map[key] = value }
    }

    public init(dictionaryLiteral elements: (String, TemplateValue)...) { self.init(elements) }

    public var keys: [String] { map.keys }
    public var count: Int { map.count }
    public var isEmpty: Bool { map.count == 0 }

    /// Setting `nil` removes the key; setting a new key appends it.
    public subscript(key: String) -> TemplateValue? {
        get { map[key] }
        set { map[key] = newValue }
    }

    public func makeIterator() -> IndexingIterator<[(key: String, value: TemplateValue)]> {
        map.pairs.makeIterator()
    }
}

/// One chat turn for `ChatTemplate.render(messages:...)`. Richer messages (tool calls,
/// reasoning content, content parts) go through `render(_:)` as `TemplateValue`s.
public struct ChatMessage: Sendable, Equatable {
    public var role: String
    public var content: String

    public init(role: String, content: String) {
        self.role = role
        self.content = content
    }

    public static func system(_ content: String) -> ChatMessage { ChatMessage(role: "system", content: content) }
    public static func user(_ content: String) -> ChatMessage { ChatMessage(role: "user", content: content) }
    public static func assistant(_ content: String) -> ChatMessage { ChatMessage(role: "assistant", content: content) }
}

extension TemplateValue {
    /// `{"role": ..., "content": ...}`, the shape templates expect.
    public init(_ message: ChatMessage) {
        self = ["role": .string(message.role), "content": .string(message.content)]
    }
}

/// A small insertion-ordered dictionary with string keys.
struct OrderedMap<Value> {
    private(set) var keys: [String] = []
    private var storage: [String: Value] = [:]

    var count: Int { keys.count }

    subscript(key: String) -> Value? {
        get { storage[key] }
        set {
            if let newValue {
                if storage.updateValue(newValue, forKey: key) == nil { keys.append(key) }
            } else if storage.removeValue(forKey: key) != nil {
                keys.removeAll { $0 == key }
            }
        }
    }

    var pairs: [(key: String, value: Value)] { keys.map { ($0, storage[$0]!) } }
    var values: [Value] { keys.map { storage[$0]! } }
}

extension OrderedMap: Sendable where Value: Sendable {}

extension OrderedMap: Equatable where Value: Equatable {
    static func == (a: OrderedMap, b: OrderedMap) -> Bool { a.storage == b.storage }
}
