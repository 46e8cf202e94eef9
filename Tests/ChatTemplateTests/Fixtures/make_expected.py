#!/usr/bin/env python3
"""Regenerates Tests/ChatTemplateTests/ExpectedOutputs.swift with Python's jinja2.

Every case is rendered the way Hugging Face transformers renders chat templates
(transformers/utils/chat_template_utils.py): an ImmutableSandboxedEnvironment with
trim_blocks=True, lstrip_blocks=True and the loopcontrols extension, a `raise_exception`
global and transformers' own `tojson` filter (json.dumps with ensure_ascii=False and the
keys in insertion order, unlike jinja2's built-in one). Cases marked "default" use jinja2's
default trim_blocks=False, lstrip_blocks=False instead.

Template texts come from TemplateSources.swift (the real published templates, written
out) and from the `tokenizer.chat_template` metadata of ../shared/vocab/*.gguf, read in
place with the small GGUF reader below.

    pip install jinja2 && python3 Tests/ChatTemplateTests/Fixtures/make_expected.py
"""

import json
import os
import re
import struct
import sys

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
PACKAGE = os.path.dirname(os.path.dirname(TESTS))
SHARED = os.environ.get("MOE_SHARED_DIR") or os.path.join(os.path.dirname(PACKAGE), "shared")
OUTPUT = os.path.join(TESTS, "ExpectedOutputs.swift")


# --- template sources -------------------------------------------------------------------

def embedded_templates():
    text = open(os.path.join(TESTS, "TemplateSources.swift"), encoding="utf-8").read()
    found = re.findall(r'static let (\w+) = #"""\n(.*?)\n"""#', text, re.S)
    return dict(found)


def gguf_metadata(path):
    """The metadata key/value pairs of a GGUF v2/v3 file (arrays skipped over)."""
    scalar = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
    with open(path, "rb") as f:
        def read(fmt):
            size = struct.calcsize("<" + fmt)
            return struct.unpack("<" + fmt, f.read(size))[0]

        def read_string():
            return f.read(read("Q")).decode("utf-8")

        def read_value(kind):
            if kind == 8:
                return read_string()
            if kind == 9:
                element, count = read("I"), read("Q")
                return [read_value(element) for _ in range(count)]
            return read(scalar[kind])

        if f.read(4) != b"GGUF":
            raise ValueError(path + ": not a GGUF file")
        read("I")  # version
        read("Q")  # tensor count
        entries = {}
        for _ in range(read("Q")):
            key = read_string()
            entries[key] = read_value(read("I"))
        return entries


def gguf_template(name):
    return gguf_metadata(os.path.join(SHARED, "vocab", "ggml-vocab-%s.gguf" % name))["tokenizer.chat_template"]


# --- rendering as transformers does -----------------------------------------------------

class RaisedException(Exception):
    pass


def raise_exception(message):
    raise RaisedException(message)


def hf_tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def make_env(mode):
    hf = mode == "hf"
    env = ImmutableSandboxedEnvironment(trim_blocks=hf, lstrip_blocks=hf, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = hf_tojson
    env.globals["raise_exception"] = raise_exception
    return env


def render(source, context, mode):
    try:
        return ("output", make_env(mode).from_string(source).render(**context))
    except RaisedException as e:
        return ("exception", str(e))


# --- conversations ----------------------------------------------------------------------

def msg(role, content, **extra):
    m = {"role": role, "content": content}
    m.update(extra)
    return m


WITH_SYSTEM = [
    msg("system", "You are a helpful assistant."),
    msg("user", "Hello! What is 2+2?"),
    msg("assistant", "2+2 is 4."),
    msg("user", "  And in French, café style? ☕  \n"),
]
WITHOUT_SYSTEM = WITH_SYSTEM[1:]
USER_TWICE = [msg("user", "Hi"), msg("user", "Hello?")]

THINKING = [
    msg("user", "What is 2+2?"),
    msg("assistant", "<think>\nSimple sum.\n</think>\n\n2+2 is 4."),
    msg("user", "And 3+3?"),
    msg("assistant", "<think>\nAnother sum.\n</think>\n\nIt is 6."),
]

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. \"Paris\""},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Current time",
        "parameters": {"type": "object", "properties": {}},
    },
}


