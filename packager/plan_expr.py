"""Plan expressions: tiny integer arithmetic over the plan's dynamic dimensions.

Grammar (docs/plan.md; the JS runtime implements the same):

    expr   := term (("+" | "-") term)*
    term   := factor (("*" | "/" | "%") factor)*
    factor := INT | NAME | FUNC "(" expr "," expr ")" | "(" expr ")"
    INT    := [0-9]+            NAME := [A-Za-z_][A-Za-z0-9_]*      FUNC := cdiv | min | max

Values are non-negative integers (arbitrary size in Python; the plan keeps them below
2^53 so that JS numbers are exact). `/` is floor division, `%` the remainder,
cdiv(a, b) = ceil(a / b). Errors (ExprError): a syntax error, an unknown name or
function, division or modulo by zero, a subtraction whose result is negative, and an
expression past the limits below (a plan's are far inside them; they keep parsing and
evaluation off Python's recursion limit). Whitespace is allowed between tokens. Nothing
is ever passed to eval().
"""

from __future__ import annotations

import re
from functools import lru_cache

from .errors import PackError

FUNCTIONS = {"cdiv", "min", "max"}
MAX_TOKENS = 256  # an operator chain nests the tree one level per operator
MAX_DEPTH = 32  # parentheses and function calls
MAX_DIGITS = 16  # 2^53, the largest exact JS integer, has 16 digits
_TOKEN = re.compile(r"\s*(?:(\d+)|([A-Za-z_][A-Za-z0-9_]*)|(.))")


class ExprError(PackError, ValueError):
    pass


def _tokenize(text: str) -> list[tuple[str, str]]:
    out = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:  # only trailing whitespace can fail to match
            break
        pos = m.end()
        num, name, op = m.groups()
        if len(out) == MAX_TOKENS:
            raise ExprError(f"expression longer than {MAX_TOKENS} tokens: {text[:40]!r}…")
        if num is not None:
            if len(num.lstrip("0")) > MAX_DIGITS:
                raise ExprError(f"number {num[:20]}… is too large in {text[:40]!r}")
            out.append(("int", num))
        elif name is not None:
            out.append(("name", name))
        elif op in "+-*/%(),":
            out.append(("op", op))
        else:
            raise ExprError(f"unexpected character {op!r} in {text!r}")
    return out


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.toks = _tokenize(text)
        self.i = 0
        self.depth = 0

    def peek(self):
        return self.toks[self.i] if self.i < len(self.toks) else (None, None)

    def take(self, kind=None, value=None):
        tok = self.peek()
        if tok[0] is None or (kind and tok[0] != kind) or (value and tok[1] != value):
            want = value or kind or "a token"
            got = tok[1] if tok[0] else "end of input"
            raise ExprError(f"expected {want}, got {got} in {self.text!r}")
        self.i += 1
        return tok

    def parse(self):
        node = self.expr()
        if self.i != len(self.toks):
            raise ExprError(f"unexpected {self.peek()[1]!r} in {self.text!r}")
        return node

    def expr(self):
        node = self.term()
        while self.peek() in (("op", "+"), ("op", "-")):
            op = self.take()[1]
            node = (op, node, self.term())
        return node

    def term(self):
        node = self.factor()
        while self.peek() in (("op", "*"), ("op", "/"), ("op", "%")):
            op = self.take()[1]
            node = (op, node, self.factor())
        return node

    def factor(self):
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise ExprError(f"expression nested deeper than {MAX_DEPTH} in {self.text[:40]!r}")
            return self._factor()
        finally:
            self.depth -= 1

    def _factor(self):
        kind, value = self.peek()
        if kind == "int":
            self.take()
            return ("int", int(value))
        if kind == "name":
            self.take()
            if self.peek() == ("op", "("):
                if value not in FUNCTIONS:
                    raise ExprError(f"unknown function {value!r} in {self.text!r}")
                self.take("op", "(")
                a = self.expr()
                self.take("op", ",")
                b = self.expr()
                self.take("op", ")")
                return (value, a, b)
            return ("name", value)
        if (kind, value) == ("op", "("):
            self.take()
            node = self.expr()
            self.take("op", ")")
            return node
        got = value if kind else "end of input"
        raise ExprError(f"expected a number, name or '(', got {got} in {self.text!r}")


@lru_cache(maxsize=4096)
def parse(text: str):
    """Expression text -> syntax tree (nested tuples). Raises ExprError."""
    if not isinstance(text, str):
        raise ExprError(f"expression must be a string, got {type(text).__name__}")
    return _Parser(text).parse()


def _eval(node, env, text):
    op = node[0]
    if op == "int":
        return node[1]
    if op == "name":
        try:
            v = env[node[1]]
        except KeyError:
            raise ExprError(f"unknown name {node[1]!r} in {text!r}") from None
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ExprError(f"{node[1]} must be a non-negative integer, got {v!r}")
        return v
    a = _eval(node[1], env, text)
    b = _eval(node[2], env, text)
    if op == "+":
        return a + b
    if op == "-":
        if a < b:
            raise ExprError(f"negative result {a} - {b} in {text!r}")
        return a - b
    if op == "*":
        return a * b
    if op in ("/", "%", "cdiv"):
        if b == 0:
            raise ExprError(f"division by zero in {text!r}")
        return a // b if op == "/" else a % b if op == "%" else -(-a // b)
    if op == "min":
        return min(a, b)
    return max(a, b)  # "max"


def evaluate(text: str, env: dict[str, int]) -> int:
    """Value of an expression with the names in env. Raises ExprError."""
    return _eval(parse(text), env, text)


def names(text: str) -> set[str]:
    """The names an expression reads."""
    out = set()

    def walk(node):
        if node[0] == "name":
            out.add(node[1])
        elif node[0] != "int":
            walk(node[1])
            walk(node[2])

    walk(parse(text))
    return out
