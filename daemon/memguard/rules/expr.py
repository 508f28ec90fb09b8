"""Rule conditions: a subset of CEL (the Common Expression Language that
Kubernetes users write in admission policies), parsed here into a tree and
compiled from the tree to Python functions.

Why not CEL itself: cel-python costs 166 us an evaluation and the Rust
binding 2 us (HOST.md); 50 rules over 200 domains is 10,000 evaluations a
tick, and the target is 5 ms.  Why not Python's ``eval`` of the condition:
it is user input.  What is compiled here is Python text written by this
module from the parsed tree, as ``dataclasses`` writes ``__init__``: every
value and name the user typed reaches the function as a closure cell
(``_k0``, ``_k1`` ...), never as text, so the code compiled depends on the
shape of the tree alone, and it runs with no builtins.  A condition is
compiled twice: ``evaluate(env)`` for one domain, and ``scan(items)``, the
same test inlined in a loop over every domain a rule matches, which returns
the domains it holds for (0.1 us a domain, where a call a domain cost 0.8).

The language::

    tto < 60s && usage_ratio > 0.8
    psi.some.avg10 > 20 || working_set > 7.5GiB
    !(domain in ["host", "wsl"]) && leak_rate > 10MiB
    has(job.name) && job.name == "train"

- literals: integers, decimals, strings ('...' or "..."), true, false, null,
  durations (``250ms 60s 5m 1h``, in seconds) and sizes (``512MiB 8GB``,
  in bytes); lists ``[a, b]``;
- operators, by precedence: ``?:``, ``||``, ``&&``, ``== != < <= > >= in``,
  ``+ -``, ``* / %``, unary ``! -``, member access ``a.b``, calls;
- functions: ``has(a.b)`` (the field is present and not null), ``min(a, b)``,
  ``max(a, b)``, ``abs(a)``, ``size(list, string or map)``, ``matches(s, glob)``;
- strings take CEL's escapes (``\\n \\t \\' \\xHH \\uHHHH`` ...); an unknown one is
  an error.

The variables are a dict per domain; a field ``a.b`` is looked up in the
dict ``a``.  The dict may also carry a field's value under its dotted path
(``"psi.some.avg10"``), as the engine's ``domain_env`` does for PSI: that
value is then read in one lookup instead of a walk (three times faster for
the PSI rules), and must be what the walk would find.

Absent values: a variable or field the snapshot does not have is ``null``.
Arithmetic with null gives null, and ordering null is false (so ``tto <
60s`` is simply false for a domain that is not growing); null equals only
null (``rate != 0`` is true when rate is null); ``has()`` tests for it.
Types: ``< <= > >=`` order two numbers or two strings, and anything else
is false; ``==`` is true for two equal numbers (``1 == 1.0``), or values
of one type equal item by item, never across types (``true == 1`` is
false: a bool is not a number); arithmetic is on numbers (and ``+`` joins
two strings or two lists), and anything else, or a division by zero, is
null.  Nothing raises at evaluation.  Unlike CEL, integers and decimals are
one type of number: ``7 / 2`` is 3.5, and ``%`` takes the sign of the
divisor (``-7 % 3`` is 2).
"""

from __future__ import annotations

import fnmatch
import operator
import re
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

from ..units import parse_duration, parse_size

Evaluator = Callable[[dict], object]
Scanner = Callable[[Iterable[tuple[str, dict]]], list[str]]


class ExprError(ValueError):
    """A condition that does not parse: ``column`` is 1-based."""

    def __init__(self, message: str, column: int) -> None:
        super().__init__(f"column {column}: {message}")
        self.message, self.column = message, column


_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<number>\d+(?:\.\d+)?)(?P<unit>ms|s|m|h|d|[KMGT]i?B|B)?(?![A-Za-z_0-9])
  | (?P<badnum>\d+(?:\.\d+)?[A-Za-z_]\w*)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<ident>[A-Za-z_][A-Za-z_0-9]*)
  | (?P<op>&&|\|\||==|!=|<=|>=|[<>!+\-*/%()\[\],.?:])