def tool_call(name, arguments, id=None):
    call = {"type": "function", "function": {"name": name, "arguments": arguments}}
    if id is not None:
        call["id"] = id
    return call


QWEN_TOOLS = [
    msg("system", "You are a weather bot."),
    msg("user", "Weather in Paris and the time?"),
    msg("assistant", "", tool_calls=[tool_call("get_weather", {"city": "Paris", "unit": "celsius"}),
                                     tool_call("get_time", {})]),
    msg("tool", '{"temperature": 21.5, "sky": "ensoleillé"}'),
    msg("tool", "14:05"),
    msg("assistant", "It is 21.5 °C and sunny in Paris; the time is 14:05."),
]

MISTRAL_TOOLS = [
    msg("system", "Be brief."),
    msg("user", "Weather in Paris?"),
    msg("assistant", "", tool_calls=[tool_call("get_weather", {"city": "Paris"}, id="call00001")]),
    msg("tool", '{"temperature": 21.5}', tool_call_id="call00001"),
    msg("assistant", "21.5 °C."),
    msg("user", "Thanks!"),
]
MISTRAL_BAD_ID = [
    msg("user", "Weather in Paris?"),
    msg("assistant", "", tool_calls=[tool_call("get_weather", {"city": "Paris"}, id="c1")]),
]

LLAMA31_TOOLS = [
    msg("system", "You are a helpful assistant."),
    msg("user", "Weather in Paris?"),
    msg("assistant", "", tool_calls=[tool_call("get_weather", {"city": "Paris"})]),
    msg("tool", {"temperature": 21.5, "sky": "clear"}),
    msg("assistant", "It is 21.5 °C."),
]
LLAMA31_BUILTIN = [
    msg("user", "Search for the weather in Paris"),
    msg("assistant", "", tool_calls=[tool_call("brave_search", {"query": "weather Paris"})]),
    msg("ipython", "Sunny, 21 °C"),
]

GEMMA3_PARTS = [
    msg("system", [{"type": "text", "text": "Describe images."}]),
    msg("user", [{"type": "image"}, {"type": "text", "text": " What is this? "}]),
]


def chat(messages, add_generation_prompt, **extra):
    ctx = {"messages": messages, "add_generation_prompt": add_generation_prompt,
           "bos_token": "<s>", "eos_token": "</s>"}
    ctx.update(extra)
    return ctx


# --- cases ------------------------------------------------------------------------------

CASES = []  # (name, template reference, template text, context, mode)


def add(name, ref, text, context, mode="hf"):
    CASES.append((name, ref, text, context, mode))


def add_templates():
    emb = embedded_templates()
    real = [(k, ".source(Templates.%s)" % k, v) for k, v in emb.items()]
    real += [("qwen2-gguf", '.gguf("qwen2")', gguf_template("qwen2")),
             ("phi3-gguf", '.gguf("phi-3")', gguf_template("phi-3"))]
    for key, ref, text in real:
        for conv_name, conv in (("system+user+assistant+user", WITH_SYSTEM), ("user+assistant+user", WITHOUT_SYSTEM)):
            for agp in (True, False):
                add("%s: %s, generation prompt %s" % (key, conv_name, "on" if agp else "off"), ref, text, chat(conv, agp))
        add("%s: user twice" % key, ref, text, chat(USER_TWICE, True))

    def one(key, name, context):
        add("%s: %s" % (key, name), ".source(Templates.%s)" % key, emb[key], context)

    one("qwen3", "enable_thinking false", chat(WITHOUT_SYSTEM, True, enable_thinking=False))
    one("qwen3", "enable_thinking true", chat(WITHOUT_SYSTEM, True, enable_thinking=True))
    one("qwen3", "reasoning kept after the last query only", chat(THINKING, False))
    one("qwen3", "reasoning_content field", chat(THINKING[:3] + [msg("assistant", "It is 6.", reasoning_content="\nAdd.\n")], False))
    one("qwen3", "tools", chat(QWEN_TOOLS, True, tools=[WEATHER_TOOL, TIME_TOOL]))
    one("qwen3", "tools without a system message", chat(QWEN_TOOLS[1:4], True, tools=[WEATHER_TOOL]))
    one("qwen25", "tools", chat(QWEN_TOOLS, True, tools=[WEATHER_TOOL, TIME_TOOL]))
    one("qwen25", "tools without a system message", chat(QWEN_TOOLS[1:], False, tools=[WEATHER_TOOL]))
    one("mistralV3", "tools", chat(MISTRAL_TOOLS, False, tools=[WEATHER_TOOL, TIME_TOOL]))
    one("mistralV3", "bad tool call id", chat(MISTRAL_BAD_ID, False))
    one("llama31", "tools in the user message", chat(LLAMA31_TOOLS, True, tools=[WEATHER_TOOL]))
    one("llama31", "tools in the system message", chat(LLAMA31_TOOLS, True, tools=[WEATHER_TOOL], tools_in_user_message=False,
                                                       date_string="01 Jan 2025"))
    one("llama31", "builtin tools", chat(LLAMA31_BUILTIN, True, builtin_tools=["brave_search", "code_interpreter", "wolfram_alpha"]))
    one("llama31", "two tool calls", chat(QWEN_TOOLS[:3], True, tools=[WEATHER_TOOL]))
    one("gemma3", "content parts", chat(GEMMA3_PARTS, True))


# Small templates exercising one feature each; `both` also renders them with jinja2's
# defaults (no trim_blocks, no lstrip_blocks).
SNIPPETS = [
    # whitespace control and block trimming
    ("strip markers", "a  {{- 'b' -}}  c |  {%- if true -%}  d  {%- endif -%}  | e {#- note -#} f", {}, True),
    ("for loop lines", "<ul>\n{% for x in xs %}\n  <li>{{ x }}</li>\n{% endfor %}\n</ul>\n", {"xs": [1, 2]}, True),
    ("indented blocks", "  {% if true %}\n    yes\n  {% else %}\n    no\n  {% endif %}\nend", {}, True),
    ("plus markers", "  {%+ if true %}x{% endif +%}\ny\n  {% if true +%}\nz{% endif %}", {}, True),
    ("comments", "a\n  {# comment #}\nb {# two\nlines #} c\n{#- strip -#}\n d", {}, True),
    ("variables are not trimmed", "  {{ 'v' }}\n{{ 'w' }}\n", {}, True),
    ("tag after text on the same line", "text {% if true %}\nx\n{% endif %} tail\n", {}, True),
    ("windows newlines", "a\r\n{% if true %}\r\nb\r\n{% endif %}\r\nc\r\n", {}, True),
    ("trailing newline kept once", "x\n\n", {}, True),
    ("tabs", "\t{% for i in [1, 2] %}\t{{ i }}\n\t{% endfor %}\t.", {}, True),
    # loops
    ("loop variables", "{% for x in xs %}{{ loop.index }}/{{ loop.index0 }}/{{ loop.revindex }}/{{ loop.revindex0 }}/"
     "{{ loop.first }}/{{ loop.last }}/{{ loop.length }}|{% endfor %}", {"xs": ["a", "b", "c"]}, False),
    ("previtem nextitem cycle", "{% for x in [1, 2, 3] %}{{ loop.previtem }}<{{ x }}>{{ loop.nextitem }} {{ loop.cycle('odd', 'even') }};"
     "{% endfor %}", {}, False),
    ("for else", "{% for x in [] %}{{ x }}{% else %}empty{% endfor %}|{% for x in [1] %}{{ x }}{% else %}empty{% endfor %}", {}, False),
    ("loop filter", "{% for x in range(10) if x is odd %}{{ x }}{{ ',' if not loop.last }}{% endfor %} "
     "{% for x in range(10) if x > 20 %}{% else %}none{% endfor %}", {}, False),
    ("unpacking", "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %} {% for k in d %}{{ k }}{% endfor %} "
     "{% for a, b in [[1, 2], [3, 4]] %}{{ a + b }}{% endfor %}", {"d": {"z": 1, "a": 2, "m": 3}}, False),
    ("nested loops", "{% for row in rows %}{% set outer = loop %}{% for c in row %}{{ outer.index }}.{{ loop.index }}={{ c }} "
     "{% endfor %}{% endfor %}", {"rows": [["a", "b"], ["c"]]}, False),
    ("break and continue", "{% for i in range(10) %}{% if i == 2 %}{% continue %}{% endif %}{% if i > 4 %}{% break %}{% endif %}"
     "{{ i }}{% endfor %}", {}, False),
    ("string iteration", "{% for ch in 'héllo' %}[{{ ch }}]{% endfor %}", {}, False),
    ("ranges", "{{ range(3)|list }} {{ range(1, 10, 3)|list }} {{ range(5, 0, -2)|list }} {{ range(0)|list }}", {}, False),
    # scoping and namespaces
    ("loop scope", "{% set x = 1 %}{% for i in [1, 2] %}{% set x = x + i %}{{ x }}{% endfor %}{{ x }}"
     "{% if true %}{% set y = 5 %}{% endif %}{{ y }}", {}, False),
    ("namespace", "{% set ns = namespace(n=0, s='') %}{% for i in range(4) %}{% set ns.n = ns.n + i %}{% set ns.s = ns.s ~ i %}"
     "{% endfor %}{{ ns.n }} {{ ns.s }} {% set ns2 = namespace() %}{% set ns2.flag = true %}{{ ns2.flag }}", {}, False),
    ("set block", "{% set x %}a{{ 1 + 1 }}b{% endset %}[{{ x }}] {% set a, b = 1, 2 %}{{ a }}{{ b }}", {}, False),
    ("override a context variable", "{% set messages = messages[1:] %}{{ messages|length }}", {"messages": [1, 2, 3]}, False),
    # expressions
    ("arithmetic", "{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 4 / 2 }} "
     "{{ 2 ** 10 }} {{ 2 ** -1 }} {{ -2 ** 2 }} {{ 1.5 + 1 }} {{ 7.5 // 2 }} {{ -7.5 % 2 }} {{ 1_000 + 1 }} {{ 10 - 2 - 3 }}", {}, False),
    ("concatenation", "{{ 'a' ~ 1 ~ none ~ true ~ 1.5 }} {{ 'ab' * 3 }} {{ 2 * 'x' }} {{ [1, 2] + [3] }} {{ 'x' + 'y' }} {{ 'a' 'b' }}", {}, False),
    ("comparisons", "{{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 1 == 1.0 }} {{ true == 1 }} {{ 'a' != 'b' }} {{ [1, 2] == [1, 2] }} "
     "{{ {'a': 1} == {'a': 1} }} {{ 'abc' < 'abd' }} {{ [1, 2] < [1, 3] }} {{ 2 >= 2.0 }} {{ none == none }}", {}, False),
    ("membership", "{{ 'a' in 'cat' }} {{ 2 not in [1, 2] }} {{ 'k' in {'k': 1} }} {{ '' in 'x' }} {{ 'z' in missing }} "
     "{{ not 'x' in 'y' }}", {}, False),
    ("logic", "{{ none or 'x' }} {{ 0 and 1 }} {{ 1 and 'y' }} {{ not none }} {{ not [] }} {{ [] or {} or 'z' }} "
     "{{ 'x' if false }}|{{ 'y' if 0 else 'z' }} {{ 'a' if true else 'b' if true else 'c' }}", {}, False),
    ("literals", "{{ 'a\\tb\\\\n' }}|{{ \"it's\" }}|{{ 'x\\'y' }}|{{ '\\u00e9\\x41\\101' }}|{{ true }} {{ True }} {{ none }} {{ None }} "
     "{{ false }} {{ 42 }} {{ 0.5 }} {{ 1e3 }} {{ 2.5e-3 }} {{ [] }} {{ {} }}", {}, False),
    ("printing values", "{{ [1, 'a', none, true, 1.5, \"it's\", 'q\"'] }} {{ {'a': 1, 'b': [2, {'c': 'd'}]} }} {{ 1e20 }} {{ 1e16 }} "
     "{{ 1e15 }} {{ 1e-5 }} {{ 0.0001 }} {{ -0.0 }} {{ 3.14159 }} {{ 0.1 + 0.2 }} {{ 100.0 }} {{ 123456789.125 }}", {}, False),
    ("subscripts and attributes", "{{ d['a']['b'][0] }} {{ d.a.b[1] }} {{ d['missing'] }}|{{ xs[-1] }} {{ xs[5] }}|{{ d.a.missing }}|"
     "{{ 'abc'[1] }} {{ xs.0 }}", {"d": {"a": {"b": [10, 20]}}, "xs": [1, 2, 3]}, False),
    ("slices", "{{ xs[1:] }} {{ xs[:-1] }} {{ xs[::-1] }} {{ xs[::2] }} {{ xs[-2:] }} {{ xs[1:-1:2] }} {{ xs[-10:10] }} "
     "{{ xs[3:1] }} {{ xs[3:1:-1] }} {{ s[1:3] }} {{ s[::-1] }} {{ s[-2:] }} {{ s[:0] }}", {"xs": [0, 1, 2, 3, 4], "s": "héllo"}, False),
    ("if elif else", "{% for n in [1, 2, 3, 4] %}{% if n == 1 %}one{% elif n == 2 %}two{% elif n == 3 %}three{% else %}many"
     "{% endif %} {% endfor %}", {}, False),
    ("undefined values", "[{{ nothing }}][{{ nothing|default('d') }}][{{ d.missing }}][{% if nothing %}t{% else %}f{% endif %}]"
     "[{{ nothing|length }}][{{ nothing is defined }}][{{ d.missing is defined }}][{{ nothing ~ 'x' }}][{{ nothing == nothing }}]"
     "[{% for x in nothing %}{{ x }}{% endfor %}]", {"d": {}}, False),
    ("braces inside expressions", "{{ '}}' }} {{ {'a': {'b': 1}} }} {{ '%}' }}{% if '%}' %}y{% endif %}", {}, False),
    # tests
    ("tests", "{{ x is defined }} {{ y is defined }} {{ y is undefined }} {{ none is none }} {{ 1 is number }} {{ 1 is integer }} "
     "{{ 1.0 is float }} {{ 1.0 is integer }} {{ 's' is string }} {{ [] is sequence }} {{ {} is mapping }} {{ [] is mapping }} "
     "{{ true is boolean }} {{ 3 is odd }} {{ 4 is even }} {{ 9 is divisibleby 3 }} {{ 9 is divisibleby(2) }} {{ x is not none }} "
     "{{ false is false }} {{ 0 is false }} {{ true is true }} {{ 'a' is lower }} {{ 'A' is upper }} {{ range is callable }} "
     "{{ 2 is eq 2 }} {{ 2 is equalto(3) }} {{ 'a' is in 'abc' }} {{ 3 is gt 2 }} {{ 'x' is iterable }} {{ 5 is iterable }} "
     "{{ 2 is ne 3 }} {{ 2 is lt 3 }} {{ 2 is le 2 }} {{ 2 is ge 3 }} {{ 1 is sameas 1 }}", {"x": 1}, False),
    # filters
    ("string filters", "[{{ '  a b  '|trim }}][{{ 'xxaxx'|trim('x') }}][{{ 'Hello'|upper }}][{{ 'Hello'|lower }}]"
     "[{{ 'hello big-world (x)'|title }}][{{ 'hELLO world'|capitalize }}][{{ 'a-b-c'|replace('-', '+') }}]"
     "[{{ 'aaa'|replace('a', 'b', 2) }}][{{ 'one two  three'|wordcount }}][{{ 'héllo'|length }}][{{ 'abc'|reverse }}]"
     "[{{ '<a & b>'|e }}][{{ 'x'|string }}][{{ 'a\nb'|indent(2) }}][{{ 'a\n\nb'|indent(2, true) }}][{{ 'a\n\nb'|indent(2, blank=true) }}]"
     "[{{ 'abc'|center(7) }}]", {}, False),
    ("number filters", "{{ '42'|int + 1 }} {{ 'x'|int }} {{ 'x'|int(7) }} {{ '3.7'|int }} {{ 3.7|int }} {{ -3.7|int }} {{ true|int }} "
     "{{ '2.5'|float }} {{ 3|float }} {{ 'x'|float }} {{ -3|abs }} {{ 2.567|round }} {{ 2.567|round(2) }} {{ 2.5|round }} "
     "{{ 3.5|round }} {{ 2.567|round(1, 'floor') }} {{ 2.521|round(1, 'ceil') }} {{ 7|string ~ '!' }}", {}, False),
    ("sequence filters", "{{ xs|length }} {{ xs|count }} {{ xs|first }} {{ xs|last }} {{ xs|join }} {{ xs|join(', ') }} {{ xs|sum }} "
     "{{ xs|min }} {{ xs|max }} {{ xs|sort }} {{ xs|sort(reverse=true) }} {{ xs|unique|list }} {{ xs|reverse|list }} {{ 'abc'|list }} "
     "{{ []|first }}|{{ xs|select('odd')|list }} {{ xs|reject('odd')|list }} {{ xs|map('string')|join('-') }} "
     "{{ ['b', 'A', 'c']|sort }} {{ ['b', 'A', 'c']|sort(case_sensitive=true) }} {{ [[1, 2], [3]]|sum(start=[]) }}",
     {"xs": [3, 1, 2, 3]}, False),
    ("mapping filters", "{{ d|items|list|length }} {{ d|list }} {{ d|length }} {{ (d|items|first)[1] }} "
     "{% for k, v in d|dictsort %}{{ k }}{{ v }}{% endfor %} {% for k, v in d|dictsort(reverse=true) %}{{ k }}{{ v }}{% endfor %} "
     "{% for k, v in d|dictsort(by='value') %}{{ k }}{% endfor %} {% for k, v in d|items %}{{ k }}{{ v }}{% endfor %} {{ d|first }}",
     {"d": {"b": 2, "a": 1, "C": 3}}, False),
    ("default filter", "{{ missing|default('x') }} {{ ''|default('y') }} {{ ''|default('y', true) }} {{ none|default('z') }} "
     "{{ none|d('z', boolean=true) }} {{ 0|default(5, true) }} {{ 'v'|default('w') }} {{ missing|default }}|", {}, False),
    ("attribute filters", "{{ ms|selectattr('role', 'equalto', 'user')|map(attribute='content')|join(',') }} "
     "{{ ms|rejectattr('role', 'eq', 'user')|map(attribute='content')|list }} {{ ms|selectattr('tool')|list|length }} "
     "{{ ms|map(attribute='missing', default='-')|join }} {{ ms|map(attribute='meta.n')|list }} "
     "{{ ms|selectattr('meta.n', 'gt', 1)|map(attribute='role')|first }} {{ ms|sort(attribute='content')|map(attribute='content')|join }}",
     {"ms": [{"role": "user", "content": "b", "meta": {"n": 1}}, {"role": "assistant", "content": "c", "tool": True, "meta": {"n": 2}},
             {"role": "user", "content": "a", "meta": {"n": 3}}]}, False),
    ("tojson", "{{ v|tojson }} | {{ v|tojson(indent=2) }} | {{ 'é\"\\n\\t<'|tojson }} {{ none|tojson }} {{ [1.5, 2.0, -0.0, 1e20]|tojson }} "
     "{{ {}|tojson }} {{ []|tojson(indent=2) }} {{ {'a': []}|tojson(indent=2) }}",
     {"v": {"name": "f", "n": 1, "ok": True, "x": None, "list": [1, "two", {"k": []}], "f": 0.25}}, False),
    ("filter chains and calls", "{{ 'a,b,c'.split(',')|join('-')|upper }} {{ (xs|length) * 2 }} {{ xs|length - 1 }} "
     "{{ '  x '|trim|length }} {{ -(xs|length) }} {{ -1|abs }}", {"xs": [1, 2]}, False),
    # methods
    ("string methods", "[{{ '  x  '.strip() }}][{{ 'xxhixx'.strip('x') }}][{{ '  x  '.lstrip() }}][{{ '  x  '.rstrip() }}]"
     "[{{ '\\n\\nx\\n'.lstrip('\\n') }}][{{ 'a b  c'.split() }}][{{ 'a,b,,c'.split(',') }}][{{ 'a,b,c'.split(',', 1) }}]"
     "[{{ 'a b c'.rsplit(' ', 1) }}][{{ 'hello'.startswith('he') }}][{{ 'hello'.endswith('lo') }}][{{ 'hello'.startswith(('x', 'h')) }}]"
     "[{{ 'aXbX'.replace('X', '-') }}][{{ 'Ab'.upper() }}][{{ 'Ab'.lower() }}][{{ 'hello world'.title() }}][{{ 'hELLO'.capitalize() }}]"
     "[{{ 'hello'.find('l') }}][{{ 'hello'.find('z') }}][{{ 'hello'.count('l') }}][{{ '-'.join(['a', 'b']) }}]"
     "[{{ 'a\\nb\\n'.splitlines() }}][{{ ' '.isspace() }}][{{ '42'.isdigit() }}][{{ 'a<think>b</think>c'.split('</think>')[-1] }}]"
     "[{{ 'x'.zfill(3) if false else 'ok' }}][{{ 'ab'.startswith('b', 1) }}][{{ ''.split(',') }}][{{ 'a  b'.split(' ') }}]", {}, False),
    ("dict methods", "{{ d.items()|map('join', '=')|join(',') }} {{ d.keys()|list }} {{ d.values()|list }} {{ d.get('a') }} {{ d.get('z') }} "
     "{{ d.get('z', 9) }} {{ d.a }} {{ d['b'] }}", {"d": {"a": 1, "b": "two"}}, False),
    # macros, filter blocks, raw
    ("macros", "{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('A') }} {{ greet('B', punct='?') }} "
     "{{ greet(name='C') }} {{ greet('D')|upper }}", {}, False),
    ("filter block", "{% filter upper %}abc{{ 'd' }}{% endfilter %} {% filter replace('a', 'o')|title %}banana{% endfilter %}", {}, False),
    ("raw block", "{% raw %}{{ not evaluated }} {% if %}{% endraw %}|{%- raw -%}  x  {%- endraw -%}  |", {}, False),
]