""", re.X | re.ASCII)
# In a string: CEL's escapes (less octal); anything else after a backslash is an error.
_ESCAPE = re.compile(r"""\\(?:(?P<char>[\\'"`?abfnrtv])|x(?P<x>[0-9a-fA-F]{2})|u(?P<u>[0-9a-fA-F]{4})
                           |U(?P<U>[0-9a-fA-F]{8})|(?P<bad>.?))""", re.X | re.S)
_CHARS = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
MAX_DIGITS = 30      # a number literal longer than that is a typo, not a threshold

_KEYWORDS = {"true": True, "false": False, "null": None}


@dataclass(frozen=True)
class Token:
    kind: str      # number, string, literal (true false null), ident, op, end
    value: object
    column: int


def tokenize(text: str) -> list[Token]:
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ExprError(f"unexpected character {text[pos]!r}", pos + 1)
        kind = m.lastgroup if m.lastgroup != "unit" else "number"
        if kind == "badnum":
            raise ExprError(f"unknown unit in {m.group('badnum')!r} (durations: ms s m h d; "
                            "sizes: B KB MB GB TB KiB MiB GiB TiB)", pos + 1)
        if kind == "number":
            out.append(Token("number", _number_literal(m.group("number"), m.group("unit"), pos + 1), pos + 1))
        elif kind == "string":
            out.append(Token("string", _unescape(m.group("string")[1:-1], pos + 2), pos + 1))
        elif kind == "ident":
            word = m.group("ident")
            out.append(Token("literal", _KEYWORDS[word], pos + 1) if word in _KEYWORDS
                       else Token("ident", word, pos + 1))
        elif kind == "op":
            out.append(Token("op", m.group("op"), pos + 1))
        pos = m.end()
    out.append(Token("end", None, len(text) + 1))
    return out


def _number_literal(raw: str, unit: str | None, column: int) -> int | float:
    if len(raw) > MAX_DIGITS:
        raise ExprError(f"number longer than {MAX_DIGITS} digits", column)
    if unit is None:
        return float(raw) if "." in raw else int(raw)
    return parse_duration(raw + unit) if unit in ("ms", "s", "m", "h", "d") else parse_size(raw + unit)


def _unescape(body: str, column: int) -> str:
    """The text of a string literal whose body (between the quotes) starts
    at *column*."""
    def one(m: re.Match) -> str:
        if m.group("char"):
            return _CHARS.get(m.group("char"), m.group("char"))
        code = int(m.group("x") or m.group("u") or m.group("U") or "-1", 16)
        if m.group("bad") is not None or not 0 <= code <= 0x10FFFF or 0xD800 <= code <= 0xDFFF:
            raise ExprError(f"invalid escape {m.group(0)!r} in a string (known: "
                            r"\\ \' \" \n \t \r \xHH \uHHHH \UHHHHHHHH and \a \b \f \v \` \?)",
                            column + m.start())
        return chr(code)
    return _ESCAPE.sub(one, body)


# The values of the language, and what each operator does with them.  The
# compiled code inlines the common shapes and calls these for the rest.

def _number(x) -> bool:
    return type(x) is int or type(x) is float          # a bool is not a number


def _orderable(a, b) -> bool:
    return (_number(a) and _number(b)) or (type(a) is str and type(b) is str)


_ORDER = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
_ARITH = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv, "%": operator.mod}


def _ordering(op: str):
    raw = _ORDER[op]

    def compare(a, b):
        return _orderable(a, b) and raw(a, b)
    return compare


def _arithmetic(op: str):
    raw = _ARITH[op]

    def apply(a, b):
        if _number(a) and _number(b):
            try:
                return raw(a, b)
            except (ZeroDivisionError, OverflowError):
                return None
        if op == "+" and type(a) is type(b) and type(a) in (str, list):
            return a + b
        return None
    return apply


def _neg(a):
    return -a if _number(a) else None


def _equal(a, b) -> bool:
    """Two numbers by value; otherwise the same type and equal, lists and
    maps item by item (so ``true == 1`` and ``[true] == [1]`` are false)."""
    if _number(a) and _number(b):
        return a == b
    if type(a) is not type(b):
        return False
    if type(a) is list:
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if type(a) is dict:
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return a == b


def _in(a, b):
    if type(b) is list:
        return any(_equal(a, item) for item in b)
    if type(b) is str:
        return type(a) is str and a in b
    if type(b) is dict:
        return type(a) is str and a in b
    return False


def _pick(f):
    def call(a, b):
        return f(a, b) if _orderable(a, b) else None
    return call


_FUNCTIONS = {
    "min": (2, _pick(min)), "max": (2, _pick(max)),
    "abs": (1, lambda a: abs(a) if _number(a) else None),
    "size": (1, lambda x: len(x) if type(x) in (list, str, dict) else None),
    # a string matching a glob; a tuple of strings (job.names): any of them
    "matches": (2, lambda s, glob: type(glob) is str and (
        (type(s) is str and fnmatch.fnmatchcase(s, glob))
        or (type(s) is tuple and any(type(x) is str and fnmatch.fnmatchcase(x, glob) for x in s)))),
}
_OPS = {**{op: f"_cmp{i}" for i, op in enumerate(_ORDER)}, **{op: f"_math{i}" for i, op in enumerate(_ARITH)}}
# The only names the compiled code can reach.
_RUNTIME = {"__builtins__": {}, "type": type, "dict": dict, "str": str, "_NUMBER": (float, int), "_ABSENT": object(),
            "_neg": _neg, "_in": _in, "_equal": _equal,
            **{_OPS[op]: _ordering(op) for op in _ORDER}, **{_OPS[op]: _arithmetic(op) for op in _ARITH},
            **{f"_{name}": fn for name, (_, fn) in _FUNCTIONS.items()}}
_PRECEDENCE = {"||": 1, "&&": 2, "==": 3, "!=": 3, "<": 3, "<=": 3, ">": 3, ">=": 3, "in": 3,
               "+": 4, "-": 4, "*": 5, "/": 5, "%": 5}
MAX_DEPTH = 32       # nested parentheses, calls, lists, ?: branches, unary operators and fields
MAX_TOKENS = 256     # a condition longer than that is not one a person can review


# The tree: tuples whose first item says the shape.
#   ("const", value)  ("var", name)  ("field", node, name)  ("list", [node, ...])
#   ("not", node)  ("neg", node)  ("has", node)  ("and", a, b)  ("or", a, b)
#   ("if", cond, yes, no)  ("cmp", op, a, b)  ("math", op, a, b)  ("in", a, b)
#   ("call", name, [node, ...])

def _kind(value) -> str:
    if value is None:
        return "null"
    return "number" if _number(value) else {bool: "bool", str: "string"}.get(type(value), "list")


class _Parser:
    def __init__(self, text: str, types: Mapping[str, str | None], known: frozenset[str] | None) -> None:
        self.types, self.known = types, known
        self.tokens = tokenize(text)
        if len(self.tokens) > MAX_TOKENS:
            raise ExprError(f"longer than {MAX_TOKENS} tokens", self.tokens[MAX_TOKENS].column)
        self.i = 0
        self.depth = -1        # the whole condition is not nested
        self.names: set[str] = set()

    def peek(self) -> Token:
        return self.tokens[self.i]

    def take(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def at(self, op: str) -> bool:
        tok = self.tokens[self.i]
        return tok.kind == "op" and tok.value == op

    def expect(self, op: str) -> Token:
        tok = self.take()
        if tok.kind != "op" or tok.value != op:
            raise ExprError(f"expected {op!r}, found {_show(tok)}", tok.column)
        return tok

    def parse(self) -> tuple:
        node = self.conditional()
        tok = self.peek()
        if tok.kind != "end":
            raise ExprError(f"unexpected {_show(tok)}", tok.column)
        return node

    def conditional(self) -> tuple:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExprError(f"nested more than {MAX_DEPTH} deep", self.peek().column)
        node = self.binary(1)
        if self.at("?"):
            self.take()
            yes = self.conditional()
            self.expect(":")
            node = ("if", node, yes, self.conditional())
        self.depth -= 1
        return node

    def binary(self, level: int) -> tuple:
        left = self.unary()
        while True:
            tok = self.peek()
            op = tok.value if tok.kind == "op" or (tok.kind == "ident" and tok.value == "in") else None
            prec = _PRECEDENCE.get(op) if op else None
            if prec is None or prec < level:
                return left
            self.take()
            right = self.binary(prec + 1)
            if op in ("&&", "||"):
                left = ("and" if op == "&&" else "or", left, right)
            elif op == "in":
                left = ("in", left, right)
            elif prec == 3:
                self.check(op, left, right, tok.column)
                left = ("cmp", op, left, right)
            else:
                left = ("math", op, left, right)

    def check(self, op: str, a: tuple, b: tuple, column: int) -> None:
        """A variable of a known type compared with a literal that can never
        match it is a mistake: say so now rather than be false for ever."""
        for var, lit in ((a, b), (b, a)):
            path = _path(var)
            declared = self.types.get(path) if path else None
            if declared not in ("number", "string") or lit[0] != "const":
                continue
            kind = _kind(lit[1])
            if kind == "null" and op in _ORDER:
                raise ExprError(f"{path} {op} null is always false (has({path}) tests for a value)", column)
            if kind not in ("null", declared):
                raise ExprError(f"{path} is a {declared}, compared with a {kind} ({lit[1]!r})", column)

    def unary(self) -> tuple:
        for op, shape in (("!", "not"), ("-", "neg")):
            if self.at(op):
                self.take()
                self.depth += 1
                if self.depth > MAX_DEPTH:
                    raise ExprError(f"nested more than {MAX_DEPTH} deep", self.peek().column)
                node = (shape, self.unary())
                self.depth -= 1
                return node
        return self.postfix()

    def postfix(self) -> tuple:
        node, path = self.primary()
        depth = self.depth
        while self.at("."):
            dot = self.take()
            depth += 1
            if depth > MAX_DEPTH:
                raise ExprError(f"nested more than {MAX_DEPTH} deep", dot.column)
            name = self.take()
            if name.kind != "ident":
                raise ExprError(f"expected a field name after '.', found {_show(name)}", name.column)
            node = ("field", node, name.value)
            path = f"{path}.{name.value}" if path else None
            if path:
                self.names.add(path)
        return node

    def primary(self) -> tuple[tuple, str | None]:
        tok = self.take()
        if tok.kind in ("number", "string", "literal"):
            return ("const", tok.value), None
        if tok.kind == "ident":
            if self.at("("):
                return self.call(tok), None
            if self.known is not None and tok.value not in self.known:
                raise ExprError(f"unknown variable {tok.value!r} (known: {', '.join(sorted(self.known))})",
                                tok.column)
            self.names.add(tok.value)
            return ("var", tok.value), tok.value
        if tok.kind == "op" and tok.value == "(":
            node = self.conditional()
            self.expect(")")
            return node, None
        if tok.kind == "op" and tok.value == "[":
            items = []
            if not self.at("]"):
                items.append(self.conditional())
                while self.at(","):
                    self.take()
                    items.append(self.conditional())
            self.expect("]")
            return ("list", items), None
        raise ExprError(f"expected a value, found {_show(tok)}", tok.column)

    def call(self, name: Token) -> tuple:
        self.expect("(")
        if name.value == "has":
            node = self.conditional()
            self.expect(")")
            return ("has", node)
        if name.value not in _FUNCTIONS:
            raise ExprError(f"unknown function {name.value!r} (known: has, {', '.join(sorted(_FUNCTIONS))})",
                            name.column)
        arity = _FUNCTIONS[name.value][0]
        args = [self.conditional()]
        while self.at(","):
            self.take()
            args.append(self.conditional())
        self.expect(")")
        if len(args) != arity:
            raise ExprError(f"{name.value}() takes {arity} argument(s), got {len(args)}", name.column)
        return ("call", name.value, args)


def _show(tok: Token) -> str:
    return "the end" if tok.kind == "end" else repr(tok.value)


def _path(node: tuple) -> str | None:
    """``psi.some.avg10`` for a field of a field of a variable, else None."""
    names = []
    while node[0] == "field":
        names.append(node[2])
        node = node[1]
    return ".".join([node[1], *reversed(names)]) if node[0] == "var" else None


class _Writer:
    """Python source for a tree.  ``value(node)`` is an expression with the
    node's value; ``truth(node)`` one that is True exactly when that value
    is ``true`` (the tests of ``&&``, ``||``, ``!`` and ``?:``)."""

    def __init__(self, types: Mapping[str, str | None]) -> None:
        self.types = types
        self.consts: list = []
        self.temps = 0

    def const(self, value) -> str:
        self.consts.append(value)
        return f"_k{len(self.consts) - 1}"

    def temp(self) -> str:
        self.temps += 1
        return f"_t{self.temps}"

    def value(self, node: tuple) -> str:
        shape = node[0]
        if shape == "const":
            return self.const(node[1])
        if shape == "var":
            return f"env.get({self.const(node[1])})"
        if shape == "field":
            t = self.temp()
            walk = f"({t}.get({self.const(node[2])}) if type({t} := {self.value(node[1])}) is dict else None)"
            path = _path(node)
            if path is None:
                return walk
            t = self.temp()
            return f"({t} if ({t} := env.get({self.const(path)}, _ABSENT)) is not _ABSENT else {walk})"
        if shape == "list":
            return "[" + "".join(f"{self.value(n)}, " for n in node[1]) + "]"
        if shape == "if":
            return f"({self.value(node[2])} if {self.truth(node[1])} else {self.value(node[3])})"
        if shape == "neg":
            return f"_neg({self.value(node[1])})"
        if shape == "math":
            return f"{_OPS[node[1]]}({self.value(node[2])}, {self.value(node[3])})"
        if shape == "call":
            return f"_{node[1]}({', '.join(self.value(n) for n in node[2])})"
        return self.truth(node)

    def truth(self, node: tuple) -> str:
        shape = node[0]
        if shape == "const":
            return "True" if node[1] is True else "False"
        if shape == "not":
            return f"(not {self.truth(node[1])})"
        if shape in ("and", "or"):
            return f"({self.truth(node[1])} {shape} {self.truth(node[2])})"
        if shape == "if":
            return f"({self.truth(node[2])} if {self.truth(node[1])} else {self.truth(node[3])})"
        if shape == "has":
            return f"({self.value(node[1])} is not None)"
        if shape == "in":
            return f"_in({self.value(node[1])}, {self.value(node[2])})"
        if shape == "cmp":
            return self.compare(*node[1:])
        if shape == "call" and node[1] == "matches":
            return self.value(node)
        return f"({self.value(node)} is True)"

    def equal(self, a: tuple, b: tuple) -> str:
        for known, other in ((b, a), (a, b)):
            if known[0] != "const":
                continue
            kind, k = _kind(known[1]), self.const(known[1])
            if kind in ("null", "bool"):
                return f"({self.value(other)} is {k})"
            if kind == "string":                     # a str equals nothing but a str
                return f"({self.value(other)} == {k})"
            path = _path(other)
            if path and self.types.get(path) == "number":
                return f"({self.value(other)} == {k})"
            t = self.temp()
            return f"(type({t} := {self.value(other)}) in _NUMBER and {t} == {k})"
        return f"_equal({self.value(a)}, {self.value(b)})"

    def compare(self, op: str, a: tuple, b: tuple) -> str:
        if op in ("==", "!="):
            return self.equal(a, b) if op == "==" else f"(not {self.equal(a, b)})"
        # `tto < 60s`, the common shape: one test of the value, then the
        # comparison; of a variable whose type is known, only for null
        for known, other, flipped in ((b, a, False), (a, b, True)):
            kind = _kind(known[1]) if known[0] == "const" else None
            if kind in ("number", "string"):
                t, k = self.temp(), self.const(known[1])
                path = _path(other)
                if path and self.types.get(path) == kind:
                    test = f"({t} := {self.value(other)}) is not None"
                else:
                    test = f"type({t} := {self.value(other)}) {'in _NUMBER' if kind == 'number' else 'is str'}"
                left, right = (k, t) if flipped else (t, k)
                return f"({test} and {left} {op} {right})"
        return f"{_OPS[op]}({self.value(a)}, {self.value(b)})"


def _build(tree: tuple, types: Mapping[str, str | None]) -> tuple[Evaluator, Scanner]:
    w = _Writer(types)
    value, test = w.value(tree), w.truth(tree)
    source = (f"def _make({', '.join(f'_k{i}' for i in range(len(w.consts)))}):\n"
              f"    def evaluate(env):\n"
              f"        return {value}\n"
              f"    def scan(items):\n"
              f"        hits = []\n"
              f"        for domain, env in items:\n"
              f"            if {test}:\n"
              f"                hits.append(domain)\n"
              f"        return hits\n"
              f"    return evaluate, scan\n")
    try:
        code = compile(source, "<condition>", "exec")
    except (SyntaxError, RecursionError, MemoryError):     # nested past what Python compiles
        raise ExprError("too deeply nested to compile", 1) from None
    space = dict(_RUNTIME)
    exec(code, space)   # noqa: S102 - our text, see the module's docstring
    return space["_make"](*w.consts)


@dataclass(frozen=True)
class Condition:
    text: str
    evaluate: Evaluator = field(compare=False, repr=False)   # env -> its value
    scan: Scanner = field(compare=False, repr=False)         # (domain, env)... -> the domains it is true for
    names: frozenset[str] = field(compare=False)             # the variables and fields it reads
    guards: tuple[tuple[str, str], ...] = ()                 # (field, glob) it also requires

    def __call__(self, env: dict) -> bool:
        return self.evaluate(env) is True


def parse(text: str, known: Mapping[str, str | None] | Iterable[str] | None = None) -> tuple[tuple, frozenset[str]]:
    """The tree of *text*, and the variables and fields it reads.  *known*:
    the variables a condition may read, or a map of them (and of dotted
    fields) to their types, "number", "string" or "map" (None: any).
    Raises ExprError (with the column) on a syntax error, an unknown
    variable, or a comparison the types make always false."""
    types = dict(known) if isinstance(known, Mapping) else {}
    roots = None if known is None else frozenset(name.split(".", 1)[0] for name in known)
    parser = _Parser(text, types, roots)
    tree = parser.parse()
    return tree, frozenset(parser.names)


def compile_condition(text: str, known: Mapping[str, str | None] | Iterable[str] | None = None,
                      guards: Mapping[str, str] | None = None) -> Condition:
    """Parse (see parse()) and compile *text*.  A type in *known* is a
    promise of every env the condition is given: the value is of that type
    or null.  *guards* map a dotted field to a glob its value must match
    too (a rule's ``match.job``), tested first."""
    if known is not None and not isinstance(known, Mapping):
        known = frozenset(known)
    tree, names = parse(text, known)
    guards = tuple(sorted((guards or {}).items()))
    for path, glob in reversed(guards):
        root, *fields = path.split(".")
        node: tuple = ("var", root)
        for name in fields:
            node = ("field", node, name)
        tree = ("and", ("call", "matches", [node, ("const", glob)]), tree)
    evaluate, scan = _build(tree, dict(known) if isinstance(known, Mapping) else {})
    return Condition(text, evaluate, scan, names, guards)