def add_snippets():
    for name, text, context, both in SNIPPETS:
        add("snippet: " + name, '.inline(%s)' % swift_string(text), text, context)
        if both:
            add("snippet (jinja2 defaults): " + name, '.inline(%s)' % swift_string(text), text, context, mode="default")


# --- Swift output -----------------------------------------------------------------------

def swift_string(s):
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif o < 0x20 or o == 0x7F or 0x2028 <= o <= 0x2029:
            out.append("\\u{%x}" % o)
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def swift_value(v):
    if v is None:
        return ".none"
    if isinstance(v, bool):
        return ".bool(%s)" % ("true" if v else "false")
    if isinstance(v, int):
        return ".int(%d)" % v
    if isinstance(v, float):
        return ".double(%r)" % v
    if isinstance(v, str):
        return ".string(%s)" % swift_string(v)
    if isinstance(v, list):
        return ".array([%s])" % ", ".join(swift_value(x) for x in v)
    if isinstance(v, dict):
        if not v:
            return ".dictionary([:])"
        return ".dictionary([%s])" % ", ".join("%s: %s" % (swift_string(k), swift_value(x)) for k, x in v.items())
    raise TypeError(type(v))


def main():
    add_templates()
    add_snippets()
    lines = [
        "// Generated by Fixtures/make_expected.py with Python jinja2 %s. Do not edit: change the script" % jinja2.__version__,
        "// (or TemplateSources.swift) and run it again.",
        "",
        "import ChatTemplate",
        "",
        "extension RenderCase {",
        "    static let all: [RenderCase] = {",
        "        var cases: [RenderCase] = []",
    ]
    for name, ref, text, context, mode in CASES:
        try:
            kind, result = render(text, context, mode)
        except Exception as e:
            sys.exit("%s: %s: %s" % (name, type(e).__name__, e))
        expected = ".%s(%s)" % (kind, swift_string(result))
        ctx = "[:]" if not context else "[%s]" % ", ".join(
            "%s: %s" % (swift_string(k), swift_value(v)) for k, v in context.items())
        lines.append("        cases.append(RenderCase(")
        lines.append("            name: %s," % swift_string(name))
        lines.append("            template: %s," % ref)
        lines.append("            context: %s," % ctx)
        if mode != "hf":
            lines.append("            options: .jinjaDefaults,")
        lines.append("            expected: %s))" % expected)
    lines += ["        return cases", "    }()", "}", ""]
    with open(OUTPUT, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    print("wrote %d cases to %s" % (len(CASES), os.path.relpath(OUTPUT)), file=sys.stderr)


if __name__ == "__main__":
    main()
